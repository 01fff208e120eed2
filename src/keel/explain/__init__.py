"""Explanations: why a decision was made, what would change it, and what if."""

from keel.explain.attributions import Attribution, attribute
from keel.explain.counterfactual import Counterfactual, search_counterfactuals
from keel.explain.narrative import explain_record

__all__ = ["Attribution", "Counterfactual", "attribute", "explain_record", "search_counterfactuals"]
