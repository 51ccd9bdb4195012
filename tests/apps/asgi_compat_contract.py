"""gunicorn's ASGI framework contract (tests/docker/asgi_framework_compat/frameworks/contract.py
in benoitc/gunicorn: the same endpoints in every framework), written afresh for Starlette and
FastAPI (`--module asgi_compat_contract:starlette_app` or `:fastapi_app`); the Django version is
tests/apps/django_asgi/djasgi (`djasgi.contract:application`).

    /health /scope /echo /headers /status/{code} /streaming /sse /large?size= /delay?seconds=
    /lifespan/state /lifespan/counter          /ws/echo /ws/echo-binary /ws/scope
    /ws/subprotocol /ws/close?code=

Lifespan state goes through the ASGI `state` (what headrace copies into each request's scope):
plain values, plus one mutable counter object that every request's shallow copy shares."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from fastapi import FastAPI
from fastapi import Request as FastRequest
from fastapi import WebSocket as FastWebSocket
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


class Counter:
    def __init__(self):
        self.value = 0


@contextlib.asynccontextmanager
async def lifespan(_app):
    yield {
        "startup_called": True,
        "startup_time": time.time(),
        "custom_data": {"initialized": True},
        "counter": Counter(),
    }


def scope_json(scope) -> dict:
    """The ASGI keys of a scope as JSON (framework additions such as `app` left out)."""
    out = {}
    for key in ("type", "asgi", "http_version", "method", "scheme", "path", "root_path",
                "subprotocols"):
        if key in scope:
            out[key] = scope[key]
    out["raw_path"] = (scope.get("raw_path") or b"").decode("latin-1")
    out["query_string"] = scope["query_string"].decode("latin-1")
    out["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    out["server"] = list(scope["server"]) if scope.get("server") else None
    out["client"] = list(scope["client"]) if scope.get("client") else None
    return out


async def numbered_lines():
    for i in range(10):
        yield f"chunk-{i}\n"
        await asyncio.sleep(0.01)


async def sse_events():
    for i in range(5):
        yield f"event: message\ndata: {json.dumps({'count': i})}\n\n"
        await asyncio.sleep(0.01)
    yield "event: done\ndata: {}\n\n"


def state_view(state) -> dict:
    return {
        "startup_called": state.startup_called,
        "startup_time": state.startup_time,
        "custom_data": state.custom_data,
        "counter": state.counter.value,
    }


def bump(state) -> dict:
    state.counter.value += 1
    return {"counter": state.counter.value}


async def ws_contract(ws: WebSocket, kind: str):
    """The WebSocket endpoints, in Starlette's (and FastAPI's) WebSocket API."""
    if kind == "subprotocol":
        offered = list(ws.scope.get("subprotocols") or [])
        chosen = "myproto" if "myproto" in offered else (offered[0] if offered else None)
        await ws.accept(subprotocol=chosen)
        await ws.send_text(json.dumps({"requested": offered, "selected": chosen}))
    else:
        await ws.accept()
    if kind == "close":
        await ws.close(code=int(ws.query_params.get("code", "1000")))
        return
    if kind == "scope":
        await ws.send_text(json.dumps(scope_json(ws.scope)))
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if kind == "echo-binary":
                data = msg.get("bytes")
                await ws.send_bytes(data if data is not None else msg["text"].encode())
            elif kind == "echo":
                if msg.get("text") is not None:
                    await ws.send_text(msg["text"])
                else:
                    await ws.send_bytes(msg["bytes"])


# --- Starlette ---------------------------------------------------------------------------


async def st_health(request: Request):
    return PlainTextResponse("OK")


async def st_scope(request: Request):
    return JSONResponse(scope_json(request.scope))


async def st_echo(request: Request):
    ctype = request.headers.get("content-type", "application/octet-stream")
    return Response(await request.body(), media_type=ctype)


async def st_headers(request: Request):
    return JSONResponse(dict(request.headers))


async def st_status(request: Request):
    code = int(request.path_params["code"])
    return PlainTextResponse(f"Status: {code}", status_code=code)


async def st_streaming(request: Request):
    return StreamingResponse(numbered_lines(), media_type="text/plain")


async def st_sse(request: Request):
    return StreamingResponse(sse_events(), media_type="text/event-stream")


async def st_large(request: Request):
    size = min(int(request.query_params.get("size", "1024")), 10 << 20)
    return Response(b"x" * size, media_type="application/octet-stream")


async def st_delay(request: Request):
    seconds = min(float(request.query_params.get("seconds", "1")), 10.0)
    await asyncio.sleep(seconds)
    return JSONResponse({"delayed": seconds})


async def st_state(request: Request):
    return JSONResponse(state_view(request.state))


async def st_counter(request: Request):
    return JSONResponse(bump(request.state))


def st_ws(kind: str):
    async def endpoint(ws: WebSocket):
        await ws_contract(ws, kind)

    return endpoint


starlette_app = Starlette(
    routes=[
        Route("/health", st_health),
        Route("/scope", st_scope),
        Route("/echo", st_echo, methods=["POST"]),
        Route("/headers", st_headers),
        Route("/status/{code:int}", st_status),
        Route("/streaming", st_streaming),
        Route("/sse", st_sse),
        Route("/large", st_large),
        Route("/delay", st_delay),
        Route("/lifespan/state", st_state),
        Route("/lifespan/counter", st_counter),
        *(WebSocketRoute(f"/ws/{k}", st_ws(k))
          for k in ("echo", "echo-binary", "scope", "subprotocol", "close")),
    ],
    lifespan=lifespan,
)


# --- FastAPI -----------------------------------------------------------------------------

fastapi_app = FastAPI(lifespan=lifespan)


@fastapi_app.get("/health")
async def fa_health():
    return PlainTextResponse("OK")


@fastapi_app.get("/scope")
async def fa_scope(request: FastRequest):
    return scope_json(request.scope)


@fastapi_app.post("/echo")
async def fa_echo(request: FastRequest):
    ctype = request.headers.get("content-type", "application/octet-stream")
    return Response(await request.body(), media_type=ctype)


@fastapi_app.get("/headers")
async def fa_headers(request: FastRequest):
    return dict(request.headers)


@fastapi_app.get("/status/{code}")
async def fa_status(code: int):
    return PlainTextResponse(f"Status: {code}", status_code=code)


@fastapi_app.get("/streaming")
async def fa_streaming():
    return StreamingResponse(numbered_lines(), media_type="text/plain")


@fastapi_app.get("/sse")
async def fa_sse():
    return StreamingResponse(sse_events(), media_type="text/event-stream")


@fastapi_app.get("/large")
async def fa_large(size: int = 1024):
    return Response(b"x" * min(size, 10 << 20), media_type="application/octet-stream")


@fastapi_app.get("/delay")
async def fa_delay(seconds: float = 1.0):
    seconds = min(seconds, 10.0)
    await asyncio.sleep(seconds)
    return {"delayed": seconds}


@fastapi_app.get("/lifespan/state")
async def fa_state(request: FastRequest):
    return state_view(request.state)


@fastapi_app.get("/lifespan/counter")
async def fa_counter(request: FastRequest):
    return bump(request.state)


def fa_ws(kind: str):
    async def endpoint(ws: FastWebSocket):
        await ws_contract(ws, kind)

    return endpoint


for _kind in ("echo", "echo-binary", "scope", "subprotocol", "close"):
    fastapi_app.add_api_websocket_route(f"/ws/{_kind}", fa_ws(_kind))
