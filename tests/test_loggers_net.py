"""The datagram loggers: `logger = socket:ADDR[,PREFIX]` (uWSGI's logsocket plugin: each log
line as one datagram to a unix socket or HOST:PORT over UDP), `req-logger = socket:...` for
the request lines, and `logger = syslog[:IDENT[,FACILITY]]` (uWSGI's syslog plugin: RFC 3164
datagrams to /dev/log; without /dev/log, one warning and the lines stay on stderr). The tests
bind their own datagram sockets on 127.0.0.1 or in their tmp directory; nothing global."""

from __future__ import annotations

import os
import socket
import time

import pytest
from support import REQUEST_LINE, app, build_request, free_port, wait_until

APP = app("basic.py")
FRONTS = {"direct": "--http-socket", "router": "--http"}


class Sink:
    """A datagram socket the server logs to; `lines` collects what arrived."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(0.05)
        self.lines: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.lines.append(self.sock.recv(65536).decode(errors="replace"))
            except (TimeoutError, BlockingIOError):
                return self.lines

    def wait(self, needle: str, timeout: float = 10.0) -> str:
        return wait_until(lambda: next((x for x in self.drain() if needle in x), None),
                          timeout, f"a datagram with {needle!r}; got {self.lines[-5:]}")


def unix_sink(tmp_path, name) -> tuple[Sink, str]:
    path = str(tmp_path / name)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    return Sink(s), path


def start(headrace, front, *args, processes=1):
    port = free_port()
    srv = headrace(FRONTS[front], f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes",
                   str(processes), *args, port=port, probe=None, workers=0, bind=False)
    return srv, port


def get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(build_request("GET", path, headers=[("Connection", "close")]))
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data


def ready(port):
    def ok():
        try:
            return get(port, "/ready")
        except OSError:
            return None
    wait_until(ok, 15, "the server to answer")


@pytest.mark.parametrize("front", FRONTS)
def test_socket_logger_takes_every_line(headrace, tmp_path, front):
    sink, path = unix_sink(tmp_path, "log.sock")
    srv, port = start(headrace, front, "--logger", f"socket:{path}")
    ready(port)
    get(port, "/logged-path")
    sink.wait("*** Starting headrace")
    line = sink.wait("GET /logged-path")
    # one line per datagram, newline kept (uWSGI's logsocket sends the line as written)
    assert line.endswith("\n") and line.count("\n") == 1, line
    assert REQUEST_LINE.match(line.rstrip("\n")), line
    assert "*** Starting headrace" not in srv.log()
    assert "GET /logged-path" not in srv.log()


def test_req_logger_socket_and_udp_prefix(headrace, tmp_path):
    req_sink, req_path = unix_sink(tmp_path, "req.sock")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    main = Sink(udp)
    udp_port = udp.getsockname()[1]
    _srv, port = start(headrace, "direct", "--logger", f"socket:127.0.0.1:{udp_port},[app]",
                      "--req-logger", f"socket:{req_path}", processes=2)
    ready(port)
    get(port, "/req-only")
    req = req_sink.wait("GET /req-only")
    assert not req.startswith("[app]")
    first = main.wait("*** Starting headrace")
    assert first.startswith("[app]*** Starting headrace"), first
    time.sleep(0.2)
    assert not [x for x in main.drain() if "GET /req-only" in x]


@pytest.mark.skipif(os.path.exists("/dev/log"), reason="a syslog socket exists here")
@pytest.mark.parametrize("front", FRONTS)
def test_syslog_without_dev_log_warns_and_keeps_stderr(headrace, front):
    srv, port = start(headrace, front, "--logger", "syslog:myapp,local0")
    ready(port)
    get(port, "/still-logged")
    srv.wait_log("GET /still-logged")
    warnings = [x for x in srv.log().splitlines() if "no syslog socket at /dev/log" in x]
    assert len(warnings) == 1, warnings


@pytest.mark.parametrize("value", ["socket:", "socket:,prefix"])
def test_bad_socket_logger_exits_2(headrace, value):
    srv = headrace("--wsgi-file", APP, "--logger", value, wait=False)
    assert srv.proc.wait(10) == 2
    lines = srv.log().strip().splitlines()
    assert len(lines) == 1 and "logger" in lines[0], lines
