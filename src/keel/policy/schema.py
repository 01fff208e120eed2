"""Every key of a policy file, described: ``keel.policy.model`` accepts exactly these, and
the reference page ``docs/reference/policies.md`` is written from them."""

from __future__ import annotations

from keel.schema import Key

ON_HIT = ("escalate", "fallback")
BOUND_ON_HIT = ("clamp", "escalate", "fallback")
KILL_SWITCH_REASON = "Automatic decisions are switched off for this flow."

_NAME = "string (lower_snake_case)"
_NOTICE = (
    "The principal reason an adverse-action notice states when this decides, in the "
    "applicant's words (plain text, no placeholders), e.g. `Income insufficient for the "
    "amount of credit requested`. Left out: the notice states only the model's reasons."
)
_ON_HIT = (
    "What a hit does: `escalate` sends the case to review, `fallback` decides it with the "
    "policy's fallback."
)


def _outcome_keys(path: str) -> tuple[Key, ...]:
    return (
        Key(f"{path}.action", "string", "The action: one of `actions`.", required=True),
        Key(f"{path}.reason", "string (template)",
            "Why, in business language; a template like a rule's `reason`.", required=True),
        Key(f"{path}.review", "boolean",
            "Whether a supervised flow sends the case to review.", default="false"),
        Key(f"{path}.value", "CEL expression (a number)", "The action's value, e.g. an amount."),
        Key(f"{path}.notice", "string", _NOTICE),
    )  # fmt: skip


def _window_keys(path: str, counted: str) -> tuple[Key, ...]:
    return (
        Key(f"{path}[].name", _NAME, "The limit's name, unique among the policy's limits.",
            required=True),
        Key(f"{path}[].action", "string", "The action limited: one of `actions`.",
            required=True),
        Key(f"{path}[].max", "number ≥ 0", f"The most {counted} inside the window.",
            required=True),
        Key(f"{path}[].window", "duration (30s, 15m, 1h, 7d)", "The sliding window.",
            required=True),
        Key(f"{path}[].per", "string",
            "An input field that splits the limit into one per value (segment). Left out: "
            "one limit for all cases."),
        Key(f"{path}[].on_hit", "string", _ON_HIT, default=ON_HIT[0], values=ON_HIT),
    )  # fmt: skip


POLICY_KEYS: tuple[Key, ...] = (
    Key("policy", _NAME, "The policy's name; a flow names it in `policy`.", required=True),
    Key("description", "string", "What the policy does, in a sentence."),
    Key("actions", "list of strings",
        "Every action the policy may take, each once. Rules, the default, the fallback and "
        "guardrails name actions from it.", required=True),
    Key("params", "mapping", "Named values the rules read as `params.<name>`, so a "
        "threshold is changed in one place."),
    Key("params.<name>", "number, string or boolean",
        "One parameter; its name is lower_snake_case, a number is finite."),
    Key("rules", "list of mappings",
        "The rules, in order: the first whose `when` holds decides. At least one.",
        required=True),
    Key("rules[].name", _NAME, "The rule's name, unique in the policy; decisions record it.",
        required=True),
    Key("rules[].when", "CEL expression (true or false)",
        "The condition, over `input`, `signals` (each with `score`, `confidence`, `label`) "
        "and `params`.", required=True),
    Key("rules[].action", "string", "The action the rule decides: one of `actions`.",
        required=True),
    Key("rules[].value", "CEL expression (a number)", "The action's value, e.g. a limit."),
    Key("rules[].reason", "string (template)",
        "Why, in business language. It may name `{input.x}`, `{signals.s.score}`, "
        "`{params.p}` or `{value}`, with an optional `:format`.", required=True),
    Key("rules[].notice", "string", _NOTICE),
    Key("rules[].review", "boolean",
        "Marks a grey zone: a supervised flow sends the case to review.", default="false"),
    Key("default", "mapping", "What is decided when no rule's `when` holds.", required=True),
    *_outcome_keys("default"),
    Key("fallback", "mapping",
        "The safe outcome. It decides a case the rules cannot (a signal is missing, an "
        "expression cannot be evaluated), and its action is taken when a reviewer rejects "
        "a case.", required=True),
    *_outcome_keys("fallback"),
    Key("guardrails", "mapping",
        "Checks that always win over rules; every check and every hit is recorded."),
    Key("guardrails.bounds", "list of mappings", "Bounds on an action's value."),
    Key("guardrails.bounds[].action", "string", "The action bounded: one of `actions`.",
        required=True),
    Key("guardrails.bounds[].min", "number", "The least value (give `min`, `max` or both)."),
    Key("guardrails.bounds[].max", "number", "The greatest value."),
    Key("guardrails.bounds[].on_hit", "string",
        "What a value outside the bound does: `clamp` moves it to the bound; `escalate` "
        "and `fallback` as for other guardrails.", default=BOUND_ON_HIT[1],
        values=BOUND_ON_HIT),
    Key("guardrails.min_confidence", "list of mappings",
        "Confidence floors on signals: a signal below its floor is a hit."),
    Key("guardrails.min_confidence[].signal", "string",
        "The signal: one of the flow's signals, not a `score` signal.", required=True),
    Key("guardrails.min_confidence[].min", "number from 0 to 1", "The floor.",
        required=True),
    Key("guardrails.min_confidence[].on_hit", "string", _ON_HIT, default=ON_HIT[0],
        values=ON_HIT),
    Key("guardrails.rate_limits", "list of mappings",
        "Limits on how often an action is taken over a sliding window, held across "
        "restarts and processes."),
    *_window_keys("guardrails.rate_limits", "times the action is taken (a whole number)"),
    Key("guardrails.exposure_limits", "list of mappings",
        "Limits on the sum of an action's values over a sliding window."),
    *_window_keys("guardrails.exposure_limits", "the action's values add up to"),
    Key("guardrails.kill_switch", "mapping",
        "Stops automatic decisions: while engaged, every case gets this action and is "
        "escalated."),
    Key("guardrails.kill_switch.engaged", "boolean", "Whether the switch is on.",
        default="false"),
    Key("guardrails.kill_switch.action", "string", "The action taken instead: one of "
        "`actions`.", required=True),
    Key("guardrails.kill_switch.reason", "string", "Why, as decisions record it.",
        default=KILL_SWITCH_REASON),
)  # fmt: skip
