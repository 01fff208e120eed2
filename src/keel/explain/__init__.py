"""Explanations: why a decision was made, what would change it, and what if."""

from keel.explain.attributions import Attribution, attribute
from keel.explain.counterfactual import (
    Counterfactual,
    CounterfactualSearch,
    NoCounterfactual,
    search_counterfactuals,
)
from keel.explain.narrative import explain_record

__all__ = [
    "Attribution",
    "Counterfactual",
    "CounterfactualSearch",
    "NoCounterfactual",
    "attribute",
    "explain_record",
    "search_counterfactuals",
]
