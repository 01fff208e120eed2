"""Rebuilding the governed side tables from the ledger, for ``keel.ledger.deep``.

``Rebuild`` walks the chain once, in batches, and keeps what each side table must hold,
keyed by row id: the state each writer (``decide``, ``review``, ``rollout``, ``monitor``)
put there in the same transaction as its entry. Two tables are too large to keep: the
decisions index is merged with the entries by ``seq`` as they come, and the personal inputs
of each batch of decisions are opened batch by batch. Window consumptions are kept only
from the oldest ``guardrail_usage`` row on (older ones are pruned by the ledger writer).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select

from keel.errors import ErasedDataError, StoreError
from keel.ledger.records import Entry, decision_index_row, iso_time
from keel.protect import PROTECTED_MARK, Protector, Sealed
from keel.store.schema import (
    decisions,
    guardrail_usage,
    ledger,
    policy_versions,
    protected_values,
)

_BATCH = 5000
RETRAIN_COMMAND = "retrain.command"  # keel.flows.monitoring names the retrain command so
_WAITING = ("pending_review", "advisory")  # decision statuses that open a review
_STATIC_GUARDRAILS = ("kill_switch", "min_confidence.", "bounds.")  # never consume a window
REVIEW_CAPACITY = "review_capacity"  # the flow's review capacity: a rate window, segment '*'


@dataclass(frozen=True)
class Mismatch:
    """The first row that disagrees with the ledger: where, and stored against recorded."""

    table: str
    key: str
    column: str | None  # None: the whole row (missing, or with no entry behind it)
    stored: Any
    ledger: Any
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": self.key,
            "column": self.column,
            "stored": self.stored,
            "ledger": self.ledger,
            "problem": self.problem,
        }

    def describe(self) -> str:
        """One line for a person: table, row, column, and both values."""
        where = f"{self.table} row {self.key}" + (f" column {self.column}" if self.column else "")
        values = (
            f" (stored {self.stored!r}, ledger {self.ledger!r})" if self.column is not None else ""
        )
        return f"{where}: {self.problem}{values}"


class Found(Exception):
    """Unwinds the walk at the first mismatch."""

    def __init__(self, mismatch: Mismatch) -> None:
        super().__init__(mismatch.problem)
        self.mismatch = mismatch


def mismatch(
    table: str, key: Any, column: str | None, stored: Any, recorded: Any, problem: str
) -> Found:
    return Found(Mismatch(table, str(key), column, stored, recorded, problem))


# ---- reading in batches ------------------------------------------------------------------


def _entries(conn: Connection) -> Iterator[Entry]:
    last = 0
    while True:
        rows = conn.execute(
            select(ledger).where(ledger.c.seq > last).order_by(ledger.c.seq).limit(_BATCH)
        ).all()
        if not rows:
            return
        for row in rows:
            yield Entry(*row)
        last = rows[-1][0]


def rows(conn: Connection, table: Table, order: Any) -> Iterator[dict[str, Any]]:
    """Every row of ``table`` in batches, by its ordering column (unique, not null)."""
    last: Any = None
    while True:
        query = select(table).order_by(order).limit(_BATCH)
        if last is not None:
            query = query.where(order > last)
        batch = [dict(r._mapping) for r in conn.execute(query)]
        if not batch:
            return
        yield from batch
        last = batch[-1][order.name]


def parse_json(text: Any) -> Any:
    """A JSON column parsed (None stays None; unparsable text is compared as it is)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def compare(table: str, key: Any, stored: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """The first column of ``stored`` that differs from ``expected`` (numbers by value)."""
    for column, recorded in expected.items():
        value = stored[column]
        if value != recorded:
            raise mismatch(table, key, column, value, recorded, "differs from the ledger")


def _windows_consumed(guardrails: Mapping[str, Any]) -> list[str]:
    """The windows a decision consumed: the rate and exposure limits it checked when none
    was hit (a hit consumes nothing), and the review capacity when a review opened in it."""
    hits = {h["name"]: h["kind"] for h in guardrails["hits"]}
    names: list[str] = []
    if not any(kind in ("rate", "exposure") for kind in hits.values()):
        names = [
            n
            for n in guardrails["checked"]
            if not n.startswith(_STATIC_GUARDRAILS) and n != REVIEW_CAPACITY
        ]
    if REVIEW_CAPACITY in guardrails["checked"] and REVIEW_CAPACITY not in hits:
        names.append(REVIEW_CAPACITY)
    return names


def index_of(entry: Entry, body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``decisions`` row a decision entry must have (its ``seq`` is how rows and
    entries are paired, so it is not compared again)."""
    row = decision_index_row(entry, body)
    del row["seq"]
    return row


def compare_review(row: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    """A ``reviews`` row against what the ledger records (open and claimed are waiting)."""
    state = "waiting" if row["state"] in ("open", "claimed") else row["state"]
    compare("reviews", row["decision_id"], {**row, "state": state}, want)


def windows_of(conn: Connection, version: str | None, cache: dict[str, Any]) -> dict[str, Any]:
    """{name: (kind, per)} of a stored policy version's rate and exposure limits, cached
    per version in ``cache`` (deep verification checks the document against its version
    on its own)."""
    if version is None:
        return {}
    if version not in cache:
        document = conn.execute(
            select(policy_versions.c.document).where(policy_versions.c.version == version)
        ).scalar()
        parsed = parse_json(document) if document is not None else None
        guardrails = parsed.get("guardrails") if isinstance(parsed, dict) else None
        found: dict[str, Any] = {}
        for kind, key in (("rate", "rate_limits"), ("exposure", "exposure_limits")):
            for limit in (guardrails or {}).get(key) or []:
                if isinstance(limit, dict):
                    found[str(limit.get("name"))] = (kind, limit.get("per"))
        cache[version] = found
    return dict(cache[version])


# ---- the walk ------------------------------------------------------------------------------


@dataclass
class Consumption:
    """A window consumption the ledger implies, to be matched with a guardrail_usage row."""

    flow: str
    at: str
    names: list[str]
    value: float | None
    policy: str | None  # the policy version whose windows were consumed
    inputs: Mapping[str, Any] | None  # the inputs its windows cut segments by; None: read later
    decision: str


class Rebuild:
    """What the side tables must hold, rebuilt entry by entry (``run``).

    ``whole``: the walk sees the whole chain, and compares the decisions index and personal
    inputs as it goes and rebuilds window usage; a walk over part of the chain
    (``keel.ledger.evidence``) only rebuilds the other tables."""

    def __init__(self, conn: Connection, protector: Protector | None, whole: bool = True) -> None:
        self.conn = conn
        self.whole = whole
        self.protector = protector
        self.checked: dict[str, int] = {}  # rows compared so far, per table
        self.versions: dict[str, str] = {}  # policy version -> first entry naming it (at)
        self.models: dict[str, str] = {}  # model version -> first entry pinning it (at)
        self.active: dict[str, str] = {}  # flow -> active policy version, as the walk goes
        self.changes: dict[str, dict[str, Any]] = {}
        self.approvals: dict[str, dict[str, Any]] = {}
        self.activations: dict[str, dict[str, Any]] = {}
        # Where a flow's decisions switched version: (flow, version, at), as migration 0006
        # inferred the activations of decisions recorded before activations were.
        self.switches: set[tuple[str, str, str]] = set()
        self.named: dict[str, str] = {}  # flow -> version its last decision named
        self.levels: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.holds: dict[str, dict[str, Any]] = {}
        self.rollouts: dict[str, dict[str, Any]] = {}
        self.alarms: dict[str, dict[str, Any]] = {}
        self.reviews: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.sealed: dict[str, dict[str, Any]] = {}  # inputs with personal fields, this batch
        self.consumed: list[Consumption] = []
        self.windows: dict[str, Any] = {}  # policy version -> its windows (windows_of)
        # The outbox: what each alarm entry told (flow, alarm, at) -> kind -> payload part,
        # the retraining requests by the same key, and the deliveries sent back.
        self.notices: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self.retrains: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.retried: dict[str, dict[str, Any]] = {}
        self.indexed: dict[str, dict[str, Any]] = {}  # decisions rows, walking a part only
        self.horizon: str | None = None
        self.next_index: dict[str, Any] | None = None
        if whole:
            oldest = conn.execute(select(func.min(guardrail_usage.c.ts))).scalar()
            self.horizon = iso_time(float(oldest)) if oldest is not None else None
            self.index = rows(conn, decisions, decisions.c.seq)
            self.next_index = next(self.index, None)

    def count(self, table: str, n: int = 1) -> None:
        self.checked[table] = self.checked.get(table, 0) + n

    def run(self, entries: Iterable[Entry] | None = None) -> None:
        """Walk the chain (or ``entries``, in chain order); the decisions index and personal
        inputs are compared on the way (``Found`` at the first disagreement), the other
        tables are rebuilt for the caller."""
        handlers = {
            "decision": self.decision,
            "review": self.review,
            "review_breached": self.review_breached,
            "outcome": self.outcome,
            "policy_registered": self.policy_introduced,
            "policy_proposed": self.policy_proposed,
            "policy_edited": self.policy_edited,
            "policy_approved": self.policy_approved,
            "policy_activated": self.policy_activated,
            "autonomy_requested": self.autonomy_requested,
            "autonomy_changed": self.autonomy_changed,
            "flow_hold_changed": self.hold_changed,
            "rollout_started": self.rollout_started,
            "rollout_stopped": self.rollout_stopped,
            "alarm_raised": self.alarm_seen,
            "alarm_repeated": self.alarm_seen,
            "alarm_escalated": self.alarm_seen,
            "alarm_resolved": self.alarm_resolved,
            "retraining_requested": self.retraining_requested,
            "delivery_retried": self.delivery_retried,
        }
        walked = _entries(self.conn) if entries is None else entries
        for n, entry in enumerate(walked, start=1):
            handler = handlers.get(entry.kind)
            if handler is not None:
                handler(entry, entry.body)
            if n % _BATCH == 0:
                self.check_sealed()
        self.check_sealed()
        if self.next_index is not None:
            row = self.next_index
            raise mismatch(
                "decisions", row["id"], None, None, None, "row has no decision entry behind it"
            )

    # ---- decisions and their index, reviews and personal inputs ----------------------

    def decision(self, entry: Entry, body: dict[str, Any]) -> None:
        if self.whole:
            self.check_index(entry, body)
        else:  # a part of the chain: its decisions rows are compared by the caller
            self.indexed[entry.record_id] = index_of(entry, body)
        version = body["policy"]["version"]
        if self.named.get(str(entry.flow)) != version:
            self.named[str(entry.flow)] = version
            self.switches.add((str(entry.flow), version, entry.recorded_at))
        sealed = (isinstance(v, dict) and PROTECTED_MARK in v for v in body["inputs"].values())
        if self.whole and any(sealed):
            self.sealed[entry.record_id] = body["inputs"]
        if body["status"] in _WAITING:
            # A decision recorded before the review queue existed (its body has no
            # requested_by) joined it through migration 0003, which left the value empty.
            legacy = "requested_by" not in body
            self.reviews[entry.record_id] = {
                "flow": entry.flow,
                "decision_seq": entry.seq,
                "kind": "advisory" if body["status"] == "advisory" else "escalation",
                "state": "waiting",
                "opened_at": entry.recorded_at,
                "requested_by": body.get("requested_by"),
                "requested_person": body.get("requested_person"),
                "proposed_action": body["action"],
                "proposed_value": None if legacy else body["value"],
            }
            if "queue" in body:  # version 3 records the deadline; older ones do not
                self.reviews[entry.record_id]["due_at"] = body["queue"]["due_at"]
        if self.horizon is not None and entry.recorded_at >= self.horizon:
            names = _windows_consumed(body["guardrails"])
            if names:
                # Only the inputs a window cuts segments by are kept: memory stays small
                # however many decisions fall inside the usage horizon.
                windows = windows_of(self.conn, version, self.windows)
                per = {w[1] for w in windows.values() if w[1] is not None}
                inputs = body["inputs"] if isinstance(body["inputs"], dict) else {}
                kept = {k: v for k, v in inputs.items() if k in per}
                consumed = Consumption(
                    str(entry.flow), entry.recorded_at, names, body["value"], version,
                    kept, entry.record_id,
                )  # fmt: skip
                self.consumed.append(consumed)

    def settle_waiting(self) -> None:
        """Once walked: a review still waiting has nothing resolved on it."""
        for waiting in self.reviews.values():
            if waiting["state"] == "waiting":
                waiting.setdefault("breached_at", None)
                waiting.update(
                    resolved_at=None, resolution=None, final_action=None, final_value=None,
                    reviewer=None, review_id=None,
                )  # fmt: skip

    def check_index(self, entry: Entry, body: dict[str, Any]) -> None:
        """Merge the decisions table (by seq) with the decision entries as they come."""
        row = self.next_index
        if row is not None and row["seq"] < entry.seq:
            raise mismatch(
                "decisions", row["id"], "seq", row["seq"], None,
                f"row names entry {row['seq']}, which is not a decision",
            )  # fmt: skip
        if row is None or row["seq"] != entry.seq:
            raise mismatch(
                "decisions", entry.record_id, None, None, entry.seq,
                f"row of the decision recorded at entry {entry.seq} is missing",
            )  # fmt: skip
        compare("decisions", entry.record_id, row, index_of(entry, body))
        self.count("decisions")
        self.next_index = next(self.index, None)

    def check_sealed(self) -> None:
        """The personal inputs of the batch's decisions: present rows must open and match."""
        if not self.sealed:
            return
        ids = sorted(self.sealed)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found = self.conn.execute(
                select(protected_values).where(protected_values.c.record_id.in_(chunk))
            )
            for row in found:
                self.check_protected(self.sealed[row.record_id], dict(row._mapping))
        self.sealed.clear()

    def check_protected(self, inputs: dict[str, Any], row: dict[str, Any]) -> None:
        self.count("protected_values")
        if self.protector is None:
            return
        nonce, ciphertext = bytes(row["nonce"]), bytes(row["ciphertext"])
        sealed = Sealed(row["record_id"], row["key_id"], nonce, ciphertext)
        try:
            self.protector.join(sealed.record_id, inputs, sealed)
        except (StoreError, ErasedDataError) as error:
            column = "key_id" if sealed.key_id != self.protector.key_id else "ciphertext"
            raise mismatch(
                "protected_values", sealed.record_id, column, None, None, error.message
            ) from None

    def review(self, entry: Entry, body: dict[str, Any]) -> None:
        decision = body["decision"]
        expected = self.reviews.get(decision)
        if expected is None or body["kind"] == "override":
            expected = {"flow": entry.flow, "decision_seq": body["decision_seq"]}
        expected.update(
            kind=body["kind"],
            state="resolved",
            opened_at=body["opened_at"],
            due_at=body["due_at"],
            requested_by=body["requested_by"],
            requested_person=body.get("requested_person"),
            proposed_action=body["proposed"]["action"],
            proposed_value=body["proposed"]["value"],
            resolved_at=entry.recorded_at,
            resolution=body["resolution"],
            final_action=body["action"],
            final_value=body["value"],
            reviewer=body["reviewer"]["id"],
            review_id=entry.record_id,
        )
        expected.setdefault("breached_at", None)
        self.reviews[decision] = expected
        consumed = body["windows"]["consumed"]
        if consumed and self.horizon is not None and entry.recorded_at >= self.horizon:
            # A review consumes the windows of the policy in force when it was resolved.
            policy = self.active.get(str(entry.flow))
            window = Consumption(
                str(entry.flow), entry.recorded_at, list(consumed), body["value"], policy,
                None, decision,
            )  # fmt: skip
            self.consumed.append(window)

    def review_breached(self, entry: Entry, body: dict[str, Any]) -> None:
        expected = self.reviews.get(body["decision"])
        if expected is not None and expected.get("breached_at") is None:
            expected["breached_at"] = body["noticed_at"]
            expected["due_at"] = body["due_at"]

    def outcome(self, entry: Entry, body: dict[str, Any]) -> None:
        self.outcomes[body["decision"]] = {
            "flow": entry.flow,
            "decision_seq": body["decision_seq"],
            "label": body["label"],
            "value": body["value"],
            "observed_at": body["observed_at"],
            "reported_at": entry.recorded_at,
            "reported_by": body["reported_by"],
            "source": body["source"],
            "record_id": entry.record_id,
        }

    # ---- policies, changes and models ----------------------------------------------------

    def policy_introduced(self, entry: Entry, body: dict[str, Any]) -> None:
        self.versions.setdefault(body["version"], entry.recorded_at)

    def pinned(self, entry: Entry, *pins: Mapping[str, str] | None) -> None:
        for group in pins:
            for version in (group or {}).values():
                self.models.setdefault(version, entry.recorded_at)

    def policy_proposed(self, entry: Entry, body: dict[str, Any]) -> None:
        self.policy_introduced(entry, body)
        self.pinned(entry, body["models"], body["base_models"])
        author = body["author"]["id"]
        person = body["author"].get("person")  # None: recorded before persons
        self.changes[body["change"]] = {
            "flow": entry.flow,
            "state": "proposed",
            "version": body["version"],
            "base_version": body["base_version"],
            "author": author,
            "editors": [author],
            "author_person": person,
            "editor_persons": None if person is None else [person],
            "reason": body["reason"],
            "created_at": entry.recorded_at,
            "updated_at": entry.recorded_at,
            "models": body["models"],
        }

    def policy_edited(self, entry: Entry, body: dict[str, Any]) -> None:
        self.policy_introduced(entry, body)
        change = self.changes.get(body["change"])
        if change is None:
            return  # an edit of a change with no proposal: policy_changes reports the row
        editor, person = body["editor"]["id"], body["editor"].get("person")
        if person is not None:
            # A change proposed before persons starts its list from its editors' ids.
            persons = change["editor_persons"] or list(change["editors"])
            if person not in persons:
                persons.append(person)
            change["editor_persons"] = persons
        if editor not in change["editors"]:
            change["editors"].append(editor)
        change.update(
            version=body["version"],
            base_version=self.active.get(str(entry.flow), ""),
            state="proposed",
            updated_at=entry.recorded_at,
        )

    def policy_approved(self, entry: Entry, body: dict[str, Any]) -> None:
        self.approvals[entry.record_id] = {
            "change_id": body["change"],
            "version": body["version"],
            "approver": body["approver"]["id"],
            "approver_person": body["approver"].get("person"),
            "role": body["approver"]["role"],
            "reason": body["reason"],
            "approved_at": entry.recorded_at,
        }
        change = self.changes.get(body["change"])
        if change is not None and body["approvals"] >= body["needed"]:
            change.update(state="approved", updated_at=entry.recorded_at)

    def policy_activated(self, entry: Entry, body: dict[str, Any]) -> None:
        self.policy_introduced(entry, body)
        self.pinned(entry, body["models"], body["previous_models"])
        flow = str(entry.flow)
        self.active[flow] = body["version"]
        self.activations[entry.record_id] = {
            "flow": flow,
            "version": body["version"],
            "activated_at": entry.recorded_at,
            "activated_by": body["by"]["id"],
            "kind": body["kind"],
            "change_id": body["change"],
            "reason": body["reason"],
            "models": body["models"],
        }
        change = self.changes.get(body["change"]) if body["change"] else None
        if change is not None:
            change.update(state="active", updated_at=entry.recorded_at)

    # ---- autonomy, holds, rollouts, alarms ----------------------------------------------

    def autonomy_requested(self, entry: Entry, body: dict[str, Any]) -> None:
        self.requests[body["request"]] = {
            "flow": entry.flow,
            "level": body["to"],
            "state": "open",
            "requested_by": body["by"]["id"],
            "requested_person": body["by"].get("person"),
            "reason": body["reason"],
            "evidence": body["evidence"],
            "created_at": entry.recorded_at,
            "decided_at": None,
            "decided_by": None,
        }

    def autonomy_changed(self, entry: Entry, body: dict[str, Any]) -> None:
        self.levels[entry.record_id] = {
            "flow": entry.flow,
            "level": body["level"],
            "previous": body["previous"],
            "kind": body["kind"],
            "requested_by": body["requested_by"],
            "approved_by": body["approved_by"],
            "changed_at": body["changed_at"],
            "reason": body["reason"],
            "evidence": body["evidence"],
        }
        if body["kind"] != "raise":
            return
        # The raise names no request: it is the open one it approved (same flow, level and
        # requester, its reason quoted first).
        for request in self.requests.values():
            if (
                request["state"] == "open"
                and request["flow"] == entry.flow
                and request["level"] == body["level"]
                and request["requested_by"] == body["requested_by"]
                and body["reason"].startswith(request["reason"] + " (approved: ")
            ):
                request.update(
                    state="approved", decided_at=entry.recorded_at, decided_by=body["approved_by"]
                )
                break

    def hold_changed(self, entry: Entry, body: dict[str, Any]) -> None:
        self.holds[entry.record_id] = {
            "flow": entry.flow,
            "hold": body["hold"],
            "previous": body["previous"],
            "set_by": body["set_by"],
            "set_by_person": body.get("set_by_person"),
            "at": body["at"],
            "reason": body["reason"],
            "alarm_id": body["alarm_id"],
            "evidence": body["evidence"],
        }

    def rollout_started(self, entry: Entry, body: dict[str, Any]) -> None:
        # Its version was introduced before (registered or proposed); a rollout of a stored
        # version no entry introduced does not make it governed.
        self.rollouts[body["id"]] = {
            "flow": entry.flow,
            "mode": body["mode"],
            "version": body["version"],
            "change_id": body["change_id"],
            "share": body["share"],
            "bounds": body["bounds"],
            "state": "running",
            "started_at": entry.recorded_at,
            "started_by": body["by"]["id"],
            "reason": body["reason"],
            "ended_at": None,
            "ended_by": None,
            "end_reason": None,
        }

    def rollout_stopped(self, entry: Entry, body: dict[str, Any]) -> None:
        rollout = self.rollouts.get(body["rollout"])
        if rollout is not None:
            rollout.update(
                state=body["state"],
                ended_at=entry.recorded_at,
                ended_by=body["by"],
                end_reason=body["reason"],
            )

    def alarm_seen(self, entry: Entry, body: dict[str, Any]) -> None:
        alarm = self.alarms.get(body["alarm"])
        if alarm is None:
            if entry.kind != "alarm_raised":
                return  # a sighting of an alarm never raised: the alarms table reports it
            alarm = self.alarms[body["alarm"]] = {
                "flow": entry.flow,
                "monitor": body["monitor"],
                "state": "firing",
                "opened_at": entry.recorded_at,
                "actions": [],
                "resolved_at": None,
                "resolved_by": None,
                "resolve_reason": None,
                "record_id": entry.record_id,
            }
        alarm["severity"] = body["severity"]
        alarm["notified_at"] = entry.recorded_at
        alarm["actions"] = [*alarm["actions"], *body["actions"]]
        told = {
            "alarm.monitor": body["monitor"], "alarm.severity": body["severity"],
            "alarm.state": "firing", "alarm.summary": body["summary"],
            "alarm.opened_at": alarm["opened_at"], "alarm.evidence": body["evidence"],
            "actions": body["actions"],
        }  # fmt: skip
        self.told(entry, body["alarm"], told)

    def told(self, entry: Entry, alarm: str, payload: dict[str, Any]) -> None:
        """What a notice of this entry carries, as ``keel.monitor.runs`` builds it."""
        key = (str(entry.flow), alarm, entry.recorded_at)
        payload.update({"kind": entry.kind, "flow": entry.flow, "alarm.id": alarm})
        self.notices.setdefault(key, {})[entry.kind] = payload

    def alarm_resolved(self, entry: Entry, body: dict[str, Any]) -> None:
        alarm = self.alarms.get(body["alarm"])
        if alarm is not None:
            alarm.update(
                state="resolved",
                resolved_at=entry.recorded_at,
                resolved_by=body["by"],
                resolve_reason=body["reason"],
                runs=body["runs"],
            )
        # A resolution's notice carries the alarm as stored: its summary and evidence may
        # come from a suppressed repeat, which records no entry.
        told = {
            "alarm.monitor": body["monitor"], "alarm.state": "resolved",
            "alarm.opened_at": body["opened_at"], "actions": [],
        }  # fmt: skip
        if alarm is not None:
            told["alarm.severity"] = alarm["severity"]
        self.told(entry, body["alarm"], told)

    # ---- the outbox ------------------------------------------------------------------------

    def retraining_requested(self, entry: Entry, body: dict[str, Any]) -> None:
        webhook = body["webhook"]
        legacy = webhook is not None and "://" in str(webhook)  # version 1: a URL, no outbox
        targets = [] if webhook is None else [str(webhook)]
        targets += [RETRAIN_COMMAND] if body["command"] else []
        self.retrains[(str(entry.flow), body["alarm"], entry.recorded_at)] = {
            "targets": [] if legacy else targets, "monitor": body["monitor"],
            "named": webhook is not None and not legacy,
        }  # fmt: skip

    def delivery_retried(self, entry: Entry, body: dict[str, Any]) -> None:
        self.retried[body["delivery"]] = {
            "flow": entry.flow, "kind": body["kind"], "target": body["target"],
            "alarm_id": body["alarm"], "record_id": entry.record_id,
        }  # fmt: skip
