"""The model inventory: every model version a flow used, read from the ledger, with its card
and what outcomes say about it.

The ledger is the source, not the files present now: decisions record each signal's model
version, ``policy_activated`` records the versions pinned from then on, and
``model_card_recorded`` records the card beside a model file with its SHA-256. A version
appears once per flow and signal that used it.

Reading needs ``read_decisions`` on the flow (the figures come from outcomes); a version
used only on flows the caller may not read is answered like an unknown one (404).

The figures are computed over the whole history in one pass over the flow's decisions:
fine for an inventory asked for now and then, not for a dashboard.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from keel.context import Context
from keel.errors import DefinitionError, InputError, NotFoundError
from keel.events import ModelCardRecorded, pending
from keel.flows import FieldSpec, OutcomeSpec
from keel.ledger.reader import entries_from
from keel.ledger.writer import WindowGate, append_in
from keel.security.roles import Permission, Principal, flows_for
from keel.signals.cards import Card, load_card
from keel.store.schema import decisions, ledger, model_artifacts, outcomes, reviews
from keel.telemetry import log

MIN_PREFIX = 4  # characters of the hash a lookup needs


@dataclass(frozen=True)
class Usage:
    """One model version as one flow's signal used it."""

    flow: str
    signal: str
    version: str
    file: str | None  # the model file's name, where the store or a card recorded it
    first_used: str | None  # the first and last decision that used it
    last_used: str | None
    decisions: int
    active_from: str | None  # first pinned by an activation
    active_until: str | None  # last replaced by one (None: pinned now)
    pinned: list[tuple[str, str | None]]  # every period it was pinned, (from, until)
    current: bool  # the version the flow runs now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CardRecord:
    """A card as the ledger recorded it with a model version."""

    recorded_at: str
    record_id: str
    flow: str
    sha256: str
    fields: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fields": dict(self.fields)}


@dataclass(frozen=True)
class OutcomeFigures:
    """What the outcomes reported for one flow's decisions with this version say.

    ``accuracy`` counts decisions whose action is in force (final, or resolved by a
    reviewer) and whose outcome label names a right action. AUC and Brier need the card's
    ``positive_outcomes`` or, for the flow's outcome signal, its ``outcome.positive``; each
    figure that cannot be computed is None, and ``notes`` say why."""

    flow: str
    signal: str
    with_outcomes: int = 0
    judged: int = 0  # in force, and the outcome's label names a right action
    correct: int = 0
    accuracy: float | None = None
    scored: int = 0  # with a score and an outcome label (AUC and Brier)
    positives: int = 0
    auc: float | None = None
    brier: float | None = None
    since: str | None = None  # the window: first and last decision with an outcome
    until: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Feature:
    """An input the model reads, as the flow defines it now."""

    name: str
    type: str
    label: str
    categories: Mapping[str, str]  # allowed value → display label (categorical inputs)
    protected: bool  # a characteristic the law protects (the flow marks it)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "categories": dict(self.categories)}


@dataclass(frozen=True)
class ModelDetail:
    """Everything the inventory knows about one model version."""

    version: str
    file: str | None
    usages: list[Usage]
    card: CardRecord | None  # the newest recorded card
    card_history: list[CardRecord]  # every distinct card recorded, oldest first
    card_on_disk: str  # recorded | changed | none | not_on_disk
    features: list[Feature] | None  # None: unknown (not the version a flow runs now)
    figures: list[OutcomeFigures]

    @property
    def card_changed(self) -> bool:
        """Whether the card was changed after the version was first recorded with one."""
        return len(self.card_history) > 1 or self.card_on_disk == "changed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "file": self.file,
            "usages": [u.to_dict() for u in self.usages],
            "card": self.card.to_dict() if self.card else None,
            "card_history": [c.to_dict() for c in self.card_history],
            "card_on_disk": self.card_on_disk,
            "card_changed": self.card_changed,
            "features": [f.to_dict() for f in self.features] if self.features is not None else None,
            "figures": [f.to_dict() for f in self.figures],
        }


@dataclass
class _Seen:
    first: str | None = None
    last: str | None = None
    count: int = 0
    scores: dict[str, float] = field(default_factory=dict)  # decision id → score


class ModelInventory:
    """Model versions and their cards, from the ledger; cards recorded when Keel opens."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # ---- recording cards -----------------------------------------------------------------

    def record_cards(self) -> int:
        """Record the card beside each model file the project's flows name, with the file's
        version, unless the ledger holds that card for that version already. Returns how
        many were recorded. A card that does not parse was refused by ``keel validate``
        already; here it is logged and skipped, never recorded half."""
        found: list[tuple[str, str, str, str, Card]] = []
        for flow, runtime in self._ctx.registry.flows.items():
            for signal, version in self._ctx.registry.file_models(flow).items():
                spec = runtime.flow.signals[signal]
                path = (self._ctx.settings.project_dir / spec.model).resolve()
                try:
                    card = load_card(path)
                except DefinitionError as error:
                    log.warning("model card of %s not recorded: %s", path.name, error.message)
                    continue
                if card is not None:
                    found.append((flow, signal, version, path.name, card))
        if not found:
            return 0
        return self._ctx.writer.transact(lambda conn, gate: self._record_in(conn, gate, found))

    def _record_in(
        self, conn: Any, gate: WindowGate, found: list[tuple[str, str, str, str, Card]]
    ) -> int:
        known = set()
        rows = conn.execute(
            select(ledger.c.flow, ledger.c.record).where(ledger.c.kind == ModelCardRecorded.KIND)
        ).all()
        for flow, record in rows:
            body = _body(record)
            known.add((flow, body["signal"], body["model"], body["card"]))
        items = []
        for flow, signal, version, file, card in found:
            if (flow, signal, version, card.sha256) in known:
                continue
            event = ModelCardRecorded(
                signal=signal,
                model=version,
                file=file,
                card=card.sha256,
                fields=dict(card.fields),
            )
            items.append(pending(event, flow, gate.now))
        if items:
            append_in(conn, items, gate)
        return len(items)

    # ---- reading -------------------------------------------------------------------------

    def list_versions(self, principal: Principal, flow: str | None = None) -> list[Usage]:
        """Every model version each readable flow (or ``flow``) used, oldest first."""
        if flow is not None:
            self._ctx.registry.permitted(flow, principal, Permission.READ_DECISIONS)
        names = flows_for(principal, Permission.READ_DECISIONS, flow, self._ctx.registry.flows)
        files = self._files()
        found: list[Usage] = []
        for name in names:
            found.extend(self._usages(name, files)[0])
        return sorted(found, key=lambda u: (u.first_used or u.active_from or "", u.flow))

    def show(self, ref: str, principal: Principal) -> ModelDetail:
        """One model version (``ref``: the version, or the start of its hash) among those
        the caller may see: where and when it was used, its card, and its figures."""
        wanted = _wanted(ref)
        names = flows_for(principal, Permission.READ_DECISIONS, None, self._ctx.registry.flows)
        files = self._files()
        scans = {name: self._usages(name, files) for name in names}
        known = {u.version for found, _, _ in scans.values() for u in found}
        version = _match(ref, wanted, sorted(known))
        usages = [u for found, _, _ in scans.values() for u in found if u.version == version]
        cards = [r for _, _, recorded in scans.values() for v, r in recorded if v == version]
        figures = [
            self._figures(u.flow, u.signal, scans[u.flow][1].get((u.signal, version)), cards)
            for u in usages
        ]
        history = _distinct(sorted(cards, key=lambda c: c.recorded_at))
        newest = history[-1] if history else None
        return ModelDetail(
            version=version,
            file=next((u.file for u in usages if u.file), None),
            usages=usages,
            card=newest,
            card_history=history,
            card_on_disk=self._card_on_disk(usages, newest),
            features=self._features(usages),
            figures=figures,
        )

    # ---- what the ledger and the store say -----------------------------------------------

    def _files(self) -> dict[str, str]:
        with self._ctx.db.read() as conn:
            rows = conn.execute(select(model_artifacts.c.version, model_artifacts.c.filename))
            return {str(v): str(f) for v, f in rows}

    def _usages(
        self, flow: str, files: Mapping[str, str]
    ) -> tuple[list[Usage], dict[tuple[str, str], _Seen], list[tuple[str, CardRecord]]]:
        """The flow's model versions per signal, what its decisions say of each, and the
        cards recorded for them."""
        seen = self._seen(flow)
        periods = self._pinned(flow)
        cards = self._cards(flow)
        card_files = {version: file for version, _, file in cards}
        runtime = self._ctx.registry.current(flow)
        running = {s: m.version for s, m in runtime.models.items()}
        usages = []
        for key in sorted(set(seen) | set(periods), key=lambda k: _start(k, seen, periods)):
            signal, version = key
            s = seen.get(key, _Seen())
            pinned_periods = periods.get(key, [])
            start = pinned_periods[0][0] if pinned_periods else None
            end = pinned_periods[-1][1] if pinned_periods else None
            is_current = running.get(signal) == version
            usages.append(
                Usage(
                    flow=flow,
                    signal=signal,
                    version=version,
                    file=files.get(version) or card_files.get(version),
                    first_used=s.first,
                    last_used=s.last,
                    decisions=s.count,
                    active_from=start,
                    active_until=None if is_current else end,
                    pinned=pinned_periods,
                    current=is_current,
                )
            )
        return usages, seen, [(version, record) for version, record, _ in cards]

    def _seen(self, flow: str) -> dict[tuple[str, str], _Seen]:
        """What the flow's decisions say of each (signal, model version)."""
        seen: dict[tuple[str, str], _Seen] = defaultdict(_Seen)
        for entry in entries_from(self._ctx.db, flow=flow, kind="decision"):
            for signal, out in (entry.body.get("signals") or {}).items():
                version = out.get("version") if isinstance(out, dict) else None
                if not version:
                    continue
                s = seen[(signal, version)]
                s.first = s.first or entry.recorded_at
                s.last = entry.recorded_at
                s.count += 1
                if isinstance(out.get("score"), int | float):
                    s.scores[entry.record_id] = float(out["score"])
        return dict(seen)

    def _pinned(self, flow: str) -> dict[tuple[str, str], list[tuple[str, str | None]]]:
        """When activations pinned each (signal, model version): (from, until) periods."""
        periods: dict[tuple[str, str], list[tuple[str, str | None]]] = defaultdict(list)
        pinned: dict[str, str] = {}
        for entry in entries_from(self._ctx.db, flow=flow, kind="policy_activated"):
            models = entry.body.get("models") or {}
            for signal, version in pinned.items():
                if models.get(signal) != version:
                    began = periods[(signal, version)][-1][0]
                    periods[(signal, version)][-1] = (began, entry.recorded_at)
            for signal, version in models.items():
                if pinned.get(signal) != version:
                    periods[(signal, version)].append((entry.recorded_at, None))
            pinned = dict(models)
        return dict(periods)

    def _cards(self, flow: str) -> list[tuple[str, CardRecord, str]]:
        """The cards recorded on the flow: (model version, card, model file name)."""
        found = []
        for entry in entries_from(self._ctx.db, flow=flow, kind=ModelCardRecorded.KIND):
            body = entry.body
            record = CardRecord(
                entry.recorded_at, entry.record_id, flow, body["card"], body["fields"]
            )
            found.append((str(body["model"]), record, str(body["file"])))
        return found

    def _figures(
        self, flow: str, signal: str, seen: _Seen | None, cards: list[CardRecord]
    ) -> OutcomeFigures:
        """Outcome accuracy, AUC and Brier score of one flow's decisions with the version."""
        runtime = self._ctx.registry.runtime_of(flow)
        labels = runtime.flow.outcome.labels
        notes: list[str] = []
        if seen is None or not seen.scores:
            return OutcomeFigures(flow, signal, notes=["no decision recorded this version"])
        reported = self._outcomes(flow, seen.scores)
        with_outcomes = len(reported)
        judged = correct = 0
        for label, in_force, _ in reported.values():
            right = labels.get(label)
            if right is None or in_force is None:
                continue
            judged += 1
            correct += int(in_force == right)
        if with_outcomes and not judged:
            notes.append("no decision with an outcome had its action in force and a label "
                         "that names a right action")  # fmt: skip
        judge = _judge(_positive_outcomes(cards, flow), runtime.flow.outcome, signal)
        pairs = [
            (seen.scores[d], bad)
            for d, (label, _, _) in reported.items()
            if judge is not None and (bad := judge(label)) is not None
        ]
        times = sorted(t for _, _, t in reported.values())
        auc = brier = None
        positives = sum(1 for _, y in pairs if y)
        if judge is None:
            notes.append("AUC and Brier need the card's positive_outcomes, or the flow's "
                         "outcome.positive for its outcome signal")  # fmt: skip
        elif not pairs:
            notes.append("no outcome reported yet")
        elif positives in (0, len(pairs)):
            notes.append("AUC and Brier need outcomes of both kinds")
        else:
            spec = runtime.flow.signals.get(signal)
            probability = spec is not None and spec.output == "probability"
            auc, brier = score_figures([s for s, _ in pairs], [y for _, y in pairs], probability)
            if brier is None:
                notes.append("Brier needs a probability between 0 and 1")
        return OutcomeFigures(
            flow=flow,
            signal=signal,
            with_outcomes=with_outcomes,
            judged=judged,
            correct=correct,
            accuracy=correct / judged if judged else None,
            scored=len(pairs),
            positives=positives,
            auc=auc,
            brier=brier,
            since=times[0] if times else None,
            until=times[-1] if times else None,
            notes=notes,
        )

    def _outcomes(
        self, flow: str, wanted: Mapping[str, float]
    ) -> dict[str, tuple[str, str | None, str]]:
        """For each decision in ``wanted`` with an outcome: its label, the action in force
        (None while it waits for a person, or was never acted on) and when it was decided."""
        query = (
            select(
                outcomes.c.decision_id,
                outcomes.c.label,
                decisions.c.status,
                decisions.c.action,
                decisions.c.recorded_at,
                reviews.c.state,
                reviews.c.final_action,
            )
            .join(decisions, decisions.c.id == outcomes.c.decision_id)
            .outerjoin(reviews, reviews.c.decision_id == outcomes.c.decision_id)
            .where(outcomes.c.flow == flow)
        )
        found = {}
        with self._ctx.db.read() as conn:
            for ident, label, status, action, at, state, final in conn.execute(query):
                if ident not in wanted:
                    continue
                if state == "resolved" and final is not None:
                    in_force = final
                elif status == "final":
                    in_force = action
                else:
                    in_force = None
                found[str(ident)] = (str(label), in_force, str(at))
        return found

    def _card_on_disk(self, usages: Iterable[Usage], newest: CardRecord | None) -> str:
        """Whether the card beside the model file the flows name now is the one recorded."""
        for usage in usages:
            spec = self._ctx.registry.runtime_of(usage.flow).flow.signals.get(usage.signal)
            files = self._ctx.registry.file_models(usage.flow)
            if spec is None or files.get(usage.signal) != usage.version:
                continue
            path = (self._ctx.settings.project_dir / spec.model).resolve()
            try:
                card = load_card(path)
            except DefinitionError:
                return "changed"
            if card is None:
                return "none" if newest is None else "changed"
            return "recorded" if newest and newest.sha256 == card.sha256 else "changed"
        return "not_on_disk"

    def _features(self, usages: Iterable[Usage]) -> list[Feature] | None:
        """The inputs the model reads, from a flow that runs this version now."""
        for usage in usages:
            if not usage.current:
                continue
            runtime = self._ctx.registry.runtime_of(usage.flow)
            model = runtime.models.get(usage.signal)
            if model is None:
                continue
            return [_feature(name, runtime.flow.fields.get(name)) for name in model.features]
        return None


def _feature(name: str, spec: FieldSpec | None) -> Feature:
    if spec is None:  # a model input the flow does not declare: say so, guess nothing
        return Feature(name, "unknown", name, {}, protected=False)
    categories = {str(v): spec.value_label(v) for v in spec.allowed or ()}
    return Feature(name, spec.type, spec.display, categories, spec.protected)


def score_figures(
    scores: list[float], positive: list[bool], probability: bool
) -> tuple[float | None, float | None]:
    """AUC of the scores against the outcomes, and (for probabilities) the Brier score,
    with scikit-learn's functions. Kept small so that the performance figures can take
    its place."""
    from sklearn.metrics import brier_score_loss, roc_auc_score  # noqa: PLC0415 - on demand

    auc = float(roc_auc_score(positive, scores))
    brier = None
    if probability and all(0.0 <= s <= 1.0 for s in scores):
        brier = float(brier_score_loss(positive, scores))
    return auc, brier


def _wanted(ref: str) -> str:
    """The hash a reference names the start of (``InputError`` when too short to look up)."""
    wanted = ref.strip().lower().removeprefix("sha256:")
    if len(wanted) < MIN_PREFIX:
        raise InputError(
            f"give at least {MIN_PREFIX} characters of the model version's hash",
            {"version": ref},
        )
    return wanted


def _match(ref: str, wanted: str, versions: list[str]) -> str:
    """The one version among ``versions`` whose hash starts with ``wanted``: 404 for none,
    422 naming them all for several."""
    matches = [v for v in versions if v.removeprefix("sha256:").startswith(wanted)]
    if not matches:
        raise NotFoundError(f"no model version '{ref}'", {"version": ref})
    if len(matches) > 1:
        raise InputError(
            f"'{ref}' is the start of {len(matches)} model versions: "
            f"{', '.join(matches)}; give more of the hash",
            {"version": ref, "matches": matches},
        )
    return matches[0]


def _positive_outcomes(cards: list[CardRecord], flow: str) -> set[str]:
    """The positive outcome labels the newest card recorded on ``flow`` names."""
    mine = [c for c in cards if c.flow == flow] or cards
    if not mine:
        return set()
    newest = max(mine, key=lambda c: c.recorded_at)
    return set(newest.fields.get("positive_outcomes") or ())


def _judge(
    card_positive: set[str], outcome: OutcomeSpec, signal: str
) -> Callable[[str], bool | None] | None:
    """How an outcome label counts for AUC and Brier: bad (True), good (False) or not at
    all (None). The card's ``positive_outcomes`` win (every other label is good); without
    them, the flow's ``outcome.positive`` and ``negative`` judge the signal they name, as
    ``keel report trust`` does, so the two never disagree. None: nothing names the bad
    event."""
    if card_positive:
        return lambda label: label in card_positive
    if outcome.positive and outcome.signal == signal:
        return outcome.judged
    return None


def _distinct(cards: list[CardRecord]) -> list[CardRecord]:
    """Each card once (a version used by two flows is recorded on each), oldest first."""
    out: list[CardRecord] = []
    for card in cards:
        if not any(c.sha256 == card.sha256 for c in out):
            out.append(card)
    return out


def _start(
    key: tuple[str, str],
    seen: Mapping[tuple[str, str], _Seen],
    periods: Mapping[tuple[str, str], list[tuple[str, str | None]]],
) -> str:
    s = seen.get(key)
    pinned = periods.get(key)
    start = pinned[0][0] if pinned else None
    return min(x for x in (s.first if s else None, start, "~") if x is not None)


def _body(record: str) -> dict[str, Any]:
    import json  # noqa: PLC0415

    data = json.loads(record)
    body = data.get("body", data)
    return body if isinstance(body, dict) else {}
