"""An ASGI app for tests/test_asgi_uwsgi.py: the `uwsgi` module's calls tied to the running
request (logvars, connection_fd, request_id), from concurrent requests on one event loop, and
from WebSocket sessions."""

import asyncio
import json
import os
from urllib.parse import parse_qs

import uwsgi


async def websocket(scope, receive, send):
    """`/ws`: each text message `NAME` sets logvar `who` (first one only) and `last`, and is
    answered with both logvars, whether connection_fd stayed the same, and the pid.
    `/ws-harakiri`: `uwsgi.set_user_harakiri(1)`, then waits forever."""
    await receive()
    await send({"type": "websocket.accept"})
    fd = uwsgi.connection_fd()
    if scope["path"] == "/ws-harakiri":
        uwsgi.set_user_harakiri(1)
        await send({"type": "websocket.send", "text": str(os.getpid())})
        await asyncio.Event().wait()
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        name = msg["text"]
        if uwsgi.get_logvar("who") is None:
            uwsgi.set_logvar("who", name)
        uwsgi.set_logvar("last", name)
        await asyncio.sleep(0.05)  # other sessions and requests take steps meanwhile
        reply = {
            "who": uwsgi.get_logvar("who").decode(),
            "last": uwsgi.get_logvar("last").decode(),
            "fd_stable": uwsgi.connection_fd() == fd,
            "pid": os.getpid(),
        }
        await send({"type": "websocket.send", "text": json.dumps(reply)})


async def application(scope, receive, send):
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    if scope["type"] != "http":
        raise ValueError("no lifespan")
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["path"] == "/lv":
        uwsgi.set_logvar("who", q["who"])
        fd = uwsgi.connection_fd()
        # Another request runs its steps while this one sleeps.
        await asyncio.sleep(float(q.get("sleep", "0")))
        uwsgi.set_logvar(b"late", q["who"].upper().encode())
        body = {
            "who": uwsgi.get_logvar("who").decode(),
            "late": uwsgi.get_logvar("late").decode(),
            "missing": uwsgi.get_logvar("missing"),
            "fd_stable": uwsgi.connection_fd() == fd,
        }
    else:
        body = {"who": uwsgi.get_logvar("who")}
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
