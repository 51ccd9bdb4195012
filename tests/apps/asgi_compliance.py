"""The raw ASGI 3 testbed for tests/test_asgi_compliance.py: the endpoints gunicorn's black-box
ASGI compliance suite talks to (tests/docker/asgi_compliance in benoitc/gunicorn), written
afresh for headrace.

Routes: `/`, `/health`, `/info`; `/http/...` (echo, headers, scope, status, large, method,
query, post-json, delay, cookies, redirect); `/stream/...` (streaming, sse, chunked,
slow-stream, large-stream, echo-stream, ndjson); `/lifespan/...` (state, lifespan-info,
counter); `/disconnect` (waits for `http.disconnect` and records it in $HR_RECORD); `/rendezvous`
(answers once N requests are in the app at once);
`/ws/...` (WebSocket endpoints: echo, echo-binary, subprotocol, close, scope, reject,
broadcast, large, fragmented, delay, and anything else is accepted then closed)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import parse_qsl

# Set by lifespan startup in this process; `/info` reads it.
STARTED: dict = {"at": None, "pid": None}


def query(scope) -> dict[str, str]:
    return dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))


async def read_body(receive) -> bytes:
    parts = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        parts.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(parts)


async def respond(send, status: int, body: bytes, ctype: bytes = b"text/plain", extra=()):
    """One whole response with its Content-Length."""
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, obj, status: int = 200):
    await respond(send, status, json.dumps(obj).encode(), b"application/json")


async def start_stream(send, ctype: bytes, extra=()):
    """A response without Content-Length: the server frames it (chunked on HTTP/1.1)."""
    headers = [(b"content-type", ctype), *extra]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


def jsonable_state(state) -> dict:
    out = {}
    for k, v in state.items():
        try:
            json.dumps(v)
            out[k] = v
        except (TypeError, ValueError):
            out[k] = type(v).__name__
    return out


def scope_view(scope) -> dict:
    """The scope as JSON: bytes as latin-1 text, with the Python type of each field too."""
    return {
        "type": scope["type"],
        "asgi": scope["asgi"],
        "http_version": scope["http_version"],
        "method": scope.get("method"),
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1") if scope.get("raw_path") else None,
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope.get("root_path", ""),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "server": list(scope["server"]) if scope.get("server") else None,
        "client": list(scope["client"]) if scope.get("client") else None,
        "subprotocols": scope.get("subprotocols"),
        "extensions": {k: str(v) for k, v in (scope.get("extensions") or {}).items()},
        "state_keys": sorted(scope["state"]) if "state" in scope else None,
        "types": {
            "query_string": type(scope["query_string"]).__name__,
            "raw_path": type(scope.get("raw_path")).__name__,
            "header_name": type(scope["headers"][0][0]).__name__ if scope["headers"] else None,
            "server_port": type(scope["server"][1]).__name__ if scope.get("server") else None,
            "client_port": type(scope["client"][1]).__name__ if scope.get("client") else None,
        },
    }


# --- lifespan ----------------------------------------------------------------------------


async def lifespan(scope, receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            STARTED["at"] = time.time()
            STARTED["pid"] = os.getpid()
            state = scope.get("state")
            if state is not None:
                state["main_app_started"] = True
                state["startup_time"] = STARTED["at"]
                state["startup_pid"] = os.getpid()
                state["db_connection"] = "simulated_connection"
                # A mutable object: every request's shallow copy of the state shares it.
                state["counter"] = {"n": 0}
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --- /http -------------------------------------------------------------------------------


async def http_app(scope, receive, send, path):
    q = query(scope)
    if path == "/":
        await read_body(receive)
        await respond(send, 200, b"Hello, ASGI!", b"text/plain; charset=utf-8")
    elif path == "/echo":
        body = await read_body(receive)
        await respond(send, 200, body, b"application/octet-stream")
    elif path in ("/headers", "/scope", "/method"):
        await read_body(receive)
        if path == "/headers":
            out: dict = {}
            for k, v in scope["headers"]:
                name, value = k.decode("latin-1"), v.decode("latin-1")
                if name in out:
                    prev = out[name]
                    out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
                else:
                    out[name] = value
            await respond_json(send, out)
        elif path == "/scope":
            await respond_json(send, scope_view(scope))
        else:
            await respond_json(send, {"method": scope["method"]})
    elif path == "/status":
        await read_body(receive)
        try:
            code = int(q.get("code", "200"))
        except ValueError:
            code = 400
        if not 100 <= code < 600:
            code = 400
        body = b"" if code in (204, 304) else f"Status: {code}".encode()
        headers = [(b"content-type", b"text/plain")]
        if code not in (204, 304):
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/large":
        await read_body(receive)
        size = min(int(q.get("size", 1 << 20)), 10 << 20)
        await respond(send, 200, b"x" * size, b"application/octet-stream")
    elif path == "/query":
        await read_body(receive)
        raw = scope["query_string"].decode("latin-1")
        params: dict = {}
        for part in filter(None, raw.split("&")):
            k, _, v = part.partition("=")
            params[k] = v
        await respond_json(send, {"raw": raw, "params": params})
    elif path == "/post-json":
        if scope["method"] != "POST":
            await read_body(receive)
            await respond(send, 405, b"Method Not Allowed", extra=[(b"allow", b"POST")])
            return
        body = await read_body(receive)
        try:
            data = json.loads(body)
        except ValueError as e:
            await respond(send, 400, f"Invalid JSON: {e}".encode())
            return
        await respond_json(send, {"received": data, "type": type(data).__name__})
    elif path == "/delay":
        await read_body(receive)
        seconds = min(float(q.get("seconds", "0.2")), 5.0)
        await asyncio.sleep(seconds)
        await respond_json(send, {"delayed": seconds})
    elif path == "/cookies":
        await read_body(receive)
        got = {}
        for k, v in scope["headers"]:
            if k == b"cookie":
                for item in v.decode("latin-1").split(";"):
                    name, _, value = item.strip().partition("=")
                    if name:
                        got[name] = value
        to_set = [(b"set-cookie", q["set"].encode())] if "set" in q else []
        body = json.dumps({"request_cookies": got}).encode()
        await respond(send, 200, body, b"application/json", to_set)
    elif path == "/redirect":
        await read_body(receive)
        status = int(q.get("status", "302"))
        if status not in (301, 302, 303, 307, 308):
            status = 302
        await respond(send, status, b"", extra=[(b"location", q.get("to", "/").encode())])
    else:
        await read_body(receive)
        await respond(send, 404, b"Not Found")


# --- /stream -----------------------------------------------------------------------------


async def stream_app(scope, receive, send, path):
    q = query(scope)
    if path == "/echo-stream":
        # The response starts before the request body is read, and each piece of the
        # body is echoed as it arrives.
        await start_stream(send, b"application/octet-stream")
        n = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            if msg.get("body"):
                n += 1
                piece = b"[chunk %d]: " % n + msg["body"] + b"\n"
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            if not msg.get("more_body"):
                break
        summary = f"Total chunks received: {n}\n".encode()
        await send({"type": "http.response.body", "body": summary})
        return
    await read_body(receive)
    if path == "/streaming":
        n = min(int(q.get("chunks", "5")), 100)
        await start_stream(send, b"text/plain")
        for i in range(n):
            piece = f"Chunk {i + 1} of {n}\n".encode()
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/sse":
        n = min(int(q.get("events", "5")), 100)
        delay = min(float(q.get("delay", "0.05")), 2.0)
        await start_stream(
            send, b"text/event-stream", [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        )
        for i in range(n):
            data = json.dumps({"id": i + 1, "total": n, "timestamp": time.time()})
            event = f"id: {i + 1}\nevent: message\ndata: {data}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": i < n - 1})
            if i < n - 1 and delay:
                await asyncio.sleep(delay)
        if n == 0:
            await send({"type": "http.response.body", "body": b""})
    elif path == "/chunked":
        sizes = [min(int(s), 100_000) for s in q.get("sizes", "100,500,1000").split(",")]
        await start_stream(send, b"application/octet-stream")
        for i, size in enumerate(sizes):
            await send(
                {"type": "http.response.body", "body": bytes([i % 256]) * size, "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow-stream":
        n = min(int(q.get("chunks", "3")), 20)
        delay = min(float(q.get("delay", "0.2")), 2.0)
        await start_stream(send, b"text/plain")
        for i in range(n):
            piece = f"[{time.time():.3f}] Slow chunk {i + 1}/{n}\n".encode()
            await send({"type": "http.response.body", "body": piece, "more_body": i < n - 1})
            if i < n - 1:
                await asyncio.sleep(delay)
    elif path == "/large-stream":
        total = min(int(q.get("size", 1 << 20)), 64 << 20)
        step = max(1, min(int(q.get("chunk", 65536)), 1 << 20))
        await start_stream(send, b"application/octet-stream")
        sent = 0
        while sent < total:
            piece = b"x" * min(step, total - sent)
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < total})
        if total == 0:
            await send({"type": "http.response.body", "body": b""})
    elif path == "/ndjson":
        n = min(int(q.get("records", "5")), 1000)
        delay = min(float(q.get("delay", "0")), 2.0)
        await start_stream(send, b"application/x-ndjson")
        for i in range(n):
            line = json.dumps({"id": i + 1, "timestamp": time.time(), "data": f"Record {i + 1}"})
            await send(
                {"type": "http.response.body", "body": line.encode() + b"\n", "more_body": True}
            )
            if delay:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b""})
    else:
        await respond(send, 404, b"Not Found")


# --- /lifespan ---------------------------------------------------------------------------


async def lifespan_app(scope, receive, send, path):
    await read_body(receive)
    state = scope.get("state")
    if path == "/":
        await respond(send, 200, b"Lifespan Test App")
    elif path == "/state":
        await respond_json(
            send,
            {
                "scope_state_available": state is not None,
                "scope_state": jsonable_state(state) if state is not None else None,
                "pid": os.getpid(),
            },
        )
    elif path == "/lifespan-info":
        await respond_json(
            send,
            {
                "lifespan_supported": True,
                "scope_state_present": state is not None,
                "state_keys": sorted(state) if state is not None else [],
                "db_connection_status": "active" if state and "db_connection" in state else None,
            },
        )
    elif path == "/counter":
        # The per-request state is a shallow copy (ASGI spec 2.5): a top-level key set here
        # is gone next request, while the mutable object lifespan put there is shared.
        counter = state["counter"]
        counter["n"] += 1
        state["top_level_write"] = counter["n"]
        await respond_json(send, {"counter": counter["n"], "pid": os.getpid()})
    elif path == "/top-level":
        await respond_json(send, {"top_level_write": state.get("top_level_write")})
    else:
        await respond(send, 404, b"Not Found")


# --- /rendezvous --------------------------------------------------------------------------

RENDEZVOUS: dict[str, list] = {}


async def rendezvous(scope, receive, send):
    """`/rendezvous?name=X&n=N`: wait (at most ?wait= s, default 5) until N requests named X
    are inside the app at once; answer "met" or "alone". Says whether a worker runs requests
    concurrently without timing anything."""
    q = query(scope)
    await read_body(receive)
    name, n = q.get("name", "x"), int(q.get("n", "2"))
    group = RENDEZVOUS.setdefault(name, [])
    event = asyncio.Event()
    group.append(event)
    if len(group) >= n:
        for e in group:
            e.set()
    try:
        await asyncio.wait_for(event.wait(), min(float(q.get("wait", "5")), 30.0))
        body = b"met"
    except asyncio.TimeoutError:
        body = b"alone"
    await respond(send, 200, body)


# --- /disconnect -------------------------------------------------------------------------


async def wait_disconnect(scope, receive, send):
    """Read the body, then wait (?wait= seconds, at most 30) for the client to go away; record what
    receive() returned and whether send() then raises, in $HR_RECORD/disconnect-<tag>."""
    q = query(scope)
    tag = q.get("tag", "x")
    body = await read_body(receive)
    try:
        msg = await asyncio.wait_for(receive(), min(float(q.get("wait", "30")), 30.0))
    except asyncio.TimeoutError:
        msg = {"type": "timeout"}
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})
        after = "send-ok"
    except OSError as e:
        after = f"send-raised-{type(e).__name__}"
    record = os.environ.get("HR_RECORD")
    if record:
        with open(os.path.join(record, f"disconnect-{tag}"), "w") as f:  # noqa: ASYNC230
            f.write(f"{len(body)} {msg['type']} {after}\n")


# --- /ws ---------------------------------------------------------------------------------


async def ws_app(scope, receive, send):
    path = scope["path"]
    q = query(scope)
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    if path == "/ws/reject":
        await send({"type": "websocket.close", "code": 1008, "reason": "Connection rejected"})
        return
    if path == "/ws/subprotocol":
        wanted = list(scope.get("subprotocols") or [])
        chosen = next((p for p in ("graphql-ws", "json", "wamp") if p in wanted), None)
        if chosen is None and wanted:
            chosen = wanted[0]
        accept = {"type": "websocket.accept"}
        if chosen:
            accept["subprotocol"] = chosen
        await send(accept)
        await send(
            {"type": "websocket.send", "text": json.dumps({"requested": wanted, "selected": chosen})}
        )
    else:
        await send({"type": "websocket.accept"})
    if path == "/ws/close":
        msg = {"type": "websocket.close", "code": int(q.get("code", "1000"))}
        if q.get("reason"):
            msg["reason"] = q["reason"]
        await send(msg)
        return
    if path == "/ws/scope":
        await send({"type": "websocket.send", "text": json.dumps(scope_view(scope))})
    elif path == "/ws/large":
        size = min(int(q.get("size", 65536)), 1 << 20)
        await send({"type": "websocket.send", "text": "x" * size})
    elif path == "/ws/fragmented":
        await send({"type": "websocket.send", "text": json.dumps({"info": "whole messages"})})
    elif path not in ("/ws/echo", "/ws/echo-binary", "/ws/subprotocol", "/ws/broadcast",
                      "/ws/delay"):
        await send(
            {"type": "websocket.send", "text": json.dumps({"error": "Unknown path", "path": path})}
        )
        await send({"type": "websocket.close", "code": 1000})
        return
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        text, data = msg.get("text"), msg.get("bytes")
        if path == "/ws/echo":
            await send({"type": "websocket.send",
                        "text": text if text is not None else data.decode("utf-8", "replace")})
        elif path == "/ws/echo-binary":
            await send({"type": "websocket.send",
                        "bytes": data if data is not None else text.encode()})
        elif path == "/ws/broadcast":
            n = min(int(q.get("count", "3")), 100)
            for i in range(n):
                out = json.dumps({"copy": i + 1, "of": n, "message": text or ""})
                await send({"type": "websocket.send", "text": out})
        elif path == "/ws/large":
            out = {"received_length": len(text if text is not None else data)}
            await send({"type": "websocket.send", "text": json.dumps(out)})
        elif path == "/ws/fragmented":
            out = {"length": len(text if text is not None else data),
                   "type": "text" if text is not None else "binary"}
            if text is not None:
                out["received"] = text
            await send({"type": "websocket.send", "text": json.dumps(out)})
        elif path == "/ws/delay":
            seconds = min(float(q.get("seconds", "0.2")), 5.0)
            await asyncio.sleep(seconds)
            out = {"delayed_by": seconds, "message": text}
            await send({"type": "websocket.send", "text": json.dumps(out)})


# --- the router --------------------------------------------------------------------------

ROOT_INFO = {
    "app": "ASGI Compliance Testbed",
    "prefixes": ["/http/", "/stream/", "/lifespan/", "/ws/"],
}


async def application(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await lifespan(scope, receive, send)
        return
    if kind == "websocket":
        await ws_app(scope, receive, send)
        return
    path = scope["path"]
    for prefix, handler in (
        ("/http", http_app),
        ("/stream", stream_app),
        ("/lifespan", lifespan_app),
    ):
        if path == prefix or path.startswith(prefix + "/"):
            await handler(scope, receive, send, path[len(prefix):] or "/")
            return
    if path == "/":
        await read_body(receive)
        await respond_json(send, ROOT_INFO)
    elif path == "/health":
        await read_body(receive)
        await respond(send, 200, b"OK")
    elif path == "/info":
        await read_body(receive)
        up = time.time() - STARTED["at"] if STARTED["at"] else None
        await respond_json(
            send,
            {"started": STARTED["pid"] == os.getpid(), "uptime": up,
             "scope_state_available": "state" in scope},
        )
    elif path == "/disconnect":
        await wait_disconnect(scope, receive, send)
    elif path == "/rendezvous":
        await rendezvous(scope, receive, send)
    elif path.startswith("/ws/"):
        await read_body(receive)
        await respond(send, 426, b"WebSocket endpoint", extra=[(b"upgrade", b"websocket")])
    else:
        await read_body(receive)
        await respond(send, 404, b"Not Found")
