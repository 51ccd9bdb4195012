"""App for tests/test_review_wsgi.py: reading a body whose Content-Length lies, and an app
whose threads use wsgi.input or start_response at the same time.

What a route saw is recorded as a file in $HR_RECORD (the tests cannot see it otherwise).
"""

import os
import socket
import struct
import threading
import time

RECORD = os.environ.get("HR_RECORD")
#: how long a route waits for its other thread to be inside a blocking call
RACE_WAIT = 10.0


def record(name, text):
    if not RECORD:
        return
    path = os.path.join(RECORD, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def plain(start_response, body):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode() if isinstance(body, str) else body]


def wait_busy(probe):
    """Call `probe` until it raises RuntimeError (the object is in use by another thread,
    which is blocked in the server with the GIL released); True if it did within RACE_WAIT."""
    deadline = time.monotonic() + RACE_WAIT
    while time.monotonic() < deadline:
        try:
            probe()
        except RuntimeError:
            return True
        time.sleep(0.001)
    return False


def read_body(environ, start_response):
    """POST /read?mode=all|length: wsgi.input.read() or read(CONTENT_LENGTH)."""
    inp = environ["wsgi.input"]
    mode = environ.get("QUERY_STRING", "").partition("mode=")[2]
    record("read", "reading")
    try:
        if mode == "length":
            data = inp.read(int(environ["CONTENT_LENGTH"]))
        else:
            data = inp.read()
    except Exception as e:
        record("read", f"raised {type(e).__name__}: {e}")
        raise
    record("read", f"read {len(data)}")
    return plain(start_response, str(len(data)))


def input_race(environ, start_response):
    """A thread blocks in wsgi.input.read() (the body has not come); meanwhile the app's own
    read raises RuntimeError, and the app returns while that thread still reads."""
    inp = environ["wsgi.input"]
    outcome = {}

    def reader():
        try:
            outcome["data"] = inp.read()
        except Exception as e:  # noqa: BLE001 - recorded for the test
            outcome["error"] = type(e).__name__

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    raced = wait_busy(lambda: inp.read(0))
    record("input-race", "busy" if raced else "never busy")

    def after():
        t.join(RACE_WAIT)
        record("input-race-thread", outcome.get("error") or f"read {len(outcome.get('data', b''))}")

    threading.Thread(target=after, daemon=True).start()
    return plain(start_response, "raced" if raced else "never busy")


def start_response_race(environ, start_response):
    """A thread blocks in write() of a large chunk (the client does not read); meanwhile the
    app calls start_response again, which must raise, not kill the worker."""
    write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
    big = b"x" * (int(environ.get("QUERY_STRING", "").partition("size=")[2] or 0))
    done = threading.Event()

    def writer():
        try:
            write(big)
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=writer, daemon=True).start()
    raced = wait_busy(lambda: write(b""))
    try:
        start_response("500 Oops", [("Content-Type", "text/plain")])
        second = "second start_response returned"
    except RuntimeError as e:
        second = f"RuntimeError: {e}"
    except Exception as e:  # noqa: BLE001 - recorded for the test
        second = f"{type(e).__name__}: {e}"
    record("sr-race", ("busy" if raced else "never busy") + "; " + second)
    return []


#: the write callable of an earlier request, kept past its end (as a leaked thread would)
KEPT = {}


def keep_write(environ, start_response):
    """GET /keep-write: answer, keeping the write callable."""
    KEPT["write"] = start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"kept"]


def stale_write(environ, start_response):
    """GET /stale-write: call the kept write() of a finished request; it must raise, not
    send on whatever connection now has that socket's number."""
    try:
        KEPT["write"](b"INJECTED")
        outcome = "sent"
    except RuntimeError as e:
        outcome = f"RuntimeError: {e}"
    record("stale-write", outcome)
    return plain(start_response, outcome)


# --- a rejection against a client that does not read -----------------------------------------
#: set once /fill has filled its connection's send buffer; FILLED_SOCK is a duplicate of that
#: connection's socket and FILLED_LOG_AT the size of the log at that moment
FILLED = threading.Event()
FILLED_SOCK = None
FILLED_LOG_AT = 0
TCP_ESTABLISHED = 1


def own_socket(port):
    """A duplicate of this worker's socket connected to the client at 127.0.0.1:`port`."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            s = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            if s.getpeername() == ("127.0.0.1", port):
                return s
        except OSError:
            pass
        s.close()
    raise RuntimeError(f"no socket to port {port}")


def fill(s):
    """Send until the kernel takes no more: the client reads nothing, so the next send of the
    server on this connection has to wait."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    idle = 0
    for _ in range(1000):
        sent = 0
        try:
            while True:
                sent += s.send(b"f" * 4096)
        except BlockingIOError:
            pass
        idle = idle + 1 if sent == 0 else 0
        if idle == 3:
            return
        time.sleep(0.02)
    raise RuntimeError("the send buffer never stayed full")


class FillOnClose(list):
    """A response body (a list, sent whole) whose close() runs after the response went out
    and before the server parses the next request pipelined behind it."""

    def __init__(self, items, port):
        super().__init__(items)
        self.port = port

    def close(self):
        global FILLED_SOCK, FILLED_LOG_AT
        s = own_socket(self.port)
        fill(s)
        FILLED_SOCK = s
        FILLED_LOG_AT = os.fstat(2).st_size
        FILLED.set()


def fill_route(environ, start_response):
    """GET /fill: answer, then fill the connection so that the server's next send blocks."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return FillOnClose([b"filled"], int(environ["REMOTE_PORT"]))


def watch_route(environ, start_response):
    """GET /watch?needle=...: once /fill is done, poll the log for `needle` (the rejection's
    line, written just before the server sends its answer) and look at the filled connection
    at the first moment this thread runs Python after it: 'during' if the connection is still
    open (the server waits to send with the GIL released), 'after' if the server already
    ended it (it held the GIL through the whole wait)."""
    needle = environ.get("QUERY_STRING", "").partition("needle=")[2].replace("+", " ").encode()
    if not FILLED.wait(RACE_WAIT):
        return plain(start_response, "never filled")
    deadline = time.monotonic() + RACE_WAIT
    outcome = "timeout"
    with open("/proc/self/fd/2", "rb") as log:
        while time.monotonic() < deadline:
            log.seek(FILLED_LOG_AT)
            seen = needle in log.read()
            info = FILLED_SOCK.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
            if seen:
                outcome = "during" if struct.unpack("B", info[:1])[0] == TCP_ESTABLISHED else "after"
                break
            time.sleep(0.001)
    FILLED_SOCK.close()
    record("watch", outcome)
    return plain(start_response, outcome)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pid":
        return plain(start_response, str(os.getpid()))
    if path == "/read":
        return read_body(environ, start_response)
    if path == "/input-race":
        return input_race(environ, start_response)
    if path == "/sr-race":
        return start_response_race(environ, start_response)
    if path == "/keep-write":
        return keep_write(environ, start_response)
    if path == "/stale-write":
        return stale_write(environ, start_response)
    if path == "/fill":
        return fill_route(environ, start_response)
    if path == "/watch":
        return watch_route(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such route\n"]
