"""``keel keys``: API keys, their roles and their groups, managed by the local operator (or
the admin key in ``KEEL_API_KEY``) through ``keel.security.apikeys.Keys``, which records
each change in the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keel.cli._common import ProjectOpt, _fail, _operator, _store
from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.security.apikeys import Keys
    from keel.security.roles import Grant, Principal

app = typer.Typer(help="Create, list and revoke API keys, and change their roles and groups.")

FlowOpt = Annotated[
    str | None,
    typer.Option(help="Grant flow roles on this flow only (default: all flows)."),
]
CollectionOpt = Annotated[
    str | None,
    typer.Option(
        help="Grant knowledge roles (knowledge_owner, curator, reader) on this collection "
        "only (default: all collections)."
    ),
]


@contextmanager
def _keys(project: Path) -> Iterator[tuple[Keys, Principal]]:
    """The key service on the project's store, and who acts (``KEEL_API_KEY`` or the local
    operator); its audit events are written before the store closes."""
    import time  # noqa: PLC0415

    from keel.security.apikeys import Keys  # noqa: PLC0415
    from keel.security.audit import AuditLog  # noqa: PLC0415

    with _store(project) as db:
        audit = AuditLog(db)
        try:
            yield Keys(db, audit, time.time), _operator(db, time.time())
        finally:
            audit.close()


def _grants(roles: list[str], flow: str | None, collection: str | None) -> list[Grant]:
    """``--role`` (repeatable) with ``--flow`` or ``--collection`` as grants. An unknown
    role fails the command, and so does a knowledge role with ``--flow`` or a flow role
    with ``--collection``: the scope is never quietly read as the other kind."""
    from keel.security.roles import Grant, parse_role  # noqa: PLC0415

    try:
        return [Grant(parse_role(r), flow, collection) for r in roles]
    except KeelError as error:
        _fail(error)


def _show(groups: tuple[str, ...]) -> str:
    return f"groups {', '.join(groups)}" if groups else "no groups"


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What uses the key (a service, a person).")],
    role: Annotated[list[str], typer.Option(help="A role to grant (repeatable).")],
    flow: FlowOpt = None,
    collection: CollectionOpt = None,
    group: Annotated[
        list[str] | None,
        typer.Option(help="A group the key carries, for documents' access lists (repeatable)."),
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Who answers for the key.")] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime such as 90d or 12h (default: no expiry).")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Create an API key with its roles and groups and print it once; only its hash is kept.

    Example: keel keys create --name hr-bot --role reader --collection handbook --group payroll
    """
    from keel.yamlfile import parse_window  # noqa: PLC0415

    grants = _grants(role, flow, collection)
    lifetime = parse_window(expires_in) if expires_in else None
    if expires_in and lifetime is None:
        _fail(KeelError(f"--expires-in must look like 90d, 12h or 30m, got {expires_in!r}"))
    with _keys(project) as (keys, operator):
        key, text = keys.create(
            operator, name, grants, owner=owner, expires_in=lifetime, groups=group or []
        )
    typer.echo(text)
    typer.echo(
        f"Key {key.prefix} for {name} ({', '.join(str(g) for g in key.grants)}; "
        f"{_show(key.groups)}). "
        "It is shown only now: store it in your secrets manager.",
        err=True,
    )


@app.command("list")
def keys_list(project: ProjectOpt = Path(".")) -> None:
    """List API keys: prefix, name, status, grants, groups (never the secrets).

    Example: keel keys list
    """
    import time  # noqa: PLC0415

    with _keys(project) as (keys, operator):
        listed = keys.list(operator)
    now = time.time()
    for key in listed:
        typer.echo(
            f"{key.prefix}  {key.status(now):<8} {key.name:<24} "
            f"{', '.join(str(g) for g in key.grants)}  {_show(key.groups)}  "
            f"expires {key.expires_at or 'never'}"
        )


@app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as keys list shows it.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Revoke an API key at once; requests with it are refused from now on.

    Example: keel keys revoke 3f9a1c2e
    """

    with _keys(project) as (keys, operator):
        key = keys.revoke(operator, prefix)
    typer.echo(f"revoked {key.prefix} ({key.name}) at {key.revoked_at}")


@app.command("grant")
def keys_grant(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as keys list shows it.")],
    role: Annotated[list[str], typer.Option(help="A role to grant (repeatable).")],
    flow: FlowOpt = None,
    collection: CollectionOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Give an existing key more roles; servers apply the change within a second.

    Example: keel keys grant 3f9a1c2e --role reviewer --flow credit_limit
    """

    added = _grants(role, flow, collection)
    with _keys(project) as (keys, operator):
        key = keys.grant(operator, prefix, added)
    typer.echo(f"{key.prefix} ({key.name}) now has {', '.join(str(g) for g in key.grants)}")


@app.command("ungrant")
def keys_ungrant(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as keys list shows it.")],
    role: Annotated[list[str], typer.Option(help="A role to take away (repeatable).")],
    flow: Annotated[
        str | None, typer.Option(help="The flow the role was granted on (default: all flows).")
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(help="The collection the role was granted on (default: all collections)."),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Take roles away from a key (not its last one: revoke the key instead).

    Example: keel keys ungrant 3f9a1c2e --role reviewer --flow credit_limit
    """

    removed = _grants(role, flow, collection)
    with _keys(project) as (keys, operator):
        key = keys.ungrant(operator, prefix, removed)
    typer.echo(f"{key.prefix} ({key.name}) now has {', '.join(str(g) for g in key.grants)}")


GroupsArg = Annotated[list[str], typer.Option("--group", help="A group name (repeatable).")]


@app.command("add-group")
def keys_add_group(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as keys list shows it.")],
    group: GroupsArg,
    project: ProjectOpt = Path("."),
) -> None:
    """Add groups to a key; servers apply the change within a second.

    Example: keel keys add-group 3f9a1c2e --group payroll
    """

    with _keys(project) as (keys, operator):
        key = keys.add_groups(operator, prefix, group)
    typer.echo(f"{key.prefix} ({key.name}) now carries {_show(key.groups)}")


@app.command("remove-group")
def keys_remove_group(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as keys list shows it.")],
    group: GroupsArg,
    project: ProjectOpt = Path("."),
) -> None:
    """Take groups away from a key (it may be left with none).

    Example: keel keys remove-group 3f9a1c2e --group payroll
    """

    with _keys(project) as (keys, operator):
        key = keys.remove_groups(operator, prefix, group)
    typer.echo(f"{key.prefix} ({key.name}) now carries {_show(key.groups)}")
