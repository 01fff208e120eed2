"""Synthetic applicants shaped like the Statlog German credit data: a seeded generator.

The real data (1,000 applicants, 20 attributes, 13 of them categorical codes such as
``A11``..``A14`` for the checking account) cannot be shipped or downloaded here, so this
generator draws applicants with the same fields, the same codes and roughly the same
category shares. The default outcome (``defaulted``, 1 = the loan went bad) is drawn from a
logistic model of plausible risk drivers — an overdrawn or no checking account, past
payment delays, long and large loans, little savings, short employment — so a model learns
a real signal and its explanations have something true to say. Age, sex and nationality are
generated too, because a credit team records them to check fairness; the outcome does not
depend on them directly, only through employment, which rises with age. Same seed, same
applicants.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Each categorical field: code -> (share of applicants, label, effect on the default log-odds).
CATEGORIES: dict[str, dict[str, tuple[float, str, float]]] = {
    "checking_status": {
        "A11": (0.27, "overdrawn current account (below 0 DM)", 0.9),
        "A12": (0.27, "current account balance under 200 DM", 0.5),
        "A13": (0.06, "current account balance of 200 DM or more", -0.2),
        "A14": (0.40, "no current account", -0.9),
    },
    "credit_history": {
        "A30": (0.04, "no credits taken, or all paid back duly", 0.9),
        "A31": (0.05, "all credits at this bank paid back duly", 0.8),
        "A32": (0.53, "existing credits paid back duly till now", 0.0),
        "A33": (0.09, "delays in paying off in the past", 0.6),
        "A34": (0.29, "critical account, or credits at other banks", -0.6),
    },
    "purpose": {
        "A40": (0.23, "new car", 0.4),
        "A41": (0.10, "used car", -0.7),
        "A42": (0.18, "furniture or equipment", 0.0),
        "A43": (0.28, "radio or television", -0.3),
        "A44": (0.01, "domestic appliances", 0.2),
        "A45": (0.02, "repairs", 0.3),
        "A46": (0.05, "education", 0.6),
        "A48": (0.01, "retraining", -0.5),
        "A49": (0.10, "business", 0.2),
        "A410": (0.02, "other", 0.3),
    },
    "savings": {
        "A61": (0.60, "savings under 100 DM", 0.4),
        "A62": (0.10, "savings of 100 to 500 DM", 0.2),
        "A63": (0.06, "savings of 500 to 1,000 DM", -0.3),
        "A64": (0.05, "savings of 1,000 DM or more", -0.7),
        "A65": (0.19, "no savings account known", -0.4),
    },
    "employment": {
        "A71": (0.06, "unemployed", 0.4),
        "A72": (0.17, "employed under 1 year", 0.5),
        "A73": (0.34, "employed 1 to 4 years", 0.1),
        "A74": (0.17, "employed 4 to 7 years", -0.3),
        "A75": (0.26, "employed 7 years or more", -0.2),
    },
    "other_debtors": {
        "A101": (0.91, "no co-applicant or guarantor", 0.0),
        "A102": (0.04, "a co-applicant", 0.4),
        "A103": (0.05, "a guarantor", -0.6),
    },
    "property": {
        "A121": (0.28, "real estate", -0.4),
        "A122": (0.23, "building society savings or life insurance", 0.0),
        "A123": (0.33, "a car or other property", 0.1),
        "A124": (0.16, "no known property", 0.5),
    },
    "other_installment_plans": {
        "A141": (0.14, "installment plans at other banks", 0.5),
        "A142": (0.05, "installment plans at stores", 0.4),
        "A143": (0.81, "no other installment plans", 0.0),
    },
    "housing": {
        "A151": (0.18, "rents", 0.4),
        "A152": (0.71, "owns a home", -0.2),
        "A153": (0.11, "lives for free", 0.3),
    },
    "job": {
        "A171": (0.02, "unemployed or unskilled, non-resident", 0.0),
        "A172": (0.20, "unskilled, resident", 0.0),
        "A173": (0.63, "skilled employee or official", 0.0),
        "A174": (0.15, "management, self-employed or highly qualified", 0.1),
    },
    "telephone": {
        "A191": (0.60, "no telephone registered", 0.1),
        "A192": (0.40, "a telephone registered", -0.1),
    },
    # Protected: recorded with each case for fairness reports, never read by the model.
    "personal_status_sex": {
        "A91": (0.05, "male, divorced or separated", 0.0),
        "A92": (0.31, "female, divorced, separated or married", 0.0),
        "A93": (0.55, "male, single", 0.0),
        "A94": (0.09, "male, married or widowed", 0.0),
    },
    "foreign_worker": {
        "A201": (0.96, "foreign worker", 0.0),
        "A202": (0.04, "not a foreign worker", 0.0),
    },
}
CATEGORICAL_FEATURES = (
    "checking_status",
    "credit_history",
    "purpose",
    "savings",
    "employment",
    "other_debtors",
    "property",
    "other_installment_plans",
    "housing",
    "job",
    "telephone",
)
NUMERIC_FEATURES = (
    "duration",
    "credit_amount",
    "installment_rate",
    "residence_since",
    "existing_credits",
    "dependents",
)
FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES  # the model's columns, in order
PROTECTED = ("personal_status_sex", "foreign_worker", "age")  # as the flow lists them
# Employment codes, shortest first: drawn by age, so that older applicants have worked longer.
_EMPLOYMENT = ("A71", "A72", "A73", "A74", "A75")


def _draw(rng: np.random.Generator, field: str, n: int) -> np.ndarray:
    codes = CATEGORIES[field]
    shares = np.array([share for share, _, _ in codes.values()])
    return rng.choice(list(codes), n, p=shares / shares.sum())


def _effect(field: str, drawn: np.ndarray) -> np.ndarray:
    return np.array([CATEGORIES[field][code][2] for code in drawn])


def generate_applicants(n: int, seed: int = 1994) -> list[dict[str, Any]]:
    """``n`` applicants with their ``defaulted`` outcome, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    drawn = {field: _draw(rng, field, n) for field in CATEGORIES if field != "employment"}
    age = np.clip(np.round(rng.gamma(6.0, 6.0, n)), 19, 75).astype(int)
    # Years worked grow with age; the code is the band they fall in (A71 none, A75 7+).
    worked = rng.gamma(1.5, 1.0 + (age - 19) / 6.0)
    band = np.digitize(worked, [0.3, 1.0, 4.0, 7.0])
    drawn["employment"] = np.array([_EMPLOYMENT[b] for b in band])
    duration = np.clip(np.round(rng.gamma(3.5, 6.0, n) / 3) * 3, 4, 72).astype(int)
    amount = np.clip(np.round(rng.lognormal(np.log(1600 + 60 * duration), 0.55, n)), 250, 18_424)
    installment_rate = rng.choice([1, 2, 3, 4], n, p=[0.14, 0.23, 0.16, 0.47])
    residence = rng.choice([1, 2, 3, 4], n, p=[0.13, 0.31, 0.15, 0.41])
    existing = rng.choice([1, 2, 3, 4], n, p=[0.63, 0.33, 0.03, 0.01])
    dependents = rng.choice([1, 2], n, p=[0.85, 0.15])
    margin = (
        -1.3
        + 0.035 * (duration - 20)
        + 0.00008 * (amount - 3000)
        + 0.2 * (installment_rate - 3)
        + sum(_effect(field, drawn[field]) for field in CATEGORICAL_FEATURES)
    )
    defaulted = rng.random(n) < 1 / (1 + np.exp(-margin))
    out = []
    for i in range(n):
        applicant: dict[str, Any] = {
            "duration": int(duration[i]),
            "credit_amount": float(amount[i]),
            "installment_rate": int(installment_rate[i]),
            "residence_since": int(residence[i]),
            "existing_credits": int(existing[i]),
            "dependents": int(dependents[i]),
        }
        applicant.update({field: str(drawn[field][i]) for field in CATEGORICAL_FEATURES})
        applicant["personal_status_sex"] = str(drawn["personal_status_sex"][i])
        applicant["age"] = int(age[i])
        applicant["foreign_worker"] = str(drawn["foreign_worker"][i])
        applicant["defaulted"] = int(defaulted[i])
        out.append(applicant)
    return out


def applicant_frame(applicants: list[dict[str, Any]]) -> Any:
    """The model's columns of ``applicants`` as a pandas DataFrame, numbers as float."""
    import pandas as pd  # noqa: PLC0415 - keel[sklearn]

    frame = pd.DataFrame([{f: a[f] for f in FEATURES} for a in applicants], columns=FEATURES)
    return frame.astype({f: float for f in NUMERIC_FEATURES})


def train_credit_model(applicants: list[dict[str, Any]]) -> Any:
    """One-hot categories and standardised numbers into a logistic regression, as a
    ``Pipeline`` fitted on a DataFrame, so it takes the codes as text, as they are recorded."""
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415 - keel[sklearn]
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: PLC0415

    prepare = ColumnTransformer(
        [
            ("numbers", StandardScaler(), list(NUMERIC_FEATURES)),
            ("categories", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_FEATURES)),
        ]
    )
    model = Pipeline([("prepare", prepare), ("logit", LogisticRegression(max_iter=1000))])
    model.fit(applicant_frame(applicants), [a["defaulted"] for a in applicants])
    return model
