"""Numbers, percentages and money as a flow's readers write them: its locale and currency.

A project sets ``locale`` (``en_US``, ``de_DE``…) and ``currency`` (ISO 4217: ``USD``,
``EUR``…) in ``keel.yaml``; a flow may set its own. Babel (the Unicode CLDR data) does the
formatting. Amounts are shown in whole units of the currency, rounded half to even, as
credit limits and incomes are stated: ``$14,896``, ``14.896 €``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babel import Locale

DEFAULT_LOCALE = "en_US"
DEFAULT_CURRENCY = "USD"
_FRACTION = re.compile(r"\.[0#]+")


@dataclass(frozen=True)
class Money:
    """The locale numbers are written in and the currency amounts are in."""

    locale: str = DEFAULT_LOCALE
    currency: str = DEFAULT_CURRENCY


DEFAULT_MONEY = Money()


def locale_problem(code: object) -> str | None:
    """Why ``code`` is not a locale Keel can format for, or None when it is."""
    from babel import Locale, UnknownLocaleError  # noqa: PLC0415 - babel loads only to format

    if not isinstance(code, str) or not re.fullmatch(r"[a-z]{2,3}(_[A-Za-z0-9]+)*", code):
        return f"'locale' must be a locale such as en_US or de_DE, got {code!r}"
    try:
        Locale.parse(code)
    except (UnknownLocaleError, ValueError):
        return f"'locale' {code!r} is not a locale Keel knows (e.g. en_US, de_DE, fr_FR)"
    return None


def currency_problem(code: object) -> str | None:
    """Why ``code`` is not an ISO 4217 currency code, or None when it is."""
    from babel.numbers import list_currencies  # noqa: PLC0415

    if not isinstance(code, str) or code not in list_currencies():
        return f"'currency' must be an ISO 4217 currency code such as USD or EUR, got {code!r}"
    return None


@lru_cache(maxsize=64)
def _locale(code: str) -> Locale:
    from babel import Locale  # noqa: PLC0415

    return Locale.parse(code)


@lru_cache(maxsize=64)
def _whole_currency_pattern(code: str) -> str:
    """The locale's standard currency pattern without its fraction digits."""
    pattern = _locale(code).currency_formats["standard"].pattern
    return _FRACTION.sub("", pattern)


def format_money(value: float, money: Money = DEFAULT_MONEY) -> str:
    """``value`` in whole units of the currency: ``$14,896``, ``14.896 €``."""
    from babel.numbers import format_currency  # noqa: PLC0415

    return format_currency(
        value,
        money.currency,
        format=_whole_currency_pattern(money.locale),
        locale=_locale(money.locale),
        currency_digits=False,
    )


def format_decimal(value: float, money: Money = DEFAULT_MONEY, digits: int = 2) -> str:
    """``value`` with grouping and at most ``digits`` decimals: ``7,300.25``, ``7.300,25``."""
    from babel.numbers import format_decimal as babel_decimal  # noqa: PLC0415

    pattern = "#,##0" + ("." + "#" * digits if digits else "")
    return babel_decimal(value, format=pattern, locale=_locale(money.locale))


def format_fixed(value: float, money: Money = DEFAULT_MONEY, digits: int = 2) -> str:
    """``value`` with grouping and exactly ``digits`` decimals: ``27,000.00``,
    ``27.000,00``, for figures compared with a limit, where ``27,000`` would hide a cent."""
    from babel.numbers import format_decimal as babel_decimal  # noqa: PLC0415

    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return babel_decimal(value, format=pattern, locale=_locale(money.locale))


def format_percent(share: float, money: Money = DEFAULT_MONEY) -> str:
    """A share as a whole percentage: ``9%`` (en_US), ``9 %`` (de_DE)."""
    from babel.numbers import format_percent as babel_percent  # noqa: PLC0415

    return babel_percent(share, locale=_locale(money.locale))
