"""The router and nginx tests' app: small answers that say which request and which worker.

Routes (by PATH_INFO):
    /, /pid            the worker's pid
    /environ           the CGI part of the environ (str values) as JSON, plus the pid
    /echo-path         REQUEST_URI, so a pipelined response names its request
    /sleep?s=S         sleeps S seconds (prints SLEEP-START <pid> first), answers pid/start/end
    /upload            reads the whole body; JSON size + sha256 + CONTENT_LENGTH as seen
    /echo              the body back
    /stream?n=N&d=S    N lines from a generator (no Content-Length: a chunked response),
                       S seconds apart
    /big?mb=N          N MiB from a generator (chunked)
    /boom              raises
"""

import hashlib
import json
import os
import time
from urllib.parse import parse_qs


def _q(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _send(start_response, body, ctype="text/plain", status="200 OK"):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _q(environ)

    if path in ("/", "/pid"):
        return _send(start_response, str(os.getpid()))

    if path.startswith("/environ"):
        out = {k: v for k, v in environ.items() if isinstance(v, str)}
        out["_pid"] = os.getpid()
        out["_url_scheme"] = environ.get("wsgi.url_scheme")
        return _send(start_response, json.dumps(out), "application/json")

    if path == "/echo-path":
        return _send(start_response, environ.get("REQUEST_URI", ""))

    if path == "/sleep":
        secs = float(q.get("s", "1"))
        print(f"SLEEP-START {os.getpid()} {q.get('tag', '')}", flush=True)
        start = time.time()
        time.sleep(secs)
        body = {"pid": os.getpid(), "start": start, "end": time.time(), "tag": q.get("tag")}
        return _send(start_response, json.dumps(body), "application/json")

    if path == "/upload":
        data = environ["wsgi.input"].read()
        body = {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_length": environ.get("CONTENT_LENGTH", ""),
        }
        return _send(start_response, json.dumps(body), "application/json")

    if path == "/echo":
        return _send(start_response, environ["wsgi.input"].read())

    if path == "/stream":
        n = int(q.get("n", "20"))
        delay = float(q.get("d", "0"))

        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            for i in range(n):
                if delay:
                    time.sleep(delay)
                yield f"line {i}\n".encode()

        return gen()

    if path == "/big":
        # N MiB in 64 KiB pieces, no Content-Length
        n = int(q.get("mb", "1")) * 16
        piece = b"x" * 65536

        def big():
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            for _ in range(n):
                yield piece

        return big()

    if path == "/boom":
        raise RuntimeError("rt-boom-marker")

    return _send(start_response, "not found", status="404 Not Found")
