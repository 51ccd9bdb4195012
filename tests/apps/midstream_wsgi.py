"""WSGI app for tests/test_router_midstream.py: responses that fail after their head went out.

    /pid        this worker's pid
    /fail       a generator that yields one chunk, then raises (no Content-Length: chunked)
    /fail-cl    Content-Length 100, one 10-byte chunk, then raises
    /short      Content-Length 100, and only 10 bytes in all (the iterable ends early)
    /stream     one chunk every 50 ms for 20 s (a worker to kill mid-response)
    /gap?gap=S  one 10-byte chunk, S seconds of silence, then "end" (chunked)

`?hold=S` on any path: sleep S seconds first (so that concurrent requests spread over
workers).
"""

import os
import time
from urllib.parse import parse_qs


class MidstreamError(Exception):
    """What the app raises once the response has started."""


def application(environ, start_response):
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    time.sleep(float(q.get("hold", "0")))
    path = environ["PATH_INFO"]
    if path == "/fail":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return fail()
    if path == "/fail-cl":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return fail()
    if path == "/short":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return [b"0123456789"]
    if path == "/gap":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gap(float(q.get("gap", "0")))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def fail():
    yield b"0123456789"
    raise MidstreamError("failed after the first chunk")


def stream():
    for _ in range(400):
        yield b"chunk\n"
        time.sleep(0.05)


def gap(seconds):
    yield b"0123456789"
    time.sleep(seconds)
    yield b"end"
