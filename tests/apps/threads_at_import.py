"""An app that starts a background thread while it is imported (as metrics exporters and SDK
clients do). Preloaded in the master, that thread would run beside the master's fork: the
child would inherit any lock it holds, locked forever. Under --lazy-apps each worker imports it
after the fork, which is safe.

GET / answers with the names of the threads running in the process that serves it.
"""

import threading
import time

_stop = threading.Event()


def _tick():
    # Takes and releases a lock in a loop, the hazard a fork would copy mid-way.
    lock = threading.Lock()
    while not _stop.is_set():
        with lock:
            time.sleep(0.01)


_thread = threading.Thread(target=_tick, name="import-time-ticker", daemon=True)
_thread.start()


def application(environ, start_response):
    names = sorted(t.name for t in threading.enumerate())
    body = ",".join(names).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
