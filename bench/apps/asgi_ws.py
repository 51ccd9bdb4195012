"""WebSocket echo as a raw ASGI 3 app (scenarios asgi-ws, asgi-ws-free).

Accepts every WebSocket and sends each message back as it came (text as text, bytes as
bytes) until the client closes. Plain HTTP requests (the readiness probe) get a 200."""

ACCEPT = {"type": "websocket.accept"}
HTTP_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
HTTP_BODY = {"type": "http.response.body", "body": b"ok"}


async def application(scope, receive, send):
    kind = scope["type"]
    if kind == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send(ACCEPT)
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
    elif kind == "http":
        await send(HTTP_START)
        await send(HTTP_BODY)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
