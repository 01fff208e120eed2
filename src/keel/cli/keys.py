"""``keel keys``: API keys and their roles, managed by the local operator (or the admin key
in ``KEEL_API_KEY``) through ``keel.security.apikeys.Keys``, which records each change in
the audit trail."""

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

app = typer.Typer(help="Create, list and revoke API keys, and change their roles.")


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


def _grants(roles: list[str], flow: str | None) -> list[Grant]:
    """``--role`` (repeatable) and ``--flow`` as grants; an unknown role fails the command."""
    from keel.security.roles import Grant, parse_role  # noqa: PLC0415

    try:
        return [Grant.scoped(parse_role(r), flow) for r in roles]
    except KeelError as error:
        _fail(error)


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What uses the key (a service, a person).")],
    role: Annotated[list[str], typer.Option(help="A role to grant (repeatable).")],
    flow: Annotated[
        str | None, typer.Option(help="Grant the roles on this flow only (default: all flows).")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Who answers for the key.")] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime such as 90d or 12h (default: no expiry).")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Create an API key with its roles and print it once; only its hash is kept.

    Example: keel keys create --name checkout-service --role decider --flow credit_limit
    """
    from keel.yamlfile import parse_window  # noqa: PLC0415

    grants = _grants(role, flow)
    lifetime = parse_window(expires_in) if expires_in else None
    if expires_in and lifetime is None:
        _fail(KeelError(f"--expires-in must look like 90d, 12h or 30m, got {expires_in!r}"))
    with _keys(project) as (keys, operator):
        key, text = keys.create(operator, name, grants, owner=owner, expires_in=lifetime)
    typer.echo(text)
    typer.echo(
        f"Key {key.prefix} for {name} ({', '.join(str(g) for g in key.grants)}). "
        "It is shown only now: store it in your secrets manager.",
        err=True,
    )


@app.command("list")
def keys_list(project: ProjectOpt = Path(".")) -> None:
    """List API keys: prefix, name, status, grants (never the secrets).

    Example: keel keys list
    """
    import time  # noqa: PLC0415

    with _keys(project) as (keys, operator):
        listed = keys.list(operator)
    now = time.time()
    for key in listed:
        typer.echo(
            f"{key.prefix}  {key.status(now):<8} {key.name:<24} "
            f"{', '.join(str(g) for g in key.grants)}  expires {key.expires_at or 'never'}"
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
    flow: Annotated[
        str | None, typer.Option(help="Grant the roles on this flow only (default: all flows).")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Give an existing key more roles; servers apply the change within a second.

    Example: keel keys grant 3f9a1c2e --role reviewer --flow credit_limit
    """

    added = _grants(role, flow)
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
    project: ProjectOpt = Path("."),
) -> None:
    """Take roles away from a key (not its last one: revoke the key instead).

    Example: keel keys ungrant 3f9a1c2e --role reviewer --flow credit_limit
    """

    removed = _grants(role, flow)
    with _keys(project) as (keys, operator):
        key = keys.ungrant(operator, prefix, removed)
    typer.echo(f"{key.prefix} ({key.name}) now has {', '.join(str(g) for g in key.grants)}")
