"""Static files (issue 11 item 3): static-map, static-map2, check-static, static-index,
static-gzip-all and static-expires-type, served by the workers in direct mode
(--http-socket) and by the router in --http mode, without calling the app: Content-Type,
HEAD, Range (206/416), ETag/Last-Modified with 304, never a file outside the mapped directory
(`..`, `%2e%2e`, symlinks out), and a missing file reaching the app. The shared-server suites
run with a WSGI and an ASGI app (an ASGI worker serves them the same way in direct mode)."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import os
import struct
import time

import pytest
from support import app, build_request, free_port

FRONTS = ["http-socket", "http"]
APPS = {"wsgi": app("static_app.py"), "asgi": app("static_app_asgi.py")}
#: (front, app kind) of the shared servers
SERVED = [(f, a) for a in APPS for f in FRONTS]
CSS = b"body { color: red }\n" * 50
BIG = hashlib.sha256(b"seed").digest() * (6 * 1024 * 1024 // 32 + 7)
SECRET = b"top secret, outside the mapped directory\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/static (mapped), root/secret (outside), root/static/escape -> ../secret."""
    root = tmp_path_factory.mktemp("static")
    static = root / "static"
    (static / "css").mkdir(parents=True)
    (static / "docs").mkdir()
    (static / "empty").mkdir()
    (static / "css" / "site.css").write_bytes(CSS)
    (static / "app.js").write_bytes(b"console.log(1)\n")
    (static / "app.js.gz").write_bytes(gzip.compress(b"console.log(1)\n"))
    (static / "pic.PNG").write_bytes(b"\x89PNG fake")
    (static / "data.unknownext").write_bytes(b"?")
    (static / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (static / "space name.txt").write_bytes(b"spaced")
    (static / "big.bin").write_bytes(BIG)
    (root / "secret").write_bytes(SECRET)
    os.symlink(root / "secret", static / "escape")
    os.symlink(static / "css" / "site.css", static / "inside-link.css")
    # static-map2 appends the whole path: /assets/x -> root/v2/assets/x
    (root / "v2" / "assets").mkdir(parents=True)
    (root / "v2" / "assets" / "two.txt").write_bytes(b"map2 file")
    return root


def start(factory, front, *args, kind="wsgi"):
    port = free_port()
    return factory(f"--{front}", f"127.0.0.1:{port}", "--wsgi-file", APPS[kind],
                   *args, port=port)


@pytest.fixture(scope="module", params=SERVED, ids=["-".join(p) for p in SERVED])
def srv(request, headrace_module, tree):
    front, kind = request.param
    return start(headrace_module, front,
                 "--static-map", f"/static={tree / 'static'}",
                 "--static-map2", f"/assets={tree / 'v2'}",
                 "--static-index", "index.html",
                 "--static-gzip-all",
                 "--static-expires-type", "text/css=3600", kind=kind)


def get(srv, path, headers=None, method="GET"):
    return srv.request(build_request(method, path, headers=headers), method=method)


def test_file_is_served_with_its_type(srv):
    r = get(srv, "/static/css/site.css")
    assert r.status == 200
    assert r.body == CSS
    assert r.header("Content-Type") == "text/css"
    assert r.header("Content-Length") == str(len(CSS))
    assert r.header("Accept-Ranges") == "bytes"
    assert r.header("Last-Modified")
    assert r.header("ETag").startswith('"')
    # static-expires-type text/css=3600: Expires only, as uWSGI.
    expires = email.utils.parsedate_to_datetime(r.header("Expires")).timestamp()
    assert abs(expires - (time.time() + 3600)) < 30
    assert r.header("Cache-Control") is None


@pytest.mark.parametrize("path,ctype,body", [
    ("/static/pic.PNG", "image/png", b"\x89PNG fake"),
    ("/static/data.unknownext", "application/octet-stream", b"?"),
    ("/static/space%20name.txt", "text/plain", b"spaced"),
    ("/static/inside-link.css", "text/css", CSS),
    ("/static/css/site.css?v=3", "text/css", CSS),
])
def test_types_and_names(srv, path, ctype, body):
    r = get(srv, path)
    assert (r.status, r.header("Content-Type"), r.body) == (200, ctype, body)
    assert (r.header("Expires") is not None) == (ctype == "text/css")


def test_head_has_headers_and_no_body(srv):
    with srv.connect() as c:
        c.send(build_request("HEAD", "/static/css/site.css"))
        r = c.read_response("HEAD")
        assert r.status == 200
        assert r.header("Content-Length") == str(len(CSS))
        assert r.header("Content-Type") == "text/css"
        # The connection stays usable and no body bytes were sent before the next response.
        c.send(build_request("GET", "/static/app.js"))
        r2 = c.read_response()
        assert (r2.status, r2.body) == (200, b"console.log(1)\n")


def test_keep_alive_and_pipelining_mix_static_and_app(srv):
    with srv.connect() as c:
        c.send(build_request("GET", "/static/app.js") + build_request("GET", "/")
               + build_request("GET", "/static/pic.PNG"))
        bodies = [c.read_response().body for _ in range(3)]
    assert bodies == [b"console.log(1)\n", b"app root", b"\x89PNG fake"]


@pytest.mark.parametrize("rng,start,end", [
    ("bytes=0-9", 0, 9),
    ("bytes=10-", 10, len(CSS) - 1),
    ("bytes=-5", len(CSS) - 5, len(CSS) - 1),
    ("bytes=100-100000", 100, len(CSS) - 1),
])
def test_range_206(srv, rng, start, end):
    r = get(srv, "/static/css/site.css", [("Range", rng)])
    assert r.status == 206
    assert r.header("Content-Range") == f"bytes {start}-{end}/{len(CSS)}"
    assert r.body == CSS[start:end + 1]
    assert r.header("Content-Length") == str(end - start + 1)


def test_unsatisfiable_range_416(srv):
    r = get(srv, "/static/css/site.css", [("Range", f"bytes={len(CSS)}-")])
    assert r.status == 416
    assert r.header("Content-Range") == f"bytes */{len(CSS)}"
    assert r.body == b""


def test_several_ranges_are_answered_whole(srv):
    r = get(srv, "/static/css/site.css", [("Range", "bytes=0-1,5-6")])
    assert (r.status, r.body) == (200, CSS)


def test_if_range_with_an_old_etag_sends_the_whole_file(srv):
    r = get(srv, "/static/css/site.css", [("Range", "bytes=0-1"), ("If-Range", '"old"')])
    assert (r.status, r.body) == (200, CSS)


def test_etag_if_none_match_304(srv):
    tag = get(srv, "/static/css/site.css").header("ETag")
    r = get(srv, "/static/css/site.css", [("If-None-Match", tag)])
    assert r.status == 304
    assert r.body == b""
    assert r.header("ETag") == tag
    r = get(srv, "/static/css/site.css", [("If-None-Match", '"something-else"')])
    assert (r.status, r.body) == (200, CSS)


def test_if_modified_since_304(srv):
    lm = get(srv, "/static/css/site.css").header("Last-Modified")
    r = get(srv, "/static/css/site.css", [("If-Modified-Since", lm)])
    assert (r.status, r.body) == (304, b"")
    r = get(srv, "/static/css/site.css",
            [("If-Modified-Since", "Mon, 01 Jan 1990 00:00:00 GMT")])
    assert (r.status, r.body) == (200, CSS)


@pytest.mark.parametrize("path", [
    "/static/../secret",
    "/static/%2e%2e/secret",
    "/static/%2E%2E%2Fsecret",
    "/static/css/..%2f..%2fsecret",
    "/static/escape",
    "/static/./../static/../secret",
])
def test_traversal_never_serves_the_outside_file(srv, path):
    r = get(srv, path)
    assert SECRET not in r.body
    assert r.status == 404
    assert r.body.startswith(b"app 404 "), r.body


def test_missing_file_reaches_the_app(srv):
    r = get(srv, "/static/nope.css")
    assert (r.status, r.body) == (404, b"app 404 /static/nope.css")
    r = get(srv, "/")
    assert (r.status, r.body) == (200, b"app root")


def test_post_goes_to_the_app(srv):
    r = srv.request(build_request("POST", "/static/app.js", body=b"x=1"))
    assert (r.status, r.body) == (404, b"app 404 /static/app.js")


def test_static_index_for_a_directory(srv):
    for path in ("/static/docs/", "/static/docs"):
        r = get(srv, path)
        assert (r.status, r.body, r.header("Content-Type")) == (200, b"<h1>docs</h1>",
                                                                "text/html")
    # A directory without an index file is the app's.
    r = get(srv, "/static/empty/")
    assert (r.status, r.body) == (404, b"app 404 /static/empty/")


def test_static_map2_appends_the_whole_path(srv):
    r = get(srv, "/assets/two.txt")
    assert (r.status, r.body) == (200, b"map2 file")


def test_gzip_all_serves_the_gz_to_clients_that_accept_it(srv):
    r = get(srv, "/static/app.js", [("Accept-Encoding", "gzip, deflate")])
    assert r.status == 200
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Type") == "text/javascript"
    assert gzip.decompress(r.body) == b"console.log(1)\n"
    r = get(srv, "/static/app.js", [("Accept-Encoding", "gzip;q=0")])
    assert (r.header("Content-Encoding"), r.body) == (None, b"console.log(1)\n")
    r = get(srv, "/static/app.js")
    assert (r.header("Content-Encoding"), r.body) == (None, b"console.log(1)\n")


def test_static_hits_do_not_call_the_app_and_are_logged(srv):
    r = get(srv, "/static/pic.PNG?direct-log-check")
    assert r.status == 200
    if srv.args[0] == "--http-socket":
        srv.wait_log("GET /static/pic.PNG?direct-log-check => generated 9 bytes")


@pytest.mark.parametrize("front", FRONTS)
def test_ini_static_map_with_magic_dir(headrace, tmp_path, front):
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "hello.txt").write_bytes(b"from the ini")
    port = free_port()
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\n"
                   f"{front} = 127.0.0.1:{port}\n"
                   f"wsgi-file = {app('static_app.py')}\n"
                   "static-map = /static=%d/static\n")
    srv = headrace("--ini", str(ini), port=port)
    r = get(srv, "/static/hello.txt")
    assert (r.status, r.body, r.header("Content-Type")) == (200, b"from the ini", "text/plain")


@pytest.mark.parametrize("front", FRONTS)
def test_check_static_serves_from_a_docroot(headrace, tmp_path, front):
    (tmp_path / "robots.txt").write_bytes(b"User-agent: *\n")
    srv = start(headrace, front, "--check-static", str(tmp_path))
    r = get(srv, "/robots.txt")
    assert (r.status, r.body) == (200, b"User-agent: *\n")
    r = get(srv, "/nothing-here")
    assert (r.status, r.body) == (404, b"app 404 /nothing-here")


def test_malformed_static_map_exits_2(tmp_path):
    from support import run_headrace

    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}",
                      "--wsgi-file", app("static_app.py"), "--static-map", "/static"])
    assert p.returncode == 2
    assert 'invalid static-map "/static"' in p.stderr + p.stdout


def test_big_file_whole_and_ranged(srv):
    """Several MB: the socket fills, so sendfile (workers) and the chunked reads (router) wait
    for the client and carry on."""
    with srv.connect(timeout=30) as c:
        c.send(build_request("GET", "/static/big.bin"))
        r = c.read_response()
        assert (r.status, r.header("Content-Length")) == (200, str(len(BIG)))
        assert r.body == BIG
        start = len(BIG) // 3
        c.send(build_request("GET", "/static/big.bin", headers=[("Range", f"bytes={start}-")]))
        r = c.read_response()
        assert r.status == 206
        assert r.body == BIG[start:]


# --- --socket (the uwsgi protocol, as nginx's uwsgi_pass speaks it) ------------------------


def uwsgi_packet(pairs) -> bytes:
    data = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    return struct.pack("<BHB", 0, len(data), 0) + data


def uwsgi_get(port, uri: bytes, extra=()):
    import socket

    from support import Conn

    path = uri.partition(b"?")[0]
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", uri), (b"PATH_INFO", path),
             (b"QUERY_STRING", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
             (b"SERVER_NAME", b"localhost"), (b"SERVER_PORT", b"80"),
             (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"40000"), *extra]
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    with Conn(s) as c:
        c.send(uwsgi_packet(pairs))
        r = c.read_response()
        assert c.closed_by_peer(), "a uwsgi-protocol connection carries one request"
        return r


def test_uwsgi_socket_front(headrace, tree):
    port = free_port()
    headrace("--socket", f"127.0.0.1:{port}", "--wsgi-file", app("static_app.py"),
             "--static-map", f"/static={tree / 'static'}", bind=False, port=port, probe=None)
    r = uwsgi_get(port, b"/static/css/site.css")
    assert (r.status, r.body, r.header("Content-Type")) == (200, CSS, "text/css")
    r = uwsgi_get(port, b"/static/css/site.css", [(b"HTTP_RANGE", b"bytes=0-3")])
    assert (r.status, r.body, r.header("Content-Range")) == (206, CSS[:4],
                                                              f"bytes 0-3/{len(CSS)}")
    tag = r.header("ETag")
    r = uwsgi_get(port, b"/static/css/site.css", [(b"HTTP_IF_NONE_MATCH", tag.encode())])
    assert r.status == 304
    for uri in (b"/static/%2e%2e/secret", b"/static/escape", b"/static/missing"):
        r = uwsgi_get(port, uri)
        assert r.status == 404 and r.body.startswith(b"app 404 "), (uri, r.body)


# --- the other static options: static-expires*, static-gzip-ext, static-skip-ext, static-safe -


@pytest.fixture(scope="module", params=SERVED, ids=["-".join(p) for p in SERVED])
def srv2(request, headrace_module, tree):
    front, kind = request.param
    return start(headrace_module, front,
                 "--static-check", str(tree / "static"),
                 "--static-expires", r"\.PNG$ 100",
                 "--static-expires-uri-mtime", "^/app 200",
                 "--static-gzip-ext", ".js",
                 "--static-skip-ext", ".unknownext",
                 "--static-safe", str(tree / "v2"),
                 "--honour-range", "--static-cache-paths", "30", kind=kind)


def test_accepted_static_options_warn_once(srv2):
    log = srv2.log()
    assert "option `honour-range` on the command line" in log, log
    assert "Range is always honoured" in log
    assert "option `static-cache-paths` on the command line" in log


def test_static_expires_by_file_name(srv2):
    r = get(srv2, "/pic.PNG")
    assert r.status == 200
    expires = email.utils.parsedate_to_datetime(r.header("Expires")).timestamp()
    assert abs(expires - (time.time() + 100)) < 30


def test_static_expires_uri_mtime_counts_from_the_file(srv2):
    r = get(srv2, "/app.js")
    modified = email.utils.parsedate_to_datetime(r.header("Last-Modified")).timestamp()
    expires = email.utils.parsedate_to_datetime(r.header("Expires")).timestamp()
    assert expires == modified + 200
    assert get(srv2, "/css/site.css").header("Expires") is None


def test_static_gzip_ext(srv2):
    r = get(srv2, "/app.js", [("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == b"console.log(1)\n"


def test_static_skip_ext_goes_to_the_app(srv2):
    r = get(srv2, "/data.unknownext")
    assert (r.status, r.body) == (404, b"app 404 /data.unknownext")


def test_static_safe_allows_a_symlink_into_it(srv2, tree):
    link = tree / "static" / "to-v2.txt"
    if not link.exists():
        os.symlink(tree / "v2" / "assets" / "two.txt", link)
    r = get(srv2, "/to-v2.txt")
    assert (r.status, r.body) == (200, b"map2 file")
    # The other symlink out is still refused.
    r = get(srv2, "/escape")
    assert (r.status, r.body) == (404, b"app 404 /escape")


def test_bad_static_expires_regexp_exits_2():
    from support import run_headrace

    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}",
                      "--wsgi-file", app("static_app.py"), "--static-expires", "(oops 60"])
    assert p.returncode == 2
    assert 'invalid static-expires "(oops 60"' in p.stderr + p.stdout
