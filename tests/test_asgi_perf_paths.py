"""The Rust ASGI connection's own paths (src/asgi/conn.rs) through the real binary:
`--limit-concurrency` (503 with Retry-After once a worker runs N requests), and backpressure
(a response larger than the socket buffers, for a client that does not read yet, neither
blocks the worker nor loses bytes), on the direct (`--http-socket`) and router (`--http`)
fronts, preloaded and `--lazy-apps`."""

from __future__ import annotations

import socket

import pytest
from support import Conn, app, build_request, free_port, wait_until

PERF = app("asgi_perf.py")
MODES = [[], ["--lazy-apps"]]


def start(headrace, front: str, *args: str, **kw):
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    return headrace(opt, f"127.0.0.1:{port}", *args, port=port, bind=False, **kw)


def get(port: int, path: str):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        c = Conn(s)
        c.send(build_request("GET", path))
        return c.read_response()


@pytest.mark.parametrize("front", ["direct", "router"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_limit_concurrency_answers_503_with_retry_after(headrace, tmp_path, front, mode):
    """Direct: the worker answers 503. Behind the router the worker is given at most its
    limit and the router queues the rest: with `--queue-timeout 1` the router answers 503."""
    gate = tmp_path / "gate"
    queue = ["--queue-timeout", "1"] if front == "router" else []
    srv = start(
        headrace,
        front,
        "--wsgi-file",
        PERF,
        "--limit-concurrency",
        "2",
        *queue,
        *mode,
        env={"ASGI_GATE_FILE": str(gate)},
    )
    holders = [socket.create_connection(("127.0.0.1", srv.port), timeout=20) for _ in range(2)]
    try:
        started = tmp_path / "gate.started"
        for s in holders:
            s.sendall(build_request("GET", "/hold"))
        # Both must be running before the probe, or the probe may take a slot first.
        wait_until(
            lambda: started.exists() and len(started.read_text()) == 2, 10, "both holds to run"
        )

        def refused():
            r = get(srv.port, "/probe")
            return r if r.status == 503 else None

        r = wait_until(refused, 10, "a request over --limit-concurrency to get 503")
        assert r.header("retry-after") == "1"
        if front == "router":
            assert b"--queue-timeout" in r.body
            assert "--limit-concurrency 2 reached" not in srv.log()
        else:
            srv.wait_log("--limit-concurrency 2 reached")
        gate.write_text("go")
        for s in holders:
            resp = Conn(s).read_response()
            assert resp.status == 200 and resp.body == b"released"
    finally:
        for s in holders:
            s.close()
    assert get(srv.port, "/after").body == b"/after"


def test_limit_concurrency_keeps_a_keep_alive_connection(headrace, tmp_path):
    """A refused request without a body does not cost the client its connection."""
    gate = tmp_path / "gate"
    srv = headrace(
        "--wsgi-file", PERF, "--limit-concurrency", "1", env={"ASGI_GATE_FILE": str(gate)}
    )
    started = tmp_path / "gate.started"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as holder:
        holder.sendall(build_request("GET", "/hold"))
        wait_until(started.exists, 10, "the hold to run")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            c = Conn(s)

            def refused():
                c.send(build_request("GET", "/probe"))
                r = c.read_response()
                return r if r.status == 503 else None

            wait_until(refused, 10, "503 on a kept-alive connection")
            gate.write_text("go")
            assert Conn(holder).read_response().status == 200
            c.send(build_request("GET", "/same-connection"))
            assert c.read_response().body == b"/same-connection"


def test_limit_concurrency_with_a_wsgi_app_is_explained(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--limit-concurrency", "3")
    srv.wait_log("--limit-concurrency is for ASGI apps only")


@pytest.mark.parametrize("front", ["direct", "router"])
@pytest.mark.parametrize(
    "path", ["/big-once?16777216", "/big?16777216"], ids=["one-send", "streamed"]
)
def test_backpressure_against_a_client_that_does_not_read(headrace, front, path):
    srv = start(headrace, front, "--wsgi-file", PERF)
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(30)
    slow.connect(("127.0.0.1", srv.port))
    with slow:
        slow.sendall(build_request("GET", path))
        # 16 MiB cannot fit in the socket buffers: the worker holds the rest, and meanwhile
        # it keeps serving others.
        for i in range(3):
            assert get(srv.port, f"/other-{i}").body == f"/other-{i}".encode()
        r = Conn(slow).read_response()
        assert r.status == 200
        assert len(r.body) == 16777216
        assert r.body.count(r.body[:1]) == 16777216
    assert get(srv.port, "/after").body == b"/after"


@pytest.mark.parametrize("front", ["direct", "router"])
def test_send_and_buffered_receive_do_not_suspend(headrace, front):
    srv = start(headrace, front, "--wsgi-file", PERF)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        c = Conn(s)
        c.send(build_request("POST", "/no-suspend", body=b"abc"))
        r = c.read_response("POST")
    assert r.status == 200
    assert r.body == b"x" * 1000 + b"dict NoneType NoneType"
