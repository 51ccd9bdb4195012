"""`--daemonize FILE` / `--daemonize2 FILE`: the command returns at once with exit code 0, the
master runs on detached (its own session, stdin from /dev/null) with every line appended to
FILE, serves, reloads under the same pid, and stops on SIGTERM. Stopped here by the pid it
wrote, never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest
from support import (
    app,
    build_request,
    free_port,
    headrace_cmd,
    pid_alive,
    server_env,
    wait_until,
)

BASIC = app("basic.py")


def get_pid(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(build_request("GET", "/pid", headers=[("Connection", "close")]))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    return int(body)


@pytest.mark.parametrize("option", ["--daemonize", "--daemonize2"])
def test_daemonize_detaches_serves_reloads_and_stops(tmp_path, option):
    log, pidfile, port = tmp_path / "hr.log", tmp_path / "hr.pid", free_port()
    p = subprocess.run(
        [*headrace_cmd(), "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", BASIC,
         "--processes", "2", "--pidfile", str(pidfile), option, str(log)],
        env=server_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
    )
    assert p.returncode == 0, p.stderr
    master = None
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the pidfile")
        master = int(pidfile.read_text())
        assert pid_alive(master)
        assert os.getsid(master) == master, "the daemon did not start its own session"
        wait_until(lambda: "spawned headrace worker 2" in log.read_text(), 10, "the workers")
        assert get_pid(port) > 0
        # a reload re-execs the master: it must not detach again (same pid, still serving)
        os.kill(master, signal.SIGHUP)
        wait_until(lambda: "reload complete" in log.read_text(), 20, "the reload")
        assert int(pidfile.read_text()) == master and pid_alive(master)
        assert get_pid(port) > 0  # served after the reload
        assert os.readlink(f"/proc/{master}/fd/0") == "/dev/null"
        assert "Starting headrace" in log.read_text()
    finally:
        if master and pid_alive(master):
            os.kill(master, signal.SIGTERM)
            wait_until(lambda: not pid_alive(master), 15, "the daemon to stop")
    assert "goodbye to headrace" in log.read_text()
