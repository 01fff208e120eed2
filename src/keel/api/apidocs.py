"""The API's own docs page: Swagger UI at ``/docs``, from the assets the ``fastapi-offline``
package ships (part of ``keel[server]``), never from a CDN, behind the same authentication
as ``/openapi.json``.

A browser cannot send a bearer header when it opens a page, so the docs paths (and only
they) also take the key as the password of HTTP Basic authentication (see
``keel.api.auth.DOCS_PATHS``): the browser asks for it once and sends it with the page, its
assets and the ``openapi.json`` the page fetches. No permission beyond authentication is
needed: the contract holds no data. Swagger UI's "Authorize" button then takes the key as
a bearer token for the requests a user tries out.

There is no ``/redoc``: Redoc's bundle always loads its logo from Redocly's CDN (the policy
below would block it, and the page would still link out) and needs inline styles; Swagger
UI shows the same contract and can try requests too.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Depends, Response

from keel.api.auth import current_principal
from keel.errors import MissingExtraError, NotFoundError
from keel.security.roles import Principal

router = APIRouter(include_in_schema=False)

# The only files served, with their types: nothing else in the package can be asked for.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
# Asset URLs name the release of the package that ships them, so a browser may keep them
# until it changes; "private": they are behind authentication, no shared cache may keep them.
ASSET_CACHE = "private, max-age=31536000, immutable"
PAGE_CACHE = "no-store"
# Same origin only, no inline script, no eval; the page may fetch only this server.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

# Relative URLs: the page works under whatever path prefix a proxy serves the API at.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Keel HTTP API</title>
<link rel="stylesheet" href="docs/assets/{release}/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/assets/{release}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/{release}/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""

# No validator badge (it would call a public validator) and no top bar (it loads any URL);
# the key a user enters in "Authorize" is kept in the page's memory, not in storage.
START = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
"""


def vendored() -> tuple[str, Traversable]:
    """The release of the package that ships the assets, and their folder; or
    ``MissingExtraError`` naming the extra that brings it."""
    try:  # optional: part of keel[server]
        release = importlib.metadata.version("fastapi-offline")
        folder = importlib.resources.files("fastapi_offline") / "static"
    except (ImportError, importlib.metadata.PackageNotFoundError):
        raise MissingExtraError("server", "the API docs page (/docs)") from None
    return release, folder


@router.get("/docs", name="api_docs")
def swagger_page(_principal: Principal = Depends(current_principal)) -> Response:  # noqa: B008
    """Swagger UI over this server's ``openapi.json``."""
    release, _ = vendored()
    headers = {**HEADERS, "Content-Security-Policy": CSP, "Cache-Control": PAGE_CACHE}
    page = PAGE.format(release=release)
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/docs/start.js", name="api_docs_start")
def swagger_start(_principal: Principal = Depends(current_principal)) -> Response:  # noqa: B008
    """The script that starts Swagger UI: a file, so that the page needs no inline script."""
    headers = {**HEADERS, "Cache-Control": PAGE_CACHE}
    return Response(START, media_type="text/javascript; charset=utf-8", headers=headers)


@router.get("/docs/assets/{release}/{name}", name="api_docs_asset")
def docs_asset(
    release: str,
    name: str,
    _principal: Principal = Depends(current_principal),  # noqa: B008
) -> Response:
    """One of ``ASSETS`` from the vendored release; any other name or release is 404."""
    current, folder = vendored()
    if release != current or name not in ASSETS:
        raise NotFoundError(f"no API docs asset {release}/{name}; the page names its assets")
    body = (folder / name).read_bytes()
    headers = {**HEADERS, "Cache-Control": ASSET_CACHE}
    return Response(body, media_type=ASSETS[name], headers=headers)
