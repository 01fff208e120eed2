"""YAML loading that remembers where each key was, so errors can point at a line."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from keel.errors import DefinitionError, Problem

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # flow, policy, field and parameter names
_WINDOW_RE = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class LocatedDict(dict[str, Any]):
    """A mapping from a YAML file that knows the line (1-based) of each of its keys."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}
        self.line: int | None = None

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key, self.line)


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedDict:
    out = LocatedDict()
    out.line = node.start_mark.line + 1
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> LocatedDict:
    """Load a YAML file whose top level is a mapping; errors become ``DefinitionError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError([Problem(str(path), "file", f"cannot be read: {exc}")]) from exc
    return load_yaml_text(text, str(path))


def load_yaml_text(text: str, source: str) -> LocatedDict:
    """Parse YAML text (a file's, or one sent over the API) named ``source`` in errors."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise DefinitionError(
            [
                Problem(
                    source,
                    "file",
                    f"not valid YAML: {exc.problem}",
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                )
            ]
        ) from exc
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem(source, "file", f"not valid YAML: {exc}")]) from exc
    if not isinstance(data, LocatedDict):
        raise DefinitionError([Problem(source, "file", "the top level must be a mapping")])
    return data


def parse_window(text: Any) -> int | None:
    """'90s', '15m', '1h', '7d' → seconds (a window, a deadline, a lifetime)."""
    match = _WINDOW_RE.match(str(text).strip()) if isinstance(text, str | int) else None
    if not match or int(match.group(1)) <= 0:
        return None
    return int(match.group(1)) * _WINDOW_UNITS[match.group(2)]


class Problems:
    """Every problem found in one definition (a flow or policy file, a stored document),
    each with its place and, where known, its line: all reported at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.items: list[Problem] = []
        # (node, known key) for each key reported as a misspelling of a known key: a later
        # problem about that key being absent from that node is the same mistake, not a new one.
        self._misspelt: set[tuple[int, str]] = set()

    def add(
        self,
        where: str,
        message: str,
        node: Any = None,
        key: str = "",
        line: int | None = None,
    ) -> None:
        if key and (id(node), key) in self._misspelt and key not in node:
            return  # already reported as the misspelt key beside it
        if line is None and isinstance(node, LocatedDict):
            line = node.line_of(key)
        self.items.append(Problem(self.path, where, message, line=line))

    def unknown_keys(self, node: LocatedDict, known: set[str], where: str) -> None:
        for key in node:
            if key in known:
                continue
            listing = f"(known: {', '.join(sorted(known))})"
            close = difflib.get_close_matches(str(key), sorted(known - set(node)), n=1)
            if close:
                self.add(where, f"unknown key '{key}': did you mean '{close[0]}'? {listing}",
                         node, key)  # fmt: skip
                self._misspelt.add((id(node), close[0]))
            else:
                self.add(where, f"unknown key '{key}' {listing}", node, key)

    def raise_any(self) -> None:
        """Refuse the definition, naming every problem, if there is one."""
        if self.items:
            raise DefinitionError(self.items)
