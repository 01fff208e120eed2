"""Load test of `keel serve` from a second process on 127.0.0.1, on SQLite and PostgreSQL.

    make bench-load     # = scripts/with-postgres.sh .venv/bin/python bench/load.py

An open-loop client sends decide requests for the demo flow at fixed rates over keep-alive
connections and measures each latency from the moment the request was due (so a stalled
server cannot hide its queue: no coordinated omission). The same client first runs against
bench/http_floor.py — FastAPI on uvicorn with no decision behind it — so the table shows
what the HTTP stack alone costs on this machine in the same run. Then it compares ledger appends
on PostgreSQL from 4 processes with raw PostgreSQL inserts of the same rows from 4
processes. Traffic goes only to 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing import get_context
from pathlib import Path
from typing import Any

RATES = (100, 250, 500)
SECONDS = 8
CONNECTIONS = 48


# ---- the client (runs in its own process) ----------------------------------------------


async def _client(
    port: int, token: str, bodies: list[bytes], rate: int, seconds: float
) -> dict[str, Any]:
    total = int(rate * seconds)
    interval = 1.0 / rate
    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    start = time.perf_counter() + 0.2
    cpu_start = os.times()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                index, due = await queue.get()
                if index < 0:
                    return
                body = bodies[index % len(bodies)]
                head = (
                    f"POST /v1/flows/credit_limit/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                writer.write(head + body)
                await writer.drain()
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - due)
                status = status_line.split()[1].decode() if status_line else "eof"
                if status != "200":
                    errors[status] = errors.get(status, 0) + 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    for i in range(total):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait((-1, 0.0))
    await asyncio.wait_for(asyncio.gather(*workers), timeout=seconds + 60)
    elapsed = time.perf_counter() - start
    cpu_end = os.times()
    cpu_s = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    latencies.sort()
    return {
        "rate": rate,
        "sent": total,
        "achieved": total / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
        "errors": errors,
        "client_cpu_ms": cpu_s * 1000 / total,
    }


def client_main(port: int, token: str, rate: int, seconds: float) -> dict[str, Any]:
    from keel.scaffold import generate_applicants
    from keel.scaffold.applicants import case_inputs

    bodies = [
        json.dumps({"inputs": case_inputs(a), "subject_id": f"load-{i}"}).encode()
        for i, a in enumerate(generate_applicants(2000, seed=5))
    ]
    return asyncio.run(_client(port, token, bodies, rate, seconds))


# ---- the server and the runs ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    project: Path | None, env: dict[str, str], workers: int
) -> tuple[subprocess.Popen[bytes], int]:
    """`keel serve` on ``project``, or the bare-stack reference (bench/http_floor.py)."""
    port = free_port()
    if project is None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "http_floor:create_app",
            "--factory",
            "--app-dir",
            str(Path(__file__).parent),
            "--log-level",
            "warning",
        ]
    else:
        command = [sys.executable, "-m", "keel.cli", "serve", "-p", str(project)]
    command += ["--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    import httpx2 as httpx

    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server, port
        except httpx.TransportError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("keel serve did not start")


def server_cpu_s(server: subprocess.Popen[bytes]) -> float:
    """CPU seconds used so far by the server and its worker processes (Linux /proc)."""
    pids = [server.pid]
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def load_runs(
    label: str,
    project: Path | None,
    env: dict[str, str],
    token: str,
    workers: int,
    seconds: float,
    floor: dict[int, float] | None = None,
) -> dict[int, float]:
    """Run every rate against one server; return p99 per rate (for the ratio to the floor)."""
    server, port = serve(project, env, workers)
    ctx = get_context("spawn")
    p99: dict[int, float] = {}
    try:
        what = "keel serve" if project is not None else "bench/http_floor.py on uvicorn"
        print(
            f"\n### {label}: {what} --workers {workers}, {CONNECTIONS} client connections, "
            f"{seconds:.0f} s per rate"
        )
        with ctx.Pool(1) as pool:  # warm-up: connections, model and database caches
            pool.apply(client_main, (port, token, 100, 2.0))
        ratio = " p99 / floor p99 |" if floor else ""
        print(
            "| rate (req/s) | achieved | p50 ms | p99 ms | max ms | errors | "
            f"server CPU ms/req | client CPU ms/req |{ratio}"
        )
        print("|---|---|---|---|---|---|---|---|" + ("---|" if floor else ""))
        for rate in RATES:
            cpu = server_cpu_s(server)
            with ctx.Pool(1) as pool:
                r = pool.apply(client_main, (port, token, rate, seconds))
            server_ms = (server_cpu_s(server) - cpu) * 1000 / r["sent"]
            p99[rate] = r["p99_ms"]
            extra = f" {r['p99_ms'] / floor[rate]:.1f}× |" if floor else ""
            print(
                f"| {rate} | {r['achieved']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['max_ms']:.1f} | {sum(r['errors'].values())} {r['errors'] or ''} | "
                f"{server_ms:.2f} | {r['client_cpu_ms']:.2f} |{extra}"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return p99


# ---- ledger appends on PostgreSQL: 4 processes, Keel vs raw --------------------------------


def _const(body: dict[str, Any]) -> Any:
    return lambda _gate: body


def _append_worker(
    project: str, url: str, count: int, batch: int, bodies: list[dict[str, Any]]
) -> float:
    from keel import open_engine
    from keel.ledger.records import new_id
    from keel.ledger.writer import Pending

    with open_engine(project, environ={"KEEL_DATABASE_URL": url}) as engine:
        start = time.perf_counter()
        for i in range(0, count, batch):
            engine.writer.append(
                [
                    Pending(
                        "decision",
                        new_id("dec"),
                        "credit_limit",
                        _const(bodies[(i + j) % len(bodies)]),
                    )
                    for j in range(batch)
                ]
            )
        return time.perf_counter() - start


def _raw_worker(url: str, rows: list[tuple[Any, ...]], batch: int) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO raw_ledger VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    rows[i : i + batch],
                )
        return time.perf_counter() - start


def pg_appends(
    project: Path, admin: str, processes: int = 4, per_process: int = 5000, batch: int = 50
) -> None:
    import sqlalchemy as sa

    server = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.replace("/postgres?", f"/{name}?")
    from keel import open_engine

    with open_engine(project, environ={"KEEL_DATABASE_URL": url}) as engine:
        from keel.scaffold import generate_applicants
        from keel.scaffold.applicants import case_inputs

        cases = [case_inputs(a) for a in generate_applicants(200, seed=8)]
        bodies = [engine.entry(d.id).body for d in engine.decide_many("credit_limit", cases)]
    ctx = get_context("spawn")
    with ctx.Pool(processes) as pool:
        start = time.perf_counter()
        pool.starmap(_append_worker, [(str(project), url, per_process, batch, bodies)] * processes)
        keel_s = time.perf_counter() - start
    engine_ = sa.create_engine(url)
    with engine_.begin() as conn:
        rows = [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT seq, kind, record_id, flow, recorded_at, record, prev_hash, hash FROM ledger ORDER BY seq"
                )
            )
        ][-processes * per_process :]
        conn.execute(sa.text("CREATE TABLE raw_ledger (LIKE ledger INCLUDING ALL)"))
        verified = True
    engine_.dispose()
    with open_engine(project, environ={"KEEL_DATABASE_URL": url}) as engine:
        verified = engine.verify().ok and engine.verify().entries >= processes * per_process
    shares = [rows[i::processes] for i in range(processes)]
    with ctx.Pool(processes) as pool:
        start = time.perf_counter()
        pool.starmap(_raw_worker, [(url, share, batch) for share in shares])
        raw_s = time.perf_counter() - start
    n = processes * per_process
    print(f"\n### Ledger appends on PostgreSQL, {processes} processes, batches of {batch}")
    print(
        f"keel {n / keel_s:,.0f} appends/s (chain verifies: {verified}); raw inserts of the same rows "
        f"{n / raw_s:,.0f}/s; ratio {keel_s and (n / keel_s) / (n / raw_s):.0%}"
    )
    with server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rate-limits",
        choices=("auto", "shared", "process"),
        default="auto",
        help="api.rate_limits for the servers (auto: shared with more than one worker)",
    )
    args = parser.parse_args()
    from keel import open_engine
    from keel.scaffold import init_project
    from keel.security.apikeys import create_key
    from keel.security.roles import Grant, Role

    print(
        f"# Keel load — {time.strftime('%Y-%m-%d')} — {platform.node()} ({os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}), api.rate_limits: {args.rate_limits}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        project = init_project(Path(tmp) / "load")
        # The demo policy, with windows wide enough that load is not escalated by them.
        # One key sends all the load: lift its rate limit above the rates tried.
        with (project / "keel.yaml").open("a") as settings:
            settings.write(
                f"api:\n  rate_per_s: 100000\n  burst: 100000\n  rate_limits: {args.rate_limits}\n"
            )
        policy = project / "policies" / "credit_limit.yaml"
        policy.write_text(
            policy.read_text()
            .replace("      max: 200\n", "      max: 100000000\n")
            .replace("      max: 750000\n", "      max: 100000000000\n")
        )
        targets = [("SQLite (WAL, synchronous=FULL)", {})]
        admin = os.environ.get("KEEL_TEST_POSTGRES_URL")
        if admin:
            import sqlalchemy as sa

            name = f"keel_load_{uuid.uuid4().hex[:8]}"
            with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            targets.append(
                ("PostgreSQL", {"KEEL_DATABASE_URL": admin.replace("/postgres?", f"/{name}?")})
            )
        else:
            print("(PostgreSQL skipped: run through scripts/with-postgres.sh)")
        floor = load_runs(
            "Reference: the HTTP stack alone", None, {}, "reference", args.workers, args.seconds
        )
        for label, env in targets:
            with open_engine(project, environ=env) as engine:
                _, token = create_key(
                    engine.db, "load", "bench", [Grant(Role.DECIDER)], "bench", time.time()
                )
            load_runs(label, project, env, token, args.workers, args.seconds, floor)
        if admin:
            pg_appends(project, admin)


if __name__ == "__main__":
    main()
