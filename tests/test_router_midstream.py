"""A response that fails after its head went out, and the worker that sent it.

An app can fail once its response has started: an ASGI app that sends `http.response.start`
and a first body with `more_body` and then raises; a WSGI generator that yields once and then
raises; a body (or an ASGI pathsend) shorter than its Content-Length. The worker can then only
close the connection, which truncates the response. As uWSGI and nginx do, the client whose
response was cut gets its connection closed, and the worker stays in rotation: behind the
router (`--http`) the router opens a new link to it for the next request instead of counting
it dead (which left `saturated: 0/0 workers busy` and a queue that never moved). A worker that
really dies mid-response is still replaced, and the requests waiting for it are served by its
successor.

Parametrized over the fronts where the worker's close reaches the client: direct
(`--http-socket`) and the router (`--http`); behind nginx (uwsgi protocol) the client sees
what nginx makes of the upstream's close (a truncated body when there was a Content-Length,
a normal end otherwise), and the worker likewise stays in service. Every server binds 127.0.0.1 only; every wait
is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import app, build_request, free_port, pid_alive

APPS = {"wsgi": app("midstream_wsgi.py"), "asgi": app("midstream_asgi.py")}
FRONTS = ["direct", "router"]
#: What the saturated line says when the router counts no worker at all.
NO_WORKER = re.compile(r"saturated: \d+/0 workers")
#: The router's line for a cut response: names the worker and the request.
CUT_LINE = re.compile(r"headrace router: worker \(pid (\d+)\) (?:closed its link|broke its link "
                      r"\(.*?\)) in the middle of the response to (\S+) (\S+);")
#: The first body bytes every failing path sends.
FIRST = b"0123456789"


def start(headrace, front: str, kind: str, processes: int):
    args = ["--wsgi-file", APPS[kind], "--master", "--processes", str(processes)]
    if front == "router":
        port = free_port()
        return headrace("--http", f"127.0.0.1:{port}", *args, port=port, probe="/pid")
    return headrace(*args, probe="/pid")


def failing_paths(kind: str, tmp_path) -> list[str]:
    """Each way the app fails once its head went out."""
    if kind == "wsgi":
        return ["/fail", "/fail-cl", "/short"]
    short = tmp_path / "short.txt"
    short.write_bytes(FIRST)
    return ["/fail", "/fail-cl", f"/short?file={short}"]


def cut(srv, path: str) -> None:
    """GET `path` on a keep-alive connection: the head and the first bytes arrive, then the
    connection closes (the body is truncated); no hang."""
    with srv.connect(10) as c:
        c.send(build_request("GET", path))
        r = c.read_response()
        assert r.status == 200, r
        assert not r.complete, f"{path}: the truncated response looks complete: {r}"
        assert r.body == FIRST, r
        assert c.closed_by_peer(5), f"{path}: the connection stayed open after a cut response"


def pid_of(srv, path: str = "/pid", timeout: float = 5.0) -> int:
    """GET `path` on a new connection within `timeout`: 200 and the worker's pid."""
    r = srv.request(build_request("GET", path, headers=[("Connection", "close")]),
                    timeout=timeout)
    assert r.status == 200 and r.complete, r
    return int(r.body)


def all_at_once(srv, paths: list[str], fn):
    """`fn(srv, path)` for every path at once, one thread each; results in `paths` order."""
    barrier = threading.Barrier(len(paths))

    def one(path):
        barrier.wait(10)
        return fn(srv, path)

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        return list(pool.map(one, paths))


def assert_no_dead_router(srv) -> None:
    log = srv.log()
    assert not NO_WORKER.search(log), f"the router lost its workers:\n{srv.tail()}"
    assert not re.search(r"\(pid: \d+\) died", log), srv.tail()


@pytest.mark.parametrize("kind", list(APPS))
@pytest.mark.parametrize("front", FRONTS)
def test_one_worker_lives_on_after_responses_cut_midway(headrace, tmp_path, front, kind):
    """One worker (nothing to hide behind): each failing path is cut for its client, and 20
    requests after them all get prompt answers from that same worker."""
    srv = start(headrace, front, kind, 1)
    (pid,) = srv.worker_pids()
    paths = failing_paths(kind, tmp_path)
    for path in paths:
        cut(srv, path)
        t0 = time.monotonic()
        assert pid_of(srv) == pid
        assert time.monotonic() - t0 < 2, "the next request waited"
    for _ in range(20):
        assert pid_of(srv) == pid
    assert pid_alive(pid)
    assert_no_dead_router(srv)
    if front == "router":
        assert "(the worker is gone)" not in srv.log(), srv.tail()
        cuts = CUT_LINE.findall(srv.log())
        assert [(int(p), m, u) for p, m, u in cuts] == [(pid, "GET", u) for u in paths], (
            srv.tail())


@pytest.mark.parametrize("kind", list(APPS))
@pytest.mark.parametrize("front", FRONTS)
def test_two_workers_stay_in_rotation_after_cuts(headrace, tmp_path, front, kind):
    """Two workers, each cut several times (the failing requests arrive two at a time and
    hold a moment, so each worker gets one of each pair): a burst of 40 concurrent requests
    afterwards is answered promptly by the same two workers, and behind the router
    concurrent slow requests still reach both."""
    srv = start(headrace, front, kind, 2)
    pids = set(srv.worker_pids())
    assert len(pids) == 2
    for path in failing_paths(kind, tmp_path):
        held = path + ("&" if "?" in path else "?") + "hold=0.3"
        all_at_once(srv, [held, held], cut)
    t0 = time.monotonic()
    got = all_at_once(srv, ["/pid"] * 40, lambda s, p: pid_of(s, p, timeout=10))
    assert time.monotonic() - t0 < 10
    assert set(got) <= pids, (got, pids)
    if front == "router":
        cut_pids = {int(p) for p, _, _ in CUT_LINE.findall(srv.log())}
        assert cut_pids == pids, f"the cuts did not reach both workers:\n{srv.tail()}"
        # Four requests of 0.5 s at once: the router spreads them over both workers (with
        # one of them counted dead they would all go to the other).
        slow = all_at_once(srv, ["/pid?hold=0.5"] * 4, lambda s, p: pid_of(s, p, timeout=10))
        assert set(slow) == pids, (slow, pids)
    for pid in pids:
        assert pid_alive(pid)
    assert_no_dead_router(srv)


@pytest.mark.parametrize("front", FRONTS)
def test_requests_behind_a_cut_response_run_once(headrace, front):
    """Short bodies cut among many concurrent fast requests (behind the router, queued fast
    requests are pipelined on the worker's link, so some wait behind a cut one and are
    retried): each cut client sees its connection close, every other request is answered,
    and each ran exactly once (one request log line per request)."""
    srv = start(headrace, front, "wsgi", 1)
    (pid,) = srv.worker_pids()
    for _ in range(20):  # a fast average: the router may pipeline queued requests
        pid_of(srv)
    paths = ["/short" if i % 6 == 5 else f"/pid?n={i}" for i in range(48)]

    def one(srv, path):
        if path == "/short":
            cut(srv, path)
            return pid
        return pid_of(srv, path, timeout=10)

    assert all_at_once(srv, paths, one) == [pid] * len(paths)
    lines = srv.wait_request_lines(1 + 20 + len(paths))
    ran = Counter(m.group("uri") for m in lines)
    assert {p: ran[p] for p in paths if p != "/short"} == {
        p: 1 for p in paths if p != "/short"}, srv.tail()
    assert ran["/short"] == paths.count("/short")
    assert_no_dead_router(srv)


def test_worker_killed_mid_response_is_replaced(headrace):
    """The other case: the worker really dies while its response streams. The client's
    response is cut, the request queued behind it is served by the respawned worker (not
    answered 502, never sent to the dead pid), and later requests go to the new worker."""
    srv = start(headrace, "router", "wsgi", 1)
    (pid,) = srv.worker_pids()
    with srv.connect(20) as victim, srv.connect(20) as queued:
        victim.send(build_request("GET", "/stream"))
        victim.sock.settimeout(10)
        got = b""
        while b"chunk" not in got:
            data = victim.sock.recv(4096)
            assert data, f"the stream ended early: {got!r}"
            got += data
        queued.send(build_request("GET", "/pid"))
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        rest = victim.read_until_eof(5)
        assert not (got + rest).endswith(b"0\r\n\r\n"), "the cut stream looks complete"
        r = queued.read_response()
        assert r.status == 200, r
        new_pid = int(r.body)
        assert new_pid != pid
    log = srv.log()
    assert f"(pid: {pid}) died" in log
    cuts = [m for m in CUT_LINE.finditer(log) if int(m.group(1)) == pid]
    assert [m.group(3) for m in cuts] == ["/stream"], srv.tail()
    line_end = log.index("\n", cuts[0].end())
    assert log[cuts[0].end():line_end].endswith("(the worker is gone)"), srv.tail()
    for _ in range(5):
        assert pid_of(srv) == new_pid
    assert not NO_WORKER.search(srv.log()), srv.tail()



@pytest.mark.parametrize("kind", list(APPS))
def test_worker_lives_on_after_cuts_behind_nginx(headrace, tmp_path, kind):
    """The uwsgi protocol behind a real nginx (`uwsgi_pass`), one worker. What nginx makes of
    a cut for its client: with a Content-Length (/fail-cl, /short) it sees the upstream close
    early ("upstream prematurely closed connection") and closes the client's connection on
    the truncated body; without one (/fail), the upstream's close is the only end of the body
    the uwsgi protocol has, so nginx cannot tell a cut from an end: it ends its chunked
    response normally and keeps the client's connection. Either way the worker stays in
    service: the next requests are answered at once by the same pid."""
    from test_asgi import nginx_stack

    stack = nginx_stack(headrace, "--wsgi-file", APPS[kind], "--processes", "1")
    try:
        srv = stack.hr
        (pid,) = srv.worker_pids()

        def nginx_pid(c=None) -> int:
            own = c is None
            c = c or stack.connect("tcp", 10)
            try:
                c.send(build_request("GET", "/pid"))
                r = c.read_response()
            finally:
                if own:
                    c.close()
            assert r.status == 200 and r.complete, r
            return int(r.body)

        assert nginx_pid() == pid
        for path in failing_paths(kind, tmp_path):
            with stack.connect("tcp", 10) as c:
                c.send(build_request("GET", path))
                r = c.read_response()
                assert r.status == 200 and r.body == FIRST, (path, r)
                if path == "/fail":
                    assert r.complete, (path, r)
                    # The client's connection stays usable.
                    assert nginx_pid(c) == pid
                else:
                    assert not r.complete, f"{path}: the truncated response looks complete: {r}"
                    assert c.closed_by_peer(5), f"{path}: nginx kept the connection open"
            t0 = time.monotonic()
            assert nginx_pid() == pid
            assert time.monotonic() - t0 < 5, "the next request waited"
        for _ in range(20):
            assert nginx_pid() == pid
        assert pid_alive(pid)
        assert srv.worker_pids() == [pid]
        assert not re.search(r"\(pid: \d+\) died", srv.log()), srv.tail()
        errors = (stack.dir / "error.log").read_text()
        assert errors.count("upstream prematurely closed connection") == 2, stack.nginx_log()
    finally:
        stack.stop()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", list(APPS))
@pytest.mark.parametrize("front", FRONTS)
def test_a_slow_or_silent_worker_stays_in_service(headrace, front, kind, threads):
    """--socket-timeout 1 and one worker. A request whose app takes 2 s to answer, and one
    whose response falls silent for 2 s after its first bytes: behind the router the first gets
    a 504 and the second is cut (its connection closes) after 1 s, and the worker serves the
    next request (once its app has returned) instead of being counted dead for good
    (`saturated: 1/0 workers`, a queue that never moved). Direct, the worker has no such
    deadline on its own app: both complete."""
    args = ["--wsgi-file", APPS[kind], "--master", "--processes", "1", "--socket-timeout", "1",
            "--threads", str(threads)]
    port = free_port()
    opt = "--http" if front == "router" else "--http-socket"
    srv = headrace(opt, f"127.0.0.1:{port}", *args, port=port, probe="/pid", bind=False)
    (pid,) = srv.worker_pids()
    r = srv.request(build_request("GET", "/pid?hold=2"), timeout=10)
    assert r.status == (504 if front == "router" else 200), r
    assert pid_of(srv, timeout=10) == pid
    with srv.connect(10) as c:
        c.send(build_request("GET", "/gap?gap=2"))
        r = c.read_response()
        assert (r.status, r.body[:10]) == (200, FIRST), r
        if front == "router":
            assert not r.complete, r
            assert c.closed_by_peer(5)
        else:
            assert (r.complete, r.body) == (True, FIRST + b"end"), r
    for _ in range(5):
        assert pid_of(srv, timeout=10) == pid
    assert_no_dead_router(srv)
    if front == "router":
        log = srv.log()
        assert "sent no response within --socket-timeout" in log, srv.tail()
        assert "sent nothing for --socket-timeout in the middle of the response to GET /gap" in log
        assert "(the worker is gone)" not in log, srv.tail()
