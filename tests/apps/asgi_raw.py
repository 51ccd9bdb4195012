"""A raw ASGI 3 app for tests/test_asgi.py: echoes its scope, streams bodies, waits for the
client to go away, raises, and keeps lifespan state."""

import asyncio
import json
import os
import time

events = []


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                scope["state"]["started"] = os.getpid()
                if os.environ.get("ASGI_FAIL_STARTUP"):
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                await send({"type": "lifespan.startup.complete"})
                path = os.environ.get("ASGI_SHUTDOWN_FILE")
                if path:
                    with open(path, "a") as f:  # noqa: ASYNC230 - a test marker
                        f.write(f"startup {os.getpid()}\n")
            elif msg["type"] == "lifespan.shutdown":
                path = os.environ.get("ASGI_SHUTDOWN_FILE")
                if path:
                    with open(path, "a") as f:  # noqa: ASYNC230 - a test marker
                        f.write(f"shutdown {os.getpid()}\n")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/echo":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            msg = await receive()
            await send(
                {"type": "http.response.body", "body": msg.get("body", b""), "more_body": True}
            )
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/raise":
        raise RuntimeError("boom from the app")
    if path == "/raise-after-start":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom after the start")
    if path == "/wait-disconnect":
        msg = await receive()
        while msg["type"] != "http.disconnect":
            msg = await receive()
        path = os.environ.get("ASGI_EVENTS_FILE")
        if path:
            with open(path, "a") as f:  # noqa: ASYNC230 - a test marker
                f.write("disconnect\n")
        return
    if path == "/sleep":
        await asyncio.sleep(float(scope["query_string"] or b"0.2"))
    if path == "/block":
        # Holds the worker's loop (CPU-bound work would): nothing else runs in this worker.
        time.sleep(float(scope["query_string"] or b"0.2"))  # noqa: ASYNC251 - on purpose
    body = b""
    msg = await receive()
    body += msg.get("body", b"")
    while msg.get("more_body"):
        msg = await receive()
        body += msg.get("body", b"")
    scope_out = {
        k: v
        for k, v in scope.items()
        if k not in ("headers", "raw_path", "query_string", "state", "extensions")
    }
    scope_out["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
    scope_out["raw_path"] = scope["raw_path"].decode()
    scope_out["query_string"] = scope["query_string"].decode()
    scope_out["types"] = {
        "raw_path": type(scope["raw_path"]).__name__,
        "query_string": type(scope["query_string"]).__name__,
        "header": type(scope["headers"][0][0]).__name__ if scope["headers"] else "",
    }
    scope_out["state"] = dict(scope.get("state", {}))
    scope_out["extensions"] = scope.get("extensions")
    scope_out["body_len"] = len(body)
    scope_out["pid"] = os.getpid()
    out = json.dumps(scope_out).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": out})
