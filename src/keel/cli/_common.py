"""What the command groups share: the ``--project`` and ``--reason`` options, opening the
engine or the database with errors printed as ``error [code]: message``, who the command
acts as, and printing JSON.

A command acts as the local operator (an admin; every OS user is the one person
``local-operator``), or, when ``KEEL_API_KEY`` holds an API key, as that key's principal,
authenticated against the store like an HTTP request: its roles, and its owner as the
person, so an operator can be a second person for four eyes only through a second identity.

Heavy modules (the engine, SQLAlchemy) are imported inside functions, and their types
only for the type checker, so that ``keel --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from keel.errors import InputError, KeelError

if TYPE_CHECKING:
    from keel.engine import Engine
    from keel.security.roles import Principal
    from keel.store.database import Database

KEY_ENV = "KEEL_API_KEY"  # act as this API key's principal instead of the local operator

ProjectOpt = Annotated[
    Path,
    typer.Option("--project", "-p", help="The Keel project folder.", file_okay=False),
]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why, in words (required).")]


def _fail(error: KeelError) -> NoReturn:
    typer.echo(f"error [{error.code}]: {error.message}", err=True)
    raise typer.Exit(2)


@contextmanager
def _engine(project: Path) -> Iterator[Engine]:
    from keel.engine import open_engine  # noqa: PLC0415 - keep `keel --help` fast

    try:
        # Known before the engine starts: a development-mode start activates changed files
        # as, and records, whoever runs the command.
        engine = open_engine(project, principal=_key_holder(project))
    except KeelError as error:
        _fail(error)
    try:
        yield engine
    except KeelError as error:
        _fail(error)
    finally:
        engine.close()


@contextmanager
def _ledger(project: Path) -> Iterator[Database]:
    """The project's database alone: reading and verifying the ledger needs no models."""
    from keel.config import load_settings  # noqa: PLC0415
    from keel.ledger.reader import require_ledger  # noqa: PLC0415
    from keel.store.database import open_database  # noqa: PLC0415

    try:
        db = open_database(load_settings(project).database_url, migrate=False)
    except KeelError as error:
        _fail(error)
    try:
        require_ledger(db)
        yield db
    except KeelError as error:
        _fail(error)
    finally:
        db.close()


@contextmanager
def _store(project: Path) -> Iterator[Database]:
    """The project's database, migrated, without loading flows or models."""
    from keel.config import load_settings  # noqa: PLC0415
    from keel.store.database import open_database  # noqa: PLC0415

    try:
        db = open_database(load_settings(project).database_url)
    except KeelError as error:
        _fail(error)
    try:
        yield db
    except KeelError as error:
        _fail(error)
    finally:
        db.close()


def _operator(db: Database, now: float) -> Principal:
    """Who the command acts as: the key in ``KEEL_API_KEY`` (refused like over HTTP when
    unknown, revoked or expired), else the local operator."""
    import os  # noqa: PLC0415

    from keel.security.apikeys import authenticate  # noqa: PLC0415
    from keel.security.roles import local_operator  # noqa: PLC0415

    token = os.environ.get(KEY_ENV, "").strip()
    if not token:
        return local_operator()
    return authenticate(db, token, now)


def _key_holder(project: Path) -> Principal | None:
    """The principal of the key in ``KEEL_API_KEY``, checked in the project's store before
    the engine starts; None without one (the engine acts as the local operator)."""
    import os  # noqa: PLC0415
    import time  # noqa: PLC0415

    from keel.config import load_settings  # noqa: PLC0415
    from keel.store.database import open_database  # noqa: PLC0415

    if not os.environ.get(KEY_ENV, "").strip():
        return None
    db = open_database(load_settings(project).database_url)
    try:
        return _operator(db, time.time())
    finally:
        db.close()


def _print(data: Any) -> None:
    from keel.text import escape  # noqa: PLC0415

    # JSON escapes control characters; escape() also writes bidi overrides and other
    # invisible format characters of older records as \uXXXX.
    typer.echo(escape(json.dumps(data, indent=2, ensure_ascii=False, default=str)))


def _policy_file(engine: Engine, flow: str, file: Path | None) -> tuple[str, str]:
    """The text of a policy file (default: the flow's own) and its path, for a change or a
    replay."""
    path = file or engine.changes.file_of(flow)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", {"path": str(path)}) from None
