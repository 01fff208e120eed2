"""The ``keel`` command line: a thin layer over the engine. Each docstring is the help text."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.errors import InputError, KeelError
from keel.ledger.checkpoint import load_checkpoint

app = typer.Typer(
    name="keel",
    help="Keel: governed, explained and recorded decisions from AI models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ledger_app = typer.Typer(help="Verify, checkpoint and read the tamper-evident ledger.")
app.add_typer(ledger_app, name="ledger")
keys_app = typer.Typer(help="Create, list and revoke API keys, and change their roles.")
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="The audit trail of requests and security events.")
app.add_typer(audit_app, name="audit")
review_app = typer.Typer(help="The review queue: list, claim, resolve, override, sweep.")
app.add_typer(review_app, name="review")
outcomes_app = typer.Typer(help="What came of decisions: report, import, show.")
app.add_typer(outcomes_app, name="outcomes")
autonomy_app = typer.Typer(help="Autonomy levels: raise with evidence and approval, lower.")
app.add_typer(autonomy_app, name="autonomy")
rollout_app = typer.Typer(help="Shadow and canary rollouts of candidate policy versions.")
app.add_typer(rollout_app, name="rollout")
report_app = typer.Typer(help="Reports: trust metrics per flow.")
app.add_typer(report_app, name="report")
drift_app = typer.Typer(help="Data drift: reference profiles and drift reports.")
app.add_typer(drift_app, name="drift")
monitor_app = typer.Typer(help="Monitors: a flow's drift and behaviour against its baseline.")
app.add_typer(monitor_app, name="monitor")
alarms_app = typer.Typer(help="Alarms from monitors: list, show, resolve.")
app.add_typer(alarms_app, name="alarms")
policy_app = typer.Typer(
    help="Policy versions: propose, diff, approve, activate, roll back, history."
)
app.add_typer(policy_app, name="policy")

ProjectOpt = Annotated[
    Path,
    typer.Option("--project", "-p", help="The Keel project folder.", file_okay=False),
]


def _fail(error: KeelError) -> None:
    typer.echo(f"error [{error.code}]: {error.message}", err=True)
    raise typer.Exit(2)


@contextmanager
def _engine(project: Path) -> Iterator[Any]:
    from keel.engine import open_engine  # noqa: PLC0415 - keep `keel --help` fast

    try:
        engine = open_engine(project)
    except KeelError as error:
        _fail(error)
    try:
        yield engine
    except KeelError as error:
        _fail(error)
    finally:
        engine.close()


@contextmanager
def _ledger(project: Path) -> Iterator[Any]:
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


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the project in.")],
    name: Annotated[str | None, typer.Option(help="Project name (default: folder name).")] = None,
) -> None:
    """Create a Keel project with the credit-limit example flow, policy and trained model.

    Example: keel init my-decisions
    """
    from keel.scaffold import init_project  # noqa: PLC0415

    try:
        path = init_project(directory, name)
    except KeelError as error:
        _fail(error)
    typer.echo(f"Created Keel project in {path}")
    typer.echo(
        f"Next: cd {directory} && keel validate && keel decide credit_limit "
        "--input @examples/low_risk.json"
    )


@app.command()
def validate(project: ProjectOpt = Path(".")) -> None:
    """Check every flow, policy and model of the project; list every problem found.

    Example: keel validate --project my-decisions
    """
    from keel.config import load_settings  # noqa: PLC0415
    from keel.project import load_project  # noqa: PLC0415

    try:
        loaded = load_project(load_settings(project))
    except KeelError as error:
        _fail(error)
    for name, runtime in loaded.flows.items():
        policy = runtime.policy.policy
        typer.echo(
            f"ok  flow {name}: owner {runtime.flow.owner.email}, autonomy {runtime.flow.autonomy}, "
            f"policy {policy.name} {policy.version[:12]} ({len(policy.rules)} rules), "
            f"signals {', '.join(runtime.models) or 'none'}"
        )


def _read_input(text: str) -> Any:
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = sys.stdin.read() if text == "@-" else path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeelError(f"cannot read input file {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeelError(f"--input is not valid JSON: {exc}") from exc


@app.command()
def decide(
    flow: Annotated[str, typer.Argument(help="The flow to decide.")],
    input: Annotated[
        str, typer.Option("--input", "-i", help="Inputs as JSON, or @file.json, or @- for stdin.")
    ],
    subject: Annotated[str | None, typer.Option(help="Who or what the case is about.")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Decide one case and print the decision as JSON (it is in the ledger first).

    Example: keel decide credit_limit --input @examples/low_risk.json --subject cust-42
    """
    try:
        inputs = _read_input(input)
    except KeelError as error:
        _fail(error)
    with _engine(project) as engine:
        _print(engine.decide(flow, inputs, subject_id=subject).to_dict())


@app.command()
def explain(
    decision_id: Annotated[str, typer.Argument(help="The decision's id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full explanation as JSON.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Explain why a decision was made: rule trace, guardrails, model attributions.

    Example: keel explain dec_0193...
    """
    with _engine(project) as engine:
        result = engine.explain(decision_id)
        if as_json:
            _print(result)
            return
        for sentence in result["why"]:
            typer.echo(f"- {sentence}")
        for note in result["notes"]:
            typer.echo(f"note: {note}")


def _parse_assignments(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise KeelError(f"{what} must look like name=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


@app.command("what-if")
def what_if(
    decision_id: Annotated[str, typer.Argument(help="The recorded decision to re-evaluate.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Change an input: field=value (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Change a policy parameter: name=value.")
    ] = None,
    counterfactual: Annotated[
        bool, typer.Option(help="Also search for the smallest change that flips the action.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Re-evaluate a recorded decision with changed inputs or parameters; nothing is recorded.

    Example: keel what-if dec_0193... --set debt_to_income=0.3 --param review_risk=0.3
    """
    try:
        changes = _parse_assignments(set_ or [], "--set")
        params = _parse_assignments(param or [], "--param")
    except KeelError as error:
        _fail(error)
    with _engine(project) as engine:
        result = engine.what_if(decision_id, changes, params)
        if counterfactual:
            result["counterfactuals"] = [c.to_dict() for c in engine.counterfactuals(decision_id)]
        _print(result)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the demo project.")
    ] = Path("demo-project"),
    count: Annotated[int, typer.Option(help="How many applicants to decide.")] = 300,
) -> None:
    """Run the credit-limit demo: train a model, decide a stream of applicants, verify the ledger.

    Example: keel demo --dir /tmp/keel-demo
    """
    from keel.demo import run_demo  # noqa: PLC0415

    try:
        ok = run_demo(directory, count, typer.echo)
    except KeelError as error:
        _fail(error)
    if not ok:
        raise typer.Exit(1)


@ledger_app.command("verify")
def ledger_verify(
    checkpoint: Annotated[
        Path | None, typer.Option(help="A checkpoint file to check the ledger against.")
    ] = None,
    public_key: Annotated[
        str | None, typer.Option(help="Trusted signer key (base64); else the checkpoint's own.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Verify every entry of the ledger; exit 1 naming the first bad sequence number.

    Example: keel ledger verify --checkpoint checkpoints/2026-11-24.json
    """
    from keel.keys import public_key_from_text  # noqa: PLC0415

    cp = None
    try:
        if checkpoint is not None:
            cp = load_checkpoint(checkpoint)
            cp.verify_signature(public_key_from_text(public_key) if public_key else None)
    except KeelError as error:
        _fail(error)
    from keel.ledger.verify import verify_ledger  # noqa: PLC0415

    with _ledger(project) as db:
        report = verify_ledger(db, cp)
    if report.ok:
        extra = f", matches checkpoint at {cp.seq}" if cp else ""
        typer.echo(
            f"ok: {report.entries} entries verified, head {report.head_seq} "
            f"{report.head_hash[:16]}{extra}"
        )
        return
    typer.echo(f"FAILED at entry {report.bad_seq}: {report.problem}", err=True)
    raise typer.Exit(1)


@ledger_app.command("checkpoint")
def ledger_checkpoint(
    out: Annotated[Path | None, typer.Option(help="Write the checkpoint to this file.")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Sign the chain head (Ed25519) and print or save the checkpoint; keep it elsewhere.

    Example: keel ledger checkpoint --out ../checkpoints/today.json
    """
    with _engine(project) as engine:
        cp = engine.checkpoint()
    text = json.dumps(cp.to_dict(), indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"checkpoint of entry {cp.seq} written to {out}")


@ledger_app.command("show")
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


@contextmanager
def _store(project: Path) -> Iterator[Any]:
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


def _operator() -> str:
    import getpass  # noqa: PLC0415

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@keys_app.command("create")
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


@keys_app.command("list")
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


@keys_app.command("revoke")
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


@keys_app.command("grant")
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


@keys_app.command("ungrant")
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


@audit_app.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(help="ISO time to start from.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Export the audit trail as JSON lines, oldest first, for a SIEM.

    Example: keel audit export --since 2026-11-01T00:00:00Z --out audit.jsonl
    """
    from keel.security.audit import export_events  # noqa: PLC0415

    with _store(project) as db:
        lines = list(export_events(db, since))
    text = "".join(line + "\n" for line in lines)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{len(lines)} events written to {out}", err=True)


ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why, in words (required).")]
ActionOpt = Annotated[
    str | None, typer.Option("--action", help="With change: the action to take instead.")
]
ValueOpt = Annotated[float | None, typer.Option("--value", help="With change: its value.")]


@review_app.command("list")
def review_list(
    flow: Annotated[
        list[str] | None, typer.Option("--flow", help="Only these flows (repeatable).")
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="open, claimed or resolved (default: all).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """List reviews, oldest first, with their deadlines (overdue ones marked).

    Example: keel review list --flow credit_limit --state open
    """
    with _engine(project) as engine:
        flows = flow or sorted(engine.flows)
        for name in flows:
            engine.runtime(name)  # an unknown flow is an error, not an empty list
        rows = engine.reviews.queue(flows, state, limit)
    if as_json:
        _print(rows)
        return
    for row in rows:
        late = "  OVERDUE" if row["overdue"] else ""
        value = f" {row['proposed_value']:g}" if row["proposed_value"] is not None else ""
        done = f" → {row['resolution']} by {row['reviewer']}" if row["resolution"] else ""
        typer.echo(
            f"{row['decision_id']}  {row['flow']:<16} {row['kind']:<10} {row['state']:<8} "
            f"{row['proposed_action']}{value}  due {row['due_at'] or '-'}{late}{done}"
        )
    typer.echo(f"{len(rows)} reviews", err=True)


@review_app.command("claim")
def review_claim(
    decision_id: Annotated[str, typer.Argument(help="The decision under review.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Claim an open review, so that no one else resolves it.

    Example: keel review claim dec_0193...
    """
    with _engine(project) as engine:
        _print(engine.reviews.claim(decision_id, _cli_actor()))


@review_app.command("resolve")
def review_resolve(
    decision_id: Annotated[str, typer.Argument(help="The decision under review.")],
    resolution: Annotated[str, typer.Argument(help="approve, reject or change.")],
    reason: ReasonOpt,
    action: ActionOpt = None,
    value: ValueOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Resolve a review; prints the review's ledger record.

    Example: keel review resolve dec_0193... change --action approve --value 4000
             -r "Income verified"
    (approve and reject take no --action or --value).
    """
    with _engine(project) as engine:
        _print(engine.reviews.resolve(decision_id, _cli_actor(), resolution, reason, action, value))


@review_app.command("override")
def review_override(
    decision_id: Annotated[str, typer.Argument(help="A final decision.")],
    resolution: Annotated[str, typer.Argument(help="reject or change.")],
    reason: ReasonOpt,
    action: ActionOpt = None,
    value: ValueOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Override a final decision; prints the review's ledger record.

    Example: keel review override dec_0193... reject -r "Customer disputed the data"
    """
    with _engine(project) as engine:
        _print(
            engine.reviews.override(decision_id, _cli_actor(), resolution, reason, action, value)
        )


@review_app.command("sweep")
def review_sweep(project: ProjectOpt = Path(".")) -> None:
    """Record a deadline breach for each review still waiting past its deadline (once each).

    Example: keel review sweep
    """
    with _engine(project) as engine:
        breaches = engine.reviews.sweep()
    for b in breaches:
        typer.echo(f"{b['decision']}  {b['flow']:<16} {b['kind']:<10} due {b['due_at']}")
    typer.echo(f"{len(breaches)} deadline breaches recorded", err=True)


@outcomes_app.command("report")
def outcomes_report(
    decision_id: Annotated[str, typer.Argument(help="The decision it is about.")],
    label: Annotated[str, typer.Argument(help="One of the flow's outcome labels.")],
    value: Annotated[float | None, typer.Option(help="A number that goes with it.")] = None,
    observed_at: Annotated[
        str | None, typer.Option(help="When it happened (ISO 8601; default: now).")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Report what came of one decision (a resend of the same outcome changes nothing).

    Example: keel outcomes report dec_0193... defaulted --value 1850 --observed-at 2027-06-01
    """
    from keel.review.outcomes import OutcomeReport  # noqa: PLC0415

    with _engine(project) as engine:
        row, created = engine.outcomes.report(
            OutcomeReport(decision_id, label, value, observed_at), _operator(), "cli"
        )
    _print(row)
    typer.echo("recorded" if created else "already recorded: nothing changed", err=True)


@outcomes_app.command("import")
def outcomes_import(
    file: Annotated[Path, typer.Argument(help="A .csv or .parquet file of outcomes.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Import outcomes from a CSV or Parquet file: all rows, or (on any problem) none.

    Example: keel outcomes import outcomes-2027-06.parquet
    """
    with _engine(project) as engine:
        result = engine.outcomes.import_file(file, _operator())
    typer.echo(f"{result.recorded} outcomes recorded, {result.unchanged} already recorded")


@outcomes_app.command("show")
def outcomes_show(
    decision_id: Annotated[str, typer.Argument(help="The decision.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Show the outcome reported for a decision.

    Example: keel outcomes show dec_0193...
    """
    with _engine(project) as engine:
        _print(engine.outcomes.get(decision_id))


def _cli_actor() -> Any:
    """The local operator (admin: it holds the store). Four eyes hold across OS users."""
    from keel.security.roles import Actor  # noqa: PLC0415

    operator = _operator()
    return Actor(operator, operator.removeprefix("cli:"), "admin")


def _policy_file(engine: Any, flow: str, file: Path | None) -> tuple[str, str]:
    path = file or engine.changes.file_of(flow)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        from keel.errors import InputError  # noqa: PLC0415

        raise InputError(f"cannot read {path}: {exc.strerror}", {"path": str(path)}) from None


FileOpt = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="The policy YAML (default: the flow's policy file)."),
]


@policy_app.command("propose")
def policy_propose(
    flow: Annotated[str, typer.Argument(help="The flow whose policy changes.")],
    reason: ReasonOpt,
    file: FileOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="SIGNAL=PATH: a new model file for a signal (repeatable)."),
    ] = None,
    model_only: Annotated[
        bool, typer.Option(help="Keep the active policy; propose only the --model files.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Propose the policy in a file (and, optionally, new model files) as the flow's next
    version; prints the change.

    Example: keel policy propose credit_limit -r "Retrained" --model default_risk=models/q3.skops
    """
    from keel.errors import InputError  # noqa: PLC0415

    models = {}
    for item in model or []:
        signal, sep, path = item.partition("=")
        if not sep or not signal or not path:
            _fail(InputError(f"--model takes SIGNAL=PATH, got {item!r}"))
        models[signal] = Path(path)
    with _engine(project) as engine:
        text, source = (None, "<active>") if model_only else _policy_file(engine, flow, file)
        change = engine.changes.propose(flow, text, _cli_actor(), reason, source, models)
        _print(change)


@policy_app.command("edit")
def policy_edit(
    change_id: Annotated[str, typer.Argument(help="The change (chg_…).")],
    reason: ReasonOpt,
    file: FileOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Replace a proposed change's version with a file's policy (its approvals are void).

    Example: keel policy edit chg_0193... -f policies/credit_limit.yaml -r "Keep the cap"
    """
    with _engine(project) as engine:
        flow = engine.changes.get(change_id)["flow"]
        text, _ = _policy_file(engine, flow, file)
        _print(engine.changes.edit(change_id, text, _cli_actor(), reason))


@policy_app.command("diff")
def policy_diff(
    target: Annotated[
        str, typer.Argument(help="A change (chg_…), or a flow: its active version → its file.")
    ],
    before: Annotated[str | None, typer.Option("--from", help="With a flow: this version.")] = None,
    after: Annotated[str | None, typer.Option("--to", help="With a flow: this version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Show what changes between two policy versions: parameters, rules, guardrails.

    Example: keel policy diff chg_0193...      keel policy diff credit_limit --from 3f9a --to 77c1
    """
    from keel.rollout.diff import render_table  # noqa: PLC0415

    with _engine(project) as engine:
        if target.startswith("chg_"):
            change = engine.changes.get(target)
            flow, old, new = change["flow"], change["base_version"], change["version"]
        else:
            flow = target
            old = engine.changes.resolve(flow, before) if before else None
            old = old or engine.runtime(flow).policy.version
            new = (
                engine.changes.resolve(flow, after) if after else engine.changes.file_version(flow)
            )
        differences = engine.changes.diff(flow, old, new)
    if as_json:
        _print({"before": old, "after": new, "differences": [d.to_dict() for d in differences]})
        return
    typer.echo(f"{flow}: {old[:12]} → {new[:12]}")
    typer.echo(render_table(differences), nl=False)


@policy_app.command("approve")
def policy_approve(
    change_id: Annotated[str, typer.Argument(help="The change (chg_…).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Approve a change's current version (never one you proposed or edited).

    Example: keel policy approve chg_0193... -r "Replayed on Q3: 2% fewer referrals"
    """
    with _engine(project) as engine:
        _print(engine.changes.approve(change_id, _cli_actor(), reason))


@policy_app.command("activate")
def policy_activate(
    change_id: Annotated[str, typer.Argument(help="An approved change (chg_…).")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why now (optional).")] = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Put an approved change into force (servers follow within a second).

    Example: keel policy activate chg_0193...
    """
    with _engine(project) as engine:
        _print(engine.changes.activate(change_id, _cli_actor(), reason))


@policy_app.command("rollback")
def policy_rollback(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    version: Annotated[str, typer.Argument(help="A version it used before (or a prefix).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Put back a policy version the flow used before, at once.

    Example: keel policy rollback credit_limit 3f9a1c2e -r "Referrals doubled"
    """
    with _engine(project) as engine:
        _print(engine.changes.rollback(flow, version, _cli_actor(), reason))


@policy_app.command("history")
def policy_history(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Which version ran from when (activations), and the flow's open and past changes.

    Example: keel policy history credit_limit
    """
    with _engine(project) as engine:
        activations = engine.changes.history(flow)
        changes = engine.changes.changes(flow)
        drift = engine.changes.file_drift().get(flow)
    if as_json:
        _print({"activations": activations, "changes": changes})
        return
    for a in activations:
        typer.echo(
            f"{a['activated_at']}  {a['kind']:<9} {a['version'][:12]}  by {a['activated_by']}"
            f"  {a['reason']}"
        )
    for c in changes:
        typer.echo(
            f"{c['id']}  {c['state']:<9} {c['version'][:12]}  by {c['author']}  {c['reason']}"
        )
    if drift:
        typer.echo(
            f"note: the policy file holds {drift[1][:12]}, not the active {drift[0][:12]}; "
            f"propose it with: keel policy propose {flow} -r REASON",
            err=True,
        )


@policy_app.command("active")
def policy_active(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    at: Annotated[str | None, typer.Option(help="An instant (ISO 8601); default: now.")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """The policy version in force now, or at a past instant.

    Example: keel policy active credit_limit --at 2026-11-01T09:00:00Z
    """
    from keel.ledger.records import parse_instant  # noqa: PLC0415

    with _engine(project) as engine:
        _print(engine.changes.active_at(flow, parse_instant("at", at)))


@autonomy_app.command("request")
def autonomy_request(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    level: Annotated[str, typer.Argument(help="shadow, advisory, supervised or autonomous.")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Lower a flow's autonomy at once, or ask to raise it (checked against its evidence
    criteria; refused with the unmet ones).

    Example: keel autonomy request credit_limit autonomous -r "Six weeks at 97% agreement"
    """
    with _engine(project) as engine:
        try:
            _print(engine.autonomy.request(flow, level, _cli_actor(), reason))
        except KeelError as error:
            for line in error.detail.get("unmet", []):
                typer.echo(f"unmet: {line}", err=True)
            raise


@autonomy_app.command("approve")
def autonomy_approve(
    request_id: Annotated[str, typer.Argument(help="The raise request (aut_…).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Approve a raise someone else requested; the evidence is checked again now.

    Example: keel autonomy approve aut_0193... -r "Evidence reviewed"
    """
    with _engine(project) as engine:
        _print(engine.autonomy.approve(request_id, _cli_actor(), reason))


@autonomy_app.command("show")
def autonomy_show(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    evidence: Annotated[
        str | None, typer.Option(help="Also show the evidence for raising to this level.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """The level in force, its history and open raise requests.

    Example: keel autonomy show credit_limit --evidence autonomous
    """
    with _engine(project) as engine:
        shown = engine.autonomy.show(flow)
        if evidence is not None:
            figures, unmet = engine.autonomy.evidence(flow, evidence)
            shown["evidence"] = {"level": evidence, "figures": figures, "unmet": unmet}
    _print(shown)


@rollout_app.command("start")
def rollout_start(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    candidate: Annotated[
        str, typer.Argument(help="Shadow: a version or change; canary: an approved change.")
    ],
    reason: ReasonOpt,
    mode: Annotated[str, typer.Option(help="shadow or canary.")] = "shadow",
    share: Annotated[float, typer.Option(help="Canary: share of subjects served.")] = 0.0,
    max_guardrail_hit_rate: Annotated[float | None, typer.Option()] = None,
    max_override_rate: Annotated[float | None, typer.Option()] = None,
    min_decisions: Annotated[int | None, typer.Option()] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Run a candidate beside the active version, in shadow or as a canary.

    Example: keel rollout start credit_limit chg_0193... --mode canary --share 0.1 -r "10%"
    """
    given = {
        "max_guardrail_hit_rate": max_guardrail_hit_rate,
        "max_override_rate": max_override_rate,
        "min_decisions": min_decisions,
    }
    bounds = {k: float(v) for k, v in given.items() if v is not None}
    with _engine(project) as engine:
        _print(engine.rollouts.start(flow, mode, candidate, _cli_actor(), reason, share, bounds))


@rollout_app.command("stop")
def rollout_stop(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Stop the flow's running rollout.

    Example: keel rollout stop credit_limit -r "Seen enough"
    """
    with _engine(project) as engine:
        _print(engine.rollouts.stop(flow, _cli_actor(), reason))


@rollout_app.command("report")
def rollout_report(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    project: ProjectOpt = Path("."),
) -> None:
    """The running (or latest) rollout: agreement for a shadow, per-arm rates for a canary.

    Example: keel rollout report credit_limit
    """
    with _engine(project) as engine:
        current = engine.rollouts.current(flow)
        _print(engine.rollouts.report(current["id"]))


@app.command()
def replay(
    flow: Annotated[str, typer.Argument(help="The flow whose decisions are replayed.")],
    since: Annotated[str, typer.Option(help="From this instant (ISO 8601), inclusive.")],
    until: Annotated[str, typer.Option(help="To this instant (ISO 8601), exclusive.")],
    candidate: Annotated[
        str | None, typer.Argument(help="A change (chg_…) or a stored version (prefix).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Or: a policy YAML to replay.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Processes (default: one per CPU).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Replay a candidate policy on the decisions recorded in a time range: what changes.

    Example: keel replay credit_limit chg_0193... --since 2026-10-01 --until 2026-11-01
    """
    from keel.errors import InputError  # noqa: PLC0415
    from keel.ledger.records import parse_instant  # noqa: PLC0415

    with _engine(project) as engine:
        if (candidate is None) == (file is None):
            raise InputError("give a candidate (change or version) or --file, not both")
        if file is not None:
            text, source = _policy_file(engine, flow, file)
            candidate = engine.changes.register(flow, text, source)
        start, end = parse_instant("since", since), parse_instant("until", until)
        assert candidate is not None and start is not None and end is not None
        report = engine.replay(flow, candidate, start, end, workers)
    if as_json:
        _print(report)
        return
    typer.echo(
        f"{flow}: candidate {report['candidate'][:12]} on {report['decisions']:,} decisions "
        f"from {report['since']} to {report['until']} ({report['seconds']:,.1f} s)"
    )
    typer.echo(f"changed: {report['changed']:,} ({report['changed_share']:.1%})")
    typer.echo("transitions (recorded → candidate):")
    for old, row in report["transitions"].items():
        cells = ", ".join(f"{new} {n:,}" for new, n in row.items())
        typer.echo(f"  {old:<12} → {cells}")
    typer.echo("sums of values (recorded → candidate):")
    for action, sums in report["sums"].items():
        typer.echo(f"  {action:<12} {sums['recorded']:>16,.2f} → {sums['candidate']:>16,.2f}")
    review = report["review"]
    typer.echo(f"waiting for review: {review['recorded']:,} → {review['candidate']:,}")
    outcomes = report["outcomes"]
    if outcomes["known"]:
        typer.echo(
            f"outcomes known: {outcomes['known']:,}; right {outcomes['recorded_right']:,} → "
            f"{outcomes['candidate_right']:,} (fixed {outcomes['fixed']:,}, "
            f"broken {outcomes['broken']:,}; value {outcomes['fixed_value']:,.2f} gained, "
            f"{outcomes['broken_value']:,.2f} lost)"
        )
    if report["erased"]:
        typer.echo(f"not replayed: {report['erased']:,} decisions whose inputs were erased")
    typer.echo(f"not replayed: {report['not_replayed']}", err=True)


@report_app.command("trust")
def report_trust(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    since: Annotated[
        str | None, typer.Option(help="From (ISO 8601); default: 30 days before until.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="To (ISO 8601); default: now.")] = None,
    bucket: Annotated[str, typer.Option(help="hour, day or week.")] = "day",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Trust metrics of a flow per time bucket: automation, escalation, overrides,
    agreement, guardrail hits, fallbacks, outcome accuracy.

    Example: keel report trust credit_limit --bucket week --html trust.html
    """
    import time  # noqa: PLC0415

    from keel.ledger.records import iso_time, parse_instant  # noqa: PLC0415
    from keel.monitor.report import COLUMNS, trust_html  # noqa: PLC0415
    from keel.review.trust import trust_metrics  # noqa: PLC0415

    with _engine(project) as engine:
        end = parse_instant("until", until) or iso_time(time.time())
        start = parse_instant("since", since) or _days_before(end, 30)
        report = trust_metrics(engine.ctx, flow, start, end, bucket)
    if html is not None:
        html.write_text(trust_html(report, iso_time(time.time())), encoding="utf-8")
        typer.echo(f"wrote {html}", err=True)
    if as_json:
        _print(report)
        return
    names = ["from"] + [name for _, name, _ in COLUMNS]
    rows = [names]
    for b in [*report["buckets"], {"start": "all", **report["total"]}]:
        rows.append([b["start"]] + [_cell(b[key], kind) for key, _, kind in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(names))]
    typer.echo(f"{flow} ({report['autonomy']}): {report['since']} to {report['until']}")
    for r in rows:
        typer.echo(
            "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r))
        )


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if kind == "rate" else f"{value:,}"


def _profile_store(project: Path, profiles: Path | None) -> Any:
    from keel.monitor.profile import ProfileStore  # noqa: PLC0415

    return ProfileStore(profiles) if profiles is not None else ProfileStore.of_project(project)


def _reference_profile(store: Any, reference: str) -> Any:
    """A stored profile by id (or a unique prefix of 12+ characters), else a data file."""
    from keel.monitor.drift_report import read_table  # noqa: PLC0415

    if (
        not Path(reference).exists()
        and len(reference) >= 12
        and all(ch in "0123456789abcdef" for ch in reference)
    ):
        return store.find(reference)
    return store.of_file(Path(reference), read_table)


ProfilesOpt = Annotated[
    Path | None,
    typer.Option(help="Where reference profiles are stored (default: PROJECT/.keel/profiles)."),
]


@drift_app.command("profile")
def drift_profile(
    data: Annotated[Path, typer.Argument(help="A Parquet or CSV file (needs keel[tables]).")],
    profiles: ProfilesOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Build and store the reference profile of a data file (or find it, stored before),
    and print its id.

    Example: keel drift profile training.parquet
    """
    try:
        profile = _reference_profile(_profile_store(project, profiles), str(data))
    except KeelError as error:
        _fail(error)
    kinds = Counter(profile.kind(c) for c in profile.columns)
    typer.echo(
        f"{profile.id}  {profile.rows:,} rows, {kinds['numeric']} numeric and "
        f"{kinds['categorical']} categorical columns, from {profile.source}"
    )


@drift_app.command("report")
def drift_report(
    out: Annotated[Path, typer.Option(help="Folder for report.html and report.json.")],
    reference: Annotated[
        str | None, typer.Option(help="Reference: a Parquet or CSV file, or a stored profile's id.")
    ] = None,
    current: Annotated[
        Path | None, typer.Option(help="Current data: a Parquet or CSV file.")
    ] = None,
    flow: Annotated[
        str | None,
        typer.Option(
            help="Instead of files: a flow's recorded decisions, window against baseline."
        ),
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="With --flow: the current window (default: the flow's).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="With --flow: the baseline before it (default: the flow's).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="With --flow: end of the current window; default now.")
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            help="Only these methods (repeat for several); the first that applies to a "
            "column's type gives its verdict."
        ),
    ] = None,
    compat: Annotated[
        str, typer.Option(help="keel, or evidently for Evidently 0.7's figures and verdicts.")
    ] = "keel",
    num_method: Annotated[
        str | None, typer.Option(help="Evidently mode: the method for numeric columns.")
    ] = None,
    cat_method: Annotated[
        str | None, typer.Option(help="Evidently mode: the method for categorical columns.")
    ] = None,
    profiles: ProfilesOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Compare current data with a reference, column by column, and write
    OUT/report.html (self-contained, a chart per column) and OUT/report.json (per column
    the method, statistic, p-value, threshold and verdict). The data are two files, or a
    flow's recorded decisions: its last window against the baseline before it (inputs,
    signal scores, action; the baseline's profile is stored like a file's). Exits 1 when
    a column drifted.

    Example: keel drift report --reference train.parquet --current week.parquet --out drift
    """
    import time  # noqa: PLC0415

    from keel.ledger.records import iso_time  # noqa: PLC0415
    from keel.monitor.drift_report import read_table, report_data, write_report  # noqa: PLC0415
    from keel.monitor.profile import check_methods, compare  # noqa: PLC0415

    try:
        check_methods(method, compat)
        if compat != "evidently" and (num_method or cat_method):
            raise InputError("--num-method and --cat-method belong to --compat evidently", {})
        store = _profile_store(project, profiles)
        if flow is not None:
            if reference is not None or current is not None:
                raise InputError("give --flow, or --reference and --current: not both", {})
            profile, table, source = _flow_windows(project, store, flow, window, baseline, until)
        else:
            if reference is None or current is None:
                raise InputError(
                    "give --reference and --current (files or a profile), or --flow", {}
                )
            if window or baseline or until:
                raise InputError("--window, --baseline and --until belong to --flow", {})
            profile = _reference_profile(store, reference)
            table, source = read_table(current), str(current)
        comparison = compare(
            profile, table, method, mode=compat, num_method=num_method, cat_method=cat_method
        )
        rows = len(next(iter(table.values())))
        data = report_data(
            profile, comparison, current_source=source, current_rows=rows, mode=compat,
            methods=method, generated_at=iso_time(time.time()),
        )  # fmt: skip
    except KeelError as error:
        _fail(error)
    json_path, html_path = write_report(data, out)
    summary = data["summary"]
    typer.echo(
        f"{len(summary['drifted'])} of {summary['columns']} columns drifted"
        + (f": {', '.join(summary['drifted'])}" if summary["drifted"] else "")
    )
    for problem in data["problems"]:
        typer.echo(f"not compared: {problem}", err=True)
    typer.echo(f"wrote {html_path} and {json_path}", err=True)
    if summary["drifted"]:
        raise typer.Exit(1)


def _flow_windows(
    project: Path,
    store: Any,
    flow: str,
    window: str | None,
    baseline: str | None,
    until: str | None,
) -> tuple[Any, Any, str]:
    """The stored profile of a flow's baseline window, its current window's table, and
    the current window's name."""
    from keel.engine import open_engine  # noqa: PLC0415
    from keel.ledger.records import parse_instant  # noqa: PLC0415
    from keel.monitor.monitors import require_decisions  # noqa: PLC0415
    from keel.monitor.windows import duration, moment, read_window  # noqa: PLC0415

    with open_engine(project) as engine:
        end = parse_instant("until", until)
        current, base = engine.monitoring.windows(
            flow,
            moment(end).timestamp() if end else engine.clock(),
            duration("--window", window).total_seconds() if window else None,
            duration("--baseline", baseline).total_seconds() if baseline else None,
        )
        tables = []
        for label, span in (("baseline", base), ("current", current)):
            data = read_window(engine.ctx, flow, span)
            require_decisions(data, label, flow)
            tables.append(data.table())
    profile = store.profile(tables[0], f"{flow} {base.since}..{base.until}")
    return profile, tables[1], f"{flow} {current.since}..{current.until}"


@monitor_app.command("run")
def monitor_run(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    window: Annotated[
        str | None, typer.Option(help="The current window's length (default: the flow's).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="The baseline's length, right before the current window.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End of the current window; default now.")
    ] = None,
    method: Annotated[
        list[str] | None, typer.Option(help="Only these drift methods (repeatable).")
    ] = None,
    max_change: Annotated[
        float | None, typer.Option(help="Every rate breaches when it moves by this much.")
    ] = None,
    max_ratio: Annotated[
        float | None, typer.Option(help="Latency p99 breaches at this multiple of the baseline.")
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            "--record",
            help="Record the run by the flow's monitoring section: raise or resolve alarms, "
            "and let the governor act.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print every figure as JSON.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Compare a flow's last window with the baseline before it: drift of every input,
    signal score and action, and the behaviour figures (automation, escalation, override,
    guardrail-hit, fallback and model-error rates, latency p99). Thresholds come from the
    flow's monitoring section; options override them for a look that records nothing.
    Exits 1 on a breach.

    Example: keel monitor run credit_limit --window 1d --baseline 14d
    """
    from dataclasses import replace  # noqa: PLC0415

    from keel.flows.monitoring import LATENCY, RATES, Check  # noqa: PLC0415
    from keel.ledger.records import parse_instant  # noqa: PLC0415
    from keel.monitor.monitors import Limits, run_monitor  # noqa: PLC0415
    from keel.monitor.windows import duration, moment  # noqa: PLC0415

    overrides = [window, baseline, method, max_change, max_ratio]
    with _engine(project) as engine:
        if record and any(o is not None for o in overrides):
            raise InputError(
                "--record judges by the flow's monitoring section: leave out --window, "
                "--baseline, --method, --max-change and --max-ratio",
                {"flow": flow},
            )
        end = parse_instant("until", until)
        end_ts = moment(end).timestamp() if end else engine.clock()
        if record:
            run = engine.monitoring.run(flow, _cli_actor(), end_ts)
            if run["state"] != "judged":
                typer.echo(f"{flow}: run {run['id']} {run['state']}: {run['note']}", err=True)
                raise typer.Exit(2)
            result = run["result"]
        else:
            spec = engine.runtime(flow).flow.monitoring
            current, base = engine.monitoring.windows(
                flow,
                end_ts,
                duration("--window", window).total_seconds() if window else None,
                duration("--baseline", baseline).total_seconds() if baseline else None,
            )
            checks = dict(spec.checks)
            for name, check in checks.items():
                if name == LATENCY and max_ratio is not None:
                    checks[name] = Check(max_ratio, check.severity)
                elif name in RATES and max_change is not None:
                    checks[name] = Check(max_change, check.severity)
            limits = replace(Limits.of(spec), checks=checks, min_decisions=1)
            result = run_monitor(engine.ctx, flow, current, base, limits, method)
        if as_json:
            typer.echo(json.dumps(result if not record else run, indent=2, default=str))
        else:
            _show_run(flow, result)
            if record:
                for alarm in run["alarms"]:
                    acts = ", ".join(a["action"] for a in alarm["actions"]) or "no action"
                    typer.echo(f"  {alarm['kind']}: {alarm['id']} {alarm['monitor']} "
                               f"({alarm['severity']}) — {acts}")  # fmt: skip
    if result["breaches"]:
        raise typer.Exit(1)


@monitor_app.command("run-due")
def monitor_run_due(project: ProjectOpt = Path(".")) -> None:
    """Run every flow whose monitoring schedule (monitoring.every) has a period not yet
    run — what a server does by itself; for a cron job where no server runs.

    Example: keel monitor run-due
    """
    with _engine(project) as engine:
        runs = engine.monitoring.run_due()
    for run in runs:
        typer.echo(f"{run['flow']}: {run['id']} {run['state']}"
                   + (f" — breaches: {', '.join(run['breaches'])}" if run["breaches"] else "")
                   + (f" — {run['note']}" if run.get("note") else ""))  # fmt: skip
    if not runs:
        typer.echo("no scheduled run was due", err=True)


@monitor_app.command("runs")
def monitor_runs(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    project: ProjectOpt = Path("."),
) -> None:
    """A flow's recent monitor runs, newest first: windows, state, breaches.

    Example: keel monitor runs credit_limit --limit 5
    """
    with _engine(project) as engine:
        runs = engine.monitoring.runs(flow, limit)
    for run in runs:
        said = ", ".join(run["breaches"]) or run["note"] or "no breach"
        typer.echo(f"{run['id']}  {run['state']:<8} {run['trigger']:<10} "
                   f"[{run['current_since']}, {run['current_until']})  {said}")  # fmt: skip


@monitor_app.command("hold")
def monitor_hold(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    project: ProjectOpt = Path("."),
) -> None:
    """The hold on a flow (none, escalate_all or pause) and its history.

    Example: keel monitor hold credit_limit
    """
    with _engine(project) as engine:
        _print(engine.holds.show(flow))


@monitor_app.command("lift")
def monitor_lift(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Lift the governor's hold on a flow; refused while an alarm that set it fires.

    Example: keel monitor lift credit_limit -r "Income feed fixed, drift resolved"
    """
    with _engine(project) as engine:
        _print(engine.holds.lift(flow, _cli_actor(), reason))


@alarms_app.command("list")
def alarms_list(
    flow: Annotated[str | None, typer.Option(help="Only this flow's alarms.")] = None,
    state: Annotated[str | None, typer.Option(help="firing or resolved.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    project: ProjectOpt = Path("."),
) -> None:
    """Alarms, newest first.

    Example: keel alarms list --flow credit_limit --state firing
    """
    with _engine(project) as engine:
        found = engine.monitoring.alarms(flow, state, limit)
    for a in found:
        typer.echo(f"{a['id']}  {a['state']:<8} {a['severity']:<8} {a['flow']}/{a['monitor']}"
                   f"  since {a['opened_at']}  {a['summary']}")  # fmt: skip
    if not found:
        typer.echo("no alarms", err=True)


@alarms_app.command("show")
def alarms_show(
    alarm_id: Annotated[str, typer.Argument(help="The alarm (alm_…).")],
    project: ProjectOpt = Path("."),
) -> None:
    """One alarm with its evidence and what the governor did about it.

    Example: keel alarms show alm_0193...
    """
    with _engine(project) as engine:
        _print(engine.monitoring.alarm(alarm_id))


@alarms_app.command("resolve")
def alarms_resolve(
    alarm_id: Annotated[str, typer.Argument(help="The alarm (alm_…).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Resolve a firing alarm by hand; holds and autonomy stay as the governor left them.

    Example: keel alarms resolve alm_0193... -r "New price list explains the shift"
    """
    with _engine(project) as engine:
        _print(engine.monitoring.resolve(alarm_id, _cli_actor(), reason))


def _show_run(flow: str, result: dict[str, Any]) -> None:
    current, base = result["current"], result["baseline"]
    typer.echo(
        f"{flow}: {current['decisions']:,} decisions in [{current['since']}, "
        f"{current['until']}) against {base['decisions']:,} in [{base['since']}, "
        f"{base['until']})"
    )
    for check in result["behaviour"]:
        mark = {"breach": "BREACH", "band": "near"}.get(check["verdict"], "")
        typer.echo(
            f"  {check['figure']:<20} {_plain(check['baseline']):>10} → "
            f"{_plain(check['current']):>10}  {mark}"
        )
    drift = result["drift"]
    typer.echo(
        f"  drift: {len(drift['summary']['drifted'])} of {drift['summary']['columns']} "
        f"columns" + (f" ({', '.join(drift['summary']['drifted'])})"
                      if drift["summary"]["drifted"] else "")
    )  # fmt: skip
    for problem in drift["problems"]:
        typer.echo(f"  not compared: {problem}")


def _plain(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _days_before(instant: str, days: int) -> str:
    from datetime import datetime, timedelta  # noqa: PLC0415

    from keel.ledger.records import iso_time  # noqa: PLC0415

    moment = datetime.fromisoformat(instant.replace("Z", "+00:00")) - timedelta(days=days)
    return iso_time(moment.timestamp())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    audit_sink: Annotated[
        Path | None, typer.Option(help="Also append audit events to this JSON-lines file.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Serve the project's HTTP API (uvicorn); every route but /healthz and /readyz needs a key.

    Example: keel serve --port 8080 --workers 2
    """
    import os  # noqa: PLC0415

    try:
        import uvicorn  # noqa: PLC0415
    except ImportError:
        from keel.errors import MissingExtraError  # noqa: PLC0415

        _fail(MissingExtraError("server", "keel serve"))
    from keel.api.server import ENV_AUDIT_SINK, ENV_PROJECT  # noqa: PLC0415

    os.environ[ENV_PROJECT] = str(project.resolve())
    if audit_sink is not None:
        os.environ[ENV_AUDIT_SINK] = str(audit_sink.resolve())
    uvicorn.run(
        "keel.api.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
