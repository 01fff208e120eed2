"""A Keel project on disk: ``keel.yaml``, ``flows/``, ``policies/``, ``models/``, ``examples/``.

Loading checks every file and reports every problem at once, each with its file and place.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from keel.config import Settings
from keel.errors import DefinitionError, KeelError, Problem
from keel.explain.notice import check_templates
from keel.flows import Classification, Flow, load_flow
from keel.money import Money
from keel.policy.compiler import compile_policy
from keel.policy.model import Policy, load_policy
from keel.runtime import FlowRuntime
from keel.signals.adapters import Model
from keel.signals.cards import card_problems
from keel.signals.loading import describe_model, load_model


@dataclass
class Project:
    settings: Settings
    flows: dict[str, FlowRuntime]
    # What is allowed but probably wrong (a model reading a protected field, an adverse
    # rule without notice text): printed by ``keel validate``, an error only with
    # ``--strict``.
    warnings: list[Problem] = field(default_factory=list)


def feature_warnings(flow: Flow) -> list[Problem]:
    """A protected or sensitive field read by a model: allowed (the law may permit it, or
    it may be the point of a test), but worth a second look; it is never a stated reason."""
    out = []
    for name, signal in flow.signals.items():
        for feature in signal.features:
            spec = flow.fields.get(feature)
            if spec is None or not spec.never_a_reason:
                continue
            what = "protected" if spec.protected else f"classified {Classification.SENSITIVE.value}"
            out.append(
                Problem(
                    flow.source,
                    f"signals.{name}",
                    f"the model reads '{feature}', which is {what}: check that the law "
                    "allows its use; notices never state it as a reason",
                    line=signal.line_of("features"),
                )
            )
    return out


def rule_warnings(flow: Flow, policy: Policy) -> list[Problem]:
    """A rule whose condition reads a protected field decides on a characteristic the law
    protects (disparate treatment): allowed where the law allows it, but worth a second
    look. Its notices never state the field; the rule's own ``notice`` is all they say."""
    out = []
    for rule in policy.rules:
        for name in rule.inputs_read:
            spec = flow.fields.get(name)
            if spec is not None and spec.protected:
                out.append(
                    Problem(
                        policy.source,
                        f"rule '{rule.name}'",
                        f"its condition reads '{name}', which flow {flow.name} marks "
                        "protected: the rule decides on a protected characteristic; check "
                        "that the law allows it (notices never state the field)",
                        line=rule.when_line or rule.line,
                    )
                )
    return out


def notice_warnings(flow: Flow, policy: Policy) -> list[Problem]:
    """A rule (or the default) whose action is adverse but which has no ``notice``: allowed,
    but the notices of the decisions it makes would state only the model's reasons, not
    what decided."""
    if flow.notice is None:
        return []
    adverse = flow.notice.adverse_actions
    silent = [(f"rule '{r.name}'", r.action, r.line) for r in policy.rules
              if r.action in adverse and not r.notice]  # fmt: skip
    if policy.default.action in adverse and not policy.default.notice:
        silent.append(("default", policy.default.action, None))
    return [
        Problem(
            policy.source,
            where,
            f"its action '{action}' is one of flow {flow.name}'s notice.adverse_actions but it "
            "has no 'notice': the notices of its decisions would state only the model's "
            "reasons; add a 'notice' in the applicant's words",
            line=line,
        )
        for where, action, line in silent
    ]


def _notice_problems(flow: Flow, policy: Policy) -> list[Problem]:
    if flow.notice is None:
        return []
    return [
        Problem(
            flow.source,
            "notice.adverse_actions",
            f"'{action}' is not an action of policy {policy.name} ({', '.join(policy.actions)})",
            line=flow.notice.line,
        )
        for action in flow.notice.adverse_actions
        if action not in policy.actions
    ]


def _yaml_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


_POLICY_NAME_RE = re.compile(r"^policy:\s*[\"']?([A-Za-z0-9_]+)", re.MULTILINE)


def _declared_names(path: Path) -> set[str]:
    """The names a policy file that failed to load may go by: its file name, and the name
    its ``policy:`` line gives even when the rest of the file does not parse."""
    names = {path.stem}
    # If the file cannot be read at all, the load already said so.
    with contextlib.suppress(OSError, UnicodeDecodeError):
        names.update(_POLICY_NAME_RE.findall(path.read_text(encoding="utf-8")))
    return names


def load_project(settings: Settings, load_models: bool = False) -> Project:
    """Load, check and compile every flow with its policy, and describe its models: each
    model file must exist and is hashed now (its version), but is deserialised on first use
    (see signals/loading.py). ``load_models`` loads every model now, so ``keel validate``
    reports a corrupt or untrusted file with its flow and line."""
    open_model = load_model if load_models else describe_model
    problems: list[Problem] = []
    policies: dict[str, Policy] = {}
    broken: set[str] = set()  # names of policies whose own problems are already reported
    for path in _yaml_files(settings.policies_dir):
        try:
            policy = load_policy(path)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            broken.update(_declared_names(path))
            continue
        if policy.name in policies:
            other = policies[policy.name].source
            problems.append(
                Problem(str(path), "policy", f"policy '{policy.name}' is also in {other}")
            )
            continue
        policies[policy.name] = policy
    flows: dict[str, Flow] = {}
    for path in _yaml_files(settings.flows_dir):
        try:
            flow = load_flow(path)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        flow = replace(
            flow,
            money=Money(
                flow.locale or settings.money.locale, flow.currency or settings.money.currency
            ),
        )
        if flow.name in flows:
            problems.append(
                Problem(
                    str(path), "flow", f"flow '{flow.name}' is also in {flows[flow.name].source}"
                )
            )
            continue
        flows[flow.name] = flow
    if not flows and not problems:
        problems.append(Problem(str(settings.flows_dir), "flows", "the project defines no flow"))
    runtimes: dict[str, FlowRuntime] = {}
    warnings: list[Problem] = []
    for flow in flows.values():
        warnings.extend(feature_warnings(flow))
        problems.extend(check_templates(settings.project_dir, flow))
        found = policies.get(flow.policy)
        if found is None and flow.policy in broken:
            continue  # the policy file's own problems say what to fix; "no policy" would mislead
        if found is None:
            known = ", ".join(sorted(policies)) or "none"
            problems.append(
                Problem(flow.source, "policy", f"no policy named '{flow.policy}' (known: {known})")
            )
            continue
        try:
            compiled = compile_policy(found, flow)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(_notice_problems(flow, found))
        warnings.extend(notice_warnings(flow, found))
        warnings.extend(rule_warnings(flow, found))
        for label, action in flow.outcome.labels.items():
            if action is not None and action not in found.actions:
                problems.append(
                    Problem(
                        flow.source,
                        f"outcome.labels.{label}",
                        f"'{action}' is not an action of policy {found.name} "
                        f"({', '.join(found.actions)})",
                    )
                )
        for action in flow.fairness.favourable:
            if action not in found.actions:
                problems.append(
                    Problem(
                        flow.source,
                        "fairness.favourable",
                        f"'{action}' is not an action of policy {found.name} "
                        f"({', '.join(found.actions)})",
                    )
                )
        models: dict[str, Model] = {}
        for name, spec in flow.signals.items():
            try:
                models[name] = open_model(spec, settings.project_dir)
            except KeelError as exc:
                line = spec.line_of(str(exc.detail.get("key", "model")))
                problems.append(Problem(flow.source, f"signals.{name}", exc.message, line=line))
            if not spec.model.startswith("python:"):
                model_path = (settings.project_dir / spec.model).resolve()
                problems.extend(card_problems(model_path))
        timeouts = {
            name: spec.timeout_ms or settings.model_timeout_ms
            for name, spec in flow.signals.items()
        }
        runtimes[flow.name] = FlowRuntime(flow, compiled, models, timeouts)
    if problems:
        raise DefinitionError(problems)
    return Project(settings, runtimes, warnings)
