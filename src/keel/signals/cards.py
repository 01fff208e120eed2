"""Model cards: what the team that built a model says about it, in a file beside the model.

A card is a sidecar YAML file named after the model file: ``models/default_risk.skops`` has
its card in ``models/default_risk.card.yaml``. It travels with the model file, so a new
model version can bring a new card. Keel never fills a key the team did not write: the
rendered card says "unknown" instead.

``keel validate`` checks a card's keys (``CARD_KEYS``) with file and line, and that the
outcome labels it names are labels of every flow that uses the model. The card's SHA-256 is
recorded in the ledger with the model version (``model_card_recorded``), so a card edited
later is a new, visible record, never a silent change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import DefinitionError, Problem
from keel.schema import Key, children
from keel.yamlfile import LocatedDict, Problems, load_yaml_text

CARD_SUFFIX = ".card.yaml"
MAX_CARD_BYTES = 256 * 1024
MAX_TEXT = 10_000

_TEXT = "string"
CARD_KEYS: tuple[Key, ...] = (
    Key("owner", _TEXT, "Who answers for the model: a name, a team, an email address."),
    Key("description", _TEXT, "What the model is and what it predicts, in a sentence or two."),
    Key("intended_use", _TEXT, "The decisions and population the model was built for."),
    Key("out_of_scope", _TEXT, "Uses the model was not built for and must not serve."),
    Key("training_data", _TEXT,
        "The data the model was trained on: source, period, population, size, labels."),
    Key("evaluation_data", _TEXT, "The data the model was evaluated on before release."),
    Key("limitations", _TEXT, "Known weaknesses, caveats and recommendations."),
    Key("ethical_considerations", _TEXT,
        "Risks to people the team considered, and what it did about them."),
    Key("positive_outcomes", "list of strings",
        "The flow's outcome labels that mean the event the model's score predicts (for "
        "`defaulted`, a high score should come before a `defaulted` outcome); every other "
        "label is a good outcome. Keel computes AUC and the Brier score from outcomes with "
        "them. Without them, the flow's outcome signal is judged by the flow's "
        "`outcome.positive` and `outcome.negative`, as `keel report trust` judges it."),
)  # fmt: skip

TEXT_KEYS = tuple(k.path for k in CARD_KEYS if k.type == _TEXT)
_KNOWN = children(CARD_KEYS, "")


@dataclass(frozen=True)
class Card:
    """A model card as written: its keys, the file it came from and the file's SHA-256."""

    path: str
    sha256: str
    fields: Mapping[str, Any]

    @property
    def positive_outcomes(self) -> tuple[str, ...]:
        return tuple(self.fields.get("positive_outcomes") or ())


def card_path(model_path: Path) -> Path:
    """Where the card of a model file is: beside it, named after it."""
    return model_path.with_name(model_path.stem + CARD_SUFFIX)


def load_card(model_path: Path) -> Card | None:
    """The card beside a model file (None when there is none); ``DefinitionError`` naming
    every problem in it, with its line."""
    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DefinitionError([Problem(str(path), "file", f"cannot be read: {exc}")]) from exc
    if len(data) > MAX_CARD_BYTES:
        limit = MAX_CARD_BYTES >> 10
        raise DefinitionError([Problem(str(path), "file", f"is larger than {limit} KiB")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError([Problem(str(path), "file", "is not UTF-8 text")]) from exc
    raw = load_yaml_text(text, str(path))
    fields = _parse(raw, Problems(path))
    return Card(str(path), hashlib.sha256(data).hexdigest(), fields)


def _parse(raw: LocatedDict, c: Problems) -> dict[str, Any]:
    c.unknown_keys(raw, _KNOWN, "card")
    fields: dict[str, Any] = {}
    for key in TEXT_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            c.add(key, "must be a non-empty string", raw, key)
        elif len(value) > MAX_TEXT:
            c.add(key, f"is longer than {MAX_TEXT:,} characters", raw, key)
        else:
            fields[key] = value.strip()
    labels = raw.get("positive_outcomes")
    if labels is not None:
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) and x for x in labels)
        ):
            c.add("positive_outcomes", "must be a non-empty list of outcome labels", raw,
                  "positive_outcomes")  # fmt: skip
        else:
            fields["positive_outcomes"] = list(dict.fromkeys(labels))
    c.raise_any()
    return fields


def card_problems(
    model_path: Path, flow_source: str, signal: str, labels: Mapping[str, Any]
) -> list[Problem]:
    """What is wrong with the card of a signal's model, for ``keel validate``: its own
    problems, and outcome labels the flow does not define."""
    try:
        card = load_card(model_path)
    except DefinitionError as exc:
        return exc.problems
    if card is None:
        return []
    unknown = [x for x in card.positive_outcomes if x not in labels]
    if not unknown:
        return []
    known = ", ".join(labels) or "none"
    line = _line_of(Path(card.path), "positive_outcomes")
    return [
        Problem(
            card.path,
            "positive_outcomes",
            f"{', '.join(map(repr, unknown))} not an outcome label of the flow in "
            f"{flow_source} (signal '{signal}'; labels: {known})",
            line=line,
        )
    ]


def _line_of(path: Path, key: str) -> int | None:
    try:
        return load_yaml_text(path.read_text(encoding="utf-8"), str(path)).line_of(key)
    except (OSError, DefinitionError):
        return None
