"""Every key of a flow file, described: ``keel.flows.parse`` accepts exactly these, and the
reference page ``docs/reference/flows.md`` is written from them. The ``monitoring:``
section's keys sit beside their parser, in ``keel.flows.monitoring``."""

from __future__ import annotations

from keel.flows.autonomy import Autonomy
from keel.flows.flow import FIELD_TYPES, FORMATS, SATURATION, Classification
from keel.flows.monitoring import MONITORING_KEYS
from keel.flows.notice import NOTICE_KEYS
from keel.schema import Key

_LEVELS = tuple(a.value for a in Autonomy)
_NAME = "string (lower_snake_case)"
_DURATION = "duration (30m, 4h, 2d)"
_SHARE = "number from 0 to 1"
_COUNT = "integer ≥ 0"

FLOW_KEYS: tuple[Key, ...] = (
    Key("flow", _NAME, "The flow's name: decisions, reviews, the CLI and the API name the "
        "flow by it.", required=True),
    Key("description", "string", "What the flow decides, in a sentence."),
    Key("owner", "mapping", "The one person accountable for the flow's decisions.",
        required=True),
    Key("owner.name", "string", "The owner's name (and role).", required=True),
    Key("owner.email", "string (an email address)", "The owner's email address.",
        required=True),
    Key("policy", _NAME, "The policy that decides: the name of a policy in `policies/`.",
        required=True),
    Key("autonomy", "string",
        "The level the flow starts at: `shadow` decides and acts on nothing, `advisory` "
        "recommends, `supervised` acts inside the bounds and escalates grey zones, "
        "`autonomous` acts and escalates only guardrail hits. After the first start the "
        "store's level is in force.", default="supervised", values=_LEVELS),
    Key("reviewers", "list of strings",
        "Who reviews the flow's cases, as names or groups, for people reading the flow. "
        "Who may review is decided by roles, not by this list."),
    Key("inputs", "mapping", "The input schema: every field a case carries. A case with a "
        "missing, unknown, mistyped or out-of-range field is refused, every problem named.",
        required=True),
    Key("inputs.<name>", "mapping", "One input field; its name is lower_snake_case."),
    Key("inputs.<name>.type", "string", "The field's type.", required=True,
        values=FIELD_TYPES),
    Key("inputs.<name>.required", "boolean", "Whether a case must carry the field. A "
        "required field sent as `null` is refused (\"is null; a value is required\"); an "
        "optional field sent as `null` is taken as absent.", default="true"),
    Key("inputs.<name>.min", "number", "The least value a number field may take."),
    Key("inputs.<name>.max", "number", "The greatest value a number field may take."),
    Key("inputs.<name>.allowed", "list", "The only values the field may take (not empty)."),
    Key("inputs.<name>.classification", "string",
        "How sensitive the values are: `personal` and `sensitive` values are encrypted at "
        "rest and never logged.", default=Classification.INTERNAL.value,
        values=tuple(c.value for c in Classification)),
    Key("inputs.<name>.labels", "mapping",
        "A display label for each allowed value, e.g. `A11: \"no checking account\"`. "
        "Explanations, notices and reports show the label; cases carry the value. Needs "
        "`allowed`; every key must be an allowed value."),
    Key("inputs.<name>.labels.<value>", "string", "The value's display label."),
    Key("inputs.<name>.protected", "boolean",
        "A characteristic the law protects (age, sex, nationality…). It is never given as a "
        "reason for a decision; fairness figures are reported per its groups; `keel "
        "validate` warns when a model reads it. A protected field may be recorded without "
        "being a model feature.", default="false"),
    Key("inputs.<name>.groups", "list of numbers",
        "A protected number or integer field's group edges for the fairness figures, "
        "ascending: `[25, 40, 60]` makes the groups under 25, 25 to under 40, 40 to under "
        "60, and 60 or over. A protected number field needs `groups` or `allowed`; only "
        "protected fields take it."),
    Key("inputs.<name>.notice_reason", "string",
        "How an adverse-action notice states the field as a reason, in the applicant's "
        "words, e.g. `Length of employment`. Left out: the field's label. Never stated for a "
        "`protected` or `sensitive` field."),
    Key("inputs.<name>.label", "string",
        "The field's name in explanations. Left out: the name, capitalised, with spaces."),
    Key("inputs.<name>.format", "string",
        "How explanations and reason templates show the value.",
        default="`number` for number and integer fields, else `text`", values=FORMATS),
    Key("inputs.<name>.actionable", "boolean",
        "Whether counterfactual search may change the field to find what would change the "
        "decision. Only number and integer fields with `min` and `max`: a counterfactual's "
        "`cost` is its change as a share of `max - min`, summed over the fields changed.",
        default="false"),
    Key("inputs.<name>.direction", "string",
        "The only way counterfactual search may change an actionable field. Left out: "
        "either way.", values=("increase", "decrease")),
    Key("signals", "mapping", "The models the flow consults, each giving a signal the "
        "policy reads as `signals.<name>`."),
    Key("signals.<name>", "mapping", "One signal; its name is lower_snake_case."),
    Key("signals.<name>.model", "string",
        "The model: a file in `models/` (`.skops`, `.joblib`, `.onnx`) or a Python function, "
        "`python:module:function` or `python:file.py:function`.", required=True),
    Key("signals.<name>.output", "string",
        "What the model gives: a class `probability` (the score is the positive class's), a "
        "`score`, or a `label`.", default="probability",
        values=("probability", "score", "label")),
    Key("signals.<name>.features", "list of strings",
        "The input fields the model takes, in order: number, integer and boolean fields, and "
        "string fields with `allowed` values (categorical features, given to the model as "
        "text).", default="[]"),
    Key("signals.<name>.timeout_ms", "integer > 0",
        "How long a call may take, in milliseconds; a call that takes longer gives no "
        "signal, and the fallback decides.", default="`models.default_timeout_ms` in keel.yaml"),
    Key("signals.<name>.label", "string",
        "The signal's name in explanations. Left out: the name, with spaces."),
    Key("signals.<name>.reference", "mapping",
        "A baseline case for linear attributions: a value for every feature."),
    Key("signals.<name>.reference.<feature>", "number or string",
        "The feature's baseline value: a number, or one of a string feature's allowed "
        "values."),
    Key("signals.<name>.positive_class", "any",
        "The class whose probability is the score. Left out: the model's last class."),
    Key("outcome", "string or mapping",
        "What counts as the flow's outcome. A string describes it; a mapping also names the "
        "labels that outcome reports may use."),
    Key("outcome.description", "string", "What the outcome is, in a sentence."),
    Key("outcome.labels", "mapping",
        "Each label an outcome report may use, with the action that would have been right "
        "for it. Required when `outcome` is a mapping.", required=True),
    Key("outcome.labels.<label>", "string or null",
        "The action this outcome calls right (trust metrics compare it with the action "
        "taken); null: the label does not judge the action."),
    Key("outcome.value", "string", "What a reported value means, e.g. `amount written off, "
        "in EUR`."),
    Key("outcome.positive", "list of strings",
        "The labels of the bad event a model predicts, e.g. `[defaulted, charged_off]`: the "
        "positive class of model performance figures (AUC, KS, Brier score, bad rates), the "
        "bad rate of replay's approval-rate against bad-rate trade-off, and the outcome "
        "fairness figures (true and false positive rates per group). Each must be a label. "
        "Left out: none of these figures."),
    Key("outcome.negative", "list of strings",
        "The labels that count as good outcomes; a label in neither list is left out of "
        "performance figures (e.g. `withdrawn`). Needs `positive`.",
        default="every label not in `positive`"),
    Key("outcome.signal", _NAME,
        "The signal whose score predicts the positive labels: the higher the score, the "
        "likelier the bad event. Needs `positive`. A `probability` signal also gets a Brier "
        "score and a calibration table.",
        default="the flow's only `probability` signal; without one, its only `score` signal"),
    Key("review", "mapping", "How the flow's review queue works."),
    Key("review.deadline", _DURATION,
        "Open reviews past this age are overdue; a breach is recorded once. Left out: no "
        "deadline."),
    Key("review.four_eyes", "boolean",
        "Whoever requested a decision can neither claim nor review it.", default="false"),
    Key("review.capacity", "mapping",
        "How many reviews the reviewers can take per period, and what happens beyond. Left "
        "out: reviews are never refused for lack of people."),
    Key("review.capacity.max_reviews", "integer ≥ 1", "Reviews opened per period.",
        required=True),
    Key("review.capacity.per", _DURATION, "The sliding period.", required=True),
    Key("review.capacity.when_saturated", "string",
        "Beyond capacity, `fallback` decides the case with the policy's fallback, final; "
        "`pause` records it `deferred`, nothing acted on or queued, for the caller to try "
        "again later.", default=SATURATION[0], values=SATURATION),
    Key("earned_autonomy", "mapping",
        "What raising the flow to each level takes. A level not listed cannot be reached by "
        "a raise; lowering is always allowed."),
    Key("earned_autonomy.<level>", "mapping",
        "The evidence the flow must show, over the trailing window, to be raised to this "
        "level.", values=_LEVELS[1:]),
    Key("earned_autonomy.<level>.over", _DURATION, "The trailing window judged.",
        required=True),
    Key("earned_autonomy.<level>.min_reviewed", _COUNT, "Resolved reviews needed.",
        default="0"),
    Key("earned_autonomy.<level>.min_agreement", _SHARE,
        "The least share of resolved reviews that approved what the policy proposed."),
    Key("earned_autonomy.<level>.max_guardrail_hits", _COUNT,
        "The most decisions with guardrail hits allowed."),
    Key("earned_autonomy.<level>.min_outcome_accuracy", _SHARE,
        "The least share of decisions whose action is the one the reported outcome calls "
        "right, among those whose action was in force (not an unresolved review, an "
        "advisory, shadow or deferred case)."),
    Key("earned_autonomy.<level>.min_outcomes", _COUNT,
        "Reported outcomes needed, of decisions whose action was in force.", default="0"),
    Key("fairness", "mapping",
        "What the fairness figures per protected attribute count (`keel report fairness`, "
        "replay and shadow reports, the `fairness` monitor)."),
    Key("fairness.favourable", "list of strings",
        "The actions favourable to the person decided on, e.g. `[approve]`: the selection "
        "rate is the share of decisions whose action in force is one of them. Each must be "
        "an action of the flow's policy.",
        required=True),
    Key("fairness.score", _NAME,
        "The signal whose score is checked for calibration within each group. Left out: "
        "the flow's only signal (none when it has several)."),
    Key("locale", "string",
        "The locale the flow's explanations, reasons and notices write numbers in, e.g. "
        "`de_DE`. Left out: `locale` in keel.yaml."),
    Key("currency", "string (ISO 4217)",
        "The currency of the flow's `currency` values, e.g. `EUR`. Left out: `currency` in "
        "keel.yaml."),
    *NOTICE_KEYS,
    *MONITORING_KEYS,
)  # fmt: skip
