"""``keel audit``: the audit trail of requests and security events."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, _operator, _store

app = typer.Typer(help="The audit trail of requests and security events.")


@app.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(help="ISO time to start from.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Export the audit trail as JSON lines, oldest first, for a SIEM.

    Example: keel audit export --since 2026-11-01T00:00:00Z --out audit.jsonl
    """
    import time  # noqa: PLC0415

    from keel.security.audit import AuditTrail  # noqa: PLC0415

    with _store(project) as db:
        lines = list(AuditTrail(db).export(_operator(db, time.time()), since))
    text = "".join(line + "\n" for line in lines)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{len(lines)} events written to {out}", err=True)
