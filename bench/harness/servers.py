"""The apps, the server table (one entry per server and mode), and the command line of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.common import APPS, LISTEN_BACKLOG, VENV
from harness.prepare import Setup


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
    ws: bool = False  # the scenario uses WebSockets (servers that can turn them off keep them on)

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
    interfaces: tuple[str, ...] = ("wsgi",)  # the scenarios' interfaces it runs: wsgi, asgi

    def applies_to(self, scenario: str, interface: str = "wsgi") -> bool:
        if interface not in self.interfaces:
            return False
        return self.scenarios is None or scenario in self.scenarios


MODES = {
    "http": "direct HTTP (the server parses HTTP itself)",
    "router": "HTTP router in front of workers (`--http`)",
    "nginx": "real nginx `uwsgi_pass` to a uwsgi-protocol socket (`--socket`)",
}


def stats_socket(ln: Launch) -> str:
    """The abstract unix socket headrace-stats serves its stats and metrics on."""
    return f"@headrace-bench-stats-{ln.port}"


def uwsgi_options(ln: Launch) -> list[str]:
    """What headrace and uWSGI are both given, in the same words: the app, the master, the
    workers, the listen backlog."""
    return [
        "--wsgi-file",
        str(ln.app.path),
        "--master",
        "--processes",
        str(ln.processes),
        "--listen",
        str(LISTEN_BACKLOG),
    ]


def headrace_cmd(
    flag: str, stats: bool = False, extra: tuple[str, ...] = ()
) -> Callable[[Setup, Launch], list[str]]:
    def argv(st: Setup, ln: Launch) -> list[str]:
        cmd = [st.headrace_bin, flag, ln.sock or ln.addr, *uwsgi_options(ln), *extra]
        if not Path(st.headrace_bin).is_relative_to(VENV):
            # --headrace PATH: the app imports the peers' frameworks (and uvloop) all the same
            cmd += ["--home", str(VENV)]
        if ln.threads:
            cmd += ["--threads", str(ln.threads)]
        if not ln.logging:
            cmd.append("--disable-logging")
        if stats:
            cmd += ["--stats", stats_socket(ln), "--stats-http"]
        return cmd

    return argv


def uwsgi_cmd(front: Callable[[Launch], list[str]]) -> Callable[[Setup, Launch], list[str]]:
    def argv(st: Setup, ln: Launch) -> list[str]:
        cmd = [st.bin("uwsgi"), *front(ln), *uwsgi_options(ln), "--die-on-term", "--need-app"]
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


def gunicorn_cmd(
    worker: str, threads: int, extra: tuple[str, ...] = ()
) -> Callable[[Setup, Launch], list[str]]:
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
        return [*cmd, *extra, ln.app.target]

    return argv


def granian_asgi_cmd(loop: str) -> Callable[[Setup, Launch], list[str]]:
    def argv(st: Setup, ln: Launch) -> list[str]:
        cmd = [
            st.bin("granian"),
            "--interface",
            "asgi",
            "--loop",
            loop,
            "--host",
            "127.0.0.1",
            "--port",
            str(ln.port),
            "--workers",
            str(ln.processes),
            "--http",
            "1",
            *([] if ln.ws else ["--no-ws"]),
            "--backlog",
            str(LISTEN_BACKLOG),
            "--working-dir",
            str(APPS),
        ]
        cmd.append("--access-log" if ln.logging else "--no-access-log")
        return [*cmd, ln.app.target]

    return argv


def uvicorn_cmd(st: Setup, ln: Launch) -> list[str]:
    return [
        st.bin("uvicorn"),
        "--host",
        "127.0.0.1",
        "--port",
        str(ln.port),
        "--workers",
        str(ln.processes),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--ws",
        "auto" if ln.ws else "none",  # auto: websockets-sansio, its fastest
        "--backlog",
        str(LISTEN_BACKLOG),
        "--app-dir",
        str(APPS),
        "--access-log" if ln.logging else "--no-access-log",
        ln.app.target,
    ]


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
        "`--http-socket ADDR --master --processes N --listen 1024 --disable-logging` (ASGI "
        "scenarios: the same; the app is detected as ASGI, the loop is uvloop, installed in "
        "bench/.venv)",
        requires=("headrace",),
        flag="--http-socket",
        interfaces=("wsgi", "asgi"),
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


# The ASGI servers (scenarios asgi-*): one worker each, as their documentation recommends for
# speed. headrace itself is the `headrace` entry above, which runs both interfaces.
SERVERS += [
    Server(
        "headrace-asyncio",
        "headrace",
        "http",
        headrace_cmd("--http-socket", extra=("--loop", "asyncio")),
        "as `headrace`, with `--loop asyncio` (the standard library's event loop)",
        requires=("headrace",),
        flag="--loop",
        interfaces=("asgi",),
    ),
    Server(
        "granian-asgi-asyncio",
        "granian",
        "http",
        granian_asgi_cmd("asyncio"),
        "`--interface asgi --loop asyncio --workers N --http 1 --no-ws --backlog 1024 "
        "--no-access-log` (`--no-ws` left out in asgi-ws)",
        requires=("peers",),
        interfaces=("asgi",),
    ),
    Server(
        "granian-asgi-uvloop",
        "granian",
        "http",
        granian_asgi_cmd("uvloop"),
        "as `granian-asgi-asyncio`, with `--loop uvloop`",
        requires=("peers",),
        interfaces=("asgi",),
    ),
    Server(
        "uvicorn",
        "uvicorn",
        "http",
        uvicorn_cmd,
        "`--http httptools --loop uvloop --workers N --ws none --backlog 1024 --no-access-log` "
        "(`--ws auto` in asgi-ws: websockets-sansio)",
        requires=("peers",),
        interfaces=("asgi",),
    ),
    Server(
        "gunicorn-uvicorn",
        "gunicorn",
        "http",
        gunicorn_cmd("uvicorn.workers.UvicornWorker", 1),
        "`--worker-class uvicorn.workers.UvicornWorker --workers N --backlog 1024 "
        "--no-control-socket` (Uvicorn picks httptools and uvloop, both installed)",
        requires=("peers",),
        interfaces=("asgi",),
    ),
    Server(
        "gunicorn-asgi",
        "gunicorn",
        "http",
        gunicorn_cmd("asgi", 1, extra=("--asgi-loop", "uvloop")),
        "`--worker-class asgi --asgi-loop uvloop --workers N --backlog 1024 "
        "--no-control-socket` (Gunicorn's own ASGI worker)",
        requires=("peers",),
        interfaces=("asgi",),
    ),
]


def server_reason(st: Setup, server: Server) -> str | None:
    for req in server.requires:
        if req in st.unavailable:
            return st.unavailable[req]
    return None


def counterpart(server: Server) -> Server | None:
    mode = "http" if server.family == "ceiling" else server.mode
    return next((s for s in SERVERS if s.family == "headrace" and s.mode == mode), None)
