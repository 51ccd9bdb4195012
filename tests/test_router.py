"""The `--http` router: a process that terminates client connections, buffers whole requests
and hands them to free workers over the uwsgi protocol, with an explicit FIFO queue
(`--queue-timeout`, `--max-queue`, the `saturated` line), 502 for a worker that dies, and its
own respawn. Every server binds 127.0.0.1 only; every wait is bounded.

The fixture adds no `--http-socket` when `--http` is given, so each server here gets its port
passed explicitly; its readiness probe (a GET) goes through the router to a worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import REPO, Conn, app, build_request, chunked, free_port, wait_until

SEED = str(REPO / "examples" / "seed_app.py")
ROUTER_LINE = re.compile(r"spawned headrace http 1 \(pid: (\d+)\)")
RESPAWN_LINE = re.compile(r"Respawned headrace http 1 \(new pid: (\d+)\)")
SATURATED = re.compile(
    r"\*\*\* headrace saturated: (\d+)/(\d+) workers busy, (\d+) requests queued "
    r"\(oldest ([\d.]+) s\)"
)


def start(headrace, *args, **kw):
    """headrace with `--http 127.0.0.1:PORT` (and `args`); the fixture knows the port."""
    port = free_port()
    srv = headrace("--http", f"127.0.0.1:{port}", *args, port=port, **kw)
    srv.router_pid = lambda: router_pid(srv)
    return srv


def router_pid(srv) -> int:
    """The current router's pid: from the newest spawn or respawn line."""
    log = srv.log()
    found = [(m.start(), int(m.group(1))) for m in ROUTER_LINE.finditer(log)]
    found += [(m.start(), int(m.group(1))) for m in RESPAWN_LINE.finditer(log)]
    assert found, f"no router spawn line in the log:\n{srv.tail()}"
    return max(found)[1]


def get(path: str, **kw) -> bytes:
    return build_request("GET", path, **kw)


def timed_get(srv, path: str, t0: float, timeout: float = 20.0):
    """GET `path` on a new connection; (status, headers-dict, body, seconds since t0)."""
    with srv.connect(timeout) as c:
        c.send(get(path, headers=[("Connection", "close")]))
        r = c.read_response()
    return r.status, {k.lower(): v for k, v in r.headers}, r.body, time.monotonic() - t0


def parallel_gets(srv, paths, timeout: float = 20.0):
    """Send every GET at once (one thread and connection each); results in `paths` order."""
    barrier = threading.Barrier(len(paths))
    t0_box = {}

    def one(path):
        barrier.wait(5)
        t0_box.setdefault("t0", time.monotonic())
        return timed_get(srv, path, t0_box["t0"], timeout)

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        return list(pool.map(one, paths))


# --- the seed experiment through the router ---------------------------------------------------


@pytest.mark.slow
def test_seed_four_waves_and_saturated_line(headrace):
    srv = start(headrace, "--wsgi-file", SEED, "--master", "--processes", "5",
                env={"SEED_SLEEP": "1"})
    results = parallel_gets(srv, [f"/?param=Request_{i}" for i in range(20)])
    assert [r[0] for r in results] == [200] * 20, results
    assert all(r[2] == b"true" for r in results)
    times = sorted(r[3] for r in results)
    assert 3.5 <= times[-1] <= 6.0, f"total {times[-1]:.2f} s, wanted four 1 s waves"
    for wave in range(4):
        got = times[wave * 5:(wave + 1) * 5]
        assert all(wave + 0.85 <= t <= wave + 1.8 for t in got), (
            f"wave {wave + 1} finished at {[round(t, 2) for t in got]}")
    lines = srv.wait_request_lines(21)
    mine = [m for m in lines if "param=Request_" in m.group("uri")]
    per_pid = Counter(int(m.group("pid")) for m in mine)
    assert sorted(per_pid.values()) == [4] * 5, per_pid
    assert set(per_pid) == set(srv.worker_pids())

    log = srv.log()
    sat = SATURATED.findall(log)
    assert len(sat) == 1, f"wanted one saturated line (at most one per 5 s), got {sat}"
    busy, total, queued, oldest = int(sat[0][0]), int(sat[0][1]), int(sat[0][2]), float(sat[0][3])
    assert (busy, total) == (5, 5)
    assert 10 <= queued <= 15, queued
    assert 0.5 <= oldest < 2.0, oldest
    # logged while the requests waited: before the second wave was answered
    sat_at = log.index("headrace saturated")
    sixth = [i for i, line in _line_offsets(log) if "param=Request_" in line][5]
    assert sat_at < sixth, "the saturated line came only after the queue drained"


def _line_offsets(text):
    at = 0
    for line in text.splitlines(keepends=True):
        yield at, line
        at += len(line)


@pytest.mark.slow
def test_seed_queue_timeout_gives_503(headrace):
    srv = start(headrace, "--wsgi-file", SEED, "--master", "--processes", "5",
                "--queue-timeout", "2", env={"SEED_SLEEP": "1"})
    results = parallel_gets(srv, [f"/?param=Request_{i}" for i in range(20)])
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(ok) + len(refused) == 20, [r[:2] for r in results]
    # waves 1 and 2 are served, wave 4 (3 s of waiting) is refused; wave 3 waits exactly 2 s
    assert 10 <= len(ok) <= 15 and 5 <= len(refused) <= 10, (len(ok), len(refused))
    for status, headers, body, t in refused:
        assert 1.9 <= t <= 2.6, f"503 after {t:.2f} s, wanted right at the 2 s queue timeout"
        assert "retry-after" in headers, headers
        assert int(headers["retry-after"]) >= 1
        assert b"queue-timeout" in body
    for status, headers, body, t in ok:
        assert body == b"true" and t <= 3.8, t


def test_max_queue_refuses_at_once(headrace):
    srv = start(headrace, "--wsgi-file", app("rt_app.py"), "--master", "--processes", "1",
                "--max-queue", "3")
    (pid,) = srv.worker_pids()
    conns = []
    try:
        first = srv.connect(20)
        conns.append(first)
        first.send(get("/sleep?s=0.8&tag=first"))
        srv.wait_log(f"SLEEP-START {pid} first", timeout=5)
        for i in range(3):
            c = srv.connect(20)
            conns.append(c)
            c.send(get(f"/echo-path?queued={i}"))
            time.sleep(0.05)
        time.sleep(0.2)  # the router has read and queued them
        for i in range(2):
            t0 = time.monotonic()
            with srv.connect(10) as c:
                c.send(get(f"/echo-path?extra={i}"))
                r = c.read_response()
            took = time.monotonic() - t0
            assert r.status == 503, r
            assert took < 0.5, f"503 after {took:.2f} s, wanted at once"
            assert r.header("Retry-After") is not None
            assert b"max-queue" in r.body
        r = first.read_response()
        assert r.status == 200 and json.loads(r.body)["tag"] == "first"
        for i, c in enumerate(conns[1:]):
            r = c.read_response()
            assert r.status == 200 and r.body == f"/echo-path?queued={i}".encode()
    finally:
        for c in conns:
            c.close()
    # one FIFO queue: served in the order they arrived
    served = [m.group("uri") for m in srv.wait_request_lines(5) if "queued=" in m.group("uri")]
    assert served == [f"/echo-path?queued={i}" for i in range(3)], served


# --- slow clients never hold a worker --------------------------------------------------------


@pytest.mark.slow
def test_slow_bodies_do_not_occupy_the_worker(headrace):
    srv = start(headrace, "--wsgi-file", app("rt_app.py"), "--master", "--processes", "1")
    (pid,) = srv.worker_pids()
    bodies = [bytes([65 + i]) * 20 for i in range(5)]
    results: dict[int, object] = {}

    def slow_client(i):
        try:
            with srv.connect(20) as c:
                c.send(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20\r\n\r\n")
                for b in bodies[i]:
                    time.sleep(0.2)
                    c.send(bytes([b]))
                results[i] = c.read_response()
        except Exception as e:  # noqa: BLE001 - reported by the assertions below
            results[i] = e

    threads = [threading.Thread(target=slow_client, args=(i,), daemon=True) for i in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.7)  # every slow client is part-way through its body
    t0 = time.monotonic()
    with srv.connect(5) as c:
        c.send(get("/pid"))
        r = c.read_response()
    took = time.monotonic() - t0
    assert r.status == 200 and int(r.body) == pid
    assert took < 0.5, f"a normal request waited {took:.2f} s behind slow clients"
    for t in threads:
        t.join(15)
    for i in range(5):
        r = results.get(i)
        assert not isinstance(r, Exception) and r is not None, f"slow client {i}: {r!r}"
        assert r.status == 200 and r.body == bodies[i], r


def test_slow_reader_does_not_occupy_the_worker(headrace):
    # A client that does not read its (16 MiB) response: the router, not the worker, waits.
    srv = start(headrace, "--wsgi-file", app("rt_app.py"), "--master", "--processes", "1")
    (pid,) = srv.worker_pids()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(20)
    s.connect(("127.0.0.1", srv.port))
    with Conn(s) as lazy:
        lazy.send(get("/big?mb=16"))
        time.sleep(1.0)  # the worker has written what the buffers hold
        t0 = time.monotonic()
        try:
            r = srv.request(get("/pid"), timeout=3)
            took = time.monotonic() - t0
        except (socket.timeout, TimeoutError):
            r, took = None, time.monotonic() - t0
        big = lazy.read_response()
    assert big.status == 200 and big.complete and len(big.body) == 16 * 1024 * 1024
    assert r is not None and r.status == 200 and int(r.body) == pid, (
        f"a request waited {took:.2f} s (gave up) behind a client that reads slowly")
    assert took < 1.0, f"a request waited {took:.2f} s behind a client that reads slowly"


# --- a worker dies mid-request -----------------------------------------------------------------


def test_worker_killed_mid_request_gets_502(headrace):
    srv = start(headrace, "--wsgi-file", app("rt_app.py"), "--master", "--processes", "1")
    (pid,) = srv.worker_pids()
    with srv.connect(20) as victim, srv.connect(20) as queued:
        victim.send(get("/sleep?s=10&tag=victim"))
        srv.wait_log(f"SLEEP-START {pid} victim", timeout=5)
        queued.send(get("/pid"))
        time.sleep(0.2)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        r = victim.read_response()
        assert r.status == 502, r
        assert time.monotonic() - t0 < 3
        # the queued request is served by the respawned worker
        r = queued.read_response()
        assert r.status == 200, r
        new_pid = int(r.body)
        assert new_pid != pid
    assert f"(pid: {pid}) died" in srv.log()
    for _ in range(3):
        r = srv.request(get("/pid"))
        assert r.status == 200 and int(r.body) == new_pid


# --- HTTP through the router ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsrv(headrace_module):
    port = free_port()
    srv = headrace_module("--http", f"127.0.0.1:{port}", "--wsgi-file", app("rt_app.py"),
                          "--master", "--processes", "2", port=port)
    return srv


def test_pipelined_thousand_requests_in_order(rsrv):
    n = 1000
    raw = b"".join(get(f"/echo-path?i={i}") for i in range(n))
    with rsrv.connect(30) as c:
        sender = threading.Thread(target=c.send, args=(raw,), daemon=True)
        sender.start()
        for i in range(n):
            r = c.read_response()
            assert r.status == 200, (i, r)
            assert r.body == f"/echo-path?i={i}".encode(), f"response {i} is {r.body!r}"
        sender.join(10)
        # still open and usable afterwards
        c.send(get("/echo-path?i=last"))
        assert c.read_response().body == b"/echo-path?i=last"


def test_keepalive_many_requests_one_connection(rsrv):
    with rsrv.connect() as c:
        for i in range(50):
            c.send(get(f"/echo-path?k={i}"))
            r = c.read_response()
            assert r.status == 200 and r.body == f"/echo-path?k={i}".encode()
            assert (r.header("Connection") or "").lower() != "close"


def test_remote_addr_and_port_are_the_clients(rsrv):
    seen = set()
    for _ in range(2):
        with rsrv.connect() as c:
            port = c.sock.getsockname()[1]
            for _ in range(2):  # and on a kept-alive connection
                c.send(get("/environ", headers=[("X-Thing", "a"), ("X-Thing", "b")]))
                env = json.loads(c.read_response().body)
                assert env["REMOTE_ADDR"] == "127.0.0.1"
                assert env["REMOTE_PORT"] == str(port)
                assert env["HTTP_X_THING"] == "a, b"
                assert env["SERVER_PORT"] == str(rsrv.port)
        seen.add(port)
    assert len(seen) == 2


def test_chunked_request_body(rsrv):
    parts = [os.urandom(n) for n in (1, 1000, 70000, 5)]
    data = b"".join(parts)
    raw = build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")],
                        body=chunked(*parts), content_length=False)
    with rsrv.connect() as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 200
        got = json.loads(r.body)
        assert got == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                       "content_length": str(len(data))}
        c.send(get("/echo-path?after=chunked"))
        assert c.read_response().body == b"/echo-path?after=chunked"


def test_100_continue(rsrv):
    body = b"hello world"
    with rsrv.connect() as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
               b"Content-Length: 11\r\n\r\n")
        interim = c.read_response(skip_interim=False)
        assert interim.status == 100, interim
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.body == body


def test_head_has_no_body_and_keeps_framing(rsrv):
    with rsrv.connect() as c:
        c.send(build_request("HEAD", "/echo-path?head=1"))
        h = c.read_response("HEAD")
        assert h.status == 200 and h.body == b""
        assert h.header("Content-Length") == str(len("/echo-path?head=1"))
        c.send(get("/echo-path?after=head"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"/echo-path?after=head"


def _spill_fds(pid: int) -> list[str]:
    out = []
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if "headrace-body-" in target:
            out.append(target)
    return out


@pytest.mark.parametrize("size,spills", [(10 * 1024 * 1024, True), (512 * 1024, False)],
                         ids=["10mb-spills", "512kb-in-memory"])
def test_upload_spills_to_temp_file(rsrv, size, spills):
    rpid = router_pid(rsrv)
    data = os.urandom(size)
    with rsrv.connect(30) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % size)
        c.send(data[:-1])  # the router holds all but the last byte
        if spills:
            files = wait_until(lambda: _spill_fds(rpid), 5, "the router's temporary body file")
            assert all("(deleted)" in f for f in files), f"the temp file is not unlinked: {files}"
        else:
            time.sleep(0.3)
            assert _spill_fds(rpid) == [], "a 512 KiB body went to a temporary file"
        c.send(data[-1:])
        r = c.read_response()
        assert r.status == 200, r
        assert json.loads(r.body) == {"size": size, "sha256": hashlib.sha256(data).hexdigest(),
                                      "content_length": str(size)}
    wait_until(lambda: not _spill_fds(rpid), 3, "the temporary body file to be closed")


def test_streamed_response_http11_relayed_chunked(rsrv):
    with rsrv.connect() as c:
        c.send(get("/stream?n=30"))
        r = c.read_response()
        assert r.status == 200 and r.chunked and r.complete
        assert r.body == "".join(f"line {i}\n" for i in range(30)).encode()
        c.send(get("/echo-path?after=stream"))
        assert c.read_response().body == b"/echo-path?after=stream"


def test_streamed_response_dechunked_for_http10(rsrv):
    with rsrv.connect() as c:
        c.send(get("/stream?n=30", version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200 and not r.chunked
        assert r.header("Transfer-Encoding") is None
        assert r.body == "".join(f"line {i}\n" for i in range(30)).encode()
        assert c.closed_by_peer()


# --- malformed requests: the same answers as direct mode -------------------------------------------


@pytest.fixture(scope="module")
def both(headrace_module):
    """One server with the router on `port` and direct HTTP on `direct`."""
    port, direct = free_port(), free_port()
    srv = headrace_module("--http", f"127.0.0.1:{port}", "--http-socket", f"127.0.0.1:{direct}",
                          "--wsgi-file", app("rt_app.py"), "--master", "--processes", "1",
                          "--limit-post", "1000", "--socket-timeout", "2", port=port)
    srv.direct = direct
    return srv


H = b"Host: 127.0.0.1\r\n"
MALFORMED = [
    ("garbage-line", b"GARBAGE\r\n\r\n", 400),
    ("bad-protocol-name", b"GET / HTTX/1.1\r\n" + H + b"\r\n", 400),
    ("ctl-in-target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space-in-header-name", b"GET / HTTP/1.1\r\n" + H + b"Bad Header: x\r\n\r\n", 400),
    ("no-host-in-http11", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("content-length-not-a-number",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\nhello", 400),
    ("content-length-conflicting",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     400),
    ("chunk-size-not-hex",
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     400),
    ("unknown-transfer-coding",
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello", 501),
    ("body-over-limit-post",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5000\r\n\r\n" + b"x" * 5000, 413),
    ("uri-too-long", b"GET /?" + b"a" * 40000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("header-too-large", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n", 431),
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("head-never-finished", b"GET / HTTP/1.1\r\nHost: 127.", 408),
]


def _answer(port: int, raw: bytes):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    with Conn(s) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = c.read_response()
        except (EOFError, ConnectionResetError) as e:
            return f"no response ({e!r})", False
        return r.status, c.closed_by_peer()


@pytest.mark.parametrize("raw,expected", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_request_same_as_direct(both, raw, expected):
    (pid,) = both.worker_pids()
    with ThreadPoolExecutor(2) as pool:  # in parallel: the 408 case waits --socket-timeout
        routed, direct = pool.map(lambda p: _answer(p, raw), [both.port, both.direct])
    assert routed[0] == direct[0], f"router answered {routed[0]}, direct mode {direct[0]}"
    assert routed[0] == expected
    assert routed[1], "the router left the connection open after an error response"
    r = both.request(get("/pid"))
    assert r.status == 200 and int(r.body) == pid


# --- the router process itself ---------------------------------------------------------------------


def test_router_killed_is_respawned(headrace):
    srv = start(headrace, "--wsgi-file", app("rt_app.py"), "--master", "--processes", "2")
    old = srv.router_pid()
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    # the master holds the listening socket: a connection made now waits for the new router
    r = srv.request(get("/pid"), timeout=10)
    took = time.monotonic() - t0
    assert r.status == 200, r
    assert took < 2.5, f"served again only after {took:.2f} s"
    log = srv.wait_log(f"DAMN ! http router (pid: {old}) died", timeout=5)
    m = RESPAWN_LINE.search(log)
    assert m, srv.tail()
    new = int(m.group(1))
    assert new != old and srv.router_pid() == new
    with srv.connect() as c:
        for i in range(3):
            c.send(get(f"/echo-path?n={i}"))
            assert c.read_response().body == f"/echo-path?n={i}".encode()


def test_sigterm_closes_idle_keepalive_connections(headrace):
    # SIGTERM: finish what is in flight and exit; an idle kept-alive client connection is
    # nothing in flight (direct mode closes it at once).
    srv = start(headrace, "--wsgi-file", app("rt_app.py"), "--master", "--processes", "1")
    with srv.connect() as c:
        c.send(get("/echo-path?idle=1"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        code = srv.stop(signal.SIGTERM, timeout=4)
        took = time.monotonic() - t0
        assert code == 0, (
            f"headrace still running {took:.1f} s after SIGTERM (exit {code}) while one idle "
            "keep-alive client connection was open")
        assert took < 2
        assert c.closed_by_peer(1)


def test_post_buffering_sets_the_spill_size(headrace):
    srv = start(headrace, "--wsgi-file", app("rt_app.py"), "--master", "--processes", "1",
                "--post-buffering", "4096")
    rpid = router_pid(srv)
    data = os.urandom(64 * 1024)
    with srv.connect() as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
               % len(data))
        c.send(data[:-1])
        wait_until(lambda: _spill_fds(rpid), 5, "a temporary body file past --post-buffering")
        c.send(data[-1:])
        r = c.read_response()
        assert r.status == 200
        assert json.loads(r.body)["sha256"] == hashlib.sha256(data).hexdigest()


def test_http_httpsocket_and_socket_together(headrace):
    http_port, direct, uw = free_port(), free_port(), free_port()
    srv = headrace("--http", f"127.0.0.1:{http_port}", "--http-socket", f"127.0.0.1:{direct}",
                   "--socket", f"127.0.0.1:{uw}", "--wsgi-file", app("rt_app.py"),
                   "--master", "--processes", "2", port=http_port)
    workers = set(srv.worker_pids())
    # through the router
    r = srv.request(get("/echo-path?via=router"))
    assert r.status == 200 and r.body == b"/echo-path?via=router"
    # direct HTTP
    with Conn(socket.create_connection(("127.0.0.1", direct), timeout=10)) as c:
        c.send(get("/environ?via=direct"))
        r = c.read_response()
    assert r.status == 200
    env = json.loads(r.body)
    assert env["QUERY_STRING"] == "via=direct" and env["_pid"] in workers
    # the uwsgi protocol
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/echo-path?via=uwsgi"),
             (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REMOTE_ADDR", b"127.0.0.1")]
    data = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    with Conn(socket.create_connection(("127.0.0.1", uw), timeout=10)) as c:
        c.send(struct.pack("<BHB", 0, len(data), 0) + data)
        r = c.read_response()
    assert r.status == 200 and r.body == b"/echo-path?via=uwsgi"
