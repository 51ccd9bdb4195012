"""The HTTP/1.1 front, byte by byte over raw sockets: keep-alive, pipelining, chunked request
bodies, Expect: 100-continue, HEAD, Date, Connection: close, malformed requests."""

from __future__ import annotations

import email.utils
import json
import time

import pytest
from support import app, build_request, chunked, wait_until


@pytest.fixture(scope="module")
def srv(headrace_module):
    return headrace_module("--wsgi-file", app("basic.py"), "--processes", "1")


@pytest.fixture(scope="module")
def worker_pid(srv):
    return int(srv.request(build_request(path="/pid")).body)


def get(path, **kw):
    return build_request("GET", path, **kw)


# --- keep-alive and Connection ----------------------------------------------------------


def test_http11_keeps_alive_by_default(srv, worker_pid):
    with srv.connect() as c:
        for _ in range(3):
            c.send(get("/pid"))
            r = c.read_response()
            assert r.status == 200
            assert int(r.body) == worker_pid
            assert "close" not in (r.header("Connection") or "").lower()


def test_http10_closes_without_keepalive(srv):
    with srv.connect() as c:
        c.send(get("/list", version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert r.body == b"hello world"
        assert c.closed_by_peer(), "HTTP/1.0 request without keep-alive: connection not closed"


def test_http10_keepalive_on_request(srv, worker_pid):
    with srv.connect() as c:
        c.send(get("/list", version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello world"
        # A 1.0 client assumes close unless the response says keep-alive (RFC 9112 C.2.2).
        assert "keep-alive" in (r.header("Connection") or "").lower()
        c.send(get("/pid", version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
        r2 = c.read_response()
        assert r2.status == 200 and int(r2.body) == worker_pid


def test_http10_generator_body_is_not_chunked(srv):
    # HTTP/1.0 has no chunked coding: unknown length means the close delimits the body.
    with srv.connect() as c:
        c.send(get("/gen", version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
        r = c.read_response()
        assert r.status == 200
        assert "chunked" not in (r.header("Transfer-Encoding") or "")
        assert r.body == b"".join(b"chunk%d\n" % i for i in range(5))


def test_connection_close_is_honoured(srv):
    with srv.connect() as c:
        c.send(get("/pid", headers=[("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200
        assert c.closed_by_peer(), "Connection: close request: server kept the connection open"


def test_connection_close_on_second_request(srv):
    with srv.connect() as c:
        c.send(get("/pid"))
        assert c.read_response().status == 200
        c.send(get("/list", headers=[("Connection", "close")]))
        r = c.read_response()
        assert r.body == b"hello world"
        assert c.closed_by_peer()


def test_connection_close_drops_pipelined_rest(srv):
    with srv.connect() as c:
        c.send(get("/pid", headers=[("Connection", "close")]) + get("/list"))
        assert c.read_response().status == 200
        assert c.read_until_eof() == b"", "answered a request sent after Connection: close"


# --- pipelining -------------------------------------------------------------------------


def test_pipelined_requests_answered_in_order(srv, worker_pid):
    reqs = (
        get("/sleep?s=0.3&tag=pipe")
        + get("/list")
        + build_request("POST", "/echo", body=b"pipelined-body")
        + get("/pid")
        + build_request("POST", "/echo", body=b"x" * 10, headers=[("Connection", "close")])
    )
    with srv.connect() as c:
        c.send(reqs)
        r1 = c.read_response()
        assert r1.status == 200 and b'"pid"' in r1.body
        assert c.read_response().body == b"hello world"
        assert c.read_response().body == b"pipelined-body"
        assert int(c.read_response().body) == worker_pid
        assert c.read_response().body == b"x" * 10
        assert c.closed_by_peer()


def test_pipelined_body_not_overread(srv):
    # The app calls read() with no size: it must get exactly Content-Length bytes, and the
    # next pipelined request must still be there for the server.
    raw = build_request("POST", "/echo?mode=big", body=b"12345") + get("/list")
    with srv.connect() as c:
        c.send(raw)
        r = c.read_response()
        assert r.body == b"12345"
        assert r.header("X-After") == "0"
        assert c.read_response().body == b"hello world"


def test_unread_body_is_skipped_before_next_request(srv, worker_pid):
    # /pid never reads its body; the next request on the connection must still parse.
    raw = build_request("POST", "/pid", body=b"ignored body " * 100) + get("/list")
    with srv.connect() as c:
        c.send(raw)
        assert int(c.read_response().body) == worker_pid
        assert c.read_response().body == b"hello world"


def test_many_pipelined_requests(srv, worker_pid):
    n = 200
    raw = b"".join(get(f"/environ?i={i}") if i % 2 else build_request(
        "POST", "/echo", body=b"body-%d" % i) for i in range(n))
    with srv.connect(timeout=30) as c:
        c.send(raw)
        for i in range(n):
            r = c.read_response()
            assert r.status == 200
            if i % 2:
                assert json.loads(r.body)["QUERY_STRING"] == f"i={i}"
            else:
                assert r.body == b"body-%d" % i


def test_request_sent_byte_by_byte(srv):
    raw = build_request("POST", "/echo?x=1", headers=[("X-Long", "v" * 50)], body=b"abc")
    with srv.connect() as c:
        for i in range(len(raw)):
            c.send(raw[i:i + 1])
            time.sleep(0.002)
        r = c.read_response()
    assert r.status == 200 and r.body == b"abc"


def test_pipelined_request_split_at_odd_places(srv, worker_pid):
    raw = get("/list") + build_request("POST", "/echo", body=b"0123456789") + get("/pid")
    with srv.connect() as c:
        for cut in (5, 23, 41, 60, 77, 90, len(raw)):
            c.send(raw[:cut])
            raw = raw[cut:]
            time.sleep(0.02)
            if not raw:
                break
        c.send(raw)
        assert c.read_response().body == b"hello world"
        assert c.read_response().body == b"0123456789"
        assert int(c.read_response().body) == worker_pid


def test_large_and_many_headers(srv):
    headers = [(f"X-H{i}", f"value-{i}") for i in range(80)]
    headers.append(("Cookie", "c=" + "k" * 20000))
    r = srv.request(get("/environ", headers=headers))
    assert r.status == 200
    env = json.loads(r.body)
    assert env["HTTP_COOKIE"] == "c=" + "k" * 20000
    for i in range(80):
        assert env[f"HTTP_X_H{i}"] == f"value-{i}"


# --- chunked request bodies -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["read", "readn", "readline", "readlines", "iter"])
def test_chunked_request_body(srv, mode):
    parts = [b"first line\n", b"sec", b"ond line\nthird", b" line without newline"]
    raw = build_request(
        "POST", f"/echo?mode={mode}&n=5", headers=[("Transfer-Encoding", "chunked")],
        body=chunked(*parts), content_length=False,
    )
    with srv.connect() as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"".join(parts)
        assert r.header("X-After") == "0"


def test_chunked_body_with_extensions_and_trailer(srv, worker_pid):
    body = b"5;name=value\r\nhello\r\n6;x\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    raw = build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")],
                        body=body, content_length=False)
    with srv.connect() as c:
        c.send(raw + get("/pid"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello world"
        # keep-alive after a chunked body: the next request parses
        assert int(c.read_response().body) == worker_pid


def test_chunked_body_sent_slowly(srv):
    head = build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")],
                         content_length=False)
    with srv.connect() as c:
        c.send(head)
        for piece in (b"3\r\nabc\r\n", b"4\r\n", b"defg", b"\r\n", b"0\r\n", b"\r\n"):
            time.sleep(0.05)
            c.send(piece)
        r = c.read_response()
        assert r.body == b"abcdefg"


def test_chunked_body_large(srv):
    parts = [bytes([65 + i % 26]) * 70000 for i in range(30)]
    raw = build_request("POST", "/echo?mode=readn&n=65536",
                        headers=[("Transfer-Encoding", "chunked")], body=chunked(*parts),
                        content_length=False)
    with srv.connect(timeout=30) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 200
        assert r.header("X-Len") == str(70000 * 30)
        assert r.body == b"".join(parts)


# --- Expect: 100-continue ---------------------------------------------------------------


def test_100_continue_sent_when_app_reads(srv):
    head = build_request("POST", "/echo?delay=1&mark=ABOUT-TO-READ-100", headers=[
        ("Expect", "100-continue"), ("Content-Length", "11")], content_length=False)
    with srv.connect() as c:
        c.send(head)
        interim = c.read_response(skip_interim=False)
        assert interim.status == 100, f"expected 100 Continue first, got {interim}"
        assert interim.version == "HTTP/1.1"
        # Sent only once the app reads wsgi.input: the app printed its mark just before.
        assert "ABOUT-TO-READ-100" in srv.log(), "100 Continue sent before the app read input"
        c.send(b"hello world")
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"hello world"


def test_100_continue_not_sent_when_app_does_not_read(srv, worker_pid):
    head = build_request("POST", "/pid", headers=[
        ("Expect", "100-continue"), ("Content-Length", "5")], content_length=False)
    with srv.connect() as c:
        c.send(head)
        r = c.read_response(skip_interim=False)
        assert r.status == 200, f"app never read wsgi.input, yet got {r.status} first"
        assert int(r.body) == worker_pid


def test_unread_100_continue_body_keeps_framing(srv):
    # The app answered without reading, so no 100 went out; the client may send the body
    # anyway (RFC 9110 10.1.1). The server must either say it closes (Connection: close)
    # or read past that body, so a reused connection never breaks.
    head = build_request("POST", "/pid", headers=[
        ("Expect", "100-continue"), ("Content-Length", "5")], content_length=False)
    with srv.connect() as c:
        c.send(head)
        r = c.read_response(skip_interim=False)
        assert r.status == 200
        announces_close = "close" in (r.header("Connection") or "").lower()
        try:
            c.send(b"hello" + get("/list"))
            nxt = c.read_response()
        except (EOFError, ConnectionResetError, BrokenPipeError) as e:
            assert announces_close, (
                f"connection dropped ({e!r}) after a response without Connection: close"
            )
        else:
            assert nxt.status == 200 and nxt.body == b"hello world"


def test_100_continue_chunked(srv):
    head = build_request("POST", "/echo", headers=[
        ("Expect", "100-continue"), ("Transfer-Encoding", "chunked")], content_length=False)
    with srv.connect() as c:
        c.send(head)
        assert c.read_response(skip_interim=False).status == 100
        c.send(chunked(b"chunk", b"ed"))
        assert c.read_response().body == b"chunked"


def test_no_100_continue_for_http10(srv):
    # RFC 9110 10.1.1: never send 100 (Continue) to an HTTP/1.0 client.
    raw = build_request("POST", "/echo", version="HTTP/1.0", body=b"ten bytes!",
                        headers=[("Expect", "100-continue")])
    with srv.connect() as c:
        c.send(raw)
        r = c.read_response(skip_interim=False)
        assert r.status == 200, f"HTTP/1.0 client got {r.status} first"
        assert r.body == b"ten bytes!"


# --- HEAD ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/list", "/gen", "/write", "/pid"])
def test_head_has_no_body(srv, path, worker_pid):
    with srv.connect() as c:
        c.send(build_request("GET", path))
        full = c.read_response()
        # HEAD then GET on the same connection: any body bytes after the HEAD's head would
        # be read as the next status line and fail to parse.
        c.send(build_request("HEAD", path) + get("/pid"))
        h = c.read_response("HEAD")
        assert h.status == 200
        if path == "/list":
            assert h.header("Content-Length") == str(len(full.body))
        nxt = c.read_response()
        assert nxt.status == 200 and int(nxt.body) == worker_pid


def test_head_on_connection_close(srv):
    with srv.connect() as c:
        c.send(build_request("HEAD", "/list", headers=[("Connection", "close")]))
        h = c.read_response("HEAD")
        assert h.status == 200
        assert c.read_until_eof() == b"", "HEAD response carried body bytes"


# --- Date ---------------------------------------------------------------------------------


def test_date_header(srv):
    r = srv.request(get("/list"))
    assert r.header_count("Date") == 1
    when = email.utils.parsedate_to_datetime(r.header("Date"))
    assert r.header("Date").endswith("GMT")
    assert abs(when.timestamp() - time.time()) < 120


# --- malformed requests -----------------------------------------------------------------

H = b"Host: 127.0.0.1\r\n"
MALFORMED = [
    ("garbage-line", b"GARBAGE\r\n\r\n", 400),
    ("missing-version", b"GET /\r\n\r\n", 400),
    ("missing-target", b"GET HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("bad-protocol-name", b"GET / HTTX/1.1\r\n" + H + b"\r\n", 400),
    ("lowercase-protocol", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("extra-token", b"GET / HTTP/1.1 extra\r\n" + H + b"\r\n", 400),
    ("bad-method-char", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("leading-space", b" GET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("ctl-in-target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("nul-in-target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space-in-header-name", b"GET / HTTP/1.1\r\n" + H + b"Bad Header: x\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n", 400),
    ("header-without-colon", b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n", 400),
    ("empty-header-name", b"GET / HTTP/1.1\r\n" + H + b": value\r\n\r\n", 400),
    ("nul-in-header-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("ctl-in-header-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    ("nul-in-header-name", b"GET / HTTP/1.1\r\n" + H + b"X\x00A: b\r\n\r\n", 400),
    ("non-ascii-header-name", b"GET / HTTP/1.1\r\n" + H + b"X-\xc4: b\r\n\r\n", 400),
    ("content-length-not-a-number",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\nhello", 400),
    ("content-length-negative",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\nhello", 400),
    ("content-length-plus-sign",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("content-length-conflicting",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     400),
    ("chunk-size-not-hex",
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow",
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"fffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-data-longer-than-size",
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhelloEXTRA\r\n0\r\n\r\n", 400),
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("http-1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("http-3.0", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
]


def assert_worker_still_serves(srv, worker_pid):
    r = srv.request(get("/pid"))
    assert r.status == 200
    assert int(r.body) == worker_pid, "the worker was replaced (it crashed or exited)"


@pytest.mark.parametrize("raw,expected", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_request(srv, worker_pid, raw, expected):
    with srv.connect() as c:
        c.send(raw)
        try:
            r = c.read_response()
        except (EOFError, ConnectionResetError) as e:
            raise AssertionError(f"no response to a malformed request ({e!r})") from None
        assert r.status == expected, f"{raw!r}: got {r.status} {r.reason}, wanted {expected}"
        assert c.closed_by_peer(), "connection left open after an error response"
    assert_worker_still_serves(srv, worker_pid)


def test_chunked_not_final_transfer_coding_is_rejected(srv, worker_pid):
    # RFC 9112 6.3: chunked present but not last: the length cannot be known; 400 and close.
    raw = build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked, gzip")],
                        body=chunked(b"hello"), content_length=False)
    with srv.connect() as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 400
        assert c.closed_by_peer()
    assert_worker_still_serves(srv, worker_pid)


def test_unknown_transfer_coding_is_rejected(srv, worker_pid):
    # RFC 9112 6.1: a transfer coding the server does not implement is a 501.
    raw = build_request("POST", "/echo", headers=[("Transfer-Encoding", "gzip")],
                        body=b"hello", content_length=False)
    with srv.connect() as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 501
        assert c.closed_by_peer()
    assert_worker_still_serves(srv, worker_pid)


def test_content_length_with_chunked_is_not_smuggled(srv, worker_pid):
    # Both framings: refused (400) and the connection closed (RFC 9112 6.1 allows using
    # chunked and closing; headrace refuses), so nothing after the chunked body is taken as
    # a new request.
    smuggled = get("/pid?smuggled=1")
    body = chunked(b"hello") + smuggled
    raw = build_request("POST", "/echo", headers=[
        ("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")],
        body=body, content_length=False)
    with srv.connect() as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 400
        assert c.read_until_eof() == b"", "a second request was read from the body"
    assert_worker_still_serves(srv, worker_pid)


def test_at_least_twenty_malformed_cases():
    assert len({raw for _, raw, _ in MALFORMED}) >= 20


@pytest.mark.parametrize("where,status", [("header", 431), ("uri", 414)])
def test_oversized_head(srv, worker_pid, where, status):
    big = "a" * 40000
    if where == "header":
        raw = get("/pid", headers=[("X-Big", big)])
    else:
        raw = get("/pid?" + big)
    with srv.connect() as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        assert r.status == status
        assert c.closed_by_peer()
    assert_worker_still_serves(srv, worker_pid)


def test_client_closing_mid_head_leaves_worker(srv, worker_pid):
    with srv.connect() as c:
        c.send(b"GET /pid HTTP/1.1\r\nHost: 12")
    # nothing to answer; the worker must simply go on
    wait_until(lambda: srv.request(get("/pid")).status == 200, 10, "the next request")
    assert_worker_still_serves(srv, worker_pid)
