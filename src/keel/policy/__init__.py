"""Policies: a flow's decision logic as data — parameters, CEL rules, guardrails, fallback."""

from keel.policy.compiler import CompiledPolicy, compile_policy
from keel.policy.model import Policy, load_policy, parse_policy

__all__ = ["CompiledPolicy", "Policy", "compile_policy", "load_policy", "parse_policy"]
