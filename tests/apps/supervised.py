"""The app of tests/test_supervision.py: worker pids, requests that sleep in a named function
(so a harakiri traceback can name it), memory growth and a version string that the reload tests
rewrite in a copy of this file.

Routes take their arguments in the path (no query strings), so that the request line the server
logs for a lost or stuck request is exactly the path the test sent.
"""

import os
import time

# The reload tests copy this file and replace this line; keep it on one line.
VERSION = "v1"

# Memory that /grow keeps alive for the rest of the worker's life.
_HELD = []


def stuck_in_sleep(secs):
    """Sleep in a function whose name the harakiri traceback must show."""
    time.sleep(secs)


def plain(start_response, body, status="200 OK"):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    parts = environ.get("PATH_INFO", "").strip("/").split("/")
    route = parts[0]

    if route in ("", "pid"):
        return plain(start_response, str(os.getpid()))

    if route == "version":
        return plain(start_response, f"{VERSION} {os.getpid()}")

    if route == "sleep":
        # /sleep/SECS/TAG: print a marker (with the pid) when the request starts.
        secs = float(parts[1])
        tag = parts[2] if len(parts) > 2 else ""
        print(f"SUP-SLEEP-START {os.getpid()} {tag}")
        stuck_in_sleep(secs)
        return plain(start_response, f"{os.getpid()} slept {secs}")

    if route == "exit":
        # /exit/CODE: the worker process ends at once, in the middle of this request.
        os._exit(int(parts[1]))

    if route == "grow":
        # /grow/MB: allocate and touch MB MiB that stay allocated.
        mb = int(parts[1])
        _HELD.append(b"\x01" * (mb * 1024 * 1024))
        return plain(start_response, f"{os.getpid()} holds {len(_HELD)} block(s)")

    return plain(start_response, "not found", status="404 Not Found")
