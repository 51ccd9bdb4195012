"""A raw ASGI app for `http.response.pathsend` (tests/test_asgi_pathsend.py).

    /send?file=PATH[&cl=N][&chunked=1][&status=S]   start, then pathsend PATH
    /nostart?file=PATH                              pathsend without a start
    /catch?file=PATH                                pathsend; the error it raises is the body
    /twice?file=PATH                                pathsend, then a body (raises)
    /ext                                            the scope's extensions, as JSON
    /                                               a small body
"""

import json
from urllib.parse import parse_qs


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/ext":
        body = json.dumps(scope["extensions"]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/nostart":
        await send({"type": "http.response.pathsend", "path": q["file"]})
        return
    if path not in ("/send", "/catch", "/twice"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"app root"})
        return
    headers = [(b"content-type", b"application/octet-stream")]
    if "cl" in q:
        headers.append((b"content-length", q["cl"].encode()))
    if "chunked" in q:
        headers.append((b"transfer-encoding", b"chunked"))
    await send({"type": "http.response.start", "status": int(q.get("status", 200)),
                "headers": headers})
    if path == "/catch":
        try:
            await send({"type": "http.response.pathsend", "path": q["file"]})
        except Exception as e:  # noqa: BLE001 - the test reads what was raised
            await send({"type": "http.response.body",
                        "body": f"{type(e).__name__}: {e}".encode()})
        return
    await send({"type": "http.response.pathsend", "path": q["file"]})
    if path == "/twice":
        await send({"type": "http.response.body", "body": b"more"})
