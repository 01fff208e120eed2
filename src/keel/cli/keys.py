"""``keel keys``: API keys and their roles; each change is a security event in the audit
trail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, _fail, _operator, _store
from keel.errors import KeelError

app = typer.Typer(help="Create, list and revoke API keys, and change their roles.")


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
    import time  # noqa: PLC0415

    from keel.security.apikeys import create_key  # noqa: PLC0415
    from keel.security.audit import AuditLog  # noqa: PLC0415
    from keel.security.roles import Grant, parse_role  # noqa: PLC0415
    from keel.yamlfile import parse_window  # noqa: PLC0415

    try:
        grants = [Grant(parse_role(r), flow) for r in role]
        lifetime = parse_window(expires_in) if expires_in else None
        if expires_in and lifetime is None:
            raise KeelError(f"--expires-in must look like 90d, 12h or 30m, got {expires_in!r}")
    except KeelError as error:
        _fail(error)
    now = time.time()
    with _store(project) as db:
        key, text = create_key(
            db, name, owner or name, grants, _operator(), now, now + lifetime if lifetime else None
        )
        audit = AuditLog(db)
        audit.record(
            "security",
            _operator(),
            "key_created",
            key.principal_id,
            "ok",
            {"name": name, "grants": [str(g) for g in grants]},
        )
        audit.close()
    typer.echo(text)
    typer.echo(
        f"Key {key.prefix} for {name} ({', '.join(str(g) for g in grants)}). "
        "It is shown only now: store it in your secrets manager.",
        err=True,
    )


@app.command("list")
def keys_list(project: ProjectOpt = Path(".")) -> None:
    """List API keys: prefix, name, status, grants (never the secrets).

    Example: keel keys list
    """
    import time  # noqa: PLC0415

    from keel.security.apikeys import list_keys  # noqa: PLC0415

    with _store(project) as db:
        keys = list_keys(db)
    now = time.time()
    for key in keys:
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
    import time  # noqa: PLC0415

    from keel.security.apikeys import revoke_key  # noqa: PLC0415
    from keel.security.audit import AuditLog  # noqa: PLC0415

    with _store(project) as db:
        key = revoke_key(db, prefix, time.time())
        audit = AuditLog(db)
        audit.record("security", _operator(), "key_revoked", key.principal_id, "ok", {})
        audit.close()
    typer.echo(f"revoked {key.prefix} ({key.name}) at {key.revoked_at}")


def _change_grants(
    prefix: str, roles: list[str], flow: str | None, project: Path, adding: bool
) -> None:
    import time  # noqa: PLC0415

    from keel.security.apikeys import change_grants  # noqa: PLC0415
    from keel.security.audit import AuditLog  # noqa: PLC0415
    from keel.security.roles import Grant, parse_role  # noqa: PLC0415

    try:
        changed = [Grant(parse_role(r), flow) for r in roles]
    except KeelError as error:
        _fail(error)
    with _store(project) as db:
        audit = AuditLog(db)
        action = "role_granted" if adding else "role_removed"
        try:
            key = change_grants(
                db,
                prefix,
                changed if adding else [],
                [] if adding else changed,
                _operator(),
                time.time(),
            )
        except KeelError as error:
            audit.record(
                "security",
                _operator(),
                action,
                f"key:{prefix}",
                "refused",
                {"grants": [str(g) for g in changed], "reason": error.message},
            )
            audit.close()
            _fail(error)
        audit.record(
            "security",
            _operator(),
            action,
            key.principal_id,
            "ok",
            {"grants": [str(g) for g in changed], "now": [str(g) for g in key.grants]},
        )
        audit.close()
    typer.echo(f"{key.prefix} ({key.name}) now has {', '.join(str(g) for g in key.grants)}")


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
    _change_grants(prefix, role, flow, project, adding=True)


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
    _change_grants(prefix, role, flow, project, adding=False)
