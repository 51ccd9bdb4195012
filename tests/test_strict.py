"""RFC 9112/9110 strictness of the request head and the chunked trailer section, on both HTTP
fronts (direct `--http-socket` workers and the `--http` router share src/http/):

- request-target forms: origin-form starts with `/`, asterisk-form only with OPTIONS,
  authority-form only (and always) with CONNECT, absolute-form needs http(s) and a valid
  authority (and its path becomes PATH_INFO);
- methods made of uppercase letters, digits and `-_.` only;
- Host, Content-Type or differing Content-Length values repeated;
- framing and routing fields in a chunked trailer section;
- HTTP/1.0 `Connection: close` wins over a later `Connection: keep-alive`.

Each rejection is an exact 400 with `Connection: close`, then a clean close (EOF, no reset),
and the same worker (and router) serves the next request.
"""

from __future__ import annotations

import json
import socket

import pytest
from support import app, build_request, free_port

FRONTS = ["http-socket", "http"]
H = b"Host: 127.0.0.1\r\n"
TE = b"Transfer-Encoding: chunked\r\n"


def get(path: str, **kw) -> bytes:
    return build_request("GET", path, **kw)


@pytest.fixture(scope="module", params=FRONTS)
def front(request, headrace_module):
    """basic.py with one worker behind the direct front or the router; `.worker_pid` is that
    worker's pid."""
    port = free_port()
    srv = headrace_module(f"--{request.param}", f"127.0.0.1:{port}", "--wsgi-file",
                          app("basic.py"), "--processes", "1", port=port)
    srv.worker_pid = int(srv.request(get("/pid")).body)
    return srv


def peer_end(conn, timeout: float = 5.0) -> str:
    """How the server ends the connection: "eof", "reset", "still open", or extra bytes."""
    conn.sock.settimeout(timeout)
    try:
        data = conn.rfile.read1(65536)
    except (socket.timeout, TimeoutError):
        return f"still open after {timeout} s"
    except ConnectionResetError:
        return "reset"
    return "eof" if data == b"" else f"more bytes: {data[:200]!r}"


def assert_still_serving(srv) -> None:
    r = srv.request(get("/pid"))
    assert (r.status, int(r.body)) == (200, srv.worker_pid), "the worker was replaced"
    log = srv.log()
    assert "Respawned" not in log, "a process was respawned"
    assert "panicked" not in log and "Traceback" not in log, log[-3000:]


def up(trailer: bytes) -> bytes:
    """A chunked upload to /echo whose trailer section is `trailer`."""
    return (b"POST /echo HTTP/1.1\r\n" + H + TE + b"\r\n5\r\nhello\r\n0\r\n" + trailer
            + b"\r\n")


REJECTED = [
    # request-target forms (RFC 9112 §3.2)
    ("origin-form-without-slash", b"GET pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("query-only-target", b"GET ?a=1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("asterisk-form-get", b"GET * HTTP/1.1\r\n" + H + b"\r\n"),
    ("asterisk-form-post", b"POST * HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n"),
    ("authority-form-get", b"GET 127.0.0.1:80 HTTP/1.1\r\n" + H + b"\r\n"),
    ("connect-origin-form", b"CONNECT /pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("connect-without-port", b"CONNECT 127.0.0.1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-form-empty-host", b"GET http:///pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-form-userinfo", b"GET http://u:p@127.0.0.1/pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-form-bad-port", b"GET http://127.0.0.1:99999/pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-form-bad-host", b"GET http://a^b/pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-form-other-scheme", b"GET ftp://127.0.0.1/pid HTTP/1.1\r\n" + H + b"\r\n"),
    # methods: uppercase letters, digits, -_. only
    ("method-lowercase", b"get /pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("method-mixed-case", b"Get /pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("method-tchar-bang", b"G!T /pid HTTP/1.1\r\n" + H + b"\r\n"),
    ("method-tchar-pipe", b"GE|T /pid HTTP/1.1\r\n" + H + b"\r\n"),
    # repeated singletons
    ("host-twice", b"GET /pid HTTP/1.1\r\n" + H + b"Host: other\r\n\r\n"),
    ("host-twice-same", b"GET /pid HTTP/1.1\r\n" + H + H + b"\r\n"),
    ("content-length-differing",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("content-type-twice",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Type: text/plain\r\n"
     b"Content-Type: application/json\r\nContent-Length: 5\r\n\r\nhello"),
    ("content-type-twice-same",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Type: text/plain\r\n"
     b"content-type: text/plain\r\nContent-Length: 5\r\n\r\nhello"),
    # framing and routing fields in the trailer section (RFC 9110 §6.5.1)
    ("trailer-content-length", up(b"Content-Length: 40\r\n")),
    ("trailer-transfer-encoding", up(b"Transfer-Encoding: chunked\r\n")),
    ("trailer-host", up(b"X-Ok: 1\r\nHost: evil\r\n")),
    ("trailer-content-type", up(b"Content-Type: text/evil\r\n")),
    ("trailer-trailer", up(b"Trailer: X-Ok\r\n")),
    ("trailer-authorization", up(b"Authorization: Basic eDp5\r\n")),
    ("trailer-connection", up(b"Connection: close\r\n")),
    ("trailer-te", up(b"TE: trailers\r\n")),
    ("trailer-set-cookie", up(b"Set-Cookie: a=b\r\n")),
    ("trailer-range", up(b"range: bytes=0-1\r\n")),
    ("trailer-obs-fold", up(b"X-T: 1\r\n 2\r\n")),
    ("trailer-no-colon", up(b"X-T 1\r\n")),
]


@pytest.mark.parametrize("raw", [r for _, r in REJECTED], ids=[i for i, _ in REJECTED])
def test_rejected_with_400_and_clean_close(front, raw):
    with front.connect() as c:
        c.send(raw)
        r = c.read_response()
        assert (r.status, r.reason) == (400, "Bad Request"), f"{raw!r}: {r.status} {r.body!r}"
        assert r.header("Connection") == "close"
        assert r.body == b"400 Bad Request\n"
        end = peer_end(c)
        assert end == "eof", f"{raw!r}: wanted a clean close, got {end}"
    assert_still_serving(front)


def test_rejection_rules_table_is_unique():
    assert len({raw for _, raw in REJECTED}) == len(REJECTED)


# --- what stays accepted --------------------------------------------------------------------


def environ_of(front, raw: bytes) -> dict:
    r = front.request(raw)
    assert r.status == 200, r
    return json.loads(r.body)


def test_absolute_form_path_becomes_path_info(front):
    env = environ_of(front, b"GET http://127.0.0.1:8080/environ/a%20b?x=1 HTTP/1.1\r\n" + H
                     + b"\r\n")
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/environ/a b", "x=1")
    assert env["REQUEST_URI"] == "http://127.0.0.1:8080/environ/a%20b?x=1"
    env = environ_of(front, b"GET HTTPS://[::1]/environ HTTP/1.1\r\n" + H + b"\r\n")
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/environ", "")


def test_absolute_form_without_path_is_slash(front):
    r = front.request(b"GET http://127.0.0.1?x=1 HTTP/1.1\r\n" + H + b"\r\n")
    assert (r.status, int(r.body)) == (200, front.worker_pid)


def test_options_asterisk_reaches_the_app(front):
    # basic.py answers 404 to a PATH_INFO it does not know, "*" included.
    r = front.request(b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n")
    assert (r.status, r.body) == (404, b"not found")


def test_extension_methods_reach_the_app(front):
    for method in ("M-SEARCH", "VERSION_CONTROL", "X.1"):
        env = environ_of(front, f"{method} /environ HTTP/1.1\r\n".encode() + H + b"\r\n")
        assert env["REQUEST_METHOD"] == method


def test_repeated_identical_content_length_is_accepted(front):
    # RFC 9110 §8.6: the framing is not in doubt; see parse_head.
    raw = (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n"
           b"hello")
    r = front.request(raw)
    assert (r.status, r.body) == (200, b"hello")


def test_allowed_trailer_keeps_the_connection(front):
    with front.connect() as c:
        c.send(up(b"X-Checksum: abc\r\nServer-Timing: db;dur=5\r\n") + get("/pid"))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"hello")
        r = c.read_response()
        assert (r.status, int(r.body)) == (200, front.worker_pid)


# --- HTTP/1.0 Connection --------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [
    [b"close", b"keep-alive"],
    [b"keep-alive", b"close"],
    [b"close, keep-alive"],
])
def test_http10_connection_close_wins(front, tokens):
    lines = b"".join(b"Connection: " + t + b"\r\n" for t in tokens)
    with front.connect() as c:
        c.send(b"GET /pid HTTP/1.0\r\n" + lines + b"\r\n")
        r = c.read_response()
        assert (r.status, int(r.body)) == (200, front.worker_pid)
        assert "keep-alive" not in (r.header("Connection") or "").lower()
        end = peer_end(c)
        assert end == "eof", f"{tokens}: wanted a close after the response, got {end}"
    assert_still_serving(front)


def test_http10_keep_alive_alone_keeps_the_connection(front):
    # the counterpart of the rule above: without `close`, keep-alive holds
    with front.connect() as c:
        for _ in range(2):
            c.send(b"GET /pid HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert (r.status, int(r.body)) == (200, front.worker_pid)
            assert "keep-alive" in (r.header("Connection") or "").lower()
