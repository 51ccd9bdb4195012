"""The `uwsgi` module's per-request calls in an ASGI worker: each request keeps its own
logvars (`set_logvar`/`get_logvar`, `%(key)` in `--log-format`) and `connection_fd`, although
many run at once on one event loop, and WebSocket sessions too (their logvars reach the
session's log line; their `set_user_harakiri` cancels the session, not the worker). Every front
(direct, router, uwsgi protocol), preloaded and --lazy-apps."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import Conn, app, build_request
from test_asgi import MODES, nginx_stack, start, uwsgi_packet
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

APP = app("asgi_uwsgi.py")


def get(front: str, port: int, uri: str):
    raw = uwsgi_packet("GET", uri) if front == "uwsgi" else build_request("GET", uri)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        c = Conn(s)
        c.send(raw)
        r = c.read_response()
        return r.status, json.loads(r.body)


@pytest.mark.parametrize("front", ["direct", "router", "uwsgi"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_logvars_belong_to_their_request(headrace, front, mode):
    srv, port = start(
        headrace, front, "--wsgi-file", APP, "--log-format", "LV|%(uri)|%(who)|%(late)|", *mode
    )
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(get, front, port, "/lv?who=first&sleep=0.6")
        time.sleep(0.2)
        b = pool.submit(get, front, port, "/lv?who=second&sleep=0.1")
        assert b.result() == (
            200, {"who": "second", "late": "SECOND", "missing": None, "fd_stable": True})
        assert a.result() == (
            200, {"who": "first", "late": "FIRST", "missing": None, "fd_stable": True})
    # The next request starts without any.
    assert get(front, port, "/plain") == (200, {"who": None})
    text = srv.wait_log("LV|/plain|")
    assert "LV|/lv?who=first&sleep=0.6|first|FIRST|" in text
    assert "LV|/lv?who=second&sleep=0.1|second|SECOND|" in text
    assert "LV|/plain|-|-|" in text


def test_outside_a_request_set_logvar_raises(headrace, tmp_path):
    # At import (no request running) the call fails as in a WSGI worker.
    f = tmp_path / "imp.py"
    f.write_text(
        "import uwsgi\n"
        "try:\n"
        "    uwsgi.set_logvar('a', 'b')\n"
        "except ValueError as e:\n"
        "    print('refused:', e, flush=True)\n"
        "async def application(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        raise ValueError('no lifespan')\n"
        "    await send({'type': 'http.response.start', 'status': 204, 'headers': []})\n"
        "    await send({'type': 'http.response.body'})\n"
    )
    srv, _ = start(headrace, "direct", "--wsgi-file", str(f))
    srv.wait_log("refused: set_logvar() outside a request")


@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_logvars_behind_nginx(headrace, mode):
    """The uwsgi protocol as a real nginx speaks it (uwsgi_pass, its own CGI variables): two
    overlapping requests keep their own logvars, and the log line shows them."""
    stack = nginx_stack(headrace, "--wsgi-file", APP, "--log-format", "LV|%(uri)|%(who)|", *mode)
    try:
        port = stack.ports["tcp"]
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(get, "direct", port, "/lv?who=first&sleep=0.6")
            time.sleep(0.2)
            b = pool.submit(get, "direct", port, "/lv?who=second&sleep=0.1")
            assert b.result()[1]["late"] == "SECOND"
            assert a.result()[1]["late"] == "FIRST"
        text = stack.hr.wait_log("LV|/lv?who=first&sleep=0.6|")
        assert "LV|/lv?who=first&sleep=0.6|first|" in text
        assert "LV|/lv?who=second&sleep=0.1|second|" in text
    finally:
        stack.stop()


@pytest.mark.parametrize("front", ["direct", "router"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_websocket_sessions_keep_their_own_logvars(headrace, front, mode):
    """Two WebSocket sessions open at once on one worker, each with its own logvars, which
    reach its log line (uWSGI allows set_logvar in a WebSocket handler)."""
    srv, port = start(
        headrace, front, "--wsgi-file", APP, "--log-format", "WS|%(uri)|%(who)|%(last)|", *mode
    )
    url = f"ws://127.0.0.1:{port}/ws"
    with connect(url, open_timeout=10) as a, connect(url, open_timeout=10) as b:
        a.send("ann")
        b.send("bob")
        ra, rb = json.loads(a.recv(timeout=10)), json.loads(b.recv(timeout=10))
        assert ra["pid"] == rb["pid"], "both sessions on the one worker"
        assert (ra["who"], ra["last"], ra["fd_stable"]) == ("ann", "ann", True)
        assert (rb["who"], rb["last"], rb["fd_stable"]) == ("bob", "bob", True)
        a.send("ann2")
        assert json.loads(a.recv(timeout=10))["who"] == "ann"
        # An HTTP request meanwhile starts without any.
        assert get("direct", port, "/plain") == (200, {"who": None})
    text = srv.wait_log("WS|/ws|bob|bob|")
    srv.wait_log("WS|/ws|ann|ann2|")
    assert "WS|/plain|-|-|" in text


@pytest.mark.parametrize("front", ["direct", "router"])
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_websocket_user_harakiri_cancels_the_session(headrace, front, mode):
    """uwsgi.set_user_harakiri(1) in a WebSocket handler: after 1 s the session's task is
    cancelled (close 1011, logged with where it waited); the worker serves on."""
    srv, port = start(headrace, front, "--wsgi-file", APP, *mode)
    with connect(f"ws://127.0.0.1:{port}/ws-harakiri", open_timeout=10) as ws:
        pid = int(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    text = srv.wait_log("cancels WebSocket /ws-harakiri")
    assert "uwsgi.set_user_harakiri(1)" in text
    # Past the kill grace the worker is still the same process, serving.
    time.sleep(2.5)
    assert get(front, port, "/plain") == (200, {"who": None})
    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        ws.send("x")
        assert json.loads(ws.recv(timeout=10))["pid"] == pid
    assert "killed" not in srv.log().lower(), srv.log()
