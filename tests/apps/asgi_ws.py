"""A raw ASGI 3 app with WebSocket routes for tests/test_asgi_ws.py (`--wsgi-file`, callable `application`).

Every WebSocket route records the `websocket.disconnect` it received in
`$HR_RECORD/ws-<id>` (`<code> <reason>`), `<id>` being the query string's `id`, so the tests
read what the app saw. A lifespan puts `token` in the state. `/starlette...` paths go to the
Starlette app below.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def record(scope, text: str) -> None:
    ident = parse_qs(scope["query_string"].decode()).get("id", [""])[0]
    folder = os.environ.get("HR_RECORD")
    if ident and folder:
        path = Path(folder) / f"ws-{ident}"
        path.write_text(text)


async def echo_until_disconnect(scope, receive, send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            record(scope, f"{msg['code']} {msg.get('reason', '')}")
            return
        if msg.get("text") is not None:
            text = msg["text"]
            if text == "close-me":
                await send({"type": "websocket.close", "code": 1000, "reason": "server bye"})
                continue
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": msg["bytes"]})


async def websocket(scope, receive, send) -> None:
    msg = await receive()
    assert msg["type"] == "websocket.connect", msg
    path = scope["path"]
    if path == "/echo":
        offered = scope["subprotocols"]
        chosen = "chat" if "chat" in offered else None
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": chosen,
                "headers": [(b"x-accepted", b"yes")],
            }
        )
        await echo_until_disconnect(scope, receive, send)
    elif path == "/scope":
        await send({"type": "websocket.accept"})
        view = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string")}
        view["raw_path"] = scope["raw_path"].decode("latin-1")
        view["query_string"] = scope["query_string"].decode("latin-1")
        view["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
        await send({"type": "websocket.send", "text": json.dumps(view)})
        await echo_until_disconnect(scope, receive, send)
    elif path == "/deny":
        await send({"type": "websocket.close"})
    elif path == "/deny-custom":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 418,
                "headers": [(b"content-type", b"text/plain"), (b"x-why", b"teapot")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"tea"})
    elif path == "/raise-before":
        raise RuntimeError("boom before accept")
    elif path == "/raise-after":
        await send({"type": "websocket.accept"})
        raise RuntimeError("boom after accept")
    elif path == "/return-after-accept":
        await send({"type": "websocket.accept"})
    elif path == "/send-after-close":
        await send({"type": "websocket.accept"})
        msg = await receive()
        record(scope, f"{msg['code']} {msg.get('reason', '')}")
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as e:
            record(scope, f"OSError {type(e).__name__}")
    elif path == "/flood":
        await send({"type": "websocket.accept"})
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < 1 << 30:
                await send({"type": "websocket.send", "bytes": chunk})
                sent += len(chunk)
        except OSError as e:
            record(scope, f"OSError {type(e).__name__}")
    else:
        await send({"type": "websocket.close", "code": 1008})


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                scope["state"]["token"] = "from-lifespan"
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"].startswith("/starlette"):
        await starlette_app(scope, receive, send)
        return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    await receive()
    if scope["path"] == "/stuck":
        time.sleep(30)  # noqa: ASYNC251 - blocks the loop on purpose: only harakiri ends it
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok\n"})


async def starlette_echo(ws: WebSocket) -> None:
    await ws.accept(subprotocol="chat" if "chat" in ws.scope["subprotocols"] else None)
    try:
        while True:
            text = await ws.receive_text()
            await ws.send_text(f"starlette: {text} ({ws.scope['state']['token']})")
    except WebSocketDisconnect as e:
        record(ws.scope, f"{e.code} {e.reason or ''}")


async def starlette_deny(ws: WebSocket) -> None:
    await ws.close(code=1008)


async def starlette_deny_response(ws: WebSocket) -> None:
    await ws.send_denial_response(PlainTextResponse("members only\n", status_code=401))


starlette_app = Starlette(
    routes=[
        WebSocketRoute("/starlette/echo", starlette_echo),
        WebSocketRoute("/starlette/deny", starlette_deny),
        WebSocketRoute("/starlette/deny-response", starlette_deny_response),
    ]
)
