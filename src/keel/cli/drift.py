"""``keel drift``: reference profiles of data, and drift reports of data files or of a
flow's recorded decisions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli._common import ProjectOpt, _engine, _fail
from keel.errors import InputError, KeelError

if TYPE_CHECKING:
    from keel.monitor.profile import Profile, ProfileStore

app = typer.Typer(help="Data drift: reference profiles and drift reports.")

ProfilesOpt = Annotated[
    Path | None,
    typer.Option(help="Where reference profiles are stored (default: PROJECT/.keel/profiles)."),
]


def _profile_store(project: Path, profiles: Path | None) -> ProfileStore:
    from keel.monitor.profile import ProfileStore  # noqa: PLC0415

    return ProfileStore(profiles) if profiles is not None else ProfileStore.of_project(project)


def _reference_profile(
    store: ProfileStore, reference: str, categorical: frozenset[str] = frozenset()
) -> Profile:
    """A stored profile by id (or a unique prefix of 12+ characters), else a data file,
    with ``categorical`` (a flow's category columns) profiled as categories."""
    from keel.monitor.drift_report import read_table  # noqa: PLC0415

    if (
        not Path(reference).exists()
        and len(reference) >= 12
        and all(ch in "0123456789abcdef" for ch in reference)
    ):
        return store.find(reference)
    return store.of_file(Path(reference), read_table, categorical)


def _flow_categories(project: Path, flow: str) -> frozenset[str]:
    """The drift columns the flow declares categories (``input.<field>``)."""
    return _flow_columns(project, flow)[0]


def _flow_columns(project: Path, flow: str) -> tuple[frozenset[str], dict[str, dict[str, str]]]:
    """The drift columns the flow declares categories (``input.<field>``), and the labels
    of their values, as a report of the flow's recorded decisions uses them."""
    from keel.monitor.windows import categorical_columns, category_labels  # noqa: PLC0415

    with _engine(project) as engine:
        definition = engine.runtime(flow).flow
        return categorical_columns(definition), category_labels(definition)


def _as_flow_columns(
    table: dict[str, Any],
    profile: Profile,
    categorical: frozenset[str],
    labels: dict[str, dict[str, str]],
) -> tuple[dict[str, Any], dict[str, dict[str, str]], list[str]]:
    """A data file's table with the flow's category columns (named FIELD or input.FIELD)
    read as categories whatever their values, as the flow's own windows hold them; the
    flow's value labels under the file's column names; and a note for each category column
    that the reference (a profile stored without the flow) holds as numbers, which is then
    compared as numbers."""
    from keel.monitor.profile import as_categories, flow_categories  # noqa: PLC0415

    wanted = flow_categories(table, categorical)
    numeric = sorted(n for n in wanted if n in profile.columns and profile.kind(n) == "numeric")
    typed = {
        n: as_categories(v) if n in wanted and n not in numeric else v for n, v in table.items()
    }
    named = {n: labels.get(n) or labels.get(f"input.{n}") for n in table}
    notes = [
        f"column '{n}' is a category of the flow but numeric in reference profile "
        f"{profile.id[:12]}: compared as numbers (build the profile with `keel drift profile "
        "--flow`)"
        for n in numeric
    ]
    return typed, {n: found for n, found in named.items() if found}, notes


@app.command("profile")
def drift_profile(
    data: Annotated[Path, typer.Argument(help="A Parquet or CSV file (needs keel[tables]).")],
    flow: Annotated[
        str | None,
        typer.Option(
            help="Build it for this flow: a column the flow declares a category (type: "
            "string, or allowed values), named FIELD or input.FIELD, is profiled as "
            "categories whatever its values."
        ),
    ] = None,
    profiles: ProfilesOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Build and store the reference profile of a data file (or find it, stored before),
    and print its id. Without --flow, a column's kind comes from its values: a column of
    integer codes is numeric.

    Example: keel drift profile training.parquet --flow credit_limit
    """
    try:
        categorical = _flow_categories(project, flow) if flow is not None else frozenset()
        profile = _reference_profile(_profile_store(project, profiles), str(data), categorical)
    except KeelError as error:
        _fail(error)
    kinds = Counter(profile.kind(c) for c in profile.columns)
    typer.echo(
        f"{profile.id}  {profile.rows:,} rows, {kinds['numeric']} numeric and "
        f"{kinds['categorical']} categorical columns, from {profile.source}"
    )


@app.command("report")
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
            help="Alone: a flow's recorded decisions, window against baseline. With "
            "--reference and --current: read the files' columns as the flow defines them "
            "(categories, value labels)."
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
    signal scores, action; the baseline's profile is stored like a file's). Two files with
    --flow take the flow's column kinds and labels: a column the flow declares a category
    (type: string, or allowed values), named FIELD or input.FIELD, is compared as categories
    whatever its values, and its values are shown by their labels. Exits 1 when a column
    drifted.

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
        notes: list[str] = []
        if flow is not None and reference is None and current is None:
            profile, table, source, labels = _flow_windows(
                project, store, flow, window, baseline, until
            )
        else:
            if reference is None or current is None:
                raise InputError(
                    "give --reference and --current (files or a profile), or --flow alone", {}
                )
            if window or baseline or until:
                raise InputError(
                    "--window, --baseline and --until belong to --flow without files", {}
                )
            categorical, flow_labels = (
                _flow_columns(project, flow) if flow is not None else (frozenset(), {})
            )
            profile = _reference_profile(store, reference, categorical)
            table, labels, notes = _as_flow_columns(
                read_table(current), profile, categorical, flow_labels
            )
            source = str(current)
        comparison = compare(
            profile, table, method, mode=compat, num_method=num_method, cat_method=cat_method
        )
        rows = len(next(iter(table.values())))
        data = report_data(
            profile, comparison, current_source=source, current_rows=rows, mode=compat,
            methods=method, generated_at=iso_time(time.time()), value_labels=labels,
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
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {html_path} and {json_path}", err=True)
    if summary["drifted"]:
        raise typer.Exit(1)


def _flow_windows(
    project: Path,
    store: ProfileStore,
    flow: str,
    window: str | None,
    baseline: str | None,
    until: str | None,
) -> tuple[Profile, dict[str, Any], str, dict[str, dict[str, str]]]:
    """The stored profile of a flow's baseline window, its current window's table, the
    current window's name, and the labels of the flow's categories."""
    from keel.ledger.records import parse_instant  # noqa: PLC0415
    from keel.monitor.windows import category_labels, duration, moment  # noqa: PLC0415

    with _engine(project) as engine:
        end = parse_instant("until", until)
        current, base, before, now = engine.monitoring.tables(
            flow,
            engine.operator,
            moment(end).timestamp() if end else None,
            duration("--window", window).total_seconds() if window else None,
            duration("--baseline", baseline).total_seconds() if baseline else None,
        )
        labels = category_labels(engine.runtime(flow).flow)
    profile = store.profile(before, f"{flow} {base.since}..{base.until}")
    return profile, now, f"{flow} {current.since}..{current.until}", labels
