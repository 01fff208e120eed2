"""Synthetic credit applicants: a documented, seeded generator.

Each applicant has (distributions chosen to resemble consumer-credit portfolios):

- ``annual_income``: log-normal, median about 52,000, clipped to 8,000..600,000;
- ``employment_years``: gamma(2, 3), clipped to 0..45;
- ``debt_to_income``: beta(2.2, 6) — monthly debt payments over monthly income, 0..1.2;
- ``credit_utilization``: beta(1.6, 3.2) — share of existing revolving limits in use;
- ``delinquencies_2y``: Poisson with a rate that rises with utilisation, 0..12;
- ``credit_history_years``: correlated with employment, 0..50;
- ``requested_limit``: log-normal around 15% of income, rounded to 100, 500..60,000;
- ``region``: north, south, east, west (35/25/25/15%).

The default outcome (``defaulted``, 1 = defaulted within 24 months) is drawn from a logistic
model of these features — higher debt-to-income, utilisation and delinquencies raise the
risk; income, employment and history lower it — so a model can learn a real signal and
the explanations have something true to say. Same seed, same applicants.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FEATURES = (
    "annual_income",
    "debt_to_income",
    "credit_utilization",
    "delinquencies_2y",
    "credit_history_years",
    "employment_years",
)
REGIONS = ("north", "south", "east", "west")


def generate_applicants(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` applicants with their ``defaulted`` outcome, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    income = np.clip(rng.lognormal(math.log(52_000), 0.55, n), 8_000, 600_000)
    employment = np.clip(rng.gamma(2.0, 3.0, n), 0, 45)
    dti = np.clip(rng.beta(2.2, 6.0, n) * 1.1, 0, 1.2)
    utilization = rng.beta(1.6, 3.2, n)
    delinquencies = np.clip(rng.poisson(0.15 + 1.2 * utilization**2, n), 0, 12)
    history = np.clip(employment * 0.8 + rng.gamma(2.0, 2.5, n), 0, 50)
    requested = np.clip(
        np.round(income * rng.lognormal(math.log(0.15), 0.5, n) / 100) * 100, 500, 60_000
    )
    region = rng.choice(REGIONS, n, p=[0.35, 0.25, 0.25, 0.15])
    margin = (
        -2.6
        + 4.2 * dti
        + 2.4 * utilization
        + 0.55 * delinquencies
        - 0.045 * history
        - 0.03 * employment
        - 0.6 * np.log(income / 52_000)
    )
    defaulted = rng.random(n) < 1 / (1 + np.exp(-margin))
    out = []
    for i in range(n):
        out.append(
            {
                "annual_income": round(float(income[i]), 2),
                "debt_to_income": round(float(dti[i]), 4),
                "credit_utilization": round(float(utilization[i]), 4),
                "delinquencies_2y": int(delinquencies[i]),
                "credit_history_years": round(float(history[i]), 1),
                "employment_years": round(float(employment[i]), 1),
                "requested_limit": float(requested[i]),
                "region": str(region[i]),
                "defaulted": int(defaulted[i]),
            }
        )
    return out


def case_inputs(applicant: dict[str, Any]) -> dict[str, Any]:
    """The inputs a decision request carries (the outcome is not known at decision time)."""
    return {k: v for k, v in applicant.items() if k != "defaulted"}


def train_risk_model(applicants: list[dict[str, Any]]) -> Any:
    """A standardised logistic regression of default on the features, as lenders use."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - keel[sklearn]
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    x = np.array([[a[f] for f in FEATURES] for a in applicants], dtype=float)
    y = np.array([a["defaulted"] for a in applicants])
    model = Pipeline([("scale", StandardScaler()), ("logit", LogisticRegression(max_iter=1000))])
    model.fit(x, y)
    return model
