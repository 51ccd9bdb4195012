"""Black-box ASGI compliance checks ported from gunicorn, plus Django ASGI and the other
acceptance items of issue #15, against the real headrace binary.

Source of the ported checks: the gunicorn repository, https://github.com/benoitc/gunicorn,
commit 65ac1a3a4c0aa00960968c720d6e6bd2ac32f1b9, directory tests/docker/asgi_compliance/:
test_http_compliance.py, test_streaming_compliance.py, test_lifespan_compliance.py,
test_websocket_compliance.py, test_concurrency.py and test_framework_integration.py (with their
apps in apps/); also tests/docker/asgi_framework_compat/tests/ (the same contract in every
framework: test_http_scope.py, test_http_messages.py, test_lifespan_scope.py, test_streaming.py,
test_websocket_scope.py; run here with Starlette, FastAPI and Django) and
tests/docker/test_asgi_uwsgi/test_uwsgi.sh (ASGI over the uwsgi protocol behind nginx). The
checks were read there and written again here for headrace (MIT-licensed
upstream; no code copied): gunicorn runs them in Docker against gunicorn and nginx; here they
run against headrace on the direct front (`--http-socket`) and the router (`--http`), with the
app preloaded and with `--lazy-apps`, and (for the proxy checks) behind nginx's `uwsgi_pass`.

Where a check was adapted, the test says why. Not ported: HTTPS/WSS and HTTP/2 (headrace
serves neither; gunicorn's TLS checks need a TLS listener, its HTTP/2 checks an h2 front),
gunicorn's `X-Forwarded-For` header check (nginx's proxy_pass adds it; uwsgi_pass passes
REMOTE_ADDR instead, which the scope's `client` shows), and the duplicated async-client variants
(the same requests through httpx's async API; here concurrent requests use threads).

The WebSocket checks run only when the server answers a WebSocket handshake with 101 (the
module-level probe below, per front): they are written now and run once WebSockets land.

Beyond gunicorn's list, issue #15's acceptance items: client disconnect seen mid-request,
`--lifespan on` startup failure, a full-duplex 1 MiB echo, one worker holding concurrent
requests, and a real Django project. Checks that found a bug in this branch are separate test
functions named for the behaviour they expect (the router ones: repeated request headers,
concurrency and client disconnects through `--http`; the lifespan-failure exit).

Apps: tests/apps/asgi_compliance.py (the raw ASGI testbed), asgi_compliance_frameworks.py
(Starlette and FastAPI mounted side by side), asgi_compat_contract.py (the framework contract
in Starlette and FastAPI) and django_asgi/ (a Django project, with the contract in
djasgi.contract)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests
from support import (
    APPS,
    Conn,
    app,
    build_request,
    children,
    free_port,
    headrace_cmd,
    run_headrace,
    server_env,
    wait_until,
)

TESTBED = app("asgi_compliance.py")
FRONT_OPT = {"direct": "--http-socket", "router": "--http"}
MODES = {"preloaded": [], "lazy": ["--lazy-apps"]}
TIMEOUT = 15


# --- the WebSocket probe ------------------------------------------------------------------


def _speaks_websocket(front: str) -> bool:
    """Start headrace with the testbed on `front`, send one WebSocket handshake, and say
    whether it was answered 101. Bounded: 15 s to start, 5 s for the answer; the server is
    stopped by PID (SIGTERM, then SIGKILL for it and its children)."""
    port = free_port()
    try:
        proc = subprocess.Popen(
            [*headrace_cmd(), FRONT_OPT[front], f"127.0.0.1:{port}", "--wsgi-file", TESTBED],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=server_env(),
        )
    except OSError:
        return False
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    answer = b""
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(handshake)
                    answer = s.recv(64)
                if answer:
                    break
            except OSError:
                time.sleep(0.1)
    finally:
        kids = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return answer.startswith(b"HTTP/1.1 101")


WS_SUPPORT = {front: _speaks_websocket(front) for front in FRONT_OPT}


def ws_fronts() -> list:
    return [
        pytest.param(
            front,
            marks=pytest.mark.skipif(
                not WS_SUPPORT[front],
                reason=f"headrace does not answer a WebSocket handshake with 101 on {front} yet",
            ),
        )
        for front in FRONT_OPT
    ]


# --- servers ------------------------------------------------------------------------------


class Bed:
    """One running headrace for a module: where it listens and its log."""

    def __init__(self, srv, port: int, front: str, mode: str):
        self.srv = srv
        self.port = port
        self.front = front
        self.mode = mode
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        return requests.get(self.url(path), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        return requests.post(self.url(path), **kw)

    def raw(self, data: bytes, method: str = "GET"):
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
            c = Conn(s)
            c.send(data)
            return c.read_response(method)

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def serve(factory, front: str, mode: str, *args: str, probe: str = "/health") -> Bed:
    port = free_port()
    srv = factory(FRONT_OPT[front], f"127.0.0.1:{port}", *args, *MODES[mode],
                  probe=probe, port=port, bind=False)
    return Bed(srv, port, front, mode)


def served(factory, front: str, mode: str, *args: str, probe: str = "/health"):
    """A fixture body: serve, hand the bed out, then stop it (so a module's servers do not
    all run at once); a server that ignores SIGTERM fails the teardown."""
    bed = serve(factory, front, mode, *args, probe=probe)
    yield bed
    assert bed.srv.stop() is not None, f"headrace ignored SIGTERM; log:\n{bed.srv.tail()}"


BEDS = [("direct", "preloaded"), ("router", "preloaded"), ("direct", "lazy"), ("router", "lazy")]


@pytest.fixture(scope="module", params=BEDS, ids=["-".join(b) for b in BEDS])
def bed(request, headrace_module) -> Iterator[Bed]:
    """The raw testbed on every front, preloaded and lazy (shared by the module's tests)."""
    front, mode = request.param
    yield from served(headrace_module, front, mode, "--wsgi-file", TESTBED)


@pytest.fixture(scope="module", params=list(FRONT_OPT))
def front_bed(request, headrace_module) -> Iterator[Bed]:
    """The raw testbed, preloaded, on each front (for the heavier checks)."""
    yield from served(headrace_module, request.param, "preloaded", "--wsgi-file", TESTBED)


@pytest.fixture(scope="module", params=list(MODES))
def direct_bed(request, headrace_module) -> Iterator[Bed]:
    """The raw testbed on the direct front, preloaded and lazy."""
    yield from served(headrace_module, "direct", request.param, "--wsgi-file", TESTBED)


@pytest.fixture(scope="module", params=list(MODES))
def router_bed(request, headrace_module) -> Iterator[Bed]:
    """The raw testbed behind the router, preloaded and lazy."""
    yield from served(headrace_module, "router", request.param, "--wsgi-file", TESTBED)


@pytest.fixture(scope="module")
def ws_beds(headrace_module) -> dict[str, Bed]:
    """The raw testbed on each front that speaks WebSocket (started on first use)."""
    return {
        front: serve(headrace_module, front, "preloaded", "--wsgi-file", TESTBED)
        for front in FRONT_OPT
        if WS_SUPPORT[front]
    }


def parallel(fn, args, workers: int = 10) -> list:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, args))


# =========================================================================================
# HTTP (gunicorn: test_http_compliance.py)
# =========================================================================================


class TestBasicHTTPRequests:
    def test_root_endpoint(self, bed):
        r = bed.get("/")
        assert r.status_code == 200 and r.json()["app"] == "ASGI Compliance Testbed"

    def test_health_endpoint(self, bed):
        r = bed.get("/health")
        assert r.status_code == 200 and r.text == "OK"

    def test_http_app_root(self, bed):
        r = bed.get("/http/")
        assert r.status_code == 200 and r.text == "Hello, ASGI!"

    def test_not_found(self, bed):
        assert bed.get("/http/nonexistent").status_code == 404


class TestHTTPMethods:
    @pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    def test_method_reaches_the_scope(self, bed, method):
        r = requests.request(method, bed.url("/http/method"), timeout=TIMEOUT)
        assert r.status_code == 200 and r.json() == {"method": method}

    def test_head_method_returns_no_body(self, bed):
        # gunicorn checks the body is empty; on a raw keep-alive connection this also shows
        # that no body bytes leak into the next response.
        with socket.create_connection(("127.0.0.1", bed.port), timeout=TIMEOUT) as s:
            c = Conn(s)
            c.send(build_request("HEAD", "/http/") + build_request("GET", "/http/"))
            head = c.read_response("HEAD")
            assert head.status == 200 and head.body == b""
            assert head.header("content-length") == "12"
            after = c.read_response("GET")
            assert after.status == 200 and after.body == b"Hello, ASGI!"


class TestHTTPStatusCodes:
    @pytest.mark.parametrize(
        "code", [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 500, 502, 503]
    )
    def test_status_codes(self, bed, code):
        r = bed.get(f"/http/status?code={code}", allow_redirects=False)
        assert r.status_code == code
        if code in (204, 304):
            assert r.content == b""

    def test_invalid_status_code(self, bed):
        assert bed.get("/http/status?code=999").status_code == 400


class TestRequestBody:
    def test_echo_small_body(self, bed):
        r = bed.post("/http/echo", data=b"Hello, World!")
        assert r.status_code == 200 and r.content == b"Hello, World!"

    def test_echo_large_body(self, bed):
        body = os.urandom(1 << 20)
        r = bed.post("/http/echo", data=body)
        assert r.status_code == 200 and r.content == body

    def test_echo_empty_body(self, bed):
        r = bed.post("/http/echo", data=b"")
        assert r.status_code == 200 and r.content == b""

    @pytest.mark.parametrize(
        ("data", "kind"),
        [({"name": "test", "value": 123, "nested": {"key": "value"}}, "dict"),
         ([1, 2, 3, "four", {"five": 5}], "list")],
    )
    def test_post_json(self, bed, data, kind):
        r = bed.post("/http/post-json", json=data)
        assert r.status_code == 200 and r.json() == {"received": data, "type": kind}


class TestResponseBody:
    @pytest.mark.parametrize("size", [1 << 20, 500_000])
    def test_large_response(self, bed, size):
        r = bed.get(f"/http/large?size={size}")
        assert r.status_code == 200 and len(r.content) == size
        assert r.headers["content-length"] == str(size)


class TestRequestHeaders:
    def test_headers_received(self, bed):
        r = bed.get("/http/headers",
                    headers={"X-Custom-Header": "custom-value", "X-Another-Header": "another"})
        h = r.json()
        assert h["x-custom-header"] == "custom-value" and h["x-another-header"] == "another"

    def test_host_header(self, bed):
        assert "host" in bed.get("/http/headers").json()

    def test_user_agent_header(self, bed):
        h = bed.get("/http/headers", headers={"User-Agent": "TestClient/1.0"}).json()
        assert h["user-agent"] == "TestClient/1.0"

    def test_content_type_header(self, bed):
        r = bed.post("/http/headers", data=b"test",
                     headers={"Content-Type": "application/octet-stream"})
        assert r.json()["content-type"] == "application/octet-stream"


def test_repeated_request_header_reaches_the_scope_twice(bed):
    """Not in gunicorn's list (its app handles repeats): ASGI 2.5, HTTP connection scope,
    `headers`: "Duplicates are possible and must be preserved in the message as received",
    in order."""
    r = bed.raw(build_request("GET", "/http/headers", headers=[("X-Dup", "a"), ("X-Dup", "b")]))
    assert json.loads(r.body)["x-dup"] == ["a", "b"]


class TestResponseHeaders:
    def test_content_type_response(self, bed):
        assert "application/json" in bed.get("/http/headers").headers["content-type"]

    def test_content_length_response(self, bed):
        assert bed.get("/http/").headers["content-length"] == "12"


class TestASGIScope:
    def scope(self, bed, path="/http/scope", method="GET"):
        r = requests.request(method, bed.url(path), timeout=TIMEOUT)
        assert r.status_code == 200
        return r.json()

    def test_scope_type_and_versions(self, bed):
        s = self.scope(bed)
        assert s["type"] == "http"
        assert s["asgi"]["version"] == "3.0"
        assert s["http_version"] in ("1.0", "1.1", "2")

    def test_scope_method(self, bed):
        assert self.scope(bed, method="POST")["method"] == "POST"

    def test_scope_scheme(self, bed):
        assert self.scope(bed)["scheme"] == "http"

    def test_scope_path(self, bed):
        # gunicorn's testbed rewrites the path under its prefix router; this one does not,
        # so the full path is the check.
        s = self.scope(bed)
        assert s["path"] == "/http/scope" and s["raw_path"] == "/http/scope"
        assert s["root_path"] == ""

    def test_scope_query_string(self, bed):
        s = self.scope(bed, "/http/scope?foo=bar&baz=qux")
        assert s["query_string"] == "foo=bar&baz=qux" and s["types"]["query_string"] == "bytes"

    def test_scope_headers_are_pairs_of_bytes(self, bed):
        s = self.scope(bed)
        assert all(len(h) == 2 for h in s["headers"])
        assert all(k == k.lower() for k, _ in s["headers"])
        assert s["types"]["header_name"] == "bytes"

    def test_scope_server(self, bed):
        s = self.scope(bed)
        assert len(s["server"]) == 2 and s["types"]["server_port"] == "int"

    def test_scope_client(self, bed):
        s = self.scope(bed)
        assert s["client"][0] == "127.0.0.1" and s["types"]["client_port"] == "int"

    def test_scope_state_present(self, bed):
        assert "main_app_started" in self.scope(bed)["state_keys"]


class TestQueryStrings:
    def test_simple_query(self, bed):
        assert bed.get("/http/query?name=test").json()["params"] == {"name": "test"}

    def test_multiple_params(self, bed):
        assert bed.get("/http/query?a=1&b=2&c=3").json()["params"] == {"a": "1", "b": "2",
                                                                        "c": "3"}

    def test_empty_query(self, bed):
        assert bed.get("/http/query").json() == {"raw": "", "params": {}}

    def test_url_encoded_query(self, bed):
        assert bed.get("/http/query?name=hello%20world").json()["raw"] == "name=hello%20world"


class TestCookies:
    def test_set_cookie(self, bed):
        r = bed.get("/http/cookies?set=session%3Dabc123")
        assert r.headers["set-cookie"] == "session=abc123"

    def test_receive_cookie(self, bed):
        r = bed.get("/http/cookies", cookies={"session": "test123"})
        assert r.json()["request_cookies"] == {"session": "test123"}


class TestRedirects:
    @pytest.mark.parametrize("status", [301, 302, 307])
    def test_redirect(self, bed, status):
        r = bed.get(f"/http/redirect?to=/http/&status={status}", allow_redirects=False)
        assert r.status_code == status and r.headers["location"] == "/http/"


class TestConnections:
    def test_multiple_requests_same_connection(self, bed):
        with socket.create_connection(("127.0.0.1", bed.port), timeout=TIMEOUT) as s:
            c = Conn(s)
            for _ in range(5):
                c.send(build_request("GET", "/http/"))
                r = c.read_response()
                assert r.status == 200 and r.body == b"Hello, ASGI!"

    def test_concurrent_requests(self, bed):
        codes = parallel(lambda _: bed.get("/http/method").status_code, range(20))
        assert codes == [200] * 20


class TestErrorHandling:
    def test_invalid_json_body(self, bed):
        r = bed.post("/http/post-json", data=b"not valid json",
                     headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "Invalid JSON" in r.text

    def test_method_not_allowed(self, bed):
        assert bed.get("/http/post-json").status_code == 405


# =========================================================================================
# Streaming (gunicorn: test_streaming_compliance.py)
# =========================================================================================


def stream_pieces(bed: Bed, path: str, method: str = "GET", **kw) -> list[bytes]:
    """The body as the client receives it, piece by piece (what arrived per read)."""
    with requests.request(method, bed.url(path), stream=True, timeout=TIMEOUT, **kw) as r:
        assert r.status_code == 200
        return [p for p in r.iter_content(chunk_size=None) if p]


class TestBasicStreaming:
    def test_streaming_endpoint(self, bed):
        r = bed.get("/stream/streaming")
        assert r.status_code == 200 and "Chunk" in r.text

    def test_streaming_multiple_chunks(self, bed):
        lines = bed.get("/stream/streaming?chunks=5").text.strip().split("\n")
        assert lines == [f"Chunk {i} of 5" for i in range(1, 6)]

    def test_streaming_single_chunk(self, bed):
        assert bed.get("/stream/streaming?chunks=1").text == "Chunk 1 of 1\n"

    def test_streamed_response_is_chunked(self, bed):
        # gunicorn only checks the response completes; with no Content-Length on HTTP/1.1 the
        # body must be chunk-framed (RFC 9112 section 6.1), which the raw client checks.
        r = bed.raw(build_request("GET", "/stream/streaming?chunks=3"))
        assert r.chunked and r.complete and r.header("content-length") is None
        assert r.body == b"Chunk 1 of 3\nChunk 2 of 3\nChunk 3 of 3\n"


class TestChunkedStreaming:
    def test_stream_chunks_received(self, bed):
        body = b"".join(stream_pieces(bed, "/stream/streaming?chunks=3")).decode()
        assert "Chunk 1" in body and "Chunk 3" in body

    def test_stream_variable_chunk_sizes(self, bed):
        body = b"".join(stream_pieces(bed, "/stream/chunked?sizes=100,500,200"))
        assert body == b"\x00" * 100 + b"\x01" * 500 + b"\x02" * 200

    def test_stream_lines(self, bed):
        with bed.get("/stream/streaming?chunks=5", stream=True) as r:
            lines = [ln for ln in r.iter_lines() if ln.strip()]
        assert len(lines) == 5


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        ev = {}
        for line in block.strip().split("\n"):
            name, sep, value = line.partition(": ")
            if sep:
                ev[name] = value
        if ev:
            events.append(ev)
    return events


class TestServerSentEvents:
    def test_sse_content_type(self, bed):
        r = bed.get("/stream/sse?events=1")
        assert "text/event-stream" in r.headers["content-type"]

    def test_sse_event_format(self, bed):
        events = parse_sse(bed.get("/stream/sse?events=3&delay=0.1").text)
        assert [e["id"] for e in events] == ["1", "2", "3"]
        assert all(e["event"] == "message" for e in events)

    def test_sse_data_is_json(self, bed):
        data = json.loads(parse_sse(bed.get("/stream/sse?events=1").text)[0]["data"])
        assert data["id"] == 1 and "timestamp" in data

    def test_sse_multiple_events(self, bed):
        assert bed.get("/stream/sse?events=5&delay=0.05").text.count("id: ") == 5

    def test_sse_events_arrive_before_the_stream_ends(self, bed):
        # gunicorn's SSE client reads events as they come; the check here is that the first
        # event reaches the client before the app has produced the last one (the app stamps
        # each event with the time it was made: same host, same clock).
        with bed.get("/stream/sse?events=3&delay=0.5", stream=True) as r:
            it = r.iter_content(chunk_size=None)
            first = next(it)
            got_first = time.time()
            rest = b"".join(it)
        events = parse_sse((first + rest).decode())
        assert len(events) == 3
        assert json.loads(events[0]["data"])["timestamp"] <= got_first
        assert json.loads(events[-1]["data"])["timestamp"] > got_first

    def test_sse_no_delay(self, bed):
        assert bed.get("/stream/sse?events=10&delay=0").text.count("id:") == 10


class TestNDJSONStreaming:
    def test_ndjson_content_type(self, bed):
        assert "application/x-ndjson" in bed.get("/stream/ndjson?records=1").headers[
            "content-type"]

    def test_ndjson_format(self, bed):
        lines = bed.get("/stream/ndjson?records=3&delay=0").text.strip().split("\n")
        records = [json.loads(ln) for ln in lines]
        assert [r["id"] for r in records] == [1, 2, 3]
        assert all("timestamp" in r and "data" in r for r in records)

    def test_ndjson_streaming(self, bed):
        with bed.get("/stream/ndjson?records=5&delay=0.1", stream=True) as r:
            assert len([ln for ln in r.iter_lines() if ln.strip()]) == 5


class TestSlowStreaming:
    def test_slow_stream_completes(self, bed):
        start = time.monotonic()
        r = bed.get("/stream/slow-stream?chunks=3&delay=0.2")
        assert time.monotonic() - start >= 0.4  # the app sleeps twice
        assert "Slow chunk 3/3" in r.text

    def test_slow_stream_chunks_arrive_as_made(self, bed):
        with bed.get("/stream/slow-stream?chunks=3&delay=0.3", stream=True) as r:
            lines = r.iter_lines()
            first = next(lines)
            got_first = time.time()
            rest = [ln for ln in lines if ln]
        assert b"Slow chunk 1/3" in first and b"Slow chunk 3/3" in rest[-1]
        made_last = float(rest[-1].split(b"]")[0].lstrip(b"["))
        assert made_last > got_first


class TestLargeStreaming:
    def test_large_stream_size(self, bed):
        r = bed.get(f"/stream/large-stream?size={1 << 20}")
        assert r.status_code == 200 and len(r.content) == 1 << 20

    def test_large_stream_chunked(self, bed):
        pieces = stream_pieces(bed, f"/stream/large-stream?size={512 * 1024}&chunk={64 * 1024}")
        assert sum(map(len, pieces)) == 512 * 1024 and len(pieces) >= 2


class TestEchoStreaming:
    def test_echo_stream_response(self, bed):
        r = bed.post("/stream/echo-stream", data=b"Hello, streaming world!")
        assert r.status_code == 200
        assert r.content.startswith(b"[chunk 1]: Hello, streaming world!\n")

    def test_echo_stream_large_body(self, bed):
        body = b"x" * (100 * 1024)
        r = bed.post("/stream/echo-stream", data=body)
        assert r.status_code == 200 and b"Total chunks received" in r.content
        # Every byte came back once, whatever pieces the server delivered it in.
        assert r.content.count(b"x") == len(body)


def read_chunk(rfile) -> bytes:
    """One chunk of a chunked response body (b"" for the last-chunk)."""
    size = int(rfile.readline(65537).split(b";")[0], 16)
    data = rfile.read(size)
    assert rfile.readline() == b"\r\n"
    return data


def test_one_mib_echo_streams_while_the_body_arrives(direct_bed):
    """Issue #15's streamed 1 MiB echo, full duplex: the app's first response piece reaches
    the client while the request body is still being sent (gunicorn's echo-stream endpoint,
    here with a body that is not all there yet). Direct front only: the `--http` router reads
    a whole request before it hands it to a worker (DESIGN.md, "http router"), so there the
    response cannot start first; tests/test_asgi.py streams 1 MiB through it."""
    import threading

    bed = direct_bed
    # Letters only: no "[" or "]" in the data, so the echo's "[chunk N]: " frames parse.
    pieces = [bytes([97 + i]) * (64 * 1024) for i in range(16)]
    with socket.create_connection(("127.0.0.1", bed.port), timeout=TIMEOUT) as s:
        rfile = s.makefile("rb")
        s.sendall(build_request("POST", "/stream/echo-stream",
                                headers=[("Transfer-Encoding", "chunked")], content_length=False)
                  + b"%x\r\n%s\r\n" % (len(pieces[0]), pieces[0]))
        status = rfile.readline()
        assert status.startswith(b"HTTP/1.1 200"), status
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += rfile.readline()
        assert b"chunked" in head.lower()
        # The first echoed piece arrives before the client sent anything more.
        got = bytearray(read_chunk(rfile))
        while len(got) < len(pieces[0]) + 12:
            got += read_chunk(rfile)
        assert got.startswith(b"[chunk 1]: " + pieces[0][:1000])

        def send_rest():
            for p in pieces[1:]:
                s.sendall(b"%x\r\n%s\r\n" % (len(p), p))
            s.sendall(b"0\r\n\r\n")

        sender = threading.Thread(target=send_rest)
        sender.start()
        while True:
            c = read_chunk(rfile)
            if not c:
                break
            got += c
        sender.join(TIMEOUT)
    text = bytes(got)
    assert text.endswith(b"Total chunks received: %d\n" % text.count(b"]: "))
    # Every byte of the 1 MiB came back, in order, whatever pieces the server made of it.
    frames = text[: text.rindex(b"Total chunks received")]
    echoed = b"".join(part.split(b"]: ", 1)[1][:-1] for part in frames.split(b"[chunk ")[1:])
    assert echoed == b"".join(pieces)


class TestStreamingEdgeCases:
    def test_empty_stream(self, bed):
        r = bed.get("/stream/streaming?chunks=0")
        assert r.status_code == 200 and r.content == b""

    def test_single_byte_chunks(self, bed):
        assert b"".join(stream_pieces(bed, "/stream/chunked?sizes=1,1,1,1,1")) == bytes(range(5))


# =========================================================================================
# Lifespan (gunicorn: test_lifespan_compliance.py)
# =========================================================================================


class TestLifespan:
    def state(self, bed):
        r = bed.get("/lifespan/state")
        assert r.status_code == 200
        return r.json()

    def test_startup_complete_and_state_reaches_requests(self, bed):
        data = self.state(bed)
        assert data["scope_state_available"] is True
        st = data["scope_state"]
        assert st["main_app_started"] is True and st["startup_time"] is not None
        # The startup ran in the worker that serves the request (with --lazy-apps too).
        assert st["startup_pid"] == data["pid"]

    def test_health_after_startup(self, bed):
        assert bed.get("/health").text == "OK"

    def test_lifespan_info_endpoint(self, bed):
        info = bed.get("/lifespan/lifespan-info").json()
        assert info["lifespan_supported"] and info["scope_state_present"]
        assert info["db_connection_status"] == "active"

    def test_uptime_tracking(self, bed):
        info = bed.get("/info").json()
        assert info["started"] is True and info["uptime"] >= 0

    def test_counter_increments_multiple_times(self, bed):
        # gunicorn writes a top-level key of scope["state"] and expects the next request to
        # see it; the ASGI spec (2.5, "Lifespan state") gives each request a shallow copy, so
        # here the counter lives in a mutable object that lifespan put in the state.
        counts = [bed.get("/lifespan/counter").json()["counter"] for _ in range(5)]
        assert all(b > a for a, b in zip(counts, counts[1:]))

    def test_state_is_a_shallow_copy_per_request(self, bed):
        bed.get("/lifespan/counter")
        assert bed.get("/lifespan/top-level").json() == {"top_level_write": None}

    def test_concurrent_counter_access(self, bed):
        before = bed.get("/lifespan/counter").json()["counter"]
        got = parallel(lambda _: bed.get("/lifespan/counter").json()["counter"], range(10))
        assert sorted(got) == list(range(before + 1, before + 11))

    def test_root_and_not_found(self, bed):
        assert bed.get("/lifespan/").text == "Lifespan Test App"
        assert bed.get("/lifespan/unknown-path").status_code == 404


# =========================================================================================
# Concurrency (gunicorn: test_concurrency.py), on each front with the app preloaded
# =========================================================================================


def test_one_worker_runs_requests_concurrently(direct_bed):
    """Issue #15: every request is a Task on the worker's loop, so one worker holds many
    requests at once. Two requests meet inside the app (no timing involved)."""
    name = f"direct-{direct_bed.mode}"
    got = parallel(lambda _: direct_bed.get(f"/rendezvous?name={name}&n=2").text, range(2))
    assert got == ["met", "met"]


def test_router_gives_one_asgi_worker_concurrent_requests(router_bed):
    """The same behind the `--http` router: with one worker, two requests must be inside the
    app at once. (Measured on this branch: ten concurrent 1 s requests take 1 s direct and
    10 s through the router, one at a time.)"""
    name = f"router-{router_bed.mode}"
    got = parallel(lambda _: router_bed.get(f"/rendezvous?name={name}&n=2").text, range(2))
    assert got == ["met", "met"]


class TestConcurrency:
    def test_concurrent_simple_requests(self, front_bed):
        assert parallel(lambda _: front_bed.get("/http/").status_code, range(50)) == [200] * 50

    def test_concurrent_echo_requests(self, front_bed):
        def echo(i):
            body = f"request-{i}-".encode() * 100
            return front_bed.post("/http/echo", data=body).content == body

        assert all(parallel(echo, range(20)))

    def test_concurrent_different_endpoints(self, front_bed):
        paths = ["/http/", "/http/headers", "/http/scope", "/health"] * 5
        assert parallel(lambda p: front_bed.get(p).status_code, paths) == [200] * 20

    def test_concurrent_with_delays(self, front_bed):
        # Ten requests sleeping in the app at once, on one worker's event loop.
        got = parallel(lambda _: front_bed.get("/http/delay?seconds=0.3").json(), range(10))
        assert got == [{"delayed": 0.3}] * 10

    def test_streaming_and_http_concurrent(self, front_bed):
        def one(i):
            if i % 2:
                return front_bed.get("/stream/streaming?chunks=5").text.count("Chunk") == 5
            return front_bed.get("/http/").text == "Hello, ASGI!"

        assert all(parallel(one, range(20)))

    def test_many_requests_single_client(self, front_bed):
        with requests.Session() as s:
            for i in range(50):
                assert s.get(front_bed.url(f"/http/?iter={i}"), timeout=TIMEOUT).status_code == 200

    def test_keep_alive_stress(self, front_bed):
        def session(_):
            with requests.Session() as s:
                return [s.get(front_bed.url(p), timeout=TIMEOUT).status_code
                        for p in ("/http/", "/http/headers") * 10]

        assert all(codes == [200] * 20 for codes in parallel(session, range(5)))

    def test_burst_requests(self, front_bed):
        # gunicorn accepts 90 of 100; every one is the bar here.
        codes = parallel(lambda _: front_bed.get("/http/").status_code, range(100), workers=20)
        assert codes == [200] * 100

    def test_concurrent_large_responses(self, front_bed):
        got = parallel(lambda _: len(front_bed.get("/stream/large-stream?size=102400").content),
                       range(10))
        assert got == [102400] * 10

    def test_rapid_connect_disconnect(self, front_bed):
        for _ in range(20):
            with requests.Session() as s:
                assert s.get(front_bed.url("/http/"), timeout=TIMEOUT).status_code == 200

    def test_mixed_success_and_error_paths(self, front_bed):
        cases = [("/http/", 200), ("/http/status?code=500", 500), ("/http/nonexistent", 404)] * 5
        got = parallel(lambda c: front_bed.get(c[0]).status_code, cases)
        assert got == [want for _, want in cases]


# =========================================================================================
# Behind nginx (gunicorn's TestProxy* classes: nginx in front of the server)
# =========================================================================================


@pytest.fixture(scope="module")
def nginx_bed(headrace_module):
    from test_nginx import Stack, nginx_binary

    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian package `nginx`)")
    st = Stack(headrace_module, "asgi_compliance.py", 1)
    st.start_nginx()
    yield st
    st.stop()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
class TestProxy:
    def test_proxy_basic_request(self, nginx_bed, kind):
        r = requests.get(nginx_bed.url(kind, "/http/"), timeout=TIMEOUT)
        assert r.status_code == 200 and r.text == "Hello, ASGI!"

    def test_proxy_client_address(self, nginx_bed, kind):
        # In place of gunicorn's X-Forwarded-For check: uwsgi_pass sends REMOTE_ADDR.
        s = requests.get(nginx_bed.url(kind, "/http/scope"), timeout=TIMEOUT).json()
        assert s["client"][0] == "127.0.0.1"

    def test_proxy_large_request(self, nginx_bed, kind):
        body = os.urandom(100 * 1024)
        r = requests.post(nginx_bed.url(kind, "/http/echo"), data=body, timeout=TIMEOUT)
        assert r.status_code == 200 and r.content == body

    def test_proxy_large_response(self, nginx_bed, kind):
        r = requests.get(nginx_bed.url(kind, "/http/large?size=1048576"), timeout=TIMEOUT)
        assert len(r.content) == 1048576

    def test_proxy_streaming(self, nginx_bed, kind):
        r = requests.get(nginx_bed.url(kind, "/stream/streaming?chunks=3"), timeout=TIMEOUT)
        assert r.text == "Chunk 1 of 3\nChunk 2 of 3\nChunk 3 of 3\n"

    def test_proxy_sse(self, nginx_bed, kind):
        r = requests.get(nginx_bed.url(kind, "/stream/sse?events=3&delay=0.1"), timeout=TIMEOUT)
        assert "text/event-stream" in r.headers["content-type"] and "id: 1" in r.text
        assert len(parse_sse(r.text)) == 3

    def test_proxy_large_stream(self, nginx_bed, kind):
        r = requests.get(nginx_bed.url(kind, f"/stream/large-stream?size={512 * 1024}"),
                         timeout=TIMEOUT)
        assert len(r.content) == 512 * 1024

    def test_proxy_slow_stream(self, nginx_bed, kind):
        r = requests.get(nginx_bed.url(kind, "/stream/slow-stream?chunks=3&delay=0.2"),
                         timeout=TIMEOUT)
        assert "Slow chunk 3/3" in r.text

    def test_proxy_path_query_body_and_keepalive(self, nginx_bed, kind):
        # gunicorn's tests/docker/test_asgi_uwsgi/test_uwsgi.sh (ASGI over the uwsgi protocol
        # behind nginx): path, query string, a form POST, then many requests.
        s = requests.get(nginx_bed.url(kind, "/http/scope?q=test&page=1"), timeout=TIMEOUT).json()
        assert s["path"] == "/http/scope" and s["query_string"] == "q=test&page=1"
        r = requests.post(nginx_bed.url(kind, "/http/echo"), data={"hello": "world"},
                          timeout=TIMEOUT)
        assert r.content == b"hello=world"
        with requests.Session() as session:
            for i in range(10):
                q = session.get(nginx_bed.url(kind, f"/http/query?request={i}"), timeout=TIMEOUT)
                assert q.json()["params"] == {"request": str(i)}

    def test_proxy_repeated_header(self, nginx_bed, kind):
        r = nginx_bed.connect(kind)
        with r:
            r.send(build_request("GET", "/http/headers", headers=[("X-Dup", "a"), ("X-Dup", "b")]))
            h = json.loads(r.read_response().body)
        assert h["x-dup"] == ["a", "b"]

    def test_proxy_lifespan(self, nginx_bed, kind):
        assert requests.get(nginx_bed.url(kind, "/health"), timeout=TIMEOUT).text == "OK"
        st = requests.get(nginx_bed.url(kind, "/lifespan/state"), timeout=TIMEOUT).json()
        assert st["scope_state"]["main_app_started"] is True
        assert "counter" in requests.get(nginx_bed.url(kind, "/lifespan/counter"),
                                         timeout=TIMEOUT).json()


# =========================================================================================
# Starlette and FastAPI (gunicorn: test_framework_integration.py)
# =========================================================================================

FRAMEWORK_BEDS = [("direct", "preloaded"), ("router", "preloaded"), ("direct", "lazy")]


@pytest.fixture(scope="module", params=FRAMEWORK_BEDS, ids=["-".join(b) for b in FRAMEWORK_BEDS])
def fw(request, headrace_module) -> Iterator[Bed]:
    front, mode = request.param
    yield from served(headrace_module, front, mode, "--pythonpath", str(APPS),
                      "--module", "asgi_compliance_frameworks:app")


class TestFrameworks:
    def test_framework_root_and_health(self, fw):
        assert set(fw.get("/").json()["apps"]) == {"starlette", "fastapi"}
        assert fw.get("/health").text == "OK"

    @pytest.mark.parametrize("name", ["starlette", "fastapi"])
    def test_json_with_query_params(self, fw, name):
        data = fw.get(f"/{name}/json?foo=bar&baz=123").json()
        assert data == {"framework": name, "query_params": {"foo": "bar", "baz": "123"}}

    @pytest.mark.parametrize("name", ["starlette", "fastapi"])
    def test_headers(self, fw, name):
        assert fw.get(f"/{name}/headers", headers={"X-Custom-Header": "v"}).json()[
            "x-custom-header"] == "v"

    @pytest.mark.parametrize("name", ["starlette", "fastapi"])
    def test_scope_under_a_mount(self, fw, name):
        s = fw.get(f"/{name}/scope?x=1").json()
        assert s["type"] == "http" and s["asgi"]["version"] == "3.0"
        assert s["query_string"] == "x=1"
        # Starlette's Mount moves the prefix to root_path and keeps the full path (ASGI 2.5).
        assert s["root_path"] == f"/{name}" and s["path"] == f"/{name}/scope"

    @pytest.mark.parametrize("name", ["starlette", "fastapi"])
    def test_streaming_chunks(self, fw, name):
        pieces = stream_pieces(fw, f"/{name}/streaming")
        assert b"".join(pieces).decode() == "".join(f"Chunk {i}\n" for i in range(1, 11))

    @pytest.mark.parametrize("name", ["starlette", "fastapi"])
    def test_lifespan_state_reaches_both(self, fw, name):
        first = fw.get(f"/{name}/state").json()
        second = fw.get(f"/{name}/state").json()
        assert first["db"] == "connected" and second["hits"] > first["hits"]

    def test_starlette_home_echo_health(self, fw):
        assert "Starlette" in fw.get("/starlette/").text
        assert fw.post("/starlette/echo", data="Hello Starlette!").text == "Hello Starlette!"
        assert fw.get("/starlette/health").json()["status"] == "ok"

    def test_fastapi_home_echo_health(self, fw):
        assert "FastAPI" in fw.get("/fastapi/").json()["message"]
        assert fw.post("/fastapi/echo", data="Hello FastAPI!").json() == {
            "echo": "Hello FastAPI!", "length": 14}
        assert fw.get("/fastapi/health").json() == {"status": "ok"}

    def test_fastapi_path_parameters(self, fw):
        assert fw.get("/fastapi/items/42").json() == {"item_id": 42, "query": None}
        assert fw.get("/fastapi/items/123?q=search").json() == {"item_id": 123, "query": "search"}
        assert fw.get("/fastapi/items/abc").status_code == 422

    def test_fastapi_create_item(self, fw):
        item = {"name": "Test Item", "price": 29.99, "tags": ["test", "item"]}
        assert fw.post("/fastapi/items/", json=item).json() == {"created": item}
        assert fw.post("/fastapi/items/", json={"name": "no price"}).status_code == 422

    def test_framework_independence(self, fw):
        for _ in range(3):
            assert fw.get("/starlette/health").status_code == 200
            assert fw.get("/fastapi/health").status_code == 200

    def test_unknown_path_is_404(self, fw):
        assert fw.get("/nowhere").status_code == 404


# =========================================================================================
# gunicorn's framework contract (tests/docker/asgi_framework_compat/tests/: test_http_scope.py,
# test_http_messages.py, test_lifespan_scope.py, test_streaming.py, test_websocket_scope.py):
# the same endpoints in Starlette, FastAPI and Django, each on both fronts
# =========================================================================================

CONTRACT_APPS = {
    "starlette": ("--pythonpath", str(APPS), "--module", "asgi_compat_contract:starlette_app"),
    "fastapi": ("--pythonpath", str(APPS), "--module", "asgi_compat_contract:fastapi_app"),
    "django": ("--pythonpath", str(APPS / "django_asgi"), "--module",
               "djasgi.contract:application"),
}
CONTRACT_BEDS = [(fw_, front) for fw_ in CONTRACT_APPS for front in FRONT_OPT]
ASGI_HTTP_SCOPE_KEYS = ["type", "asgi", "http_version", "method", "scheme", "path",
                        "query_string", "headers", "server"]
ASGI_WEBSOCKET_SCOPE_KEYS = ["type", "asgi", "http_version", "scheme", "path", "query_string",
                             "headers", "server"]


@pytest.fixture(scope="module", params=CONTRACT_BEDS, ids=["-".join(b) for b in CONTRACT_BEDS])
def contract(request, headrace_module) -> Iterator[Bed]:
    framework, front = request.param
    yield from served(headrace_module, front, "preloaded", *CONTRACT_APPS[framework])


class TestContractHttpScope:
    def scope(self, contract, path="/scope", **kw):
        r = contract.get(path, **kw)
        assert r.status_code == 200 and "application/json" in r.headers["content-type"]
        return r.json()

    def test_scope_basics(self, contract):
        s = self.scope(contract)
        assert s["type"] == "http"
        assert s["asgi"]["version"].startswith("3.")
        assert s["http_version"] in ("1.0", "1.1", "2", "3")
        assert s["method"] == "GET" and s["scheme"] in ("http", "https")
        assert s["path"] == "/scope" and s["root_path"] == ""

    def test_scope_query_string(self, contract):
        assert self.scope(contract, "/scope?foo=bar")["query_string"] == "foo=bar"
        assert self.scope(contract)["query_string"] == ""

    def test_scope_headers(self, contract):
        s = self.scope(contract, headers={"X-Custom-Header": "test"})
        assert all(isinstance(h, list) and len(h) == 2 for h in s["headers"])
        assert ["x-custom-header", "test"] in s["headers"]

    def test_headers_endpoint_returns_all_headers(self, contract):
        data = contract.get("/headers", headers={"X-Test-One": "value1",
                                                 "X-Test-Two": "value2"}).json()
        assert data["x-test-one"] == "value1" and data["x-test-two"] == "value2"

    def test_scope_server_and_client(self, contract):
        s = self.scope(contract)
        assert isinstance(s["server"], list) and len(s["server"]) == 2
        assert s["client"][0] == "127.0.0.1"

    def test_all_required_keys_present(self, contract):
        s = self.scope(contract)
        assert [k for k in ASGI_HTTP_SCOPE_KEYS if k not in s] == []


class TestContractHttpMessages:
    @pytest.mark.parametrize(
        ("body", "ctype"),
        [(b"", None), (b"Hello, World!", "text/plain"),
         (b"\x00\x01\x02\x03\xff\xfe", "application/octet-stream"),
         (b'{"key": "value", "number": 42}', "application/json")],
        ids=["empty", "text", "binary", "json"],
    )
    def test_echo(self, contract, body, ctype):
        headers = {"Content-Type": ctype} if ctype else {}
        r = contract.post("/echo", data=body, headers=headers)
        assert r.status_code == 200 and r.content == body

    def test_echo_large_body(self, contract):
        body = os.urandom(100 * 1024)
        r = contract.post("/echo", data=body, headers={"Content-Type": "application/octet-stream"})
        assert r.content == body

    @pytest.mark.parametrize("code", [200, 201, 204, 301, 400, 404, 500, 503])
    def test_status_codes(self, contract, code):
        assert contract.get(f"/status/{code}", allow_redirects=False).status_code == code

    def test_client_timeout_leaves_the_server_serving(self, contract):
        # gunicorn: a client that gives up on a slow response is handled gracefully.
        with pytest.raises(requests.Timeout):
            contract.get("/delay?seconds=3", timeout=0.5)
        assert contract.get("/health").text == "OK"

    @pytest.mark.parametrize("size", [100 * 1024, 1 << 20])
    def test_large_response_body(self, contract, size):
        assert len(contract.get(f"/large?size={size}").content) == size


class TestContractLifespan:
    def test_startup_ran_and_its_state_reaches_requests(self, contract):
        data = contract.get("/lifespan/state").json()
        assert data["startup_called"] is True
        assert isinstance(data["startup_time"], (int, float))
        assert data["custom_data"] == {"initialized": True}

    def test_counter_increments_by_one(self, contract):
        initial = contract.get("/lifespan/state").json()["counter"]
        values = [contract.get("/lifespan/counter").json()["counter"] for _ in range(3)]
        assert values == [initial + 1, initial + 2, initial + 3]
        assert contract.get("/lifespan/state").json()["counter"] == initial + 3


class TestContractStreaming:
    def test_streaming_response(self, contract):
        r = contract.raw(build_request("GET", "/streaming"))
        assert r.status == 200 and r.chunked and r.complete
        assert "text/plain" in r.header("content-type")
        assert r.body.decode().split() == [f"chunk-{i}" for i in range(10)]

    def test_sse(self, contract):
        r = contract.get("/sse")
        assert "text/event-stream" in r.headers["content-type"]
        events = parse_sse(r.text)
        assert [e["event"] for e in events] == ["message"] * 5 + ["done"]
        assert [json.loads(e["data"]) for e in events[:5]] == [{"count": i} for i in range(5)]


def contract_ws_beds() -> list:
    return [
        pytest.param(
            framework, front,
            marks=pytest.mark.skipif(
                not WS_SUPPORT[front],
                reason=f"headrace does not answer a WebSocket handshake with 101 on {front} yet",
            ),
        )
        # Django's contract has no WebSocket routes (they need Channels, not installed here).
        for framework in ("starlette", "fastapi")
        for front in FRONT_OPT
    ]


@pytest.fixture(scope="module")
def contract_ws(headrace_module):
    started: dict = {}

    def get(framework: str, front: str) -> Bed:
        if (framework, front) not in started:
            started[framework, front] = serve(headrace_module, front, "preloaded",
                                              *CONTRACT_APPS[framework])
        return started[framework, front]

    return get


@pytest.mark.parametrize(("framework", "front"), contract_ws_beds())
class TestContractWebSocket:
    def test_echo_text_and_binary(self, contract_ws, framework, front):
        bed = contract_ws(framework, front)
        with ws_connect(bed.ws("/ws/echo")) as ws:
            for msg in ("Hello, WebSocket!", "one", "two", "three"):
                ws.send(msg)
                assert ws.recv(timeout=TIMEOUT) == msg
        with ws_connect(bed.ws("/ws/echo-binary")) as ws:
            for data in (b"\x00\x01\x02\xff", os.urandom(64 * 1024)):
                ws.send(data)
                assert ws.recv(timeout=TIMEOUT) == data

    def test_scope(self, contract_ws, framework, front):
        with ws_connect(contract_ws(framework, front).ws("/ws/scope")) as ws:
            s = json.loads(ws.recv(timeout=TIMEOUT))
        assert s["type"] == "websocket" and s["path"] == "/ws/scope"
        assert isinstance(s["headers"], list)
        assert [k for k in ASGI_WEBSOCKET_SCOPE_KEYS if k not in s] == []

    def test_subprotocols(self, contract_ws, framework, front):
        bed = contract_ws(framework, front)
        with ws_connect(bed.ws("/ws/subprotocol"), subprotocols=["proto1", "proto2"]) as ws:
            assert json.loads(ws.recv(timeout=TIMEOUT))["requested"] == ["proto1", "proto2"]
        with ws_connect(bed.ws("/ws/subprotocol"), subprotocols=["myproto"]) as ws:
            assert json.loads(ws.recv(timeout=TIMEOUT))["selected"] == "myproto"
            assert ws.subprotocol == "myproto"

    @pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1008, 1011])
    def test_close_codes(self, contract_ws, framework, front, code):
        rcvd = ws_closed_code(contract_ws(framework, front), f"/ws/close?code={code}")
        assert rcvd is not None and rcvd.code == code

    def test_client_close(self, contract_ws, framework, front):
        from websockets.protocol import State

        with ws_connect(contract_ws(framework, front).ws("/ws/echo")) as ws:
            ws.send("test")
            assert ws.recv(timeout=TIMEOUT) == "test"
            ws.close(code=1000)
            # The server answered the close: the closing handshake completed.
            assert ws.protocol.state == State.CLOSED
            assert ws.close_code == 1000


# =========================================================================================
# WebSockets (gunicorn: test_websocket_compliance.py, the WebSocket half of
# test_concurrency.py and test_framework_integration.py), with the `websockets` client
# =========================================================================================


def ws_connect(url: str, **kw):
    from websockets.sync.client import connect

    return connect(url, open_timeout=TIMEOUT, close_timeout=5, **kw)


def ws_closed_code(bed: Bed, path: str):
    from websockets.exceptions import ConnectionClosed

    with ws_connect(bed.ws(path)) as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=TIMEOUT)
    return info.value.rcvd


@pytest.mark.parametrize("front", ws_fronts())
class TestWebSocket:
    def test_basic_connection_and_echo(self, ws_beds, front):
        with ws_connect(ws_beds[front].ws("/ws/echo")) as ws:
            for msg in ("test", "Hello, WebSocket!", "Hello \u4e16\u754c! \U0001f600", "",
                        "!@#$%^&*()_+-=[]{}|;':\",./<>?\n\t\r"):
                ws.send(msg)
                assert ws.recv(timeout=TIMEOUT) == msg

    def test_json_message(self, ws_beds, front):
        with ws_connect(ws_beds[front].ws("/ws/echo")) as ws:
            ws.send(json.dumps({"key": "value", "number": 42, "list": [1, 2, 3]}))
            assert json.loads(ws.recv(timeout=TIMEOUT)) == {"key": "value", "number": 42,
                                                             "list": [1, 2, 3]}

    def test_rapid_messages(self, ws_beds, front):
        with ws_connect(ws_beds[front].ws("/ws/echo")) as ws:
            for i in range(100):
                ws.send(f"message {i}")
            assert [ws.recv(timeout=TIMEOUT) for _ in range(100)] == [
                f"message {i}" for i in range(100)]

    def test_binary_echo(self, ws_beds, front):
        with ws_connect(ws_beds[front].ws("/ws/echo-binary")) as ws:
            for data in (b"\x00\x01\x02\x03\x04\x05", bytes(range(256)) * 100, b"\x00\x00\x00"):
                ws.send(data)
                assert ws.recv(timeout=TIMEOUT) == data
            ws.send("hello")
            assert ws.recv(timeout=TIMEOUT) == b"hello"

    @pytest.mark.parametrize(
        ("offered", "selected"),
        [(["json"], "json"), (["wamp", "json"], "json"), (["json", "graphql-ws"], "graphql-ws"),
         (None, None)],
    )
    def test_subprotocols(self, ws_beds, front, offered, selected):
        kw = {"subprotocols": offered} if offered else {}
        with ws_connect(ws_beds[front].ws("/ws/subprotocol"), **kw) as ws:
            data = json.loads(ws.recv(timeout=TIMEOUT))
            assert data["selected"] == selected
            assert sorted(data["requested"]) == sorted(offered or [])
            assert ws.subprotocol == selected

    @pytest.mark.parametrize("code", [1000, 1001, 1002, 4001])
    def test_close_codes(self, ws_beds, front, code):
        # gunicorn's version passes when no close arrives; here the close must arrive.
        rcvd = ws_closed_code(ws_beds[front], f"/ws/close?code={code}")
        assert rcvd is not None and rcvd.code == code

    def test_close_with_reason(self, ws_beds, front):
        rcvd = ws_closed_code(ws_beds[front], "/ws/close?code=1000&reason=goodbye")
        assert rcvd.code == 1000 and rcvd.reason == "goodbye"

    def test_reject_connection(self, ws_beds, front):
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus) as info:
            ws_connect(ws_beds[front].ws("/ws/reject"))
        # ASGI spec: a close before accept is an HTTP 403.
        assert info.value.response.status_code == 403

    def test_scope(self, ws_beds, front):
        bed = ws_beds[front]
        with ws_connect(bed.ws("/ws/scope?foo=bar&baz=qux"),
                        additional_headers={"X-Custom-Header": "test-value"}) as ws:
            s = json.loads(ws.recv(timeout=TIMEOUT))
        assert s["type"] == "websocket" and "version" in s["asgi"]
        assert s["http_version"] in ("1.0", "1.1", "2")
        assert s["scheme"] == "ws" and s["path"] == "/ws/scope"
        assert s["query_string"] == "foo=bar&baz=qux"
        assert len(s["server"]) == 2 and s["client"][0] == "127.0.0.1"
        assert ["x-custom-header", "test-value"] in s["headers"]
        assert "main_app_started" in s["state_keys"]

    def test_large_messages(self, ws_beds, front):
        bed = ws_beds[front]
        with ws_connect(bed.ws("/ws/large?size=65536")) as ws:
            assert ws.recv(timeout=TIMEOUT) == "x" * 65536
            ws.send("y" * 100_000)
            assert json.loads(ws.recv(timeout=TIMEOUT))["received_length"] == 100_000
        for size in (1, 100, 1000, 10_000, 50_000):
            with ws_connect(bed.ws(f"/ws/large?size={size}")) as ws:
                assert len(ws.recv(timeout=TIMEOUT)) == size

    @pytest.mark.parametrize("count", [3, 5])
    def test_broadcast(self, ws_beds, front, count):
        with ws_connect(ws_beds[front].ws(f"/ws/broadcast?count={count}")) as ws:
            ws.send("test message")
            got = [json.loads(ws.recv(timeout=TIMEOUT)) for _ in range(count)]
        assert got == [{"copy": i + 1, "of": count, "message": "test message"}
                       for i in range(count)]

    def test_delayed_response(self, ws_beds, front):
        with ws_connect(ws_beds[front].ws("/ws/delay?seconds=0.5")) as ws:
            start = time.monotonic()
            ws.send("ping")
            data = json.loads(ws.recv(timeout=5))
            assert time.monotonic() - start >= 0.4
        assert data == {"delayed_by": 0.5, "message": "ping"}

    def test_fragmented_message_is_reassembled(self, ws_beds, front):
        with ws_connect(ws_beds[front].ws("/ws/fragmented")) as ws:
            assert "info" in json.loads(ws.recv(timeout=TIMEOUT))
            # A message sent as three frames (an iterable makes the client fragment it).
            ws.send(["complete", " ", "message"])
            data = json.loads(ws.recv(timeout=TIMEOUT))
        assert data == {"received": "complete message", "length": 16, "type": "text"}

    def test_unknown_path_is_accepted_then_closed(self, ws_beds, front):
        from websockets.exceptions import ConnectionClosed

        with ws_connect(ws_beds[front].ws("/ws/unknown-path")) as ws:
            assert json.loads(ws.recv(timeout=TIMEOUT))["error"] == "Unknown path"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=TIMEOUT)

    def test_concurrent_connections(self, ws_beds, front):
        bed = ws_beds[front]

        def echo(i):
            with ws_connect(bed.ws("/ws/echo")) as ws:
                for j in range(10):
                    ws.send(f"task-{i}-{j}")
                    if ws.recv(timeout=TIMEOUT) != f"task-{i}-{j}":
                        return False
            return True

        assert all(parallel(echo, range(10)))

    def test_http_and_websocket_concurrent(self, ws_beds, front):
        bed = ws_beds[front]

        def one(i):
            if i % 2:
                return bed.get("/http/").text == "Hello, ASGI!"
            with ws_connect(bed.ws("/ws/echo")) as ws:
                ws.send("mixed")
                return ws.recv(timeout=TIMEOUT) == "mixed"

        assert all(parallel(one, range(20)))

    def test_ping_is_answered(self, ws_beds, front):
        # RFC 6455 section 5.5.2: a ping gets a pong with the same payload, at protocol level.
        with ws_connect(ws_beds[front].ws("/ws/echo")) as ws:
            assert ws.ping(b"are you there").wait(TIMEOUT)
            ws.send("still talking")
            assert ws.recv(timeout=TIMEOUT) == "still talking"

    def test_rapid_close_reconnect(self, ws_beds, front):
        for i in range(5):
            with ws_connect(ws_beds[front].ws("/ws/echo")) as ws:
                ws.send(f"iteration {i}")
                assert ws.recv(timeout=TIMEOUT) == f"iteration {i}"

    def test_frameworks_websocket_echo(self, headrace, front):
        port = free_port()
        headrace(FRONT_OPT[front], f"127.0.0.1:{port}", "--pythonpath", str(APPS),
                 "--module", "asgi_compliance_frameworks:app", probe="/health", port=port,
                 bind=False)
        for name, label in (("starlette", "Starlette"), ("fastapi", "FastAPI")):
            with ws_connect(f"ws://127.0.0.1:{port}/{name}/ws/echo") as ws:
                ws.send(f"hello {name}")
                assert ws.recv(timeout=TIMEOUT) == f"{label} echo: hello {name}"


# =========================================================================================
# Issue #15 acceptance beyond gunicorn's list: client disconnect, lifespan failure
# =========================================================================================


def disconnect_record(bed: Bed, tag: str, body: bytes = b"abc") -> str:
    """POST to /disconnect (the app reads the body, then awaits receive() for at most 5 s),
    close the client socket while the app is still running, and return what the app recorded:
    [body length, what receive() returned ("timeout" if nothing came), what send() did]."""
    record = bed.srv.record / f"disconnect-{tag}"
    s = socket.create_connection(("127.0.0.1", bed.port), timeout=TIMEOUT)
    try:
        s.sendall(build_request("POST", f"/disconnect?tag={tag}&wait=5", body=body))
        time.sleep(0.3)
        assert not record.exists(), "the app ended before the client went away"
    finally:
        s.close()
    wait_until(record.exists, 10, "the app to record the disconnect")
    wait_until(lambda: record.read_text().endswith("\n"), 5, "the record to be written")
    return record.read_text().split()


def test_client_disconnect_is_seen_mid_request(direct_bed):
    """Issue #15: the app, still running and awaiting receive() after the body, gets
    `http.disconnect` when the client closes; send() then raises an OSError subclass (ASGI
    2.5); the worker serves on."""
    bed = direct_bed
    body_len, event, after = disconnect_record(bed, f"direct-{bed.mode}")
    assert body_len == "3"
    assert event == "http.disconnect"
    assert after.startswith("send-raised-"), after
    assert bed.get("/health").text == "OK"


def test_router_passes_a_client_disconnect_to_the_app(router_bed):
    """The same through the `--http` router: the client closes its connection to the router
    while the app awaits receive(); the app must get `http.disconnect` (the router has to end
    or flag the request on its link to the worker)."""
    bed = router_bed
    body_len, event, after = disconnect_record(bed, f"router-{bed.mode}")
    assert body_len == "3"
    assert event == "http.disconnect"
    assert after.startswith("send-raised-"), after
    assert bed.get("/health").text == "OK"


FAIL_APP = """
import os
async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        msg = await receive()
        if os.environ.get("FAIL_HOW") == "raise":
            raise RuntimeError("cannot reach the database at db:5432")
        await send({"type": "lifespan.startup.failed",
                    "message": "cannot reach the database at db:5432"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})
"""


@pytest.mark.parametrize("how", ["raise", "failed-message"])
@pytest.mark.parametrize("mode", list(MODES))
def test_lifespan_on_startup_failure_exits_with_the_apps_message(tmp_path, how, mode):
    """Issue #15: "Lifespan: startup before the first request (failure: exit with the app's
    message)". With `--lifespan on`, an app whose startup fails makes headrace exit (non-zero)
    with the app's message in its output, instead of serving or retrying forever."""
    path = tmp_path / "fail_startup.py"
    path.write_text(FAIL_APP)
    port = free_port()
    r = run_headrace(
        ["--http-socket", f"127.0.0.1:{port}", "--wsgi-file", str(path), "--lifespan", "on",
         *MODES[mode]],
        timeout=15,
        env={"FAIL_HOW": how},
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "cannot reach the database at db:5432" in out
    if how == "raise":
        assert "RuntimeError" in out and "Traceback" in out


# =========================================================================================
# Django ASGI: a real project (tests/apps/django_asgi) on both fronts
# =========================================================================================

DJANGO_BEDS = [("direct", "preloaded"), ("router", "preloaded"), ("direct", "lazy")]


@pytest.fixture(scope="module", params=DJANGO_BEDS, ids=["-".join(b) for b in DJANGO_BEDS])
def dj(request, headrace_module) -> Iterator[Bed]:
    front, mode = request.param
    yield from served(headrace_module, front, mode, "--pythonpath", str(APPS / "django_asgi"),
                      "--module", "djasgi.asgi:application", probe="/pid/")


class TestDjango:
    def test_async_view(self, dj):
        r = dj.get("/async/?a=1")
        assert r.status_code == 200
        data = r.json()
        assert data["kind"] == "async" and data["loop_running"] is True
        assert data["path"] == "/async/" and data["query"] == {"a": "1"}
        # An async view runs on the worker's event loop, in its main thread.
        assert data["thread"] == data["main_thread"]

    def test_sync_view_runs_in_a_thread(self, dj):
        data = dj.get("/sync/").json()
        assert data["kind"] == "sync"
        # Django (asgiref's sync_to_async) runs it off the event loop's thread.
        assert data["in_event_loop_thread"] is False
        assert data["thread"] != data["main_thread"]

    def test_post_body(self, dj):
        import hashlib

        body = os.urandom(1 << 20)
        r = dj.post("/echo/", data=body, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200
        assert r.json() == {"method": "POST", "length": len(body),
                            "sha256": hashlib.sha256(body).hexdigest(),
                            "content_type": "application/octet-stream"}

    def test_streaming_response_from_an_async_iterator(self, dj):
        r = dj.raw(build_request("GET", "/stream/?n=6"))
        assert r.status == 200 and r.chunked and r.complete
        assert r.body == b"".join(f"part {i}\n".encode() for i in range(6))

    def test_not_found(self, dj):
        assert dj.get("/no/such/page/").status_code == 404

    def test_exception_is_500_with_traceback_and_the_worker_lives(self, dj):
        pid = dj.get("/pid/").text
        r = dj.get("/boom/")
        assert r.status_code == 500
        log = dj.srv.wait_log("RuntimeError: django view exploded on purpose")
        assert "Traceback" in log
        assert dj.get("/pid/").text == pid
        assert dj.get("/async/").status_code == 200

    def test_django_refuses_lifespan_and_is_served_without_it(self, dj):
        dj.srv.wait_log("does not support lifespan")
