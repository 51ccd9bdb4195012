"""The e2e suite's main app: one route per behaviour, chosen by PATH_INFO.

Routes record what happened where a test cannot see it over the socket (close() calls, what
`wsgi.input.read()` did when the client vanished) as files in $HR_RECORD.
"""

import hashlib
import io
import json
import os
import sys
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


# --lazy-apps tests read which processes imported the app.
record(f"import-{os.getpid()}", str(os.getpid()))


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def plain(start_response, body, status="200 OK", headers=()):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", "text/plain")] + list(headers))
    return [body]


def jsonable(environ):
    out = {}
    for k, v in environ.items():
        if isinstance(v, (str, bool, int)):
            out[k] = v
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = "<" + type(v).__name__ + ">"
    out["_environ_type"] = type(environ).__name__
    out["_non_str_cgi_keys"] = [
        k for k, v in environ.items() if "." not in k and type(v) is not str
    ]
    out["_pid"] = os.getpid()
    return out


class Closing:
    """An iterable whose close() is recorded; `fail_at` raises while iterating."""

    def __init__(self, tag, parts, fail_at=None, delay=0.0):
        self.tag = tag
        self.parts = parts
        self.fail_at = fail_at
        self.delay = delay
        record(f"close-{tag}", "iterating")

    def __iter__(self):
        for i, p in enumerate(self.parts):
            if i == self.fail_at:
                raise RuntimeError(f"boom-in-iteration-{self.tag}")
            if self.delay:
                time.sleep(self.delay)
            yield p

    def close(self):
        record(f"close-{self.tag}", "closed")


class RecordingFile(io.FileIO):
    """A real file (so it has fileno() and can be sendfile'd) whose close() is recorded."""

    tag = "file"

    def close(self):
        record(f"close-{self.tag}", "closed")
        super().close()


def read_body(inp, mode, n):
    if mode == "read":
        return inp.read()
    if mode == "readn":
        parts = []
        while True:
            chunk = inp.read(n)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
    if mode == "readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                return b"".join(parts)
            parts.append(line)
    if mode == "readlines":
        return b"".join(inp.readlines())
    if mode == "iter":
        return b"".join(inp)
    if mode == "big":
        return inp.read(10**9)
    if mode == "minus1":
        return inp.read(-1)
    if mode == "none":
        return inp.read(None)
    raise ValueError(mode)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = query(environ)
    inp = environ["wsgi.input"]

    if path in ("/", "/pid"):
        return plain(start_response, str(os.getpid()))

    if path.startswith("/environ"):
        body = json.dumps(jsonable(environ)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    if path == "/echo":
        if "delay" in q:
            time.sleep(float(q["delay"]))
        if "mark" in q:
            print(q["mark"])
        data = read_body(inp, q.get("mode", "read"), int(q.get("n", "7")))
        after = inp.read(10)
        headers = [
            ("X-Len", str(len(data))),
            ("X-Sha256", hashlib.sha256(data).hexdigest()),
            ("X-After", str(len(after))),
        ]
        return plain(start_response, data, headers=headers)

    if path == "/readline-n":
        # body "abcdef\nghi\njkl" → readline(3), readline(), readline(-1)?, readlines()
        first = inp.readline(3)
        second = inp.readline()
        rest = inp.readlines()
        after = inp.readline()
        out = {
            "first": first.decode("latin-1"),
            "second": second.decode("latin-1"),
            "rest": [x.decode("latin-1") for x in rest],
            "after": after.decode("latin-1"),
        }
        return plain(start_response, json.dumps(out))

    if path == "/stream-read":
        first = inp.read(5)
        print(f"STREAM-FIRST {first.decode('latin-1')}")
        rest = inp.read()
        return plain(start_response, first + b"|" + rest)

    if path == "/sleep":
        secs = float(q.get("s", "1"))
        start = time.time()
        print(f"SLEEP-START {os.getpid()} {q.get('tag', '')}")
        time.sleep(secs)
        end = time.time()
        return plain(start_response, json.dumps({"pid": os.getpid(), "start": start, "end": end}))

    if path == "/raise":
        raise RuntimeError("boom-before-headers")

    if path == "/raise-after":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first-chunk"
            raise RuntimeError("boom-after-headers")
        return gen()

    if path == "/list":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello", b" ", b"world"]

    if path == "/tuple":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"ab", b"cd")

    if path == "/empty":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    if path == "/gen":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            for i in range(5):
                yield b"chunk%d\n" % i
        return gen()

    if path == "/gen-cl":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
            yield b"abcdef"
            yield b"ghijkl"
        return gen()

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written-")
        return [b"returned"]

    if path == "/write-only":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"abc")
        write(b"def")
        return []

    if path == "/file":
        RecordingFile.tag = q.get("tag", "file")
        f = RecordingFile(q["path"], "rb")
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl"):
            headers.append(("Content-Length", str(os.path.getsize(q["path"]))))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 65536)

    if path == "/filelike":
        data = b"0123456789" * 10000
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 4096)

    if path == "/hop":
        return plain(start_response, "should not be sent", headers=[(q["name"], q["value"])])

    if path == "/twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("201 Created", [("Content-Type", "text/plain")])
        except Exception as e:
            record("twice", f"raised {type(e).__name__}")
            raise
        record("twice", "returned")
        return [b"second start_response was accepted"]

    if path == "/excinfo-before":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("replaced-before-body")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"replaced"]

    if path == "/excinfo-empty-first":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b""
            try:
                raise ValueError("late-error")
            except ValueError:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                               sys.exc_info())
            yield b"late-error-page"
        return gen()

    if path == "/excinfo-after":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"sent"
            try:
                raise ValueError("boom-excinfo-after")
            except ValueError:
                try:
                    start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                                   sys.exc_info())
                except Exception as e:
                    record("excinfo-after", f"raised {type(e).__name__}")
                    raise
                record("excinfo-after", "returned")
            yield b"should-never-arrive"
        return gen()

    if path == "/close":
        tag = q.get("tag", "x")
        mode = q.get("mode", "ok")
        start_response("200 OK", [("Content-Type", "text/plain")])
        if mode == "ok":
            return Closing(tag, [b"a", b"b", b"c"])
        if mode == "raise":
            return Closing(tag, [b"a", b"b", b"c"], fail_at=1)
        if mode == "slow":  # 400 x 64 KiB, 10 ms apart: the client leaves early
            return Closing(tag, [b"x" * 65536] * 400, delay=0.01)
        raise ValueError(mode)

    if path == "/print":
        print(q.get("msg", "PRINTED"), file=sys.stderr if q.get("stderr") else sys.stdout)
        return plain(start_response, "printed")

    if path == "/raise-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("boom-after-start-response")

    if path == "/raise-before-first-yield":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            raise RuntimeError("boom-before-first-yield")
            yield b"never"
        return gen()

    if path == "/str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]

    if path == "/bad-header":
        kind = q.get("kind")
        if kind == "crlf":
            headers = [("X-Split", "a\r\nInjected: yes")]
        elif kind == "non-latin1":
            headers = [("X-Euro", "\u20ac")]
        elif kind == "bytes":
            headers = [("X-Bytes", b"value")]
        elif kind == "status":
            start_response("200 OK\r\nInjected: yes", [("Content-Type", "text/plain")])
            return [b"bad status"]
        else:
            raise ValueError(kind)
        start_response("200 OK", [("Content-Type", "text/plain")] + headers)
        return [b"bad header accepted"]

    if path == "/errors":
        err = environ["wsgi.errors"]
        err.write(q.get("msg", "ERRORS") + "\n")
        err.flush()
        return plain(start_response, "written")

    if path == "/upload-record":
        tag = q.get("tag", "u")
        record(f"upload-{tag}", "started")
        try:
            data = read_body(inp, q.get("mode", "read"), 4096)
        except Exception as e:
            record(f"upload-{tag}", f"error {type(e).__name__}: {e}")
            raise
        record(f"upload-{tag}", f"ok {len(data)}")
        return plain(start_response, str(len(data)))

    if path == "/env":
        return plain(start_response, os.environ.get(q["name"], "<unset>"))

    if path == "/cwd":
        return plain(start_response, os.getcwd())

    if path == "/status":
        code = q.get("code", "200")
        start_response(f"{code} Status", [("Content-Type", "text/plain")])
        return [] if code in ("204", "304") else [b"status"]

    return plain(start_response, "not found", status="404 Not Found")
