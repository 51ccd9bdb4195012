"""ASGI on both event loops a user can have: asyncio, and uvloop (what `--loop auto` picks when
it is installed, as it is with `uvicorn[standard]`). The rest of the ASGI suite runs on `auto`;
this file runs the core paths on each loop explicitly, direct and behind the router:
lifespan state, a streamed 1 MiB echo, a client disconnect seen mid-request, an app exception,
concurrency inside one worker, and a WebSocket echo."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time

import pytest
import requests
from support import app, free_port

RAW = app("asgi_raw.py")
WS = app("asgi_ws.py")

LOOPS = ["asyncio", "uvloop"]
FRONTS = ["direct", "router"]


def start(headrace, front: str, loop: str, appfile: str, *args: str, **kw):
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="./dev installs uvloop")
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    srv = headrace(opt, f"127.0.0.1:{port}", "--wsgi-file", appfile, "--loop", loop, *args,
                   port=port, bind=False, **kw)
    srv.wait_log(f" {loop} loop")
    return srv, port


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("loop", LOOPS)
def test_http_paths_on_each_loop(headrace, tmp_path, front, loop):
    events = tmp_path / "events"
    srv, port = start(headrace, front, loop, RAW, "--processes", "1",
                      env={"ASGI_EVENTS_FILE": str(events)})
    base = f"http://127.0.0.1:{port}"
    # Lifespan state reaches the request.
    scope = requests.get(base + "/", timeout=10).json()
    assert scope["state"]["started"] == scope["pid"]
    # A streamed 1 MiB echo, sent chunked.
    blob = os.urandom(1 << 20)

    def pieces():
        for i in range(0, len(blob), 64 * 1024):
            yield blob[i:i + 64 * 1024]
    r = requests.post(base + "/echo", data=pieces(), timeout=30)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(blob).digest()
    # An exception is a 500 and the worker lives on.
    assert requests.get(base + "/raise", timeout=10).status_code == 500
    assert requests.get(base + "/", timeout=10).json()["pid"] == scope["pid"]
    srv.wait_log("boom from the app")
    # Ten concurrent sleeps share one worker's loop: all run at once.
    t0 = time.monotonic()
    results = []

    def one():
        results.append(requests.get(base + "/sleep?1", timeout=30).status_code)
    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 10
    took = time.monotonic() - t0
    assert took < 8, f"10 concurrent 1 s requests took {took:.1f} s on one worker"


@pytest.mark.parametrize("loop", LOOPS)
def test_client_disconnect_reaches_the_app(headrace, tmp_path, loop):
    events = tmp_path / "events"
    _srv, port = start(headrace, "direct", loop, RAW, env={"ASGI_EVENTS_FILE": str(events)})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /wait-disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while not (events.exists() and "disconnect" in events.read_text()):
        assert time.monotonic() < deadline, "the app never saw http.disconnect"
        time.sleep(0.05)


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("loop", LOOPS)
def test_websocket_echo_on_each_loop(headrace, front, loop):
    websockets = pytest.importorskip("websockets", reason="./dev installs websockets")
    _srv, port = start(headrace, front, loop, WS)

    async def talk():
        async with websockets.connect(f"ws://127.0.0.1:{port}/echo") as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x00\x01" * 1000)
            data = await ws.recv()
            return text, data
    text, data = asyncio.run(asyncio.wait_for(talk(), 20))
    assert text == "hello"
    assert data == b"\x00\x01" * 1000
