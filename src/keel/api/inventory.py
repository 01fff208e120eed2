"""The model inventory over HTTP: every model version the flows used, one version with its
card and figures, and its model card as Markdown or HTML.

Reading needs ``read_decisions`` on the flows that used the version (its figures come from
their outcomes). A version used only on flows the caller may not read answers 404, like an
unknown one; a prefix that names several versions answers 422 with the matches.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from keel.api.auth import current_principal, engine_of
from keel.api.decisions import ERRORS
from keel.security.roles import Principal

router = APIRouter(prefix="/v1", responses=ERRORS)
Caller = Annotated[Principal, Depends(current_principal)]


@router.get("/models", name="list_models")
def list_models(
    principal: Caller,
    request: Request,
    flow: Annotated[str | None, Query(description="Only this flow's models.")] = None,
) -> dict[str, Any]:
    """Every model version the readable flows (or ``flow``) used, from the ledger, oldest
    first: file, first and last decision, decisions, when it was pinned, whether it runs
    now."""
    found = engine_of(request).models.list_versions(principal, flow)
    return {"models": [u.to_dict() for u in found]}


@router.get("/models/{version}", name="get_model")
def get_model(version: str, principal: Caller, request: Request) -> dict[str, Any]:
    """One model version (or the start of its hash): where and when it ran, its recorded
    card and the card's history, its inputs, and figures from outcomes."""
    return engine_of(request).models.show(version, principal).to_dict()


@router.get(
    "/models/{version}/card",
    name="get_model_card",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}, "text/html": {}}}},
)
def get_model_card(
    version: str,
    principal: Caller,
    request: Request,
    fmt: Annotated[Literal["md", "html"], Query(alias="format", description="md or html")] = "md",
) -> Response:
    """The version's model card: Markdown, or one self-contained HTML page."""
    from keel.models_report import render_card  # noqa: PLC0415

    text = render_card(engine_of(request).models.show(version, principal), fmt)
    if fmt == "html":
        return HTMLResponse(text)
    return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")
