"""The benchmark policy's decision logic as a GoRules JDM decision table (first hit).

Same rules, same order, same thresholds as the Keel policy in bench/run.py: one
expression column per rule row (zen evaluates a column without a field as a whole
expression), and outputs for the rule name, the action and the value.
"""

from __future__ import annotations

import json
from typing import Any

P = {
    "min_income": 12000.0,
    "max_delinquencies": 3,
    "max_dti": 0.55,
    "decline_risk": 0.45,
    "review_risk": 0.22,
    "max_utilization": 0.9,
    "min_history_years": 1.0,
    "large_request": 30000.0,
    "limit_share": 0.25,
    "starter_limit": 1000.0,
}
SCORE = "signals.default_risk.score"
CAP = f"min([input.requested_limit, input.annual_income * {P['limit_share']}])"
HALF = f"min([input.requested_limit, input.annual_income * {P['limit_share']} * 0.5])"

RULES = [
    ("income_too_low", f"input.annual_income < {P['min_income']}", "decline", "null"),
    (
        "recent_delinquencies",
        f"input.delinquencies_2y >= {P['max_delinquencies']}",
        "decline",
        "null",
    ),
    ("over_indebted", f"input.debt_to_income > {P['max_dti']}", "decline", "null"),
    ("high_risk", f"{SCORE} >= {P['decline_risk']}", "decline", "null"),
    (
        "maxed_out",
        f"input.credit_utilization > {P['max_utilization']} and {SCORE} >= {P['review_risk']}",
        "refer",
        "null",
    ),
    ("short_employment", f"input.employment_years < 0.25 and {SCORE} >= 0.15", "refer", "null"),
    (
        "thin_file",
        f"input.credit_history_years < {P['min_history_years']}",
        "approve",
        str(P["starter_limit"]),
    ),
    ("grey_zone", f"{SCORE} >= {P['review_risk']}", "approve", HALF),
    ("large_request", f"input.requested_limit > {P['large_request']}", "approve", CAP),
    ("low_risk", f"{SCORE} < {P['review_risk']}", "approve", CAP),
]


def jdm() -> str:
    rules = []
    for i, (name, when, action, value) in enumerate(RULES):
        rules.append(
            {
                "_id": f"r{i}",
                "c": when,
                "o_rule": json.dumps(name),
                "o_action": json.dumps(action),
                "o_value": value,
            }
        )
    table: dict[str, Any] = {
        "id": "table",
        "type": "decisionTableNode",
        "name": "credit_limit",
        "position": {"x": 300, "y": 0},
        "content": {
            "hitPolicy": "first",
            "inputs": [{"id": "c", "name": "condition"}],
            "outputs": [
                {"id": "o_rule", "name": "rule", "field": "rule"},
                {"id": "o_action", "name": "action", "field": "action"},
                {"id": "o_value", "name": "value", "field": "value"},
            ],
            "rules": rules,
        },
    }
    graph = {
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "request", "position": {"x": 0, "y": 0}},
            table,
            {"id": "out", "type": "outputNode", "name": "response", "position": {"x": 600, "y": 0}},
        ],
        "edges": [
            {"id": "e1", "sourceId": "in", "targetId": "table", "type": "edge"},
            {"id": "e2", "sourceId": "table", "targetId": "out", "type": "edge"},
        ],
    }
    return json.dumps(graph)
