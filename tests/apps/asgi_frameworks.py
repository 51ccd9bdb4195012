"""Starlette and FastAPI apps for tests/test_asgi.py (`--module asgi_frameworks:starlette_app`
or `:fastapi_app`), each with a lifespan that puts state the requests read."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi import Request as FastRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"db": "connected"}


async def home(request: Request):
    return JSONResponse({"db": request.state.db, "path": request.url.path})


async def echo(request: Request):
    body = await request.body()
    return PlainTextResponse(body)


async def stream(request: Request):
    async def parts():
        for i in range(5):
            yield f"part {i}\n".encode()

    return StreamingResponse(parts(), media_type="text/plain")


starlette_app = Starlette(
    routes=[Route("/", home), Route("/echo", echo, methods=["POST"]), Route("/stream", stream)],
    lifespan=lifespan,
)

fastapi_app = FastAPI(lifespan=lifespan)


@fastapi_app.get("/")
async def fast_home(request: FastRequest):
    return {"db": request.state.db, "path": request.url.path}


@fastapi_app.get("/items/{item_id}")
async def fast_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@fastapi_app.post("/echo")
async def fast_echo(request: FastRequest):
    return {"len": len(await request.body())}
