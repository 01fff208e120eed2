"""`keel serve` as a real HTTP server on 127.0.0.1, and the key and audit commands."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
from typer.testing import CliRunner

from keel.cli import app
from tests.conftest import LOW_RISK

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_keys_lifecycle_and_audit_export(project: Path) -> None:
    created = runner.invoke(
        app,
        [
            "keys",
            "create",
            "--name",
            "svc",
            "--role",
            "decider",
            "--flow",
            "credit_limit",
            "--expires-in",
            "30d",
            "-p",
            str(project),
        ],
    )
    assert created.exit_code == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("keel_") and "shown only now" in created.stderr
    prefix = token.split("_")[1]
    listed = runner.invoke(app, ["keys", "list", "-p", str(project)])
    assert (
        prefix in listed.stdout
        and "active" in listed.stdout
        and "decider@credit_limit" in listed.stdout
    )
    secret = token.split("_", 2)[2]  # base64url: the secret may itself hold "_"
    assert secret not in listed.stdout  # the secret is never shown again
    revoked = runner.invoke(app, ["keys", "revoke", prefix, "-p", str(project)])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    again = runner.invoke(app, ["keys", "revoke", prefix, "-p", str(project)])
    assert again.exit_code == 2 and "already revoked" in again.stderr
    bad = runner.invoke(
        app, ["keys", "create", "--name", "x", "--role", "wizard", "-p", str(project)]
    )
    assert bad.exit_code == 2 and "unknown role 'wizard'" in bad.stderr
    exported = runner.invoke(app, ["audit", "export", "-p", str(project)])
    actions = [json.loads(line)["action"] for line in exported.stdout.splitlines()]
    assert actions == ["key_created", "key_revoked"]


def test_key_roles_change_and_every_change_is_audited(project: Path) -> None:
    def keys(*args: str) -> Any:
        return runner.invoke(app, ["keys", *args, "-p", str(project)])

    token = keys("create", "--name", "ops", "--role", "viewer").stdout.strip()
    prefix = token.split("_")[1]
    granted = keys("grant", prefix, "--role", "reviewer", "--flow", "credit_limit")
    assert granted.exit_code == 0, granted.stderr
    assert "viewer@*, reviewer@credit_limit" in granted.stdout
    refusals = {
        "already has reviewer@credit_limit": (
            "grant",
            prefix,
            "--role",
            "reviewer",
            "--flow",
            "credit_limit",
        ),
        "does not have approver@*; it has viewer@*, reviewer@credit_limit": (
            "ungrant",
            prefix,
            "--role",
            "approver",
        ),
        "unknown role 'wizard'": ("grant", prefix, "--role", "wizard"),
        "no API key with prefix 'ffffffff'": ("grant", "ffffffff", "--role", "viewer"),
    }
    for message, args in refusals.items():
        refused = keys(*args)
        assert refused.exit_code == 2 and message in refused.stderr, refused.stderr
    removed = keys("ungrant", prefix, "--role", "viewer")
    assert removed.exit_code == 0 and "now has reviewer@credit_limit" in removed.stdout
    last = keys("ungrant", prefix, "--role", "reviewer", "--flow", "credit_limit")
    assert last.exit_code == 2 and "no role; revoke it instead" in last.stderr
    assert "reviewer@credit_limit" in keys("list").stdout  # refusals changed nothing
    keys("revoke", prefix)
    late = keys("grant", prefix, "--role", "viewer")
    assert late.exit_code == 2 and "was revoked" in late.stderr
    exported = runner.invoke(app, ["audit", "export", "-p", str(project)])
    assert exported.exit_code == 0
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("key_created", "ok"),
        ("role_granted", "ok"),
        ("role_granted", "refused"),
        ("role_removed", "refused"),
        ("role_granted", "refused"),
        ("role_removed", "ok"),
        ("role_removed", "refused"),
        ("key_revoked", "ok"),
        ("role_granted", "refused"),
    ]


def test_serve_answers_over_http(project: Path) -> None:
    token = runner.invoke(
        app,
        [
            "keys",
            "create",
            "--name",
            "svc",
            "--role",
            "owner",
            "--flow",
            "credit_limit",
            "-p",
            str(project),
        ],
    ).stdout.strip()
    with (project / "keel.yaml").open("a") as settings:
        settings.write("reviews: {sweep_s: 1}\n")  # the server records breaches every second
        settings.write("monitors: {check_s: 1}\n")  # and looks for due monitors as often
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write("review: {deadline: 1s}\n")
        flow.write("monitoring: {window: 1h, baseline: 1d, every: 2s}\n")
    port = free_port()
    sink = project / "audit.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (project / "serve.log").open("w")
    command = [sys.executable, "-m", "keel.cli", "serve", "--port", str(port)]
    command += ["--audit-sink", str(sink), "-p", str(project)]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError((project / "serve.log").read_text())
        headers = {"Authorization": f"Bearer {token}"}
        response = httpx.post(
            f"{base}/v1/flows/credit_limit/decisions", json={"inputs": LOW_RISK}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert httpx.get(f"{base}/v1/flows").status_code == 401
        waiting = {**LOW_RISK, "credit_history_years": 0.5}
        response = httpx.post(
            f"{base}/v1/flows/credit_limit/decisions", json={"inputs": waiting}, headers=headers
        )
        assert response.json()["status"] == "pending_review"
        for _ in range(100):  # the server's own sweep records the breach
            with sqlite3.connect(project / "keel.db") as conn:
                found = conn.execute(
                    "select record_id from ledger where kind = 'review_breached'"
                ).fetchall()
            if found:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("no deadline breach recorded by the server")
        for _ in range(100):  # the server runs the flow's monitors on their schedule
            runs = httpx.get(f"{base}/v1/flows/credit_limit/monitor-runs", headers=headers)
            assert runs.status_code == 200, runs.text
            scheduled = [r for r in runs.json()["runs"] if r["trigger"] == "schedule"]
            if scheduled:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("no scheduled monitor run: " + (project / "serve.log").read_text())
        # Two decisions in a day: too few to judge, and the run says so.
        assert scheduled[0]["state"] == "skipped" and "no decisions" in scheduled[0]["note"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    lines = [json.loads(line) for line in sink.read_text().splitlines()]
    assert any(e["action"] == "decide" and e["outcome"] == "ok" for e in lines)
