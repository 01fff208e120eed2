"""Persons: who is behind a credential, for separation of duties.

Four eyes means two people, not two credentials. Every principal names the person behind
it (``Principal.person``):

- an API key: its owner (``keel keys create --owner``; a key created without one answers
  for itself under its name);
- an OIDC token: the claim ``oidc.person_claim`` names (``email`` by default), or
  ``oidc:<issuer>#<subject>`` when the token carries no such claim;
- the CLI operator: every OS user of the project's machine is the one person
  ``local-operator``; an operator who needs to act as a second person does so through an
  API key (``KEEL_API_KEY``).

Persons are compared as :func:`person_of` normalises them (Unicode NFKC, case-folded,
inner whitespace collapsed), so ``Alice@Example.com`` on a key and ``alice@example.com`` in
a token are one person. Whoever proposed, requested, decided or set a hold may not approve,
review, override or resolve it (:func:`refuse_same_person`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from keel.errors import ConflictError, KeelError

LOCAL_OPERATOR = "local-operator"  # every OS user acting through the CLI or keel.open
FOUR_EYES = "four_eyes"  # the rule a refusal names, in its message and detail


def person_of(text: str) -> str:
    """The person ``text`` names, normalised for comparison; an empty name is refused."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    if not folded:
        raise KeelError("a person needs a name (a key's owner, a token's claim)", {"person": text})
    return folded


def refuse_same_person(
    person: str,
    ident: str,
    earlier: Iterable[str | None],
    message: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """``ConflictError`` (409) naming the four-eyes rule when the caller (``person``,
    through the principal ``ident``) took the earlier step. ``earlier`` holds the persons
    who took it; a row written before persons were kept holds a principal id instead, which
    is compared with ``ident``. ``message`` says which step, for instance "the person who
    proposed change X (alice) cannot approve it"."""
    taken = [p for p in earlier if p]
    if person in {person_of(p) for p in taken} or ident in taken:
        raise ConflictError(
            f"four eyes: {message}", {**(detail or {}), "rule": FOUR_EYES, "person": person}
        )
