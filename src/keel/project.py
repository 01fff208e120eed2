"""A Keel project on disk: ``keel.yaml``, ``flows/``, ``policies/``, ``models/``, ``examples/``.

Loading checks every file and reports every problem at once, each with its file and place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keel.config import Settings
from keel.errors import DefinitionError, KeelError, Problem
from keel.flows import Flow, load_flow
from keel.policy.compiler import compile_policy
from keel.policy.model import Policy, load_policy
from keel.runtime import FlowRuntime
from keel.signals.adapters import Model, load_model
from keel.signals.cards import card_problems


@dataclass
class Project:
    settings: Settings
    flows: dict[str, FlowRuntime]


def _yaml_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def load_project(settings: Settings) -> Project:
    """Load, check and compile every flow with its policy and models."""
    problems: list[Problem] = []
    policies: dict[str, Policy] = {}
    for path in _yaml_files(settings.policies_dir):
        try:
            policy = load_policy(path)
        except DefinitionError as exc:
            problems.extend(exc.problems)
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
    for flow in flows.values():
        found = policies.get(flow.policy)
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
        models: dict[str, Model] = {}
        for name, spec in flow.signals.items():
            try:
                models[name] = load_model(spec, settings.project_dir)
            except KeelError as exc:
                line = spec.line_of(str(exc.detail.get("key", "model")))
                problems.append(Problem(flow.source, f"signals.{name}", exc.message, line=line))
            if not spec.model.startswith("python:"):
                model_path = (settings.project_dir / spec.model).resolve()
                problems.extend(card_problems(model_path, flow.source, name, flow.outcome.labels))
        timeouts = {
            name: spec.timeout_ms or settings.model_timeout_ms
            for name, spec in flow.signals.items()
        }
        runtimes[flow.name] = FlowRuntime(flow, compiled, models, timeouts)
    if problems:
        raise DefinitionError(problems)
    return Project(settings, runtimes)
