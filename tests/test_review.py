"""The review queue: escalations and advisory cases wait for a person, who resolves them
with a reason; overrides of final decisions; four eyes; windows; the ledger records all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keel import open_engine
from keel.engine import Engine
from keel.errors import ConflictError, InputError, NotFoundError
from keel.security.roles import Grant, Principal, Role
from tests.conftest import LOW_RISK, Clock, person, replace_in, run_sql

FLOW = "credit_limit"
SHORT_HISTORY = {**LOW_RISK, "credit_history_years": 0.5}  # approve, to be confirmed
ANNA = person("key:anna0001", "Anna", "reviewer")
ANNA_DECIDING = Principal(ANNA.id, "Anna", "Anna", (Grant(Role.DECIDER), Grant(Role.REVIEWER)))
BEN = person("key:ben00002", "Ben", "owner")


def test_an_escalation_waits_in_the_queue_and_its_resolution_is_in_the_ledger(
    engine: Engine,
) -> None:
    final = engine.decide(FLOW, LOW_RISK)
    service = person("key:svc", "svc", "decider")
    pending = engine.decide(FLOW, SHORT_HISTORY, subject_id="c-7", by=service)
    assert pending.status == "pending_review"
    queue = engine.reviews.queue(engine.operator, [FLOW])
    assert [r.decision_id for r in queue] == [pending.id]  # the final one never queues
    row = queue[0]
    assert row.state == "open" and row.kind == "escalation"
    assert row.requested_by == "key:svc" and row.proposed_action == pending.action
    assert engine.reviews.claim(pending.id, ANNA).claimed_by == ANNA.id
    assert engine.reviews.claim(pending.id, ANNA).state == "claimed"  # again: harmless
    with pytest.raises(ConflictError, match="claimed by key:anna0001"):
        engine.reviews.resolve(pending.id, BEN, "approve", "looks fine")
    review = engine.reviews.resolve(pending.id, ANNA, "approve", "Income verified by phone.")
    assert review.action == pending.action and review.value == pending.value
    assert review.reviewer == {"id": ANNA.id, "name": "Anna", "role": "reviewer", "person": "anna"}
    entry = engine.entry(review.id)
    assert entry.kind == "review" and entry.body["decision"] == pending.id
    assert entry.body["reason"] == "Income verified by phone."
    assert engine.reviews.get(pending.id, engine.operator).state == "resolved"
    assert engine.reviews.queue(engine.operator, [FLOW], "open") == []
    with pytest.raises(ConflictError, match=r"was resolved at .* by key:anna0001 \(approve\)"):
        engine.reviews.resolve(pending.id, ANNA, "reject", "second thoughts")
    with pytest.raises(NotFoundError, match="has no review waiting"):
        engine.reviews.resolve(final.id, ANNA, "approve", "nothing to review")
    report = engine.verify()
    assert report.ok and report.entries == 6  # policy (2), autonomy, 2 decisions, 1 review


def test_reject_takes_the_safe_action_and_change_stays_inside_the_policy(
    engine: Engine,
) -> None:
    one = engine.decide(FLOW, SHORT_HISTORY)
    two = engine.decide(FLOW, SHORT_HISTORY)
    rejected = engine.reviews.resolve(one.id, ANNA, "reject", "Documents missing.")
    assert rejected.action == "refer" and rejected.value is None  # the fallback
    bad: list[tuple[dict[str, Any], str]] = [
        ({"resolution": "change", "reason": "x"}, "needs the action"),
        ({"resolution": "change", "reason": "x", "action": "teleport"}, "unknown action"),
        ({"resolution": "change", "reason": "x", "action": "approve"}, "needs a value"),
        (
            {"resolution": "change", "reason": "x", "action": "approve", "value": 10**9},
            "outside the policy's bounds",
        ),
        ({"resolution": "approve", "reason": "  "}, "needs a reason"),
        ({"resolution": "approve", "reason": "x", "action": "decline"}, "takes no action"),
        ({"resolution": "maybe", "reason": "x"}, "resolution must be one of"),
    ]
    for arguments, message in bad:
        with pytest.raises(InputError, match=message):
            engine.reviews.resolve(two.id, ANNA, **arguments)
    assert engine.reviews.get(two.id, engine.operator).state == "open"  # refusals changed nothing
    changed = engine.reviews.resolve(
        two.id, ANNA, "change", "Lower limit to start.", action="approve", value=800.0
    )
    assert (changed.action, changed.value) == ("approve", 800.0)
    assert engine.verify().ok


def test_overrides_of_final_decisions_are_reviews(engine: Engine) -> None:
    final = engine.decide(FLOW, LOW_RISK)
    with pytest.raises(InputError, match="override it with reject or change"):
        engine.reviews.override(final.id, BEN, "approve", "fine")
    review = engine.reviews.override(
        final.id, BEN, "change", "Customer asked for less.", action="approve", value=2000.0
    )
    assert review.kind == "override" and review.proposed["action"] == "approve"
    assert engine.reviews.get(final.id, engine.operator).final_value == 2000.0
    with pytest.raises(ConflictError, match="has a review already"):
        engine.reviews.override(final.id, BEN, "reject", "again")
    pending = engine.decide(FLOW, SHORT_HISTORY)
    with pytest.raises(ConflictError, match="has a review already"):
        engine.reviews.override(pending.id, BEN, "reject", "not final")
    with pytest.raises(NotFoundError):
        engine.reviews.override("dec_unknown", BEN, "reject", "who?")


def test_four_eyes_keeps_the_requester_from_reviewing(project: Path, env: dict[str, str]) -> None:
    flow_file = project / "flows" / "credit_limit.yaml"
    flow_file.write_text(flow_file.read_text() + "review:\n  deadline: 4h\n  four_eyes: true\n")
    with open_engine(project, environ=env) as engine:
        pending = engine.decide(FLOW, SHORT_HISTORY, by=ANNA_DECIDING)
        row = engine.reviews.get(pending.id, engine.operator)
        assert row.due_at > row.opened_at
        for act in (
            lambda: engine.reviews.claim(pending.id, ANNA),
            lambda: engine.reviews.resolve(pending.id, ANNA, "approve", "mine"),
        ):
            with pytest.raises(
                ConflictError,
                match=r"four eyes: the person who requested decision .* \(anna\) cannot review it",
            ):
                act()
        assert engine.reviews.resolve(pending.id, BEN, "approve", "checked").late is False
        final = engine.decide(FLOW, LOW_RISK, by=ANNA_DECIDING)  # decided, and final
        assert final.status == "final"
        with pytest.raises(
            ConflictError,
            match=r"four eyes: the person who requested decision .* cannot override it",
        ):
            engine.reviews.override(final.id, ANNA, "reject", "my own")
        with pytest.raises(NotFoundError):  # the refusal left no review behind
            engine.reviews.get(final.id, engine.operator)
        assert engine.reviews.override(final.id, BEN, "reject", "checked").kind == "override"


def test_bad_review_settings_are_named(project: Path, env: dict[str, str]) -> None:
    from keel.errors import DefinitionError

    flow_file = project / "flows" / "credit_limit.yaml"
    flow_file.write_text(
        flow_file.read_text() + "review:\n  deadline: soon\n  four_eyes: 2\n  budget: 5\n"
    )
    with pytest.raises(DefinitionError) as raised:
        open_engine(project, environ=env)
    message = str(raised.value)
    assert "'deadline' must look like 30m" in message and "'four_eyes' must be true" in message
    assert "unknown key 'budget' in review" in message


def test_an_approval_consumes_the_window_and_may_pass_its_limit(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    replace_in(
        project / "policies/credit_limit.yaml",
        "      max: 200\n      window: 1h",
        "      max: 1\n      window: 1h",
    )
    with open_engine(project, environ=env) as engine:
        first = engine.decide(FLOW, SHORT_HISTORY)
        second = engine.decide(FLOW, SHORT_HISTORY)
        assert engine.decide(FLOW, LOW_RISK).status == "final"  # takes the one slot
        one = engine.reviews.resolve(first.id, ANNA, "approve", "ok")
        assert one.windows["consumed"] and one.windows["exceeded"]
        usage = run_sql(db_url, "select count(*) from guardrail_usage")[0][0]
        assert usage >= 2  # the automatic approval and the human one both count
        assert engine.decide(FLOW, LOW_RISK).status == "pending_review"  # the limit holds
        rejected = engine.reviews.resolve(second.id, ANNA, "reject", "no")
        assert rejected.windows == {"consumed": [], "exceeded": []}  # refer has no limit


def _review_section(project: Path, text: str) -> None:
    flow_file = project / "flows" / "credit_limit.yaml"
    flow_file.write_text(flow_file.read_text() + text)


def test_deadline_breaches_are_recorded_once(project: Path, env: dict[str, str]) -> None:
    _review_section(project, "review:\n  deadline: 1h\n")
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        late = engine.decide(FLOW, SHORT_HISTORY)
        settled = engine.decide(FLOW, SHORT_HISTORY)
        engine.reviews.resolve(settled.id, ANNA, "approve", "on time")
        clock.now += 1800
        assert engine.reviews.sweep() == []  # not due yet
        clock.now += 3600
        assert engine.reviews.queue(engine.operator, [FLOW], "open")[0].overdue is True
        breaches = engine.reviews.sweep()
        assert [b.decision for b in breaches] == [late.id]  # the resolved one is not late
        assert engine.reviews.sweep() == []  # recorded once
        entry = engine.entries(1, kind="review_breached")[0]
        assert entry.body["decision"] == late.id and entry.body["due_at"] < entry.recorded_at
        assert engine.reviews.get(late.id, engine.operator).breached_at == entry.body["noticed_at"]
        counted = engine.metrics.review_breaches.labels(FLOW, "escalation")._value.get()
        assert counted == 1
        assert engine.reviews.resolve(late.id, ANNA, "approve", "finally").late is True
        assert engine.verify().ok


@pytest.mark.parametrize(("mode", "status"), [("fallback", "final"), ("pause", "deferred")])
def test_saturated_reviewers_get_no_more_cases(
    project: Path, env: dict[str, str], mode: str, status: str
) -> None:
    _review_section(
        project, f"review:\n  capacity: {{max_reviews: 2, per: 1h, when_saturated: {mode}}}\n"
    )
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        first, second, third = (engine.decide(FLOW, SHORT_HISTORY) for _ in range(3))
        assert [first.status, second.status] == ["pending_review", "pending_review"]
        assert third.status == status and third.action == "refer" and third.value is None
        assert third.fallback is not None and third.fallback.startswith("review_capacity: 2 ")
        assert [h["name"] for h in third.guardrail_hits] == ["review_capacity"]
        assert len(engine.reviews.queue(engine.operator, [FLOW])) == 2  # the third opened no review
        assert engine.metrics.fallbacks.labels(FLOW, "review_capacity")._value.get() == 1
        assert engine.decide(FLOW, LOW_RISK).status == "final"  # no review, no budget spent
        clock.now += 3601  # the window slides: capacity is back
        assert engine.decide(FLOW, SHORT_HISTORY).status == "pending_review"
    with open_engine(project, environ=env, clock=clock) as engine:  # usage survives restarts
        assert engine.decide(FLOW, SHORT_HISTORY).status == "pending_review"
        assert engine.decide(FLOW, SHORT_HISTORY).status == status
        assert "deferred" not in engine.explain(first.id)["why"]


def test_bad_capacity_settings_are_named(project: Path, env: dict[str, str]) -> None:
    from keel.errors import DefinitionError

    _review_section(
        project,
        "review:\n  capacity: {max_reviews: 0, per: weekly, when_saturated: panic, size: 3}\n",
    )
    with pytest.raises(DefinitionError) as raised:
        open_engine(project, environ=env)
    message = str(raised.value)
    for expected in (
        "'max_reviews' must be a whole number of at least 1, got 0",
        "'per' must look like 30m, 8h or 1d, got 'weekly'",
        "'when_saturated' must be one of fallback, pause, got 'panic'",
        "unknown key 'size' in capacity",
    ):
        assert expected in message
