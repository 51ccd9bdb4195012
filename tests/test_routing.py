"""uWSGI's internal routing (`route`, `route-uri`, `route-host`, `route-if`, `route-if-not`
with redirect, redirect-permanent, return, break:STATUS, addheader, delheader, addvar,
continue/last, donotlog), applied by the worker before the app: the same answers on the
direct HTTP front, through the `--http` router, and over the uwsgi protocol, preloaded and
with --lazy-apps. The lines are the real ones of tests/ini_corpus (localshop, linkding)."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess

import pytest
from support import app, free_port, run_headrace, wait_until

APP = app("gaps_routes.py")
FRONTS = {"direct": "http-socket", "router": "http", "uwsgi": "socket"}

RULES = """\
route-if = equal:${HTTP_X_FORWARDED_PROTO};http redirect-permanent:https://${HTTP_HOST}${REQUEST_URI}
route = ^/static/ addheader:Content-Security-Policy: sandbox
route = ^/static/ delheader:X-Drop
route = ^/old/(.*)$ redirect:/new/$1
route-uri = \\?secret= return:403
route-host = ^admin\\. break:404 Not Found
route = ^/var addvar:ROUTED_VAR=${HTTP_HOST}
route = ^/stop continue:
route = ^/stop return:500
route-if-not = isdir:/ return:500
route-if = isfile:/nonexistent/file return:500
route = ^/quiet donotlog:
"""


def ask(port, front, path, headers=()):
    """One request on a new connection: (status, {lower name: value}, body)."""
    if not any(k == "Host" for k, _ in headers):
        headers = [("Host", "shop.example"), *headers]
    if front == "uwsgi":
        pairs = [("REQUEST_METHOD", "GET"), ("REQUEST_URI", path),
                 ("PATH_INFO", path.split("?")[0]),
                 ("QUERY_STRING", path.partition("?")[2]), ("SERVER_PROTOCOL", "HTTP/1.1"),
                 ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80"),
                 ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "40000")]
        pairs += [("HTTP_" + k.upper().replace("-", "_"), v) for k, v in headers]
        body = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v))
                        + v.encode() for k, v in pairs)
        raw = struct.pack("<BHB", 0, len(body), 0) + body
    else:
        lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers),
                 "Connection: close"]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    first, *rest = head.decode().split("\r\n")
    hdrs = {}
    for line in rest:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "content-length" in hdrs:
        assert int(hdrs["content-length"]) == len(body), (hdrs, body)
    return int(first.split(" ", 2)[1]), hdrs, body


@pytest.fixture(params=[False, True], ids=["preloaded", "lazy-apps"])
def lazy(request):
    return request.param


@pytest.mark.parametrize("front", FRONTS)
def test_routes_answer_like_uwsgi_on_every_front(headrace, tmp_path, front, lazy):
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\n{FRONTS[front]} = 127.0.0.1:{port}\nwsgi-file = {APP}\n"
                   f"processes = 2\n{'lazy-apps = true' if lazy else ''}\n{RULES}")
    srv = headrace("--ini", str(ini), port=port, probe=None, workers=2)

    # localshop: plain http behind the proxy -> 301 to https, same host and URI
    status, h, body = ask(port, front, "/a/b?x=1", [("X-Forwarded-Proto", "http")])
    assert status == 301, (status, h, body)
    assert h["location"] == "https://shop.example/a/b?x=1" and body == b"Moved Permanently"
    status, h, body = ask(port, front, "/a/b?x=1", [("X-Forwarded-Proto", "https")])
    assert status == 200 and body == b"app /a/b var=-", (status, body)
    assert h["x-drop"] == "yes"

    # linkding: the app's response gets the header; delheader removes the app's one
    status, h, body = ask(port, front, "/static/app.css")
    assert status == 200 and h["content-security-policy"] == "sandbox", h
    assert "x-drop" not in h and body == b"app /static/app.css var=-"

    status, h, body = ask(port, front, "/old/x/y")
    assert (status, h["location"], body) == (302, "/new/x/y", b"Moved")
    status, h, body = ask(port, front, "/p?secret=1")
    assert (status, body, h["content-type"]) == (403, b"Forbidden", "text/plain")
    status, h, body = ask(port, front, "/", [("Host", "admin.example")])
    assert (status, body) == (404, b""), (status, body)
    status, h, body = ask(port, front, "/var")
    assert (status, body) == (200, b"app /var var=shop.example")
    status, h, body = ask(port, front, "/stop")
    assert status == 200, (status, body)  # continue: ends the chain before return:500

    srv.wait_log("GET /stop")
    status, _, _ = ask(port, front, "/quiet")
    ask(port, front, "/after-quiet")
    srv.wait_log("GET /after-quiet")
    assert " GET /quiet " not in srv.log()
    assert "GET /old/x/y => generated" in srv.log()  # a routed answer is logged like any


@pytest.mark.parametrize(
    ("line", "option"),
    [("route = ^/x rewrite:/y", "route"),
     ("route-if = nosuch:a;b redirect:/", "route-if"),
     ("route-if = equal:a;b", "route-if"),
     ("route-host = ([ return:403", "route-host"),
     ("route-uri = ^/ return:xyz", "route-uri"),
     ("route-if-not = equal ;x break:403", "route-if-not")],
)
def test_bad_route_lines_exit_2_naming_the_option(tmp_path, line, option):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nwsgi-file = {APP}\n{line}\n")
    r = run_headrace(["--ini", str(ini)])
    out = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2, out
    assert len(out) == 1 and f"invalid {option} " in out[0] and "line 4" in out[0], out


REFERENCE = [
    ("/a/b?x=1", [("X-Forwarded-Proto", "http")]),
    ("/static/app.css", []),
    ("/old/x/y", []),
    ("/p?secret=1", []),
    ("/", [("Host", "admin.example")]),
    ("/var", []),
    ("/plain", []),
]


def test_same_answers_as_uwsgi(headrace, tmp_path):
    """The same rules under uWSGI 2.0.30 (pyuwsgi) and headrace give the same status,
    Location, routed headers and body (skipped without pyuwsgi)."""
    from ini_corpus.corpus import uwsgi_cmd

    cmd = uwsgi_cmd()
    if cmd is None:
        pytest.skip("pyuwsgi is not installed")
    rules = "\n".join(x for x in RULES.splitlines() if "isdir" not in x and "isfile" not in x)
    answers = {}
    for server in ("uwsgi", "headrace"):
        port = free_port()
        ini = tmp_path / f"{server}.ini"
        ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {APP}\n"
                       f"master = true\n{rules}\n")
        if server == "headrace":
            headrace("--ini", str(ini), port=port, probe=None, workers=1)
        else:
            log = open(tmp_path / "uwsgi.log", "wb")  # noqa: SIM115 - closed below
            proc = subprocess.Popen([*cmd, "--ini", str(ini)], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda p=port: _accepts(p), 15, f"{server} to listen")
            got = []
            for path, hdrs in REFERENCE:
                status, h, body = ask(port, "direct", path, hdrs)
                keep = {k: h[k] for k in ("location", "content-security-policy", "x-drop")
                        if k in h}
                got.append((path, status, keep, body))
            answers[server] = got
        finally:
            if server == "uwsgi":
                proc.send_signal(signal.SIGINT)  # uWSGI: kill the workers, exit
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
                log.close()
    assert answers["headrace"] == answers["uwsgi"]
    assert {a[1] for a in answers["uwsgi"]} == {200, 301, 302, 403, 404}, answers


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
