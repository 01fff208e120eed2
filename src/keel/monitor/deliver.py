"""One try at delivering an alarm notice or a retraining request: a signed webhook, or a
command. Retries, backoff and dead-lettering are the outbox's (``keel.monitor.outbox``).

A webhook gets ``POST`` with the JSON body and ``Content-Type: application/json``, and the
delivery's id in ``X-Keel-Delivery`` (also ``delivery`` in the body): a delivery may
arrive more than once, always with the same id, so receivers deduplicate on it. When the
hook's ``secret_env`` names a set environment variable, the header
``X-Keel-Signature: sha256=<hex HMAC-SHA256 of the body under that secret>`` lets the
receiver check the sender (as GitHub's webhooks do). A 2xx answer is a delivery. A command
gets the same JSON on its standard input, runs in the project folder with ``KEEL_FLOW``,
``KEEL_ALARM`` and ``KEEL_DELIVERY`` set, for at most a minute; exit 0 is a delivery.

What a failed try says (``Attempt.error``) is short and scrubbed: a status code, an
exception type or an exit code, never a URL, an answer's text or a command's output,
which may hold credentials or personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from keel.flows.monitoring import Webhook

TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
SIGNATURE_HEADER = "X-Keel-Signature"
DELIVERY_HEADER = "X-Keel-Delivery"
ERROR_MAX = 200


@dataclass(frozen=True)
class Attempt:
    """How one try went. ``final``: the receiver refused the delivery itself (a 4xx other
    than 408 and 429); sending it again would not change that."""

    ok: bool
    error: str | None = None
    final: bool = False


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(hook: Webhook, body: bytes, delivery_id: str, environ: Mapping[str, str]) -> Attempt:
    """POST ``body`` to ``hook`` once, signed when it has a secret."""
    headers = {"Content-Type": "application/json", "User-Agent": "keel",
               DELIVERY_HEADER: delivery_id}  # fmt: skip
    if hook.secret_env:
        secret = environ.get(hook.secret_env)
        if not secret:
            return Attempt(False, f"secret variable {hook.secret_env} is not set")
        headers[SIGNATURE_HEADER] = signature(secret, body)
    # http(s) only: the flow file's parser refuses any other scheme
    request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S):  # noqa: S310
            return Attempt(True)
    except urllib.error.HTTPError as failed:
        return Attempt(False, f"HTTP {failed.code}", 400 <= failed.code < 500
                       and failed.code not in (408, 429))  # fmt: skip
    except urllib.error.URLError as failed:
        reason = failed.reason
        return Attempt(False, reason if isinstance(reason, str) and "://" not in reason
                       else type(reason).__name__)  # fmt: skip
    except (OSError, ValueError, http.client.HTTPException) as failed:
        # timeouts, resets, an answer that is not HTTP, a URL urllib cannot use
        return Attempt(False, type(failed).__name__)


def run_command(
    argv: tuple[str, ...],
    body: bytes,
    names: Mapping[str, str],
    cwd: Path,
    environ: Mapping[str, str],
) -> Attempt:
    """Run ``argv`` once with ``body`` on its standard input; ``names`` are set in its
    environment (``KEEL_FLOW``, ``KEEL_ALARM``, ``KEEL_DELIVERY``)."""
    try:
        done = subprocess.run(  # noqa: S603 - argv from the flow file, no shell
            list(argv),
            input=body,
            cwd=cwd,
            env={**environ, **names},
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as failed:
        return Attempt(False, type(failed).__name__)
    if done.returncode != 0:
        return Attempt(False, f"exit {done.returncode}")
    return Attempt(True)
