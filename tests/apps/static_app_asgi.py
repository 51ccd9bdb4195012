"""The ASGI twin of static_app.py: it says who answered, so a test can tell a static hit (the
file's bytes, served by headrace before the app) from a fall-through to the app."""

import os


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/":
        body, status = b"app root", 200
    elif path == "/pid":
        body, status = str(os.getpid()).encode(), 200
    else:
        body, status = b"app 404 " + path.encode("utf-8", "surrogateescape"), 404
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
