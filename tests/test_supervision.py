"""Supervision, end to end through the real binary: respawn after a crash, harakiri, worker
recycling (--max-requests, --reload-on-rss, --max-worker-lifetime), graceful and chain reloads
(SIGHUP, --touch-reload, --touch-chain-reload) under load, signals, systemd socket activation and
readiness notification, privilege dropping, orphaned workers and --vacuum.

The app is tests/apps/supervised.py; its routes take their arguments in the path. Load loops use
a new connection per request (with `Connection: close`), so no request can race a keep-alive
close: every failed or reset request is a server fault and fails the test; nothing is retried.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import Server
from support import (
    MASTER_LINE,
    REPO,
    START_TIMEOUT,
    WORKER_LINE,
    app,
    build_request,
    free_port,
    headrace_cmd,
    pid_alive,
    run_headrace,
    server_env,
    wait_until,
)

SUP = app("supervised.py")
ML = re.MULTILINE
RESPAWNED = re.compile(r"Respawned headrace worker (\d+) \(new pid: (\d+)\)")
SPAWN_ANY = re.compile(r"(?:spawned headrace worker \d+ \(pid: |Respawned headrace worker \d+ "
                       r"\(new pid: )(\d+)")
CLOSED = (EOFError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


# --- helpers ------------------------------------------------------------------------------


def get(path: str) -> bytes:
    return build_request("GET", path, headers=[("Connection", "close")])


def fetch(srv: Server, path: str, timeout: float = 10.0):
    """One request on a new connection; the parsed response."""
    return srv.request(get(path), timeout=timeout)


def fetch_pid(srv: Server, timeout: float = 10.0) -> int:
    r = fetch(srv, "/pid", timeout)
    assert r.status == 200 and r.complete, r
    return int(r.body)


def stat_of(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of `pid`, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def live_children(pid: int) -> set[int]:
    """Children of `pid` that are not zombies (a /proc scan: this kernel has no
    /proc/PID/task/TID/children)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = stat_of(int(entry))
        if st and st[1] == pid and st[0] != "Z":
            out.add(int(entry))
    return out


def processes_mentioning(text: str) -> list[int]:
    """Live processes (not this one) whose command line contains `text`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry)):
            out.append(int(entry))
    return out


def worker_id_of(srv: Server, pid: int) -> int:
    """The worker id the log gave `pid` (a spawn or a respawn line)."""
    log = srv.log()
    for m in WORKER_LINE.finditer(log):
        if int(m.group(2)) == pid:
            return int(m.group(1))
    for m in RESPAWNED.finditer(log):
        if int(m.group(2)) == pid:
            return int(m.group(1))
    raise AssertionError(f"no spawn line for pid {pid}; log tail:\n{srv.tail()}")


def wait_regex(srv: Server, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
    """Poll the log (from offset `start`) until `pattern` (multiline) matches."""
    rx = re.compile(pattern, ML)
    deadline = time.monotonic() + timeout
    while True:
        m = rx.search(srv.log(), start)
        if m:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(
                f"log has no match for {pattern!r} after {timeout} s; tail:\n{srv.tail()}"
            )
        time.sleep(0.02)


def sleeping_pid(srv: Server, tag: str, timeout: float = 10.0) -> int:
    """The pid of the worker that printed the start marker of /sleep/.../TAG."""
    return int(wait_regex(srv, rf"^SUP-SLEEP-START (\d+) {re.escape(tag)}$", timeout).group(1))


class InBackground:
    """One request in a thread; `.result` is the Response or the exception, `.elapsed` its
    duration."""

    def __init__(self, srv: Server, path: str, timeout: float = 30.0):
        self.result: object = None
        self.elapsed = 0.0
        self._t = threading.Thread(target=self._run, args=(srv, path, timeout), daemon=True)
        self.started = time.monotonic()
        self._t.start()

    def _run(self, srv, path, timeout):
        try:
            self.result = fetch(srv, path, timeout)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            self.result = e
        self.elapsed = time.monotonic() - self.started

    def join(self, timeout: float) -> None:
        self._t.join(timeout)
        assert not self._t.is_alive(), f"the background request did not end within {timeout} s"


class Load:
    """`threads` x `count` GET requests of `path`, each on a new connection, bounded by
    `limit` s in all; every answer that is not a complete 200 is a failure."""

    def __init__(self, srv: Server, path: str, threads: int, count: int, limit: float = 60.0,
                 pause: float = 0.0):
        self.srv, self.path, self.count, self.pause = srv, path, count, pause
        self.deadline = time.monotonic() + limit
        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    @property
    def done(self) -> int:
        with self.lock:
            return len(self.bodies) + len(self.failures)

    def _run(self):
        for i in range(self.count):
            if time.monotonic() > self.deadline:
                with self.lock:
                    self.failures.append(f"{self.count - i} requests not sent: time limit")
                return
            try:
                r = fetch(self.srv, self.path, timeout=15)
                ok = r.status == 200 and r.complete
                what = r.body if ok else f"status {r.status} complete={r.complete} {r.body!r}"
            except Exception as e:  # noqa: BLE001 - counted as a failure
                ok, what = False, repr(e)
            with self.lock:
                (self.bodies if ok else self.failures).append(what)
            if self.pause:
                time.sleep(self.pause)

    def join(self) -> None:
        for t in self.threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + 20)
        assert not any(t.is_alive() for t in self.threads), "load threads did not finish"

    def assert_no_failures(self) -> None:
        assert not self.failures, (
            f"{len(self.failures)} of {self.done} requests failed, e.g. {self.failures[:5]}"
        )


class ChildSampler:
    """Counts the master's live children every ~20 ms until stopped."""

    def __init__(self, master: int):
        self.master = master
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(len(live_children(self.master)))
            self._stop.wait(0.02)

    def stop(self) -> list[int]:
        self._stop.set()
        self._t.join(5)
        return self.samples


def touch_later(path: Path) -> None:
    """Move the mtime clearly forward (a same-second rewrite must still count as a change)."""
    future = time.time() + 5
    os.utime(path, (future, future))


# --- 1. respawn after a crash ---------------------------------------------------------------


def test_kill9_idle_worker_is_respawned(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "1", workers=1)
    old = fetch_pid(srv)
    assert srv.worker_pids() == [old]
    # Idle means done with the request, log line included; and past the 1 s after its spawn
    # within which a death counts as a failure to start (and is respawned after a delay).
    srv.wait_request_lines(2)
    time.sleep(1.1)
    killed_at = time.monotonic()
    os.kill(old, signal.SIGKILL)
    new = None
    while time.monotonic() - killed_at < 5:
        try:
            new = fetch_pid(srv, timeout=5)
            break
        except (OSError, EOFError):
            time.sleep(0.02)
    answered_after = time.monotonic() - killed_at
    assert new is not None and new != old, f"answered by {new}, the killed worker was {old}"
    assert answered_after < 1.5, f"the replacement answered {answered_after:.2f} s after the kill"
    log = srv.wait_log("Respawned headrace worker 1", timeout=2)
    assert re.search(
        rf"^DAMN ! worker 1 \(pid: {old}\) died, killed by signal 9 \(SIGKILL\) :\( "
        r"trying respawn \.\.\.$", log, ML), srv.tail()
    m = RESPAWNED.search(log)
    assert int(m.group(2)) == new
    assert stat_of(new)[1] == srv.proc.pid, "the new worker is not the master's child"
    for _ in range(10):
        assert fetch_pid(srv) == new


def test_kill9_serving_worker_logs_the_lost_request(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "2", workers=2)
    slow = InBackground(srv, "/sleep/30/inflight")
    victim = sleeping_pid(srv, "inflight")
    wid = worker_id_of(srv, victim)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    m = wait_regex(srv, rf"^Respawned headrace worker {wid} \(new pid: (\d+)\)$", timeout=3)
    respawned_after = time.monotonic() - killed_at
    assert respawned_after < 1.2, f"respawned {respawned_after:.2f} s after the kill"
    new = int(m.group(1))
    assert re.search(
        rf"^DAMN ! worker {wid} \(pid: {victim}\) died, killed by signal 9 \(SIGKILL\), "
        r"1 request\(s\) in flight lost \(GET /sleep/30/inflight\) :\( trying respawn \.\.\.$",
        srv.log(), ML), srv.tail()
    slow.join(10)
    assert isinstance(slow.result, CLOSED) or not slow.result.complete, (
        f"the killed request got {slow.result!r}"
    )
    assert pid_alive(new) and stat_of(new)[1] == srv.proc.pid
    workers = live_children(srv.proc.pid)
    assert new in workers and victim not in workers and len(workers) == 2
    for _ in range(20):
        assert fetch_pid(srv) in workers


def test_worker_exit_code_is_logged(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "1", workers=1)
    pid = fetch_pid(srv)
    time.sleep(1.1)  # past the 1 s early-death window: respawned at once
    r = InBackground(srv, "/exit/7")
    r.join(10)
    assert isinstance(r.result, CLOSED) or not r.result.complete, r.result
    wait_regex(srv, rf"^DAMN ! worker 1 \(pid: {pid}\) died, exit code 7, 1 request\(s\) in "
                    r"flight lost \(GET /exit/7\) :\( trying respawn \.\.\.$", timeout=5)
    wait_regex(srv, r"^Respawned headrace worker 1 \(new pid: \d+\)$", timeout=2)
    assert "within 1s of spawning" not in srv.log(), "a worker that lived > 1 s was throttled"
    assert fetch_pid(srv) != pid


# --- 2 + 5. harakiri ------------------------------------------------------------------------


def test_harakiri_kills_the_stuck_worker_and_logs_its_traceback(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "2", "--harakiri", "2", workers=2)
    stuck = InBackground(srv, "/sleep/10/hk", timeout=15)
    victim = sleeping_pid(srv, "hk")
    wid = worker_id_of(srv, victim)
    # Short requests keep being answered by the other worker meanwhile.
    short_failures, short_pids = [], Counter()
    limit = time.monotonic() + 8
    while stuck.result is None and time.monotonic() < limit:
        try:
            r = fetch(srv, "/pid", timeout=5)
            if r.status == 200 and r.complete:
                short_pids[int(r.body)] += 1
            else:
                short_failures.append(r)
        except Exception as e:  # noqa: BLE001 - reported below
            short_failures.append(repr(e))
        time.sleep(0.05)
    stuck.join(10)
    assert not short_failures, short_failures[:5]
    assert sum(short_pids.values()) >= 10 and victim not in short_pids, short_pids
    assert isinstance(stuck.result, CLOSED) or not stuck.result.complete, (
        f"the stuck request got {stuck.result!r}"
    )
    assert 1.9 <= stuck.elapsed <= 4.5, f"cut after {stuck.elapsed:.2f} s, --harakiri 2"
    log = srv.wait_log("Respawned headrace worker", timeout=3)
    hk = re.search(rf"^HARAKIRI: worker {wid} \(pid {victim}\) stuck (\d+)s on GET /sleep/10/hk, "
                   r"killing$", log, ML)
    assert hk, srv.tail()
    assert 2 <= int(hk.group(1)) <= 4
    after = log[hk.end():]
    assert re.search(r"^(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$",
                     after, ML), f"no faulthandler thread header after the HARAKIRI line:\n{after}"
    assert re.search(r'^  File "[^"]*supervised\.py", line \d+ in stuck_in_sleep$', after,
                     ML), f"the traceback does not name stuck_in_sleep:\n{after}"
    assert re.search(rf"^DAMN ! worker {wid} \(pid: {victim}\) died, killed by signal 9 "
                     r"\(SIGKILL\)", log, ML), srv.tail()
    new = int(wait_regex(srv, rf"^Respawned headrace worker {wid} \(new pid: (\d+)\)$").group(1))
    # Two concurrent requests of one-thread workers must land on both workers: the new one serves.
    a, b = InBackground(srv, "/sleep/0.5/after-a"), InBackground(srv, "/sleep/0.5/after-b")
    a.join(10)
    b.join(10)
    pids = {int(x.result.body.split()[0]) for x in (a, b)}
    assert new in pids, f"the replacement {new} did not serve; {pids} did"


def test_harakiri_graceful_timeout_delays_the_kill(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "1", "--harakiri", "1",
                   "--harakiri-graceful-timeout", "2", workers=1)
    stuck = InBackground(srv, "/sleep/10/graceful", timeout=15)
    victim = sleeping_pid(srv, "graceful")
    stuck.join(12)
    assert isinstance(stuck.result, CLOSED) or not stuck.result.complete, stuck.result
    # harakiri 1 s (checked about once a second) + 2 s of SIGTERM grace before the SIGKILL
    assert 2.8 <= stuck.elapsed <= 5.5, f"cut after {stuck.elapsed:.2f} s"
    log = srv.wait_log("Respawned headrace worker 1", timeout=3)
    assert re.search(rf"^HARAKIRI: worker 1 \(pid {victim}\) stuck \d+s on GET "
                     r"/sleep/10/graceful, killing$", log, ML), srv.tail()
    assert re.search(rf"^DAMN ! worker 1 \(pid: {victim}\) died, killed by signal 9 \(SIGKILL\)",
                     log, ML), srv.tail()
    assert fetch_pid(srv) != victim


# --- 3. recycling ---------------------------------------------------------------------------


def test_max_requests_under_load_loses_nothing(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "2", "--max-requests", "10", workers=2)
    started = time.monotonic()
    load = Load(srv, "/pid", threads=8, count=63, limit=60)  # 504 requests
    load.join()
    took = time.monotonic() - started
    load.assert_no_failures()
    per_pid = Counter(int(b) for b in load.bodies)
    assert len(per_pid) >= 45, f"only {len(per_pid)} distinct workers served 500 requests"
    over = {p: n for p, n in per_pid.items() if n > 10}
    assert not over, f"workers served more than --max-requests 10: {over}"
    assert took < 30, f"500 requests took {took:.1f} s: recycled workers respawn slowly"
    assert "within 1s of spawning" not in srv.log(), "a recycled worker was throttled as a crash"
    assert re.search(r"^worker \d+ \(pid: \d+\) recycling: ", srv.log(), ML), srv.tail()


def test_max_requests_last_response_says_connection_close(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "1", "--max-requests", "3", probe=None)
    pid = srv.worker_pids()[0]
    with srv.connect() as c:
        answers = []
        for _ in range(3):
            c.send(build_request("GET", "/pid"))
            answers.append(c.read_response())
        assert [int(r.body) for r in answers] == [pid] * 3
        assert (answers[0].header("Connection") or "").lower() != "close"
        assert (answers[2].header("Connection") or "").lower() == "close", answers[2].headers
        assert c.closed_by_peer(5), "the recycled worker kept the connection open"
    wait_regex(srv, rf"^worker 1 \(pid: {pid}\) recycling: \S", timeout=5)
    wait_until(lambda: not pid_alive(pid), 5, "the recycled worker to exit")
    new = fetch_pid(srv)
    assert new != pid
    log = srv.log()
    assert not re.search(rf"\(pid: {pid}\) died, killed by signal", log), srv.tail()
    damn = re.search(rf"^DAMN ! worker 1 \(pid: {pid}\) died, (.*)$", log, ML)
    assert damn is None or damn.group(1).startswith("exit code 0"), damn.group(0)


def test_max_requests_delta_spreads_the_limits(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "1", "--max-requests", "4",
                   "--max-requests-delta", "4", probe=None)
    runs: list[list[int]] = []
    for _ in range(70):
        pid = fetch_pid(srv)
        if runs and runs[-1][0] == pid:
            runs[-1].append(pid)
        else:
            runs.append([pid])
    counts = [len(r) for r in runs[:-1]]  # the last worker may not have reached its limit
    assert len(counts) >= 6, counts
    assert all(4 <= n <= 8 for n in counts), f"requests per worker {counts}, limit 4 + 0..4"
    assert len(set(counts)) > 1, f"every worker got the same limit: {counts}"
    assert len({r[0] for r in runs}) == len(runs), "a pid served in two separate runs"


def vm_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_reload_on_rss(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "1", "--reload-on-rss", "150", probe=None)
    pid = srv.worker_pids()[0]
    assert fetch_pid(srv) == pid
    assert vm_rss_mb(pid) < 100, "the worker starts too big for this test to mean anything"
    assert fetch_pid(srv) == pid, "recycled below --reload-on-rss"
    with srv.connect() as c:
        c.send(build_request("GET", "/grow/200"))
        r = c.read_response()
        assert r.status == 200 and r.body.startswith(str(pid).encode()), r
        closed = c.closed_by_peer(5)
    wait_regex(srv, rf"^worker 1 \(pid: {pid}\) recycling: \S", timeout=5)
    wait_until(lambda: not pid_alive(pid), 5, "the big worker to exit")
    assert fetch_pid(srv) != pid
    assert closed, "the recycled worker kept the keep-alive connection open"
    assert (r.header("Connection") or "").lower() == "close", (
        f"the last response of a worker recycled for its RSS lacks Connection: close: {r.headers}"
    )


def test_max_worker_lifetime(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "1", "--max-worker-lifetime", "2",
                   probe=None)
    first = srv.worker_pids()[0]
    t0 = time.monotonic()
    assert fetch_pid(srv) == first
    seen = [first]
    while time.monotonic() - t0 < 7:
        p = fetch_pid(srv)
        if p != seen[-1]:
            seen.append(p)
            if len(seen) == 3:
                break
        time.sleep(0.1)
    assert len(seen) >= 2, "the worker was never replaced with --max-worker-lifetime 2"
    changed = wait_regex(srv, rf"^worker 1 \(pid: {first}\) recycling: \S", timeout=1)
    assert changed
    # The second worker is recycled too: the lifetime counts from each spawn.
    assert len(seen) == 3, f"only {seen} within 7 s"


def test_min_worker_lifetime_holds_recycling_back(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "1", "--max-requests", "1",
                   "--min-worker-lifetime", "2", probe=None)
    t0 = time.monotonic()
    spans: dict[int, list[float]] = {}
    while time.monotonic() - t0 < 6 and len(spans) < 3:
        spans.setdefault(fetch_pid(srv), []).append(time.monotonic() - t0)
        time.sleep(0.1)
    pids = list(spans)
    assert len(pids) >= 2, "never recycled with --max-requests 1 --min-worker-lifetime 2"
    first = spans[pids[0]]
    assert len(first) >= 10 and first[-1] >= 1.5, (
        f"the first worker served {len(first)} requests for {first[-1]:.1f} s; "
        "--min-worker-lifetime 2 should keep it for about 2 s"
    )
    assert first[-1] < 4, f"the first worker was kept {first[-1]:.1f} s"
    if len(pids) >= 3:
        assert len(spans[pids[1]]) >= 10, "the second worker was recycled too early"


# --- 4 + 10. graceful reloads under load ----------------------------------------------------

RELOADS = {
    # id: (extra args, trigger, chain)
    "sighup-lazy": (["--lazy-apps"], "hup", False),
    "sighup-reexec": ([], "hup", False),
    "chain-sighup": (["--lazy-apps", "--chain-reload"], "hup", True),
    "touch-chain": (["--lazy-apps", "--touch-chain-reload", "{touch}"], "touch", True),
    "touch-reload": (["--touch-reload", "{touch}"], "touch", False),
}


@pytest.mark.parametrize("mode", list(RELOADS))
def test_reload_under_load(headrace, tmp_path, mode):
    extra, trigger, chain = RELOADS[mode]
    processes = 2
    appfile = tmp_path / "reloadable.py"
    shutil.copy(SUP, appfile)
    touch = tmp_path / "reload.touch"
    touch.write_text("x")
    args = [a.replace("{touch}", str(touch)) for a in extra]
    srv = headrace("--wsgi-file", str(appfile), "--processes", str(processes), *args,
                   workers=processes)
    master = srv.proc.pid
    old = live_children(master)
    assert len(old) == processes, old
    assert fetch(srv, "/version").body.startswith(b"v1 ")
    if trigger == "touch":
        time.sleep(1.5)  # the watcher has seen the first mtime; untouched, nothing happens
        assert live_children(master) == old, "reloaded although the file was not touched"
    sampler = ChildSampler(master)
    load = Load(srv, "/version", threads=4, count=500, limit=60, pause=0.002)
    try:
        wait_until(lambda: load.done >= 300, 30, "300 requests before the reload")
        text = appfile.read_text()
        assert 'VERSION = "v1"' in text
        appfile.write_text(text.replace('VERSION = "v1"', 'VERSION = "v2-after-reload"'))
        touch_later(appfile)
        sent_at = load.done
        if trigger == "hup":
            os.kill(master, signal.SIGHUP)
        else:
            touch_later(touch)

        def reloaded():
            now = live_children(master)
            return len(now) == processes and not now & old and now
        new = wait_until(reloaded, 20, f"every worker replaced after the {mode} reload")
    finally:
        load.join()
        samples = sampler.stop()
    load.assert_no_failures()
    assert sent_at < 4 * 500 - 200, "the load ended before the reload started; nothing tested"
    assert srv.proc.poll() is None and pid_alive(master), "the master exited"
    assert {int(m.group(1)) for m in MASTER_LINE.finditer(srv.log())} == {master}, (
        "the master pid changed"
    )
    answers = [fetch(srv, "/version").body.decode() for _ in range(8)]
    assert all(a.startswith("v2-after-reload ") for a in answers), (
        f"the changed app is not served after the reload: {answers}"
    )
    assert {int(a.split()[1]) for a in answers} <= new
    # The load saw the new app too, so the reload happened while it ran.
    versions = Counter(b.split()[0] for b in load.bodies)
    assert set(versions) <= {b"v1", b"v2-after-reload"}, versions
    assert versions[b"v1"] >= 300 and versions[b"v2-after-reload"] > 0, (
        f"the load did not span the reload: {versions}"
    )
    if chain:
        assert max(samples) <= processes + 1, (
            f"up to {max(samples)} workers alive during a chain reload of {processes}"
        )
        assert min(samples) >= processes, (
            f"only {min(samples)} workers alive at some point during a chain reload"
        )


@pytest.mark.parametrize("mode", ["lazy", "reexec", "lazy-mercy-1"])
def test_reload_with_a_request_in_flight(headrace, mode):
    extra = {"lazy": ["--lazy-apps"], "reexec": [],
             "lazy-mercy-1": ["--lazy-apps", "--worker-reload-mercy", "1"]}[mode]
    srv = headrace("--wsgi-file", SUP, "--processes", "2", *extra, workers=2)
    master = srv.proc.pid
    old = live_children(master)
    secs = 10 if "mercy" in mode else 3
    slow = InBackground(srv, f"/sleep/{secs}/reload-{mode}", timeout=20)
    busy = sleeping_pid(srv, f"reload-{mode}")
    os.kill(master, signal.SIGHUP)

    def reloaded():
        now = live_children(master)
        return len(now) == 2 and not now & old and now
    if "mercy" in mode:
        # the old worker may keep its request for 1 s, then it is stopped by force
        slow.join(12)
        assert isinstance(slow.result, CLOSED) or not slow.result.complete, slow.result
        assert 0.8 <= slow.elapsed <= 3.5, (
            f"the in-flight request was cut after {slow.elapsed:.1f} s, --worker-reload-mercy 1"
        )
        wait_until(reloaded, 5, "every worker replaced")
    else:
        # The idle old worker goes, new workers serve, the busy one finishes its request.
        idle_old = old - {busy}
        wait_until(lambda: len(live_children(master) - old) >= 2
                   and not any(pid_alive(p) for p in idle_old), 5,
                   "the new workers and the exit of the idle old one")
        r = fetch(srv, "/pid", timeout=2)
        assert r.status == 200 and int(r.body) not in old, (
            "while the old worker finished its request, a new worker should answer"
        )
        assert pid_alive(busy), "the busy old worker was stopped before its request ended"
        slow.join(10)
        assert not isinstance(slow.result, Exception), f"in-flight request: {slow.result!r}"
        assert slow.result.status == 200 and slow.result.complete, slow.result
        assert slow.result.body.startswith(f"{busy} slept".encode())
        wait_until(reloaded, 5, "every worker replaced")
    assert pid_alive(master) and srv.proc.poll() is None
    assert fetch_pid(srv) not in old


# --- 6. systemd -----------------------------------------------------------------------------


def short_dir() -> str:
    """A private directory with a short path (AF_UNIX paths are limited to 107 bytes)."""
    return tempfile.mkdtemp(prefix="hr-sup-")


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notify_socket_gets_ready(headrace, kind):
    d = short_dir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if kind == "path":
            addr = os.path.join(d, "notify")
            sock.bind(addr)
            env_value = addr
        else:
            name = f"hr-sup-notify-{os.getpid()}-{time.monotonic_ns()}"
            sock.bind("\0" + name)
            env_value = "@" + name
        sock.settimeout(0.2)
        srv = headrace("--wsgi-file", SUP, "--processes", "2", env={"NOTIFY_SOCKET": env_value},
                       wait=False)
        messages: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT
        workers_at_ready = None
        while time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except socket.timeout:
                if srv.proc.poll() is not None:
                    break
                continue
            messages.append(data.decode(errors="replace"))
            if "READY=1" in data.decode(errors="replace").splitlines():
                workers_at_ready = len(srv.worker_pids())
                break
        assert workers_at_ready is not None, f"no READY=1; got {messages}; log:\n{srv.tail()}"
        assert workers_at_ready == 2, "READY=1 came before the workers were spawned"
        # a STATUS= line, in the same datagram or soon after
        end = time.monotonic() + 2
        while not any(line.startswith("STATUS=") for m in messages for line in m.splitlines()):
            if time.monotonic() > end:
                break
            try:
                messages.append(sock.recv(4096).decode(errors="replace"))
            except socket.timeout:
                pass
        assert any(line.startswith("STATUS=") for m in messages for line in m.splitlines()), (
            messages
        )
        srv.wait_ready("/pid", 2, START_TIMEOUT)
        assert fetch(srv, "/pid").status == 200
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


LISTEN_WRAPPER = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execvp(sys.argv[2], sys.argv[2:])
"""


class WrappedServer(Server):
    """A headrace started through `launcher` (which execs it, keeping its pid), with `pass_fds`
    inherited; otherwise a conftest Server (log, waits, stop by pid)."""

    def __init__(self, launcher, args, env, log_path: Path, port: int, pass_fds):
        self.args = args
        self.port = port
        self.unix = None
        self.host = "127.0.0.1"
        self.log_path = log_path
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            list(launcher) + headrace_cmd() + list(args),
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=env, cwd=str(REPO), pass_fds=pass_fds,
        )
        self.known_pids: set[int] = set()
        self.stopped = False


def listen_inodes(port: int) -> list[int]:
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[1].split(":")[1], 16) == port and cols[3] == "0A":
                out.append(int(cols[9]))
    return out


@pytest.mark.parametrize("with_option", [False, True], ids=["fd-only", "fd-and-http-socket"])
def test_listen_fds_socket_is_served(headrace, tmp_path, with_option):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    inode = os.fstat(lsock.fileno()).st_ino
    args = ["--wsgi-file", SUP, "--processes", "2"]
    if with_option:
        args = ["--http-socket", f"127.0.0.1:{port}"] + args
    launcher = [sys.executable, "-c", LISTEN_WRAPPER, str(lsock.fileno())]
    try:
        srv = WrappedServer(launcher, args, server_env(), tmp_path / "listen-fds.log", port,
                            pass_fds=[lsock.fileno()])
        headrace.servers.append(srv)
    finally:
        lsock.close()  # only headrace holds the socket now
    srv.wait_ready("/pid", 2, START_TIMEOUT)
    assert srv.master_pid() == srv.proc.pid, "the launcher's exec must keep the pid"
    pids = {fetch_pid(srv) for _ in range(10)}
    assert pids <= set(srv.worker_pids())
    assert listen_inodes(port) == [inode], "headrace did not serve the socket it was passed"
    for w in srv.worker_pids():
        fds = set()
        for fd in os.listdir(f"/proc/{w}/fd"):
            try:
                fds.add(os.readlink(f"/proc/{w}/fd/{fd}"))
            except OSError:
                pass
        assert f"socket:[{inode}]" in fds, f"worker {w} does not hold the passed socket"


def test_listen_fds_for_another_pid_is_not_a_socket():
    # LISTEN_FDS meant for some other process (LISTEN_PID is not headrace's): headrace has no
    # socket then, and must say so and exit 2 as it does without LISTEN_FDS, not run workers
    # that serve nothing.
    p = run_headrace(["--wsgi-file", SUP], timeout=10,
                     env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert p.returncode == 2, f"exit {p.returncode}; output:\n{p.stdout}{p.stderr}"
    assert "socket" in p.stderr


# --- 7, 8. stopping -------------------------------------------------------------------------


def test_sigterm_lets_a_3s_request_finish(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "2", workers=2)
    workers = srv.worker_pids()
    slow = InBackground(srv, "/sleep/3/term3")
    sleeping_pid(srv, "term3")
    signalled = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    slow.join(15)
    assert not isinstance(slow.result, Exception), f"in-flight request failed: {slow.result!r}"
    assert slow.result.status == 200 and slow.result.complete, slow.result
    assert b"slept 3" in slow.result.body
    code = srv.proc.wait(15)
    took = time.monotonic() - signalled
    srv.stop()
    assert code == 0, f"exit code {code} after SIGTERM"
    assert took < 10, f"SIGTERM took {took:.1f} s with one 3 s request in flight"
    wait_until(lambda: not [p for p in workers if pid_alive(p)], 5, "workers outlived the master")
    assert processes_mentioning(f"127.0.0.1:{srv.port}") == [], "headrace processes remain"


def test_kill9_master_orphans_exit(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "2", workers=2)
    workers = srv.worker_pids()
    assert len(workers) == 2 and all(pid_alive(p) for p in workers)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(5)
    killed = time.monotonic()
    while any(pid_alive(p) for p in workers) and time.monotonic() - killed < 2:
        time.sleep(0.05)
    alive = [p for p in workers if pid_alive(p)]
    assert not alive, f"workers {alive} still alive 2 s after the master was SIGKILLed"
    assert processes_mentioning(f"127.0.0.1:{srv.port}") == []
    # Nothing listens on the port any more. (Checked in /proc/net/tcp, not by connecting: a
    # connect to a closed port in the ephemeral range can pick that same port as its source
    # and connect to itself.)
    # A worker's main thread shows as a zombie while its other threads are still exiting and
    # hold its descriptors, so the socket may outlive the pids by a moment: wait, bounded.
    port = f":{srv.port:04X}"

    def listening():
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        return [f for f in rows if f[1].endswith(port) and f[3] == "0A"]

    while listening() and time.monotonic() - killed < 3:
        time.sleep(0.05)
    assert not listening(), "still listening 3 s after the master was SIGKILLed"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_immediate_stop_does_not_wait_for_requests(headrace, sig):
    srv = headrace("--wsgi-file", SUP, "--processes", "2", workers=2)
    workers = srv.worker_pids()
    slow = InBackground(srv, "/sleep/20/immediate", timeout=25)
    sleeping_pid(srv, "immediate")
    signalled = time.monotonic()
    srv.proc.send_signal(sig)
    code = srv.proc.wait(10)
    took = time.monotonic() - signalled
    slow.join(10)
    srv.stop()
    assert took < 4.5, f"{sig.name} took {took:.1f} s with a 20 s request in flight"
    assert isinstance(slow.result, CLOSED) or not slow.result.complete, slow.result
    assert code is not None
    wait_until(lambda: not [p for p in workers if pid_alive(p)], 5, "workers outlived the master")


# --- 9. a worker that dies at import is respawned with growing delays -------------------------


@pytest.mark.parametrize("appname", ["sup_exit_at_import.py", "sup_raise_at_import.py"])
def test_crashing_lazy_app_is_respawned_slowly(headrace, appname):
    srv = headrace("--wsgi-file", app(appname), "--lazy-apps", "--processes", "1", wait=False)
    time.sleep(5)
    log = srv.log()
    assert srv.proc.poll() is None, f"the master exited ({srv.proc.returncode}):\n{srv.tail()}"
    pids = {int(m.group(1)) for m in SPAWN_ANY.finditer(log)}
    assert 2 <= len(pids) <= 10, f"{len(pids)} workers spawned in 5 s:\n{srv.tail()}"
    delays = [float(x) for x in
              re.findall(r"^worker 1 died \d+ time\(s\) within 1s of spawning: next respawn in "
                         r"(\d+\.\d)s$", log, ML)]
    assert len(delays) >= 2, srv.tail()
    assert delays == sorted(delays) and delays[-1] > delays[0], f"delays do not grow: {delays}"
    if appname == "sup_exit_at_import.py":
        assert re.search(r"^DAMN ! worker 1 \(pid: \d+\) died, exit code 3 :\( trying respawn",
                         log, ML), srv.tail()
    else:
        assert "sup-raise-at-import" in log, "the import error was not shown"


# --- 11. SIGUSR1 status table ---------------------------------------------------------------


def test_sigusr1_logs_worker_status(headrace):
    srv = headrace("--wsgi-file", SUP, "--processes", "2", workers=2)
    slow = InBackground(srv, "/sleep/3/usr1")
    busy = sleeping_pid(srv, "usr1")
    workers = {worker_id_of(srv, p): p for p in srv.worker_pids()}
    assert len(workers) == 2
    offset = len(srv.log())
    os.kill(srv.proc.pid, signal.SIGUSR1)
    for wid, pid in workers.items():
        m = wait_regex(srv, rf"^worker {wid} \(pid: {pid}\).*$", timeout=5, start=offset)
        line = m.group(0)
        want = "busy" if pid == busy else "idle"
        other = "idle" if want == "busy" else "busy"
        assert re.search(rf"\b{want}\b", line) and not re.search(rf"\b{other}\b", line), line
    slow.join(10)
    assert slow.result.status == 200
    assert srv.proc.poll() is None, "SIGUSR1 stopped the master"


# --- 12. --vacuum, --pidfile ------------------------------------------------------------------


def test_vacuum_removes_socket_and_pidfile(headrace, tmp_path):
    sock = tmp_path / "hr.sock"
    pidfile = tmp_path / "hr.pid"
    srv = headrace("--wsgi-file", SUP, "--vacuum", "--pidfile", str(pidfile), unix=str(sock))
    assert sock.exists() and pidfile.exists()
    assert int(pidfile.read_text().strip()) == srv.proc.pid
    assert fetch(srv, "/pid").status == 200
    assert srv.stop() == 0
    assert not sock.exists(), "--vacuum left the unix socket"
    assert not pidfile.exists(), "--vacuum left the pidfile"


def test_die_on_term_is_accepted(headrace):
    srv = headrace("--wsgi-file", SUP, "--die-on-term", "--processes", "1")
    assert fetch(srv, "/pid").status == 200
    assert srv.stop() == 0


# --- --uid / --gid --------------------------------------------------------------------------


def free_low_port() -> int | None:
    for port in range(900, 1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return None


PRELOAD = """\
import atexit, faulthandler, importlib, importlib.machinery, importlib.util, json, linecache
import time, tokenize, traceback
"""


def readable_by_all(path: Path) -> bool:
    """True when any user can read `path`: every directory above it is world-searchable."""
    path = path.resolve()
    if not os.stat(path).st_mode & 0o004:
        return False
    return all(os.stat(d).st_mode & 0o001 for d in path.parents)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_uid_gid_drop_after_binding(headrace):
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
        nogroup = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no nobody/nogroup here")
    port = free_low_port()
    if port is None:
        pytest.skip("no free port below 1024")
    d = tempfile.mkdtemp(prefix="hr-sup-uid-")
    try:
        os.chmod(d, 0o755)
        appfile = os.path.join(d, "supervised.py")
        shutil.copy(SUP, appfile)
        os.chmod(appfile, 0o644)
        env = {}
        if not readable_by_all(Path(os.__file__)):
            # This interpreter's stdlib is under a directory only root may enter (pyenv in
            # /root): import what loading an app needs before the drop, through a
            # sitecustomize that Python's startup (still as root) runs.
            custom = os.path.join(d, "sitecustomize.py")
            with open(custom, "w") as f:
                f.write(PRELOAD)
            os.chmod(custom, 0o644)
            env["PYTHONPATH"] = d
        srv = headrace("--wsgi-file", appfile, "--processes", "2", "--uid", "nobody",
                       "--gid", "nogroup", port=port, workers=2, env=env)
        served = {fetch_pid(srv) for _ in range(6)}
        assert served <= set(srv.worker_pids())
        for w in srv.worker_pids():
            with open(f"/proc/{w}/status") as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            assert set(status["Uid"].split()) == {str(nobody)}, (w, status["Uid"])
            assert set(status["Gid"].split()) == {str(nogroup)}, (w, status["Gid"])
        assert srv.stop() == 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- examples/headrace.service ----------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values of a systemd unit file (continuation lines joined, comments dropped)."""
    out: dict[str, list[str]] = {}
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";", "["))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_example_systemd_unit_runs(headrace, tmp_path):
    unit = unit_settings(REPO / "examples" / "headrace.service")
    assert unit["Type"] == ["notify"] and unit["KillSignal"] == ["SIGTERM"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    exe, *args = unit["ExecStart"][0].split()
    assert exe.endswith("/headrace")
    port = free_port()
    touch = tmp_path / "reload.touch"
    touch.write_text("x")
    swap = {"127.0.0.1:8000": f"127.0.0.1:{port}", "/srv/myapp/app.py": SUP,
            "/srv/myapp/reload.touch": str(touch)}
    args = [swap.get(a, a) for a in args]
    assert not [a for a in args if a.startswith("/srv/")], args
    d = short_dir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(os.path.join(d, "notify"))
        sock.settimeout(0.2)
        srv = headrace(*args, port=port, env={"NOTIFY_SOCKET": os.path.join(d, "notify")},
                       workers=4)
        messages = []
        deadline = time.monotonic() + 5
        while not any("READY=1" in m.splitlines() for m in messages):
            assert time.monotonic() < deadline, f"no READY=1 within 5 s of serving: {messages}"
            try:
                messages.append(sock.recv(4096).decode(errors="replace"))
            except socket.timeout:
                pass
        assert fetch(srv, "/pid").status == 200
        assert srv.stop() == 0
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


ENV_APP = """
import json, os

HEADRACE_AT_IMPORT = sorted(k for k in os.environ if k.startswith(("HEADRACE_", "LISTEN_")))


def application(environ, start_response):
    now = sorted(k for k in os.environ if k.startswith(("HEADRACE_", "LISTEN_")))
    body = json.dumps({"import": HEADRACE_AT_IMPORT, "now": now, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""


def test_reexec_reload_hides_the_handover_variables(headrace, tmp_path):
    """A re-exec reload hands the sockets, old workers and daemons over in HEADRACE_*
    variables; the new image's app must not see them in os.environ."""
    appfile = tmp_path / "envapp.py"
    appfile.write_text(ENV_APP)
    srv = headrace("--wsgi-file", str(appfile), "--processes", "1",
                   "--attach-daemon", "sleep 30", workers=1)
    master = srv.proc.pid
    old = live_children(master)
    first = json.loads(fetch(srv, "/").body)
    assert first["import"] == [] and first["now"] == []
    os.kill(master, signal.SIGHUP)

    def reloaded():
        # The daemon (sleep) is a child too: wait for a worker with a new pid to answer.
        try:
            d = json.loads(fetch(srv, "/").body)
        except OSError:
            return None
        return d if d["pid"] not in old and d["pid"] != first["pid"] else None
    after = wait_until(reloaded, 20, "a worker of the re-exec'd image answers")
    assert after["import"] == [] and after["now"] == [], after
