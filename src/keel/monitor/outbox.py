"""The delivery outbox: alarm notices and retraining requests, delivered at least once.

A notice is written to ``deliveries`` inside the write transaction that records its cause
(an alarm raised, repeated, escalated or resolved; a retraining request), so a crash
cannot lose it, and sent after the commit, never inside a transaction. The row names the
webhook by its name in the flow file; its URL and secret are looked up when it is sent.

Sending is three steps, any number of senders (server workers, nodes, a cron job) at once:

- **claim**: a conditional ``UPDATE`` takes a due, pending row whose lease is free and
  leases it until now + ``deliveries.lease_s`` (the injected clock). Only one sender wins
  a row; a sender that dies holding it loses it when the lease runs out.
- **send**: one try (``keel.monitor.deliver``), outside any transaction.
- **settle**: ``delivered``; or failed and due again after ``backoff_s`` × 2^(tries − 1),
  at most ``max_backoff_s``, stretched by up to a fifth by a jitter drawn from the
  delivery's id (the same on every run, so tests and replays are exact); or ``dead``
  after ``max_attempts`` tries, or at once when the receiver refuses the delivery itself
  (a 4xx). ``retry`` sends a dead one back, recorded in the ledger (``delivery_retried``).

At least once: a sender that dies after the POST and before it settles leaves the row
claimed; once the lease has run out another sender sends it again, with the same id
(``X-Keel-Delivery``), on which receivers deduplicate. Every try is counted
(``keel_deliveries_total{flow,kind,state}``) and logged by the webhook's name, never its
URL or secret.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, RowMapping, func, or_, select, update

from keel.context import Context
from keel.errors import ConflictError, InputError, NotFoundError
from keel.events import DeliveryRetried, pending
from keel.flows.monitoring import RETRAIN_COMMAND, MonitoringSpec, Webhook
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import WindowGate, append_in
from keel.monitor.deliver import ERROR_MAX, Attempt, post, run_command
from keel.reasons import required_reason
from keel.security.roles import Permission, Principal, flows_for, visible_to
from keel.store.schema import deliveries
from keel.telemetry import log

ALARM_NOTICE, RETRAINING_REQUEST = "alarm_notice", "retraining_request"
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATES = (PENDING, DELIVERED, DEAD)
DISPATCH_BATCH = 100  # rows one dispatch claims at most; the next takes the rest
JITTER = 0.2  # a delay is stretched by up to this share


@dataclass(frozen=True)
class Outgoing:
    """Something to deliver, before it has a row: to whom (the webhook's name, or
    ``retrain.command``) and what (JSON, no personal values)."""

    kind: str  # alarm_notice | retraining_request
    target: str
    alarm_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """One delivery in the outbox (a ``deliveries`` row, its payload parsed)."""

    id: str
    flow: str
    kind: str
    target: str
    alarm_id: str | None
    payload: dict[str, Any]
    state: str  # pending | delivered | dead
    attempts: int
    next_attempt_at: str
    last_error: str | None
    created_at: str
    delivered_at: str | None

    @classmethod
    def of(cls, row: Mapping[str, Any] | RowMapping) -> Delivery:
        return cls(
            row["id"], row["flow"], row["kind"], row["target"], row["alarm_id"],
            json.loads(row["payload"]), row["state"], row["attempts"], row["next_attempt_at"],
            row["last_error"], row["created_at"], row["delivered_at"],
        )  # fmt: skip

    def to_dict(self, payload: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "flow": self.flow,
            "kind": self.kind,
            "target": self.target,
            "alarm_id": self.alarm_id,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at if self.state == PENDING else None,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
        }
        if payload:
            out["payload"] = self.payload
        return out


@dataclass(frozen=True)
class Claim:
    """A delivery this sender holds until ``until``; ``token`` proves it when settling."""

    delivery: Delivery
    token: str
    until: str


def enqueue_in(conn: Connection, now: float, flow: str, outgoing: Sequence[Outgoing]) -> list[str]:
    """Write ``outgoing`` to the outbox inside the caller's transaction, due at once;
    returns the new deliveries' ids."""
    at = iso_time(now)
    rows: list[dict[str, Any]] = [
        {"id": new_id("dlv", now), "flow": flow, "kind": o.kind, "target": o.target,
         "alarm_id": o.alarm_id, "payload": json.dumps(o.payload, sort_keys=True, default=str),
         "state": PENDING, "attempts": 0, "next_attempt_at": at, "created_at": at}
        for o in outgoing
    ]  # fmt: skip
    if rows:
        conn.execute(deliveries.insert(), rows)
    return [r["id"] for r in rows]


class Deliveries:
    """The outbox: send what is due, list deliveries, send a dead one again."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # ---- sending (scheduled work: no principal) ------------------------------------------

    def dispatch_due(self, limit: int = DISPATCH_BATCH) -> list[Delivery]:
        """Claim, send and settle every due delivery (at most ``limit``); returns them as
        settled. What a server does every ``deliveries.check_s``."""
        sent = [self.settle(c, self.send(c)) for c in self.claim(limit)]
        self._count_waiting()
        return sent

    def send_now(self, ids: Sequence[str]) -> list[Delivery]:
        """First tries of deliveries just enqueued (those still due and unclaimed)."""
        return [self.settle(c, self.send(c)) for c in self.claim(len(ids), ids)]

    def claim(self, limit: int = DISPATCH_BATCH, ids: Sequence[str] | None = None) -> list[Claim]:
        """Lease due, pending deliveries (of ``ids`` if given) to this sender; a row
        another sender holds, or took first, is left alone."""
        if limit <= 0:
            return []
        ctx = self._ctx
        now = ctx.clock()
        at, until = iso_time(now), iso_time(now + ctx.settings.deliveries.lease_s)
        free = (
            deliveries.c.state == PENDING,
            deliveries.c.next_attempt_at <= at,
            or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until <= at),
        )
        query = select(deliveries.c.id).where(*free)
        if ids is not None:
            query = query.where(deliveries.c.id.in_(list(ids)))
        with ctx.db.read() as conn:
            due = list(conn.scalars(query.order_by(deliveries.c.next_attempt_at).limit(limit)))
        if not due:
            return []
        token = new_id("lease", now)
        with ctx.db.write(chain=False) as conn:
            won = [
                d for d in due
                if conn.execute(update(deliveries).where(deliveries.c.id == d, *free)
                                .values(lease_until=until, leased_by=token)).rowcount == 1
            ]  # fmt: skip
            rows = conn.execute(select(deliveries).where(deliveries.c.id.in_(won))).fetchall()
        return [Claim(Delivery.of(r._mapping), token, until) for r in rows]

    def send(self, claim: Claim) -> Attempt:
        """One try at a claimed delivery; never raises (a fault is a failed try)."""
        try:
            return self._send(claim.delivery)
        except Exception as failed:  # noqa: BLE001 - one delivery's fault must not stop the rest
            log.exception("delivery %s to %s failed unexpectedly", claim.delivery.id,
                          claim.delivery.target)  # fmt: skip
            return Attempt(False, type(failed).__name__)

    def settle(self, claim: Claim, attempt: Attempt) -> Delivery:
        """Record how the try went: delivered, due again after the backoff, or dead."""
        ctx = self._ctx
        now = ctx.clock()
        found = claim.delivery
        tries = found.attempts + 1
        limit = ctx.settings.deliveries.max_attempts
        where = [deliveries.c.id == found.id, deliveries.c.state == PENDING]
        done: dict[str, Any] = {"attempts": tries, "lease_until": None, "leased_by": None}
        if attempt.ok:
            outcome = DELIVERED
            done.update(state=DELIVERED, delivered_at=iso_time(now), last_error=None)
        else:
            # Only the claim's holder reschedules: a sender whose lease ran out lost the row.
            where.append(deliveries.c.leased_by == claim.token)
            outcome = DEAD if attempt.final or tries >= limit else "failed"
            error = (attempt.error or "failed")[:ERROR_MAX]
            done.update(state=DEAD if outcome == DEAD else PENDING, last_error=error)
            if outcome != DEAD:
                done["next_attempt_at"] = iso_time(now + self.backoff_s(found.id, tries))
        with ctx.db.write(chain=False) as conn:
            changed = conn.execute(update(deliveries).where(*where).values(**done)).rowcount
            row = conn.execute(select(deliveries).where(deliveries.c.id == found.id)).first()
        ctx.metrics.deliveries.labels(found.flow, found.kind, outcome).inc()
        settled = Delivery.of(row._mapping) if row is not None else replace(found, **done)
        what = f"delivery {found.id} ({found.kind} of flow {found.flow}) to {found.target}"
        if not changed:
            log.warning("%s: its claim ran out before this try (%s) was recorded; another "
                        "sender holds it (raise deliveries.lease_s if sends take that long)",
                        what, outcome)  # fmt: skip
        elif outcome == DELIVERED:
            log.info("%s delivered (try %d)", what, tries)
        elif outcome == DEAD:
            log.error("%s dead after %d tries: %s; send it again with 'keel deliveries retry "
                      "%s' once the receiver is fixed", what, tries, settled.last_error,
                      found.id)  # fmt: skip
        else:
            log.warning("%s failed (try %d of %d): %s; next try at %s", what, tries, limit,
                        settled.last_error, settled.next_attempt_at)  # fmt: skip
        return settled

    def backoff_s(self, delivery_id: str, tries: int) -> float:
        """Seconds to wait after failed try number ``tries``: doubling from ``backoff_s``,
        stretched by a jitter drawn from the id (spreads retries, same on every run),
        at most ``max_backoff_s``."""
        settings = self._ctx.settings.deliveries
        digest = hashlib.sha256(f"{delivery_id}:{tries}".encode()).digest()
        draw = int.from_bytes(digest[:4], "big") / 2**32
        doubled = settings.backoff_s * 2 ** min(tries - 1, 32) * (1 + JITTER * draw)
        return float(min(settings.max_backoff_s, doubled))

    def _send(self, found: Delivery) -> Attempt:
        ctx = self._ctx
        runtime = ctx.registry.flows.get(found.flow)
        if runtime is None:
            return Attempt(False, f"flow {found.flow} is no longer in the project")
        spec = runtime.flow.monitoring
        body = {**found.payload, "delivery": found.id, "sent_at": iso_time(ctx.clock())}
        raw = json.dumps(body, sort_keys=True, default=str).encode()
        environ = ctx.settings.environ
        if found.kind == RETRAINING_REQUEST and found.target == RETRAIN_COMMAND:
            if spec.retrain is None or not spec.retrain.command:
                return Attempt(False, "the flow file has no retrain command now")
            names = {"KEEL_FLOW": found.flow, "KEEL_ALARM": found.alarm_id or "",
                     "KEEL_DELIVERY": found.id}  # fmt: skip
            return run_command(spec.retrain.command, raw, names, ctx.settings.project_dir,
                               environ)  # fmt: skip
        hook = _hook(spec, found.kind, found.target)
        if hook is None:
            return Attempt(False, f"the flow file has no webhook named {found.target} now")
        return post(hook, raw, found.id, environ)

    def _count_waiting(self) -> None:
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(deliveries.c.state, func.count())
                .where(deliveries.c.state.in_([PENDING, DEAD]))
                .group_by(deliveries.c.state)
            )
            counts: dict[str, int] = {state: n for state, n in rows}
        for state in (PENDING, DEAD):
            self._ctx.metrics.deliveries_waiting.labels(state).set(counts.get(state, 0))

    # ---- reading and retrying ----------------------------------------------------------

    def find(
        self,
        principal: Principal,
        state: str | None = None,
        flow: str | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """Deliveries, newest first: of ``flow``, or of every flow the caller reads
        (``read_flows``: a delivery is the flow's alarm notice); in one state."""
        if state is not None and state not in STATES:
            raise InputError(
                f"unknown delivery state '{state}' (one of {', '.join(STATES)})",
                {"state": state},
            )
        flows = flows_for(principal, Permission.READ_FLOWS, flow, self._ctx.registry.flows)
        query = (
            select(deliveries)
            .where(deliveries.c.flow.in_(flows))
            .order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc())
            .limit(limit)
        )
        if state is not None:
            query = query.where(deliveries.c.state == state)
        with self._ctx.db.read() as conn:
            return [Delivery.of(r._mapping) for r in conn.execute(query)]

    def show(self, delivery_id: str, principal: Principal) -> Delivery:
        """One delivery with its payload (one on a flow the caller may not read does not
        exist for it)."""
        with self._ctx.db.read() as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        if row is None:
            raise NotFoundError(f"no delivery with id '{delivery_id}'", {"id": delivery_id})
        found = Delivery.of(row._mapping)
        visible_to(principal, Permission.READ_FLOWS, found.flow, "delivery", delivery_id)
        return found

    def retry(self, delivery_id: str, principal: Principal, reason: str) -> Delivery:
        """Send a dead delivery again, with a reason (``change_autonomy`` on its flow, as
        resolving an alarm): recorded as ``delivery_retried``, its tries counted afresh,
        and tried once at once. Returns it as that try left it."""
        flow = self.show(delivery_id, principal).flow
        actor = principal.acting(Permission.CHANGE_AUTONOMY, flow)
        why = required_reason(reason, "sending a delivery again")

        def work(conn: Connection, gate: WindowGate) -> None:
            row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
            if row is None:  # pragma: no cover - deliveries are never deleted
                raise NotFoundError(f"no delivery with id '{delivery_id}'", {"id": delivery_id})
            found = Delivery.of(row._mapping)
            if found.state != DEAD:
                raise ConflictError(
                    f"delivery {delivery_id} is {found.state}, not dead: "
                    + ("it was delivered at " + str(found.delivered_at)
                       if found.state == DELIVERED
                       else f"its next try is due at {found.next_attempt_at}"),
                    {"id": delivery_id, "state": found.state},
                )  # fmt: skip
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id, deliveries.c.state == DEAD)
                .values(state=PENDING, attempts=0, next_attempt_at=iso_time(gate.now),
                        lease_until=None, leased_by=None)
            )  # fmt: skip
            retried = DeliveryRetried(
                delivery=found.id, kind=found.kind, target=found.target, alarm=found.alarm_id,
                attempts=found.attempts, last_error=found.last_error, by=actor.id, reason=why,
                by_person=actor.person,
            )  # fmt: skip
            append_in(conn, [pending(retried, found.flow, gate.now)], gate)

        self._ctx.writer.transact(work)
        log.info("delivery %s sent back to the outbox by %s", delivery_id, actor.id)
        self.send_now([delivery_id])
        return self.show(delivery_id, principal)


def _hook(spec: MonitoringSpec, kind: str, target: str) -> Webhook | None:
    """The webhook ``target`` names in the flow's monitoring section now."""
    if kind == RETRAINING_REQUEST:
        hook = spec.retrain.webhook if spec.retrain is not None else None
        return hook if hook is not None and hook.name == target else None
    return next((h for h in spec.notify if h.name == target), None)
