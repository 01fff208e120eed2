"""Helpers for the knowledge service's tests: an engine on SQLite or on PostgreSQL with
pgvector, the real embedded embedder loaded once per session, and principals."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select

from keel.canonical import canonical_json
from keel.embeddings import registry
from keel.embeddings.spaces import Embedder
from keel.engine import Engine, open_engine
from keel.knowledge.service import Knowledge
from keel.security.audit import AuditLog
from keel.security.roles import Grant, Principal, Role
from keel.store.schema import ledger
from tests.conftest import fresh_pgvector_database

FIXTURES = Path(__file__).parent / "fixtures" / "documents"


@cache
def _embedder(spec: str) -> Embedder:
    return registry.embedder_for(json.loads(spec))


def shared_embedder(spec: Mapping[str, Any]) -> Embedder:
    """The real embedder, loaded once per test session (loading a model takes seconds)."""
    return _embedder(canonical_json(dict(spec)))


@contextlib.contextmanager
def opened(
    backend: str, project: Path, clock: Callable[[], float] = time.time
) -> Iterator[tuple[Engine, Knowledge, AuditLog]]:
    """An engine on ``backend`` and its knowledge service with an audit log."""
    stack = contextlib.ExitStack()
    with stack:
        environ: dict[str, str] = {}
        if backend == "postgres":
            environ["KEEL_DATABASE_URL"] = stack.enter_context(fresh_pgvector_database())
        engine = stack.enter_context(open_engine(project, environ=environ, clock=clock))
        audit = AuditLog(engine.db, clock=engine.clock)
        stack.callback(audit.close)
        yield engine, Knowledge(engine.ctx, audit=audit, embedder_for=shared_embedder), audit


def principal(
    name: str, *grants: Grant, groups: tuple[str, ...] = (), person: str | None = None
) -> Principal:
    return Principal(f"key:{name}", name, person or name, tuple(grants), groups=groups)


ADMIN = principal("admin", Grant(Role.ADMIN))
OWNER = principal("olga", Grant(Role.KNOWLEDGE_OWNER))  # global: may create collections
CURATOR = principal("carl", Grant(Role.CURATOR, collection="hr"))
ALICE = principal("alice", Grant(Role.READER, collection="hr"), groups=("hr-staff",))
BOB = principal("bob", Grant(Role.READER, collection="hr"), groups=("engineering",))
STRANGER = principal("sam", Grant(Role.READER, collection="finance"), groups=("hr-staff",))


def body(engine: Engine, record_id: str) -> dict[str, Any]:
    """The body of the ledger entry ``record_id``."""
    entry = engine.ctx.entry(record_id)
    loaded: dict[str, Any] = json.loads(entry.record)["body"]
    return loaded


def kinds(engine: Engine) -> list[str]:
    """The kinds of the ledger's knowledge entries, oldest first."""
    with engine.db.read() as conn:
        rows = conn.execute(select(ledger.c.kind).order_by(ledger.c.seq)).all()
    return [str(r[0]) for r in rows if str(r[0]).startswith("knowledge")]
