"""Review findings on the WSGI bridge (issue 10).

1. A client announcing a huge Content-Length and sending a few bytes must not make
   `wsgi.input.read()` (or `read(CONTENT_LENGTH)`) allocate the announced size: the worker's
   peak RSS stays small, the request ends and the worker keeps serving.
2. Two threads of an app using wsgi.input or start_response at once get a RuntimeError; the
   worker never dies (every panic aborts the process) and the request is answered.
3. A rejection (408 for a head that took too long) waits for a client that does not read with
   the GIL released: the worker's other thread keeps running Python meanwhile.

The worker sees these only where it reads the client's socket itself: the direct
`--http-socket` front and the uwsgi protocol (`--socket`, packets built by hand as nginx would
send them). The `--http` router buffers every whole body before a worker sees the request, so
a lying or stalled body never reaches a worker through it.
"""

from __future__ import annotations

import socket
import struct

import pytest
from support import app, build_request, free_port, wait_until

APP = app("review_wsgi_app.py")
#: the Content-Length the lying client announces
HUGE = 3_000_000_000
#: how much the worker's peak RSS may grow while it serves the lying request
RSS_SLACK_KB = 256 * 1024
#: a chunk larger than any loopback socket buffer pair, so write() blocks on a client that
#: does not read
BIG_WRITE = 32 << 20
FRONTS = ["http-socket", "uwsgi"]


def uwsgi_packet(method: str, uri: str, content_length: int | None = None) -> bytes:
    path, _, query = uri.partition("?")
    pairs = [
        ("REQUEST_METHOD", method),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("HTTP_HOST", "localhost"),
    ]
    if content_length is not None:
        pairs.append(("CONTENT_LENGTH", str(content_length)))
    data = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
        for k, v in pairs
    )
    return struct.pack("<BHB", 0, len(data), 0) + data


def request_bytes(front: str, method: str, uri: str, content_length: int | None = None) -> bytes:
    """The head of a request (no body) as the given front expects it."""
    if front == "uwsgi":
        return uwsgi_packet(method, uri, content_length)
    headers = [("Content-Length", str(content_length))] if content_length is not None else []
    return build_request(method, uri, headers=headers)


def start(headrace, front: str, *args: str):
    if front == "uwsgi":
        port = free_port()
        return headrace("--socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes",
                        "1", *args, port=port, probe=None, bind=False)
    return headrace("--wsgi-file", APP, "--processes", "1", *args)


def get_pid(srv, front: str) -> int:
    with srv.connect() as c:
        c.send(request_bytes(front, "GET", "/pid"))
        r = c.read_response()
    assert r.status == 200, r
    return int(r.body)


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def recorded(srv, name: str) -> str | None:
    p = srv.record / name
    return p.read_text() if p.exists() else None


def assert_alive(srv, front: str, pid: int) -> None:
    assert get_pid(srv, front) == pid, "the worker was replaced"
    assert "DAMN !" not in srv.log(), srv.tail()


# --- 1. a lying Content-Length ---------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("mode", ["all", "length"])
def test_lying_content_length_does_not_allocate_it(headrace, front, mode):
    srv = start(headrace, front)
    pid = get_pid(srv, front)
    before = status_kb(pid, "VmHWM")
    with srv.connect() as c:
        c.send(request_bytes(front, "POST", f"/read?mode={mode}", HUGE) + b"just a few bytes")
        c.sock.shutdown(socket.SHUT_WR)
        # The client is gone mid-body: the server answers nothing and closes, as for any
        # short body.
        assert c.read_until_eof() == b""
    srv.wait_log("went away mid-body")
    assert recorded(srv, "read") == (
        f"raised OSError: client disconnected after 16 body bytes of {HUGE}"
    )
    peak = status_kb(pid, "VmHWM")
    assert peak - before < RSS_SLACK_KB, f"peak RSS grew from {before} kB to {peak} kB"
    assert_alive(srv, front, pid)


def test_large_honest_body_read_whole(headrace):
    """A body larger than the up-front allocation, sent in pieces, is read whole."""
    srv = start(headrace, "http-socket")
    body = bytes(range(256)) * (5 * 4096 + 7)  # ~5 MiB, not a multiple of any buffer size
    for mode in ("all", "length"):
        with srv.connect() as c:
            c.send(request_bytes("http-socket", "POST", f"/read?mode={mode}", len(body)))
            for i in range(0, len(body), 700_000):
                c.send(body[i:i + 700_000])
            r = c.read_response()
        assert (r.status, r.body) == (200, str(len(body)).encode())
        assert recorded(srv, "read") == f"read {len(body)}"


# --- 2. threads of one app using the same request objects -------------------------------------


@pytest.mark.parametrize("front", FRONTS)
def test_two_threads_reading_wsgi_input(headrace, front):
    srv = start(headrace, front)
    pid = get_pid(srv, front)
    with srv.connect() as c:
        # The body never comes: the app's thread stays blocked in read() until the server
        # ends the request.
        c.send(request_bytes(front, "POST", "/input-race", 10))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"raced")
        assert c.closed_by_peer(), "the connection must end: a thread still held its body"
    assert recorded(srv, "input-race") == "busy"
    wait_until(lambda: recorded(srv, "input-race-thread"), 10, "the reader thread to end")
    assert recorded(srv, "input-race-thread") == "OSError"
    srv.wait_log("another thread of the app still used wsgi.input")
    assert_alive(srv, front, pid)


@pytest.mark.parametrize("front", FRONTS)
def test_start_response_while_another_thread_writes(headrace, front):
    srv = start(headrace, front)
    pid = get_pid(srv, front)
    with srv.connect(timeout=20) as c:
        c.send(request_bytes(front, "GET", f"/sr-race?size={BIG_WRITE}"))
        # Read nothing until the app has seen its writer thread blocked.
        wait_until(lambda: recorded(srv, "sr-race"), 15, "the app to record the race")
        assert recorded(srv, "sr-race") == (
            "busy; RuntimeError: start_response is in use by another thread of the app"
        )
        got = c.read_until_eof(timeout=20)
    version = b"HTTP/1.0" if front == "uwsgi" else b"HTTP/1.1"
    assert got.startswith(version + b" 200 OK\r\n"), got[:200]
    # The app returned while its thread still wrote: the response is cut short.
    assert len(got) < BIG_WRITE
    srv.wait_log("another thread of the app still used start_response")
    assert_alive(srv, front, pid)


@pytest.mark.parametrize("front", FRONTS)
def test_write_kept_past_the_request_raises(headrace, front):
    """A write callable kept by the app after its request ended must not send: the socket's
    number may by then belong to another client's connection."""
    srv = start(headrace, front)
    with srv.connect() as c:
        c.send(request_bytes(front, "GET", "/keep-write"))
        assert c.read_response().body == b"kept"
    with srv.connect() as c:
        c.send(request_bytes(front, "GET", "/stale-write"))
        r = c.read_response()
    assert (r.status, r.body) == (200, b"RuntimeError: write() called after the response ended")


# --- 3. a rejection waits for the client with the GIL released -------------------------------


@pytest.mark.parametrize(
    ("after", "needle", "args"),
    [
        # garbage pipelined behind the request: `reject` answers 400 at once
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", "400 Bad Request for", (), id="reject"),
        # a head that never ends: the sweep answers 408 after --socket-timeout
        pytest.param(b"GET /pid HTTP/1.1\r\nHost: x\r\n", "408 Request Timeout for",
                     ("--socket-timeout", "1"), id="sweep"),
    ],
)
def test_rejection_waits_without_the_gil(headrace, after, needle, args):
    """/fill answers, then fills its connection's send buffer (the client reads nothing), so
    the rejection of what the client sent next has to wait to be sent. Meanwhile /watch, on
    the worker's other thread, must get to run Python: it sees the rejection's log line while
    the connection is still open."""
    srv = start(headrace, "http-socket", "--threads", "2", *args)
    pid = get_pid(srv, "http-socket")
    with srv.connect(timeout=20) as watcher:
        watcher.send(build_request("GET", "/watch?needle=" + needle.replace(" ", "+")))
        filled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        filled.settimeout(20)
        with filled:
            filled.connect(("127.0.0.1", srv.port))
            filled.sendall(build_request("GET", "/fill") + after)
            r = watcher.read_response()
            assert (r.status, r.body) == (200, b"during"), srv.tail()
    assert recorded(srv, "watch") == "during"
    assert_alive(srv, "http-socket", pid)
