"""The review queue one page at a time: every listing says how many reviews match, and
where the next page starts, in Python, over HTTP and on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import Engine, open_engine
from keel.cli import app
from keel.errors import InputError
from keel.security.apikeys import create_key
from keel.security.roles import Grant, Role
from tests.conftest import person
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
SERVICE = person("key:svc", "svc", "decider")


def escalate(engine: Engine, count: int) -> list[str]:
    """``count`` decisions waiting for review, oldest first."""
    return [engine.decide(FLOW, SHORT_HISTORY, by=SERVICE).id for _ in range(count)]


def test_pages_follow_each_other_and_count_every_match(engine: Engine) -> None:
    waiting = escalate(engine, 5)
    seen: list[str] = []
    after = None
    for size in (2, 2, 1):
        page = engine.reviews.page(engine.operator, [FLOW], "open", 2, after)
        assert page.total == 5 and len(page.reviews) == size
        seen += [r.decision_id for r in page.reviews]
        after = page.next
    assert seen == waiting and after is None  # the last page says no more follow
    with pytest.raises(InputError, match="has no review in this listing"):
        engine.reviews.page(engine.operator, [FLOW], "open", 2, "dec_nope")


def test_http_pages_with_total_and_next(engine: Engine, client: TestClient) -> None:
    waiting = escalate(engine, 3)
    now = engine.clock()
    _, secret = create_key(engine.db, "t", "uma", [Grant(Role.REVIEWER, FLOW)], "tests", now, None)
    headers = {"Authorization": f"Bearer {secret}"}
    first = client.get("/v1/reviews", params={"limit": 2}, headers=headers).json()
    assert first["total"] == 3 and first["next"] == waiting[1]
    assert [r["decision_id"] for r in first["reviews"]] == waiting[:2]
    rest = client.get(
        "/v1/reviews", params={"limit": 2, "after": first["next"]}, headers=headers
    ).json()
    assert [r["decision_id"] for r in rest["reviews"]] == waiting[2:]
    assert rest["total"] == 3 and rest["next"] is None
    bad = client.get("/v1/reviews", params={"after": "dec_nope"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "after"


runner = CliRunner()


def test_cli_says_when_more_exist_and_lists_all_on_request(project: Path) -> None:
    with open_engine(project) as engine:
        waiting = escalate(engine, 3)
    base = ["review", "list", "-p", str(project)]
    result = runner.invoke(app, [*base, "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == waiting[:2]
    assert (
        f"showing 2 of 3 reviews; more with --after {waiting[1]}, a larger --limit, or --all"
        in result.stderr
    )
    result = runner.invoke(app, [*base, "--limit", "2", "--after", waiting[1]])
    assert [line.split()[0] for line in result.stdout.splitlines()] == waiting[2:]
    assert "showing 1 of 3 reviews" in result.stderr and "--after" not in result.stderr
    result = runner.invoke(app, [*base, "--limit", "2", "--all"])
    assert [line.split()[0] for line in result.stdout.splitlines()] == waiting
    assert result.stderr.strip() == "3 reviews"
    result = runner.invoke(app, [*base, "--limit", "2", "--json"])
    listing = json.loads(result.stdout)
    assert listing["total"] == 3 and listing["next"] == waiting[1]
    assert [r["decision_id"] for r in listing["reviews"]] == waiting[:2]
