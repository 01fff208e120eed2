"""Rate limits per caller: in each process, or shared through the store by every worker
process and node on it. Two apps on one store stand for two workers; time is the
injected clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel import open_engine
from keel.api import create_app
from keel.config import load_settings
from keel.errors import ConfigError
from keel.security.apikeys import create_key
from keel.security.audit import AuditLog
from keel.security.limits import LEASE_TTL_S, RateLimitedError, SharedRateLimiter
from keel.security.roles import Grant, Role
from tests.conftest import Clock


def configure(project: Path, api: str) -> None:
    with (project / "keel.yaml").open("a") as settings:
        settings.write(f"api: {{{api}}}\n")


@contextmanager
def two_workers(
    project: Path, env: dict[str, str], clock: Clock, workers: int = 1
) -> Iterator[tuple[TestClient, TestClient, str]]:
    """Two engines and apps on one store (each with its own connections and buckets, as
    two worker processes have), and a viewer key for both."""
    with ExitStack() as stack:
        clients = []
        for _ in range(2):
            engine = stack.enter_context(open_engine(project, environ=env, clock=clock))
            audit = AuditLog(engine.db, clock=clock)
            stack.callback(audit.close)  # before the engine closes: registered after it
            app = create_app(engine, audit, workers)
            clients.append(stack.enter_context(TestClient(app)))
        _, token = create_key(engine.db, "v", "v", [Grant(Role.VIEWER)], "t", clock())
        yield clients[0], clients[1], token


def statuses(client: TestClient, token: str, count: int) -> list[int]:
    headers = {"Authorization": f"Bearer {token}"}
    return [client.get("/v1/flows", headers=headers).status_code for _ in range(count)]


def test_shared_limits_hold_across_workers(project: Path, env: dict[str, str]) -> None:
    configure(project, "rate_per_s: 1, burst: 3, rate_limits: shared")
    clock = Clock()
    with two_workers(project, env, clock) as (first, second, token):
        assert statuses(first, token, 2) == [200, 200]
        assert statuses(second, token, 1) == [200]  # the third token of the one bucket
        refused = second.get("/v1/flows", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert refused.headers["retry-after"] == "1"
        assert statuses(first, token, 1) == [429]  # the other worker sees the same bucket
        clock.advance(1.0)  # one token back
        assert statuses(second, token, 2) == [200, 429]
        clock.advance(10.0)  # refilled to the burst, never beyond
        assert statuses(first, token, 4) == [200, 200, 200, 429]


def test_per_process_limits_allow_n_times_the_rate(project: Path, env: dict[str, str]) -> None:
    """The documented bound of ``rate_limits: process``: each worker its own bucket."""
    configure(project, "rate_per_s: 1, burst: 2, rate_limits: process")
    clock = Clock()
    with two_workers(project, env, clock, workers=2) as (first, second, token):
        assert statuses(first, token, 3) == [200, 200, 429]
        assert statuses(second, token, 3) == [200, 200, 429]  # 2 workers: twice the burst


def test_auto_shares_the_limits_when_more_than_one_worker_serves(
    project: Path, env: dict[str, str]
) -> None:
    configure(project, "rate_per_s: 1, burst: 2")  # rate_limits: auto, the default
    clock = Clock()
    with two_workers(project, env, clock, workers=2) as (first, second, token):
        assert statuses(first, token, 2) == [200, 200]
        assert statuses(second, token, 1) == [429]
    with two_workers(project, env, clock, workers=1) as (first, second, token):
        assert statuses(first, token, 3) == [200, 200, 429]
        assert statuses(second, token, 1) == [200]  # one worker: its own buckets


def test_failed_logins_are_limited_across_workers_when_shared(
    project: Path, env: dict[str, str]
) -> None:
    configure(project, "rate_limits: shared")
    clock = Clock()
    with two_workers(project, env, clock) as (first, second, _):
        bad = {"Authorization": "Bearer keel_abcdefgh_not-a-secret"}
        codes = [first.get("/v1/flows", headers=bad).status_code for _ in range(6)]
        codes += [second.get("/v1/flows", headers=bad).status_code for _ in range(6)]
        # A burst of 10 failures per source, spent from both workers; then 429.
        assert codes == [401] * 10 + [429] * 2
        refused = second.get("/v1/flows", headers=bad)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


def test_rate_limits_setting_is_checked(project: Path) -> None:
    assert load_settings(project, {}).rate_limits == "auto"
    configure(project, "rate_limits: cluster")
    with pytest.raises(ConfigError, match=r"api\.rate_limits must be one of auto, process"):
        load_settings(project, {})


def test_shared_buckets_leave_the_ledgers_commits_durable(project: Path) -> None:
    """A bucket's commit skips the fsync (it may be lost to a power failure); the SQLite
    connection it used goes back to the pool with synchronous = FULL (2) for the ledger."""
    clock = Clock()
    with open_engine(project, environ={}, clock=clock) as engine:
        limiter = SharedRateLimiter(engine.db, "api", 1, 2, clock)
        limiter.take("key:a")
        limiter.take("key:a")
        with pytest.raises(RateLimitedError):
            limiter.take("key:a")
        with engine.db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert limiter.refused == 1


def test_shared_buckets_spend_each_token_once_under_contention(
    project: Path, env: dict[str, str], low_risk: dict[str, object]
) -> None:
    """32 threads on two engines (more than a connection pool holds) spend one bucket
    while decisions are written: exactly the burst gets through, and nothing starves."""
    clock = Clock()
    with (
        open_engine(project, environ=env, clock=clock) as first,
        open_engine(project, environ=env, clock=clock) as second,
    ):
        limiters = [SharedRateLimiter(e.db, "api", 1e-9, 100, clock) for e in (first, second)]
        taken: list[bool] = []
        lock = threading.Lock()

        def spend(limiter: SharedRateLimiter) -> None:
            for _ in range(5):
                try:
                    limiter.take("key:busy")
                    ok = True
                except RateLimitedError:
                    ok = False
                with lock:
                    taken.append(ok)

        threads = [threading.Thread(target=spend, args=(limiters[i % 2],)) for i in range(32)]
        for thread in threads:
            thread.start()
        decided = [first.decide("credit_limit", low_risk) for _ in range(5)]
        for thread in threads:
            thread.join(timeout=120)
        assert len(taken) == 160
        assert taken.count(True) == 100  # the burst, spent exactly once across both
        assert sum(limiter.refused for limiter in limiters) == 60
        assert len(decided) == 5 and first.verify().ok


def test_shared_buckets_are_leased_never_overspent(project: Path, env: dict[str, str]) -> None:
    """At a high rate a worker leases a few tokens at once (LEASE_S of the rate) and spends
    them in memory: the stored bucket pays first, so the workers together never get more
    than the burst; tokens parked in one worker can refuse another at most one lease early,
    and what is not spent lapses after LEASE_TTL_S."""
    clock = Clock()
    with (
        open_engine(project, environ=env, clock=clock) as first,
        open_engine(project, environ=env, clock=clock) as second,
    ):
        a, b = (SharedRateLimiter(e.db, "api", 200, 40, clock) for e in (first, second))
        assert a.lease == 10  # 200/s × 0.05 s
        a.take("key:hot")  # leases 10: one spent, nine parked in a
        spent_by_b = 0
        with pytest.raises(RateLimitedError):
            while True:
                b.take("key:hot")
                spent_by_b += 1
        assert spent_by_b == 30  # the stored bucket's rest: refused nine (one lease) early
        for _ in range(9):
            a.take("key:hot")  # a spends its lease without the store
        with pytest.raises(RateLimitedError):
            a.take("key:hot")  # 40 in all, the burst, and not one more
        clock.advance(LEASE_TTL_S)  # the store refills at the rate (200 tokens, capped at 40)
        granted = 0
        for limiter in (a, b) * 30:
            try:
                limiter.take("key:hot")
                granted += 1
            except RateLimitedError:
                pass
        assert granted == 40


def test_threads_out_of_tokens_wait_for_one_lease(project: Path) -> None:
    """Forty threads of one worker run out of their lease at once: one of them leases
    again and the others spend from it, so none is refused while the store has tokens."""
    clock = Clock()
    with open_engine(project, environ={}, clock=clock) as engine:
        limiter = SharedRateLimiter(engine.db, "api", 200, 100, clock)
        results: list[bool] = []
        lock = threading.Lock()

        def spend() -> None:
            for _ in range(5):
                try:
                    limiter.take("key:herd")
                    ok = True
                except RateLimitedError:
                    ok = False
                with lock:
                    results.append(ok)

        threads = [threading.Thread(target=spend) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(results) == 200
        assert results.count(True) == 100  # the burst, every token spent, none parked
