"""Trust metrics per flow and bucket, from decisions, reviews and outcomes; the HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.errors import InputError, NotFoundError
from keel.ledger.records import iso_time
from keel.monitor.report import trust_html
from keel.review.outcomes import OutcomeReport
from keel.review.trust import trust_metrics
from tests.conftest import LOW_RISK, Clock, replace_in
from tests.test_replay import ALL_TIME, RISKY
from tests.test_review import ANNA, SHORT_HISTORY

FLOW = "credit_limit"
DAY = 86_400.0


def test_trust_figures_per_day_and_week(project: Path, env: dict[str, str]) -> None:
    clock = Clock(1_800_000_000.0)  # 2027-01-15, a Friday
    with open_engine(project, environ=env, clock=clock) as engine:
        finals = [engine.decide(FLOW, LOW_RISK) for _ in range(3)]
        waiting = [engine.decide(FLOW, SHORT_HISTORY) for _ in range(2)]
        engine.reviews.resolve(waiting[0].id, ANNA, "approve", "ok")
        engine.reviews.resolve(waiting[1].id, ANNA, "change", "less", action="approve", value=600.0)
        engine.reviews.override(finals[2].id, ANNA, "reject", "disputed")
        for decision, label in (
            (finals[0], "repaid"),
            (finals[1], "defaulted"),
            (finals[2], "defaulted"),
        ):
            engine.outcomes.report(OutcomeReport(decision.id, label), engine.operator)
        clock.now += DAY
        engine.decide(FLOW, RISKY)
        report = trust_metrics(engine.ctx, FLOW, *ALL_TIME)
        first, second = report["buckets"]
        assert (first["start"], second["start"]) == ("2027-01-15", "2027-01-16")
        assert first["volume"] == 5 and first["final"] == 3 and first["pending_review"] == 2
        assert first["automation_rate"] == pytest.approx(0.6)
        assert first["escalation_rate"] == pytest.approx(0.4)
        assert first["override_rate"] == pytest.approx(1 / 3)
        assert first["review_agreement"] == pytest.approx(0.5)  # one approved, one changed
        assert first["advisory_agreement"] is None  # no advisory case: unknown, not 0
        # repaid+approve is right; defaulted+approve is wrong; the override left refer in
        # force where defaulted calls for decline: wrong too.
        assert first["outcomes_known"] == 3 and first["outcome_accuracy"] == pytest.approx(1 / 3)
        assert second["volume"] == 1 and second["final"] == 1 and second["outcome_accuracy"] is None
        assert report["total"]["volume"] == 6
        weekly = trust_metrics(engine.ctx, FLOW, *ALL_TIME, bucket="week")
        assert [b["start"] for b in weekly["buckets"]] == ["2027-01-11"]  # Friday and Saturday
        assert weekly["buckets"][0]["volume"] == 6
        hourly = trust_metrics(engine.ctx, FLOW, *ALL_TIME, bucket="hour")
        assert len(hourly["buckets"]) == 2
        nothing = trust_metrics(engine.ctx, FLOW, "2001-01-01", "2001-02-01")
        assert nothing["buckets"] == [] and nothing["total"]["automation_rate"] is None
        with pytest.raises(InputError, match="bucket must be one of hour, day, week"):
            trust_metrics(engine.ctx, FLOW, *ALL_TIME, bucket="month")
        with pytest.raises(InputError, match="the range is empty"):
            trust_metrics(engine.ctx, FLOW, ALL_TIME[1], ALL_TIME[0])
        with pytest.raises(NotFoundError, match="unknown flow"):
            trust_metrics(engine.ctx, "pricing", *ALL_TIME)
        page = trust_html(report, iso_time(clock.now))
        assert page.startswith("<!doctype html>") and page.count("<svg") == 2
        assert "<script" not in page and "http" not in page  # self-contained
        assert "2027-01-16" in page and "33.3%" in page


def test_advisory_agreement_and_guardrail_hits(project: Path, env: dict[str, str]) -> None:
    replace_in(
        project / "flows" / "credit_limit.yaml", "autonomy: supervised", "autonomy: advisory"
    )
    with open_engine(project, environ=env) as engine:
        cases = [engine.decide(FLOW, LOW_RISK) for _ in range(2)]
        engine.reviews.resolve(cases[0].id, ANNA, "approve", "agree")
        engine.reviews.resolve(cases[1].id, ANNA, "reject", "disagree")
        big = engine.decide(
            FLOW, {**LOW_RISK, "annual_income": 400000.0, "requested_limit": 60000.0}
        )
        assert big.guardrail_hits  # the approval bound clamps it
        total = trust_metrics(engine.ctx, FLOW, *ALL_TIME)["total"]
        assert total["advisory"] == 3 and total["automation_rate"] == 0.0
        assert total["advisory_agreement"] == pytest.approx(0.5)
        assert total["guardrail_hits"] == 1


def test_trust_report_from_the_command_line(project: Path, tmp_path: Path) -> None:
    with open_engine(project) as engine:
        engine.decide(FLOW, LOW_RISK)
    runner = CliRunner()
    page = tmp_path / "trust.html"
    args = ["report", "trust", FLOW, "-p", str(project)]
    result = runner.invoke(app, [*args, "--html", str(page)])
    assert result.exit_code == 0, result.stderr
    assert "Automated" in result.stdout and "100.0%" in result.stdout and page.exists()
    result = runner.invoke(app, [*args, "--json", "--bucket", "week"])
    assert json.loads(result.stdout)["total"]["volume"] == 1
    result = runner.invoke(app, [*args, "--bucket", "month"])
    assert result.exit_code == 2 and "bucket must be one of" in result.stderr
