"""What identifiers and free text may hold, checked where they enter Keel.

An identifier (a subject id, a filter value) holds printable characters and plain spaces
only. Free text (a reason, a string input) may also hold line breaks and tabs. Everything
else a terminal or a log would act on — control characters (NUL, BEL, ESC…), bidirectional
overrides and other invisible format characters, unassigned and private code points, lone
surrogates — is refused with an ``InputError`` naming the field and the character, so it
never reaches the ledger, the CLI or the logs. ``escape`` writes any such character that
is already stored (an old record) as ``\\uXXXX`` for display.
"""

from __future__ import annotations

import unicodedata

from keel.errors import InputError

_REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # control, format, surrogate, private…
_FREE_TEXT_EXTRA = frozenset("\n\t")


def _unsafe(text: str, allowed: frozenset[str]) -> str | None:
    for ch in text:
        if ch not in allowed and unicodedata.category(ch) in _REFUSED:
            return ch
    return None


def _refuse(field: str, what: str, ch: str) -> InputError:
    name = unicodedata.name(ch, "")
    shown = f"U+{ord(ch):04X}" + (f" {name}" if name else "")
    return InputError(
        f"{field} holds a character {what} may not hold ({shown}): use printable text",
        {"field": field},
    )


def identifier(value: str, field: str) -> str:
    """``value`` if it holds only printable characters and spaces; ``InputError`` otherwise."""
    ch = _unsafe(value, frozenset())
    if ch is not None:
        raise _refuse(field, "an identifier", ch)
    return value


def free_text(value: str, field: str) -> str:
    """``value`` if it holds only printable characters, spaces, line breaks and tabs."""
    ch = _unsafe(value, _FREE_TEXT_EXTRA)
    if ch is not None:
        raise _refuse(field, "text", ch)
    return value


def problem(value: str, field: str) -> str | None:
    """The refusal message for a free-text value, or None when it is fine (for checks that
    gather every problem before raising)."""
    ch = _unsafe(value, _FREE_TEXT_EXTRA)
    return None if ch is None else _refuse(field, "text", ch).message


def escape(text: str) -> str:
    """``text`` with every character ``free_text`` refuses written as ``\\uXXXX``."""
    if _unsafe(text, _FREE_TEXT_EXTRA) is None:
        return text
    return "".join(
        f"\\u{ord(ch):04x}"
        if ch not in _FREE_TEXT_EXTRA and unicodedata.category(ch) in _REFUSED
        else ch
        for ch in text
    )


# Words that start with a vowel letter but a consonant sound, so they take "a".
_A_BEFORE = ("one", "uni", "use", "usa", "url", "uuid", "eu")


def article(word: str) -> str:
    """``word`` with the indefinite article it takes in a message: "an integer", "a number",
    "an outcome entry" — for messages that name a type or kind held in a variable."""
    lower = word.lower()
    vowel = lower[:1] in ("a", "e", "i", "o", "u") and not lower.startswith(_A_BEFORE)
    return f"{'an' if vowel else 'a'} {word}"
