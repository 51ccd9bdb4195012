"""Starlette and FastAPI, mounted side by side under one Starlette app with a lifespan, for the
framework part of tests/test_asgi_compliance.py (the checks of gunicorn's
tests/docker/asgi_compliance/test_framework_integration.py, written afresh).

    --module asgi_compliance_frameworks:app
    /                   which apps are mounted       /health
    /starlette/...      /, /json, /echo, /headers, /scope, /health, /streaming, /state, /ws/echo
    /fastapi/...        the same plus /items/{id} (GET, with ?q=) and /items/ (POST)
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI, WebSocket
from fastapi import Request as FastRequest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect


def plain_scope(scope) -> dict:
    return {
        "type": scope["type"],
        "asgi": scope["asgi"],
        "http_version": scope["http_version"],
        "method": scope["method"],
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "query_string": scope["query_string"].decode("latin-1"),
    }


async def ten_chunks():
    for i in range(1, 11):
        yield f"Chunk {i}\n".encode()


# --- Starlette ---------------------------------------------------------------------------


async def st_home(request: Request):
    return HTMLResponse("<h1>Starlette on headrace</h1>")


async def st_json(request: Request):
    return JSONResponse({"framework": "starlette", "query_params": dict(request.query_params)})


async def st_echo(request: Request):
    return PlainTextResponse(await request.body())


async def st_headers(request: Request):
    return JSONResponse(dict(request.headers))


async def st_scope(request: Request):
    return JSONResponse(plain_scope(request.scope))


async def st_health(request: Request):
    return JSONResponse({"status": "ok", "framework": "starlette"})


async def st_streaming(request: Request):
    return StreamingResponse(ten_chunks(), media_type="text/plain")


async def st_state(request: Request):
    return JSONResponse({"db": request.state.db, "hits": request.state.hits.bump()})


async def st_ws_echo(ws: StarletteWebSocket):
    await ws.accept()
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            text = await ws.receive_text()
            await ws.send_text(f"Starlette echo: {text}")


starlette_sub = Starlette(
    routes=[
        Route("/", st_home),
        Route("/json", st_json),
        Route("/echo", st_echo, methods=["POST"]),
        Route("/headers", st_headers),
        Route("/scope", st_scope),
        Route("/health", st_health),
        Route("/streaming", st_streaming),
        Route("/state", st_state),
        WebSocketRoute("/ws/echo", st_ws_echo),
    ]
)


# --- FastAPI -----------------------------------------------------------------------------

fastapi_sub = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@fastapi_sub.get("/")
async def fa_home():
    return {"message": "Hello from FastAPI on headrace"}


@fastapi_sub.get("/json")
async def fa_json(request: FastRequest):
    return {"framework": "fastapi", "query_params": dict(request.query_params)}


@fastapi_sub.post("/echo")
async def fa_echo(request: FastRequest):
    body = (await request.body()).decode()
    return {"echo": body, "length": len(body)}


@fastapi_sub.get("/headers")
async def fa_headers(request: FastRequest):
    return dict(request.headers)


@fastapi_sub.get("/scope")
async def fa_scope(request: FastRequest):
    return plain_scope(request.scope)


@fastapi_sub.get("/health")
async def fa_health():
    return {"status": "ok"}


@fastapi_sub.get("/streaming")
async def fa_streaming():
    return StreamingResponse(ten_chunks(), media_type="text/plain")


@fastapi_sub.get("/state")
async def fa_state(request: FastRequest):
    return {"db": request.state.db, "hits": request.state.hits.bump()}


@fastapi_sub.get("/items/{item_id}")
async def fa_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "query": q}


@fastapi_sub.post("/items/")
async def fa_create(item: Item):
    return {"created": item.model_dump()}


@fastapi_sub.websocket("/ws/echo")
async def fa_ws_echo(ws: WebSocket):
    await ws.accept()
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            text = await ws.receive_text()
            await ws.send_text(f"FastAPI echo: {text}")


# --- the outer app -----------------------------------------------------------------------


class Hits:
    """Shared by every request through the lifespan state (a shallow copy keeps the object)."""

    def __init__(self):
        self.n = 0

    def bump(self) -> int:
        self.n += 1
        return self.n


@contextlib.asynccontextmanager
async def lifespan(_app):
    yield {"db": "connected", "hits": Hits()}


async def root(request: Request):
    return JSONResponse({"apps": ["starlette", "fastapi"]})


async def health(request: Request):
    return PlainTextResponse("OK")


app = Starlette(
    routes=[
        Route("/", root),
        Route("/health", health),
        Mount("/starlette", app=starlette_sub),
        Mount("/fastapi", app=fastapi_sub),
    ],
    lifespan=lifespan,
)
