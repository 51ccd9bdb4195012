"""ASGI `http.response.pathsend` and `--static-map` in ASGI workers.

- pathsend (https://asgi.readthedocs.io/en/latest/extensions.html#path-send): advertised in
  `scope["extensions"]`; the head gets the file's size as Content-Length unless the app gave
  one (then that many bytes are sent); the file goes out with sendfile from the loop, waiting
  for a full socket like any response (a slow reader does not stall the worker); HEAD sends no
  body; keep-alive and pipelining go on after it; the bytes are logged. A path that cannot be
  sent raises in the app's `send` (a 500 when the app lets it go). Starlette's FileResponse
  uses it, with an absolute or a relative path.
- `--static-map` with an ASGI app: on `--http-socket` (and `--socket`) the worker serves the
  files before the app, as a WSGI worker does (tests/test_static.py runs its whole suite for
  ASGI apps too); behind `--http` the router serves them.

Direct (`--http-socket`) and router (`--http`) fronts throughout; the uwsgi protocol
(`--socket`, as nginx speaks it) where it differs. Every server binds 127.0.0.1 only; every
wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import time
from urllib.parse import quote

import pytest
from support import Conn, app, build_request, free_port

PATHSEND = app("asgi_pathsend.py")
STARLETTE = app("asgi_pathsend_starlette.py")
STATIC_APP = app("static_app_asgi.py")
FRONTS = ["direct", "router"]
SMALL = b"small file through pathsend\n"
BIG = hashlib.sha256(b"pathsend").digest() * (6 * 1024 * 1024 // 32 + 5)
CSS = b"body { color: blue }\n" * 40


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pathsend")
    (root / "small.txt").write_bytes(SMALL)
    (root / "big.bin").write_bytes(BIG)
    (root / "empty").write_bytes(b"")
    (root / "static").mkdir()
    (root / "static" / "site.css").write_bytes(CSS)
    (root / "static" / "big.bin").write_bytes(BIG)
    (root / "adir").mkdir()
    return root


def start(factory, front: str, *args: str, **kw):
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    return factory(opt, f"127.0.0.1:{port}", *args, port=port, **kw)


@pytest.fixture(scope="module", params=FRONTS)
def srv(request, headrace_module, files):
    """The raw pathsend app, with a static-map beside it."""
    return start(headrace_module, request.param, "--wsgi-file", PATHSEND,
                 "--static-map", f"/static={files / 'static'}")


def send_url(path, **q) -> str:
    query = "&".join(f"{k}={quote(str(v))}" for k, v in {"file": path, **q}.items())
    return f"/send?{query}"


def get(srv, target: str, method: str = "GET", headers=None, timeout: float = 20.0):
    with srv.connect(timeout) as c:
        c.send(build_request(method, target, headers=headers))
        return c.read_response(method)


# --- pathsend -------------------------------------------------------------------------------


def test_extension_is_advertised(srv):
    r = get(srv, "/ext")
    assert json.loads(r.body) == {"http.response.pathsend": {}}


def test_small_and_big_files_with_their_length(srv, files):
    with srv.connect(30) as c:
        c.send(build_request("GET", send_url(files / "small.txt")))
        r = c.read_response()
        assert (r.status, r.body) == (200, SMALL)
        assert r.header("Content-Length") == str(len(SMALL))
        assert r.header("Content-Type") == "application/octet-stream"
        assert not r.chunked
        # Keep-alive: the same connection carries the next, multi-MiB one.
        c.send(build_request("GET", send_url(files / "big.bin")))
        r = c.read_response()
        assert (r.status, r.header("Content-Length")) == (200, str(len(BIG)))
        assert r.body == BIG
        c.send(build_request("GET", "/"))
        assert c.read_response().body == b"app root"


def test_empty_file(srv, files):
    r = get(srv, send_url(files / "empty"))
    assert (r.status, r.header("Content-Length"), r.body) == (200, "0", b"")


def test_head_sends_no_body(srv, files):
    with srv.connect() as c:
        c.send(build_request("HEAD", send_url(files / "big.bin")))
        r = c.read_response("HEAD")
        assert (r.status, r.header("Content-Length")) == (200, str(len(BIG)))
        # Had a body been sent, it would be read as the next status line.
        c.send(build_request("GET", send_url(files / "small.txt")))
        assert c.read_response().body == SMALL


def test_pipelined_requests_keep_their_order(srv, files):
    with srv.connect(30) as c:
        c.send(build_request("GET", send_url(files / "big.bin"))
               + build_request("GET", "/")
               + build_request("GET", send_url(files / "small.txt"))
               + build_request("GET", "/static/site.css"))
        bodies = [c.read_response().body for _ in range(4)]
    assert bodies == [BIG, b"app root", SMALL, CSS]


def test_the_apps_content_length_is_honoured(srv, files):
    with srv.connect() as c:
        c.send(build_request("GET", send_url(files / "small.txt", cl=5)))
        r = c.read_response()
        assert (r.header("Content-Length"), r.body) == ("5", SMALL[:5])
        assert r.header_count("Content-Length") == 1
        c.send(build_request("GET", "/"))
        assert c.read_response().body == b"app root"


@pytest.mark.parametrize("front", FRONTS)
def test_a_content_length_past_the_files_end_ends_the_connection(headrace, files, front):
    # Its own server: the router stops using a worker that breaks a link mid-response.
    srv = start(headrace, front, "--wsgi-file", PATHSEND)
    with srv.connect() as c:
        c.send(build_request("GET", send_url(files / "small.txt", cl=len(SMALL) + 10)))
        r = c.read_response()
        assert (r.complete, r.body) == (False, SMALL)
    srv.wait_log("the file ended before the response's length, closing")


def test_a_chunked_response_carries_the_file_as_one_chunk(srv, files):
    with srv.connect() as c:
        c.send(build_request("GET", send_url(files / "small.txt", chunked=1)))
        r = c.read_response()
        assert r.chunked and r.complete
        assert r.body == SMALL
        c.send(build_request("GET", "/"))
        assert c.read_response().body == b"app root"


def test_no_body_status_sends_only_the_head(srv, files):
    with srv.connect() as c:
        c.send(build_request("GET", send_url(files / "small.txt", status=304)))
        r = c.read_response()
        assert r.status == 304
        c.send(build_request("GET", "/"))
        assert c.read_response().body == b"app root"


def test_slow_reader_gets_everything_and_others_are_served_meanwhile(srv, files):
    """6 MiB to a client with a tiny receive buffer that does not read at first: the worker
    waits for the socket (writer callback) instead of blocking, so other requests get answers
    meanwhile; then the client reads slowly and gets every byte."""
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(30)
    slow.connect(("127.0.0.1", srv.port))
    with Conn(slow) as c:
        c.send(build_request("GET", send_url(files / "big.bin")))
        for i in range(3):
            assert get(srv, "/", timeout=10).body == b"app root", i
        got = b""
        head = b""
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in head:
            head += slow.recv(1)
        while len(got) < len(BIG):
            assert time.monotonic() < deadline, f"only {len(got)} bytes after 30 s"
            got += slow.recv(16384)
            if len(got) < 512 * 1024:
                time.sleep(0.002)
    assert head.startswith(b"HTTP/1.1 200")
    assert got == BIG


def test_the_bytes_are_logged(srv, files):
    target = send_url(files / "small.txt") + "&log=1"
    assert get(srv, target).status == 200
    if srv.args[0] == "--http-socket":
        srv.wait_log(f"GET {target} => generated {len(SMALL)} bytes")


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_a_path_that_cannot_be_sent_is_a_500(srv, files, what):
    path = files / "nothing" if what == "missing" else files / "adir"
    with srv.connect() as c:
        c.send(build_request("GET", send_url(path)))
        r = c.read_response()
        assert r.status == 500
        # Nothing was written before the error: the connection goes on.
        c.send(build_request("GET", "/"))
        assert c.read_response().body == b"app root"
    srv.wait_log("http.response.pathsend: cannot send")


def test_the_apps_send_raises_and_the_app_can_answer(srv, files):
    r = get(srv, send_url(files / "nothing").replace("/send", "/catch"))
    assert r.status == 200
    assert r.body.startswith(b"RuntimeError: http.response.pathsend: cannot send "), r.body
    assert b"No such file" in r.body


@pytest.mark.parametrize("route", ["/nostart", "/twice"])
def test_protocol_errors_raise(srv, files, route):
    r = get(srv, send_url(files / "small.txt").replace("/send", route))
    if route == "/nostart":
        assert r.status == 500
        srv.wait_log("http.response.pathsend before http.response.start")
    else:
        # The file went out; the body after it raised and ended the connection.
        assert (r.status, r.body) == (200, SMALL)
        srv.wait_log("http.response.body after the response ended")


# --- Starlette's FileResponse ----------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
def test_starlette_file_response_uses_pathsend(headrace, files, front):
    srv = start(headrace, front, "--wsgi-file", STARLETTE, cwd=str(files))
    for name, body in ((str(files / "big.bin"), BIG), ("small.txt", SMALL)):
        with srv.connect(30) as c:
            c.send(build_request("GET", f"/file?name={quote(name)}"))
            r = c.read_response()
            assert r.status == 200, r
            assert r.body == body
            assert r.header("Content-Length") == str(len(body))
            assert r.header("ETag") and r.header("Last-Modified")
            c.send(build_request("GET", "/sent"))
            assert json.loads(c.read_response().body) == [
                "http.response.start", "http.response.pathsend"]
    # A range: Starlette sends the bytes itself.
    r = get(srv, f"/file?name={quote(str(files / 'big.bin'))}",
            headers=[("Range", "bytes=10-19")])
    assert (r.status, r.body) == (206, BIG[10:20])


# --- --static-map in ASGI workers --------------------------------------------------------------


def test_static_hits_are_served_before_the_app_and_logged(srv):
    r = get(srv, "/static/site.css?static-log")
    assert (r.status, r.body, r.header("Content-Type")) == (200, CSS, "text/css")
    assert r.header("ETag") and r.header("Accept-Ranges") == "bytes"
    if srv.args[0] == "--http-socket":
        srv.wait_log(f"GET /static/site.css?static-log => generated {len(CSS)} bytes")
    r = get(srv, "/static/site.css", headers=[("If-None-Match", r.header("ETag"))])
    assert r.status == 304
    r = get(srv, "/static/site.css", headers=[("Range", "bytes=5-9")])
    assert (r.status, r.body) == (206, CSS[5:10])
    r = get(srv, "/static/missing.css")
    assert (r.status, r.body) == (200, b"app root")


@pytest.mark.parametrize("front", FRONTS)
def test_static_map_with_an_asgi_app(headrace, files, front):
    srv = start(headrace, front, "--wsgi-file", STATIC_APP,
                "--static-map", f"/static={files / 'static'}")
    with srv.connect(30) as c:
        c.send(build_request("GET", "/static/big.bin") + build_request("GET", "/nothing")
               + build_request("HEAD", "/static/site.css") + build_request("GET", "/"))
        r = c.read_response()
        assert (r.status, r.body == BIG) == (200, True)
        assert c.read_response().body == b"app 404 /nothing"
        r = c.read_response("HEAD")
        assert (r.status, r.header("Content-Length")) == (200, str(len(CSS)))
        assert c.read_response().body == b"app root"


def test_static_slow_reader_does_not_stall_the_worker(headrace, files):
    srv = start(headrace, "direct", "--wsgi-file", STATIC_APP,
                "--static-map", f"/static={files / 'static'}")
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(30)
    slow.connect(("127.0.0.1", srv.port))
    with Conn(slow) as c:
        c.send(build_request("GET", "/static/big.bin"))
        for _ in range(3):
            assert get(srv, "/", timeout=10).body == b"app root"
        r = c.read_response()
        assert r.body == BIG


def uwsgi_get(port: int, uri: bytes, extra=()):
    path = uri.partition(b"?")[0]
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", uri), (b"PATH_INFO", path),
             (b"QUERY_STRING", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
             (b"SERVER_NAME", b"localhost"), (b"SERVER_PORT", b"80"),
             (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"40000"), *extra]
    data = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    with Conn(s) as c:
        c.send(struct.pack("<BHB", 0, len(data), 0) + data)
        r = c.read_response()
        assert c.closed_by_peer(), "a uwsgi-protocol connection carries one request"
        return r


def test_uwsgi_protocol_static_and_pathsend(headrace, files):
    """nginx's uwsgi_pass: the worker answers static files (HTTP/1.0 framing, one request per
    connection, as WSGI) and pathsend responses with a Content-Length."""
    port = free_port()
    headrace("--socket", f"127.0.0.1:{port}", "--wsgi-file", PATHSEND,
             "--static-map", f"/static={files / 'static'}", bind=False, port=port, probe=None)
    r = uwsgi_get(port, b"/static/site.css")
    assert (r.status, r.body, r.header("Content-Type")) == (200, CSS, "text/css")
    r = uwsgi_get(port, b"/static/site.css", [(b"HTTP_RANGE", b"bytes=0-3")])
    assert (r.status, r.body) == (206, CSS[:4])
    r = uwsgi_get(port, send_url(files / "big.bin").encode())
    assert (r.status, r.header("Content-Length"), r.body == BIG) == (200, str(len(BIG)), True)


def test_stats_count_the_file_bytes(headrace, files):
    sport = free_port()
    srv = start(headrace, "direct", "--wsgi-file", PATHSEND, "--stats", f"127.0.0.1:{sport}",
                "--static-map", f"/static={files / 'static'}")
    assert get(srv, send_url(files / "big.bin")).body == BIG
    assert get(srv, "/static/big.bin").body == BIG

    def tx() -> int:
        with socket.create_connection(("127.0.0.1", sport), timeout=10) as s:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return sum(w["tx"] for w in json.loads(data)["workers"])

    deadline = time.monotonic() + 10
    while tx() < 2 * len(BIG):
        assert time.monotonic() < deadline, f"tx {tx()} < {2 * len(BIG)}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["static", "pathsend"])
def test_a_client_that_stops_reading_is_dropped_after_socket_timeout(headrace, files, kind):
    srv = start(headrace, "direct", "--wsgi-file", PATHSEND, "--socket-timeout", "1",
                "--static-map", f"/static={files / 'static'}")
    target = "/static/big.bin" if kind == "static" else send_url(files / "big.bin")
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(10)
    slow.connect(("127.0.0.1", srv.port))
    with Conn(slow) as c:
        c.send(build_request("GET", target))
        srv.wait_log("client stalled for more than --socket-timeout, closing")
        # The worker goes on serving.
        assert get(srv, "/", timeout=10).body == b"app root"
    # The request line is written, with the bytes that went out.
    srv.wait_log(f"GET {target} => generated ")


def nginx_get(port: int, target: str, headers=None):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        c = Conn(s)
        c.send(build_request("GET", target, headers=headers))
        return c.read_response()


@pytest.mark.parametrize("mode", [[], ["--lazy-apps"]], ids=["preloaded", "lazy"])
def test_pathsend_and_static_behind_nginx(headrace, files, mode):
    """A real nginx with uwsgi_pass in front: pathsend files (small, and big enough to fill
    the socket) and static-map hits, with Range, arrive whole; preloaded and --lazy-apps."""
    from test_asgi import nginx_stack

    stack = nginx_stack(headrace, "--wsgi-file", PATHSEND,
                        "--static-map", f"/static={files / 'static'}", *mode)
    try:
        port = stack.ports["tcp"]
        r = nginx_get(port, send_url(files / "small.txt"))
        assert (r.status, r.body) == (200, SMALL)
        r = nginx_get(port, send_url(files / "big.bin"))
        assert (r.status, len(r.body), r.body == BIG) == (200, len(BIG), True)
        r = nginx_get(port, "/static/site.css")
        assert (r.status, r.body, r.header("Content-Type")) == (200, CSS, "text/css")
        r = nginx_get(port, "/static/big.bin", headers=[("Range", "bytes=10-19")])
        assert (r.status, r.body) == (206, BIG[10:20])
        stack.hr.wait_log(f"generated {len(BIG)} bytes")
    finally:
        stack.stop()


@pytest.mark.parametrize("front", FRONTS)
def test_pathsend_and_static_with_lazy_apps(headrace, files, front):
    """--lazy-apps: each worker loads the app itself; pathsend and the static map work the
    same."""
    srv = start(headrace, front, "--wsgi-file", PATHSEND, "--lazy-apps", "--processes", "2",
                "--static-map", f"/static={files / 'static'}")
    for _ in range(3):
        r = get(srv, send_url(files / "big.bin"))
        assert (r.status, r.body == BIG) == (200, True)
        r = get(srv, "/static/site.css", headers=[("Range", "bytes=0-3")])
        assert (r.status, r.body) == (206, CSS[:4])
    r = get(srv, send_url(files / "small.txt"), method="HEAD")
    assert (r.status, r.body, r.header("Content-Length")) == (200, b"", str(len(SMALL)))
