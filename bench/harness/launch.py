"""Starting a server (and nginx in front of it in nginx mode), waiting for its first 200, and
stopping everything it started by PID afterwards."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.common import APPS, LISTEN_BACKLOG, SERVER_CORE, RunError, one_line, tail
from harness.prepare import Setup
from harness.procs import stop_process
from harness.servers import App, Launch, Server, server_reason

READY_TIMEOUT = 60.0  # seconds from launch to the first 200


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def spawn(st: Setup, argv: list[str], log_path: Path, pinned: bool = True) -> subprocess.Popen:
    """Starts a server process on the server core (`pinned`) or on every core."""
    with open(log_path, "wb") as out:
        try:
            return subprocess.Popen(
                st.pinned(SERVER_CORE, argv) if pinned else st.unpinned(argv),
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
    pinned: bool = True,
    ws: bool = False,
) -> Iterator[Running]:
    """Starts the server (plus nginx in nginx mode), waits for the first 200, stops it all after.

    `pinned`: on the server core (the default) or free to run on every core; `ws`: the
    scenario uses WebSockets."""
    reason = server_reason(st, server)
    if reason:
        raise RunError(reason)
    tmp = Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    run = Running(server, Launch(app, processes, threads, logging, free_port(), ws=ws), [])
    try:
        if server.mode == "nginx":
            run.launch.sock = str(tmp / "backend.sock")
        t0 = time.perf_counter()
        log_path = logdir / f"{tag}.log"
        run.procs.append(
            (server.id, spawn(st, server.argv(st, run.launch), log_path, pinned), log_path)
        )
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
            run.procs.append(("nginx", spawn(st, argv, nginx_log, pinned), tmp / "error.log"))
        run.ready_s = wait_ready(run, t0, probe_timeout)
        yield run
    finally:
        for _, proc, _ in reversed(run.procs):
            stop_process(proc)
        if server.mode == "nginx" and (tmp / "error.log").exists():
            with contextlib.suppress(OSError):
                shutil.copy(tmp / "error.log", logdir / f"{tag}.nginx-error.log")
        shutil.rmtree(tmp, ignore_errors=True)
