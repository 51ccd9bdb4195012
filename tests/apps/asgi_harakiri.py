"""An ASGI app for tests/test_asgi_harakiri.py: requests that outlive --harakiri in different
ways, and a quick one that answers with the worker's pid.

`/user?limit=N&sleep=S` sets its own limit with uwsgi.set_user_harakiri(N), then naps S
seconds and answers the pid; `/user-stubborn` sets a 1 s limit and ignores the cancellation."""

import asyncio
import os
from urllib.parse import parse_qs

import uwsgi


async def nap(seconds):
    await asyncio.sleep(seconds)


async def application(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError("no lifespan")
    path = scope["path"]
    if path == "/sleep":
        # Suspended in an await two coroutines deep: cancellable.
        await nap(30)
    elif path == "/user":
        q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        uwsgi.set_user_harakiri(int(q["limit"]))
        await nap(float(q["sleep"]))
    elif path == "/user-stubborn":
        uwsgi.set_user_harakiri(1)
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                continue
    elif path == "/stubborn":
        # Swallows the cancellation and goes on: only the worker's death ends it.
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                continue
    elif path == "/started":
        # Answers the head and a first chunk, then hangs.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await nap(30)
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain")],
    })
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
