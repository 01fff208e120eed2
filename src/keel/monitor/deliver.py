"""Delivering alarms and retraining requests: signed webhooks, and commands.

A webhook gets ``POST`` with the JSON body and ``Content-Type: application/json``; when its
``secret_env`` names a set environment variable, the header
``X-Keel-Signature: sha256=<hex HMAC-SHA256 of the body under that secret>`` lets the
receiver check the sender (as GitHub's webhooks do). Three tries, 0.5 s and 2 s apart; a
2xx answer is a delivery. A command gets the same JSON on its standard input, runs in the
project folder with ``KEEL_FLOW`` and ``KEEL_ALARM`` set, for at most a minute; exit 0 is
a delivery. A failed delivery is logged (never the secret) and counted; it never undoes
what the alarm recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keel.flows.monitoring import Webhook
from keel.telemetry import log

TRIES = 3
PAUSES_S = (0.5, 2.0)
TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
SIGNATURE_HEADER = "X-Keel-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(hook: Webhook, payload: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """POST ``payload`` to ``hook``; returns ``{"to", "ok", "status"|"error", "tries"}``."""
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "keel"}
    if hook.secret_env:
        secret = environ.get(hook.secret_env)
        if not secret:
            log.error(
                "webhook %s not sent: its secret variable %s is not set", hook.url, hook.secret_env
            )
            return {"to": hook.url, "ok": False, "error": f"{hook.secret_env} is not set"}
        headers[SIGNATURE_HEADER] = signature(secret, body)
    error = ""
    for attempt in range(TRIES):
        if attempt:
            time.sleep(PAUSES_S[attempt - 1])
        # http(s) only: the flow file's parser refuses any other scheme
        request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310
                return {"to": hook.url, "ok": True, "status": answer.status, "tries": attempt + 1}
        except urllib.error.HTTPError as failed:
            error = f"HTTP {failed.code}"
            if failed.code < 500 and failed.code != 429:
                break  # the receiver refused it; sending it again would not change that
        except (OSError, urllib.error.URLError) as failed:
            error = str(getattr(failed, "reason", failed))
    log.error("webhook %s failed after %d tries: %s", hook.url, attempt + 1, error)
    return {"to": hook.url, "ok": False, "error": error, "tries": attempt + 1}


def run_command(
    argv: tuple[str, ...], payload: Mapping[str, Any], cwd: Path, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Run ``argv`` with ``payload`` as JSON on its standard input."""
    env = {
        **environ,
        "KEEL_FLOW": str(payload.get("flow", "")),
        "KEEL_ALARM": str(payload.get("alarm", {}).get("id", "")),
    }
    shown = " ".join(argv)
    try:
        done = subprocess.run(  # noqa: S603 - argv from the flow file, no shell
            list(argv),
            input=json.dumps(payload, sort_keys=True, default=str).encode(),
            cwd=cwd,
            env=env,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as failed:
        log.error("retraining command %r failed: %s", shown, failed)
        return {"command": shown, "ok": False, "error": str(failed)}
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        log.error("retraining command %r exited %d: %s", shown, done.returncode, tail)
        return {"command": shown, "ok": False, "exit": done.returncode, "error": tail}
    return {"command": shown, "ok": True, "exit": 0}
