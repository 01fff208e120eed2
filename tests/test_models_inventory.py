"""The model inventory: every model version a flow used, from the ledger, with its card
(recorded with the version, its changes visible) and figures from outcomes; Markdown and
HTML cards; the CLI and HTTP with their permissions."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from scipy.stats import ks_2samp
from sklearn.metrics import brier_score_loss, roc_auc_score
from typer.testing import CliRunner

from keel import open_engine
from keel.api import create_app
from keel.cli import app
from keel.engine import Engine
from keel.errors import DefinitionError, InputError, NotFoundError
from keel.ledger.records import iso_time
from keel.models_report import card_html, card_markdown
from keel.review.outcomes import OutcomeReport
from keel.scaffold.applicants import case_inputs, generate_applicants
from keel.security.apikeys import create_key
from keel.security.roles import Grant, PermissionDeniedError, Role
from keel.signals.cards import CARD_KEYS, card_path, load_card
from tests.conftest import LOW_RISK, Clock, person, problems, python_model, replace_in, write
from tests.test_changes import ANNA, CARL, other_model

FLOW = "credit_limit"
CARD = """\
owner: Credit Risk Modelling <risk-models@example.com>
description: Probability of default within 24 months.
intended_use: Sizing revolving credit limits for existing customers.
training_data: 20,000 synthetic applicants from keel init, seed 7.
limitations: <script>alert("card")</script> & not for business loans
"""
runner = CliRunner()


def keel(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _decide(engine: Engine, clock: Clock, n: int, seed: int) -> list[str]:
    """``n`` decisions on generated applicants, a minute apart; their ids."""
    ids = []
    for applicant in generate_applicants(n, seed=seed):
        clock.advance(60)
        ids.append(engine.decide(FLOW, case_inputs(applicant)).id)
    return ids


def test_two_model_versions_are_listed_with_their_use_over_time(
    project: Path, env: dict[str, str]
) -> None:
    retrained = other_model(project / "retrained.skops")
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        first = engine.runtime(FLOW).models["default_risk"].version
        start = iso_time(clock())
        early = _decide(engine, clock, 2, seed=1)
        early_times = [engine.decision(d).recorded_at for d in early]
        clock.advance(3600)
        change = engine.changes.propose(
            FLOW, None, ANNA, "Retrained", models={"default_risk": retrained}
        )
        engine.changes.approve(change.id, CARL, "backtested")
        switched = iso_time(clock())
        engine.changes.activate(change.id, CARL)
        second = change.models["default_risk"]
        late = _decide(engine, clock, 3, seed=2)
        late_times = [engine.decision(d).recorded_at for d in late]
        found = engine.models.list_versions(engine.operator)
    assert [(u.version, u.decisions, u.current) for u in found] == [
        (first, 2, False),
        (second, 3, True),
    ]
    old, new = found
    assert (old.first_used, old.last_used) == (early_times[0], early_times[-1])
    assert (new.first_used, new.last_used) == (late_times[0], late_times[-1])
    assert (old.active_from, old.active_until) == (start, switched)
    assert (new.active_from, new.active_until) == (switched, None)
    assert (old.pinned, new.pinned) == ([(start, switched)], [(switched, None)])
    assert (old.file, new.file) == ("default_risk.skops", "retrained.skops")
    code, out, _ = keel("models", "list", "--json", "-p", str(project), env=env)
    assert code == 0 and [u["version"] for u in json.loads(out)] == [first, second]
    code, out, _ = keel("models", "list", "-p", str(project), env=env)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and "3 decisions" in lines[1] and "runs now" in lines[1]
    assert keel("models", "list", "--flow", "nope", "-p", str(project), env=env)[0] == 2


def _same_start(prefix_len: int) -> tuple[str, str]:
    """Two model sources whose SHA-256 share their first ``prefix_len`` hex digits."""
    seen: dict[str, str] = {}
    for n in range(1_000_000):
        text = f"def score(row):\n    return 0.1  # {n}\n"
        start = hashlib.sha256(text.encode()).hexdigest()[:prefix_len]
        if start in seen:
            return seen[start], text
        seen[start] = text
    raise AssertionError("no collision")  # pragma: no cover


def test_a_prefix_names_one_version_and_an_ambiguous_one_names_the_matches(
    project: Path,
) -> None:
    one, two = _same_start(4)
    python_model(project, one)
    source = project / "models" / "risk.py"
    versions = []
    for text in (one, two):
        write(source, text)
        with open_engine(project) as engine:
            versions.append(engine.decide(FLOW, LOW_RISK).signals["default_risk"]["version"])
    shared = versions[0].removeprefix("sha256:")[:4]
    assert versions[1].removeprefix("sha256:").startswith(shared)
    with open_engine(project) as engine:
        unique = versions[1].removeprefix("sha256:")[:12]
        assert engine.models.show(unique, engine.operator).version == versions[1]
        assert engine.models.show(versions[0], engine.operator).version == versions[0]
        with pytest.raises(InputError) as info:
            engine.models.show(shared, engine.operator)
        assert info.value.detail["matches"] == sorted(versions)
        with pytest.raises(InputError, match="at least 4 characters"):
            engine.models.show("sha256:ab", engine.operator)
        with pytest.raises(NotFoundError):
            engine.models.show("ffffffffffff", engine.operator)
    code, _, err = keel("models", "show", shared, "-p", str(project))
    assert code == 2 and versions[0] in err and versions[1] in err
    code, out, _ = keel("models", "show", unique, "-p", str(project))
    assert code == 0 and versions[1] in out and "owner    unknown" in out


def test_the_card_and_figures_from_outcomes(project: Path, env: dict[str, str]) -> None:
    write(project / "models" / "default_risk.card.yaml", CARD)
    flow = project / "flows" / "credit_limit.yaml"
    replace_in(
        flow,
        "    label: Credit history\n",
        "    label: Credit history\n    protected: true\n    groups: [5, 10]\n",
    )
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        version = engine.runtime(FLOW).models["default_risk"].version
        applicants = generate_applicants(40, seed=3)
        decided = []
        for applicant in applicants:
            clock.advance(60)
            decided.append(engine.decide(FLOW, case_inputs(applicant)))
        for applicant, decision in zip(applicants, decided, strict=True):
            label = "defaulted" if applicant["defaulted"] else "repaid"
            engine.outcomes.report(OutcomeReport(decision.id, label), engine.operator)
        detail = engine.models.show(version[7:15], engine.operator)
        trust = engine.trust.metrics(engine.operator, FLOW, "", "9999")
    scores = [d.signals["default_risk"]["score"] for d in decided]
    bad = [bool(a["defaulted"]) for a in applicants]
    assert len(set(bad)) == 2, "the sample holds both outcomes"
    (figures,) = detail.figures
    assert figures.with_outcomes == 40 and figures.scored == 40 and figures.bad == sum(bad)
    assert figures.auc == pytest.approx(roc_auc_score(bad, scores), abs=1e-12)
    assert figures.gini == pytest.approx(2 * roc_auc_score(bad, scores) - 1, abs=1e-12)
    goods = [s for s, b in zip(scores, bad, strict=True) if not b]
    bads = [s for s, b in zip(scores, bad, strict=True) if b]
    assert figures.ks == pytest.approx(ks_2samp(bads, goods).statistic, abs=1e-12)
    assert figures.brier == pytest.approx(brier_score_loss(bad, scores), abs=1e-12)
    # One definition: the trust report's figures for the version are the same numbers.
    (reported,) = trust["performance"]["versions"]
    assert reported["version"] == version
    assert {k: reported["total"][k] for k in ("auc", "gini", "ks", "brier", "scored")} == {
        "auc": figures.auc, "gini": figures.gini, "ks": figures.ks, "brier": figures.brier,
        "scored": figures.scored,
    }  # fmt: skip
    # Accuracy counts only decisions whose action is in force: not those waiting for review.
    right = {"repaid": "approve", "defaulted": "decline"}
    in_force = [
        (d.action == right["defaulted" if b else "repaid"])
        for d, b in zip(decided, bad, strict=True)
        if d.status == "final"
    ]
    waiting = [d for d in decided if d.status != "final"]
    assert waiting, "some cases wait for a reviewer"
    assert figures.judged == len(in_force) and figures.correct == sum(in_force)
    assert (figures.since, figures.until) == (decided[0].recorded_at, decided[-1].recorded_at)
    assert detail.card is not None and detail.card.fields["owner"].startswith("Credit Risk")
    assert detail.card.sha256 == hashlib.sha256(CARD.encode()).hexdigest()
    assert detail.card_on_disk == "recorded" and not detail.card_changed
    assert [f.name for f in detail.features or []][:2] == ["annual_income", "debt_to_income"]

    markdown = card_markdown(detail)
    for section in ("Model details", "Intended use", "Training data", "Features",
                    "Metrics from outcomes", "Limitations and recommendations"):  # fmt: skip
        assert f"## {section}" in markdown
    assert version in markdown and "Sizing revolving credit limits" in markdown
    assert f"| 40 | {figures.since[:19]} – {figures.until[:19]} |" in markdown
    assert f"| 40 ({figures.bad} bad) | {figures.auc:.3f} | {figures.gini:.3f} |" in markdown
    # What the team did not write reads "unknown", never a made-up text.
    assert "## Evaluation data\n\nUnknown: the model's card does not say." in markdown
    assert "| credit_history_years | number | Credit history | – | yes |" in markdown
    assert "| annual_income | number | Annual income | – | no |" in markdown
    assert "<script>" not in markdown and "\\<script\\>" in markdown

    html = card_html(detail)
    assert html.startswith("<!doctype html>") and "<style>" in html
    assert "<script" not in html and "http" not in html.split("</style>")[0]
    assert "&lt;script&gt;alert(&quot;card&quot;)&lt;/script&gt; &amp; not for" in html
    assert "&lt;risk-models@example.com&gt;" in html

    out = project / "card.html"
    code, _, err = keel("models", "card", version, "--format", "html", "--out", str(out),
                        "-p", str(project), env=env)  # fmt: skip
    assert code == 0 and f"wrote {out}" in err and "&lt;script&gt;" in out.read_text()
    code, text, _ = keel("models", "card", version, "-p", str(project), env=env)
    assert code == 0 and text.startswith("# Model card: default_risk.skops")
    code, _, err = keel("models", "card", version, "--format", "pdf", "-p", str(project), env=env)
    assert code == 2 and "unknown card format 'pdf'" in err


def test_a_card_changed_after_its_version_was_recorded_is_detected(project: Path) -> None:
    card = write(project / "models" / "default_risk.card.yaml", CARD)
    with open_engine(project) as engine:
        version = engine.runtime(FLOW).models["default_risk"].version
        engine.decide(FLOW, LOW_RISK)
        recorded = engine.entries(kind="model_card_recorded")
        assert [(e.body["model"], e.body["file"]) for e in recorded] == [
            (version, "default_risk.skops")
        ]
        card.write_text(CARD.replace("existing customers", "anyone"), encoding="utf-8")
        detail = engine.models.show(version, engine.operator)
        assert detail.card_on_disk == "changed" and detail.card_changed
        assert "existing customers" in detail.card.fields["intended_use"]  # type: ignore[union-attr]
    with open_engine(project) as engine:  # opening the project records the new card
        detail = engine.models.show(version, engine.operator)
        assert engine.verify().ok
    assert len(detail.card_history) == 2 and detail.card_on_disk == "recorded"
    assert detail.card is not None and detail.card.fields["intended_use"].endswith("anyone.")
    assert "changed 1 time(s) after the version was first recorded" in card_markdown(detail)
    with open_engine(project) as engine:  # the same card is recorded once
        assert len(engine.entries(kind="model_card_recorded")) == 2


def test_cards_are_checked_at_validate_with_their_line(project: Path) -> None:
    write(project / "models" / "default_risk.card.yaml", CARD + "colour: blue\n")
    found = problems(project)
    assert any("default_risk.card.yaml:6: card: unknown key 'colour'" in p for p in found)
    # Which outcomes are bad is the flow's to say (outcome.positive), not the card's.
    write(project / "models" / "default_risk.card.yaml", CARD + "positive_outcomes: [defaulted]\n")
    (problem,) = problems(project)
    assert "default_risk.card.yaml:6: positive_outcomes: is no longer a card key" in problem
    assert "move them to outcome.positive in the flow file" in problem
    write(project / "models" / "default_risk.card.yaml", "owner: [1, 2]\n")
    code, _, err = keel("validate", "-p", str(project))
    assert code == 2 and "default_risk.card.yaml:1: owner: must be a non-empty string" in err


def test_models_over_http_need_read_decisions(project: Path) -> None:
    with open_engine(project) as engine:
        engine.decide(FLOW, LOW_RISK)
        version = engine.runtime(FLOW).models["default_risk"].version
        now = time.time()
        _, viewer = create_key(engine.db, "v", "t", [Grant(Role.VIEWER, FLOW)], "t", now)
        _, decider = create_key(engine.db, "d", "t", [Grant(Role.DECIDER, FLOW)], "t", now)
        with TestClient(create_app(engine)) as client:
            assert client.get("/v1/models").status_code == 401
            assert client.get(f"/v1/models/{version}").status_code == 401
            as_decider = {"Authorization": f"Bearer {decider}"}
            refused = client.get("/v1/models", params={"flow": FLOW}, headers=as_decider)
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
            assert client.get("/v1/models", headers=as_decider).json() == {"models": []}
            hidden = client.get(f"/v1/models/{version}", headers=as_decider)
            assert hidden.status_code == 404  # like an unknown version: nothing to probe
            as_viewer = {"Authorization": f"Bearer {viewer}"}
            listed = client.get("/v1/models", headers=as_viewer).json()["models"]
            assert [(m["version"], m["decisions"]) for m in listed] == [(version, 1)]
            shown = client.get(f"/v1/models/{version[7:19]}", headers=as_viewer)
            assert shown.status_code == 200 and shown.json()["version"] == version
            assert shown.json()["card"] is None
            short = client.get("/v1/models/ab", headers=as_viewer)
            assert short.status_code == 422 and short.json()["code"] == "invalid_input"
            page = client.get(
                f"/v1/models/{version}/card", params={"format": "html"}, headers=as_viewer
            )
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "no card was recorded" in page.text
            text = client.get(f"/v1/models/{version}/card", headers=as_viewer)
            assert text.headers["content-type"].startswith("text/markdown")
    with open_engine(project) as engine, pytest.raises(PermissionDeniedError):
        engine.models.list_versions(person("key:d", "D", "decider", FLOW), FLOW)


def test_every_card_key_is_described_accepted_and_on_its_page(tmp_path: Path) -> None:
    """A card using every described key loads whole; an undescribed one is refused by
    name; the reference page has an entry for each key."""
    every = {k.path: "text" for k in CARD_KEYS}
    model = tmp_path / "m.skops"
    write(card_path(model), json.dumps(every))
    loaded = load_card(model)
    assert loaded is not None and set(loaded.fields) == set(every)
    write(card_path(model), json.dumps({**every, "undescribed_key": "x"}))
    with pytest.raises(DefinitionError, match="unknown key 'undescribed_key'"):
        load_card(model)
    page = (Path(__file__).parent.parent / "docs/reference/model-cards.md").read_text()
    assert [k.path for k in CARD_KEYS if f'<a id="{k.path}"></a>`{k.path}`' not in page] == []
