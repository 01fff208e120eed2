"""Money, numbers and percentages in the flow's locale and currency (Babel): keel.yaml sets
the project's, a flow may set its own, and the defaults (en_US, USD) keep Keel's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keel import open_engine
from keel.config import load_settings
from keel.errors import ConfigError
from keel.money import Money, format_decimal, format_money, format_percent
from keel.policy.text import format_value
from tests.conftest import LOW_RISK, line_of, problems, replace_in
from tests.test_notices import FLOW, FLOW_FILE, declined, with_notices

EURO = Money("de_DE", "EUR")


def test_babel_formats_money_numbers_and_shares_by_locale() -> None:
    assert format_money(14896.0) == "$14,896"  # the default, as Keel always wrote it
    assert format_money(14896.0, EURO) == "14.896\xa0€"
    assert format_money(14896.4, Money("fr_FR", "EUR")) == "14\u202f896\xa0€"
    assert format_money(1500, Money("en_GB", "GBP")) == "£1,500"
    assert format_decimal(7300.25, EURO) == "7.300,25"
    assert format_percent(0.29) == "29%" and format_percent(0.29, EURO) == "29\xa0%"
    assert format_value(14896.0, "currency", EURO) == "14.896\xa0€"  # a no-break space
    assert format_value(2.5, "years", EURO) == "2,5 years"


def test_keel_yaml_sets_the_project_s_locale_and_currency(project: Path) -> None:
    settings = project / "keel.yaml"
    settings.write_text(settings.read_text() + "locale: de_DE\ncurrency: EUR\n")
    case = {**LOW_RISK, "annual_income": 59584.0, "requested_limit": 30000.0}
    with open_engine(with_notices(project), environ={}) as engine:
        decision = engine.decide(FLOW, case)
        why = engine.explain(decision.id)["why"]
        notice, _ = engine.notices.notice(decision.id, engine.operator)
        text = engine.notice(decision.id)
    assert decision.value == 14896.0
    assert "limit of 14.896\xa0€ within 25\xa0% of income" in decision.reason
    assert f"Reason: {decision.reason}" in why
    assert (notice.value, notice.requested) == ("14.896\xa0€", "30.000\xa0€")
    assert "We can offer 14.896\xa0€ instead of the 30.000\xa0€ you asked for." in text
    assert "$" not in text + decision.reason


def test_a_flow_s_own_locale_and_currency_win(project: Path) -> None:
    settings = project / "keel.yaml"
    settings.write_text(settings.read_text() + "locale: de_DE\ncurrency: EUR\n")
    replace_in(project / FLOW_FILE, "policy: credit_limit\n",
               "policy: credit_limit\nlocale: en_GB\ncurrency: GBP\n")  # fmt: skip
    with open_engine(project, environ={}) as engine:
        decision = engine.decide(FLOW, {**LOW_RISK, "requested_limit": 7300.0})
    assert "limit of £7,300 within 25% of income" in decision.reason


def test_default_output_is_unchanged(project: Path) -> None:
    with open_engine(with_notices(project), environ={}) as engine:
        decision = engine.decide(FLOW, declined(project))
        text = engine.notice(decision.id)
    assert "Requested" not in text and "$20,200" not in text  # a decline states no amount
    with open_engine(project, environ={}) as engine:
        approved = engine.decide(FLOW, {**LOW_RISK, "requested_limit": 7300.0})
    assert "limit of $7,300 within 25% of income" in approved.reason


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("locale", "xx_YY", "is not a locale Keel knows"),
        ("locale", "de-DE", "must be a locale such as en_US"),
        ("currency", "EURO", "ISO 4217"),
    ],
)
def test_a_bad_code_in_keel_yaml_is_named_with_its_line(
    project: Path, key: str, value: str, message: str
) -> None:
    settings = project / "keel.yaml"
    settings.write_text(settings.read_text() + f"{key}: {value}\n")
    line = line_of(project, "keel.yaml", f"{key}: ")
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(project, {})
    assert info.value.message.startswith(f"{settings}:{line}: '{key}'")


def test_a_bad_code_in_a_flow_is_named_with_its_line(project: Path) -> None:
    replace_in(project / FLOW_FILE, "policy: credit_limit\n",
               "policy: credit_limit\nlocale: klingon\ncurrency: usd\n")  # fmt: skip
    flow = project / FLOW_FILE
    found = problems(project)
    locale, currency = (
        line_of(project, FLOW_FILE, "locale:"),
        line_of(project, FLOW_FILE, "currency:"),
    )
    assert any(p.startswith(f"{flow}:{locale}:") and "'klingon'" in p for p in found)
    assert any(p.startswith(f"{flow}:{currency}:") and "ISO 4217" in p for p in found)
    assert json.dumps(found).count("locale") >= 1
