"""ASGI app for tests/test_router_midstream.py: responses that fail after their head went out.

    /pid              this worker's pid
    /fail             start (no Content-Length), one body with more_body, then raises
    /fail-cl          start with Content-Length 100, 10 bytes with more_body, then raises
    /short?file=PATH  start with Content-Length 100, then a pathsend of PATH (shorter)
    /gap?gap=S        10 bytes with more_body, S seconds of silence, then "end"

`?hold=S` on any path: sleep S seconds first (so that concurrent requests spread over
workers).
"""

import asyncio
import os
from urllib.parse import parse_qs


class MidstreamError(Exception):
    """What the app raises once the response has started."""


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    await asyncio.sleep(float(q.get("hold", "0")))
    path = scope["path"]
    headers = [(b"content-type", b"text/plain")]
    if path in ("/fail-cl", "/short"):
        headers.append((b"content-length", b"100"))
    if path in ("/fail", "/fail-cl"):
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        raise MidstreamError("failed after the first chunk")
    if path == "/gap":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        await asyncio.sleep(float(q["gap"]))
        await send({"type": "http.response.body", "body": b"end"})
        return
    if path == "/short":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": q["file"]})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
