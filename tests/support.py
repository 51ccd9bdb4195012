"""Helpers shared by the e2e tests: raw HTTP over sockets, the uWSGI log-line regex, waits.

Nothing here mocks anything: requests are bytes on a real socket to the real server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from typing_extensions import Self


# uWSGI's default request log line, e.g.
# [pid: 8|app: 0|req: 1/1] 127.0.0.1 () {32 vars in 405 bytes} [Thu Apr 11 05:04:21 2024]
# GET /?param=Request_0 => generated 4 bytes in 10005 msecs (HTTP/1.1 200) 1 headers in 45
# bytes (1 switches on core 0)
# The status is any integer, as in uWSGI (which logs 0 when no response went out).
REQUEST_LINE = re.compile(
    r"^\[pid: (?P<pid>\d+)\|app: (?P<app>\d+)\|req: (?P<wreq>\d+)/(?P<treq>\d+)\] "
    r"(?P<addr>\S*) \((?P<user>[^)]*)\) "
    r"\{(?P<vars>\d+) vars in (?P<vbytes>\d+) bytes\} "
    r"\[(?P<date>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\] "
    r"(?P<method>\S+) (?P<uri>\S+) => generated (?P<size>\d+) bytes in (?P<msecs>\d+) (?:msecs|micros) "
    r"\((?P<proto>HTTP/\d\.\d) (?P<status>-?\d+)\) "
    r"(?P<nheaders>\d+) headers in (?P<hbytes>\d+) bytes "
    r"\((?P<switches>\d+) switches on core (?P<core>\d+)\)$"
)
MASTER_LINE = re.compile(r"spawned headrace master process \(pid: (\d+)\)")
WORKER_LINE = re.compile(r"spawned headrace worker (\d+) \(pid: (\d+), cores: (\d+)\)")


def wait_until(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `cond` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def build_request(
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: bool = True,
    content_length: bool = True,
) -> bytes:
    """One request as bytes; Content-Length is added for a non-empty body unless told not to."""
    lines = [f"{method} {path} {version}"]
    if host:
        lines.append("Host: 127.0.0.1")
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body and content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    """A chunked body made of `parts`, with the last-chunk and an optional trailer section."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return out + b"0\r\n" + trailer + b"\r\n"


@dataclass
class Response:
    """One parsed HTTP response."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: False when the body ended early: a chunked body without its last-chunk, or fewer
    #: bytes than Content-Length, before the connection closed.
    complete: bool = True
    chunked: bool = False

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def header_count(self, name: str) -> int:
        return sum(1 for k, _ in self.headers if k.lower() == name.lower())


class Conn:
    """A raw client connection with a buffered reader for responses."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self, method: str = "GET", skip_interim: bool = True) -> Response:
        """Read one response; 1xx interim responses are skipped unless `skip_interim` is
        False, in which case the interim response itself is returned."""
        while True:
            resp = self._read_one(method)
            if 100 <= resp.status < 200 and skip_interim:
                continue
            return resp

    def _read_one(self, method: str) -> Response:
        line = self.rfile.readline(65537)
        if not line:
            raise EOFError("connection closed before a status line")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?\r\n$", line)
        if not m:
            raise AssertionError(f"bad status line {line!r}")
        resp = Response(m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode("latin-1"))
        while True:
            h = self.rfile.readline(65537)
            if not h:
                raise EOFError(f"connection closed inside the head of {resp}")
            if h == b"\r\n":
                break
            if not h.endswith(b"\r\n") or b":" not in h:
                raise AssertionError(f"bad header line {h!r}")
            name, _, value = h[:-2].partition(b":")
            resp.headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        if 100 <= resp.status < 200 or resp.status in (204, 304) or method == "HEAD":
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if "chunked" in te:
            resp.chunked = True
            self._read_chunked(resp)
        elif cl is not None:
            n = int(cl)
            resp.body = self.rfile.read(n)
            resp.complete = len(resp.body) == n
        else:
            resp.body = self.rfile.read()
        return resp

    def _read_chunked(self, resp: Response) -> None:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(65537)
            if not size_line.endswith(b"\r\n"):
                resp.body, resp.complete = bytes(body), False
                return
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailer section
                    t = self.rfile.readline(65537)
                    if not t.endswith(b"\r\n"):
                        resp.body, resp.complete = bytes(body), False
                        return
                    if t == b"\r\n":
                        resp.body = bytes(body)
                        return
            data = self.rfile.read(size)
            body += data
            if len(data) < size or self.rfile.read(2) != b"\r\n":
                resp.body, resp.complete = bytes(body), False
                return

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF or reset) within `timeout` s and
        sends nothing more; False if it stays open that long or sends more bytes."""
        self.sock.settimeout(timeout)
        try:
            data = self.rfile.read1(1)
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        return data == b""

    def read_until_eof(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        out = bytearray()
        try:
            while True:
                chunk = self.rfile.read1(65536)
                if not chunk:
                    break
                out += chunk
        except ConnectionResetError:
            pass
        return bytes(out)

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_request_lines(log: str) -> list[re.Match]:
    """Every line of `log` that looks like a request line (starts with `[pid: `), parsed; a
    line that starts like one but does not parse fails the caller's test."""
    out = []
    for line in log.splitlines():
        if line.startswith("[pid: "):
            m = REQUEST_LINE.match(line)
            if m is None:
                raise AssertionError(f"request log line does not have uWSGI's shape: {line!r}")
            out.append(m)
    return out


TESTS = Path(__file__).resolve().parent
APPS = TESTS / "apps"
REPO = TESTS.parent
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def app(name: str) -> str:
    """Absolute path of an app in tests/apps."""
    return str(APPS / name)


def headrace_cmd() -> list[str]:
    """The real binary: `headrace` on PATH (the dev script puts .venv/bin first), else the
    module through this interpreter."""
    exe = shutil.which("headrace")
    return [exe] if exe else [sys.executable, "-m", "headrace"]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The server itself must make the app's stdout line-buffered; don't do it for it.
    env.pop("PYTHONUNBUFFERED", None)
    for k in list(env):
        if k.startswith("UWSGI_"):
            env.pop(k)
    env.update(extra or {})
    return env


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def run_headrace(args, timeout: float = 20.0, env=None, cwd=None):
    """Run headrace to completion (for options that make it exit). Returns CompletedProcess.
    A run that does not exit in `timeout` s is killed by PID and fails the test."""
    p = subprocess.Popen(
        headrace_cmd() + list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(env),
        cwd=cwd or str(REPO),
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kids = children(p.pid)
        p.kill()
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = p.communicate()
        raise AssertionError(
            f"headrace {args} did not exit within {timeout} s; stdout={out[-2000:]!r} "
            f"stderr={err[-2000:]!r}"
        ) from None
    return subprocess.CompletedProcess(p.args, p.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))
