"""Policy change management: propose, edit, approve, activate, roll back — all recorded.

A flow's policy changes only through versions (each immutable, named by its content hash):

1. **propose** — an author with ``propose_policy`` sends a policy document; it is checked
   against the flow like a file would be, stored, and a change is opened;
2. **edit** — a new revision of the proposal replaces its version and voids every approval
   the old one had (the approvers are named in the ledger event);
3. **approve** — a principal with ``approve_policy`` whose person wrote no revision of it
   (through any key or token) approves the current version, with a reason; one person's
   approvals count once;
4. **activate** — someone with ``activate_policy`` puts an approved change into force, if
   the flow's active version is still the one it was proposed against;
5. **roll back** — any version the flow used before can be put back into force at once,
   with a reason (it was approved when it first went live).

Every step is a ledger event written in one transaction with the tables that index it.
The activation history answers which version was active at any past instant; every
decision also names the version that made it.

The project's policy file seeds a flow's first version. Once a flow has an active version
in the store, that version decides, whatever the file says: in production mode, editing the
file changes nothing until the edit is proposed, approved and activated (the engine warns
at start). In development mode (``keel.rollout.mode``) the file is authoritative: whenever
the engine starts, a policy or model file that differs from the active version is activated
by whoever started it, a ``development`` activation that names the files and their hashes.
Other processes pick an activation up within a second.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from keel.canonical import canonical_json
from keel.config import DEVELOPMENT
from keel.context import Context
from keel.errors import (
    ConflictError,
    DefinitionError,
    InputError,
    IntegrityError,
    KeelError,
    NotFoundError,
    Problem,
)
from keel.events import (
    PolicyActivated,
    PolicyApproved,
    PolicyEdited,
    PolicyProposed,
    PolicyRegistered,
    RolloutStopped,
    pending,
)
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import WindowGate, append_in
from keel.policy.compiler import compile_policy
from keel.policy.model import Policy, parse_policy
from keel.reasons import required_reason
from keel.rollout.authorship import check_authorship
from keel.rollout.autonomy import change_level_in
from keel.rollout.diff import Difference, diff_models, diff_policies
from keel.rollout.mode import settle_mode_in
from keel.rollout.results import Activation, PolicyChange, Rollout, ended_state, ranked
from keel.runtime import FlowRuntime, active_row, current_level, pins_of, running_row
from keel.security.persons import person_of, refuse_same_person
from keel.security.roles import Actor, Permission, Principal, visible_to
from keel.signals.artifacts import pinnable, store_in
from keel.signals.loading import load_model, loaded
from keel.store.schema import (
    flow_activations,
    ledger,
    policy_approvals,
    policy_changes,
    policy_versions,
    rollouts,
)
from keel.telemetry import log
from keel.yamlfile import load_yaml_text

APPROVALS_NEEDED = 1
MAX_DOCUMENT = 256 * 1024
FIRST = "first version, from the project's policy file"
SYSTEM = {"id": "keel", "name": "Keel", "role": "system"}  # who seeds a flow's first state


def _change_row(conn: Connection, change_id: str) -> dict[str, Any]:
    found = conn.execute(select(policy_changes).where(policy_changes.c.id == change_id)).first()
    if found is None:
        raise NotFoundError(f"no policy change with id '{change_id}'", {"change_id": change_id})
    return dict(found._mapping)


def _history(conn: Connection, flow: str) -> list[Activation]:
    """The flow's activations, oldest first, each with its status (``ranked``)."""
    rows = conn.execute(
        select(flow_activations)
        .where(flow_activations.c.flow == flow)
        .order_by(flow_activations.c.id)
    )
    return ranked(Activation.from_row(dict(r._mapping)) for r in rows)


def _approvals(conn: Connection, change_id: str, version: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(policy_approvals)
        .where(policy_approvals.c.change_id == change_id, policy_approvals.c.version == version)
        .order_by(policy_approvals.c.id)
    )
    return [dict(r._mapping) for r in rows]


def end_running_in(
    conn: Connection,
    gate: WindowGate,
    flow: str,
    state: str,
    by: str,
    reason: str,
    by_person: str | None = None,
) -> Rollout | None:
    """Stop the flow's running rollout inside a transaction, with its ledger event
    (``by_person``: the person behind ``by``; None when Keel stops it)."""
    row = running_row(conn, flow)
    if row is None:
        return None
    at = iso_time(gate.now)
    conn.execute(
        update(rollouts)
        .where(rollouts.c.id == row["id"])
        .values(state=state, ended_at=at, ended_by=by, end_reason=reason)
    )
    stopped = RolloutStopped(
        rollout=row["id"], mode=row["mode"], version=row["version"], state=state, by=by,
        reason=reason, by_person=by_person,
    )  # fmt: skip
    append_in(conn, [pending(stopped, flow, gate.now)], gate)
    return Rollout.from_row(
        {**row, "state": state, "ended_at": at, "ended_by": by, "end_reason": reason}
    )


def _editor_persons(row: dict[str, Any]) -> list[str]:
    """The persons who wrote a revision of a change, the author first (a change older
    than persons names its principals instead)."""
    return list(json.loads(row["editor_persons"] or row["editors"]))


def may_replay(principal: Principal, flow: str) -> None:
    """Those who write, approve or put policies into force may register and replay them."""
    if not (
        principal.can(Permission.PROPOSE_POLICY, flow)
        or principal.can(Permission.APPROVE_POLICY, flow)
    ):
        principal.require(Permission.PROPOSE_POLICY, flow)  # raises, naming the permission


def _relative(path: Path, root: Path) -> str:
    """A project file as the ledger names it: relative to the project, where it is inside."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (what was on disk, not the canonical version)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refuse_open_duplicate(
    conn: Connection, flow: str, version: str, pins: Mapping[str, str]
) -> None:
    """Refuse a proposal that an open change already holds: a second change for the same
    version splits its approvals, and one of the two is left open for ever."""
    rows = conn.execute(
        select(policy_changes.c.id, policy_changes.c.state, policy_changes.c.models).where(
            policy_changes.c.flow == flow,
            policy_changes.c.version == version,
            policy_changes.c.state.in_(("proposed", "approved")),
        )
    )
    for row in rows:
        if (json.loads(row.models) if row.models else {}) == dict(pins):
            step = (
                f"keel policy activate {row.id}"
                if row.state == "approved"
                else f"keel policy approve {row.id} -r REASON (by someone other than its author)"
            )
            raise ConflictError(
                f"change {row.id} ({row.state}) already proposes policy version {version[:12]} "
                f"with these models on flow '{flow}': {step}",
                {"flow": flow, "version": version, "change": row.id},
            )


def _recorded(conn: Connection, flow: str, kind: str) -> bool:
    """Does the ledger hold an entry of ``kind`` for ``flow``?"""
    found = conn.execute(
        select(ledger.c.seq).where(ledger.c.kind == kind, ledger.c.flow == flow).limit(1)
    ).first()
    return found is not None


class Changes:
    """The change workflow of the flows' policies and models, and the reads about it.
    What each flow runs now is the registry's (``keel.runtime``)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # ---- a flow's first state --------------------------------------------------------

    def seed(self, operator: Principal) -> None:
        """Give every flow without a history its first version, models and autonomy level
        from its files (ledger events), then run what the store says. In development mode,
        files that differ from the active version are then activated, as ``operator``;
        in production mode, each difference is reported."""
        registry = self._ctx.registry
        mode = self._ctx.settings.mode
        seeded_mode = DEVELOPMENT if mode == DEVELOPMENT else None
        with self._ctx.db.read() as conn:
            first = [f for f in registry.flows if active_row(conn, f) is None
                     and not _recorded(conn, f, "policy_activated")]  # fmt: skip
        for flow in first:  # a first version pins the model files: each must load
            self._load_file_models(flow, changed_only=False)

        def seed(conn: Connection, gate: WindowGate) -> None:
            settle_mode_in(conn, gate, mode, operator)
            for flow, runtime in registry.flows.items():
                policy = runtime.policy.policy
                self._register_in(conn, gate, flow, policy, policy.source)
                # A flow with no row but with a history in the ledger was tampered with:
                # seeding would hide it. The registry holds such a flow instead.
                if active_row(conn, flow) is None and not _recorded(conn, flow, "policy_activated"):
                    pins = self._store_file_models(conn, flow, gate.now)
                    version = registry.file_version(flow)
                    self._activate_in(conn, gate, flow, version, None, "initial", None, FIRST, pins,
                                      seeded_mode)  # fmt: skip
                if current_level(conn, flow) is None and not _recorded(
                    conn, flow, "autonomy_changed"
                ):
                    level = registry.file_level(flow).value
                    change_level_in(conn, gate, flow, level, None, "initial", "keel", None,
                                    "first level, from the flow file", None)  # fmt: skip

        self._ctx.writer.transact(seed)
        registry.refresh(force=True)
        if mode == DEVELOPMENT:
            self._follow_files(operator)
        self._warn_file_drift()

    def _follow_files(self, operator: Principal) -> None:
        """Development mode: activate each flow's policy and model files where they differ
        from the active version. A flow held for integrity is left alone: a new activation
        on top of a row changed outside Keel would hide it."""
        registry = self._ctx.registry
        flows = [f for f in registry.flows if f not in registry.integrity()]
        actors = {}
        for flow in flows:
            if operator.can(Permission.ACTIVATE_POLICY, flow):
                actors[flow] = operator.actor(Permission.ACTIVATE_POLICY, flow)
            else:
                log.warning(
                    "development mode: %s (%s) may not activate policies on flow %s, so its "
                    "changed files wait for someone who may to run keel",
                    operator.name, operator.id, flow,
                )  # fmt: skip
        for flow in list(actors):
            try:
                self._load_file_models(flow, changed_only=True)
            except KeelError as error:
                log.warning(
                    "development mode: flow %s keeps its active version, because a model "
                    "file does not load: %s", flow, error.message,
                )  # fmt: skip
                del actors[flow]

        def follow(conn: Connection, gate: WindowGate) -> list[Activation]:
            done = [self._follow_file_in(conn, gate, flow, actor) for flow, actor in actors.items()]
            return [a for a in done if a is not None]

        for activation in self._ctx.writer.transact(follow):
            log.warning(
                "%s; flow %s now runs policy version %s",
                activation.reason, activation.flow, activation.version[:12],
            )  # fmt: skip
        registry.refresh(force=True)

    def _follow_file_in(
        self, conn: Connection, gate: WindowGate, flow: str, actor: Actor
    ) -> Activation | None:
        """Activate the flow's files if they differ from its active version (checked inside
        the transaction: another process may have just done it)."""
        registry = self._ctx.registry
        active = active_row(conn, flow)
        if active is None:
            return None
        root = self._ctx.settings.project_dir
        runtime = registry.runtime_of(flow)
        base_pins = pins_of(active) or {}
        version = registry.file_version(flow)
        files: list[dict[str, Any]] = []
        if active["version"] != version:
            path = registry.file_of(flow)
            files.append({"path": _relative(path, root), "sha256": _sha256(path)})
        moved = {s: v for s, v in registry.file_models(flow).items() if base_pins.get(s) != v}
        pins = dict(base_pins)
        for signal in moved:
            path = (root / runtime.flow.signals[signal].model).resolve()
            pins[signal] = store_in(conn, path, gate.now)
            files.append({"path": _relative(path, root), "sha256": _sha256(path)})
        if not files:
            return None
        changed = ", ".join(f["path"] for f in files)
        reason = f"development mode: {changed} changed"
        return self._activate_in(conn, gate, flow, version, actor, DEVELOPMENT, None, reason,
                                 pins or None, DEVELOPMENT, files)  # fmt: skip

    def _warn_file_drift(self) -> None:
        """Say where the files differ from what runs. In development mode only the
        autonomy level can: ``_follow_files`` activated the rest, or said why not."""
        registry = self._ctx.registry
        root = self._ctx.settings.project_dir
        production = self._ctx.settings.mode != DEVELOPMENT
        for flow, (active, version) in registry.file_drift().items() if production else ():
            log.warning(
                "flow %s runs policy version %s from the store; %s holds %s, which takes "
                "effect only once proposed, approved and activated (production mode): %s",
                flow, active[:12], _relative(registry.file_of(flow), root), version[:12],
                self.file_next_step(flow, version),
            )  # fmt: skip
        for flow, runtime in registry.flows.items():
            loaded = {s: m.version for s, m in runtime.models.items()}
            for signal, version in registry.file_models(flow).items():
                if production and loaded.get(signal) != version:
                    log.warning(
                        "flow %s runs model %s for %s from the store; its file holds %s, "
                        "which takes effect only once proposed, approved and activated",
                        flow, loaded.get(signal), signal, version,
                    )  # fmt: skip
            level = registry.file_level(flow)
            if runtime.flow.autonomy is not level:
                log.warning(
                    "flow %s runs at autonomy %s from the store; its file says %s, which "
                    "changes nothing (keel autonomy request %s %s)",
                    flow, runtime.flow.autonomy, level, flow, level,
                )  # fmt: skip

    def _load_file_models(self, flow: str, changed_only: bool) -> None:
        """Load the flow's model files (with ``changed_only``, those that differ from what it
        runs) before an activation pins them, outside its transaction: models otherwise load
        on first use, and a version that pins a file that does not load must not be
        recorded. Raises ``ModelError`` or ``IntegrityError`` naming the file."""
        registry = self._ctx.registry
        runtime = registry.runtime_of(flow)
        root = self._ctx.settings.project_dir
        for signal, version in registry.file_models(flow).items():
            model = runtime.models.get(signal)
            if model is None or model.version != version:
                load_model(runtime.flow.signals[signal], root)
            elif not changed_only:
                loaded(model)

    def _store_file_models(self, conn: Connection, flow: str, now: float) -> dict[str, str]:
        runtime = self._ctx.registry.runtime_of(flow)
        root = self._ctx.settings.project_dir
        return {
            signal: store_in(conn, (root / runtime.flow.signals[signal].model).resolve(), now)
            for signal in self._ctx.registry.file_models(flow)
        }

    # ---- what the files hold, and stored versions --------------------------------------

    def active_models(self, flow: str) -> dict[str, str]:
        """The model versions the flow's active version pins."""
        with self._ctx.db.read() as conn:
            return pins_of(active_row(conn, flow)) or {}

    def file_drift(self) -> dict[str, tuple[str, str]]:
        """Flows whose policy file differs from the active version: {flow: (active, file)}."""
        return self._ctx.registry.file_drift()

    def file_next_step(self, flow: str, version: str) -> str:
        """What puts the policy file's ``version`` into force: the open change that already
        holds it, or a proposal. Telling a user to propose what is already proposed made
        them open a second change for the same version."""
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(policy_changes.c.id, policy_changes.c.state)
                .where(
                    policy_changes.c.flow == flow,
                    policy_changes.c.version == version,
                    policy_changes.c.state.in_(("proposed", "approved")),
                )
                .order_by(policy_changes.c.created_at.desc())
                .limit(1)
            ).first()
        if row is None:
            return f"keel policy propose {flow} -r REASON"
        if row.state == "approved":
            return f"change {row.id} holds it, approved: keel policy activate {row.id}"
        return (
            f"change {row.id} holds it, waiting for approval by someone other than its "
            f"author: keel policy approve {row.id} -r REASON"
        )

    def file_of(self, flow: str) -> Path:
        """The project file the flow's policy was loaded from."""
        return self._ctx.registry.file_of(flow)

    def file_version(self, flow: str) -> str:
        return self._ctx.registry.file_version(flow)

    def model_path(self, version: str) -> Path:
        """A pinned model file on this machine's disk."""
        return self._ctx.registry.model_path(version)

    def resolve(self, flow: str, prefix: str, principal: Principal) -> str:
        """The stored version of the flow's policy that ``prefix`` names (at least 4 digits)."""
        name = self._readable(flow, principal).flow.policy
        with self._ctx.db.read() as conn:
            found = [
                v
                for (v,) in conn.execute(
                    select(policy_versions.c.version).where(policy_versions.c.name == name)
                )
                if len(prefix) >= 4 and v.startswith(prefix)
            ]
        if len(found) != 1:
            what = "matches several versions" if found else "is not a stored version"
            raise NotFoundError(
                f"'{prefix}' {what} of policy {name} (give at least 4 hex digits)",
                {"flow": flow, "version": prefix},
            )
        return str(found[0])

    # ---- reading ---------------------------------------------------------------------

    def _readable(self, flow: str, principal: Principal) -> FlowRuntime:
        return self._ctx.registry.permitted(flow, principal)

    def _flow_of(self, change_id: str, principal: Principal) -> str:
        """The flow of a change the caller may read (404 otherwise, as for an unknown id)."""
        with self._ctx.db.read() as conn:
            flow = str(_change_row(conn, change_id)["flow"])
        visible_to(principal, Permission.READ_FLOWS, flow, "policy change", change_id)
        return flow

    def get(self, change_id: str, principal: Principal) -> PolicyChange:
        """One change, with the approvals of its current version."""
        self._flow_of(change_id, principal)
        return self.stored(change_id)

    def stored(self, change_id: str) -> PolicyChange:
        """A change as stored, for a service that checked its own caller's permission."""
        with self._ctx.db.read() as conn:
            row = _change_row(conn, change_id)
            change = PolicyChange.from_row(row, _approvals(conn, change_id, row["version"]))
            return ended_state(change, _history(conn, change.flow))

    def changes(self, flow: str, principal: Principal, limit: int = 100) -> list[PolicyChange]:
        """A flow's changes, newest first (without their approvals: ``get`` has them)."""
        self._readable(flow, principal)
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(policy_changes)
                .where(policy_changes.c.flow == flow)
                .order_by(policy_changes.c.created_at.desc())
                .limit(limit)
            ).fetchall()
            history = _history(conn, flow)
        return [ended_state(PolicyChange.from_row(dict(r._mapping)), history) for r in rows]

    def history(self, flow: str, principal: Principal) -> list[Activation]:
        """Every activation of the flow, oldest first, each with its status (in force, rolled
        back, superseded)."""
        self._readable(flow, principal)
        with self._ctx.db.read() as conn:
            return _history(conn, flow)

    def active_at(self, flow: str, principal: Principal, instant: str | None = None) -> Activation:
        """The activation in force at ``instant`` (ISO 8601, as the ledger writes it; now if
        None): its version, since when, by whom and why."""
        self._readable(flow, principal)
        at = instant or iso_time(self._ctx.clock())
        with self._ctx.db.read() as conn:
            found = conn.execute(
                select(flow_activations)
                .where(flow_activations.c.flow == flow, flow_activations.c.activated_at <= at)
                .order_by(flow_activations.c.activated_at.desc(), flow_activations.c.id.desc())
                .limit(1)
            ).first()
        if found is None:
            raise NotFoundError(
                f"flow '{flow}' had no active policy version at {at}", {"flow": flow, "at": at}
            )
        return Activation.from_row(dict(found._mapping))

    def policy(self, flow: str, version: str) -> Policy:
        return self._ctx.registry.policy(flow, version)

    def diff(self, flow: str, before: str, after: str, principal: Principal) -> list[Difference]:
        """How ``after`` differs from ``before`` (two stored versions of the flow's policy)."""
        self._readable(flow, principal)
        return diff_policies(self.policy(flow, before), self.policy(flow, after))

    def change_diff(
        self, change_id: str, principal: Principal
    ) -> tuple[PolicyChange, list[Difference]]:
        """A change against the version it was proposed on: policy and model pins."""
        change = self.get(change_id, principal)
        flow = change.flow
        with self._ctx.db.read() as conn:
            base = conn.execute(
                select(flow_activations)
                .where(
                    flow_activations.c.flow == flow,
                    flow_activations.c.version == change.base_version,
                )
                .order_by(flow_activations.c.id.desc())
                .limit(1)
            ).first()
        base_pins = (pins_of(dict(base._mapping)) if base else None) or {}
        pins = change.models or base_pins
        policy = self.policy
        differences = diff_policies(policy(flow, change.base_version), policy(flow, change.version))
        differences += diff_models(base_pins, pins)
        return change, differences

    # ---- the steps ---------------------------------------------------------------------

    def _parse(self, flow: str, text: str, source: str) -> Policy:
        """A proposed document, checked against the flow exactly like a policy file."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("the proposed policy is empty", {"field": "document"})
        if len(text.encode("utf-8")) > MAX_DOCUMENT:
            raise InputError(
                f"a policy document is at most {MAX_DOCUMENT // 1024} KiB", {"field": "document"}
            )
        runtime = self._ctx.registry.current(flow)
        policy = parse_policy(load_yaml_text(text, source), Path(source))
        if policy.name != runtime.flow.policy:
            raise DefinitionError(
                [
                    Problem(
                        source,
                        "policy",
                        f"flow '{flow}' uses policy '{runtime.flow.policy}', not '{policy.name}'",
                    )
                ]
            )
        compile_policy(policy, runtime.flow)  # raises naming every problem
        return policy

    def _store_version(self, conn: Connection, policy: Policy, now: float) -> None:
        exists = conn.execute(
            select(policy_versions.c.version).where(policy_versions.c.version == policy.version)
        ).first()
        if not exists:
            conn.execute(
                policy_versions.insert().values(
                    version=policy.version,
                    name=policy.name,
                    document=canonical_json(policy.document),
                    created_at=iso_time(now),
                )
            )

    def register(
        self, flow: str, text: str, principal: Principal, source: str = "<candidate>"
    ) -> str:
        """Check and store a policy version without proposing it (to replay it, say);
        returns its version. Registering is a ledger event the first time. Those who write,
        approve or put policies into force may register one."""
        self._ctx.registry.current(flow)
        may_replay(principal, flow)
        policy = self._parse(flow, text, source)
        self._ctx.writer.transact(
            lambda conn, gate: self._register_in(conn, gate, flow, policy, source)
        )
        return policy.version

    def _register_in(
        self, conn: Connection, gate: WindowGate, flow: str, policy: Policy, source: str
    ) -> None:
        """Store a policy version with its ``policy_registered`` event, the first time."""
        exists = conn.execute(
            select(policy_versions.c.version).where(policy_versions.c.version == policy.version)
        ).first()
        if exists:
            return
        self._store_version(conn, policy, gate.now)
        registered = PolicyRegistered(
            policy=policy.name, version=policy.version, flow=flow, source=Path(source).name
        )
        append_in(conn, [pending(registered, flow, gate.now)], gate)

    def _model_files(self, flow: str, models: Mapping[str, Path] | None) -> dict[str, Path]:
        """Proposed model files, each checked: a pinnable signal of the flow, and loadable."""
        runtime = self._ctx.registry.current(flow)
        checked = {}
        for signal, path in (models or {}).items():
            spec = runtime.flow.signals.get(signal)
            if spec is None:
                known = ", ".join(runtime.flow.signals)
                raise InputError(
                    f"flow '{flow}' has no signal '{signal}' (signals: {known})",
                    {"signal": signal},
                )
            if not pinnable(spec):
                raise InputError(
                    f"signal '{signal}' is a Python function: it changes with the project's "
                    "code, not through a proposal",
                    {"signal": signal},
                )
            file = Path(path).resolve()
            load_model(replace(spec, model=str(file)), file.parent)  # raises naming the file
            checked[signal] = file
        return checked

    def propose(
        self,
        flow: str,
        text: str | None,
        principal: Principal,
        reason: str,
        source: str = "<proposal>",
        models: Mapping[str, Path] | None = None,
    ) -> PolicyChange:
        """Open a change proposing the policy in ``text`` (YAML; None: the active policy)
        and, optionally, new model files for some of the flow's signals."""
        self._ctx.registry.current(flow)
        author = principal.acting(Permission.PROPOSE_POLICY, flow)
        reason = required_reason(reason, "a proposal")
        files = self._model_files(flow, models)
        if text is None:
            if not files:
                raise InputError("propose a policy, a model, or both", {"field": "document"})
            policy = self._ctx.registry.current(flow).policy.policy
        else:
            policy = self._parse(flow, text, source)

        def work(conn: Connection, gate: WindowGate) -> str:
            active = active_row(conn, flow)
            base = active["version"] if active else ""
            base_pins = pins_of(active) or {}
            pins = {**base_pins, **{s: store_in(conn, f, gate.now) for s, f in files.items()}}
            if policy.version == base and pins == base_pins:
                raise ConflictError(
                    f"policy version {base[:12]} and its models are already active on flow "
                    f"'{flow}': nothing to propose",
                    {"flow": flow, "version": base},
                )
            _refuse_open_duplicate(conn, flow, policy.version, pins)
            self._store_version(conn, policy, gate.now)
            now = iso_time(gate.now)
            change_id = new_id("chg", gate.now)
            row = {
                "id": change_id,
                "flow": flow,
                "state": "proposed",
                "version": policy.version,
                "base_version": base,
                "author": author.id,
                "editors": json.dumps([author.id]),
                "author_person": author.person,
                "editor_persons": json.dumps([author.person]),
                "reason": reason,
                "created_at": now,
                "updated_at": now,
                "models": json.dumps(pins) if pins else None,
            }
            conn.execute(policy_changes.insert().values(**row))
            proposed = PolicyProposed(
                change=change_id,
                version=policy.version,
                base_version=base,
                models=pins or None,
                base_models=base_pins or None,
                author=author.to_dict(),
                reason=reason,
            )
            append_in(conn, [pending(proposed, flow, gate.now)], gate)
            return str(row["id"])

        return self.stored(self._ctx.writer.transact(work))

    def edit(self, change_id: str, text: str, principal: Principal, reason: str) -> PolicyChange:
        """Replace a proposed change's version; every approval it had is void."""
        flow = self._flow_of(change_id, principal)
        editor = principal.acting(Permission.PROPOSE_POLICY, flow)
        reason = required_reason(reason, "an edit")
        policy = self._parse(flow, text, f"<change {change_id}>")

        def work(conn: Connection, gate: WindowGate) -> str:
            row = self._open(conn, change_id, "edited")
            if policy.version == row["version"]:
                raise ConflictError(
                    "the edit leaves the proposed policy as it is: nothing changed",
                    {"change_id": change_id},
                )
            voided = _approvals(conn, change_id, row["version"])
            active = active_row(conn, flow)
            self._store_version(conn, policy, gate.now)
            editors = json.loads(row["editors"])
            if editor.id not in editors:
                editors.append(editor.id)
            persons = _editor_persons(row)
            if editor.person not in persons:
                persons.append(editor.person)
            conn.execute(
                update(policy_changes)
                .where(policy_changes.c.id == change_id)
                .values(
                    version=policy.version,
                    base_version=active["version"] if active else "",
                    state="proposed",
                    editors=json.dumps(editors),
                    editor_persons=json.dumps(persons),
                    updated_at=iso_time(gate.now),
                )
            )
            edited = PolicyEdited(
                change=change_id,
                from_version=row["version"],
                version=policy.version,
                editor=editor.to_dict(),
                reason=reason,
                voided_approvals=[a["approver"] for a in voided],
            )
            append_in(conn, [pending(edited, flow, gate.now)], gate)
            return change_id

        return self.stored(self._ctx.writer.transact(work))

    def approve(self, change_id: str, principal: Principal, reason: str) -> PolicyChange:
        """Approve a change's current version (never by anyone who wrote a revision of it)."""
        flow = self._flow_of(change_id, principal)
        approver = principal.acting(Permission.APPROVE_POLICY, flow)
        reason = required_reason(reason, "an approval")

        def work(conn: Connection, gate: WindowGate) -> str:
            row = self._open(conn, change_id, "approved")
            given = _approvals(conn, change_id, row["version"])
            check_authorship(conn, row, given)  # four eyes reads these rows: vouch first
            author = row["author_person"] or row["author"]
            who = "proposed" if approver.person == person_of(author) else "edited"
            refuse_same_person(
                approver.person,
                approver.id,
                _editor_persons(row),
                f"the person who {who} change {change_id} ({approver.person}) cannot approve "
                "it: approvals come from someone else",
                {"change_id": change_id, "approver": approver.id},
            )
            refuse_same_person(
                approver.person,
                approver.id,
                [a["approver_person"] or a["approver"] for a in given],
                f"{approver.person} has approved version {row['version'][:12]} of change "
                f"{change_id} already: one person's approval counts once",
                {"change_id": change_id, "approver": approver.id},
            )
            record_id = new_id("evt", gate.now)
            conn.execute(
                policy_approvals.insert().values(
                    change_id=change_id,
                    version=row["version"],
                    approver=approver.id,
                    approver_person=approver.person,
                    role=approver.role,
                    reason=reason,
                    approved_at=iso_time(gate.now),
                    record_id=record_id,
                )
            )
            if len(given) + 1 >= APPROVALS_NEEDED:
                conn.execute(
                    update(policy_changes)
                    .where(policy_changes.c.id == change_id)
                    .values(state="approved", updated_at=iso_time(gate.now))
                )
            approved = PolicyApproved(
                change=change_id,
                version=row["version"],
                approver=approver.to_dict(),
                reason=reason,
                approvals=len(given) + 1,
                needed=APPROVALS_NEEDED,
            )
            append_in(conn, [pending(approved, row["flow"], gate.now, record_id)], gate)
            return change_id

        try:
            done = self._ctx.writer.transact(work)
        except IntegrityError:
            self._ctx.metrics.integrity_refusals.labels(flow, "policy_approval").inc()
            raise
        return self.stored(done)

    def activate(self, change_id: str, principal: Principal, reason: str = "") -> Activation:
        """Put an approved change into force; returns the activation."""
        flow = self._flow_of(change_id, principal)
        actor = principal.acting(Permission.ACTIVATE_POLICY, flow)

        def work(conn: Connection, gate: WindowGate) -> Activation:
            row = self._open(conn, change_id, "activated")
            given = _approvals(conn, change_id, row["version"])
            if len(given) < APPROVALS_NEEDED:
                raise ConflictError(
                    f"change {change_id} is not approved: {len(given)} of {APPROVALS_NEEDED} "
                    f"approval{'s' if APPROVALS_NEEDED > 1 else ''} for its version "
                    f"{row['version'][:12]}",
                    {"change_id": change_id, "approvals": len(given)},
                )
            active = active_row(conn, row["flow"])
            current = active["version"] if active else ""
            if current != row["base_version"]:
                raise ConflictError(
                    f"flow '{row['flow']}' runs version {current[:12]}, not the "
                    f"{row['base_version'][:12]} this change was proposed against: edit the "
                    "change onto the active version and have it approved again",
                    {"change_id": change_id, "active": current},
                )
            conn.execute(
                update(policy_changes)
                .where(policy_changes.c.id == change_id)
                .values(state="active", updated_at=iso_time(gate.now))
            )
            why = reason.strip() if isinstance(reason, str) and reason.strip() else row["reason"]
            return self._activate_in(
                conn,
                gate,
                row["flow"],
                row["version"],
                actor,
                "activate",
                change_id,
                why,
                pins_of(row) or pins_of(active),
            )

        activation = self._ctx.writer.transact(work)
        self._ctx.registry.refresh(force=True)  # an activation also ends a running rollout
        return activation

    def rollback(self, flow: str, version: str, principal: Principal, reason: str) -> Activation:
        """Put back a version the flow used before; returns the activation."""
        self._ctx.registry.current(flow)
        actor = principal.acting(Permission.ACTIVATE_POLICY, flow)
        reason = required_reason(reason, "a rollback")

        def work(conn: Connection, gate: WindowGate) -> Activation:
            used = conn.execute(
                select(flow_activations.c.version).where(flow_activations.c.flow == flow)
            ).fetchall()
            matches = sorted({v for (v,) in used if v.startswith(version)})
            if not version or len(matches) != 1:
                what = "matches several versions" if matches else "was never active"
                raise NotFoundError(
                    f"version '{version}' {what} on flow '{flow}': a rollback goes to a "
                    "version the flow used before (see its history)",
                    {"flow": flow, "version": version},
                )
            target = matches[0]
            active = active_row(conn, flow)
            if active is not None and active["version"] == target:
                raise ConflictError(
                    f"version {target[:12]} is active on flow '{flow}' already",
                    {"flow": flow, "version": target},
                )
            last = conn.execute(
                select(flow_activations)
                .where(flow_activations.c.flow == flow, flow_activations.c.version == target)
                .order_by(flow_activations.c.id.desc())
                .limit(1)
            ).first()
            pins = pins_of(dict(last._mapping)) if last else None
            return self._activate_in(
                conn, gate, flow, target, actor, "rollback", None, reason, pins
            )

        activation = self._ctx.writer.transact(work)
        self._ctx.registry.refresh(force=True)  # an activation also ends a running rollout
        return activation

    # ---- inside the transaction --------------------------------------------------------

    def _open(self, conn: Connection, change_id: str, step: str) -> dict[str, Any]:
        row = _change_row(conn, change_id)
        if row["state"] == "active":
            raise ConflictError(
                f"change {change_id} is active since {row['updated_at']}: it cannot be {step}; "
                "propose a new change instead",
                {"change_id": change_id, "state": row["state"]},
            )
        return row

    def _activate_in(
        self,
        conn: Connection,
        gate: WindowGate,
        flow: str,
        version: str,
        actor: Actor | None,
        kind: str,
        change_id: str | None,
        reason: str,
        models: Mapping[str, str] | None = None,
        mode: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> Activation:
        """Record an activation (``mode``: "development" in a development-mode project,
        with the ``files`` a development-mode activation put into force)."""
        active = active_row(conn, flow)
        record_id = new_id("evt", gate.now)
        by = actor.id if actor else "keel"
        row = {
            "flow": flow,
            "version": version,
            "activated_at": iso_time(gate.now),
            "activated_by": by,
            "kind": kind,
            "change_id": change_id,
            "reason": reason,
            "record_id": record_id,
            "models": json.dumps(dict(models)) if models else None,
        }
        conn.execute(flow_activations.insert().values(**row))
        if kind != "initial":
            why = f"version {version[:12]} activated"
            end_running_in(conn, gate, flow, "ended", by, why, actor.person if actor else None)
        activated = PolicyActivated(
            version=version,
            previous=active["version"] if active else None,
            kind=kind,
            change=change_id,
            by=actor.to_dict() if actor else dict(SYSTEM),
            reason=reason,
            models=dict(models) if models else None,
            previous_models=pins_of(active),
            mode=mode,
            files=files,
        )
        append_in(conn, [pending(activated, flow, gate.now, record_id)], gate)
        return Activation.from_row(row)
