"""`--mount /PATH=APP` of ASGI 3 apps (issue #15): raw apps and a Starlette app mounted at
several points beside a default app, on every front (direct `--http-socket`, router `--http`,
uwsgi protocol `--socket`, with and without SCRIPT_NAME), preloaded and `--lazy-apps`: the
app chosen by the longest mountpoint on a segment boundary, `root_path` + mountpoint and the
whole `path` seen by the app, a 404 without a default app, WebSockets, each app's lifespan
and its state in its requests, and WSGI and ASGI apps mounted together refused at load."""

from __future__ import annotations

import json
import socket
import struct

import pytest
from support import Conn, app, build_request, free_port, run_headrace, wait_until
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

APPS = app("")
MODES = [[], ["--lazy-apps"]]
MOUNTS = [
    "--module", "asgi_mount:main",
    "--mount", "/alpha=asgi_mount:alpha",
    "--mount", "/alpha/beta=asgi_mount:beta",
    "--mount", "/star=asgi_mount:star",
]
STATE = {"main": "main up", "alpha": "alpha up", "beta": "beta up", "star": "star up"}


def start(headrace, front: str, *args: str, **kw):
    """A server with `args` on `front`; returns (server, port)."""
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http", "uwsgi": "--socket"}[front]
    probe = None if front == "uwsgi" else "/"
    srv = headrace(opt, f"127.0.0.1:{port}", "--pythonpath", APPS, *args, probe=probe,
                   port=port, bind=False, **kw)
    return srv, port


def uwsgi_get(port: int, uri: str, script_name: str | None = None):
    """GET `uri` as nginx sends it over the uwsgi protocol (REQUEST_URI whole, SCRIPT_NAME
    when given)."""
    path = uri.partition("?")[0]
    pairs = [
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", uri.encode()),
        (b"PATH_INFO", path.encode()),
        (b"QUERY_STRING", b""),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"localhost"),
        (b"SERVER_PORT", b"80"),
        (b"HTTP_HOST", b"localhost"),
    ]
    if script_name is not None:
        pairs.append((b"SCRIPT_NAME", script_name.encode()))
    body = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        c = Conn(s)
        c.send(struct.pack("<BHB", 0, len(body), 0) + body)
        return c.read_response()


def get(front: str, port: int, uri: str):
    if front == "uwsgi":
        return uwsgi_get(port, uri)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        c = Conn(s)
        c.send(build_request("GET", uri, headers=[("Connection", "close")]))
        return c.read_response()


def seen(front: str, port: int, uri: str) -> dict:
    r = get(front, port, uri)
    assert r.status == 200, r
    return json.loads(r.body)


@pytest.mark.parametrize("front", ["direct", "router", "uwsgi"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_longest_mountpoint_picks_the_app(headrace, front, mode):
    srv, port = start(headrace, front, *MOUNTS, *mode)
    d = seen(front, port, "/alpha/x%20y")
    assert (d["app"], d["root_path"], d["path"], d["raw_path"]) == (
        "alpha", "/alpha", "/alpha/x y", "/alpha/x%20y")
    assert d["state"] == STATE, "every app's lifespan state reaches every request"
    d = seen(front, port, "/alpha")
    assert (d["app"], d["root_path"], d["path"]) == ("alpha", "/alpha", "/alpha")
    d = seen(front, port, "/alpha/beta/z")
    assert (d["app"], d["root_path"], d["path"]) == ("beta", "/alpha/beta", "/alpha/beta/z")
    d = seen(front, port, "/alphabet")
    assert (d["app"], d["root_path"], d["path"]) == ("main", "", "/alphabet"), \
        "a mountpoint matches whole segments only"
    d = seen(front, port, "/")
    assert (d["app"], d["root_path"]) == ("main", "")
    # Starlette routes on the path below root_path; its URL keeps the whole path.
    d = seen(front, port, "/star/")
    assert d == {"app": "star", "url_path": "/star/", "root_path": "/star", "star": "star up",
                 "alpha": "alpha up"}
    assert get(front, port, "/star/missing").status == 404
    for i, point in enumerate(["/alpha", "/alpha/beta", "/star"], 1):
        srv.wait_log(f"ASGI app {i} (mountpoint='{point}') ready")


def test_script_name_from_nginx_picks_the_app(headrace):
    """Over the uwsgi protocol SCRIPT_NAME is the scope's root_path: a root_path that is a
    mountpoint names the app (as uWSGI picks by SCRIPT_NAME); any other root_path is a prefix
    above the mountpoints, which are matched below it."""
    _srv, port = start(headrace, "uwsgi", *MOUNTS)
    d = json.loads(uwsgi_get(port, "/alpha/x", script_name="/alpha").body)
    assert (d["app"], d["root_path"], d["path"]) == ("alpha", "/alpha", "/alpha/x")
    d = json.loads(uwsgi_get(port, "/alpha/beta/x", script_name="/alpha").body)
    assert (d["app"], d["root_path"]) == ("alpha", "/alpha"), "SCRIPT_NAME names the app"
    d = json.loads(uwsgi_get(port, "/site/alpha/beta/x", script_name="/site").body)
    assert (d["app"], d["root_path"], d["path"]) == (
        "beta", "/site/alpha/beta", "/site/alpha/beta/x")
    d = json.loads(uwsgi_get(port, "/site/other", script_name="/site").body)
    assert (d["app"], d["root_path"]) == ("main", "/site")
    # --manage-script-name changes nothing for ASGI apps.
    _srv2, port2 = start(headrace, "uwsgi", *MOUNTS, "--manage-script-name")
    d = json.loads(uwsgi_get(port2, "/alpha/x", script_name="/alpha").body)
    assert (d["app"], d["root_path"]) == ("alpha", "/alpha")
    d = json.loads(uwsgi_get(port2, "/alpha/x").body)
    assert (d["app"], d["root_path"]) == ("alpha", "/alpha")


@pytest.mark.parametrize("front", ["direct", "router", "uwsgi"])
def test_unmatched_is_404_without_a_default_app(headrace, front):
    _srv, port = start(headrace, front, "--mount", "/alpha=asgi_mount:alpha",
                      "--mount", "/star=asgi_mount:star")
    d = seen(front, port, "/alpha/")
    assert (d["app"], d["root_path"]) == ("alpha", "/alpha")
    r = get(front, port, "/elsewhere")
    assert r.status == 404
    assert r.body == b"no app is mounted here\n"
    assert r.header("content-type").startswith("text/plain")
    if front != "uwsgi":
        with pytest.raises(InvalidStatus) as e:
            connect(f"ws://127.0.0.1:{port}/elsewhere")
        assert e.value.response.status_code == 404


@pytest.mark.parametrize("front", ["direct", "router"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_websocket_to_a_mounted_app(headrace, front, mode):
    _srv, port = start(headrace, front, *MOUNTS, *mode)
    with connect(f"ws://127.0.0.1:{port}/alpha/beta/ws") as ws:
        d = json.loads(ws.recv(timeout=10))
    assert (d["app"], d["root_path"], d["path"]) == ("beta", "/alpha/beta", "/alpha/beta/ws")
    assert d["state"] == STATE
    with connect(f"ws://127.0.0.1:{port}/star/ws") as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "star /star hi"
    with connect(f"ws://127.0.0.1:{port}/other") as ws:
        assert json.loads(ws.recv(timeout=10))["app"] == "main"


@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_each_app_has_its_lifespan(headrace, record_dir, mode):
    """Every app starts up in mount order and shuts down in reverse, in each worker; an app
    without lifespan support is served under --lifespan auto and the others still start."""
    srv, port = start(headrace, "direct", *MOUNTS, "--mount", "/bare=asgi_mount:bare",
                      "--processes", "2", *mode)
    assert get("direct", port, "/bare/").body == b"bare"
    assert seen("direct", port, "/star/")["star"] == "star up"
    srv.wait_log("the app mounted at '/bare' does not support lifespan")
    # Both workers started up (a stop during a startup cancels it, with no shutdown).
    log = record_dir / "lifespan"
    wait_until(lambda: log.read_text().count("star startup") == 2, 10, "two workers' startup")
    assert srv.stop() == 0
    lines = log.read_text().splitlines()
    by_pid: dict[str, list[str]] = {}
    for line in lines:
        what, pid = line.rsplit(" ", 1)
        by_pid.setdefault(pid, []).append(what)
    assert len(by_pid) == 2, lines
    order = ["main", "alpha", "beta", "star"]
    for events in by_pid.values():
        assert events == [f"{n} startup" for n in order] + [
            f"{n} shutdown" for n in reversed(order)], events


def test_lifespan_on_refuses_an_app_without_it(headrace):
    srv, _ = start(headrace, "direct", "--module", "asgi_mount:main",
                   "--mount", "/bare=asgi_mount:bare", "--lifespan", "on", wait=False)
    assert srv.proc.wait(15) == 1
    srv.wait_log("ASGI lifespan startup failed: the app mounted at '/bare': AssertionError")


def test_one_failed_startup_fails_with_its_message(headrace, record_dir):
    srv, _ = start(headrace, "direct", *MOUNTS, env={"MOUNT_FAIL": "beta"}, wait=False)
    assert srv.proc.wait(15) == 1
    srv.wait_log(
        "ASGI lifespan startup failed: the app mounted at '/alpha/beta': beta cannot start")
    # The apps already started are shut down, the last first.
    events = [line.rsplit(" ", 1)[0] for line in
              (record_dir / "lifespan").read_text().splitlines()]
    assert events[:4] == ["main startup", "alpha startup", "alpha shutdown", "main shutdown"]


def test_lifespan_off_runs_none(headrace, record_dir):
    _srv, port = start(headrace, "direct", *MOUNTS, "--lifespan", "off")
    assert seen("direct", port, "/alpha/")["state"] == {}
    assert not (record_dir / "lifespan").exists()


@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_applications_dict_of_asgi_apps(headrace, mode):
    _srv, port = start(headrace, "direct", "--module", "asgi_mount_applications", *mode)
    d = seen("direct", port, "/alpha/q")
    assert (d["app"], d["root_path"], d["state"]) == (
        "alpha", "/alpha", {"main": "main up", "alpha": "alpha up"})
    assert seen("direct", port, "/q")["app"] == "main"


def test_wsgi_and_asgi_mounted_together_are_refused():
    r = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}", "--pythonpath", APPS,
                      "--wsgi-file", app("basic.py"), "--mount", "/alpha=asgi_mount:alpha"])
    assert r.returncode == 1, r
    out = r.stdout + r.stderr
    assert ("--mount: WSGI and ASGI apps cannot be mounted in one headrace "
            "('' WSGI, '/alpha' ASGI)") in out, out


def test_wsgi_mounts_are_unchanged(headrace):
    srv, port = start(headrace, "direct", "--wsgi-file", app("basic.py"),
                      "--mount", f"/b={app('basic.py')}", "--manage-script-name")
    srv.wait_log("WSGI app 1 (mountpoint='/b') ready")
    assert get("direct", port, "/b/").status == 200
    assert "serves ASGI" not in srv.log()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_behind_nginx_uwsgi_pass(headrace, kind):
    """nginx (examples/nginx.conf, `location /` without SCRIPT_NAME) sends the whole
    REQUEST_URI: the mountpoints are matched on it."""
    from test_nginx import Stack, nginx_binary

    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian package `nginx`)")
    st = Stack(headrace, "asgi_mount.py", 1, extra=("--pythonpath", APPS, *MOUNTS[2:]))
    try:
        st.start_nginx()
        with socket.create_connection(("127.0.0.1", st.ports[kind]), timeout=10) as s:
            c = Conn(s)
            c.send(build_request("GET", "/alpha/beta/x", headers=[("Connection", "close")]))
            d = json.loads(c.read_response().body)
        assert (d["app"], d["root_path"], d["path"]) == ("beta", "/alpha/beta", "/alpha/beta/x")
        assert d["state"] == STATE
        with socket.create_connection(("127.0.0.1", st.ports[kind]), timeout=10) as s:
            c = Conn(s)
            c.send(build_request("GET", "/star/", headers=[("Connection", "close")]))
            d = json.loads(c.read_response().body)
        assert (d["url_path"], d["root_path"]) == ("/star/", "/star")
    finally:
        st.stop()
