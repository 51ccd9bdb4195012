"""App for tests/test_hardening.py: records, in $HR_RECORD, what the app saw when a client
misbehaved (a body read that raised, a response iterable's close()), so the tests can check
the server never hands the app a silent short body and always closes the iterable.
"""

import os
import time
from urllib.parse import parse_qs

RECORD = os.environ.get("HR_RECORD")


def record(name, text):
    if not RECORD:
        return
    path = os.path.join(RECORD, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


class Recorded:
    """A response iterable whose close() is recorded as `close-<tag>`."""

    def __init__(self, tag, parts):
        self.tag = tag
        self.parts = parts

    def __iter__(self):
        return iter(self.parts)

    def close(self):
        record(f"close-{self.tag}", "closed")


class Sink(Recorded):
    """Reads the body lazily while the response is iterated; a failed read is recorded as
    `read-<tag>` and re-raised (the server must not log it as an app traceback)."""

    def __init__(self, tag, inp):
        super().__init__(tag, [])
        self.inp = inp

    def __iter__(self):
        total = 0
        try:
            while True:
                chunk = self.inp.read(4096)
                if not chunk:
                    break
                total += len(chunk)
        except Exception as e:
            record(f"read-{self.tag}", f"error {type(e).__name__}: {e}")
            raise
        record(f"read-{self.tag}", f"ok {total}")
        yield b"%d" % total


class Stream(Recorded):
    """`n` chunks of `size` bytes, `delay` s apart."""

    def __init__(self, tag, n, size, delay):
        super().__init__(tag, [])
        self.n, self.size, self.delay = n, size, delay

    def __iter__(self):
        chunk = b"s" * self.size
        for _ in range(self.n):
            if self.delay:
                time.sleep(self.delay)
            yield chunk


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = query(environ)
    tag = q.get("tag", "x")
    if path in ("/", "/pid"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/sink":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Sink(tag, environ["wsgi.input"])
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Stream(tag, int(q.get("n", "400")), int(q.get("size", "65536")),
                      float(q.get("delay", "0.01")))
    if path == "/slow-read":
        started = time.monotonic()
        try:
            data = environ["wsgi.input"].read()
        except Exception as e:
            waited = time.monotonic() - started
            record(f"read-{tag}", f"error {type(e).__name__} after {waited:.1f}s: {e}")
            raise
        record(f"read-{tag}", f"ok {len(data)}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % len(data)]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
