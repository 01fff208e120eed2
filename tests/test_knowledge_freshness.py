"""Freshness of knowledge collections: a collection whose source folder was not synced
within its limit raises an alarm through the monitors, and a sync resolves it. The
clock is moved by hand; nothing sleeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from keel.cli import app
from keel.errors import NotFoundError
from keel.store.schema import ledger
from tests.conftest import Clock
from tests.knowledge_service import ALICE, CURATOR, OWNER, opened

runner = CliRunner()
LIMIT_S = 3600.0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_collection_not_synced_in_time_alarms_until_it_is_synced(
    backend: str, project: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "leave.md").write_text("# Leave\n\n25 days of paid leave a year.\n")
    clock = Clock()
    with opened(backend, project, clock) as (engine, knowledge, _):
        knowledge.create_collection(
            OWNER, "hr", owner="Olga", classification="internal",
            default_access=["role:reader"], source_folder=folder, sync_limit_s=LIMIT_S,
        )  # fmt: skip
        knowledge.create_collection(
            OWNER, "notes", owner="Olga", classification="internal",
            default_access=["role:reader"], source_folder=folder,
        )  # fmt: skip
        monitoring = engine.monitoring
        assert monitoring.check_freshness() == []  # never synced, but created just now
        clock.advance(LIMIT_S + 1)
        raised = monitoring.check_freshness()
        assert [(a.kind, a.monitor, a.severity) for a in raised] == [
            ("alarm_raised", "freshness", "warning")
        ]
        assert "collection 'hr'" in raised[0].summary and "never synced" in raised[0].summary
        assert monitoring.check_freshness() == []  # one alarm while it fires
        assert engine.run_scheduled().freshness_alarms == []

        listed = monitoring.alarms(CURATOR)  # a curator of hr sees it; a reader does not
        assert [(a.flow, a.state) for a in listed] == [("collection:hr", "firing")]
        assert listed[0].evidence["sync_limit_s"] == LIMIT_S
        assert monitoring.alarms(ALICE) == []
        with pytest.raises(NotFoundError):
            monitoring.alarm(raised[0].id, ALICE)
        with engine.db.read() as conn:
            entry = conn.execute(
                select(ledger.c.flow, ledger.c.record).where(ledger.c.kind == "alarm_raised")
            ).one()
        assert entry.flow == "collection:hr"
        assert json.loads(entry.record)["body"]["evidence"]["collection"] == "hr"

        knowledge.sync(CURATOR, "hr")
        resolved = monitoring.check_freshness()
        assert [a.kind for a in resolved] == ["alarm_resolved"]
        assert monitoring.alarm(raised[0].id, CURATOR).state == "resolved"

        clock.advance(LIMIT_S + 1)  # stale again: a new alarm, resolved by a person
        again = monitoring.check_freshness()
        assert [a.kind for a in again] == ["alarm_raised"] and again[0].id != raised[0].id
        done = monitoring.resolve(again[0].id, OWNER, "the share moves next week")
        assert (done.state, done.resolve_reason) == ("resolved", "the share moves next week")
        # still stale: the next check raises it again (the limit is the truth)
        assert [a.kind for a in monitoring.check_freshness()] == ["alarm_raised"]
        firing_id = monitoring.alarms(CURATOR, state="firing")[0].id
        report = engine.verify(deep=True)  # the alarms table agrees with the ledger
        assert report.ok, (report.problem, report.deep and report.deep.mismatch)
    if backend == "sqlite":
        shown = runner.invoke(app, ["alarms", "list", "--project", str(project)])
        assert shown.exit_code == 0, shown.output
        assert f"{firing_id}  firing   warning  collection:hr/freshness" in shown.output
