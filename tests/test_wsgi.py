"""PEP 3333 as the app sees it: environ, wsgi.input, wsgi.errors, file_wrapper, start_response
(exc_info, write, second call), response framing, close(), hop-by-hop headers, exceptions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

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


def recorded(srv, name):
    p = srv.record / name
    return p.read_text() if p.exists() else None


def wait_recorded(srv, name, prefix, timeout=10.0):
    return wait_until(
        lambda: (recorded(srv, name) or "").startswith(prefix) and recorded(srv, name),
        timeout, f"{name} to record {prefix!r} (it has {recorded(srv, name)!r})",
    )


def assert_same_worker(srv, worker_pid):
    r = srv.request(get("/pid"))
    assert r.status == 200 and int(r.body) == worker_pid, "worker was replaced"


# --- environ ------------------------------------------------------------------------------


def test_environ_get(srv):
    with srv.connect() as c:
        client_port = c.sock.getsockname()[1]
        c.send(get("/environ?a=1&b=%20x+y", headers=[
            ("X-Dup", "first"), ("X-Custom-Thing", "v"), ("X-Dup", "second"),
            ("User-Agent", "headrace-tests"), ("X-Spaces", "  padded value \t ")]))
        r = c.read_response()
    assert r.status == 200
    env = json.loads(r.body)
    assert env["_environ_type"] == "dict"
    assert env["_non_str_cgi_keys"] == [], "CGI variables must be native str"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20x+y"
    assert env["REQUEST_URI"] == "/environ?a=1&b=%20x+y"
    assert env["SERVER_NAME"]
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["HTTP_HOST"] == "127.0.0.1"
    assert env["HTTP_USER_AGENT"] == "headrace-tests"
    assert env["HTTP_X_CUSTOM_THING"] == "v"
    assert env["HTTP_X_DUP"] == "first, second"
    assert env["HTTP_X_SPACES"] == "padded value"
    assert env.get("CONTENT_LENGTH", "") in ("", "0")
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.multithread"] is False  # --threads 1
    assert isinstance(env["wsgi.multiprocess"], bool)
    assert env["wsgi.run_once"] is False
    for key in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper"):
        assert key in env


def test_environ_post(srv):
    body = b"a=1&b=2"
    r = srv.request(build_request("POST", "/environ", body=body, headers=[
        ("Content-Type", "application/x-www-form-urlencoded")]))
    env = json.loads(r.body)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["CONTENT_LENGTH"] == "7"
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env


def test_environ_http10_and_other_methods(srv):
    env = json.loads(srv.request(get("/environ", version="HTTP/1.0")).body)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        env = json.loads(srv.request(build_request(method, "/environ", body=b"x")).body)
        assert env["REQUEST_METHOD"] == method


def test_path_info_percent_decoded_as_latin1(srv):
    # The UTF-8 bytes of "é" (C3 A9), percent-encoded, reach PATH_INFO as the two latin-1
    # characters "\u00c3\u00a9" (PEP 3333: native strings hold bytes as latin-1).
    env = json.loads(srv.request(get("/environ/caf%C3%A9/a%20b?q=%C3%A9")).body)
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9/a b"
    assert env["REQUEST_URI"] == "/environ/caf%C3%A9/a%20b?q=%C3%A9"
    assert env["QUERY_STRING"] == "q=%C3%A9"
    env = json.loads(srv.request(get("/%65nviron")).body)
    assert env["PATH_INFO"] == "/environ"


def test_path_info_raw_non_ascii_bytes(srv):
    # A request-target is ASCII (RFC 9112 §3.2, RFC 3986). Raw UTF-8 is let through, as
    # clients do send it, and maps one byte to one latin-1 character like %-escapes do;
    # other raw bytes >= 0x80 are refused.
    raw = b"GET /environ/\xc3\xa9t\xc3\xa9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    r = srv.request(raw)
    assert r.status == 200
    assert json.loads(r.body)["PATH_INFO"] == "/environ/\u00c3\u00a9t\u00c3\u00a9"
    r = srv.request(b"GET /environ/\xe9t\xe9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert r.status == 400


# --- wsgi.input ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["read", "readn", "readline", "readlines", "iter", "big",
                                  "minus1", "none"])
def test_input_modes_content_length(srv, mode):
    body = b"line one\nline two\n\nlast line no newline" * 50
    r = srv.request(build_request("POST", f"/echo?mode={mode}&n=13", body=body))
    assert r.status == 200
    assert r.body == body
    assert r.header("X-After") == "0"


def test_input_readline_with_size(srv):
    r = srv.request(build_request("POST", "/readline-n", body=b"abcdef\nghi\njkl"))
    out = json.loads(r.body)
    assert out == {"first": "abc", "second": "def\n", "rest": ["ghi\n", "jkl"], "after": ""}


def test_input_large_body(srv):
    body = os.urandom(5 * 1024 * 1024)
    with srv.connect(timeout=30) as c:
        c.send(build_request("POST", "/echo?mode=readn&n=100000", body=body))
        r = c.read_response()
    assert r.status == 200
    assert r.body == body


def test_input_streamed_on_demand(srv):
    # The app must be called before the whole body is there: it reads 5 bytes and prints them,
    # and only then does the client send the rest.
    head = build_request("POST", "/stream-read", headers=[("Content-Length", "10")],
                         content_length=False)
    with srv.connect() as c:
        c.send(head + b"hello")
        srv.wait_log("STREAM-FIRST hello", timeout=10)
        c.send(b"world")
        r = c.read_response()
    assert r.body == b"hello|world"


def test_input_streamed_on_demand_chunked(srv):
    head = build_request("POST", "/stream-read", headers=[("Transfer-Encoding", "chunked")],
                         content_length=False)
    with srv.connect() as c:
        c.send(head + b"5\r\nfirst\r\n")
        srv.wait_log("STREAM-FIRST first", timeout=10)
        c.send(chunked(b"second"))
        r = c.read_response()
    assert r.body == b"first|second"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("mode", ["read", "readn"])
def test_input_raises_when_client_leaves_mid_body(srv, worker_pid, framing, mode):
    tag = f"gone-{framing}-{mode}"
    path = f"/upload-record?tag={tag}&mode={mode}"
    if framing == "content-length":
        head = build_request("POST", path, headers=[("Content-Length", "100000")],
                             content_length=False)
        partial = b"x" * 1000
    else:
        head = build_request("POST", path, headers=[("Transfer-Encoding", "chunked")],
                             content_length=False)
        partial = b"3e8\r\n" + b"x" * 1000 + b"\r\n"
    c = srv.connect()
    c.send(head + partial)
    wait_recorded(srv, f"upload-{tag}", "started")
    c.close()
    result = wait_until(
        lambda: (recorded(srv, f"upload-{tag}") or "started") != "started"
        and recorded(srv, f"upload-{tag}"),
        15, "the app to finish reading",
    )
    assert result.startswith("error "), (
        f"wsgi.input gave the app a short body as if complete: {result!r}"
    )
    assert_same_worker(srv, worker_pid)


# --- wsgi.errors --------------------------------------------------------------------------


def test_wsgi_errors_reach_the_log(srv):
    r = srv.request(get("/errors?msg=ERRORS-MARK-4711"))
    assert r.status == 200
    srv.wait_log("ERRORS-MARK-4711")


# --- response framing ---------------------------------------------------------------------


@pytest.mark.parametrize("path,body", [
    ("/list", b"hello world"), ("/tuple", b"abcd"), ("/empty", b""), ("/pid", None),
])
def test_known_length_bodies_get_content_length(srv, path, body):
    r = srv.request(get(path))
    assert r.status == 200
    assert not r.chunked
    assert r.header_count("Content-Length") == 1
    assert int(r.header("Content-Length")) == len(r.body)
    if body is not None:
        assert r.body == body


def test_generator_body_is_chunked(srv):
    r = srv.request(get("/gen"))
    assert r.status == 200
    assert r.chunked and r.complete
    assert r.header("Content-Length") is None
    assert r.body == b"".join(b"chunk%d\n" % i for i in range(5))


def test_generator_with_app_content_length_is_not_chunked(srv):
    r = srv.request(get("/gen-cl"))
    assert r.status == 200
    assert not r.chunked
    assert r.header("Content-Length") == "12"
    assert r.body == b"abcdefghijkl"


def test_write_callable(srv):
    assert srv.request(get("/write")).body == b"written-returned"
    assert srv.request(get("/write-only")).body == b"abcdef"


def test_response_headers_from_app_kept(srv):
    r = srv.request(get("/list"))
    assert r.header("Content-Type") == "text/plain"


@pytest.mark.parametrize("code", ["204", "304"])
def test_no_body_statuses(srv, code, worker_pid):
    with srv.connect() as c:
        c.send(get(f"/status?code={code}") + get("/pid"))
        r = c.read_response()
        assert r.status == int(code)
        assert int(c.read_response().body) == worker_pid


# --- wsgi.file_wrapper --------------------------------------------------------------------


@pytest.mark.parametrize("cl", ["", "1"])
def test_file_wrapper_real_file(srv, tmp_path, cl):
    data = os.urandom(3 * 1024 * 1024 + 17)
    f = tmp_path / "payload.bin"
    f.write_bytes(data)
    tag = f"fw{cl}"
    with srv.connect(timeout=30) as c:
        c.send(get(f"/file?path={f}&tag={tag}&cl={cl}"))
        r = c.read_response()
    assert r.status == 200
    assert r.body == data
    wait_recorded(srv, f"close-{tag}", "closed")


def test_file_wrapper_head_closes_file(srv, tmp_path):
    f = tmp_path / "head.bin"
    f.write_bytes(b"z" * 100_000)
    with srv.connect() as c:
        c.send(build_request("HEAD", f"/file?path={f}&tag=fwhead&cl=1") + get("/list"))
        h = c.read_response("HEAD")
        assert h.status == 200 and h.header("Content-Length") == "100000"
        assert c.read_response().body == b"hello world"
    wait_recorded(srv, "close-fwhead", "closed")


def test_file_wrapper_file_like_without_fileno(srv):
    r = srv.request(get("/filelike"))
    assert r.status == 200
    assert r.body == b"0123456789" * 10000


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_file_wrapper_uses_sendfile(srv, tmp_path, worker_pid):
    data = os.urandom(1024 * 1024)
    f = tmp_path / "sendfile.bin"
    f.write_bytes(data)
    out = tmp_path / "strace.out"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=sendfile,sendfile64,copy_file_range,splice",
         "-o", str(out), "-p", str(worker_pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        def traced():
            if tracer.poll() is not None:
                pytest.skip(f"strace cannot attach: {tracer.stderr.read().decode()[:200]}")
            with open(f"/proc/{worker_pid}/status") as s:
                return any(line.startswith("TracerPid:") and line.split()[1] != "0"
                           for line in s)
        wait_until(traced, 10, "strace to attach")

        # strace may still be setting up right after the attach: serve the file until the
        # trace shows the call (strace writes each line as the call returns), bounded.
        def served_with_sendfile():
            r = srv.request(get(f"/file?path={f}&tag=sf&cl=1"))
            assert r.body == data
            return out.exists() and "sendfile" in out.read_text()

        wait_until(served_with_sendfile, 10, "sendfile(2) in the trace while serving a file",
                   interval=0.1)
    finally:
        tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(5)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait(5)
    trace = out.read_text() if out.exists() else ""
    assert "sendfile" in trace, f"no sendfile(2) while serving a real file: {trace[:500]!r}"


# --- start_response semantics -------------------------------------------------------------


def test_exc_info_before_headers_replaces_status(srv):
    r = srv.request(get("/excinfo-before"))
    assert r.status == 500
    assert r.body == b"replaced"


def test_headers_sent_only_on_first_non_empty_chunk(srv):
    # The app yields b"" and then replaces its status with exc_info: legal, since the empty
    # chunk must not have sent the headers.
    r = srv.request(get("/excinfo-empty-first"))
    assert r.status == 503
    assert r.body == b"late-error-page"


def test_exc_info_after_headers_reraises_and_cuts(srv, worker_pid):
    with srv.connect() as c:
        c.send(get("/excinfo-after"))
        r = c.read_response()
        assert r.status == 200
        assert r.chunked
        assert not r.complete, "the body looks complete though the app failed mid-way"
        assert r.body == b"sent"
    what = recorded(srv, "excinfo-after") or ""
    assert what.startswith("raised"), f"start_response(exc_info) after headers: {what!r}"
    assert_same_worker(srv, worker_pid)


def test_second_start_response_without_exc_info_is_500(srv, worker_pid):
    r = srv.request(get("/twice"))
    assert r.status == 500, f"second start_response call silently accepted: {r.status}"
    assert b"second start_response was accepted" not in r.body
    assert_same_worker(srv, worker_pid)


HOP_BY_HOP = [
    ("Connection", "close"), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"), ("Proxy-Authenticate", "Basic"), ("Proxy-Authorization", "x"),
    ("TE", "trailers"), ("Trailers", "X-A"),
]


@pytest.mark.parametrize("name,value", HOP_BY_HOP, ids=[h[0] for h in HOP_BY_HOP])
def test_hop_by_hop_header_from_app_is_500(srv, worker_pid, name, value):
    r = srv.request(get(f"/hop?name={name}&value={value}"))
    assert r.status == 500, f"app set hop-by-hop header {name}; got {r.status}"
    assert b"should not be sent" not in r.body
    assert_same_worker(srv, worker_pid)


# --- exceptions and close() ---------------------------------------------------------------


def test_app_exception_is_500_with_traceback(srv, worker_pid):
    r = srv.request(get("/raise"))
    assert r.status == 500
    log = srv.wait_log("boom-before-headers")
    assert "Traceback" in log
    assert_same_worker(srv, worker_pid)


def test_app_exception_after_headers_cuts_chunked_body(srv, worker_pid):
    with srv.connect() as c:
        c.send(get("/raise-after"))
        r = c.read_response()
        assert r.status == 200
        assert r.chunked
        assert not r.complete, "terminating chunk sent although the app raised"
        assert r.body == b"first-chunk"
        assert c.closed_by_peer()
    log = srv.wait_log("boom-after-headers")
    assert "Traceback" in log
    assert_same_worker(srv, worker_pid)


@pytest.mark.parametrize("path,marker", [
    ("/raise-after-start", "boom-after-start-response"),
    ("/raise-before-first-yield", "boom-before-first-yield"),
])
def test_exception_before_any_body_is_500(srv, worker_pid, path, marker):
    # start_response was called, but no body byte went out: headers must not have been sent,
    # so the client gets a clean 500, not the app's 200.
    r = srv.request(get(path))
    assert r.status == 500, f"{path}: got {r.status}"
    srv.wait_log(marker)
    assert_same_worker(srv, worker_pid)


def test_str_body_is_an_error(srv, worker_pid):
    # PEP 3333: body chunks are bytes; a str is the app's error, answered 500.
    r = srv.request(get("/str-body"))
    assert r.status == 500
    assert b"a str, not bytes" not in r.body
    assert_same_worker(srv, worker_pid)


@pytest.mark.parametrize("kind", ["crlf", "non-latin1", "bytes", "status"])
def test_invalid_header_from_app_is_500(srv, worker_pid, kind):
    with srv.connect() as c:
        c.send(get(f"/bad-header?kind={kind}", headers=[("Connection", "close")]))
        raw = c.read_until_eof()
    assert b"\r\nInjected:" not in raw, f"response splitting: {raw[:300]!r}"
    assert raw.startswith(b"HTTP/1.1 500 "), f"{kind}: {raw[:200]!r}"
    assert_same_worker(srv, worker_pid)


def test_close_called_on_success(srv):
    r = srv.request(get("/close?tag=ok&mode=ok"))
    assert r.body == b"abc"
    wait_recorded(srv, "close-ok", "closed")


def test_close_called_when_iteration_raises(srv, worker_pid):
    with srv.connect() as c:
        c.send(get("/close?tag=raise&mode=raise"))
        try:
            c.read_response()
        except EOFError:
            pass
    wait_recorded(srv, "close-raise", "closed")
    assert_same_worker(srv, worker_pid)


def test_close_called_on_head(srv):
    r = srv.request(build_request("HEAD", "/close?tag=head&mode=ok"), method="HEAD")
    assert r.status == 200
    wait_recorded(srv, "close-head", "closed")


@pytest.mark.slow
def test_close_called_when_client_gone(srv, worker_pid):
    c = srv.connect()
    c.send(get("/close?tag=gone&mode=slow"))
    assert c.rfile.readline().startswith(b"HTTP/1.1 200")
    c.rfile.read(10000)
    c.close()
    wait_recorded(srv, "close-gone", "closed", timeout=15)
    assert_same_worker(srv, worker_pid)
