"""A flow's ``monitoring:`` section: windows, thresholds, schedule, alarms and governor.

```yaml
monitoring:
  window: 1d             # the current window …
  baseline: 7d           # … against the one right before it
  every: 1h              # run inside the server this often (left out: on demand only)
  min_decisions: 30      # a window with fewer decisions is not judged
  drift: {methods: [jensenshannon], min_columns: 1, severity: warning,
          reference: 1938ef89d181}  # a stored profile (training data), not the baseline
  limits:                # rates: largest absolute change; latency: largest ratio
    automation_rate: {max_change: 0.1, severity: critical}
    override_rate: 0.05  # shorthand: the limit, severity warning
    latency_p99_ms: {max_ratio: 2}
    fallback_rate: false # not watched
    auc: {min: 0.7, severity: critical}  # model performance from outcomes: absolute
    brier: 0.2           # shorthand: the maximum, severity warning
  performance: {over: 90d, min_outcomes: 100}  # the decisions whose outcomes are judged
  fairness: {min_impact_ratio: 0.8, max_parity_difference: 0.1, severity: critical}
  alarms: {cooldown: 6h, clear_after: 2, clear_below: 0.8}
  notify:               # each webhook has a name (default notify[0], notify[1] …)
    - {url: "https://hooks.example.com/keel", secret_env: KEEL_HOOK_SECRET, name: ops}
  governor:
    - when: {alarm: [drift, automation_rate], severity: critical}
      do: lower_autonomy
      to: advisory
    - {when: {alarm: model_error_rate}, do: pause}
    - {when: {alarm: drift}, do: retrain}
  retrain:
    webhook: {url: "https://ml.example.com/retrain", secret_env: KEEL_HOOK_SECRET}
    command: [python, retrain.py]
```

Every key is optional; a flow without the section is watched with the defaults below,
on demand only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.flows.autonomy import Autonomy
from keel.schema import Key, children
from keel.yamlfile import LocatedDict, Problems, parse_window

RATES = (
    "automation_rate",
    "escalation_rate",
    "override_rate",
    "guardrail_hit_rate",
    "fallback_rate",
    "model_error_rate",
)
LATENCY = "latency_p99_ms"
DRIFT = "drift"
FAIRNESS = "fairness"
# Model performance from outcomes, judged against absolute bounds: a least value for the
# ranking figures, a greatest for the Brier score (keel.review.performance computes them).
SCORE_FIGURES = ("auc", "gini", "ks")
BRIER = "brier"
PERFORMANCE = (*SCORE_FIGURES, BRIER)
MONITORS = (DRIFT, *RATES, LATENCY, *PERFORMANCE, FAIRNESS)
SEVERITIES = ("info", "warning", "critical")  # lowest first
ACTIONS = ("lower_autonomy", "escalate_all", "pause", "retrain")
DRIFT_METHODS = ("ks", "psi", "wasserstein", "jensenshannon", "chisquare", "new_categories")

DEFAULT_WINDOW_S = 86_400
DEFAULT_BASELINE_S = 7 * 86_400
DEFAULT_MIN_DECISIONS = 30
DEFAULT_MAX_CHANGE = 0.1
DEFAULT_MAX_RATIO = 1.5
DEFAULT_COOLDOWN_S = 6 * 3600
DEFAULT_CLEAR_AFTER = 2
DEFAULT_CLEAR_BELOW = 0.8
DEFAULT_MIN_IMPACT_RATIO = 0.8  # the four-fifths rule
DEFAULT_MIN_GROUP_SIZE = 30
DEFAULT_PERFORMANCE_OVER_S = 90 * 86_400
DEFAULT_MIN_OUTCOMES = 30
SECRET_ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
HOOK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,47}$")
RETRAIN_WEBHOOK = "retrain.webhook"  # the names deliveries use for the retrain targets
RETRAIN_COMMAND = "retrain.command"

PROFILE_ID_RE = re.compile(r"^[0-9a-f]{12,64}$")


def _window(seconds: int) -> str:
    """A default window as a flow file writes it: 86400 → 1d."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _hook_keys(path: str, default_name: str) -> tuple[Key, ...]:
    return (
        Key(f"{path}.url", "URL", "Where to POST (http or https).", required=True),
        Key(f"{path}.secret_env", "string (UPPER_SNAKE)",
            "The environment variable that holds the secret: the body is then signed, "
            "`X-Keel-Signature: sha256=<HMAC-SHA256 of the body>`. The secret itself never "
            "sits in a file."),
        Key(f"{path}.name", "string",
            "What the delivery outbox stores and shows instead of the URL, which may carry "
            "credentials: letters, digits, `_`, `.` or `-`, at most 48.", default=default_name),
    )  # fmt: skip


_DURATION = "duration (30m, 6h, 1d)"
# The keys of a flow's monitoring section, described: the parser accepts exactly these
# (``keel.flows.schema.FLOW_KEYS`` holds them with the rest of the flow file).
MONITORING_KEYS: tuple[Key, ...] = (
    Key("monitoring", "mapping",
        "Thresholds, schedule, alarms and governor. Every key is optional; a flow without "
        "the section is watched with the defaults, on demand only."),
    Key("monitoring.window", _DURATION, "The current window a run judges.",
        default=_window(DEFAULT_WINDOW_S)),
    Key("monitoring.baseline", _DURATION,
        "The window right before the current one, that it is compared with.",
        default=_window(DEFAULT_BASELINE_S)),
    Key("monitoring.every", _DURATION,
        "Run inside the server this often. Left out: on demand only (`keel monitor run`)."),
    Key("monitoring.min_decisions", "integer ≥ 1",
        "A window with fewer decisions is not judged: the run is `skipped`.",
        default=str(DEFAULT_MIN_DECISIONS)),
    Key("monitoring.drift", "mapping, or false",
        "How drift of inputs, signal scores and actions is judged; `false`: not watched, "
        "and a run then needs no baseline (with too small a one, the rates and latency are "
        "unjudged and the result's `not_checked` says drift was not compared)."),
    Key("monitoring.drift.methods", "list of strings",
        "The drift statistics to compute; the first that applies to a column's type gives "
        "its verdict. Left out: every statistic that applies.", values=DRIFT_METHODS),
    Key("monitoring.drift.min_columns", "integer ≥ 1",
        "How many columns must drift for the drift monitor to breach.", default="1"),
    Key("monitoring.drift.severity", "string", "The severity of a drift alarm.",
        default="warning", values=SEVERITIES),
    Key("monitoring.drift.reference", "string (quoted)",
        "Compare with a stored profile of the training data instead of the baseline: its id, "
        "12 to 64 hex digits, as `keel drift profile` prints it."),
    Key("monitoring.limits", "mapping",
        "The behaviour figures watched and when each breaches. A figure left out keeps its "
        "default limit."),
    Key("monitoring.limits.<rate>", "number, mapping, or false",
        "A rate breaches when it moves by at least its limit from the baseline's: a share "
        "above 0, at most 1 (shorthand for `max_change`, severity `warning`); `false`: not "
        "watched.", default=str(DEFAULT_MAX_CHANGE), values=RATES),
    Key("monitoring.limits.<rate>.max_change", "number",
        "The absolute change from the baseline's rate that breaches: above 0, at most 1.",
        default=str(DEFAULT_MAX_CHANGE)),
    Key("monitoring.limits.<rate>.severity", "string", "The severity of the rate's alarm.",
        default="warning", values=SEVERITIES),
    Key(f"monitoring.limits.{LATENCY}", "number, mapping, or false",
        "The decide-time p99 breaches at this ratio to the baseline's: a number above 1 "
        "(shorthand for `max_ratio`, severity `warning`); `false`: not watched.",
        default=str(DEFAULT_MAX_RATIO)),
    Key(f"monitoring.limits.{LATENCY}.max_ratio", "number",
        "The ratio of the current p99 to the baseline's that breaches: above 1.",
        default=str(DEFAULT_MAX_RATIO)),
    Key(f"monitoring.limits.{LATENCY}.severity", "string", "The severity of the latency alarm.",
        default="warning", values=SEVERITIES),
    Key(f"monitoring.{FAIRNESS}", "mapping",
        "Watch fairness per protected attribute in the current window (the flow's "
        "`fairness` section and protected fields say what is counted). Left out: not "
        "watched."),
    Key(f"monitoring.{FAIRNESS}.min_impact_ratio", "number",
        "A group whose selection rate is under this share of the highest group's breaches "
        "(above 0, at most 1).", default=str(DEFAULT_MIN_IMPACT_RATIO)),
    Key(f"monitoring.{FAIRNESS}.max_parity_difference", "number",
        "An attribute whose highest and lowest selection rates differ by more than this "
        "breaches (above 0, at most 1). Left out: not judged."),
    Key(f"monitoring.{FAIRNESS}.min_group_size", "integer ≥ 1",
        "Groups with fewer decisions in force in the window are not judged: their rates "
        "are too noisy.", default=str(DEFAULT_MIN_GROUP_SIZE)),
    Key(f"monitoring.{FAIRNESS}.severity", "string", "The severity of a fairness alarm.",
        default="warning", values=SEVERITIES),
    Key("monitoring.limits.<score>", "number, mapping, or false",
        "Model performance from outcomes: the AUC, Gini or KS statistic of the "
        "`outcome.signal`'s score breaches below its minimum, a number above 0, at most 1 "
        "(shorthand for `min`, severity `warning`). Needs `outcome.positive`. Left out or "
        "`false`: not watched.", values=SCORE_FIGURES),
    Key("monitoring.limits.<score>.min", "number",
        "The least value that does not breach: above 0, at most 1.", required=True),
    Key("monitoring.limits.<score>.severity", "string", "The severity of the figure's alarm.",
        default="warning", values=SEVERITIES),
    Key(f"monitoring.limits.{BRIER}", "number, mapping, or false",
        "The Brier score of a `probability` `outcome.signal` breaches above its maximum, a "
        "number above 0, at most 1 (shorthand for `max`, severity `warning`). Needs "
        "`outcome.positive`. Left out or `false`: not watched."),
    Key(f"monitoring.limits.{BRIER}.max", "number",
        "The greatest Brier score that does not breach: above 0, at most 1.", required=True),
    Key(f"monitoring.limits.{BRIER}.severity", "string", "The severity of the Brier alarm.",
        default="warning", values=SEVERITIES),
    Key("monitoring.performance", "mapping",
        "Which decisions the performance limits (`auc`, `gini`, `ks`, `brier`) judge: those "
        "recorded over a trailing period with an outcome reported by the run's end."),
    Key("monitoring.performance.over", _DURATION,
        "The trailing period, ending where the run's current window ends. Outcomes come "
        "late, so it is longer than the window.", default=_window(DEFAULT_PERFORMANCE_OVER_S)),
    Key("monitoring.performance.min_outcomes", "integer ≥ 1",
        "With fewer scored good and bad outcomes than this, the figures are unknown and not "
        "judged. `keel report trust` gives no figure for a group with fewer either.",
        default=str(DEFAULT_MIN_OUTCOMES)),
    Key("monitoring.alarms", "mapping", "How alarms repeat and clear."),
    Key("monitoring.alarms.cooldown", _DURATION,
        "An alarm seen again inside it is only counted (`suppressed`); after it, it is told "
        "again.", default=_window(DEFAULT_COOLDOWN_S)),
    Key("monitoring.alarms.clear_after", "integer ≥ 1",
        "How many clean runs in a row resolve an alarm.", default=str(DEFAULT_CLEAR_AFTER)),
    Key("monitoring.alarms.clear_below", "number",
        "A run is clean when the change is under this share of the limit (above 0, at most "
        "1); between it and the limit, the band resets the count.",
        default=str(DEFAULT_CLEAR_BELOW)),
    Key("monitoring.notify", "list of URLs or mappings",
        "Webhooks that get each alarm as JSON; a plain URL is `{url: URL}`."),
    *_hook_keys("monitoring.notify[]", "notify[0], notify[1] …"),
    Key("monitoring.governor", "list of mappings",
        "Rules that act when an alarm is raised or its severity grows. The governor only "
        "lowers: raising back goes through earned autonomy."),
    Key("monitoring.governor[].when", "mapping",
        "Which alarms the rule matches. Left out: every alarm."),
    Key("monitoring.governor[].when.alarm", "string or list of strings",
        "The monitors whose alarms the rule matches. Left out: any monitor.", values=MONITORS),
    Key("monitoring.governor[].when.severity", "string",
        "The least severity the rule matches.", default="info", values=SEVERITIES),
    Key("monitoring.governor[].do", "string",
        "What to do: lower the autonomy level, send every case that would have been final to "
        "review, pause automation, or request retraining (needs `retrain`).",
        required=True, values=ACTIONS),
    Key("monitoring.governor[].to", "string",
        "The level `lower_autonomy` lowers to; required with it, refused with other actions.",
        values=tuple(a.value for a in Autonomy)[:-1]),
    Key("monitoring.retrain", "mapping",
        "Where a retraining request goes: a webhook, a command, or both (at least one)."),
    Key("monitoring.retrain.webhook", "URL or mapping",
        "A webhook that gets the alarm and the flow's model versions as JSON."),
    *_hook_keys("monitoring.retrain.webhook", RETRAIN_WEBHOOK),
    Key("monitoring.retrain.command", "list of strings",
        "A command (argv) that gets the same JSON on standard input, with `KEEL_FLOW`, "
        "`KEEL_ALARM` and `KEEL_DELIVERY` set.",),
)  # fmt: skip
_KEYS = children(MONITORING_KEYS, "monitoring")
_DRIFT_KEYS = children(MONITORING_KEYS, "monitoring.drift")
_LIMIT_KEYS = children(MONITORING_KEYS, "monitoring.limits")
_PERFORMANCE_KEYS = children(MONITORING_KEYS, "monitoring.performance")
_ALARM_KEYS = children(MONITORING_KEYS, "monitoring.alarms")
_FAIRNESS_KEYS = children(MONITORING_KEYS, f"monitoring.{FAIRNESS}")
_NOTIFY_KEYS = children(MONITORING_KEYS, "monitoring.notify[]")
_RULE_KEYS = children(MONITORING_KEYS, "monitoring.governor[]")
_WHEN_KEYS = children(MONITORING_KEYS, "monitoring.governor[].when")
_RETRAIN_KEYS = children(MONITORING_KEYS, "monitoring.retrain")
_RETRAIN_HOOK_KEYS = children(MONITORING_KEYS, "monitoring.retrain.webhook")


@dataclass(frozen=True)
class Check:
    """When one monitor breaches and how grave that is. ``limit`` is an absolute change
    for rates, a ratio for latency, a number of drifted columns for drift, and a bound
    for performance figures (the least AUC, Gini or KS; the greatest Brier score)."""

    limit: float
    severity: str = "warning"


@dataclass(frozen=True)
class FairnessLimits:
    """When the fairness monitor breaches: a judged group's impact ratio under
    ``min_impact_ratio``, or an attribute's parity difference over
    ``max_parity_difference``; groups under ``min_group_size`` are not judged."""

    min_impact_ratio: float = DEFAULT_MIN_IMPACT_RATIO
    max_parity_difference: float | None = None
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE


@dataclass(frozen=True)
class Webhook:
    """Where to POST: the body is signed with HMAC-SHA256 when ``secret_env`` names an
    environment variable holding the secret (the secret itself never sits in a file).

    ``name`` is what the delivery outbox stores and shows instead of the URL, which may
    carry credentials: the URL and secret are looked up by name when a delivery is sent."""

    url: str
    secret_env: str | None = None
    name: str = ""


@dataclass(frozen=True)
class Rule:
    """The governor: when an alarm on one of ``alarms`` (empty: any) is raised at
    ``severity`` or graver, take ``action``."""

    action: str
    alarms: tuple[str, ...] = ()
    severity: str = "info"
    level: str | None = None  # lower_autonomy: the level to lower to

    def matches(self, monitor: str, severity: str) -> bool:
        graver = SEVERITIES.index(severity) >= SEVERITIES.index(self.severity)
        return graver and (not self.alarms or monitor in self.alarms)


@dataclass(frozen=True)
class Retrain:
    """Where a retraining request goes: a webhook, a command (argv), or both."""

    webhook: Webhook | None = None
    command: tuple[str, ...] = ()


def _default_checks() -> dict[str, Check]:
    checks = {name: Check(DEFAULT_MAX_CHANGE) for name in RATES}
    checks[LATENCY] = Check(DEFAULT_MAX_RATIO)
    checks[DRIFT] = Check(1.0)
    return checks


@dataclass(frozen=True)
class MonitoringSpec:
    window_s: int = DEFAULT_WINDOW_S
    baseline_s: int = DEFAULT_BASELINE_S
    every_s: int | None = None
    min_decisions: int = DEFAULT_MIN_DECISIONS
    methods: tuple[str, ...] = ()
    reference: str | None = None  # a stored profile (training data) instead of the baseline
    checks: Mapping[str, Check] = field(default_factory=_default_checks)  # watched monitors
    cooldown_s: int = DEFAULT_COOLDOWN_S
    clear_after: int = DEFAULT_CLEAR_AFTER
    clear_below: float = DEFAULT_CLEAR_BELOW
    notify: tuple[Webhook, ...] = ()
    governor: tuple[Rule, ...] = ()
    retrain: Retrain | None = None
    fairness: FairnessLimits | None = None  # None: not watched
    performance_over_s: int = DEFAULT_PERFORMANCE_OVER_S
    min_outcomes: int = DEFAULT_MIN_OUTCOMES


def parse_monitoring(c: Problems, raw: LocatedDict) -> MonitoringSpec:
    """Read a flow's ``monitoring`` section; problems go to the collector ``c``."""
    section = raw.get("monitoring")
    if section is None:
        return MonitoringSpec()
    if not isinstance(section, LocatedDict):
        c.add("monitoring", "'monitoring' must be a mapping", raw, "monitoring")
        return MonitoringSpec()
    c.unknown_keys(section, _KEYS, "monitoring")
    windows: dict[str, int | None] = {}
    for key, default in (
        ("window", DEFAULT_WINDOW_S),
        ("baseline", DEFAULT_BASELINE_S),
        ("every", None),
    ):
        windows[key] = default
        if key in section:
            windows[key] = parse_window(section[key])
            if windows[key] is None:
                c.add(
                    f"monitoring.{key}",
                    f"'{key}' must look like 15m, 6h or 1d, got {section[key]!r}",
                    section,
                    key,
                )
    min_decisions = _count(c, section, "min_decisions", "monitoring", DEFAULT_MIN_DECISIONS, 1)
    checks = _default_checks()
    methods, reference = _parse_drift(c, section, checks)
    _parse_limits(c, section, checks)
    fairness = _parse_fairness(c, section, checks)
    over, min_outcomes = _parse_performance(c, section)
    cooldown, clear_after, clear_below = _parse_alarms(c, section)
    hooks = section.get("notify", [])
    notify: list[Webhook] = []
    if not isinstance(hooks, list):
        c.add("monitoring.notify", "'notify' must be a list of webhooks", section, "notify")
    else:
        for i, hook in enumerate(hooks):
            where = f"monitoring.notify[{i}]"
            parsed = _parse_hook(c, hook, where, section, "notify", f"notify[{i}]", _NOTIFY_KEYS)
            if parsed is None:
                continue
            if any(h.name == parsed.name for h in notify):
                c.add(f"{where}.name", f"two webhooks are named '{parsed.name}'", section, "notify")
            notify.append(parsed)
    retrain = _parse_retrain(c, section)
    rules = _parse_governor(c, section, checks, retrain)
    return MonitoringSpec(
        window_s=windows["window"] or DEFAULT_WINDOW_S,
        baseline_s=windows["baseline"] or DEFAULT_BASELINE_S,
        every_s=windows["every"],
        min_decisions=min_decisions,
        methods=methods,
        reference=reference,
        checks=checks,
        cooldown_s=cooldown,
        clear_after=clear_after,
        clear_below=clear_below,
        notify=tuple(notify),
        governor=rules,
        retrain=retrain,
        fairness=fairness,
        performance_over_s=over,
        min_outcomes=min_outcomes,
    )


def _parse_fairness(
    c: Problems, section: LocatedDict, checks: dict[str, Check]
) -> FairnessLimits | None:
    node = section.get(FAIRNESS)
    if node is None:
        return None
    where = f"monitoring.{FAIRNESS}"
    if not isinstance(node, LocatedDict):
        c.add(where, "'fairness' must be a mapping: {min_impact_ratio: 0.8, ...}", section,
              FAIRNESS)  # fmt: skip
        return None
    c.unknown_keys(node, _FAIRNESS_KEYS, where)
    shares: dict[str, float | None] = {}
    for key, default in (
        ("min_impact_ratio", DEFAULT_MIN_IMPACT_RATIO),
        ("max_parity_difference", None),
    ):
        value = node.get(key, default)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1
        ):
            c.add(f"{where}.{key}", f"'{key}' must be a share above 0, at most 1, got "
                  f"{value!r}", node, key)  # fmt: skip
            value = default
        shares[key] = None if value is None else float(value)
    size = _count(c, node, "min_group_size", where, DEFAULT_MIN_GROUP_SIZE, 1)
    ratio = shares["min_impact_ratio"] or DEFAULT_MIN_IMPACT_RATIO
    checks[FAIRNESS] = Check(ratio, _severity(c, node, where))
    return FairnessLimits(ratio, shares["max_parity_difference"], size)


def _count(c: Problems, node: LocatedDict, key: str, where: str, default: int, least: int) -> int:
    value = node.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        c.add(
            f"{where}.{key}", f"'{key}' must be a whole number ≥ {least}, got {value!r}", node, key
        )
        return default
    return value


def _severity(c: Problems, node: LocatedDict, where: str, default: str = "warning") -> str:
    value = node.get("severity", default)
    if value not in SEVERITIES:
        c.add(
            f"{where}.severity",
            f"'severity' must be one of {', '.join(SEVERITIES)}, got {value!r}",
            node,
            "severity",
        )
        return default
    return str(value)


def _parse_drift(
    c: Problems, section: LocatedDict, checks: dict[str, Check]
) -> tuple[tuple[str, ...], str | None]:
    node = section.get("drift")
    if node is None:
        return (), None
    where = "monitoring.drift"
    if node is False:
        del checks[DRIFT]
        return (), None
    if not isinstance(node, LocatedDict):
        c.add(where, "'drift' must be a mapping (or false: not watched)", section, "drift")
        return (), None
    c.unknown_keys(node, _DRIFT_KEYS, where)
    methods = node.get("methods", [])
    if not isinstance(methods, list) or not all(m in DRIFT_METHODS for m in methods):
        c.add(
            f"{where}.methods",
            f"'methods' must list drift methods from {', '.join(DRIFT_METHODS)}, got {methods!r}",
            node,
            "methods",
        )
        methods = []
    columns = _count(c, node, "min_columns", where, 1, 1)
    checks[DRIFT] = Check(float(columns), _severity(c, node, where))
    reference = node.get("reference")
    if isinstance(reference, int | float) and not isinstance(reference, bool):
        c.add(
            f"{where}.reference",
            "'reference' must be quoted: YAML reads an id of digits alone as a number",
            node,
            "reference",
        )
        reference = None
    elif reference is not None and (
        not isinstance(reference, str) or not PROFILE_ID_RE.match(reference)
    ):
        c.add(
            f"{where}.reference",
            "'reference' must be a stored profile's id (12 to 64 hex digits, as "
            f"'keel drift profile' prints it), got {reference!r}",
            node,
            "reference",
        )
        reference = None
    return tuple(methods), reference


def _parse_limits(c: Problems, section: LocatedDict, checks: dict[str, Check]) -> None:
    node = section.get("limits")
    if node is None:
        return
    if not isinstance(node, LocatedDict):
        c.add("monitoring.limits", "'limits' must map behaviour figures to limits", section)
        return
    for name, given in node.items():
        where = f"monitoring.limits.{name}"
        value = given
        if name not in _LIMIT_KEYS:
            known = ", ".join((*RATES, LATENCY, *PERFORMANCE))
            c.add(where, f"unknown behaviour figure '{name}' (known: {known})", node, name)
            continue
        if name in PERFORMANCE:
            _parse_performance_limit(c, node, name, checks)
            continue
        kind = "max_ratio" if name == LATENCY else "max_change"
        if value is False:
            checks.pop(name, None)
            continue
        severity = "warning"
        if isinstance(value, LocatedDict):
            figure = LATENCY if name == LATENCY else "<rate>"
            c.unknown_keys(value, children(MONITORING_KEYS, f"monitoring.limits.{figure}"), where)
            severity = _severity(c, value, where)
            value = value.get(kind, checks[name].limit)
        least, most = (1.0, float("inf")) if name == LATENCY else (0.0, 1.0)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not least < value <= most
        ):
            rule = "a ratio above 1" if name == LATENCY else "a share above 0, at most 1"
            c.add(where, f"the {kind} of '{name}' must be {rule}, got {value!r}", node, name)
            continue
        checks[name] = Check(float(value), severity)


def _parse_performance_limit(
    c: Problems, node: LocatedDict, name: str, checks: dict[str, Check]
) -> None:
    """``auc: 0.7``, ``auc: {min: 0.7, severity: critical}``, ``brier: {max: 0.2}``."""
    where = f"monitoring.limits.{name}"
    value = node[name]
    if value is False:
        checks.pop(name, None)
        return
    bound = "max" if name == BRIER else "min"
    severity = "warning"
    if isinstance(value, LocatedDict):
        figure = BRIER if name == BRIER else "<score>"
        c.unknown_keys(value, children(MONITORING_KEYS, f"monitoring.limits.{figure}"), where)
        severity = _severity(c, value, where)
        if bound not in value:
            c.add(where, f"'{name}' needs '{bound}'", node, name)
            return
        value = value[bound]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        c.add(where, f"the {bound} of '{name}' must be a number above 0, at most 1, got "
              f"{value!r}", node, name)  # fmt: skip
        return
    checks[name] = Check(float(value), severity)


def _parse_performance(c: Problems, section: LocatedDict) -> tuple[int, int]:
    node = section.get("performance")
    if node is None:
        return DEFAULT_PERFORMANCE_OVER_S, DEFAULT_MIN_OUTCOMES
    where = "monitoring.performance"
    if not isinstance(node, LocatedDict):
        c.add(where, "'performance' must be a mapping: {over, min_outcomes}", section)
        return DEFAULT_PERFORMANCE_OVER_S, DEFAULT_MIN_OUTCOMES
    c.unknown_keys(node, _PERFORMANCE_KEYS, where)
    over = DEFAULT_PERFORMANCE_OVER_S
    if "over" in node:
        parsed = parse_window(node["over"])
        if parsed is None:
            c.add(f"{where}.over", f"'over' must look like 30d or 12w, got {node['over']!r}",
                  node, "over")  # fmt: skip
        else:
            over = parsed
    return over, _count(c, node, "min_outcomes", where, DEFAULT_MIN_OUTCOMES, 1)


def check_performance_limits(
    c: Problems,
    raw: LocatedDict,
    spec: MonitoringSpec,
    outcome: Any,
    signals: Mapping[str, Any],
) -> None:
    """Performance limits need the flow's ``outcome.positive``, and a Brier limit a
    probability signal (``outcome`` and ``signals``: the flow's, already read)."""
    watched = [name for name in PERFORMANCE if name in spec.checks]
    section = raw.get("monitoring")
    node = section.get("limits") if isinstance(section, LocatedDict) else None
    for name in watched:
        where = f"monitoring.limits.{name}"
        if not outcome.positive:
            c.add(where, f"'{name}' needs outcome.positive: the labels of the bad event the "
                  "model predicts", node, name)  # fmt: skip
            continue
        signal = signals.get(outcome.signal or "")
        if name == BRIER and signal is not None and signal.output != "probability":
            c.add(where, f"'brier' needs a probability signal; '{signal.name}' gives a "
                  f"{signal.output}", node, name)  # fmt: skip


def _parse_alarms(c: Problems, section: LocatedDict) -> tuple[int, int, float]:
    node = section.get("alarms")
    if node is None:
        return DEFAULT_COOLDOWN_S, DEFAULT_CLEAR_AFTER, DEFAULT_CLEAR_BELOW
    where = "monitoring.alarms"
    if not isinstance(node, LocatedDict):
        c.add(where, "'alarms' must be a mapping", section, "alarms")
        return DEFAULT_COOLDOWN_S, DEFAULT_CLEAR_AFTER, DEFAULT_CLEAR_BELOW
    c.unknown_keys(node, _ALARM_KEYS, where)
    cooldown = DEFAULT_COOLDOWN_S
    if "cooldown" in node:
        parsed = parse_window(node["cooldown"])
        if parsed is None:
            c.add(
                f"{where}.cooldown",
                f"'cooldown' must look like 30m, 6h or 1d, got {node['cooldown']!r}",
                node,
                "cooldown",
            )
        else:
            cooldown = parsed
    clear_after = _count(c, node, "clear_after", where, DEFAULT_CLEAR_AFTER, 1)
    below = node.get("clear_below", DEFAULT_CLEAR_BELOW)
    if isinstance(below, bool) or not isinstance(below, int | float) or not 0 < below <= 1:
        c.add(
            f"{where}.clear_below",
            f"'clear_below' must be a share of the limit above 0, at most 1, got {below!r}",
            node,
            "clear_below",
        )
        below = DEFAULT_CLEAR_BELOW
    return cooldown, clear_after, float(below)


def _parse_hook(
    c: Problems,
    raw: Any,
    where: str,
    parent: LocatedDict,
    key: str,
    default_name: str,
    known: set[str],
) -> Webhook | None:
    if isinstance(raw, str):
        raw = {"url": raw}
    if not isinstance(raw, dict):
        c.add(where, "a webhook is a URL or {url: ..., secret_env: ...}", parent, key)
        return None
    if isinstance(raw, LocatedDict):
        c.unknown_keys(raw, known, where)
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        c.add(f"{where}.url", f"'url' must be an http(s) URL, got {url!r}", parent, key)
        return None
    secret = raw.get("secret_env")
    if secret is not None and (not isinstance(secret, str) or not SECRET_ENV_RE.match(secret)):
        c.add(
            f"{where}.secret_env",
            f"'secret_env' must name an environment variable (UPPER_SNAKE), got {secret!r}",
            parent,
            key,
        )
        return None
    name = raw.get("name", default_name)
    if "name" in raw and (not isinstance(name, str) or not HOOK_NAME_RE.match(name)):
        c.add(
            f"{where}.name",
            f"'name' must be letters, digits, '_', '.' or '-' (at most 48), got {name!r}",
            parent,
            key,
        )
        return None
    return Webhook(url, secret, name)


def _parse_retrain(c: Problems, section: LocatedDict) -> Retrain | None:
    node = section.get("retrain")
    if node is None:
        return None
    where = "monitoring.retrain"
    if not isinstance(node, LocatedDict):
        c.add(where, "'retrain' must be a mapping with webhook and/or command", section)
        return None
    c.unknown_keys(node, _RETRAIN_KEYS, where)
    hook = None
    if "webhook" in node:
        raw_hook = node["webhook"]
        hook = _parse_hook(
            c, raw_hook, f"{where}.webhook", node, "webhook", RETRAIN_WEBHOOK, _RETRAIN_HOOK_KEYS
        )
    command = node.get("command", [])
    if not isinstance(command, list) or not all(isinstance(p, str) and p for p in command):
        c.add(
            f"{where}.command",
            "'command' must be a list of words (argv), e.g. [python, retrain.py]",
            node,
            "command",
        )
        command = []
    if hook is None and not command:
        c.add(where, "'retrain' needs a webhook or a command", section, "retrain")
        return None
    return Retrain(hook, tuple(command))


def _parse_governor(
    c: Problems, section: LocatedDict, checks: dict[str, Check], retrain: Retrain | None
) -> tuple[Rule, ...]:
    node = section.get("governor")
    if node is None:
        return ()
    if not isinstance(node, list):
        c.add("monitoring.governor", "'governor' must be a list of rules", section, "governor")
        return ()
    rules = []
    levels = [a.value for a in Autonomy]
    for i, raw in enumerate(node):
        where = f"monitoring.governor[{i}]"
        if not isinstance(raw, LocatedDict):
            c.add(where, "a rule is {when: {alarm, severity}, do: ACTION}", section, "governor")
            continue
        c.unknown_keys(raw, _RULE_KEYS, where)
        action = raw.get("do")
        if action not in ACTIONS:
            c.add(f"{where}.do", f"'do' must be one of {', '.join(ACTIONS)}", raw, "do")
            continue
        when = raw.get("when", LocatedDict())
        if not isinstance(when, LocatedDict):
            c.add(f"{where}.when", "'when' must be a mapping: {alarm, severity}", raw, "when")
            continue
        c.unknown_keys(when, _WHEN_KEYS, f"{where}.when")
        alarms = when.get("alarm", [])
        alarms = [alarms] if isinstance(alarms, str) else alarms
        if not isinstance(alarms, list) or not all(a in MONITORS for a in alarms):
            c.add(
                f"{where}.when.alarm",
                f"'alarm' must name monitors from {', '.join(MONITORS)}, got {alarms!r}",
                when,
                "alarm",
            )
            continue
        unwatched = [a for a in alarms if a not in checks]
        if unwatched:
            c.add(
                f"{where}.when.alarm",
                f"{', '.join(unwatched)} is not watched (it has no limit, or its limit is "
                "false): this rule could never fire",
                when,
                "alarm",
            )
        severity = _severity(c, when, f"{where}.when", default="info")
        level = raw.get("to")
        if action == "lower_autonomy":
            if level not in levels[:-1]:
                c.add(
                    f"{where}.to",
                    f"lower_autonomy needs 'to': one of {', '.join(levels[:-1])}",
                    raw,
                    "to",
                )
                continue
        elif level is not None:
            c.add(f"{where}.to", f"'to' belongs to lower_autonomy, not {action}", raw, "to")
            continue
        if action == "retrain" and retrain is None:
            c.add(
                f"{where}.do",
                "a retrain rule needs a 'retrain' section (webhook or command)",
                raw,
                "do",
            )
        rules.append(Rule(str(action), tuple(alarms), str(severity), level))
    return tuple(rules)
