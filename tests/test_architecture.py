"""The layer rules of DESIGN.md, checked on the source: no import cycles (those under
``TYPE_CHECKING`` and inside functions included), no service that reaches for the engine,
and ledger events built in one place."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import keel
from keel.events import BY_KIND, CATALOGUE, body_keys, catalogue_markdown

SRC = Path(keel.__file__).parent
# and every later service package
SERVICES = (
    "decide", "review", "rollout", "monitor", "models_inventory", "models_report", "knowledge",
)  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = ["keel", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """Every keel module ``path`` imports, wherever the import stands."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from keel.x import y` imports keel.x.y when y is a module, else keel.x.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        yield from (n for n in names if n in MODULES)


def _graph() -> dict[str, set[str]]:
    return {name: set(_imports(path)) - {name} for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_service_imports_the_engine() -> None:
    graph = _graph()
    offenders = {
        name: "keel.engine"
        for name, imported in graph.items()
        if name.split(".")[1:2] and name.split(".")[1] in SERVICES and "keel.engine" in imported
    }
    assert offenders == {}
    assert "keel.engine" not in graph["keel.context"] | graph["keel.runtime"]


def test_storage_does_not_import_the_layers_above() -> None:
    above = ("keel.policy", "keel.flows", "keel.signals", "keel.events", "keel.runtime")
    above += tuple(f"keel.{s}" for s in SERVICES)
    for name, imported in _graph().items():
        if name.startswith(("keel.ledger", "keel.store")):
            assert not [i for i in imported if i.startswith(above)], name


def test_ledger_events_are_built_only_in_the_catalogue() -> None:
    """``Pending`` (what the writer appends) is constructed in keel.events alone."""
    builders = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Pending"
            ):
                builders.add(name)
    assert builders == {"keel.events"}


def test_the_reference_lists_every_ledger_event_kind_with_its_fields() -> None:
    page = SRC.parent.parent / "docs" / "reference" / "events.md"
    assert catalogue_markdown() in page.read_text(encoding="utf-8")
    kinds = [cls.KIND for cls in CATALOGUE]
    assert len(kinds) == len(set(kinds)) == len(BY_KIND)
    assert all("`" + k + "`" in catalogue_markdown() for cls in CATALOGUE for k in body_keys(cls))


# DESIGN.md's layers, lowest first; a module may import its own layer and those below.
# "across" (settings, security, telemetry, small shared helpers) runs beside storage at the
# bottom: the key store and audit trail live in the database, and every layer may use it.
LAYERS = {
    "across": {
        "config", "security", "telemetry", "errors", "canonical", "batching", "yamlfile",
        "keys", "protect", "reasons", "scaffold", "text", "schema", "money",
    },
    "storage": {"ledger", "store", "index"},
    "core": {"flows", "policy", "signals", "explain", "events", "embeddings"},
    "runtime": {"context", "runtime", "project"},
    "services": set(SERVICES),
    "interfaces": {"cli", "api", "engine", "demo", "docs", "__init__"},
}  # fmt: skip
RANK = {"across": 1, "storage": 1, "core": 2, "runtime": 3, "services": 4, "interfaces": 5}


def _layer(module: str) -> str:
    top = module.split(".")[1] if "." in module else "__init__"
    found = [name for name, members in LAYERS.items() if top in members]
    assert found, f"{module} belongs to no layer: place '{top}' in LAYERS (DESIGN.md)"
    return found[0]


def test_dependencies_point_down_only() -> None:
    upward = [
        f"{name} ({_layer(name)}) imports {other} ({_layer(other)})"
        for name, imported in _graph().items()
        for other in imported
        if RANK[_layer(other)] > RANK[_layer(name)]
    ]
    assert upward == []
