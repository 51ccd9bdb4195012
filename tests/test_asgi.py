"""ASGI 3 (HTTP and lifespan) through the real binary: the scope against the spec on every
front (direct `--http-socket`, router `--http`, uwsgi protocol `--socket`), lifespan state,
streamed bodies both ways, client disconnects, keep-alive and pipelining, the same protocol
errors as the WSGI front, app exceptions, Starlette and FastAPI, preloaded and `--lazy-apps`,
two processes, max-requests recycling, ASGI 2 refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time

import pytest
import requests
from support import Conn, app, build_request, chunked, free_port, run_headrace, wait_until

RAW = app("asgi_raw.py")
MODES = [[], ["--lazy-apps"]]


def uwsgi_packet(method: str, uri: str, body: bytes = b"") -> bytes:
    path, _, query = uri.partition("?")
    pairs = [
        (b"REQUEST_METHOD", method.encode()),
        (b"REQUEST_URI", uri.encode()),
        (b"PATH_INFO", path.encode()),
        (b"QUERY_STRING", query.encode()),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"example.org"),
        (b"SERVER_PORT", b"8080"),
        (b"REMOTE_ADDR", b"10.0.0.7"),
        (b"REMOTE_PORT", b"40000"),
        (b"HTTP_HOST", b"example.org"),
        (b"HTTP_X_TEST", b"yes"),
        (b"CONTENT_LENGTH", str(len(body)).encode()),
    ]
    vars_ = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs
    )
    return struct.pack("<BHB", 0, len(vars_), 0) + vars_ + body


def start(headrace, front: str, *args: str, **kw):
    """A server on `front`; returns (server, port)."""
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http", "uwsgi": "--socket"}[front]
    probe = None if front == "uwsgi" else "/"
    srv = headrace(opt, f"127.0.0.1:{port}", *args, probe=probe, port=port, bind=False, **kw)
    return srv, port


def nginx_stack(headrace, *args: str, env=None):
    """One headrace (master, one worker) on the uwsgi protocol behind a real nginx
    (test_uwsgi_core's CoreStack); requests go to `stack.ports["tcp"]`. Stop it with
    `stack.stop()`."""
    from test_nginx import nginx_binary
    from test_uwsgi_core import CoreStack

    if nginx_binary() is None:
        pytest.fail("nginx is not installed (./dev test installs Debian's nginx)")
    stack = CoreStack(headrace, ["--master", *args], env)
    try:
        stack.start_nginx()
    except BaseException:
        stack.stop()
        raise
    return stack


def http(port: int, raw: bytes, method: str = "GET"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        c = Conn(s)
        c.send(raw)
        return c.read_response(method)


@pytest.mark.parametrize("front", ["direct", "router", "uwsgi"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_scope_follows_the_spec(headrace, front, mode):
    srv, port = start(headrace, front, "--wsgi-file", RAW, *mode)
    if front == "uwsgi":
        r = http(port, uwsgi_packet("POST", "/a%20b/c?x=1&y=%20", b"hello"))
    else:
        r = http(
            port,
            build_request("POST", "/a%20b/c?x=1&y=%20", body=b"hello", headers=[("X-Test", "yes")]),
        )
    assert r.status == 200, r
    scope = json.loads(r.body)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/a b/c"
    assert scope["raw_path"] == "/a%20b/c"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["root_path"] == ""
    assert scope["types"] == {"raw_path": "bytes", "query_string": "bytes", "header": "bytes"}
    assert ["x-test", "yes"] in scope["headers"]
    assert all(k == k.lower() for k, _ in scope["headers"])
    assert scope["extensions"] == {"http.response.pathsend": {}}
    assert scope["body_len"] == 5
    assert scope["state"] == {"started": scope["pid"]}
    if front == "uwsgi":
        assert scope["client"] == ["10.0.0.7", 40000]
        assert scope["server"] == ["example.org", 8080]
    elif front == "direct":
        assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
        assert scope["server"] == ["127.0.0.1", port]
    else:
        assert scope["client"][0] == "127.0.0.1"
    # The request log line has the WSGI front's shape (the fixture checks every line).
    srv.wait_log("POST /a%20b/c?x=1&y=%20 => generated")
    # ... with the client's address, also when it came in a uwsgi packet (router, nginx).
    remote = "10.0.0.7" if front == "uwsgi" else "127.0.0.1"
    srv.wait_log(f"] {remote} () {{")


def test_lifespan_state_and_shutdown(headrace, tmp_path):
    marker = tmp_path / "shutdown"
    srv = headrace("--wsgi-file", RAW, "--processes", "2", env={"ASGI_SHUTDOWN_FILE": str(marker)})
    # Both workers started up (a stop during a startup cancels it, with no shutdown).
    wait_until(lambda: marker.exists() and marker.read_text().count("startup") == 2, 15,
               "both workers' lifespan startup")
    pids = set()
    for _ in range(20):
        scope = requests.get(srv.url("/")).json()
        assert scope["state"]["started"] == scope["pid"]
        pids.add(scope["pid"])
    assert srv.stop() == 0
    lines = marker.read_text().splitlines()
    shut = {int(line.split()[1]) for line in lines if line.startswith("shutdown ")}
    assert len(shut) == 2, lines
    assert pids <= shut


@pytest.mark.parametrize("front", ["direct", "router", "uwsgi"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_lifespan_startup_failure_stops_the_server(headrace, front, mode):
    srv, _ = start(headrace, front, "--wsgi-file", RAW, *mode, env={"ASGI_FAIL_STARTUP": "1"},
                   wait=False)
    # Nothing was ever served: retrying cannot help, so headrace stops (exit code 1) with the
    # app's message, as Gunicorn and Uvicorn do.
    assert srv.proc.wait(15) == 1
    srv.wait_log("ASGI lifespan startup failed: no database")
    srv.wait_log("no worker can serve, stopping with exit code 1")


def test_lifespan_failure_after_serving_is_retried(headrace, tmp_path):
    """Once a worker has served, a respawned worker whose startup fails (the database went
    away) is retried with backoff while the others keep serving."""
    flag = tmp_path / "fail"
    app = tmp_path / "flaky.py"
    app.write_text(
        "import os\n"
        "FLAG = " + repr(str(flag)) + "\n"
        "async def application(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        if os.path.exists(FLAG):\n"
        "            await send({'type': 'lifespan.startup.failed', 'message': 'db is gone'})\n"
        "            return\n"
        "        await send({'type': 'lifespan.startup.complete'})\n"
        "        print('flaky startup ok', flush=True)\n"
        "        await receive()\n"
        "        await send({'type': 'lifespan.shutdown.complete'})\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': str(os.getpid()).encode()})\n"
    )
    srv = headrace("--wsgi-file", str(app), "--processes", "2", "--max-requests", "1",
                   probe=None, workers=2)
    srv.wait_log("flaky startup ok", count=2)
    flag.write_text("x")
    pid = requests.get(srv.url("/"), timeout=5).text  # that worker retires and fails to start
    srv.wait_log("ASGI lifespan startup failed: db is gone")
    other = requests.get(srv.url("/"), timeout=5).text
    assert other != pid
    assert srv.proc.poll() is None, "the server stopped although a worker had served"
    assert "stopping with exit code 1" not in srv.log()


def test_lifespan_off_and_unsupported(headrace, tmp_path):
    # An app that raises on the lifespan scope is served without lifespan under auto.
    bare = tmp_path / "bare.py"
    bare.write_text(
        "async def application(scope, receive, send):\n"
        "    assert scope['type'] == 'http'\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n"
    )
    srv = headrace("--wsgi-file", str(bare))
    assert requests.get(srv.url("/")).text == "ok"
    srv.wait_log("does not support lifespan")
    # An app that just returns on the lifespan scope is served too.
    quiet = tmp_path / "quiet.py"
    quiet.write_text(
        "async def application(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'quiet'})\n"
    )
    srv3 = headrace("--wsgi-file", str(quiet))
    assert requests.get(srv3.url("/")).text == "quiet"
    assert srv3.stop() == 0
    srv2 = headrace("--wsgi-file", RAW, "--lifespan", "off")
    assert requests.get(srv2.url("/")).json()["state"] == {}


@pytest.mark.parametrize("front", ["direct", "router"])
def test_streamed_echo_of_one_mib(headrace, front):
    _srv, port = start(headrace, front, "--wsgi-file", RAW)
    data = os.urandom(1 << 20)
    r = requests.post(f"http://127.0.0.1:{port}/echo", data=data)
    assert r.status_code == 200 and r.content == data
    assert r.headers.get("transfer-encoding") == "chunked"
    # A chunked request body, sent in pieces.
    parts = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    r = http(
        port,
        build_request(
            "POST", "/echo", headers=[("Transfer-Encoding", "chunked")], content_length=False
        )
        + chunked(*parts),
        "POST",
    )
    assert r.status == 200 and r.body == data


def test_expect_100_continue(headrace):
    srv = headrace("--wsgi-file", RAW)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        c = Conn(s)
        c.send(
            build_request(
                "POST", "/", headers=[("Content-Length", "5"), ("Expect", "100-continue")]
            )
        )
        interim = c.read_response(skip_interim=False)
        assert interim.status == 100
        c.send(b"hello")
        assert json.loads(c.read_response().body)["body_len"] == 5


def test_client_disconnect_is_seen_mid_request(headrace, tmp_path):
    events = tmp_path / "events"
    srv = headrace("--wsgi-file", RAW, env={"ASGI_EVENTS_FILE": str(events)})
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(build_request("GET", "/wait-disconnect"))
    time.sleep(0.3)
    assert not events.exists()
    s.close()
    wait_until(
        lambda: events.exists() and "disconnect" in events.read_text(),
        5,
        "the app to see http.disconnect",
    )
    assert requests.get(srv.url("/")).status_code == 200


def test_keep_alive_and_pipelining(headrace):
    srv = headrace("--wsgi-file", RAW)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        c = Conn(s)
        c.send(
            build_request("GET", "/one")
            + build_request("POST", "/two", body=b"abc")
            + build_request("GET", "/three")
        )
        paths = []
        for method in ("GET", "POST", "GET"):
            r = c.read_response(method)
            assert r.status == 200
            paths.append(json.loads(r.body)["path"])
        assert paths == ["/one", "/two", "/three"]
        c.send(build_request("GET", "/four", headers=[("Connection", "close")]))
        r = c.read_response()
        assert json.loads(r.body)["path"] == "/four" and r.header("connection") == "close"
        assert c.closed_by_peer()


BAD = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "http/2.0": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "uri too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "head too large": b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    "body over limit-post": build_request("POST", "/", body=b"x" * 2000),
    "two content-lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "unknown transfer-coding": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
}


def test_bad_requests_get_the_wsgi_status(headrace):
    opts = ("--buffer-size", "4096", "--limit-post", "1000")
    asgi = headrace("--wsgi-file", RAW, *opts)
    wsgi = headrace("--wsgi-file", app("basic.py"), *opts)
    for name, raw in BAD.items():
        want = http(wsgi.port, raw).status
        assert want >= 400, name
        assert http(asgi.port, raw).status == want, name


def test_head_timeout_is_408(headrace):
    srv = headrace("--wsgi-file", RAW, "--socket-timeout", "1")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        assert Conn(s).read_response().status == 408


@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_app_exception_is_500_and_the_worker_lives(headrace, mode):
    srv = headrace("--wsgi-file", RAW, *mode)
    pid = requests.get(srv.url("/")).json()["pid"]
    r = requests.get(srv.url("/raise"))
    assert r.status_code == 500
    srv.wait_log("RuntimeError: boom from the app")
    # The start alone writes nothing: the exception still becomes a 500.
    assert requests.get(srv.url("/raise-after-start")).status_code == 500
    assert requests.get(srv.url("/")).json()["pid"] == pid


@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_two_processes_share_the_load(headrace, mode):
    srv = headrace("--wsgi-file", RAW, "--processes", "2", *mode)
    pids = set()

    def both():
        with (
            socket.create_connection(("127.0.0.1", srv.port)) as a,
            socket.create_connection(("127.0.0.1", srv.port)) as b,
        ):
            # The first request holds its worker's loop, so the second connection can only
            # be accepted by the other worker (an idle ASGI worker may take any number of
            # connections: two sleeping requests can share one worker).
            a.sendall(build_request("GET", "/block?0.3"))
            time.sleep(0.05)
            b.sendall(build_request("GET", "/block?0.3"))
            for s in (a, b):
                pids.add(json.loads(Conn(s).read_response().body)["pid"])
        return len(pids) == 2

    wait_until(both, 10, "both workers to answer")


def test_concurrent_requests_in_one_worker(headrace):
    srv = headrace("--wsgi-file", RAW)
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(10)]
    t0 = time.monotonic()
    for s in socks:
        s.sendall(build_request("GET", "/sleep?0.5"))
    for s in socks:
        assert Conn(s).read_response().status == 200
        s.close()
    # Ten half-second sleeps on one event loop overlap.
    assert time.monotonic() - t0 < 3


def test_max_requests_recycles_the_worker(headrace):
    srv = headrace("--wsgi-file", RAW, "--max-requests", "3", probe=None)
    first = requests.get(srv.url("/")).json()["pid"]
    seen = {first}
    wait_until(
        lambda: seen.add(requests.get(srv.url("/")).json()["pid"]) or len(seen) > 1,
        10,
        "a new worker after --max-requests",
    )


@pytest.mark.parametrize("which", ["starlette_app", "fastapi_app"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_frameworks(headrace, which, mode):
    srv = headrace("--pythonpath", app(""), "--module", f"asgi_frameworks:{which}", *mode)
    r = requests.get(srv.url("/"))
    assert r.json() == {"db": "connected", "path": "/"}
    if which == "fastapi_app":
        assert requests.get(srv.url("/items/7?q=x")).json() == {"item_id": 7, "q": "x"}
        assert requests.post(srv.url("/echo"), data=b"z" * 70000).json() == {"len": 70000}
        assert requests.get(srv.url("/items/nope")).status_code == 422
    else:
        assert requests.post(srv.url("/echo"), data=b"hi").text == "hi"
        assert requests.get(srv.url("/stream")).text == "".join(f"part {i}\n" for i in range(5))
    assert requests.get(srv.url("/missing")).status_code == 404


def test_asgi2_is_refused_at_startup():
    r = run_headrace(
        ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", app("asgi_two.py")]
    )
    assert r.returncode == 1, r
    assert "ASGI 2 application" in (r.stdout + r.stderr)


def test_interface_wsgi_forces_wsgi_and_bad_values_are_refused(headrace):
    r = run_headrace(
        ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", RAW, "--interface", "rsgi"]
    )
    assert r.returncode == 2 and "interface" in (r.stdout + r.stderr)
    srv = headrace("--wsgi-file", app("basic.py"), "--interface", "auto")
    assert requests.get(srv.url("/")).status_code == 200


def test_harakiri_kills_a_stuck_loop(headrace, tmp_path):
    # A request that blocks the event loop (time.sleep) is what harakiri is for.
    stuck = tmp_path / "stuck.py"
    stuck.write_text(
        "import os, time\n"
        "async def application(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        raise ValueError('no lifespan')\n"
        "    if scope['path'] == '/block':\n"
        "        time.sleep(30)\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': str(os.getpid()).encode()})\n"
    )
    srv = headrace("--wsgi-file", str(stuck), "--harakiri", "1")
    victim = int(requests.get(srv.url("/")).text)
    with pytest.raises(requests.RequestException):
        requests.get(srv.url("/block"), timeout=8)
    srv.wait_log(f"HARAKIRI: worker 1 (pid {victim}) stuck")
    wait_until(
        lambda: int(requests.get(srv.url("/"), timeout=5).text) != victim,
        10,
        "a new worker after harakiri",
    )


def test_stats_count_asgi_requests(headrace):
    stats = free_port()
    srv = headrace("--wsgi-file", RAW, "--stats", f"127.0.0.1:{stats}", "--stats-http")
    for _ in range(5):
        requests.get(srv.url("/"))

    def counted():
        s = requests.get(f"http://127.0.0.1:{stats}/").json()
        return sum(w["requests"] for w in s["workers"]) >= 5

    wait_until(counted, 5, "the stats to count the requests")


def test_stalled_body_ends_after_socket_timeout(headrace):
    srv = headrace("--wsgi-file", RAW, "--socket-timeout", "1")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(build_request("POST", "/", headers=[("Content-Length", "10")]) + b"abc")
        assert Conn(s).closed_by_peer(timeout=5)
    srv.wait_log("client stalled for more than --socket-timeout")
    assert requests.get(srv.url("/")).status_code == 200


def test_sighup_reload_runs_lifespan_shutdown(headrace, tmp_path):
    marker = tmp_path / "shutdown"
    srv = headrace("--wsgi-file", RAW, env={"ASGI_SHUTDOWN_FILE": str(marker)})
    old = requests.get(srv.url("/")).json()["pid"]
    os.kill(srv.master_pid(), signal.SIGHUP)
    wait_until(
        lambda: marker.exists() and f"shutdown {old}" in marker.read_text(),
        10,
        "lifespan shutdown of the old worker",
    )

    def new_worker():
        try:
            return requests.get(srv.url("/"), timeout=2).json()["pid"] != old
        except requests.RequestException:
            return False

    wait_until(new_worker, 10, "a new worker after SIGHUP")


def test_stop_during_a_hanging_lifespan_startup(headrace, tmp_path):
    hang = tmp_path / "hang.py"
    hang.write_text(
        "import asyncio\n"
        "async def application(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await asyncio.sleep(3600)\n"
    )
    srv = headrace("--wsgi-file", str(hang), wait=False)
    srv.wait_log("spawned headrace worker 1")
    time.sleep(0.5)
    assert srv.stop() == 0
    assert "stopped during ASGI lifespan startup" in srv.log()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_behind_nginx_uwsgi_pass(headrace, kind):
    from test_nginx import Stack, nginx_binary

    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian package `nginx`)")
    st = Stack(headrace, "asgi_raw.py", 2)
    try:
        st.start_nginx()
        scope = requests.get(st.url(kind, "/a%20b?x=1"), timeout=10).json()
        assert scope["path"] == "/a b" and scope["raw_path"] == "/a%20b"
        assert scope["query_string"] == "x=1"
        assert scope["client"][0] == "127.0.0.1"
        assert scope["state"] == {"started": scope["pid"]}
        # A 1 MiB body read whole, then a chunked (streamed) response nginx must not see
        # chunk-framed: behind uwsgi_pass the body runs to the close.
        data = os.urandom(1 << 20)
        r = requests.post(st.url(kind, "/"), data=data, timeout=20)
        assert r.status_code == 200 and r.json()["body_len"] == len(data)
        small = os.urandom(100_000)
        r = requests.post(st.url(kind, "/echo"), data=small, timeout=20)
        assert r.status_code == 200 and r.content == small
        assert requests.get(st.url(kind, "/raise"), timeout=10).status_code == 500
    finally:
        st.stop()


@pytest.mark.parametrize(
    ("target", "extra", "body"),
    [
        ("partial_app", [], "partial"),
        ("instance_app", [], "instance"),
        ("sync_wrapper", ["--interface", "asgi"], "wrapped"),
    ],
)
def test_detection_sees_through_callable_shapes(headrace, target, extra, body):
    srv = headrace("--pythonpath", app(""), "--module", f"asgi_callables:{target}", *extra)
    assert requests.get(srv.url("/")).text == body


@pytest.mark.parametrize("front", ["direct", "router", "nginx"])
def test_stats_show_requests_in_flight_per_worker(headrace, front):
    """An ASGI worker runs many requests at once: the stats JSON (headrace.in_flight) and the
    metrics (headrace_worker_in_flight) say how many; behind nginx (uwsgi protocol) too."""
    from test_stats import http_get, metrics

    def stats(addr):
        return json.loads(http_get(addr[1], "/")[1])

    sport = free_port()
    stats_args = ("--wsgi-file", RAW, "--stats", f"127.0.0.1:{sport}", "--stats-http")
    stack = None
    if front == "nginx":
        stack = nginx_stack(headrace, *stats_args)
        port = stack.ports["tcp"]
    else:
        _srv, port = start(headrace, front, *stats_args)
    try:
        _in_flight_checks(port, sport, stats, metrics)
    finally:
        if stack is not None:
            stack.stop()


def _in_flight_checks(port, sport, stats, metrics):
    done = []

    def slow():
        done.append(requests.get(f"http://127.0.0.1:{port}/sleep?3", timeout=30).status_code)
    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()

    def in_flight():
        d = stats(("127.0.0.1", sport))["headrace"]["in_flight"]
        return d[0]["requests"] if d[0]["requests"] == 3 else None
    wait_until(in_flight, 10, "3 requests in flight in the stats")
    m = metrics(sport)
    assert m['headrace_worker_in_flight{worker="1"}'] == 3
    for t in threads:
        t.join()
    assert done == [200] * 3
    wait_until(lambda: stats(("127.0.0.1", sport))["headrace"]["in_flight"][0]["requests"] == 0,
               10, "no request in flight once they ended")
