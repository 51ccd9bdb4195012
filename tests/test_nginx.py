"""headrace behind a real nginx (Debian's `nginx` package) over the uwsgi protocol.

nginx runs from examples/nginx.conf itself: the test swaps that file's listen addresses, unix
socket path and TCP port for its own and adds pid, log and temp paths under a temporary folder.
As root, nginx runs a master and one worker as `nobody`, so the unix socket's permissions
(`--chmod-socket 666`) are really exercised. Every address is 127.0.0.1 or a unix socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from support import REPO, Conn, app, build_request, children, free_port, pid_alive

EXAMPLE = REPO / "examples" / "nginx.conf"
KINDS = ["unix", "tcp"]


def nginx_binary() -> str | None:
    exe = shutil.which("nginx")
    if exe:
        return exe
    for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(p, os.X_OK):
            return p
    return None


# --- the uwsgi protocol, by hand ---------------------------------------------------------


def uwsgi_vars(pairs) -> bytes:
    out = b""
    for k, v in pairs:
        out += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return out


def uwsgi_packet(pairs, body: bytes = b"", modifier1: int = 0) -> bytes:
    data = uwsgi_vars(pairs)
    return struct.pack("<BHB", modifier1, len(data), 0) + data + body


def get_vars(uri: bytes = b"/pid") -> list[tuple[bytes, bytes]]:
    path, _, query = uri.partition(b"?")
    return [
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", uri),
        (b"PATH_INFO", path),
        (b"QUERY_STRING", query),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"localhost"),
        (b"SERVER_PORT", b"80"),
        (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"REMOTE_PORT", b"40000"),
        (b"HTTP_HOST", b"localhost"),
    ]


# --- nginx and headrace, together -----------------------------------------------------------


class Stack:
    """One headrace serving the uwsgi protocol on a unix socket and a TCP port, and one nginx
    (examples/nginx.conf) in front: port `ports['unix']` goes through the unix socket,
    `ports['tcp']` through TCP."""

    def __init__(self, headrace_module, app_file: str, processes: int, extra=(),
                 workers: int | None = None):
        self.exe = nginx_binary()
        # Not under pytest's tmp_path: its parents are 0700, and nginx's worker (nobody)
        # must reach the socket and its temp folders.
        self.dir = Path(tempfile.mkdtemp(prefix="headrace-nginx-"))
        os.chmod(self.dir, 0o755)
        self.sock = str(self.dir / "hr.sock")
        self.tcp_port = free_port()
        self.ports = {"unix": free_port(), "tcp": free_port()}
        self.nginx: subprocess.Popen | None = None
        self.nginx_pids: set[int] = set()
        self.hr = headrace_module(
            "--socket", f"127.0.0.1:{self.tcp_port}", "--socket", self.sock,
            "--chmod-socket", "666", "--wsgi-file", app(app_file),
            "--master", "--processes", str(processes), *extra,
            bind=False, port=self.tcp_port, probe=None, workers=workers,
        )

    def conf(self) -> str:
        text = EXAMPLE.read_text()
        subs = {
            "listen 127.0.0.1:8080;": f"listen 127.0.0.1:{self.ports['unix']};",
            "listen 127.0.0.1:8081;": f"listen 127.0.0.1:{self.ports['tcp']};",
            "unix:/run/headrace/headrace.sock;": f"unix:{self.sock};",
            "server 127.0.0.1:3031;": f"server 127.0.0.1:{self.tcp_port};",
        }
        for old, new in subs.items():
            assert text.count(old) == 1, f"examples/nginx.conf no longer has {old!r} once"
            text = text.replace(old, new)
        assert text.count("\nhttp {\n") == 1, "examples/nginx.conf: no `http {` block"
        d = self.dir
        local = "".join(
            f"    {name}_temp_path {d / name};\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        local += f"    access_log {d / 'access.log'};\n"
        return text.replace("\nhttp {\n", "\nhttp {\n" + local, 1)

    def start_nginx(self) -> None:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.conf())
        globals_ = f"daemon off; pid {self.dir / 'nginx.pid'};"
        if os.geteuid() == 0:
            globals_ += " user nobody nogroup;"
        self._nginx_log = open(self.dir / "nginx.out", "ab")  # noqa: SIM115 - closed in stop()
        self.nginx = subprocess.Popen(
            [self.exe, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log"),
             "-g", globals_],
            stdin=subprocess.DEVNULL, stdout=self._nginx_log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        pending = set(self.ports.values())
        while pending:
            if self.nginx.poll() is not None:
                raise AssertionError(f"nginx exited with {self.nginx.returncode}:\n"
                                     + self.nginx_log())
            for port in list(pending):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2):
                        pending.discard(port)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                raise AssertionError("nginx did not listen within 10 s:\n" + self.nginx_log())
            time.sleep(0.05)
        self.nginx_pids = {self.nginx.pid, *children(self.nginx.pid)}

    def nginx_log(self) -> str:
        out = []
        for name in ("nginx.out", "error.log"):
            p = self.dir / name
            if p.exists():
                out.append(f"--- {name}\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def url(self, kind: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[kind]}{path}"

    def connect(self, kind: str, timeout: float = 10.0) -> Conn:
        s = socket.create_connection(("127.0.0.1", self.ports[kind]), timeout=timeout)
        return Conn(s)

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx_pids.update(children(self.nginx.pid))
            if self.nginx.poll() is None:
                self.nginx.send_signal(signal.SIGTERM)
                try:
                    self.nginx.wait(5)
                except subprocess.TimeoutExpired:
                    self.nginx.kill()
                    self.nginx.wait(5)
            for pid in self.nginx_pids - {self.nginx.pid}:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            self._nginx_log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _stack(headrace_module, app_file, processes):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian package `nginx`: apt-get install nginx)")
    st = Stack(headrace_module, app_file, processes)
    try:
        st.start_nginx()
    except BaseException:
        st.stop()
        raise
    return st


@pytest.fixture(scope="module")
def flask_stack(headrace_module):
    pytest.importorskip("flask")
    st = _stack(headrace_module, "flask_app.py", 2)
    yield st
    st.stop()


@pytest.fixture(scope="module")
def rt_stack(headrace_module):
    st = _stack(headrace_module, "rt_app.py", 1)
    yield st
    st.stop()


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


# --- the Flask app through nginx ---------------------------------------------------------------


def test_flask_get(flask_stack, kind):
    r = requests.get(flask_stack.url(kind, "/"), timeout=10)
    assert r.status_code == 200, flask_stack.nginx_log()
    assert r.text == "hello from flask"


def test_flask_json_post(flask_stack, kind):
    r = requests.post(flask_stack.url(kind, "/json"),
                      json={"numbers": [1, 2, 3.5], "name": "é"}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"received": {"numbers": [1, 2, 3.5], "name": "é"}, "total": 6.5}


def test_flask_form_post(flask_stack, kind):
    r = requests.post(flask_stack.url(kind, "/form"),
                      data={"a": "1", "b": ["x", "y"], "c": "ü & ="}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"fields": {"a": ["1"], "b": ["x", "y"], "c": ["ü & ="]}}


def test_flask_upload_10mb_multipart(flask_stack, kind):
    data = os.urandom(10 * 1024 * 1024)
    r = requests.post(flask_stack.url(kind, "/upload"), files={"file": ("big.bin", data)},
                      data={"note": "ten megabytes"}, timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "name": "big.bin", "note": "ten megabytes"}


def test_flask_upload_chunked_raw(flask_stack, kind):
    # nginx collects a chunked request body and sends it with CONTENT_LENGTH.
    parts = [os.urandom(100_000) for _ in range(10)]
    r = requests.post(flask_stack.url(kind, "/raw"), data=iter(parts),
                      headers={"Content-Type": "application/octet-stream"}, timeout=60)
    data = b"".join(parts)
    assert r.status_code == 200, r.text[:500]
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_flask_streamed_response(flask_stack, kind):
    r = requests.get(flask_stack.url(kind, "/stream"), timeout=10, stream=True)
    assert r.status_code == 200
    # headrace ends an unsized body with the close; nginx re-frames it for HTTP/1.1.
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert r.content.decode() == "".join(f"line {i}\n" for i in range(20))


def test_flask_404(flask_stack, kind):
    r = requests.get(flask_stack.url(kind, "/no/such/page"), timeout=10)
    assert r.status_code == 404


def test_flask_500_page_and_worker_lives(flask_stack, kind):
    r = requests.get(flask_stack.url(kind, "/boom"), timeout=10)
    assert r.status_code == 500
    assert "flask-boom-marker" not in r.text
    for _ in range(4):
        assert requests.get(flask_stack.url(kind, "/"), timeout=10).status_code == 200


def test_keepalive_session_through_nginx(flask_stack, kind):
    with requests.Session() as s:
        for _ in range(5):
            r = s.get(flask_stack.url(kind, "/"), timeout=10)
            assert r.status_code == 200 and r.text == "hello from flask"


# --- what the app sees -----------------------------------------------------------------------


def test_unix_socket_mode(rt_stack):
    mode = os.stat(rt_stack.sock).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o666, oct(stat.S_IMODE(mode))


def test_environ_through_nginx(rt_stack, kind):
    raw = build_request("GET", "/environ/a%20b?x=1&y=%2F", headers=[
        ("X-Thing", "hello, world; q=1"),
        ("X-Dup", "first"),
        ("X-Dup", "second"),
        ("User-Agent", "rt-test/1.0"),
    ])
    with rt_stack.connect(kind) as c:
        local_port = c.sock.getsockname()[1]
        c.send(raw)
        r = c.read_response()
    assert r.status == 200, (r, rt_stack.nginx_log())
    env = json.loads(r.body)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["REQUEST_URI"] == "/environ/a%20b?x=1&y=%2F"
    assert env["PATH_INFO"] == "/environ/a b"
    assert env["QUERY_STRING"] == "x=1&y=%2F"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_X_THING"] == "hello, world; q=1"
    assert env["HTTP_USER_AGENT"] == "rt-test/1.0"
    assert env["HTTP_HOST"] == "127.0.0.1"
    assert env["_url_scheme"] == "http"
    # Two header lines of one name reach the app as one value, joined as in direct mode
    # (nginx before 1.23 sends them as two HTTP_X_DUP variables).
    assert env.get("HTTP_X_DUP") == "first, second", env.get("HTTP_X_DUP")


def test_post_environ_through_nginx(rt_stack, kind):
    body = b"k=v&k2=v2"
    r = requests.post(rt_stack.url(kind, "/upload"), data=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                        "content_length": str(len(body))}


# --- malformed packets, raw to the uwsgi socket -------------------------------------------------


def _lying_key() -> bytes:
    data = struct.pack("<H", 200) + b"KEY" + struct.pack("<H", 1) + b"v"
    return struct.pack("<BHB", 0, len(data), 0) + data


def _lying_value() -> bytes:
    data = uwsgi_vars(get_vars()) + struct.pack("<H", 3) + b"KEY" + struct.pack("<H", 900) + b"v"
    return struct.pack("<BHB", 0, len(data), 0) + data


def _half_var() -> bytes:
    data = uwsgi_vars(get_vars()) + struct.pack("<H", 3) + b"KE"
    return struct.pack("<BHB", 0, len(data), 0) + data


MALFORMED_PACKETS = [
    ("key-length-past-end", _lying_key(), 400),
    ("value-length-past-end", _lying_value(), 400),
    ("var-cut-in-half", _half_var(), 400),
    ("content-length-not-a-number",
     uwsgi_packet(get_vars(b"/echo") + [(b"CONTENT_LENGTH", b"abc")], b"abc"), 400),
    ("content-length-negative",
     uwsgi_packet(get_vars(b"/echo") + [(b"CONTENT_LENGTH", b"-3")], b"abc"), 400),
    ("modifier1-not-wsgi", uwsgi_packet(get_vars(), modifier1=5), 400),
    ("larger-than-buffer-size", struct.pack("<BHB", 0, 60000, 0) + b"\x00" * 8192, 431),
]


def _uwsgi_connect(st: Stack, kind: str) -> Conn:
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(st.sock)
    else:
        s = socket.create_connection(("127.0.0.1", st.tcp_port), timeout=10)
    return Conn(s)


def _uwsgi_pid(st: Stack, kind: str) -> int:
    with _uwsgi_connect(st, kind) as c:
        c.send(uwsgi_packet(get_vars(b"/pid")))
        r = c.read_response()
    assert r.status == 200, r
    return int(r.body)


def test_good_packet_raw(rt_stack, kind):
    body = b"hello uwsgi"
    pairs = [(k, v) for k, v in get_vars(b"/echo") if k != b"REQUEST_METHOD"]
    pairs += [(b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", str(len(body)).encode())]
    with _uwsgi_connect(rt_stack, kind) as c:
        c.send(uwsgi_packet(pairs, body))
        r = c.read_response()
        assert r.status == 200 and r.body == body
        assert r.header("Content-Length") == str(len(body))
        assert c.closed_by_peer(), "HTTP/1.0-style framing: the worker closes after a response"


@pytest.mark.parametrize("raw,expected", [m[1:] for m in MALFORMED_PACKETS],
                         ids=[m[0] for m in MALFORMED_PACKETS])
def test_malformed_packet(rt_stack, kind, raw, expected):
    pid = _uwsgi_pid(rt_stack, kind)
    with _uwsgi_connect(rt_stack, kind) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = c.read_response()
        except (EOFError, ConnectionResetError) as e:
            raise AssertionError(f"no response to a malformed packet ({e!r})") from None
        assert r.status == expected, f"got {r.status} {r.reason}, wanted {expected}"
        assert c.closed_by_peer(), "connection left open after an error response"
    assert _uwsgi_pid(rt_stack, kind) == pid, "the worker was replaced"
    # ... and nginx still gets answers from it
    r = requests.get(rt_stack.url(kind, "/pid"), timeout=10)
    assert r.status_code == 200 and int(r.text) == pid
