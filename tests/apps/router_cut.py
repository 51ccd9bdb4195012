"""WSGI app for tests/test_router_asgi.py: what the router does when a client leaves a request
a worker is serving. Records go to HR_RECORD."""

import os
import time
from pathlib import Path
from urllib.parse import parse_qs

RECORD = Path(os.environ.get("HR_RECORD", "."))


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/pid":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/slow":
        time.sleep(float(q.get("s", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done\n" * 20000]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream(q["tag"])
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


def stream(tag):
    """400 chunks, one every 50 ms (20 s in all); records how many went out when it ends."""
    sent = 0
    try:
        for _ in range(400):
            yield b"chunk\n"
            sent += 1
            time.sleep(0.05)
    finally:
        (RECORD / f"stream-{tag}").write_text(f"{sent}\n")
