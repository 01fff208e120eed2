"""Shared fixtures: a real example project on disk, a fresh copy (and SQLite file) per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keel.engine import Engine, open_engine
from keel.scaffold import init_project
from keel.security.roles import Grant, Principal, Role


def person(
    ident: str, name: str, role: str, flow: str | None = None, who: str | None = None
) -> Principal:
    """A caller with one role, on one flow or (``None``) on every flow; the person behind
    it is ``who``, by default its name (one name, one person)."""
    return Principal(ident, name, who or name, (Grant.scoped(Role(role), flow),))


class Clock:
    """A clock the test moves by hand: every timer and cache in Keel reads the clock it
    was given, so a test advances time instead of sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def template_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The credit-limit example, with its trained model, written once per session, in
    production mode (the default of a keel.yaml without ``mode``): tests of development
    mode switch it on themselves."""
    return init_project(tmp_path_factory.mktemp("template") / "credit", mode="production")


@pytest.fixture
def project(template_project: Path, tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(template_project, target)
    return target


POSTGRES_ADMIN = "KEEL_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment that points a project at its database: SQLite beside the project
    (the default), or a fresh PostgreSQL database on the server `make test` starts."""
    if request.param == "sqlite":
        yield {}
        return
    with fresh_postgres_database() as url:
        yield {"KEEL_DATABASE_URL": url}


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database on the server `make test` starts, dropped after;
    skips the test where there is no such server."""
    admin = os.environ.get(POSTGRES_ADMIN)
    if not admin:
        pytest.skip("PostgreSQL runs under `make test` (scripts/with-postgres.sh sets it up)")
    name = f"keel_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.replace("/postgres?", f"/{name}?")
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        server.dispose()


PGVECTOR = "KEEL_TEST_PGVECTOR"


@contextlib.contextmanager
def fresh_pgvector_database() -> Iterator[str]:
    """The URL of a new database on the server `make test` starts, with the pgvector extension
    created in it. Where there is no server or it lacks pgvector the test skips, unless
    KEEL_TEST_PGVECTOR=required (set by `make pytest`): then it fails, so that a suite run on a
    server without pgvector cannot pass by skipping the knowledge index's production store."""
    required = os.environ.get(PGVECTOR) == "required"
    if required and not os.environ.get(POSTGRES_ADMIN):
        pytest.fail(
            f"{PGVECTOR}=required but {POSTGRES_ADMIN} is not set: run the tests "
            "inside scripts/with-postgres.sh"
        )
    with fresh_postgres_database() as url:
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        except sa.exc.DBAPIError as exc:
            why = (
                "the test PostgreSQL server has no pgvector: install the 'dev' extra (pgserver) "
                f"and run scripts/with-postgres.sh ({exc.orig})"
            )
            if required:
                pytest.fail(why)
            pytest.skip(why)
        finally:
            engine.dispose()
        yield url


@pytest.fixture
def db_url(project: Path, env: dict[str, str]) -> str:
    return env.get("KEEL_DATABASE_URL", f"sqlite:///{project}/keel.db")


def run_sql(
    url: str, *statements: str, params: dict[str, object] | None = None
) -> list[tuple[object, ...]]:
    """Run statements straight against the database, as an intruder or an operator would;
    returns the rows of the last one."""
    engine = sa.create_engine(url)
    rows: list[tuple[object, ...]] = []
    with engine.begin() as conn:
        for statement in statements:
            result = conn.execute(sa.text(statement), params or {})
            rows = [tuple(r) for r in result] if result.returns_rows else []
    engine.dispose()
    return rows


@pytest.fixture
def engine(project: Path, env: dict[str, str]) -> Iterator[Engine]:
    with open_engine(project, environ=env) as eng:
        yield eng


@pytest.fixture
def client(engine: Engine) -> Iterator[Any]:
    """A TestClient of the real app on ``engine``. The app's audit log is closed before the
    engine: a write after the store closed would open a connection nobody closes."""
    from fastapi.testclient import TestClient

    from keel.api import create_app
    from keel.security.audit import AuditLog

    audit = AuditLog(engine.db)
    with TestClient(create_app(engine, audit), raise_server_exceptions=False) as c:
        yield c
    audit.close()


LOW_RISK = {
    "annual_income": 85000.0,
    "debt_to_income": 0.08,
    "credit_utilization": 0.1,
    "delinquencies_2y": 0,
    "credit_history_years": 12.0,
    "employment_years": 9.0,
    "requested_limit": 6000.0,
    "region": "north",
}


@pytest.fixture
def low_risk() -> dict[str, object]:
    return dict(LOW_RISK)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def python_model(project: Path, source: str = "def score(row):\n    return 0.1\n") -> None:
    """Make the example flow's signal the Python function ``score`` in ``source`` (written to
    models/risk.py): loading it needs no model library."""
    write(project / "models" / "risk.py", source)
    flow = project / "flows" / "credit_limit.yaml"
    replace_in(flow, "model: models/default_risk.skops", "model: python:models/risk.py:score")
    replace_in(flow, "output: probability", "output: score")
    replace_in(flow, "    positive_class: 1\n", "")
    policy = project / "policies" / "credit_limit.yaml"
    replace_in(policy, "  min_confidence:\n    - signal: default_risk\n      min: 0.55\n", "")
    replace_in(policy, "      on_hit: escalate\n  rate_limits:", "  rate_limits:")


def problems(project: Path) -> list[str]:
    """Every problem ``keel validate`` reports, loading every model (it must report some)."""
    from keel.config import load_settings
    from keel.errors import DefinitionError
    from keel.project import load_project

    with pytest.raises(DefinitionError) as info:
        load_project(load_settings(project, {}), load_models=True)
    return [str(p) for p in info.value.problems]


def line_of(project: Path, relative: str, text: str) -> int:
    """The first line of a project file that holds ``text``."""
    lines = (project / relative).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)
