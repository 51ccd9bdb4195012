#!/usr/bin/env python3
"""The benchmark harness behind `bench/run`: headrace against its peers (see bench/README.md).

Standard library only: it runs under the system python3 and drives servers installed in its own
virtualenv, bench/.venv. Every server process it starts is stopped by PID in a `finally`, and
every external command has a timeout, so a hung server cannot hang the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
APPS = BENCH / "apps"
WRK_SCRIPTS = BENCH / "wrk"
RESULTS = BENCH / "results"
CEILING_DIR = BENCH / "ceiling"
REQUIREMENTS = BENCH / "requirements.txt"
LOGS = VENV / "logs"

SERVER_CORE = 0
CLIENT_CORE = 1
LISTEN_BACKLOG = 1024
READY_TIMEOUT = 60.0  # seconds from launch to the first 200
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
WRK_SOCKET_TIMEOUT = "5s"


# --------------------------------------------------------------------------------------------
# small utilities


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class RunError(Exception):
    """A server or a load run failed; the message goes into the results as the reason."""


def tail(path: Path, lines: int = 20, max_bytes: int = 64 * 1024) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    return [line.rstrip() for line in text if line.strip()][-lines:]


def one_line(lines: list[str], limit: int = 240) -> str:
    text = " | ".join(lines)
    return text if len(text) <= limit else "..." + text[-limit:]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


CORES = _cores()  # read before the harness pins itself to the client core


# --------------------------------------------------------------------------------------------
# processes: everything started here runs in its own session; it is stopped by PID


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    start: int  # starttime in clock ticks: tells a PID apart from a later reuse


def proc_table() -> dict[int, ProcInfo]:
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        # fields after the command: state ppid pgrp session tty tpgid flags ... starttime(#22)
        try:
            table[int(entry)] = ProcInfo(
                int(entry), int(rest[1]), int(rest[2]), rest[0], int(rest[19])
            )
        except (IndexError, ValueError):
            continue
    return table


def tree(leader: int, table: dict[int, ProcInfo] | None = None) -> dict[int, ProcInfo]:
    """The leader, its descendants, and whatever else is left in its process group."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: dict[int, ProcInfo] = {}
    stack = [leader]
    while stack:
        pid = stack.pop()
        if pid in found or pid not in table:
            continue
        found[pid] = table[pid]
        stack.extend(children.get(pid, []))
    for info in table.values():
        if info.pgid == leader:
            found.setdefault(info.pid, info)
    return found


def still_alive(known: dict[int, ProcInfo]) -> list[int]:
    table = proc_table()
    return [
        pid
        for pid, info in known.items()
        if pid in table and table[pid].start == info.start and table[pid].state != "Z"
    ]


def stop_process(proc: subprocess.Popen, grace: float | None = None) -> None:
    """SIGTERM the process, wait up to `grace`, then SIGKILL it and any of its tree still there."""
    grace = STOP_GRACE if grace is None else grace
    known = tree(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is None:
            known.update(tree(proc.pid))
        elif not still_alive(known):
            break
        time.sleep(0.02)
    if proc.poll() is None:
        known.update(tree(proc.pid))
    leftovers = still_alive(known)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} did not die after SIGKILL")
    if leftovers:
        deadline = time.monotonic() + 3
        while still_alive(known) and time.monotonic() < deadline:
            time.sleep(0.02)


def run_bounded(
    argv: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
) -> tuple[int, str]:
    """Runs a command to completion or until `timeout`; returns (exit code, output).

    Output (stdout and stderr together) goes to `log_path` when given, else it is captured.
    On timeout the whole process tree is stopped and the exit code is -1.
    """
    out_file = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as e:
            return 127, f"{argv[0]}: {e}"
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc, grace=2)
            rc = -1
        finally:
            if proc.poll() is None:
                stop_process(proc, grace=1)
        out_file.flush()
        out_file.seek(0)
        text = out_file.read().decode("utf-8", "replace")
        if rc == -1:
            text += f"\n[bench] timed out after {timeout:.0f} s\n"
        return rc, text
    finally:
        out_file.close()


def http_status(port: int, path: str = "/", timeout: float = 2.0) -> int | None:
    """One HTTP/1.1 GET with Connection: close; the status code, or None if it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while b"\r\n" not in data and len(data) < 8192:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------
# setup: tools, the virtualenv with pinned peers, the ceiling server, headrace itself


@dataclass
class Setup:
    pin: bool = False
    wrk: str | None = None
    nginx: str | None = None
    ceiling: Path | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # requirement -> reason
    versions: dict[str, str] = field(default_factory=dict)
    gunicorn_no_control_socket: bool = False
    build_log_tail: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    headrace_bin: str = str(VENV / "bin" / "headrace")
    headrace_help: dict[str, str] = field(default_factory=dict)  # option -> its --help line
    headrace_origin: str = "built into bench/.venv by `pip install <repo>` (maturin, release)"

    def bin(self, name: str) -> str:
        return str(VENV / "bin" / name)

    def server_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env["VIRTUAL_ENV"] = str(VENV)
        env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def pinned(self, core: int, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(core), *argv] if self.pin else argv


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def ensure_apt_tools(st: Setup, allow_apt: bool, extra: tuple[str, ...] = ()) -> None:
    """wrk and nginx (and `extra` packages) from Debian's packages when missing."""
    missing = []
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not find_nginx():
        missing.append("nginx")
    missing += [
        p
        for p in extra
        if subprocess.call(["dpkg", "-s", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        != 0
    ]
    if missing and allow_apt and shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log(f"apt-get install {' '.join(missing)}")
        rc, out = run_bounded([*sudo, "apt-get", "update", "-qq"], timeout=300, env=env)
        if rc != 0:
            log(f"apt-get update failed ({rc}): {one_line(out.splitlines()[-3:])}")
        rc, out = run_bounded(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            timeout=600,
            env=env,
        )
        if rc != 0:
            log(f"apt-get install failed ({rc}): {one_line(out.splitlines()[-3:])}")
    st.wrk = shutil.which("wrk")
    st.nginx = find_nginx()
    if not st.wrk:
        st.unavailable["wrk"] = "wrk is not installed"
    if not st.nginx:
        st.unavailable["nginx"] = "nginx is not installed"


def file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()


def ensure_venv(st: Setup) -> None:
    """bench/.venv with the pinned peers from requirements.txt (reinstalled when it changes)."""
    if not (VENV / "bin" / "python").exists():
        log(f"creating {VENV}")
        rc, out = run_bounded([sys.executable, "-m", "venv", str(VENV)], timeout=300)
        if rc != 0:
            raise SystemExit(f"cannot create {VENV}: {out}")
    LOGS.mkdir(parents=True, exist_ok=True)
    stamp = VENV / "requirements.stamp"
    digest = file_digest([REQUIREMENTS])
    if not stamp.exists() or stamp.read_text().strip() != digest:
        log("installing pinned peers into bench/.venv (pip)")
        pip = [st.bin("python"), "-m", "pip", "--disable-pip-version-check", "-q"]
        rc, out = run_bounded([*pip, "install", "-r", str(REQUIREMENTS)], timeout=1200)
        if rc != 0:
            tail_lines = out.splitlines()[-3:]
            st.unavailable["peers"] = "pip install -r requirements.txt failed: " + one_line(
                tail_lines
            )
            return
        stamp.write_text(digest + "\n")
    rc, out = run_bounded([st.bin("python"), "-m", "pip", "list", "--format", "json"], 120)
    if rc == 0:
        with contextlib.suppress(ValueError):
            st.versions.update({p["name"].lower(): p["version"] for p in json.loads(out)})
    rc, out = run_bounded([st.bin("gunicorn"), "--help"], timeout=60)
    st.gunicorn_no_control_socket = rc == 0 and "--no-control-socket" in out


def build_ceiling(st: Setup) -> None:
    target = VENV / "ceiling-target"
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    if not shutil.which("cargo"):
        st.unavailable["ceiling"] = "cargo is not installed"
        return
    log("building bench/ceiling (cargo build --release)")
    rc, out = run_bounded(
        [
            "cargo",
            "build",
            "--release",
            "--quiet",
            "--manifest-path",
            str(CEILING_DIR / "Cargo.toml"),
        ],
        timeout=900,
        env=env,
        log_path=LOGS / "build-ceiling.log",
    )
    binary = target / "release" / "ceiling"
    if rc != 0 or not binary.exists():
        st.unavailable["ceiling"] = f"build failed: {one_line(out.splitlines()[-3:])}"
        return
    st.ceiling = binary


def headrace_sources() -> list[Path]:
    files = []
    for name in ("Cargo.toml", "Cargo.lock", "pyproject.toml", "build.rs", "README.md"):
        if (ROOT / name).is_file():
            files.append(ROOT / name)
    for top in ("src", "python"):
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fname in sorted(filenames):
                if not fname.endswith((".so", ".pyc")):
                    files.append(Path(dirpath) / fname)
    return files


def first_error(lines: list[str]) -> str:
    """The most telling line of a failed `pip install`: rustc's error, else maturin's cause."""
    generic = ("subprocess-exited-with-error", "metadata-generation-failed", "failed-wheel-build")
    for line in lines:
        m = re.match(r"\s*(error(\[E\d+\])?: .*)", line)
        if m and not any(g in line for g in generic):
            return m.group(1).strip()
    causes = [line.strip() for line in lines if "Caused by:" in line]
    if causes:
        return causes[0]
    for line in lines:
        if re.match(r"\s*(error|ERROR|💥)", line):
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def use_headrace(st: Setup, path: str) -> None:
    """--headrace PATH: measure an executable built elsewhere (e.g. by `./dev build`)."""
    st.headrace_bin = str(Path(path).resolve())
    st.headrace_origin = f"the executable given with --headrace ({st.headrace_bin}), not rebuilt"
    check_headrace(st)


def check_headrace(st: Setup) -> None:
    rc, out = run_bounded([st.headrace_bin, "--version"], timeout=30, env=st.server_env())
    if rc != 0:
        st.unavailable["headrace"] = f"`headrace --version` failed: {one_line(out.splitlines())}"
        return
    st.versions["headrace"] = out.strip().splitlines()[-1] if out.strip() else "?"
    rc, out = run_bounded([st.headrace_bin, "--help"], timeout=30, env=st.server_env())
    lines = out.splitlines()
    for i, line in enumerate(lines):
        # clap prints `--opt <VALUE>  text` or, when options are long, the text on the next line
        m = re.match(r"^\s*(?:-\w, )?(--[\w-]+)(?: <\w+>)?(?:\s{2,}(\S.*))?$", line)
        if not m:
            continue
        said = m.group(2)
        if said is None and i + 1 < len(lines) and not lines[i + 1].strip().startswith("-"):
            said = lines[i + 1].strip()
        if said:
            st.headrace_help[m.group(1)] = said


def build_headrace(st: Setup, mode: str) -> None:
    """`pip install <repo>` into bench/.venv: a release build by maturin, skipped when unchanged.

    mode: "auto" (build when the sources changed), "always", or "never" (use what is installed).
    """
    binary = VENV / "bin" / "headrace"
    stamp = VENV / "headrace-build.stamp"
    digest = file_digest(headrace_sources())
    fresh = stamp.exists() and stamp.read_text().strip() == digest and binary.exists()
    if mode == "never" or (mode == "auto" and fresh):
        if not binary.exists():
            st.unavailable["headrace"] = "not installed in bench/.venv (and --no-build given)"
            return
        if mode == "auto":
            log("headrace in bench/.venv is up to date with the checkout")
    else:
        log("building headrace from the checkout into bench/.venv (pip install, release mode)")
        stamp.unlink(missing_ok=True)
        env = dict(os.environ, CARGO_TARGET_DIR=str(VENV / "headrace-target"))
        env.pop("CONDA_PREFIX", None)
        env["VIRTUAL_ENV"] = str(VENV)
        build_log = LOGS / "build-headrace.log"
        t0 = time.monotonic()
        rc, out = run_bounded(
            [
                st.bin("python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--force-reinstall",
                "--no-deps",
                str(ROOT),
            ],
            timeout=2400,
            env=env,
            log_path=build_log,
        )
        if rc != 0:
            lines = [line for line in out.splitlines() if line.strip()]
            st.build_log_tail = lines[-40:]
            st.unavailable["headrace"] = f"build failed: {first_error(lines)}"
            log(f"headrace build failed in {time.monotonic() - t0:.0f} s; log: {build_log}")
            return
        log(f"headrace built in {time.monotonic() - t0:.0f} s")
        stamp.write_text(digest + "\n")
    check_headrace(st)


def tool_versions(st: Setup) -> None:
    def first_line(argv: list[str]) -> str:
        rc, out = run_bounded(argv, timeout=20)
        lines = [line for line in out.splitlines() if line.strip()]
        return lines[0].strip() if lines else f"? (exit {rc})"

    if st.wrk:
        st.versions["wrk"] = first_line([st.wrk, "-v"]).split(" Copyright")[0]
    if st.nginx:
        st.versions["nginx"] = first_line([st.nginx, "-v"])
    if shutil.which("rustc"):
        st.versions["rustc"] = first_line(["rustc", "--version"])


def prepare(args: argparse.Namespace) -> Setup:
    st = Setup()
    st.pin = CORES >= 2 and shutil.which("taskset") is not None
    if st.pin:
        # The harness itself (and so wrk and the saturation client) lives on the client core.
        os.sched_setaffinity(0, {CLIENT_CORE})
    else:
        st.notes.append("server and client are NOT pinned to separate cores")
    ensure_apt_tools(st, allow_apt=not args.no_apt)
    ensure_venv(st)
    build_ceiling(st)
    if args.headrace:
        use_headrace(st, args.headrace)
    else:
        build_headrace(st, "never" if args.no_build else "always" if args.rebuild else "auto")
    tool_versions(st)
    return st


# --------------------------------------------------------------------------------------------
# apps, servers, scenarios


@dataclass(frozen=True)
class App:
    module: str

    @property
    def path(self) -> Path:
        return APPS / f"{self.module}.py"

    @property
    def target(self) -> str:
        return f"{self.module}:application"


@dataclass
class Launch:
    """What one server start needs: the app, how many workers, where to listen."""

    app: App
    processes: int
    threads: int | None  # None: the server's own default; 1: single-threaded workers
    logging: bool
    port: int  # where clients connect (nginx's port in nginx mode)
    sock: str | None = None  # the backend's unix socket in nginx mode

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Server:
    id: str
    family: str  # headrace, uwsgi, granian, gunicorn, ceiling
    mode: str  # http (direct), router (--http), nginx (uwsgi protocol behind nginx)
    argv: Callable[[Setup, Launch], list[str]]
    config: str  # how it is configured, for the results file
    requires: tuple[str, ...] = ()
    scenarios: tuple[str, ...] | None = None  # None: every scenario
    flag: str | None = None  # headrace: the option that selects this mode
    scrape: bool = False  # headrace-stats: a scraper polls its stats and metrics every second


MODES = {
    "http": "direct HTTP (the server parses HTTP itself)",
    "router": "HTTP router in front of workers (`--http`)",
    "nginx": "real nginx `uwsgi_pass` to a uwsgi-protocol socket (`--socket`)",
}


def stats_socket(ln: Launch) -> str:
    """The abstract unix socket headrace-stats serves its stats and metrics on."""
    return f"@headrace-bench-stats-{ln.port}"


def headrace_cmd(flag: str, stats: bool = False) -> Callable[[Setup, Launch], list[str]]:
    def argv(st: Setup, ln: Launch) -> list[str]:
        cmd = [
            st.headrace_bin,
            flag,
            ln.sock or ln.addr,
            "--wsgi-file",
            str(ln.app.path),
            "--master",
            "--processes",
            str(ln.processes),
            "--listen",
            str(LISTEN_BACKLOG),
        ]
        if ln.threads:
            cmd += ["--threads", str(ln.threads)]
        if not ln.logging:
            cmd.append("--disable-logging")
        if stats:
            cmd += ["--stats", stats_socket(ln), "--stats-http"]
        return cmd

    return argv


class Scraper:
    """Polls a headrace-stats server's `/metrics` and stats JSON, alternately, once a second
    (what a Prometheus scraper and a uwsgitop would do), until stopped."""

    def __init__(self, ln: Launch):
        self.name = "\0" + stats_socket(ln)[1:]
        self.polls = 0
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        paths = ["/metrics", "/"]
        while not self._stop.wait(1.0):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(self.name)
                    s.sendall(f"GET {paths[self.polls % 2]} HTTP/1.0\r\n\r\n".encode())
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                ok = data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]
                self.errors += 0 if ok else 1
            except OSError:
                self.errors += 1
            self.polls += 1

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._t.join(10)
        return self.polls, self.errors


def uwsgi_cmd(front: Callable[[Launch], list[str]]) -> Callable[[Setup, Launch], list[str]]:
    def argv(st: Setup, ln: Launch) -> list[str]:
        cmd = [
            st.bin("uwsgi"),
            *front(ln),
            "--wsgi-file",
            str(ln.app.path),
            "--master",
            "--processes",
            str(ln.processes),
            "--listen",
            str(LISTEN_BACKLOG),
            "--die-on-term",
            "--need-app",
        ]
        if ln.threads and ln.threads > 1:
            cmd += ["--threads", str(ln.threads)]
        if not ln.logging:
            cmd.append("--disable-logging")
        return cmd

    return argv


def granian_cmd(st: Setup, ln: Launch) -> list[str]:
    cmd = [
        st.bin("granian"),
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(ln.port),
        "--workers",
        str(ln.processes),
        "--http",
        "1",
        "--no-ws",
        "--backlog",
        str(LISTEN_BACKLOG),
        "--working-dir",
        str(APPS),
    ]
    if ln.threads:
        cmd += ["--blocking-threads", str(ln.threads)]
    cmd.append("--access-log" if ln.logging else "--no-access-log")
    return [*cmd, ln.app.target]


def gunicorn_cmd(worker: str, threads: int) -> Callable[[Setup, Launch], list[str]]:
    def argv(st: Setup, ln: Launch) -> list[str]:
        cmd = [
            st.bin("gunicorn"),
            "--bind",
            ln.addr,
            "--workers",
            str(ln.processes),
            "--worker-class",
            worker,
            "--backlog",
            str(LISTEN_BACKLOG),
            "--chdir",
            str(APPS),
        ]
        if worker == "gthread":
            cmd += ["--threads", str(ln.threads or threads)]
        if st.gunicorn_no_control_socket:
            cmd.append("--no-control-socket")
        if ln.logging:
            cmd += ["--access-logfile", "-"]
        return [*cmd, ln.app.target]

    return argv


def ceiling_cmd(st: Setup, ln: Launch) -> list[str]:
    return [str(st.ceiling), str(ln.port)]


GTHREAD_THREADS = 4

# The server table: one entry per server and mode. Adding a mode is one entry here.
SERVERS: list[Server] = [
    Server(
        "headrace",
        "headrace",
        "http",
        headrace_cmd("--http-socket"),
        "`--http-socket ADDR --master --processes N --listen 1024 --disable-logging`",
        requires=("headrace",),
        flag="--http-socket",
    ),
    Server(
        "headrace-stats",
        "headrace",
        "http",
        headrace_cmd("--http-socket", stats=True),
        "as `headrace`, plus `--stats @SOCKET --stats-http`, with a scraper reading `/metrics` "
        "and the stats JSON alternately once a second during the run",
        requires=("headrace",),
        scenarios=("hello1", "hello2"),
        flag="--http-socket",
        scrape=True,
    ),
    Server(
        "uwsgi",
        "uwsgi",
        "http",
        uwsgi_cmd(lambda ln: ["--http-socket", ln.addr, "--add-header", "Connection: close"]),
        "`--http-socket ADDR --add-header 'Connection: close' --master --processes N "
        "--listen 1024 --die-on-term --need-app --disable-logging` (see README: why "
        "`Connection: close`)",
        requires=("peers",),
    ),
    Server(
        "granian",
        "granian",
        "http",
        granian_cmd,
        "`--interface wsgi --workers N --http 1 --no-ws --backlog 1024 --no-access-log` "
        "(default blocking threads: backlog/2 = 512 per worker)",
        requires=("peers",),
    ),
    Server(
        "gunicorn-sync",
        "gunicorn",
        "http",
        gunicorn_cmd("sync", 1),
        "`--worker-class sync --workers N --backlog 1024 --no-control-socket` (no keep-alive "
        "by design)",
        requires=("peers",),
    ),
    Server(
        "gunicorn-gthread",
        "gunicorn",
        "http",
        gunicorn_cmd("gthread", GTHREAD_THREADS),
        f"`--worker-class gthread --threads {GTHREAD_THREADS} --workers N --backlog 1024 "
        "--no-control-socket`",
        requires=("peers",),
    ),
    Server(
        "ceiling",
        "ceiling",
        "http",
        ceiling_cmd,
        "bench/ceiling: no Python, one thread, one epoll loop, fixed response",
        requires=("ceiling",),
        scenarios=("hello1", "hello2"),
    ),
    Server(
        "headrace-router",
        "headrace",
        "router",
        headrace_cmd("--http"),
        "`--http ADDR --master --processes N --listen 1024 --disable-logging`",
        requires=("headrace",),
        flag="--http",
    ),
    Server(
        "uwsgi-router",
        "uwsgi",
        "router",
        uwsgi_cmd(lambda ln: ["--http", ln.addr, "--http-keepalive"]),
        "`--http ADDR --http-keepalive --master --processes N --listen 1024 --die-on-term "
        "--need-app --disable-logging`",
        requires=("peers",),
    ),
    Server(
        "headrace-nginx",
        "headrace",
        "nginx",
        headrace_cmd("--socket"),
        "`--socket UNIX_SOCKET --master --processes N --listen 1024 --disable-logging` "
        "behind nginx",
        requires=("headrace", "nginx"),
        flag="--socket",
    ),
    Server(
        "uwsgi-nginx",
        "uwsgi",
        "nginx",
        uwsgi_cmd(lambda ln: ["--socket", ln.sock or ""]),
        "`--socket UNIX_SOCKET --master --processes N --listen 1024 --die-on-term "
        "--need-app --disable-logging` behind nginx",
        requires=("peers", "nginx"),
    ),
]


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # wrk, saturation, memory, startup
    app: App
    processes: int
    connections: int = 64
    script: str = "get.lua"
    headers: tuple[str, ...] = ()


HELLO = App("hello")
SCENARIOS: list[Scenario] = [
    Scenario("hello1", "hello world, 1 worker, 64 keep-alive connections", "wrk", HELLO, 1),
    Scenario(
        "hello2",
        "hello world, 2 workers, 128 keep-alive connections",
        "wrk",
        HELLO,
        2,
        connections=128,
    ),
    Scenario("big100k", "100 KiB response body, 1 worker, 64 connections", "wrk", App("big"), 1),
    Scenario(
        "post1m",
        "POST of a 1 MiB body read fully by the app, 1 worker, 64 connections",
        "wrk",
        App("echo"),
        1,
        script="post_1mib.lua",
    ),
    Scenario(
        "close",
        "hello world with `Connection: close` on every request, 1 worker, 64 connections",
        "wrk",
        HELLO,
        1,
        headers=("Connection: close",),
    ),
    Scenario("flask", "Flask JSON endpoint, 1 worker, 64 connections", "wrk", App("flask_app"), 1),
    Scenario(
        "django",
        "Django view rendering a template, 1 worker, 64 connections",
        "wrk",
        App("django_app"),
        1,
    ),
    Scenario(
        "saturation",
        "seed app (sleep 1 s), 5 single-threaded workers, 20 parallel "
        "keep-alive clients, access logging ON",
        "saturation",
        App("seed"),
        5,
        connections=20,
    ),
    Scenario(
        "memory",
        "RSS of the server's process tree, idle and after 20,000 hello-world requests, 2 workers",
        "memory",
        HELLO,
        2,
    ),
    Scenario(
        "startup", "time from launch to the first 200 (hello world, 1 worker)", "startup", HELLO, 1
    ),
]
QUICK_SCENARIOS = ("hello1",)
# In the saturation logs, lines that may tell an operator that the server is overloaded.
NOTABLE = re.compile(
    r"warn|error|satur|queue|full|busy|backlog|overload|timeout|harakiri|503|retry", re.IGNORECASE
)
MEMORY_REQUESTS = 20_000


def server_reason(st: Setup, server: Server) -> str | None:
    for req in server.requires:
        if req in st.unavailable:
            return st.unavailable[req]
    return None


# --------------------------------------------------------------------------------------------
# launching a server (and nginx in front of it)

UWSGI_PARAMS = """\
uwsgi_param QUERY_STRING $query_string;
uwsgi_param REQUEST_METHOD $request_method;
uwsgi_param CONTENT_TYPE $content_type;
uwsgi_param CONTENT_LENGTH $content_length;
uwsgi_param REQUEST_URI $request_uri;
uwsgi_param PATH_INFO $document_uri;
uwsgi_param DOCUMENT_ROOT $document_root;
uwsgi_param SERVER_PROTOCOL $server_protocol;
uwsgi_param REQUEST_SCHEME $scheme;
uwsgi_param HTTPS $https if_not_empty;
uwsgi_param REMOTE_ADDR $remote_addr;
uwsgi_param REMOTE_PORT $remote_port;
uwsgi_param SERVER_PORT $server_port;
uwsgi_param SERVER_NAME $server_name;
"""

NGINX_CONF = """\
# Written by bench/run for one run; not the system's nginx.
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 16m;
    client_body_buffer_size 2m;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} backlog={backlog};
        location / {{
            include {prefix}/uwsgi_params;
            uwsgi_pass unix:{sock};
            uwsgi_buffer_size 16k;
            uwsgi_buffers 16 16k;
        }}
    }}
}}
"""


@dataclass
class Running:
    server: Server
    launch: Launch
    procs: list[tuple[str, subprocess.Popen, Path]]  # (what, process, its log)
    ready_s: float = 0.0

    @property
    def leader(self) -> subprocess.Popen:
        return self.procs[0][1]

    @property
    def log_path(self) -> Path:
        return self.procs[0][2]

    def check_alive(self) -> None:
        for what, proc, path in self.procs:
            if proc.poll() is not None:
                raise RunError(
                    f"{what} exited with code {proc.returncode}: {one_line(tail(path, 3))}"
                )


def spawn(st: Setup, argv: list[str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as out:
        try:
            return subprocess.Popen(
                st.pinned(SERVER_CORE, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=APPS,
                env=st.server_env(),
                start_new_session=True,
            )
        except OSError as e:
            raise RunError(f"cannot start {argv[0]}: {e}") from e


def wait_ready(run: Running, t0: float, probe_timeout: float = 2.0) -> float:
    deadline = t0 + READY_TIMEOUT
    while True:
        run.check_alive()
        if http_status(run.launch.port, "/", timeout=probe_timeout) == 200:
            return time.perf_counter() - t0
        if time.perf_counter() > deadline:
            raise RunError(
                f"no 200 within {READY_TIMEOUT:.0f} s: {one_line(tail(run.log_path, 3))}"
            )
        time.sleep(0.005)


@contextlib.contextmanager
def launched(
    st: Setup,
    server: Server,
    app: App,
    processes: int,
    logdir: Path,
    tag: str,
    threads: int | None = None,
    logging: bool = False,
    probe_timeout: float = 2.0,
) -> Iterator[Running]:
    """Starts the server (plus nginx in nginx mode), waits for the first 200, stops it all after."""
    reason = server_reason(st, server)
    if reason:
        raise RunError(reason)
    tmp = Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    run = Running(server, Launch(app, processes, threads, logging, free_port()), [])
    try:
        if server.mode == "nginx":
            run.launch.sock = str(tmp / "backend.sock")
        t0 = time.perf_counter()
        log_path = logdir / f"{tag}.log"
        run.procs.append((server.id, spawn(st, server.argv(st, run.launch), log_path), log_path))
        if server.mode == "nginx":
            assert st.nginx
            for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (tmp / sub).mkdir()
            (tmp / "uwsgi_params").write_text(UWSGI_PARAMS)
            user = "user root;" if os.geteuid() == 0 else ""
            (tmp / "nginx.conf").write_text(
                NGINX_CONF.format(
                    user=user,
                    prefix=tmp,
                    port=run.launch.port,
                    sock=run.launch.sock,
                    backlog=LISTEN_BACKLOG,
                )
            )
            nginx_log = logdir / f"{tag}.nginx.log"
            argv = [
                st.nginx,
                "-p",
                f"{tmp}/",
                "-c",
                str(tmp / "nginx.conf"),
                "-e",
                str(tmp / "error.log"),
            ]
            run.procs.append(("nginx", spawn(st, argv, nginx_log), tmp / "error.log"))
        run.ready_s = wait_ready(run, t0, probe_timeout)
        yield run
    finally:
        for _, proc, _ in reversed(run.procs):
            stop_process(proc)
        if server.mode == "nginx" and (tmp / "error.log").exists():
            with contextlib.suppress(OSError):
                shutil.copy(tmp / "error.log", logdir / f"{tag}.nginx-error.log")
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# load: wrk, the saturation client, memory


def wrk(
    st: Setup,
    port: int,
    connections: int,
    duration: int,
    script: str,
    headers: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    marker: str = "BENCH_JSON",
) -> dict:
    assert st.wrk
    argv = [
        st.wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        WRK_SOCKET_TIMEOUT,
        "-s",
        str(WRK_SCRIPTS / script),
    ]
    for h in headers:
        argv += ["-H", h]
    argv.append(f"http://127.0.0.1:{port}/")
    env = dict(os.environ, **(extra_env or {}))
    rc, out = run_bounded(st.pinned(CLIENT_CORE, argv), timeout=duration + 30, env=env)
    for line in out.splitlines():
        if line.startswith(marker + " "):
            return json.loads(line[len(marker) + 1 :])
    raise RunError(f"wrk gave no result (exit {rc}): {one_line(out.splitlines()[-3:])}")


def wrk_metrics(raw: dict) -> dict:
    secs = raw["duration_us"] / 1e6 or 1.0
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    good = max(0, raw["requests"] - raw["status"])
    return {
        "rps": good / secs,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["status"] + socket_errors,
        "non2xx": raw["status"],
        "socket_errors": socket_errors,
        "requests": raw["requests"],
        "wrk": raw,
    }


def saturation_client(port: int, clients: int, per_client: int, timeout: float) -> dict:
    """`clients` threads, each one keep-alive connection sending `per_client` requests in turn."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + timeout

    def client(i: int) -> None:
        conn: http.client.HTTPConnection | None = None
        for k in range(per_client):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with lock:
                    errors.append("deadline")
                return
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=remaining)
                conn.request("GET", f"/?client={i}&n={k}")
                resp = conn.getresponse()
                resp.read()
                with lock:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors.append(f"HTTP {resp.status}")
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(type(e).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    total = time.perf_counter() - t0
    with lock:
        lat = sorted(latencies)
        errs = list(errors)
    hung = sum(t.is_alive() for t in threads)
    if hung:
        errs += ["client hung"] * hung
    return {
        "total_s": total,
        "ok": len(lat),
        "errors": len(errs),
        "error_kinds": sorted(set(errs)),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_s": percentile(lat, 50),
        "p99_s": percentile(lat, 99),
        "max_s": lat[-1] if lat else None,
    }


def percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def tree_memory(leader: int) -> dict:
    rss = pss = 0
    pids = sorted(pid for pid, info in tree(leader).items() if info.state != "Z")
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return {"rss_kib": rss, "pss_kib": pss, "processes": len(pids)}


# --------------------------------------------------------------------------------------------
# one run of one scenario for one server


@dataclass
class Options:
    rounds: int
    duration: int
    warmup: int
    saturation_requests: int
    logdir: Path


def run_one(st: Setup, opts: Options, sc: Scenario, server: Server, rnd: int) -> dict:
    """One run; a server that did not even start gets a second try (e.g. its port was taken)."""
    rec = run_once(st, opts, sc, server, rnd, "")
    if not rec["ok"] and "ready_s" not in rec and not server_reason(st, server):
        retry = run_once(st, opts, sc, server, rnd, "-retry")
        retry["first_try"] = rec.get("reason")
        return retry
    return rec


def run_once(st: Setup, opts: Options, sc: Scenario, server: Server, rnd: int, suffix: str) -> dict:
    tag = f"{sc.key}-{server.id}-r{rnd + 1}{suffix}"
    rec: dict = {"scenario": sc.key, "server": server.id, "round": rnd + 1, "ok": False}
    t_start = time.monotonic()
    try:
        if sc.kind == "wrk":
            with launched(st, server, sc.app, sc.processes, opts.logdir, tag) as run:
                rec["ready_s"] = run.ready_s
                scraper = Scraper(run.launch) if server.scrape else None
                try:
                    if opts.warmup:
                        wrk(st, run.launch.port, sc.connections, opts.warmup, sc.script,
                            sc.headers)
                    raw = wrk(st, run.launch.port, sc.connections, opts.duration, sc.script,
                              sc.headers)
                finally:
                    if scraper is not None:
                        rec["scrapes"], rec["scrape_errors"] = scraper.stop()
                run.check_alive()
                rec.update(wrk_metrics(raw))
                if rec.get("scrape_errors"):
                    raise RuntimeError(f"{rec['scrape_errors']} of {rec['scrapes']} scrapes failed")
        elif sc.kind == "saturation":
            with launched(
                st,
                server,
                sc.app,
                sc.processes,
                opts.logdir,
                tag,
                threads=1,
                logging=True,
                probe_timeout=10.0,
            ) as run:
                rec["ready_s"] = run.ready_s
                time.sleep(0.5)
                offset = run.log_path.stat().st_size
                ideal = sc.connections * opts.saturation_requests / sc.processes
                res = saturation_client(
                    run.launch.port,
                    sc.connections,
                    opts.saturation_requests,
                    timeout=ideal * 4 + 30,
                )
                time.sleep(0.2)
                with open(run.log_path, "rb") as f:
                    f.seek(offset)
                    saturated = f.read().decode("utf-8", "replace").splitlines()
                rec.update(res)
                rec["ideal_s"] = ideal
                rec["log_lines"] = len(saturated)
                lines = [line[:300] for line in saturated if line.strip()]
                rec["log_tail"] = lines[-6:]
                rec["log_notable"] = [line for line in lines if NOTABLE.search(line)][-6:]
        elif sc.kind == "memory":
            with launched(st, server, sc.app, sc.processes, opts.logdir, tag) as run:
                rec["ready_s"] = run.ready_s
                time.sleep(1.5)
                rec["idle"] = tree_memory(run.leader.pid)
                stopped = wrk(
                    st,
                    run.launch.port,
                    sc.connections,
                    120,
                    "stop_after.lua",
                    extra_env={"BENCH_STOP_AFTER": str(MEMORY_REQUESTS)},
                    marker="BENCH_STOPPED",
                )
                run.check_alive()
                time.sleep(1.0)
                rec["after"] = tree_memory(run.leader.pid)
                rec["requests"] = stopped["responses"]
                rec["errors"] = stopped["non2xx"]
        elif sc.kind == "startup":
            with launched(st, server, sc.app, sc.processes, opts.logdir, tag) as run:
                rec["ready_s"] = run.ready_s
        else:  # pragma: no cover - table error
            raise RunError(f"unknown scenario kind {sc.kind}")
        rec["ok"] = True
    except RunError as e:
        rec["reason"] = str(e)
    rec["wall_s"] = time.monotonic() - t_start
    return rec


def describe(rec: dict) -> str:
    if not rec["ok"]:
        return f"could not run: {rec.get('reason')}"
    if "rps" in rec:
        return (
            f"{rec['rps']:,.0f} req/s  p50 {rec['p50_ms']:.2f} ms  p99 {rec['p99_ms']:.2f} ms"
            f"  errors {rec['errors']}"
        )
    if "total_s" in rec:
        return f"total {rec['total_s']:.1f} s  p99 {fmt_s(rec['p99_s'])}  errors {rec['errors']}"
    if "after" in rec:
        return (
            f"RSS idle {rec['idle']['rss_kib'] / 1024:.1f} MiB, after "
            f"{rec['after']['rss_kib'] / 1024:.1f} MiB"
        )
    return f"first 200 after {rec['ready_s'] * 1000:.0f} ms"


# --------------------------------------------------------------------------------------------
# the results file


def fmt_s(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def fmt_errors(m: dict) -> str:
    kinds = [
        f"{'non-2xx' if kind == 'status' else kind} {n:,}"
        for kind, n in m.get("kinds", {}).items()
        if n
    ]
    return f"{m['errors']:,}" + (f" ({', '.join(kinds)})" if kinds else "")


def fmt_ratio(v: float | None, base: float | None) -> str:
    if v is None or not base:
        return "n/a"
    return f"{v / base:.2f}"


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(records: list[dict], sc: Scenario, server: Server) -> dict:
    recs = [r for r in records if r["scenario"] == sc.key and r["server"] == server.id]
    ok = [r for r in recs if r["ok"]]
    out: dict = {"runs": len(recs), "ok_runs": len(ok)}
    if not ok:
        reasons = [r.get("reason", "?") for r in recs]
        out["reason"] = reasons[0] if reasons else "not run"
        return out
    out["ready_s"] = med([r["ready_s"] for r in ok])
    out["ready_min"] = min(r["ready_s"] for r in ok)
    out["ready_max"] = max(r["ready_s"] for r in ok)
    if sc.kind == "wrk":
        rps = [r["rps"] for r in ok]
        out["rps"] = statistics.median(rps)
        out["best"] = max(rps)
        out["spread"] = (max(rps) - min(rps)) / out["rps"] if out["rps"] else 0.0
        out["p50_ms"] = med([r["p50_ms"] for r in ok])
        out["p99_ms"] = med([r["p99_ms"] for r in ok])
        out["errors"] = sum(r["errors"] for r in ok)
        out["non2xx"] = sum(r["non2xx"] for r in ok)
        out["socket_errors"] = sum(r["socket_errors"] for r in ok)
        out["kinds"] = {
            kind: sum(r["wrk"][kind] for r in ok)
            for kind in ("status", "connect", "read", "write", "timeout")
        }
        out["requests"] = sum(r["requests"] for r in ok)
    elif sc.kind == "saturation":
        out["total_s"] = med([r["total_s"] for r in ok])
        out["p50_s"] = med([r["p50_s"] for r in ok])
        out["p99_s"] = med([r["p99_s"] for r in ok])
        out["max_s"] = max((r["max_s"] or 0) for r in ok)
        out["ideal_s"] = ok[0]["ideal_s"]
        out["errors"] = sum(r["errors"] for r in ok)
        out["log_tail"] = ok[-1]["log_tail"]
        out["log_notable"] = ok[-1].get("log_notable", [])
        out["log_lines"] = ok[-1]["log_lines"]
    elif sc.kind == "memory":
        for when in ("idle", "after"):
            for key in ("rss_kib", "pss_kib"):
                out[f"{when}_{key}"] = med([r[when][key] for r in ok])
        out["processes"] = ok[-1]["after"]["processes"]
        out["errors"] = sum(r["errors"] for r in ok)
    return out


def run_status(st: Setup, server: Server, records: list[dict]) -> str:
    reason = server_reason(st, server)
    if reason:
        return f"could not run: {reason}"
    recs = [r for r in records if r["server"] == server.id]
    failed = [r for r in recs if not r["ok"]]
    if not recs:
        return "not run"
    if len(failed) == len(recs):
        return f"could not run: {failed[0].get('reason')}"
    if failed:
        return f"ok, but {len(failed)} of {len(recs)} runs failed (see below)"
    return "ok"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def counterpart(server: Server) -> Server | None:
    mode = "http" if server.family == "ceiling" else server.mode
    return next((s for s in SERVERS if s.family == "headrace" and s.mode == mode), None)


def render(
    st: Setup,
    opts: Options,
    scenarios: list[Scenario],
    servers: list[Server],
    records: list[dict],
    meta: dict,
) -> str:
    quick = meta.get("quick", "--quick" in meta.get("argv", []))
    out = [f"# headrace benchmarks — {meta['date']}{' (quick)' if quick else ''}", ""]
    out += [
        f"Produced by `bench/run {' '.join(meta['argv'])}`".rstrip() + " — see bench/README.md "
        "for what each scenario does and how every server is configured.",
        "",
        "## Setup",
        "",
        (
            f"- machine: {meta['cpu']}, {meta['cores']} cores, Linux {platform.release()}; "
            f"load average {meta['load_start']} at start, {meta.get('load_end', '?')} at end "
            "(a shared, noisy machine: read spreads before ratios)"
        ),
        (
            f"- headrace: {st.versions.get('headrace', 'not available')}, checkout "
            f"{meta['git']}, {st.headrace_origin}"
        ),
        "- peers: "
        + ", ".join(
            f"{n} {st.versions[n]}"
            for n in ("granian", "pyuwsgi", "gunicorn", "flask", "django")
            if n in st.versions
        )
        + f"; Python {meta['python']}",
        "- tools: "
        + ", ".join(st.versions[n] for n in ("wrk", "nginx", "rustc") if n in st.versions),
        (
            "- pinning: every server process (and nginx) on core 0 with `taskset -c 0`; wrk and the "
            "harness on core 1"
            if st.pin
            else "- pinning: none (fewer than 2 cores, or no taskset)"
        ),
        *[f"- note: {note}" for note in st.notes],
        (
            f"- method: {opts.rounds} interleaved rounds (every server once per round, in table "
            f"order); each wrk run is {opts.warmup} s warm-up + {opts.duration} s measured, 1 wrk "
            "thread; each run starts a fresh server, which is stopped by PID afterwards"
        ),
        (
            "- logging: access/request logging is OFF for every server (`--disable-logging` for "
            "uWSGI and headrace, Granian's and Gunicorn's access logs are off by default) except "
            "in `saturation`, where it is ON and the server's output is captured"
        ),
        (
            "- req/s counts successful responses (wrk's requests minus responses with status "
            ">= 400) per second; p50/p99 are wrk's latency percentiles; errors = non-2xx + socket "
            "errors (connect, read, write, timeout), summed over all rounds"
        ),
        (
            "- `÷ headrace` divides the peer's number by headrace's in the same mode (direct HTTP vs "
            "direct HTTP, router vs router, nginx+uwsgi vs nginx+uwsgi): for req/s above 1 means the "
            "peer is faster; for times and memory above 1 means the peer is slower or bigger"
        ),
        (
            "- best = the highest req/s of any round (noise from other work on the machine only "
            "ever lowers throughput, so best is the least disturbed figure); spread = (max − min) / "
            "median of req/s over the rounds"
        ),
        "",
    ]
    if st.unavailable:
        out += ["Could not be set up:", ""]
        out += [f"- {k}: {v}" for k, v in st.unavailable.items()]
        out.append("")

    out += ["## Servers", ""]
    rows = []
    for s in servers:
        config = s.config
        if s.flag and st.headrace_help:
            said = st.headrace_help.get(s.flag)
            config += (
                f" — `headrace --help`: {said!r}"
                if said
                else f" — no `{s.flag}` in `headrace --help`"
            )
        rows.append([f"`{s.id}`", s.mode, config, run_status(st, s, records)])
    out += table(["server", "mode", "configuration", "status"], rows)
    out.append("")

    for sc in scenarios:
        applicable = [s for s in servers if s.scenarios is None or sc.key in s.scenarios]
        sums = {s.id: summarize(records, sc, s) for s in applicable}
        out += [f"## {sc.key} — {sc.title}", ""]
        if sc.kind == "wrk":
            rows = []
            for s in applicable:
                m = sums[s.id]
                base_srv = counterpart(s)
                base = sums.get(base_srv.id, {}) if base_srv else {}
                if "rps" not in m:
                    rows.append(
                        [
                            f"`{s.id}`",
                            s.mode,
                            f"could not run: {m.get('reason')}",
                            "",
                            "",
                            "",
                            "",
                            "",
                            "",
                            f"{m['ok_runs']}/{m['runs']}",
                        ]
                    )
                    continue
                rows.append(
                    [
                        f"`{s.id}`",
                        s.mode,
                        f"{m['rps']:,.0f}",
                        f"{m['best']:,.0f}",
                        f"{m['spread'] * 100:.0f}%",
                        f"{m['p50_ms']:.2f} ms",
                        f"{m['p99_ms']:.2f} ms",
                        fmt_errors(m),
                        fmt_ratio(m["rps"], base.get("rps")),
                        f"{m['ok_runs']}/{m['runs']}",
                    ]
                )
            out += table(
                [
                    "server",
                    "mode",
                    "req/s (median)",
                    "best",
                    "spread",
                    "p50",
                    "p99",
                    "errors",
                    "÷ headrace",
                    "runs ok",
                ],
                rows,
            )
            if "Connection: close" in sc.headers:
                out += [
                    "",
                    (
                        "wrk counts a read error each time a server closes the connection after a "
                        "response that did not itself say `Connection: close`. Here the client asked "
                        "for the close, so such read errors are not failed requests; the server "
                        "merely did not echo the header (RFC 9112 §9.6: it SHOULD)."
                    ),
                ]
        elif sc.kind == "saturation":
            rows = []
            for s in applicable:
                m = sums[s.id]
                base_srv = counterpart(s)
                base = sums.get(base_srv.id, {}) if base_srv else {}
                if "total_s" not in m:
                    rows.append(
                        [
                            f"`{s.id}`",
                            s.mode,
                            f"could not run: {m.get('reason')}",
                            "",
                            "",
                            "",
                            "",
                            "",
                            f"{m['ok_runs']}/{m['runs']}",
                        ]
                    )
                    continue
                rows.append(
                    [
                        f"`{s.id}`",
                        s.mode,
                        fmt_s(m["total_s"]),
                        fmt_s(m["ideal_s"]),
                        fmt_s(m["p50_s"]),
                        fmt_s(m["p99_s"]),
                        str(m["errors"]),
                        fmt_ratio(m["total_s"], base.get("total_s")),
                        f"{m['ok_runs']}/{m['runs']}",
                    ]
                )
            out += table(
                [
                    "server",
                    "mode",
                    "total time (median)",
                    "ideal",
                    "p50",
                    "p99",
                    "errors",
                    "÷ headrace (time)",
                    "runs ok",
                ],
                rows,
            )
            out += [
                "",
                (
                    f"{opts.saturation_requests} requests per client "
                    f"({sc.connections * opts.saturation_requests} in all); ideal = all "
                    "workers busy all the time. Last lines each server logged while saturated "
                    "(last round; the full logs are in bench/.venv/logs/):"
                ),
                "",
            ]
            for s in applicable:
                m = sums[s.id]
                if "log_tail" not in m:
                    continue
                out.append(f"`{s.id}` ({m['log_lines']} lines while saturated):")
                out.append("")
                out.append("```")
                out += m["log_tail"] or ["(nothing)"]
                if m["log_notable"]:
                    out += ["...", "# lines that look like warnings about the load:"]
                    out += m["log_notable"]
                out.append("```")
                out.append("")
        elif sc.kind == "memory":
            rows = []
            for s in applicable:
                m = sums[s.id]
                base_srv = counterpart(s)
                base = sums.get(base_srv.id, {}) if base_srv else {}
                if "after_rss_kib" not in m:
                    rows.append(
                        [
                            f"`{s.id}`",
                            s.mode,
                            f"could not run: {m.get('reason')}",
                            "",
                            "",
                            "",
                            "",
                            "",
                            "",
                        ]
                    )
                    continue
                rows.append(
                    [
                        f"`{s.id}`",
                        s.mode,
                        str(m["processes"]),
                        f"{m['idle_rss_kib'] / 1024:.1f}",
                        f"{m['after_rss_kib'] / 1024:.1f}",
                        f"{m['idle_pss_kib'] / 1024:.1f}",
                        f"{m['after_pss_kib'] / 1024:.1f}",
                        fmt_ratio(m["after_rss_kib"], base.get("after_rss_kib")),
                        str(m["errors"]),
                    ]
                )
            out += table(
                [
                    "server",
                    "mode",
                    "processes",
                    "RSS idle MiB",
                    "RSS after MiB",
                    "PSS idle MiB",
                    "PSS after MiB",
                    "÷ headrace (RSS after)",
                    "non-2xx",
                ],
                rows,
            )
            out += [
                "",
                (
                    "Sum over the server's process tree (master, workers, router) from "
                    "/proc/PID/status (RSS) and /proc/PID/smaps_rollup (PSS, which splits "
                    "copy-on-write pages shared between master and workers); nginx is not "
                    f"counted. Medians over the rounds; {MEMORY_REQUESTS:,} requests over 64 "
                    "connections."
                ),
            ]
        out.append("")

    # startup: from the startup scenario, else from the hello1 launches (same app and workers)
    start_sc = next((s for s in scenarios if s.kind == "startup"), None)
    source = start_sc or next((s for s in scenarios if s.key == "hello1"), None)
    if source is not None:
        if start_sc is None:
            out += ["## startup — time from launch to the first 200 (from the hello1 launches)", ""]
        rows = []
        sums = {
            s.id: summarize(records, source, s)
            for s in servers
            if s.scenarios is None or source.key in s.scenarios
        }
        for s in servers:
            if s.id not in sums:
                continue
            m = sums[s.id]
            base_srv = counterpart(s)
            base = sums.get(base_srv.id, {}) if base_srv else {}
            if "ready_s" not in m:
                rows.append([f"`{s.id}`", s.mode, f"could not run: {m.get('reason')}", "", ""])
                continue
            rows.append(
                [
                    f"`{s.id}`",
                    s.mode,
                    f"{m['ready_s'] * 1000:.0f} ms",
                    f"{m['ready_min'] * 1000:.0f}–{m['ready_max'] * 1000:.0f} ms",
                    fmt_ratio(m["ready_s"], base.get("ready_s")),
                ]
            )
        out += table(["server", "mode", "first 200 (median)", "range", "÷ headrace"], rows)
        out += [
            "",
            (
                "Measured from the launch of the server process to the first 200 answered "
                "to a probe polling every 5 ms (through nginx in nginx mode)."
            ),
        ]
        out.append("")

    if st.build_log_tail:
        out += ["## headrace build failure", "", "Last lines of `pip install <repo>`:", "", "```"]
        out += st.build_log_tail
        out += ["```", ""]
    out += [f"Raw per-run numbers: `{meta['json_name']}`.", ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# main


def select(items: list, names: str | None, what: str, key: Callable) -> list:
    if not names:
        return items
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    chosen = [i for i in items if any(key(i) == w or key(i).startswith(w + "-") for w in wanted)]
    unknown = [
        w for w in wanted if not any(key(i) == w or key(i).startswith(w + "-") for i in items)
    ]
    if unknown:
        raise SystemExit(
            f"unknown {what}: {', '.join(unknown)} (known: {', '.join(key(i) for i in items)})"
        )
    return chosen


def git_describe() -> str:
    rc, out = run_bounded(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], timeout=20)
    commit = out.strip() if rc == 0 else "(no commit yet)"
    rc, out = run_bounded(
        [
            "git",
            "-C",
            str(ROOT),
            "status",
            "--porcelain",
            "--",
            "src",
            "python",
            "Cargo.toml",
            "pyproject.toml",
        ],
        timeout=20,
    )
    dirty = rc == 0 and out.strip()
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark headrace against uWSGI, Granian and Gunicorn; writes "
        "bench/results/<date>.md. See bench/README.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="only the main scenario (hello1), 3 rounds of 1 s warm-up + 2 s "
        "(under 3 minutes once bench/.venv is built)",
    )
    p.add_argument("--only", metavar="S1,S2", help="scenarios to run (default: all; see --list)")
    p.add_argument(
        "--servers",
        metavar="A,B",
        help="servers to run: ids or families, e.g. headrace,granian or uwsgi-router",
    )
    p.add_argument("--modes", metavar="M1,M2", help="modes to run: http, router, nginx")
    p.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds (default 3; fewer only for debugging, flagged in the results)",
    )
    p.add_argument("--duration", type=int, help="seconds per measured wrk run (default 5, quick 2)")
    p.add_argument("--warmup", type=int, help="seconds of wrk warm-up before each run (default 1)")
    p.add_argument(
        "--saturation-requests",
        type=int,
        default=4,
        help="requests per client in the saturation scenario (default 4; 10 is "
        "the seed experiment's 200 requests)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild headrace even if unchanged")
    p.add_argument(
        "--no-build", action="store_true", help="use the headrace already installed in bench/.venv"
    )
    p.add_argument(
        "--headrace",
        metavar="PATH",
        help="measure this headrace executable (e.g. .venv/bin/headrace from ./dev build) "
        "instead of building one into bench/.venv",
    )
    p.add_argument("--no-apt", action="store_true", help="never call apt-get")
    p.add_argument("--out", type=Path, help="results file (default bench/results/<date>.md)")
    p.add_argument("--setup-only", action="store_true", help="prepare everything, run nothing")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS.json",
        help="rewrite RESULTS.md from a previous run's raw numbers, then exit",
    )
    p.add_argument("--list", action="store_true", help="list scenarios and servers, then exit")
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def rerender(path: Path) -> int:
    """--render RESULTS.json: rewrites RESULTS.md from the raw numbers, without running anything."""
    data = json.loads(path.read_text())
    meta = data["meta"]
    setup = data.get("setup", {})
    st = Setup(pin=setup.get("pin", True))
    st.unavailable = data.get("unavailable", {})
    st.versions = data.get("versions", {})
    st.notes = setup.get("notes", [])
    st.headrace_origin = setup.get("headrace_origin", st.headrace_origin)
    st.headrace_help = setup.get("headrace_help", {})
    st.build_log_tail = setup.get("build_log_tail", [])
    o = data["options"]
    opts = Options(
        o["rounds"], o["duration"], o["warmup"], o["saturation_requests"], Path(meta["logs"])
    )
    records = data["records"]
    sc_keys = meta.get("scenarios") or {r["scenario"] for r in records}
    srv_ids = meta.get("servers") or {r["server"] for r in records}
    scenarios = [s for s in SCENARIOS if s.key in sc_keys]
    servers = [s for s in SERVERS if s.id in srv_ids]
    meta["json_name"] = path.name
    out_md = path.with_suffix(".md")
    write_atomic(out_md, render(st, opts, scenarios, servers, records, meta))
    log(f"wrote {out_md}")
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        return rerender(args.render)
    if args.list:
        for sc in SCENARIOS:
            print(
                f"scenario {sc.key:11} {sc.title}{'  [quick]' if sc.key in QUICK_SCENARIOS else ''}"
            )
        for s in SERVERS:
            print(f"server   {s.id:17} {s.mode:7} {s.config}")
        return 0

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    scenarios = select(
        [s for s in SCENARIOS if not args.quick or s.key in QUICK_SCENARIOS]
        if not args.only
        else SCENARIOS,
        args.only,
        "scenario",
        lambda s: s.key,
    )
    servers = select(SERVERS, args.servers, "server", lambda s: s.id)
    servers = select(servers, args.modes, "mode", lambda s: s.mode) if args.modes else servers
    if not servers or not scenarios:
        raise SystemExit("nothing selected")

    started = time.monotonic()
    date = datetime.date.today().isoformat()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_md = args.out or RESULTS / f"{date}.md"
    out_json = out_md.with_suffix(".json")
    st = prepare(args)
    if args.setup_only:
        log(
            "setup done: "
            + (", ".join(f"{k}: {v}" for k, v in st.unavailable.items()) or "everything available")
        )
        return 0
    if "wrk" in st.unavailable:
        log("wrk is missing: nothing can be measured")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    opts = Options(
        rounds=args.rounds or 3,
        duration=args.duration or (2 if args.quick else 5),
        warmup=1 if args.warmup is None else args.warmup,
        saturation_requests=max(1, args.saturation_requests),
        logdir=LOGS / stamp,
    )
    if opts.rounds < 3:
        st.notes.append(f"only {opts.rounds} round(s): for debugging, not for comparisons")
    opts.logdir.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": date,
        "argv": argv,
        "git": git_describe(),
        "cpu": cpu_model(),
        "cores": CORES,
        "python": st.versions.get("python") or platform.python_version(),
        "load_start": loadavg(),
        "json_name": out_json.name,
        "quick": args.quick,
        "scenarios": [s.key for s in scenarios],
        "servers": [s.id for s in servers],
        "logs": str(opts.logdir),
    }
    rc, out = run_bounded(
        [st.bin("python"), "-c", ("import platform; print(platform.python_version())")], timeout=30
    )
    if rc == 0:
        meta["python"] = out.strip()
    records: list[dict] = []

    def save() -> None:
        meta["load_end"] = loadavg()
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
        write_atomic(out_md, render(st, opts, scenarios, servers, records, meta))
        write_atomic(
            out_json,
            json.dumps(
                {
                    "meta": meta,
                    "unavailable": st.unavailable,
                    "versions": st.versions,
                    "setup": {
                        "pin": st.pin,
                        "notes": st.notes,
                        "headrace_origin": st.headrace_origin,
                        "headrace_help": st.headrace_help,
                        "build_log_tail": st.build_log_tail,
                    },
                    "options": {
                        "rounds": opts.rounds,
                        "duration": opts.duration,
                        "warmup": opts.warmup,
                        "saturation_requests": opts.saturation_requests,
                    },
                    "records": records,
                },
                indent=1,
                default=str,
            )
            + "\n",
        )

    log(f"results: {out_md}; server logs: {opts.logdir}")
    try:
        for sc in scenarios:
            applicable = [s for s in servers if s.scenarios is None or sc.key in s.scenarios]
            gave_up: set[str] = set()
            for s in applicable:
                reason = server_reason(st, s)
                if reason:
                    records.append(
                        {
                            "scenario": sc.key,
                            "server": s.id,
                            "round": 0,
                            "ok": False,
                            "reason": reason,
                        }
                    )
                    gave_up.add(s.id)
            for rnd in range(opts.rounds):
                for s in applicable:
                    if s.id in gave_up:
                        continue
                    rec = run_one(st, opts, sc, s, rnd)
                    records.append(rec)
                    log(f"{sc.key} round {rnd + 1}/{opts.rounds} {s.id}: {describe(rec)}")
                    if not rec["ok"] and "ready_s" not in rec:
                        gave_up.add(s.id)  # it did not even start: do not retry every round
            save()
    finally:
        save()
        log(f"wrote {out_md} and {out_json.name} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
