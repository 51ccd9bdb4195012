"""The `--http` router in front of ASGI workers, and what it does when a client leaves a request
that a worker is serving (issue #15).

- An ASGI worker runs many requests at once on its event loop: the router gives it up to its
  published concurrency (one request per link, links opened on demand and pooled), not one per
  `--threads`; such a worker is not "busy" (no saturated line) while it has room.
- A client that goes away while its request is at a worker: the router closes that request's
  link, so the worker sees the disconnect (ASGI: `http.disconnect`, `send()` raises; WSGI: the
  write fails, the streamed response stops) and lives on.
- A request whose body stalls is logged as such (not as a missing head).

Every server binds 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import app, build_request, free_port, wait_until

WSGI = app("router_cut.py")
ASGI = app("router_cut_asgi.py")
MODES = {"preloaded": [], "lazy": ["--lazy-apps"]}
SATURATED = "headrace saturated"


def start(headrace, path, *args, **kw):
    port = free_port()
    return headrace("--http", f"127.0.0.1:{port}", "--wsgi-file", path, "--master", *args,
                    port=port, probe="/pid", **kw)


def fetch(srv, path: str, timeout: float = 20.0) -> tuple[int, bytes]:
    with srv.connect(timeout) as c:
        c.send(build_request("GET", path, headers=[("Connection", "close")]))
        r = c.read_response()
    return r.status, r.body


def together(srv, paths: list[str]) -> list[tuple[int, bytes]]:
    """Every GET at once, one connection each; results in `paths` order."""
    barrier = threading.Barrier(len(paths))

    def one(path):
        barrier.wait(10)
        return fetch(srv, path)

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        return list(pool.map(one, paths))


def leave_after_first_bytes(srv, path: str) -> None:
    """GET `path`, read the response head and the first body bytes, then close."""
    with srv.connect(10) as c:
        c.send(build_request("GET", path))
        c.sock.settimeout(10)
        got = b""
        while b"chunk" not in got:
            data = c.sock.recv(4096)
            assert data, f"the response ended early: {got!r}"
            got += data
        assert got.startswith(b"HTTP/1.1 200"), got


def recorded(record, what: str) -> str:
    """The app's record once written in full (within 5 s)."""
    wait_until(lambda: record.exists() and record.read_text().endswith("\n"), 5, what)
    return record.read_text()


@pytest.mark.parametrize("mode", list(MODES))
def test_one_asgi_worker_takes_many_requests_at_once(headrace, mode):
    """Thirty requests are inside one worker's app at once (each waits until all thirty have
    arrived): the router did not hold them back to one per `--threads`. Not saturated."""
    srv = start(headrace, ASGI, "--processes", "1", *MODES[mode])
    n = 30
    got = together(srv, [f"/meet?name=thirty&n={n}"] * n)
    pid = srv.worker_pids()[0]
    assert got == [(200, f"met {pid}".encode())] * n, got
    assert SATURATED not in srv.log()
    # The links stay pooled: the worker serves on (one more request, then a second round).
    assert fetch(srv, "/pid") == (200, str(pid).encode())
    got = together(srv, [f"/meet?name=again&n={n}"] * n)
    assert got == [(200, f"met {pid}".encode())] * n, got


def test_asgi_requests_spread_over_workers(headrace):
    """With two ASGI workers, concurrent requests go to the least loaded: twenty requests
    that all wait are split evenly, so each worker's loop holds at least five at once."""
    srv = start(headrace, ASGI, "--processes", "2")
    attempt = iter(range(100))

    def both_seen():
        # Two requests that stay 0.3 s: they land on two workers once the router (which
        # re-reads the scoreboard every 100 ms) has seen both ready.
        got = together(srv, [f"/meet?name=warm-{next(attempt)}&n=1&hold=0.3"] * 2)
        return len({body for _, body in got}) == 2

    wait_until(both_seen, 10, "the router to see both workers ready")
    got = together(srv, ["/meet?name=spread&n=5"] * 20)
    assert all(status == 200 and body.startswith(b"met ") for status, body in got), got
    assert {body.split()[1].decode() for _, body in got} == {str(p) for p in srv.worker_pids()}


@pytest.mark.parametrize("mode", list(MODES))
def test_client_leaving_ends_an_asgi_stream(headrace, mode):
    """The client leaves a streamed response: the app's send() raises (the router closed the
    link) long before its 20 s stream would have ended; the worker serves on."""
    srv = start(headrace, ASGI, "--processes", "1", *MODES[mode])
    pid = srv.worker_pids()[0]
    leave_after_first_bytes(srv, "/stream?tag=asgi")
    record = srv.record / "stream-asgi"
    sent, how = recorded(record, "the app to see the client leave").split()
    assert int(sent) < 200 and how != "complete", (sent, how)
    assert fetch(srv, "/pid") == (200, str(pid).encode())


def test_client_leaving_ends_a_wsgi_stream(headrace):
    """The same for a WSGI worker: the response's write fails, the iterable is closed, the
    worker logs the disconnect and serves on (no longer a 20 s drain into nowhere)."""
    srv = start(headrace, WSGI, "--processes", "1", "--threads", "2")
    pid = srv.worker_pids()[0]
    leave_after_first_bytes(srv, "/stream?tag=wsgi")
    record = srv.record / "stream-wsgi"
    assert int(recorded(record, "the app's stream to be closed")) < 200
    srv.wait_log("client disconnected", timeout=5)
    assert fetch(srv, "/pid") == (200, str(pid).encode())


def test_client_leaving_a_running_wsgi_request(headrace):
    """The client leaves while a WSGI app runs: the app finishes, its write fails and is
    logged as a client disconnect; the worker lives and its next request is served."""
    srv = start(headrace, WSGI, "--processes", "1")
    pid = srv.worker_pids()[0]
    with srv.connect(10) as c:
        c.send(build_request("GET", "/slow?s=1"))
        time.sleep(0.3)
    srv.wait_log("client disconnected", timeout=5)
    assert fetch(srv, "/pid") == (200, str(pid).encode())
    assert srv.worker_pids() == [pid]
    assert "Bad Gateway" not in srv.log()


def test_stalled_body_is_logged_as_a_stalled_body(headrace):
    """A body that stops arriving gets 408 after --socket-timeout, logged as a stalled body
    (the head did arrive)."""
    srv = start(headrace, WSGI, "--processes", "1", "--socket-timeout", "1")
    with srv.connect(10) as c:
        c.send(build_request("POST", "/pid", headers=[("Content-Length", "10")],
                             content_length=False) + b"abc")
        r = c.read_response()
    assert r.status == 408
    log = srv.wait_log("request body stalled")
    assert not re.search(r"408 .*request head not received", log)


@pytest.mark.parametrize("mode", list(MODES))
def test_reload_lets_running_asgi_requests_finish(headrace, mode):
    """A reload while twenty requests are inside one ASGI worker: the router gives the old
    worker nothing new, each of its links ends after its own response, and every request is
    answered by the old worker; the next one goes to its successor."""
    srv = start(headrace, ASGI, "--processes", "1", *MODES[mode])
    old = srv.worker_pids()[0]
    n = 20
    with ThreadPoolExecutor(max_workers=n) as pool:
        path = f"/meet?name=reload-{mode}&n={n}&hold=1.5"
        running = [pool.submit(fetch, srv, path) for _ in range(n)]
        # All twenty are in the app (the twentieth records it) and stay 1.5 s: reload now.
        wait_until((srv.record / f"met-reload-{mode}").exists, 10, "twenty requests in the app")
        os.kill(srv.master_pid(), signal.SIGHUP)
        got = [f.result(30) for f in running]
    assert got == [(200, f"met {old}".encode())] * n, got
    wait_until(lambda: fetch(srv, "/pid")[1] not in (b"", str(old).encode()), 20,
               "a new worker to serve")


def test_asgi_worker_at_its_limit_makes_the_router_queue(headrace):
    """`--limit-concurrency 2`: the router gives the worker two requests at once and queues the
    others (the saturated line counts the worker busy), instead of the worker answering 503;
    every request is served."""
    srv = start(headrace, ASGI, "--processes", "1", "--limit-concurrency", "2")
    pid = srv.worker_pids()[0]
    got = together(srv, [f"/meet?name=limit-{i}&n=1&hold=1.5" for i in range(5)])
    assert got == [(200, f"met {pid}".encode())] * 5, got
    sat = re.search(r"\*\*\* headrace saturated: (\d+)/(\d+) workers busy, (\d+) requests queued",
                    srv.log())
    assert sat, srv.tail()
    busy, ready, queued = map(int, sat.groups())
    assert (busy, ready) == (1, 1) and 1 <= queued <= 3, sat.group(0)
    assert "--limit-concurrency 2 reached" not in srv.log()
