"""The `headrace` fixture: start the real server binary, wait until it serves, stop it by PID.

    def test_x(headrace):
        srv = headrace("--wsgi-file", app("basic.py"), "--processes", "2")
        requests.get(srv.url("/pid"))

Unless the arguments already bind something (`--http-socket`, `--http`, `--ini`), the fixture
adds `--http-socket 127.0.0.1:PORT` with a free port. Every server binds 127.0.0.1 (or ::1, or
a unix socket under tmp_path) only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import (
    MASTER_LINE,
    REPO,
    START_TIMEOUT,
    STOP_TIMEOUT,
    WORKER_LINE,
    Conn,
    children,
    free_port,
    headrace_cmd,
    parse_request_lines,
    pid_alive,
    server_env,
)


class Server:
    """One running headrace: its process, its log and how to reach it."""

    def __init__(self, args, env, cwd, log_path: Path, port, unix, host):
        self.args = args
        self.port: int | None = port
        self.unix: str | None = unix
        self.host = host
        self.log_path = log_path
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            headrace_cmd() + list(args),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
        self.known_pids: set[int] = set()
        self.stopped = False
        #: where the app records what happened (its HR_RECORD); set by the factory
        self.record: Path | None = None

    # --- reaching it -------------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def connect(self, timeout: float = 10.0) -> Conn:
        if self.unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.unix)
        else:
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect((self.host, self.port))
        return Conn(s)

    def request(self, raw: bytes, method: str = "GET", timeout: float = 10.0):
        """Send `raw` on a new connection and read one response."""
        with self.connect(timeout) as c:
            c.send(raw)
            return c.read_response(method)

    # --- its log -----------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def wait_log(self, needle: str, count: int = 1, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if text.count(needle) >= count:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"log has {text.count(needle)} x {needle!r}, wanted {count} "
                    f"(waited {timeout} s); log tail:\n{self.tail()}"
                )
            time.sleep(0.05)

    def master_pid(self) -> int | None:
        m = MASTER_LINE.search(self.log())
        return int(m.group(1)) if m else None

    def worker_pids(self) -> list[int]:
        """Pids of every worker the log says was spawned, in order."""
        return [int(m.group(2)) for m in WORKER_LINE.finditer(self.log())]

    def request_lines(self):
        return parse_request_lines(self.log())

    def wait_request_lines(self, count: int, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.request_lines()
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(lines)} request log lines, wanted {count}; log tail:\n{self.tail()}"
                )
            time.sleep(0.05)

    # --- lifecycle ---------------------------------------------------------------------
    def remember_pids(self) -> None:
        if self.proc.poll() is None:
            self.known_pids.update(children(self.proc.pid))
        self.known_pids.update(self.worker_pids())

    def wait_ready(self, probe: str | None, workers: int, timeout: float) -> None:
        """Ready when the port accepts and a probe request gets any HTTP response, or (with no
        probe) when the log shows `workers` workers spawned and the port accepts."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"headrace exited with {self.proc.returncode} during startup; log:\n"
                    + self.tail()
                )
            if self._ready(probe, workers):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"headrace not ready after {timeout} s; log:\n{self.tail()}")
            # A server is ready in 50-150 ms: a short poll keeps thousands of starts from each
            # waiting out most of a longer one.
            time.sleep(0.01)
        # Give the remaining workers a bounded moment to show up, so tests can read pids.
        end = min(deadline, time.monotonic() + 5)
        while len(self.worker_pids()) < workers and time.monotonic() < end:
            time.sleep(0.01)
        self.remember_pids()

    def _ready(self, probe: str | None, workers: int) -> bool:
        if probe is None and len(self.worker_pids()) < workers:
            return False
        try:
            c = self.connect(timeout=5)
        except OSError:
            return False
        with c:
            if probe is None:
                return True
            try:
                c.send(
                    f"GET {probe} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
                )
                c.sock.settimeout(10)
                line = c.rfile.readline()
            except OSError:
                return False
            return line.startswith(b"HTTP/1.")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Signal the master by PID; return its exit code, or None if it did not exit within
        `timeout` s (it is then killed by PID)."""
        self.remember_pids()
        code = self.proc.poll()
        if code is None:
            try:
                self.proc.send_signal(sig)
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                code = None
        self.stopped = True
        self._log_file.close()
        return code

    def leftover_pids(self, timeout: float = 3.0) -> list[int]:
        """Known children still alive after the master exited (waits up to `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            alive = [p for p in sorted(self.known_pids) if p != self.proc.pid and pid_alive(p)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)

    def kill_leftovers(self) -> list[int]:
        alive = self.leftover_pids()
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return alive


def _count_workers(args) -> int:
    args = list(args)
    for i, a in enumerate(args):
        if a in ("--processes", "-p", "--workers") and i + 1 < len(args):
            try:
                return int(args[i + 1])
            except ValueError:
                return 1
        for prefix in ("--processes=", "--workers="):
            if a.startswith(prefix):
                try:
                    return int(a[len(prefix):])
                except ValueError:
                    return 1
    return 1


class Factory:
    """Starts servers (see the module doc) and stops them all at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.record = tmp / "record"
        self.record.mkdir(exist_ok=True)
        self.servers: list[Server] = []

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        probe: str | None = "/",
        unix: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        workers: int | None = None,
        wait: bool = True,
        bind: bool = True,
    ) -> Server:
        """Start headrace with `args`. `probe`: path of the readiness request (None: wait
        for the workers' spawn lines instead, so no request is counted); `unix`: bind this
        socket path; `bind=False`: add no socket option; `wait=False`: return at once."""
        args = list(args)
        binds = any(a in ("--http-socket", "--http", "--ini") for a in args)
        if unix is None and port is None and bind and not binds:
            port = free_port()
        if bind and not binds:
            addr = unix if unix else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            args = ["--http-socket", addr] + args
        full_env = server_env({"HR_RECORD": str(self.record), **(env or {})})
        n = len(self.servers)
        srv = Server(args, full_env, cwd or str(REPO), self.tmp / f"headrace-{n}.log", port,
                     unix, host)
        srv.record = self.record
        self.servers.append(srv)
        if wait:
            srv.wait_ready(
                probe, _count_workers(args) if workers is None else workers, START_TIMEOUT
            )
        return srv

    def finish(self) -> list[str]:
        """Stop every server by PID; return what went wrong (hangs, leftover workers)."""
        problems = []
        for srv in self.servers:
            if not srv.stopped:
                code = srv.stop()
                if code is None:
                    problems.append(
                        f"headrace (pid {srv.proc.pid}) ignored SIGTERM for {STOP_TIMEOUT} s"
                    )
            left = srv.kill_leftovers()
            if left:
                problems.append(f"workers {left} still alive after the master exited")
            log = srv.log()
            if "panicked at" in log:
                problems.append("the log shows a Rust panic")
            try:
                parse_request_lines(log)  # every request line must have uWSGI's shape
            except AssertionError as e:
                problems.append(str(e))
        return problems


@pytest.fixture
def headrace(request, tmp_path):
    """Factory: `headrace(*args, **options)` starts the server and returns a `Server`; all
    are stopped (SIGTERM, then SIGKILL after 5 s, by PID) when the test ends, and a server
    that hangs or leaves workers behind fails the test."""
    factory = Factory(tmp_path)
    request.node._headrace_servers = factory.servers
    yield factory
    problems = factory.finish()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def headrace_module(tmp_path_factory):
    """Like `headrace`, for servers shared by the tests of one module."""
    factory = Factory(tmp_path_factory.mktemp("shared"))
    yield factory
    problems = factory.finish()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def record_dir(tmp_path) -> Path:
    """Where apps started by `headrace` record what happened (HR_RECORD)."""
    d = tmp_path / "record"
    d.mkdir(exist_ok=True)
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        servers = list(getattr(item, "_headrace_servers", []))
        servers += [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Server)]
        for i, srv in enumerate(servers):
            try:
                rep.sections.append((f"headrace log tail (server {i})", srv.tail()))
            except OSError:
                pass


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes several seconds (still runs by default)")


_os_kill = os.kill


def _kill_one_process(pid: int, sig: int) -> None:
    """os.kill for tests: a pid of 0 or below would signal this test run's whole process group
    (or every process), so a test that read a pid that is not there yet fails instead."""
    if pid <= 0:
        raise AssertionError(f"refusing os.kill({pid}, {sig}): not one process")
    _os_kill(pid, sig)


os.kill = _kill_one_process
