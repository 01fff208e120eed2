"""The API's own docs page (/docs): Swagger UI from the package's vendored assets, behind the
same authentication as /openapi.json, under a strict Content-Security-Policy — through the
test client, and in Debian's Chromium against a real server."""

from __future__ import annotations

import base64
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel import Engine
from keel.api import create_app
from keel.api.apidocs import ASSETS, vendored
from keel.security.apikeys import create_key
from keel.security.audit import AuditLog
from keel.security.roles import Grant, Role

FLOW = "credit_limit"
CHROMIUM = "/usr/lib/chromium/chromium"


@pytest.fixture
def viewer_key(engine: Engine) -> str:
    """The least a caller can hold: a viewer of one flow reads the contract and its page."""
    _, text = create_key(engine.db, "docs", "tests", [Grant(Role.VIEWER, FLOW)], "t", time.time())
    return text


def basic(key: str, user: str = "anyone") -> dict[str, str]:
    """What a browser sends after its user typed the key as the password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def asset(name: str) -> str:
    return f"/docs/assets/{vendored()[0]}/{name}"


def test_anonymous_callers_get_401_with_a_challenge_a_browser_answers(client: TestClient) -> None:
    for path in ("/docs", "/docs/start.js", asset("swagger-ui-bundle.js"), "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json()["code"] == "unauthenticated"
        assert "password" in response.json()["message"]
        challenges = response.headers.get_list("www-authenticate")
        assert 'Basic realm="Keel API docs", charset="UTF-8"' in challenges, path
        assert "Bearer" in challenges
    # Data routes never ask a browser for a password.
    assert client.get("/v1/flows").headers.get_list("www-authenticate") == ["Bearer"]


def test_wrong_keys_are_refused_on_the_docs_paths(client: TestClient, viewer_key: str) -> None:
    for headers in (
        basic("keel_nope_nope"),
        {"Authorization": "Basic not-base64!"},
        basic(""),
        {"Authorization": "Digest x"},
    ):
        response = client.get("/docs", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["code"] == "unauthenticated"


def test_a_basic_credential_opens_only_the_docs(client: TestClient, viewer_key: str) -> None:
    """A browser sends Basic credentials by itself: they must read no data, change nothing."""
    assert client.get("/openapi.json", headers=basic(viewer_key)).status_code == 200
    assert client.get(f"/v1/flows/{FLOW}", headers=bearer(viewer_key)).status_code == 200
    refused = client.get(f"/v1/flows/{FLOW}", headers=basic(viewer_key))
    assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
    assert "Bearer" in refused.json()["message"]


def test_the_page_is_same_origin_only_under_a_strict_policy(
    client: TestClient, viewer_key: str
) -> None:
    for headers in (basic(viewer_key), bearer(viewer_key)):
        response = client.get("/docs", headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        policy = dict(
            d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"  # no inline script, no eval, no other origin
        assert policy["style-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        page = response.text
        assert "http://" not in page and "https://" not in page and "//" not in page
        assert "<script>" not in page and "<style" not in page  # nothing inline
        urls = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sorted(urls) == sorted(
            [
                asset("swagger-ui.css")[1:],
                asset("favicon.png")[1:],
                asset("swagger-ui-bundle.js")[1:],
                "docs/start.js",
            ]
        )
        for url in urls:  # every one it names is served, to the same credential
            assert client.get(f"/{url}", headers=headers).status_code == 200, url


def test_assets_come_from_the_package_with_their_types_and_caching(
    client: TestClient, viewer_key: str
) -> None:
    _, folder = vendored()
    for name, media_type in ASSETS.items():
        response = client.get(asset(name), headers=basic(viewer_key))
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media_type
        assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
        assert response.content == (folder / name).read_bytes()
    start = client.get("/docs/start.js", headers=basic(viewer_key))
    assert start.headers["content-type"] == "text/javascript; charset=utf-8"
    assert 'url: "openapi.json"' in start.text and "validatorUrl: null" in start.text


def test_nothing_else_in_the_package_is_served(client: TestClient, viewer_key: str) -> None:
    release = vendored()[0]
    for path in (
        f"/docs/assets/{release}/redoc.standalone.js",  # shipped, not listed
        f"/docs/assets/{release}/..%2F__init__.py",
        f"/docs/assets/{release}/core.py",
        "/docs/assets/0.0.1/swagger-ui.css",  # another release
    ):
        response = client.get(path, headers=basic(viewer_key))
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
    assert client.get("/redoc", headers=bearer(viewer_key)).status_code == 404  # no Redoc


def test_without_the_extra_the_page_names_it(
    client: TestClient, viewer_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # as if not installed
    response = client.get("/docs", headers=basic(viewer_key))
    assert response.json()["code"] == "missing_extra"
    assert response.status_code == 503  # a server-side fault, as for every missing extra
    assert "pip install 'keel[server]'" in response.json()["message"]
    assert client.get("/openapi.json", headers=basic(viewer_key)).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.skipif(  # `make test` installs it (scripts/ensure-chromium.sh); CI must run this
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium)",
)
def test_swagger_ui_works_in_chromium_and_fetches_nothing_elsewhere(
    viewer_key: str, engine: Engine
) -> None:
    """A real browser: the key typed once as the password opens the page, its assets and
    the contract; "Authorize" then sends it as a bearer token; no request leaves the
    server and the policy blocks nothing the page needs."""
    playwright = pytest.importorskip("playwright.sync_api")
    uvicorn = pytest.importorskip("uvicorn")
    audit = AuditLog(engine.db)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine, audit), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            time.sleep(0.05)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = browser.new_context(
                http_credentials={"username": "me", "password": viewer_key}
            )
            page = context.new_page()
            requests: list[str] = []
            problems: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{origin}/docs")
            page.wait_for_selector(".opblock", timeout=20_000)
            page.click("button.authorize")
            page.fill(".auth-container input", viewer_key)
            page.click(".auth-btn-wrapper button.authorize")
            page.click("button.btn-done")
            page.locator('.opblock-get .opblock-summary-path[data-path="/v1/flows"]').click()
            page.click("text=Try it out")
            page.click("text=Execute")
            status = page.wait_for_selector(".live-responses-table .response .response-col_status")
            assert status is not None and status.inner_text().strip().startswith("200")
            browser.close()
    finally:
        server.should_exit = True
        thread.join()
        audit.close()
    assert problems == []
    assert requests and all(url.startswith(origin + "/") for url in requests), requests
    assert f"{origin}/openapi.json" in requests and f"{origin}/v1/flows" in requests
