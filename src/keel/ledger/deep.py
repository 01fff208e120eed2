"""Deep verification: every governed side table checked against the ledger it indexes.

``verify_ledger`` proves the chain was not altered; the engine, the API and the reports
read the side tables (``keel.store.schema``), which anyone with database access could change
without touching the chain. ``verify_deep`` rebuilds from the entries what each table must
hold (``keel.ledger.rebuild``), compares the stored rows column by column and names the
first that disagrees: a row changed, a row missing, or a row no ledger entry stands behind.
Content-addressed tables are checked by hash: a policy document must hash to its version and
a model artifact to its ``sha256:`` version, and each version must have been introduced by a
ledger entry. Personal inputs must decrypt under the project's data key (the record id bound
as associated data) and match the salted digests the decision recorded; a missing row there
is an erasure, not a failure.

Columns no ledger entry records (queue state, monitor bookkeeping) are listed in
``UNCHECKED`` with the reason, and the report carries that list: nothing is skipped silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, exc, select

from keel.errors import StoreError
from keel.ledger.outbox_check import check_deliveries
from keel.ledger.rebuild import (
    REVIEW_CAPACITY,
    Consumption,
    Found,
    Mismatch,
    Rebuild,
    compare,
    compare_review,
    mismatch,
    parse_json,
    rows,
    windows_of,
)
from keel.ledger.records import iso_time
from keel.protect import PROTECTED_MARK, Protector
from keel.store.database import Database
from keel.store.schema import (
    alarms,
    autonomy_changes,
    autonomy_requests,
    flow_activations,
    flow_holds,
    guardrail_usage,
    ledger,
    model_artifacts,
    outcomes,
    policy_approvals,
    policy_changes,
    policy_versions,
    protected_values,
    reviews,
    rollouts,
)
from keel.text import article

# What deep verification does not compare, and why; every report carries this list.
UNCHECKED: dict[str, str] = {
    "reviews.claimed_by, reviews.claimed_at": (
        "who holds a waiting case is queue state, never recorded; the review entry names "
        "who resolved it"
    ),
    "reviews.due_at of a waiting case decided before decision version 3": (
        "such a decision did not record its deadline; it is recorded with the review or its "
        "breach, and checked from then on"
    ),
    "alarms.last_seen_at, runs, suppressed, clean_runs, summary, evidence": (
        "updated by monitor runs that record no entry (suppressed repeats, clean runs); "
        "runs is checked once resolved, state, severity, times and actions always"
    ),
    "model_artifacts.filename": (
        "pins name model versions only; the name is checked to be a plain file name"
    ),
    "guardrail_usage older than its oldest row": (
        "the ledger writer prunes usage older than twice the longest window, so rows missing "
        "from before the oldest row kept look the same as pruned ones"
    ),
    "guardrail_usage.segment cut by a personal input": (
        "the ledger holds only a salted digest of that input"
    ),
    "monitor_runs": "the monitors' working record; the alarms they opened are checked",
    "deliveries.state, attempts, next_attempt_at, lease_until, leased_by, last_error, "
    "delivered_at": (
        "the outbox's sending bookkeeping, never recorded; each row's cause (flow, kind, "
        "alarm, time, payload) is checked, and a delivery_retried entry must name its row"
    ),
    "deliveries.target of an alarm notice, payload.owner, payload.models": (
        "the webhook names, the owner and the pinned models come from the flow file and "
        "the registry when the notice is written; a retraining request's target is checked "
        "against its entry, and a missing alarm notice cannot be told from a webhook removed"
    ),
    "deliveries.payload alarm summary and evidence of a resolution": (
        "a resolution's notice carries the alarm as stored, possibly from a suppressed "
        "repeat that records no entry"
    ),
    "api_keys, key_groups, grants, audit_events": (
        "security state and the audit trail, not ledger indexes"
    ),
}


@dataclass
class DeepReport:
    """What deep verification compared, and the first disagreement if any."""

    ok: bool
    rows: dict[str, int] = field(default_factory=dict)  # rows compared, per table
    mismatch: Mismatch | None = None
    protected_checked: bool = True  # False: no data key given, ciphertexts not opened
    unchecked: dict[str, str] = field(default_factory=lambda: dict(UNCHECKED))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "mismatch": self.mismatch.to_dict() if self.mismatch else None,
            "protected_checked": self.protected_checked,
            "unchecked": self.unchecked,
        }


def verify_deep(db: Database, protector: Protector | None = None) -> DeepReport:
    """Compare every governed side table with the ledger; stop at the first disagreement.

    Run it on a chain that verifies (``verify_ledger``): the ledger is the reference here.
    Without ``protector`` personal inputs are checked for a ledger entry only, not opened.
    """
    report = DeepReport(ok=True, protected_checked=protector is not None)
    rebuilt: Rebuild | None = None
    try:
        with db.snapshot() as conn:  # the ledger and every table as of one moment
            rebuilt = Rebuild(conn, protector)
            rebuilt.run()
            for check in _CHECKS:
                check(conn, rebuilt)
    except Found as found:
        report.ok = False
        report.mismatch = found.mismatch
    except exc.SQLAlchemyError as error:
        cause = str(getattr(error, "orig", error)).splitlines()[0]
        raise StoreError(
            f"cannot read the store in {db.display_url}: {cause}", {"url": db.display_url}
        ) from error
    if rebuilt is not None:
        report.rows = dict(rebuilt.checked)
    return report


def _missing(table: str, expected: dict[Any, Any], seen: set[Any], what: str) -> None:
    for key in expected:
        if key not in seen:
            problem = f"row is missing: the ledger records {what}"
            raise mismatch(table, key, None, None, key, problem)


def _unbacked(table: str, key: Any, what: str) -> Found:
    return mismatch(table, key, None, key, None, f"row has no {what} entry behind it")


def _by_key(
    conn: Connection,
    rb: Rebuild,
    table: Table,
    order: str,
    key: str,
    expected: dict[str, dict[str, Any]],
    what: str,
    json_columns: tuple[str, ...] = (),
) -> None:
    """Rows of ``table`` against ``expected`` (by ``key``), then rows missing from it."""
    seen: set[str] = set()
    for row in rows(conn, table, table.c[order]):
        ident = row[key]
        want = expected.get(ident)
        if want is None:
            raise _unbacked(table.name, ident, what)
        seen.add(ident)
        stored = {**row, **{c: parse_json(row[c]) for c in json_columns}}
        compare(table.name, ident, stored, want)
        rb.count(table.name)
    _missing(table.name, expected, seen, f"{article(what)} entry for it")


# ---- content-addressed tables -----------------------------------------------------------


def _policy_versions(conn: Connection, rb: Rebuild) -> None:
    """Each document hashes to its version, which a ledger entry introduced, when stored."""
    seen: set[str] = set()
    for row in rows(conn, policy_versions, policy_versions.c.version):
        version, document = row["version"], row["document"]
        digest = hashlib.sha256(document.encode("utf-8")).hexdigest()
        if digest != version:
            raise mismatch(
                "policy_versions", version, "document", f"sha256 {digest}", f"sha256 {version}",
                "the stored policy text does not hash to its version: it was altered",
            )  # fmt: skip
        if version not in rb.versions:
            raise _unbacked("policy_versions", version, "policy_registered/proposed/edited")
        named = parse_json(document)
        name = named.get("policy") if isinstance(named, dict) else None
        compare("policy_versions", version, row, {"name": name, "created_at": rb.versions[version]})
        seen.add(version)
        rb.count("policy_versions")
    _missing("policy_versions", rb.versions, seen, "an entry that introduced this version")


def _model_artifacts(conn: Connection, rb: Rebuild) -> None:
    """Each file hashes to its version, its size is its length, a ledger entry pinned it."""
    seen: set[str] = set()
    for row in rows(conn, model_artifacts, model_artifacts.c.version):
        version, data = row["version"], bytes(row["data"])
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest != version:
            raise mismatch(
                "model_artifacts", version, "data", digest, version,
                "the stored model file does not hash to its version: it was altered",
            )  # fmt: skip
        if version not in rb.models:
            raise _unbacked("model_artifacts", version, "policy_proposed/activated pinning")
        name = str(row["filename"])
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise mismatch(
                "model_artifacts", version, "filename", name, None,
                "the file name must be a plain name, without folders",
            )  # fmt: skip
        compare(
            "model_artifacts", version, row, {"size": len(data), "created_at": rb.models[version]}
        )
        seen.add(version)
        rb.count("model_artifacts")
    _missing("model_artifacts", rb.models, seen, "a pin of this model version")


# ---- governance tables -------------------------------------------------------------------


def _policy_changes(conn: Connection, rb: Rebuild) -> None:
    _by_key(
        conn, rb, policy_changes, "id", "id", rb.changes, "policy_proposed",
        ("editors", "editor_persons", "models"),
    )  # fmt: skip


def _policy_approvals(conn: Connection, rb: Rebuild) -> None:
    _by_key(conn, rb, policy_approvals, "id", "record_id", rb.approvals, "policy_approved")


def _flow_activations(conn: Connection, rb: Rebuild) -> None:
    """Activations against their entries; a row inferred from old decisions (no entry, by
    migration 0006) must be where the flow's decisions switched to its version."""
    seen: set[str] = set()
    for row in rows(conn, flow_activations, flow_activations.c.id):
        ident = row["record_id"]
        if ident is None:
            switch = (row["flow"], row["version"], row["activated_at"])
            if row["kind"] != "inferred" or switch not in rb.switches:
                raise _unbacked("flow_activations", row["id"], "policy_activated or decision")
            rb.count("flow_activations")
            continue
        want = rb.activations.get(ident)
        if want is None:
            raise _unbacked("flow_activations", ident, "policy_activated")
        seen.add(ident)
        compare("flow_activations", ident, {**row, "models": parse_json(row["models"])}, want)
        rb.count("flow_activations")
    _missing("flow_activations", rb.activations, seen, "a policy_activated entry for it")


def _autonomy(conn: Connection, rb: Rebuild) -> None:
    _by_key(
        conn, rb, autonomy_changes, "id", "record_id", rb.levels, "autonomy_changed",
        ("evidence",),
    )  # fmt: skip
    _by_key(
        conn, rb, autonomy_requests, "id", "id", rb.requests, "autonomy_requested",
        ("evidence",),
    )  # fmt: skip


def _holds(conn: Connection, rb: Rebuild) -> None:
    _by_key(conn, rb, flow_holds, "id", "record_id", rb.holds, "flow_hold_changed", ("evidence",))


def _rollouts(conn: Connection, rb: Rebuild) -> None:
    _by_key(conn, rb, rollouts, "id", "id", rb.rollouts, "rollout_started", ("bounds",))


def _alarms(conn: Connection, rb: Rebuild) -> None:
    _by_key(conn, rb, alarms, "id", "id", rb.alarms, "alarm_raised", ("actions",))


# ---- what decisions led to ------------------------------------------------------------------


def _reviews(conn: Connection, rb: Rebuild) -> None:
    """Resolved rows against their ``review`` entries; a waiting row (open or claimed)
    against the decision that waits, with nothing resolved on it."""
    rb.settle_waiting()
    seen: set[str] = set()
    for row in rows(conn, reviews, reviews.c.decision_id):
        ident = row["decision_id"]
        want = rb.reviews.get(ident)
        if want is None:
            raise _unbacked("reviews", ident, "waiting decision or review")
        seen.add(ident)
        compare_review(row, want)
        rb.count("reviews")
    _missing("reviews", rb.reviews, seen, "a decision waiting for review or a review")


def _outcomes(conn: Connection, rb: Rebuild) -> None:
    _by_key(conn, rb, outcomes, "decision_id", "decision_id", rb.outcomes, "outcome")


# ---- window usage and personal inputs -------------------------------------------------------


def _decision_inputs(conn: Connection, decision_id: str) -> dict[str, Any]:
    record = conn.execute(select(ledger.c.record).where(ledger.c.record_id == decision_id)).scalar()
    parsed = parse_json(record) if record is not None else None
    body = parsed.get("body") if isinstance(parsed, dict) else None
    inputs = body.get("inputs") if isinstance(body, dict) else None
    return inputs if isinstance(inputs, dict) else {}


Usage = list[tuple[float | None, str | None]]  # (amount, segment); None: not rebuilt


def _expected_usage(
    conn: Connection, consumed: list[Consumption]
) -> dict[tuple[str, str, str], Usage]:
    """(flow, at, guardrail) -> the consumptions recorded then, as far as they are rebuilt.

    A review consumes the windows of the policy its process ran, which may be the version
    before an activation until that process refreshes: a window the version named here
    does not define is matched by name and time alone."""
    cache: dict[str, Any] = {}
    out: dict[tuple[str, str, str], Usage] = {}
    for c in consumed:
        windows = windows_of(conn, c.policy, cache)
        windows[REVIEW_CAPACITY] = ("rate", None)
        for name in c.names:
            if name not in windows:
                out.setdefault((c.flow, c.at, name), []).append((None, None))
                continue
            kind, per = windows[name]
            amount = 1.0 if kind == "rate" else float(c.value or 0.0)
            segment: str | None = "*"
            if per is not None:
                inputs = c.inputs if c.inputs is not None else _decision_inputs(conn, c.decision)
                value = inputs.get(per, "")
                protected = isinstance(value, dict) and PROTECTED_MARK in value
                segment = None if protected else str(value)
            out.setdefault((c.flow, c.at, name), []).append((amount, segment))
    return out


def _guardrail_usage(conn: Connection, rb: Rebuild) -> None:
    """Each usage row is a consumption a decision or review recorded, and every consumption
    from the oldest row kept on has its row (older ones may have been pruned)."""
    expected = _expected_usage(conn, rb.consumed)
    for row in rows(conn, guardrail_usage, guardrail_usage.c.id):
        at = iso_time(float(row["ts"]))
        key = (row["flow"], at, row["guardrail"])
        options = expected.get(key)
        if not options:
            raise mismatch(
                "guardrail_usage", row["id"], None, f"{row['guardrail']} at {at}", None,
                "row has no decision or review entry behind it that consumed this window",
            )  # fmt: skip
        amount, segment = float(row["amount"]), row["segment"]
        match = next(
            (o for o in options if o[0] in (amount, None) and o[1] in (segment, None)), None
        )
        if match is None:
            want_amount, want_segment = options[0]
            column, recorded, stored = (
                ("amount", want_amount, amount)
                if all(o[0] not in (amount, None) for o in options)
                else ("segment", want_segment, segment)
            )
            raise mismatch(
                "guardrail_usage", row["id"], column, stored, recorded, "differs from the ledger"
            )
        options.remove(match)
        rb.count("guardrail_usage")
    for (flow, at, name), left in expected.items():
        if left:
            raise mismatch(
                "guardrail_usage", f"{flow}/{name}@{at}", None, None, left[0][0],
                "row is missing: the ledger records this window consumption",
            )  # fmt: skip


def _protected_rows(conn: Connection, rb: Rebuild) -> None:
    """Every sealed row belongs to a recorded decision (those that do were opened and
    checked during the walk; a decision whose row is gone had its data erased)."""
    for batch in _chunks(rows(conn, protected_values, protected_values.c.record_id), 500):
        ids = [r["record_id"] for r in batch]
        known = {
            r[0]
            for r in conn.execute(
                select(ledger.c.record_id).where(
                    ledger.c.record_id.in_(ids), ledger.c.kind == "decision"
                )
            )
        }
        for ident in ids:
            if ident not in known:
                raise _unbacked("protected_values", ident, "decision")


def _chunks(items: Any, size: int) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# What the engine acts on first, then the governance history, then what decisions led to.
_CHECKS: tuple[Callable[[Connection, Rebuild], None], ...] = (
    _policy_versions,
    _model_artifacts,
    _policy_changes,
    _policy_approvals,
    _flow_activations,
    _autonomy,
    _holds,
    _rollouts,
    _alarms,
    check_deliveries,
    _reviews,
    _outcomes,
    _guardrail_usage,
    _protected_rows,
)
