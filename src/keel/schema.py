"""Described keys: what each key of ``keel.yaml``, a flow file and a policy file means.

Each file kind has one tuple of ``Key`` — ``keel.config.SETTINGS_KEYS``,
``keel.flows.schema.FLOW_KEYS``, ``keel.policy.schema.POLICY_KEYS``. Its parser takes the
keys it accepts from that tuple (``children``), and ``python -m keel.docs`` writes the
reference pages from it, so a key is accepted exactly when it is described.

A path names a key by where it sits: ``api.rate_per_s``; ``inputs.<name>.type`` for a key
under a name the file chooses (the placeholder is in angle brackets); and
``guardrails.bounds[].on_hit`` for a key of each item of a list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    """One key of a file: where it sits, what it holds and what it does.

    ``default`` is shown as written in the file ("" when there is none); ``values`` is the
    closed set of values the key takes, if it has one; ``env`` names the environment
    variable that overrides it (settings only).
    """

    path: str
    type: str
    about: str
    default: str = ""
    required: bool = False
    values: tuple[str, ...] = ()
    env: str = ""

    @property
    def parent(self) -> str:
        """The path of the mapping this key sits in ('' for the top level)."""
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        """The key as written in the file (a placeholder such as ``<name>`` when free)."""
        return self.path.rpartition(".")[2]

    @property
    def free(self) -> bool:
        """Whether the file chooses this key's name (``inputs.<name>``)."""
        return self.name.startswith("<")


def children(keys: Iterable[Key], parent: str) -> set[str]:
    """The names accepted directly under ``parent`` ('' for the top level); a free name's
    closed ``values`` (``earned_autonomy.<level>``) count as names."""
    found: set[str] = set()
    for key in keys:
        if key.parent != parent:
            continue
        if key.free:
            found.update(key.values)
        else:
            found.add(key.name)
    return found
