"""Spooler on Redis, end to end: real headrace servers (a "web" host whose requests spool, a
"worker" host whose spoolers run the tasks) sharing a real redis-server on 127.0.0.1, which
the tests kill and restart, as they kill spoolers, in the middle of work.

The app is tests/apps/redis_spool.py (uWSGI's `@spool`); every task leaves start/done files in
the record directory, named after the task and the host and pid that ran it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support import app, children, free_port, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server is not installed (./dev test installs it: apt-get install redis-server)",
)

APP = app("redis_spool.py")
QUEUE = "tasks"
KEY = f"headrace:spooler:{{{QUEUE}}}"


class Redis:
    """One redis-server on a free 127.0.0.1 port, durable (every write fsynced before it is
    acknowledged), stopped by its PID at the end of the test."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.cli_ok("PING") == "PONG", 10, "redis-server to answer PING")

    def kill(self) -> None:
        """SIGKILL, by pid: nothing is flushed that was not already."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"queue": QUEUE, **params}.items())
        return f"redis://127.0.0.1:{self.port}/1?{query}"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "-n", "1", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    def cli_ok(self, *args: str) -> str | None:
        try:
            return self.cli(*args)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return None


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    yield r
    r.kill()


def marks(record: Path, kind: str, name: str | None = None) -> list[tuple[str, str, int, int]]:
    """(name, host, pid, ns) of every `kind` mark ("start", "done"), oldest first."""
    out = []
    for p in record.iterdir():
        parts = p.name.split(".")
        if len(parts) != 5 or parts[0] != kind or (name is not None and parts[1] != name):
            continue
        out.append((parts[1], parts[2], int(parts[3]), int(parts[4])))
    return sorted(out, key=lambda m: m[3])


def spool(srv, **params) -> str:
    r = requests.get(srv.url("/spool"), params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.text


def spooler_args(url: str, processes: int = 1, *extra: str) -> list[str]:
    return [
        "--wsgi-file",
        APP,
        "--master",
        "--spooler",
        url,
        "--spooler-processes",
        str(processes),
        *extra,
    ]


def test_worker_host_runs_what_web_hosts_spool(redis, headrace):
    """Two headraces on one queue: every request's task runs once, on one of them; the name
    `uwsgi.spool` returned is the task's `spooler_task_name`."""
    web = headrace(*spooler_args(redis.url()), "--processes", "4", env={"HR_HOST": "web"})
    worker = headrace(*spooler_args(redis.url(), 2), env={"HR_HOST": "worker"})
    with ThreadPoolExecutor(20) as pool:
        names = list(pool.map(lambda i: spool(web, name=f"t{i}", sleep="0.2"), range(20)))
    assert len(set(names)) == 20, names
    record = web.record
    wait_until(lambda: len(marks(record, "done")) >= 20, 60, "20 tasks done")
    time.sleep(0.5)  # a second run of any of them would show now
    done = marks(record, "done")
    assert sorted(m[0] for m in done) == sorted(f"t{i}" for i in range(20)), done
    starts = marks(record, "start")
    assert len(starts) == 20, starts
    given = {}
    for p in record.iterdir():
        if p.name.startswith("start."):
            given[p.name.split(".")[1]] = p.read_text()
    assert sorted(given.values()) == sorted(names)
    assert redis.cli("ZCARD", f"{KEY}:ready") == "0"
    assert redis.cli("HLEN", f"{KEY}:tasks") == "0", "acknowledged tasks are deleted"
    assert worker.proc.poll() is None


def test_spooler_external_only_spools(redis, headrace, tmp_path):
    """uWSGI's `--spooler-external`: the web host spools to the queue and runs nothing; the
    tasks wait in Redis until a worker host starts."""
    web = headrace(
        "--wsgi-file", APP, "--master", "--spooler-external", redis.url(), env={"HR_HOST": "web"}
    )
    names = [spool(web, name=f"e{i}") for i in range(5)]
    time.sleep(1)
    assert marks(web.record, "start") == [], "the web host runs nothing"
    assert redis.cli("ZCARD", f"{KEY}:ready") == "5"
    headrace(*spooler_args(redis.url()), env={"HR_HOST": "worker"})
    wait_until(lambda: len(marks(web.record, "done")) >= 5, 30, "5 tasks done")
    assert {m[1] for m in marks(web.record, "done")} == {"worker"}
    assert len(names) == 5


def test_killed_spooler_task_runs_again_after_heartbeat_timeout(redis, headrace):
    """kill -9 of a spooler in the middle of a task: its lease has no heartbeat any more, and
    after the timeout the task goes back to the queue and runs again (at least once)."""
    url = redis.url(heartbeat_timeout="2")
    srv = headrace(*spooler_args(url), env={"HR_HOST": "worker"})
    spool(srv, name="slow", sleep="60")
    record = srv.record
    first = wait_until(lambda: marks(record, "start", "slow"), 30, "the task to start")[0]
    victim = first[2]
    assert redis.cli("HLEN", f"{KEY}:leased") == "1"
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time_ns()
    wait_until(lambda: marks(record, "done", "slow"), 30, "the task to run again and end")
    starts = marks(record, "start", "slow")
    assert len(starts) == 2, starts
    assert starts[1][2] != victim, "run by the respawned spooler"
    assert starts[1][3] > killed_at
    assert len(marks(record, "done", "slow")) == 1
    wait_until(lambda: redis.cli("HLEN", f"{KEY}:tasks") == "0", 10, "the task to be acked")


def test_worker_host_killed_whole_another_runs_its_task(redis, headrace):
    """A worker host dies at once (kill -9 of its master and every child, as a machine lost):
    its task runs on another worker host after the heartbeat timeout."""
    url = redis.url(heartbeat_timeout="2")
    lost = headrace(*spooler_args(url), env={"HR_HOST": "lost"})
    spool(lost, name="orphan", sleep="60")
    record = lost.record
    wait_until(lambda: marks(record, "start", "orphan"), 30, "the task to start")
    # The master first: killed after its children, it could respawn one (a new pid, not in
    # this list) in between, which then outlived it.
    kids = children(lost.proc.pid)
    os.kill(lost.proc.pid, signal.SIGKILL)
    for pid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    lost.proc.wait(10)
    headrace(*spooler_args(url), env={"HR_HOST": "spare"})
    done = wait_until(lambda: marks(record, "done", "orphan"), 30, "the task to run on the spare")
    assert [m[1] for m in done] == ["spare"]
    assert [m[1] for m in marks(record, "start", "orphan")] == ["lost", "spare"]


def test_redis_killed_and_restarted_loses_nothing(redis, headrace):
    """kill -9 of redis-server while tasks run, restart after a while: the spooler says so once,
    waits with backoff, comes back, and every task spooled before the kill runs exactly once
    (the one running when Redis died is acknowledged when it is back)."""
    srv = headrace(*spooler_args(redis.url()), env={"HR_HOST": "worker"})
    for i in range(8):
        spool(srv, name=f"r{i}", sleep="0.4")
    record = srv.record
    wait_until(lambda: len(marks(record, "done")) >= 2, 30, "2 tasks done")
    redis.kill()
    # Down for a while: once the spooler has said so, a second more (backoff 0.1, 0.2,
    # 0.4 s...: a few more tries, none of them said again).
    srv.wait_log("Redis unreachable", timeout=10)
    time.sleep(1)
    # Spooling now fails, and the request hears of it: not a task lost silently.
    r = requests.get(srv.url("/spool"), params={"name": "during"}, timeout=10)
    assert r.status_code == 500, r.text
    redis.start()
    wait_until(lambda: len(marks(record, "done")) >= 8, 60, "every task done")
    time.sleep(1)
    done = sorted(m[0] for m in marks(record, "done"))
    assert done == sorted(f"r{i}" for i in range(8)), done
    log = srv.log()
    assert log.count("Redis unreachable") == 1, srv.tail()
    assert "Redis reachable again" in log
    spool(srv, name="after")
    wait_until(lambda: marks(record, "done", "after"), 30, "a task spooled after the restart")


def test_spooler_started_before_redis_waits_for_it(redis, headrace):
    """Redis down when headrace starts: the server starts anyway, its spooler says once that
    Redis is unreachable, and runs tasks as soon as Redis is there."""
    redis.kill()
    srv = headrace(*spooler_args(redis.url()), env={"HR_HOST": "worker"})
    srv.wait_log("Redis unreachable", timeout=15)
    time.sleep(1.5)  # a few backoff steps
    redis.start()
    spool(srv, name="first")
    wait_until(lambda: marks(srv.record, "done", "first"), 30, "the task to run")
    assert srv.log().count("Redis unreachable") == 1, srv.tail()
    srv.wait_log("Redis reachable again")


def test_priorities_then_order_and_at(redis, headrace):
    """With one spooler busy, queued tasks run by priority (lower first, none last), then in
    the order they were spooled; a task with `at` waits for its time."""
    srv = headrace(*spooler_args(redis.url()), env={"HR_HOST": "worker"})
    record = srv.record
    # The blocker holds the one spooler while the others are spooled (a few ms); `late` is
    # due a second or more after it ends.
    spool(srv, name="blocker", sleep="2")
    wait_until(lambda: marks(record, "start", "blocker"), 30, "the blocker to start")
    at = int(time.time()) + 4
    spool(srv, name="late", priority="0", at=str(at))
    spool(srv, name="p5", priority="5")
    spool(srv, name="none")
    spool(srv, name="p1", priority="1")
    spool(srv, name="p5b", priority="5")
    wait_until(lambda: len(marks(record, "done")) >= 6, 60, "every task done")
    order = [m[0] for m in marks(record, "start")]
    assert order == ["blocker", "p1", "p5", "p5b", "none", "late"], order
    late = marks(record, "start", "late")[0]
    assert late[3] >= at * 10**9, "not before its time"


def test_failing_task_is_retried_then_dead_lettered(redis, headrace):
    """A task that always raises runs 1 + --spooler-max-retries times, then lands in the
    dead-letter list with its traceback; nothing loops."""
    srv = headrace(
        *spooler_args(redis.url(), 1, "--spooler-max-retries", "1"), env={"HR_HOST": "worker"}
    )
    name = spool(srv, name="doomed", fail="always")
    wait_until(lambda: redis.cli("LLEN", f"{KEY}:dead") == "1", 90, "the task to be buried")
    assert redis.cli("LRANGE", f"{KEY}:dead", "0", "-1") == name
    why = redis.cli("HGET", f"{KEY}:dead_why", name)
    assert "fails on purpose" in why, why
    assert len(marks(srv.record, "start", "doomed")) == 2
    assert redis.cli("ZCARD", f"{KEY}:ready") == "0"
    assert redis.cli("ZCARD", f"{KEY}:delayed") == "0"
    time.sleep(1)
    assert len(marks(srv.record, "start", "doomed")) == 2, "buried tasks do not run"
