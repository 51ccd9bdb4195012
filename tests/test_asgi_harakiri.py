"""--harakiri in an ASGI worker: the overdue request's task is cancelled (where it waited is
logged), the client gets a 504 when nothing was answered yet, and the worker with its other
requests lives on; a task that ignores the cancellation (or a blocked loop) gets the worker
killed a grace later (HARAKIRI_CANCEL_GRACE), as a WSGI worker would be.

Every front: direct (--http-socket), router (--http), uwsgi protocol (--socket, raw packets;
behind a real nginx for the cancelled request's 504); preloaded and --lazy-apps."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from support import Conn, app, build_request, wait_until
from test_asgi import MODES, nginx_stack, start, uwsgi_packet

APP = app("asgi_harakiri.py")
FRONTS = ["direct", "router", "uwsgi"]


def request(front: str, port: int, path: str, timeout: float = 15.0):
    """(status, body) of GET `path`, or (None, partial body) when the connection closed first."""
    raw = uwsgi_packet("GET", path) if front == "uwsgi" else build_request("GET", path)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        c = Conn(s)
        c.send(raw)
        try:
            r = c.read_response()
        except (EOFError, ConnectionError, ValueError) as e:
            return None, str(e)
        return r.status, r.body


@pytest.fixture
def stacks():
    """The nginx stacks `serve` started, stopped when the test ends."""
    made = []
    yield made
    for stack in made:
        stack.stop()


def serve(stacks, headrace, front: str, *args: str):
    """(server, port) of a server on `front`; "nginx": the uwsgi protocol behind a real nginx,
    whose HTTP port is returned."""
    if front != "nginx":
        return start(headrace, front, *args)
    stack = nginx_stack(headrace, *args)
    stacks.append(stack)
    return stack.hr, stack.ports["tcp"]


@pytest.mark.parametrize("front", [*FRONTS, "nginx"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_overdue_request_is_cancelled_and_the_worker_lives(stacks, headrace, front, mode):
    """Behind nginx too: nginx passes the worker's 504 through to its client."""
    srv, port = serve(stacks, headrace, front, "--wsgi-file", APP, "--harakiri", "1", *mode)
    status, pid = request(front, port, "/")
    assert status == 200
    # A quick request on the same worker while the slow one waits: served at once.
    quick = []
    t = threading.Thread(
        target=lambda: (time.sleep(0.3), quick.append(request(front, port, "/")))
    )
    t.start()
    t0 = time.monotonic()
    status, body = request(front, port, "/sleep")
    elapsed = time.monotonic() - t0
    t.join(10)
    assert status == 504, (status, body)
    assert b"--harakiri" in body
    assert elapsed < 1.0 + 1.9, elapsed  # cancelled, not killed after the grace
    assert quick and quick[0] == (200, pid)
    line = srv.wait_log("cancels GET /sleep")
    assert f"HARAKIRI: worker 1 (pid {int(pid)}) cancels GET /sleep, running 1s" in line
    log = srv.log()
    # Where the task waited, down the await chain: the app, then the helper it awaited.
    assert "in application" in log and "await nap(30)" in log
    assert "in nap" in log and "await asyncio.sleep(seconds)" in log
    # The same worker goes on: no kill.
    assert request(front, port, "/") == (200, pid)
    time.sleep(2.5)  # past the master's grace
    assert request(front, port, "/") == (200, pid)
    assert "stuck" not in srv.log()


@pytest.mark.parametrize("front", FRONTS)
def test_a_started_response_is_cut_and_the_worker_lives(headrace, front):
    srv, port = start(headrace, front, "--wsgi-file", APP, "--harakiri", "1")
    _, pid = request(front, port, "/")
    status, body = request(front, port, "/started")
    # The head went out: the response cannot become a 504; it ends short (closed).
    assert status is None or status == 200, (status, body)
    srv.wait_log("cancels GET /started")
    assert request(front, port, "/") == (200, pid)


@pytest.mark.parametrize("front", ["direct", "router"])
def test_a_task_that_ignores_the_cancellation_costs_the_worker(headrace, front):
    srv, port = start(headrace, front, "--wsgi-file", APP, "--harakiri", "1")
    _, pid = request(front, port, "/")
    status, _ = request(front, port, "/stubborn", timeout=15)
    assert status in (None, 502, 504), status
    srv.wait_log("cancels GET /stubborn")
    srv.wait_log(f"HARAKIRI: worker 1 (pid {int(pid)}) stuck")
    wait_until(
        lambda: (r := request(front, port, "/", timeout=5))[0] == 200 and r[1] != pid,
        15,
        "a new worker after the harakiri kill",
    )


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_user_harakiri_cancels_its_own_request_only(headrace, front, mode):
    """uwsgi.set_user_harakiri(1) in one request of an event loop: that request's task is
    cancelled after 1 s (a 504, the log names the call), although another request that set its
    own longer limit ended in the meantime (which must not clear the first one's); the worker,
    running both, lives on. No --harakiri at all."""
    srv, port = start(headrace, front, "--wsgi-file", APP, *mode)
    _, pid = request(front, port, "/")
    other = []
    t = threading.Thread(target=lambda: (
        time.sleep(0.2), other.append(request(front, port, "/user?limit=30&sleep=0.3"))))
    t.start()
    t0 = time.monotonic()
    status, body = request(front, port, "/user?limit=1&sleep=30")
    elapsed = time.monotonic() - t0
    t.join(10)
    assert status == 504, (status, body)
    assert 0.9 < elapsed < 1.0 + 1.9, elapsed
    assert other == [(200, pid)]
    srv.wait_log("cancels GET /user?limit=1&sleep=30")
    assert "(uwsgi.set_user_harakiri(1)); its task was at:" in srv.log()
    # The innermost thing awaited is named: the Future asyncio.sleep waits on.
    assert "awaiting <Future pending" in srv.log(), srv.tail()
    time.sleep(2.5)  # past the grace: the worker was not killed
    assert request(front, port, "/") == (200, pid)
    assert "stuck" not in srv.log()


@pytest.mark.parametrize("front", ["direct", "router"])
def test_user_harakiri_on_a_task_that_ignores_it_costs_the_worker(headrace, front):
    srv, port = start(headrace, front, "--wsgi-file", APP)
    _, pid = request(front, port, "/")
    status, _ = request(front, port, "/user-stubborn", timeout=15)
    assert status in (None, 502, 504), status
    srv.wait_log("cancels GET /user-stubborn")
    srv.wait_log(f"HARAKIRI: worker 1 (pid {int(pid)}) stuck 1s on a request whose task did "
                 "not end when cancelled (uwsgi.set_user_harakiri), killing")
    wait_until(
        lambda: (r := request(front, port, "/", timeout=5))[0] == 200 and r[1] != pid,
        15,
        "a new worker after the harakiri kill",
    )
