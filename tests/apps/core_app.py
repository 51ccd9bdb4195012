"""The `uwsgi` module's core, exercised call by call (tests/test_uwsgi_core.py).

Every route answers JSON; bytes are sent as {"b": "..."} so the test sees uWSGI's py3 types.
`uwsgi.atexit` and `@postfork` write to $HR_RECORD/core-*.txt so the test can see them run.
"""

import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs

import uwsgi
import uwsgidecorators

RECORD = os.environ.get("HR_RECORD", "/tmp")
# Who loaded the app: the master when preloaded (worker_id 0), else the worker.
AT_IMPORT = {
    "worker_id": uwsgi.worker_id(),
    "mule_id": uwsgi.mule_id(),
    "masterpid": uwsgi.masterpid(),
    "pid": os.getpid(),
    "ready": uwsgi.ready(),
}
uwsgi.set_user_harakiri(1)  # nothing to guard while the master loads the app: a no-op there
uwsgi.set_user_harakiri(0)
POSTFORK: list = []
THREAD_DONE = threading.Event()


def record(name, line):
    with open(os.path.join(RECORD, name), "a") as f:
        f.write(line + "\n")


def plain(v):
    """JSON with the types kept visible."""
    if isinstance(v, bytes):
        return {"b": v.decode("latin-1")}
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, str, float)):
        return v
    if isinstance(v, dict):
        return {
            str(k) if not isinstance(k, bytes) else "b:" + k.decode(): plain(x)
            for k, x in v.items()
        }
    if isinstance(v, tuple):
        return {"tuple": [plain(x) for x in v]}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return repr(v)


@uwsgidecorators.postfork
def every_fork():
    POSTFORK.append(("all", os.getpid()))


@uwsgidecorators.postfork(2)
def only_worker_2():
    POSTFORK.append(("two", os.getpid()))


def legacy_hook():
    POSTFORK.append(("post_fork_hook", os.getpid()))


uwsgi.post_fork_hook = legacy_hook


def on_exit():
    record("core-atexit.txt", f"{os.getpid()} {uwsgi.worker_id()}")


uwsgi.atexit = on_exit


@uwsgidecorators.thread
def in_a_thread(a, b=0):
    record(
        "core-thread.txt", f"{a} {b} {threading.current_thread() is not threading.main_thread()}"
    )
    THREAD_DONE.set()


@uwsgidecorators.harakiri(1)
def slow_guarded(seconds):
    time.sleep(seconds)
    return "survived"


@uwsgidecorators.harakiri(1)
def raises_guarded():
    raise RuntimeError("boom")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    status = "200 OK"
    if path == "/ident":
        out = {
            "pid": os.getpid(),
            "worker_id": uwsgi.worker_id(),
            "mule_id": uwsgi.mule_id(),
            "masterpid": uwsgi.masterpid(),
            "numproc": uwsgi.numproc,
            "cores": uwsgi.cores,
            "buffer_size": uwsgi.buffer_size,
            "started_on": uwsgi.started_on,
            "version": plain(uwsgi.version),
            "version_info": plain(uwsgi.version_info),
            "hostname": plain(uwsgi.hostname),
            "opt": plain(uwsgi.opt),
            "total_requests": uwsgi.total_requests(),
            "request_id": uwsgi.request_id(),
            "ready": uwsgi.ready(),
            "applications": plain(uwsgi.applications),
            "magic_table": plain(uwsgi.magic_table),
            "mem": plain(uwsgi.mem()),
            "connection_fd": uwsgi.connection_fd(),
            "log": uwsgi.log(q.get("log", "core-app says hello")),
            "postfork": POSTFORK,
            "imported": {
                name: getattr(sys.modules.get(name), "IMPORTED_IN", None)
                for name in ("core_imported", "core_shared")
            },
            "thread": threading.current_thread().name,
            "at_import": AT_IMPORT,
            "is_a_reload": uwsgi.is_a_reload,
        }
    elif path == "/workers":
        out = plain(uwsgi.workers())
    elif path == "/logvar":
        for k, v in q.items():
            uwsgi.set_logvar(k, v)
        uwsgi.set_logvar(b"bytes_key", b"bytes-value")
        time.sleep(float(q.get("sleep", "0")))
        out = {k: plain(uwsgi.get_logvar(k)) for k in [*q, "missing"]}
    elif path == "/harakiri":
        uwsgi.set_user_harakiri(int(q.get("s", "1")))
        time.sleep(float(q.get("sleep", "0")))
        out = {"pid": os.getpid(), "survived": True}
    elif path == "/harakiri-deco":
        out = {"pid": os.getpid(), "result": slow_guarded(float(q.get("sleep", "0")))}
    elif path == "/harakiri-raise":
        try:
            raises_guarded()
        except RuntimeError:
            pass
        time.sleep(float(q.get("sleep", "0")))
        out = {"pid": os.getpid(), "survived": True}
    elif path == "/sleep":
        time.sleep(float(q.get("s", "0")))
        out = {"pid": os.getpid()}
    elif path == "/thread":
        THREAD_DONE.clear()
        returned = in_a_thread(q.get("a", "x"), b=q.get("b", "y"))
        out = {"returned_function": returned is in_a_thread.f, "done": THREAD_DONE.wait(5)}
    elif path == "/is_connected":
        time.sleep(float(q.get("sleep", "0")))
        out = {"fd": uwsgi.is_connected(uwsgi.connection_fd()), "bad": uwsgi.is_connected(-1)}
        record("core-connected.txt", json.dumps(out))
    elif path == "/setprocname":
        uwsgi.setprocname(q["name"])
        out = {"pid": os.getpid()}
    elif path == "/reload":
        out = {"reload": uwsgi.reload(), "pid": os.getpid()}
    elif path == "/stop":
        out = {"stop": uwsgi.stop()}
    elif path == "/raise":
        raise RuntimeError("core_app raises on purpose")
    else:
        status = "404 Not Found"
        out = {"path": path}
    body = json.dumps(out).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
