"""The worker's serving loop: a graceful stop loses no request the router already sent on its
private link, and plain connections finish the request in flight.

The router link is spoken here by hand: the worker logs the abstract name it listens on
(`serves the router link @NAME`), and a test connects to it and writes uwsgi packets carrying
HEADRACE_KEEPALIVE, as the router does.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import struct
import threading
import time

import pytest
from support import Conn, app, build_request, free_port, pid_alive, wait_until

LINK_LINE = re.compile(r"worker (\d+) \(pid: (\d+)\) serves the router link @(\S+)")


def uwsgi_packet(uri: str, body: bytes = b"") -> bytes:
    """One request as the router writes it on a link (keep-alive, HTTP/1.1 framing)."""
    path, _, query = uri.partition("?")
    pairs = [
        ("REQUEST_METHOD", "POST" if body else "GET"),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("HTTP_HOST", "localhost"),
        ("HEADRACE_KEEPALIVE", "1"),
    ]
    if body:
        pairs.append(("CONTENT_LENGTH", str(len(body))))
    data = b""
    for k, v in pairs:
        kb, vb = k.encode(), v.encode()
        data += struct.pack("<H", len(kb)) + kb + struct.pack("<H", len(vb)) + vb
    return struct.pack("<BHB", 0, len(data), 0) + data + body


def link_of(srv) -> tuple[int, str]:
    """(pid, abstract socket name) of the first worker's router link, from its log line."""
    m = wait_until(lambda: LINK_LINE.search(srv.log()), 10, "the worker's router link line")
    return int(m.group(2)), m.group(3)


def connect_link(name: str, timeout: float = 10.0) -> Conn:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect("\0" + name)
    return Conn(s)


def link_refused(name: str) -> bool:
    """True when a new connect to the link is refused."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + name)
    except ConnectionRefusedError:
        return True
    except OSError as e:
        return e.errno == errno.ECONNREFUSED
    finally:
        s.close()
    return False


def router(headrace, *args):
    port = free_port()
    return headrace("--http", f"127.0.0.1:{port}", "--wsgi-file", app("basic.py"), "--master",
                    *args, port=port)


def test_link_serves_pipelined_requests_sent_after_the_stop(headrace):
    srv = router(headrace, "--processes", "1")
    pid, name = link_of(srv)
    with connect_link(name) as link:
        link.send(uwsgi_packet("/pid"))
        first = link.read_response()
        assert first.status == 200 and first.body == str(pid).encode()
        os.kill(pid, signal.SIGTERM)
        # The link listener is shut once the stop began, with the worker still alive for the
        # open link: requests written on the link after that must all be answered.
        wait_until(lambda: link_refused(name), 5, "new link connects to be refused")
        assert pid_alive(pid), "the worker exited while a router link was open"
        link.send(uwsgi_packet("/sleep?s=0.3&tag=PIPE-1") + uwsgi_packet("/pid")
                  + uwsgi_packet("/echo", b"pipelined-body"))
        r1, r2, r3 = (link.read_response() for _ in range(3))
        assert (r1.status, r2.status, r3.status) == (200, 200, 200)
        assert json.loads(r1.body)["pid"] == pid
        assert r2.body == str(pid).encode()
        assert r3.body == b"pipelined-body"
        assert all(r.header("Connection") is None for r in (r1, r2, r3))
        # The link stays open for more: only the router closes it.
        assert not link.closed_by_peer(0.3)
        assert pid_alive(pid)
        closed = time.monotonic()
    # Closing the last link lets the worker exit, well before the 2 s idle limit for links.
    wait_until(lambda: not pid_alive(pid), 5, f"worker {pid} to exit")
    assert time.monotonic() - closed < 1.5
    log = srv.wait_log("PIPE-1")
    served = [ln for ln in log.splitlines() if ln.startswith(f"[pid: {pid}|")]
    assert len(served) >= 4, "every request on the link is in the log"


@pytest.mark.parametrize("stop", ["sigterm", "max-requests"])
def test_link_queued_connection_is_served_and_new_ones_refused(headrace, stop):
    # With --max-requests 2 the stop is decided inside the slow request (the readiness probe
    # was request 1), so the worker is already stopping when it comes back to its listeners.
    srv = router(headrace, "--processes", "1", *(["--max-requests", "2"] if stop != "sigterm"
                                                 else []))
    pid, name = link_of(srv)
    with connect_link(name) as busy:
        busy.send(uwsgi_packet("/sleep?s=1&tag=LINK-BUSY"))
        srv.wait_log("LINK-BUSY")
        # The worker's only thread is in the app: this connection waits in the backlog.
        queued = connect_link(name)
        queued.send(uwsgi_packet("/pid"))
        if stop == "sigterm":
            os.kill(pid, signal.SIGTERM)
        with queued:
            r = busy.read_response()
            assert r.status == 200 and json.loads(r.body)["pid"] == pid
            # Never accepted before the stop, it is taken while the stop drains the link.
            q = queued.read_response()
            assert q.status == 200 and q.body == str(pid).encode()
            wait_until(lambda: link_refused(name), 5, "new link connects to be refused")
            assert pid_alive(pid), "the worker exited while router links were open"
    wait_until(lambda: not pid_alive(pid), 5, f"worker {pid} to exit")


def test_link_stays_open_through_max_requests_retirement(headrace):
    srv = router(headrace, "--processes", "1", "--max-requests", "3")
    pid, name = link_of(srv)
    with connect_link(name) as link:
        # The fixture's readiness probe was request 1; request 3 retires the worker.
        link.send(b"".join(uwsgi_packet(f"/pid?n={i}") for i in range(5)))
        got = [link.read_response() for _ in range(5)]
        assert [r.status for r in got] == [200] * 5
        assert {r.body for r in got} == {str(pid).encode()}
        srv.wait_log(f"worker 1 (pid: {pid}) recycling")
        wait_until(lambda: link_refused(name), 5, "new link connects to be refused")
        assert pid_alive(pid), "the worker exited while a router link was open"
        link.send(uwsgi_packet("/pid?n=late"))
        late = link.read_response()
        assert late.status == 200 and late.body == str(pid).encode()
    wait_until(lambda: not pid_alive(pid), 5, f"worker {pid} to exit")


@pytest.mark.parametrize("front", ["direct", "router"])
def test_sigterm_to_master_finishes_slow_request(headrace, front):
    if front == "direct":
        srv = headrace("--wsgi-file", app("basic.py"), "--master", "--processes", "1")
    else:
        srv = router(headrace, "--processes", "1")
    srv.remember_pids()
    result = {}

    def slow():
        try:
            r = srv.request(build_request("GET", "/sleep?s=1.5&tag=TERM-SLOW"), timeout=20)
            result["status"], result["body"] = r.status, r.body
        except Exception as e:  # noqa: BLE001 - the assertion below reports it
            result["error"] = repr(e)

    t = threading.Thread(target=slow)
    t.start()
    srv.wait_log("TERM-SLOW")
    srv.proc.send_signal(signal.SIGTERM)
    t.join(20)
    assert result.get("status") == 200, f"in-flight request during SIGTERM: {result}"
    assert srv.proc.wait(10) == 0
    srv.stop()
    assert srv.leftover_pids() == []


# --- keep-alive affinity (direct mode) -----------------------------------------------------


def pids_of(conns) -> list[int]:
    """Ask each keep-alive connection which worker serves it."""
    out = []
    for c in conns:
        c.send(build_request("GET", "/pid"))
        r = c.read_response()
        assert r.status == 200
        out.append(int(r.body))
    return out


def test_keepalive_request_behind_busy_thread_moves_to_free_worker(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--master", "--processes", "2",
                   "--threads", "1", workers=2)
    conns = [srv.connect() for _ in range(5)]
    try:
        pids = pids_of(conns)
        # Five connections on two workers: one worker holds at least three of them.
        busy = max(set(pids), key=pids.count)
        a, hold = [c for c, p in zip(conns, pids) if p == busy][:2]
        hold.send(build_request("GET", "/sleep?s=2&tag=HOLD"))
        srv.wait_log(f"SLEEP-START {busy} HOLD")
        started = time.monotonic()
        a.send(build_request("GET", "/pid"))
        r = a.read_response()
        elapsed = time.monotonic() - started
        assert r.status == 200
        other = int(r.body)
        assert other != busy and other in srv.worker_pids()
        assert elapsed < 1.0, f"the request waited {elapsed:.2f} s behind the busy worker"
        # The connection now belongs to the worker that answered.
        assert pids_of([a]) == [other]
        slow = hold.read_response()
        assert slow.status == 200 and json.loads(slow.body)["pid"] == busy
    finally:
        for c in conns:
            c.close()


def test_keepalive_request_behind_busy_thread_moves_to_free_thread(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--master", "--processes", "1",
                   "--threads", "2")
    conns = [srv.connect() for _ in range(5)]
    try:
        for i, c in enumerate(conns):
            c.send(build_request("GET", f"/pid?c={i}"))
            assert c.read_response().status == 200
        lines = srv.wait_request_lines(6)
        core_of = {m["uri"]: int(m["core"]) for m in lines}
        cores = [core_of[f"/pid?c={i}"] for i in range(len(conns))]
        # Five connections on two threads: one thread holds at least three of them.
        busy = max(set(cores), key=cores.count)
        a, hold = [c for c, k in zip(conns, cores) if k == busy][:2]
        hold.send(build_request("GET", "/sleep?s=2&tag=HOLD-T"))
        srv.wait_log("HOLD-T")
        started = time.monotonic()
        a.send(build_request("GET", "/pid?moved=1"))
        r = a.read_response()
        elapsed = time.monotonic() - started
        assert r.status == 200
        assert elapsed < 1.0, f"the request waited {elapsed:.2f} s behind the busy thread"
        moved = [m for m in srv.wait_request_lines(7) if m["uri"] == "/pid?moved=1"]
        assert [int(m["core"]) for m in moved] == [1 - busy]
        assert hold.read_response().status == 200
    finally:
        for c in conns:
            c.close()
