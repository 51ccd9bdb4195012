"""ASGI apps for tests/test_asgi_mount.py, mounted by `--mount /PATH=asgi_mount:NAME`: raw apps
that answer (HTTP, or a WebSocket text message) with the scope they saw, each with its own
lifespan (its state key, its shutdown written to HR_RECORD/lifespan), a raw app without
lifespan support, and a Starlette app with a lifespan that returns state."""

from __future__ import annotations

import contextlib
import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


def record(line: str) -> None:
    path = os.path.join(os.environ["HR_RECORD"], "lifespan")
    with open(path, "a") as f:
        f.write(f"{line} {os.getpid()}\n")


def seen(name: str, scope) -> dict:
    return {
        "app": name,
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode(),
        "root_path": scope["root_path"],
        "state": scope.get("state", {}),
    }


def raw(name: str):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if os.environ.get("MOUNT_FAIL") == name:
                        await send({"type": "lifespan.startup.failed",
                                    "message": f"{name} cannot start"})
                        return
                    scope["state"][name] = f"{name} up"
                    record(f"{name} startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    record(f"{name} shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(seen(name, scope))})
            await send({"type": "websocket.close", "code": 1000})
            return
        body = json.dumps(seen(name, scope)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


main = raw("main")
alpha = raw("alpha")
beta = raw("beta")


async def bare(scope, receive, send):
    """No lifespan support: raises on the lifespan scope."""
    assert scope["type"] == "http", "bare serves http only"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"bare"})


@contextlib.asynccontextmanager
async def star_lifespan(app):
    record("star startup")
    yield {"star": "star up"}
    record("star shutdown")


async def star_home(request: Request):
    return JSONResponse({
        "app": "star",
        "url_path": request.url.path,
        "root_path": request.scope["root_path"],
        "star": request.state.star,
        "alpha": request.state.alpha,
    })


async def star_ws(websocket: WebSocket):
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(f"star {websocket.scope['root_path']} {text}")
    await websocket.close()


star = Starlette(
    routes=[Route("/", star_home), WebSocketRoute("/ws", star_ws)],
    lifespan=star_lifespan,
)

# `--wsgi-file asgi_mount.py` (the nginx test's main app) serves `main`.
application = main
