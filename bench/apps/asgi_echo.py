"""Streamed echo as a raw ASGI 3 app (scenarios asgi-echo, asgi-echo-free).

Sends the response head at once, then every chunk of the request body back as it arrives
(`more_body: True`), so the server has to stream both ways at the same time: the response has
no Content-Length (HTTP/1.1 chunked encoding). A GET (the readiness probe) gets an empty 200."""

START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/octet-stream")],
}


async def application(scope, receive, send):
    if scope["type"] == "http":
        await send(START)
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more = message.get("more_body", False)
            body = message.get("body", b"")
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
