"""``keel ledger``: verify, checkpoint and read the tamper-evident ledger."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keel.cli._common import ProjectOpt, _fail, _ledger, _operator, _store
from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.protect import Protector

MAX_SEQ = 2**31 - 1  # the ledger's seq column is INTEGER: 32 bits on PostgreSQL

app = typer.Typer(help="Verify, checkpoint and read the tamper-evident ledger.")


@app.command("verify")
def ledger_verify(
    checkpoint: Annotated[
        Path | None, typer.Option(help="A checkpoint file to check the ledger against.")
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(help="Trusted signer key (base64); without it the signer is unverified."),
    ] = None,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep", help="Also compare every governed table (reviews, outcomes, policies…)."
        ),
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Verify every entry of the ledger; exit 1 naming the first bad sequence number, or with
    --deep the first table row that disagrees with the ledger.

    Example: keel ledger verify --deep --checkpoint checkpoints/2026-11-24.json
    """
    from keel.keys import public_key_from_text  # noqa: PLC0415
    from keel.ledger.checkpoint import load_checkpoint  # noqa: PLC0415
    from keel.ledger.verify import verify_ledger  # noqa: PLC0415
    from keel.text import escape  # noqa: PLC0415

    try:
        cp = load_checkpoint(checkpoint) if checkpoint is not None else None
        trusted = public_key_from_text(public_key) if public_key else None
        protector = _data_key(project) if deep else None
        with _ledger(project) as db:
            report = verify_ledger(db, cp, trusted, deep, protector)
    except KeelError as error:
        _fail(error)
    if report.ok:
        extra = f", matches checkpoint at {cp.seq}" if cp else ""
        typer.echo(
            f"ok: {report.entries} entries verified, head {report.head_seq} "
            f"{report.head_hash[:16]}{extra}"
        )
        if cp:
            typer.echo(f"checkpoint signer: {report.checkpoint['signer']}")
        if report.deep is not None:
            rows = sum(report.deep.rows.values())
            typer.echo(f"deep: {rows} rows in {len(report.deep.rows)} tables match the ledger")
            if not report.deep.protected_checked:
                typer.echo("deep: no data key, so personal inputs were not opened")
        return
    found = report.deep.mismatch if report.deep is not None else None
    if found is None:
        typer.echo(escape(f"FAILED at entry {report.bad_seq}: {report.problem}"), err=True)
        raise typer.Exit(1)
    typer.echo(escape(f"FAILED (deep) in table {found.table}, row {found.key}"), err=True)
    if found.column is not None:
        typer.echo(escape(f"  column {found.column}: stored {found.stored!r}"), err=True)
        typer.echo(escape(f"  the ledger records {found.ledger!r}"), err=True)
    typer.echo(escape(f"  {found.problem}"), err=True)
    raise typer.Exit(1)


def _data_key(project: Path) -> Protector | None:
    """The project's data key, to open personal inputs; None where the project has none
    (verification must not create one)."""
    from keel.config import load_settings  # noqa: PLC0415
    from keel.keys import DATA_KEY_FILE, load_data_key  # noqa: PLC0415
    from keel.protect import Protector  # noqa: PLC0415

    keys_dir = load_settings(project).keys_dir
    if not (keys_dir / DATA_KEY_FILE).exists():
        return None
    return Protector(*load_data_key(keys_dir))


@app.command("checkpoint")
def ledger_checkpoint(
    out: Annotated[Path | None, typer.Option(help="Write the checkpoint to this file.")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Sign the chain head (Ed25519) and print or save the checkpoint; keep it elsewhere.

    Example: keel ledger checkpoint --out ../checkpoints/today.json
    """
    import time  # noqa: PLC0415

    from keel.config import load_settings  # noqa: PLC0415
    from keel.events import CheckpointTaken, pending  # noqa: PLC0415
    from keel.keys import load_signing_key  # noqa: PLC0415
    from keel.ledger.verify import checkpoint_head  # noqa: PLC0415
    from keel.ledger.writer import append_alone  # noqa: PLC0415
    from keel.security.roles import Permission  # noqa: PLC0415

    # The store alone, not the engine: signing the head needs no flows or models, so the
    # command does not pay for loading them (scikit-learn alone takes seconds).
    try:
        settings = load_settings(project)
    except KeelError as error:
        _fail(error)
    with _store(project) as db:  # migrated, as the engine would
        now = time.time()
        _operator(db, now).require(Permission.CHECKPOINT_LEDGER)
        cp = checkpoint_head(db, load_signing_key(settings.keys_dir), settings.name, now)
        taken = CheckpointTaken(seq=cp.seq, head_hash=cp.head_hash, public_key=cp.public_key)
        append_alone(db, [pending(taken, None, now)], now)
    text = json.dumps(cp.to_dict(), indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"checkpoint of entry {cp.seq} written to {out}")


@app.command("export")
def ledger_export(
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
    from_seq: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_SEQ, help="Start at this sequence number (default: the first)."
        ),
    ] = 1,
    flow: Annotated[str | None, typer.Option(help="Only this flow's entries.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind of entry.")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Write the whole ledger, oldest first, as JSON lines: for an archive, a SIEM or an
    auditor's own check of the chain. Reads only the database.

    Each line holds the entry's seq, kind, id, flow, time, hash, the previous entry's hash
    and its body (personal inputs only as digests). Entries written while it runs are left
    for the next export (start it with --from-seq).

    Example: keel ledger export --out ledger.jsonl
    """
    from keel.ledger.reader import entries_from, head_seq  # noqa: PLC0415

    with _ledger(project) as db:
        total = max(0, head_seq(db) - from_seq + 1)
        entries = entries_from(db, from_seq, flow, kind)
        if out is None:
            for entry in entries:
                typer.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
            return
        written = 0
        with out.open("w", encoding="utf-8") as sink, _progress(total) as advance:
            for entry in entries:
                sink.write(json.dumps(entry.to_dict(), ensure_ascii=False) + "\n")
                written += 1
                advance(entry.seq - from_seq + 1)
    typer.echo(f"{written:,} entries written to {out}", err=True)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (standard error); nothing where output is logged."""
    import sys  # noqa: PLC0415

    if not sys.stderr.isatty() or total < 10_000:
        yield lambda done: None
        return
    from rich.progress import Progress  # noqa: PLC0415 - rich comes with typer

    with Progress(transient=True) as bar:
        task = bar.add_task("exporting", total=total)
        yield lambda done: bar.update(task, completed=done)


@app.command("show")
def ledger_show(
    limit: Annotated[int, typer.Option(min=1, max=10000, help="How many entries.")] = 20,
    flow: Annotated[str | None, typer.Option(help="Only this flow's entries.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only this kind (decision, checkpoint…).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the entries as JSON lines.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Show the newest ledger entries (personal inputs appear only as digests).

    Example: keel ledger show --limit 5 --flow credit_limit
    """
    from keel.ledger.reader import newest  # noqa: PLC0415

    with _ledger(project) as db:
        entries = newest(db, limit, flow, kind)
    for entry in entries:
        if as_json:
            typer.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
            continue
        body = entry.body
        summary = ""
        if entry.kind == "decision":
            value = f" {body['value']:,.0f}" if body.get("value") is not None else ""
            summary = f"{body['action']}{value} [{body['status']}] rule={body['rule']}"
        elif entry.kind == "policy_registered":
            summary = f"policy {body['policy']} {body['version'][:12]}"
        elif entry.kind == "checkpoint":
            summary = f"checkpoint at {body['seq']}"
        typer.echo(
            f"{entry.seq:>7} {entry.recorded_at} {entry.kind:<17} {entry.record_id} {summary}"
        )
