"""A flow's ``notice:`` section: which decisions are adverse, and what their notices state.

```yaml
notice:
  adverse_actions: [decline]     # an action in force among these is an adverse action
  request: requested_limit       # a valued action below this input is a reduced offer
  reasons: 4                     # how many principal reasons a notice states
  contact: "Credit team, credit@example.com, +1 555 0100"
  adverse_when: {default_risk: high}   # which way each score leans towards adverse
```

A flow without the section gives no notices. Reasons come from the deciding rule's
``notice`` text and from the model features that pushed the score towards the adverse side
most, each named by its field's ``notice_reason`` (or label). A field marked ``protected``
or classified ``sensitive`` is never a stated reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from keel.schema import Key, children
from keel.yamlfile import LocatedDict, Problems

DEFAULT_REASONS = 4
MAX_REASONS = 10
DIRECTIONS = ("high", "low")

NOTICE_KEYS: tuple[Key, ...] = (
    Key("notice", "mapping",
        "Adverse-action notices (`keel notice`): which decisions are adverse and what their "
        "notices state. Left out: the flow gives no notices."),
    Key("notice.adverse_actions", "list of strings",
        "The policy's actions that are adverse (e.g. `decline`): a decision whose action in "
        "force is one of them gets a notice.", required=True),
    Key("notice.request", "string",
        "A number or integer input holding what the applicant asked for. A decision whose "
        "value in force is below it is a reduced offer, and gets a notice too."),
    Key("notice.reasons", f"integer from 1 to {MAX_REASONS}",
        "How many principal reasons a notice states, most important first.",
        default=str(DEFAULT_REASONS)),
    Key("notice.contact", "string",
        "Whom the applicant may contact about the decision, as the notice prints it. Left "
        "out: the owner's name and email."),
    Key("notice.adverse_when", "mapping",
        "For each signal, which way its score leans towards an adverse decision: `high` "
        "(a risk score) or `low` (a credit score). A signal not listed: `high`."),
    Key("notice.adverse_when.<signal>", "string", "The signal's adverse direction: `high` "
        "or `low`."),
)  # fmt: skip
_KEYS = children(NOTICE_KEYS, "notice")


@dataclass(frozen=True)
class NoticeSpec:
    """What makes a decision adverse, and how many reasons its notice states."""

    adverse_actions: tuple[str, ...]
    request: str | None = None
    reasons: int = DEFAULT_REASONS
    contact: str = ""
    adverse_when: Mapping[str, str] = field(default_factory=dict)
    line: int | None = field(default=None, compare=False)  # of adverse_actions

    def leans_high(self, signal: str) -> bool:
        """Whether a higher score of ``signal`` leans towards an adverse decision."""
        return self.adverse_when.get(signal, "high") == "high"


def parse_notice(
    c: Problems, raw: LocatedDict, fields: Mapping[str, str], signals: set[str]
) -> NoticeSpec | None:
    """Read a flow's ``notice`` section; ``fields`` maps input names to their types."""
    section = raw.get("notice")
    if section is None:
        return None
    if not isinstance(section, LocatedDict):
        c.add("notice", "'notice' must be a mapping with 'adverse_actions'", raw, "notice")
        return None
    c.unknown_keys(section, _KEYS, "notice")
    actions = section.get("adverse_actions")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        c.add("notice.adverse_actions", "'adverse_actions' must be a non-empty list of actions",
              section, "adverse_actions")  # fmt: skip
        actions = []
    request = section.get("request")
    if request is not None and fields.get(str(request)) not in ("number", "integer"):
        c.add("notice.request", f"'request' must name a number or integer input, got {request!r}",
              section, "request")  # fmt: skip
        request = None
    count = section.get("reasons", DEFAULT_REASONS)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_REASONS:
        c.add("notice.reasons", f"'reasons' must be a whole number from 1 to {MAX_REASONS}, "
              f"got {count!r}", section, "reasons")  # fmt: skip
        count = DEFAULT_REASONS
    contact = section.get("contact", "")
    if not isinstance(contact, str):
        c.add("notice.contact", "'contact' must be a text", section, "contact")
        contact = ""
    directions: dict[str, str] = {}
    lean = section.get("adverse_when", {})
    if not isinstance(lean, dict):
        c.add("notice.adverse_when", "'adverse_when' must map signals to high or low", section,
              "adverse_when")  # fmt: skip
        lean = {}
    for signal, direction in lean.items():
        if signal not in signals:
            c.add(f"notice.adverse_when.{signal}", f"'{signal}' is not a signal of the flow",
                  lean, signal)  # fmt: skip
        elif direction not in DIRECTIONS:
            c.add(f"notice.adverse_when.{signal}", f"must be high or low, got {direction!r}",
                  lean, signal)  # fmt: skip
        else:
            directions[signal] = direction
    return NoticeSpec(
        adverse_actions=tuple(actions),
        request=request,
        reasons=count,
        contact=contact,
        adverse_when=directions,
        line=section.line_of("adverse_actions"),
    )
