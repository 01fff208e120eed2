"""The review queue: people approve, reject or change what the policy decided.

Escalated decisions (``pending_review``) and every case of an ``advisory`` flow open a
review in the same transaction as the decision. Reviewers list the queue, claim a case and
resolve it with a reason, which is mandatory:

- ``approve`` — the proposed action stands;
- ``reject`` — the proposed action is not taken; the policy's fallback (its safe action)
  is, without a value;
- ``change`` — another of the policy's actions, with a value inside the policy's bounds.

A final decision can be overridden the same way (``reject`` or ``change``). Each resolution
is a ``review`` entry in the ledger naming the reviewer, the role they acted in and the
reason, written with the queue row in one transaction under the ledger's lock, so two
reviewers cannot both resolve a case. Where the flow asks for four eyes, the person who
requested a decision (through whichever key or token) can neither claim, resolve nor
override it. The action a person lets
through consumes the policy's rate and exposure windows like an automatic one; a person may
take it past a limit (that is what escalation is for), and the entry says which.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, RowMapping, func, select, tuple_, update

from keel.context import Context
from keel.errors import ConflictError, InputError, IntegrityError, NotFoundError
from keel.events import ReviewBreached, ReviewResolved, pending
from keel.events import body as body_of
from keel.flows import ReviewSettings
from keel.ledger import anchor
from keel.ledger.reader import decision_flow
from keel.ledger.records import Entry, iso_time, new_id
from keel.ledger.writer import WindowGate, append_in
from keel.policy.guardrails import segment_of
from keel.reasons import required_reason
from keel.security.persons import refuse_same_person
from keel.security.roles import Actor, Permission, Principal, visible_to
from keel.store.schema import decisions, reviews
from keel.telemetry import log

RESOLUTIONS = ("approve", "reject", "change")
MAX_VALUE = 1e15  # an action's value (an amount): far above any real one, exact as a float
STATES = ("open", "claimed", "resolved")
T = TypeVar("T")  # what a write transaction's work returns


Reviewer = Actor  # who acted on a review, and in which role (recorded in the ledger entry)


@dataclass(frozen=True)
class ReviewTask:
    """One decision's review as the queue holds it (its ``reviews`` row)."""

    decision_id: str
    flow: str
    decision_seq: int
    kind: str  # escalation | advisory | override
    state: str  # open | claimed | resolved
    opened_at: str
    due_at: str | None
    requested_by: str | None
    proposed_action: str
    proposed_value: float | None
    claimed_by: str | None
    claimed_at: str | None
    resolved_at: str | None
    resolution: str | None  # approve | reject | change
    final_action: str | None
    final_value: float | None
    reviewer: str | None
    review_id: str | None  # the review's ledger record
    breached_at: str | None  # when the deadline breach was recorded, once
    requested_person: str | None = None  # the person who asked; None on older rows
    overdue: bool | None = None  # queue listings only: still waiting past its deadline

    @classmethod
    def of(cls, row: Mapping[str, Any] | RowMapping) -> ReviewTask:
        """The task of a ``reviews`` row."""
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name != "overdue"})

    def row(self) -> dict[str, Any]:
        """The ``reviews`` row."""
        out = asdict(self)
        del out["overdue"]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The row, with ``overdue`` where the queue marked it."""
        return self.row() if self.overdue is None else asdict(self)


@dataclass(frozen=True)
class ReviewPage:
    """One page of the queue: its reviews, how many match in all, and where the next page
    starts (``None`` on the last page)."""

    reviews: list[ReviewTask]
    total: int
    next: str | None  # pass as ``after`` for the next page

    def to_dict(self) -> dict[str, Any]:
        return {
            "reviews": [r.to_dict() for r in self.reviews],
            "total": self.total,
            "next": self.next,
        }


@dataclass(frozen=True)
class ReviewResolution:
    """A resolved review: the ``review`` ledger entry's body, and the entry's id."""

    id: str
    decision: str
    decision_seq: int
    kind: str  # escalation | advisory | override
    resolution: str  # approve | reject | change
    proposed: dict[str, Any]  # {action, value} the decision proposed
    action: str
    value: float | None
    reason: str
    reviewer: dict[str, Any]  # {id, name, role}
    requested_by: str | None
    opened_at: str
    due_at: str | None
    late: bool
    windows: dict[str, Any]  # {consumed, exceeded}: the rate and exposure windows
    requested_person: str | None = None

    @classmethod
    def of(cls, record_id: str, review: ReviewResolved) -> ReviewResolution:
        return cls(id=record_id, **body_of(review))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReviewBreach:
    """A review found waiting past its deadline: the flow and the ``review_breached`` body."""

    flow: str
    decision: str
    decision_seq: int
    kind: str
    state: str
    claimed_by: str | None
    opened_at: str
    due_at: str
    noticed_at: str

    @classmethod
    def of(cls, flow: str, breach: ReviewBreached) -> ReviewBreach:
        return cls(flow=flow, **body_of(breach))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_review_row(
    entry: Entry, body: Mapping[str, Any], settings: ReviewSettings, now: float
) -> dict[str, Any]:
    """The queue row a decision that waits for a person opens (its index, not its record);
    its deadline is the one the decision recorded (one recorded before decisions did gets
    it from the flow's review settings)."""
    queue = body.get("queue")
    if isinstance(queue, Mapping):
        due_at = queue.get("due_at")
    else:
        due_at = iso_time(now + settings.deadline_s) if settings.deadline_s else None
    return {
        "decision_id": entry.record_id,
        "flow": entry.flow,
        "decision_seq": entry.seq,
        "kind": "advisory" if body["status"] == "advisory" else "escalation",
        "state": "open",
        "opened_at": entry.recorded_at,
        "due_at": due_at,
        "requested_by": body.get("requested_by"),
        "proposed_action": body["action"],
        "proposed_value": body["value"],
        "claimed_by": None,
        "claimed_at": None,
        "resolved_at": None,
        "resolution": None,
        "final_action": None,
        "final_value": None,
        "reviewer": None,
        "review_id": None,
        "breached_at": None,
        "requested_person": body.get("requested_person"),
    }


def _decision_anchor(conn: Connection, decision_id: str) -> anchor.Anchor:
    """The decision's ledger entry, checked (its hash and its place in the chain)."""
    found = anchor.entry(conn, decision_id)
    if found is None or found.kind != "decision":
        raise anchor.refused("reviews", decision_id, "no decision entry stands behind it", {})
    return found


def _agrees_with_decision(conn: Connection, row: ReviewTask) -> None:
    """A waiting row against the decision entry that opened it: what a reviewer approves
    (the proposed action and value), whose it is (four eyes) and where it belongs must be
    what the ledger recorded, or the act is refused and nothing is written."""
    at = _decision_anchor(conn, row.decision_id)
    body = at.body
    if body.get("status") not in ("pending_review", "advisory"):
        raise anchor.refused(
            "reviews", row.decision_id,
            f"ledger entry {at.seq} records the decision {body.get('status')}, not waiting "
            "for review",
            {"seq": at.seq},
        )  # fmt: skip
    legacy = "requested_by" not in body  # joined the queue through migration 0003
    recorded: dict[str, Any] = {
        "flow": at.flow,
        "decision_seq": at.seq,
        "kind": "advisory" if body["status"] == "advisory" else "escalation",
        "proposed_action": body.get("action"),
        "proposed_value": None if legacy else body.get("value"),
        "requested_by": body.get("requested_by"),
        "requested_person": body.get("requested_person"),
    }
    queue = body.get("queue")
    if isinstance(queue, Mapping):  # decision version 3 records the deadline
        recorded["due_at"] = queue.get("due_at")
    anchor.agree("reviews", row.decision_id, row.row(), recorded, at)


def _row(conn: Connection, decision_id: str) -> ReviewTask | None:
    found = conn.execute(select(reviews).where(reviews.c.decision_id == decision_id)).first()
    return ReviewTask.of(found._mapping) if found else None


class Reviews:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # ---- reading ---------------------------------------------------------------------

    def _reviewer(self, decision_id: str, principal: Principal) -> Reviewer:
        """The caller as a reviewer of the decision's flow; 404 if they may not review it."""
        flow = decision_flow(self._ctx.db, decision_id)
        visible_to(principal, Permission.REVIEW, flow, "decision", decision_id)
        return principal.actor(Permission.REVIEW, flow)

    def queue(
        self,
        principal: Principal,
        flows: Sequence[str] | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[ReviewTask]:
        """The first ``limit`` reviews of :meth:`page`."""
        return self.page(principal, flows, state, limit).reviews

    def page(
        self,
        principal: Principal,
        flows: Sequence[str] | None = None,
        state: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> ReviewPage:
        """One page of the reviews of ``flows`` (default: every flow the caller reviews),
        oldest first, after the review of decision ``after`` (the previous page's ``next``);
        overdue ones are marked. ``total`` counts every review that matches, so a listing can
        say how many it left out. A flow named but unknown, or not reviewed by the caller, is
        refused by name."""
        if flows is None:
            flows = principal.flows_with(Permission.REVIEW, self._ctx.registry.flows)
        for flow in flows:
            self._ctx.registry.runtime_of(flow)  # an unknown flow is named
            principal.require(Permission.REVIEW, flow)
        if state is not None and state not in STATES:
            raise InputError(
                f"state must be one of {', '.join(STATES)}, got {state!r}", {"field": "state"}
            )
        if limit < 1:
            raise InputError(f"limit must be at least 1, got {limit}", {"field": "limit"})
        where: list[ColumnElement[bool]] = [reviews.c.flow.in_(list(flows))]
        if state is not None:
            where.append(reviews.c.state == state)
        order = (reviews.c.opened_at, reviews.c.decision_seq, reviews.c.decision_id)
        with self._ctx.db.read() as conn:
            total = int(conn.execute(select(func.count()).where(*where)).scalar_one())
            query = select(reviews).where(*where)
            if after is not None:
                mark = conn.execute(
                    select(*order).where(reviews.c.decision_id == after, *where)
                ).first()
                if mark is None:
                    raise InputError(
                        f"after: decision '{after}' has no review in this listing; pass the "
                        "'next' of the previous page",
                        {"field": "after"},
                    )
                query = query.where(tuple_(*order) > tuple(mark))
            query = query.order_by(*order).limit(limit + 1)
            tasks = [ReviewTask.of(r._mapping) for r in conn.execute(query)]
        more = len(tasks) > limit
        tasks = tasks[:limit]
        now = iso_time(self._ctx.clock())
        return ReviewPage(
            reviews=[
                replace(t, overdue=bool(t.due_at and t.state != "resolved" and t.due_at < now))
                for t in tasks
            ],
            total=total,
            next=tasks[-1].decision_id if more else None,
        )

    def get(self, decision_id: str, principal: Principal) -> ReviewTask:
        """One decision's review: its state, and the resolution once there is one."""
        self._reviewer(decision_id, principal)
        with self._ctx.db.read() as conn:
            row = _row(conn, decision_id)
        if row is None:
            raise NotFoundError(
                f"decision '{decision_id}' has no review", {"decision_id": decision_id}
            )
        return row

    # ---- acting ----------------------------------------------------------------------

    def sweep(self, limit: int = 1000) -> list[ReviewBreach]:
        """Record a ``review_breached`` event for each waiting review past its deadline.

        Each breach is recorded once (the queue row keeps when), so any number of servers
        may sweep; returns the events recorded by this call, at most ``limit``.
        """

        def work(conn: Connection, gate: WindowGate) -> list[ReviewBreach]:
            now = iso_time(gate.now)
            due = conn.execute(
                select(reviews)
                .where(
                    reviews.c.state != "resolved",
                    reviews.c.due_at < now,
                    reviews.c.breached_at.is_(None),
                )
                .order_by(reviews.c.due_at)
                .limit(limit)
            ).fetchall()
            events, found_late = [], []
            for found in due:
                row = found._mapping
                breach = ReviewBreached(
                    decision=row["decision_id"],
                    decision_seq=row["decision_seq"],
                    kind=row["kind"],
                    state=row["state"],
                    claimed_by=row["claimed_by"],
                    opened_at=row["opened_at"],
                    due_at=row["due_at"],
                    noticed_at=now,
                )
                events.append(pending(breach, row["flow"], gate.now))
                found_late.append(ReviewBreach.of(row["flow"], breach))
            if not events:
                return []
            append_in(conn, events, gate)
            conn.execute(
                update(reviews)
                .where(reviews.c.decision_id.in_([b.decision for b in found_late]))
                .values(breached_at=now)
            )
            return found_late

        breaches = self._ctx.writer.transact(work)
        for b in breaches:
            self._ctx.metrics.review_breaches.labels(b.flow, b.kind).inc()
            log.warning(
                "review deadline breached: flow=%s decision=%s due=%s",
                b.flow,
                b.decision,
                b.due_at,
            )
        return breaches

    def claim(self, decision_id: str, principal: Principal) -> ReviewTask:
        """Take an open review; claiming one's own claim again is harmless."""
        reviewer = self._reviewer(decision_id, principal)

        def work(conn: Connection, gate: WindowGate) -> ReviewTask:
            row = self._waiting(conn, decision_id, reviewer)
            if row.state == "claimed":
                if row.claimed_by == reviewer.id:
                    return row
                raise ConflictError(
                    f"review of '{decision_id}' is claimed by {row.claimed_by} "
                    f"since {row.claimed_at}",
                    {"decision_id": decision_id, "claimed_by": row.claimed_by},
                )
            at = iso_time(gate.now)
            conn.execute(
                update(reviews)
                .where(reviews.c.decision_id == decision_id)
                .values(state="claimed", claimed_by=reviewer.id, claimed_at=at)
            )
            return replace(row, state="claimed", claimed_by=reviewer.id, claimed_at=at)

        return self._transact(work, decision_id, "claim")

    def resolve(
        self,
        decision_id: str,
        principal: Principal,
        resolution: str,
        reason: str,
        action: str | None = None,
        value: float | None = None,
    ) -> ReviewResolution:
        """Resolve an open or claimed review; returns the review's ledger record."""
        reviewer = self._reviewer(decision_id, principal)
        reason = required_reason(reason, "a review")

        def work(conn: Connection, gate: WindowGate) -> ReviewResolution:
            row = self._waiting(conn, decision_id, reviewer)
            if row.state == "claimed" and row.claimed_by != reviewer.id:
                raise ConflictError(
                    f"review of '{decision_id}' is claimed by {row.claimed_by}; "
                    "only they can resolve it",
                    {"decision_id": decision_id, "claimed_by": row.claimed_by},
                )
            return self._record(conn, gate, row, reviewer, resolution, reason, action, value)

        return self._transact(work, decision_id, "review")

    def override(
        self,
        decision_id: str,
        principal: Principal,
        resolution: str,
        reason: str,
        action: str | None = None,
        value: float | None = None,
    ) -> ReviewResolution:
        """Override a final decision (reject or change), as a review of its own."""
        reviewer = self._reviewer(decision_id, principal)
        reason = required_reason(reason, "a review")
        if resolution == "approve":
            raise InputError(
                "a final decision stands already: override it with reject or change",
                {"field": "resolution"},
            )

        def work(conn: Connection, gate: WindowGate) -> ReviewResolution:
            if _row(conn, decision_id) is not None:
                raise ConflictError(
                    f"decision '{decision_id}' has a review already; resolve or read that",
                    {"decision_id": decision_id},
                )
            found = conn.execute(select(decisions).where(decisions.c.id == decision_id)).first()
            if found is None:
                raise NotFoundError(
                    f"no decision with id '{decision_id}'", {"decision_id": decision_id}
                )
            index = found._mapping
            recorded = _decision_anchor(conn, decision_id)  # the index is no evidence
            anchor.agree(
                "decisions", decision_id, dict(index),
                {"flow": recorded.flow, "seq": recorded.seq,
                 "status": recorded.body.get("status")},
                recorded,
            )  # fmt: skip
            if index["status"] != "final":
                raise ConflictError(
                    f"decision '{decision_id}' is {index['status']}, not final: "
                    "only final decisions are overridden",
                    {"decision_id": decision_id, "status": index["status"]},
                )
            entry = self._ctx.entry(decision_id)
            row = replace(
                ReviewTask.of(open_review_row(entry, entry.body, ReviewSettings(), 0.0)),
                kind="override",
                opened_at=iso_time(gate.now),
            )
            self._four_eyes(row, reviewer)
            conn.execute(reviews.insert().values(**row.row()))
            return self._record(
                conn, gate, row, reviewer, resolution, reason, action, value, entry.body
            )

        return self._transact(work, decision_id, "override")

    def _transact(
        self, work: Callable[[Connection, WindowGate], T], decision_id: str, act: str
    ) -> T:
        """Run ``work`` in a write transaction; a refusal for integrity is counted."""
        try:
            return self._ctx.writer.transact(work)
        except IntegrityError:
            flow = decision_flow(self._ctx.db, decision_id)
            self._ctx.metrics.integrity_refusals.labels(flow, act).inc()
            raise

    # ---- inside the transaction --------------------------------------------------------

    def _waiting(self, conn: Connection, decision_id: str, reviewer: Reviewer) -> ReviewTask:
        row = _row(conn, decision_id)
        if row is None:
            raise NotFoundError(
                f"decision '{decision_id}' has no review waiting (unknown, or decided without one)",
                {"decision_id": decision_id},
            )
        if row.state == "resolved":
            raise ConflictError(
                f"review of '{decision_id}' was resolved at {row.resolved_at} by "
                f"{row.reviewer} ({row.resolution})",
                {"decision_id": decision_id, "resolution": row.resolution},
            )
        _agrees_with_decision(conn, row)  # before four eyes reads its requester
        self._four_eyes(row, reviewer)
        return row

    def _four_eyes(self, row: ReviewTask, reviewer: Reviewer) -> None:
        """Where the flow asks for four eyes, the person who requested a decision neither
        reviews nor overrides it, through any key or token (a row older than persons names
        only the principal)."""
        settings = self._ctx.registry.runtime_of(row.flow).flow.review
        if not settings.four_eyes:
            return
        step = "override" if row.kind == "override" else "review"
        refuse_same_person(
            reviewer.person,
            reviewer.id,
            [row.requested_person or row.requested_by],
            f"the person who requested decision {row.decision_id} ({reviewer.person}) cannot "
            f"{step} it (flow '{row.flow}')",
            {"decision_id": row.decision_id, "flow": row.flow},
        )

    def _record(
        self,
        conn: Connection,
        gate: WindowGate,
        row: ReviewTask,
        reviewer: Reviewer,
        resolution: str,
        reason: str,
        action: str | None,
        value: float | None,
        decision_body: Mapping[str, Any] | None = None,
    ) -> ReviewResolution:
        # Inside the transaction: the flow as this process runs it, never a refresh.
        runtime = self._ctx.registry.runtime_of(row.flow)
        policy = runtime.policy.policy
        final_action, final_value = _outcome(
            policy, resolution, row.proposed_action, row.proposed_value, action, value
        )
        decision_id = row.decision_id
        limits = [w for w in policy.guardrails.windows if w.action == final_action]
        inputs: Mapping[str, Any] = {}
        if limits:  # segments may be cut by inputs: read them back only when needed
            if decision_body is None:
                decision_body = self._ctx.entry(decision_id).body
            inputs = self._ctx.inputs_of(decision_id, decision_body)
        consumed, exceeded = [], []
        for limit in limits:
            segment = segment_of(limit, inputs)
            ok, _used = gate.check(runtime.flow.name, limit, segment, final_value or 0.0)
            if not ok:
                exceeded.append(limit.name)
                self._ctx.metrics.guardrail_hits.labels(
                    runtime.flow.name, limit.name, "review"
                ).inc()
            gate.consume(runtime.flow.name, limit, segment, final_value or 0.0)
            consumed.append(limit.name)
        now = iso_time(gate.now)
        review = ReviewResolved(
            decision=decision_id,
            decision_seq=row.decision_seq,
            kind=row.kind,
            resolution=resolution,
            proposed={"action": row.proposed_action, "value": row.proposed_value},
            action=final_action,
            value=final_value,
            reason=reason,
            reviewer=reviewer.to_dict(),
            requested_by=row.requested_by,
            opened_at=row.opened_at,
            due_at=row.due_at,
            late=bool(row.due_at and row.due_at < now),
            windows={"consumed": consumed, "exceeded": exceeded},
            requested_person=row.requested_person,
        )
        review_id = new_id("rev", gate.now)
        append_in(conn, [pending(review, runtime.flow.name, gate.now, review_id)], gate)
        conn.execute(
            update(reviews)
            .where(reviews.c.decision_id == decision_id)
            .values(
                state="resolved",
                resolved_at=now,
                resolution=resolution,
                final_action=final_action,
                final_value=final_value,
                reviewer=reviewer.id,
                review_id=review_id,
            )
        )
        self._ctx.metrics.reviews.labels(runtime.flow.name, row.kind, resolution).inc()
        return ReviewResolution.of(review_id, review)


def _outcome(
    policy: Any,
    resolution: str,
    proposed_action: str,
    proposed_value: float | None,
    action: str | None,
    value: float | None,
) -> tuple[str, float | None]:
    """The action and value a resolution leaves in force, or ``InputError`` naming why not."""
    if resolution not in RESOLUTIONS:
        raise InputError(
            f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}",
            {"field": "resolution"},
        )
    if resolution != "change":
        if action is not None or value is not None:
            raise InputError(
                f"'{resolution}' takes no action or value; use 'change' to set them",
                {"field": "action" if action is not None else "value"},
            )
        if resolution == "approve":
            return proposed_action, proposed_value
        return policy.fallback.action, None
    if action is None:
        raise InputError("'change' needs the action to take", {"field": "action"})
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or abs(value) > MAX_VALUE
    ):
        raise InputError(
            f"value must be a finite number of at most {MAX_VALUE:.0e}, got {value!r}",
            {"field": "value"},
        )
    if action not in policy.actions:
        raise InputError(
            f"unknown action '{action}' (policy {policy.name}: {', '.join(policy.actions)})",
            {"field": "action"},
        )
    for bound in policy.guardrails.bounds:
        if bound.action != action:
            continue
        if value is None:
            raise InputError(f"'{action}' needs a value", {"field": "value"})
        low, high = bound.minimum, bound.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise InputError(
                f"value {value:g} for '{action}' is outside the policy's bounds "
                f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]",
                {"field": "value"},
            )
    if action == proposed_action and value == proposed_value:
        raise InputError(
            "'change' must change the action or its value; use 'approve' to keep them",
            {"field": "action"},
        )
    return action, value
