"""uWSGI signals, timers, cron and file monitors, as an app written for uWSGI uses them.

Every handler appends one line to $HR_RECORD/signals.log: ``TAG SIGNUM ROLE ID PID``. What
the app registers at import time depends on HR_SIG_* variables (so one app serves every
test); requests raise signals, register more, and wait for them.
"""

import os
import sys
import time
from urllib.parse import parse_qs

import uwsgi
import uwsgidecorators
from uwsgidecorators import cron, filemon, rbtimer, signal, timer

RECORD = os.path.join(os.environ["HR_RECORD"], "signals.log")


def who():
    # uwsgi.worker_id()/mule_id() belong to another part of the module; read the role the
    # module is built on when they are not there.
    if hasattr(uwsgi, "worker_id"):
        if uwsgi.worker_id():
            return f"worker {uwsgi.worker_id()}"
        if uwsgi.mule_id():
            return f"mule {uwsgi.mule_id()}"
        return "other 0"
    from headrace import _headrace

    role, n, _ = _headrace.role()
    return f"{role} {n}"


def note(tag, num):
    line = f"{tag} {num} {who()} {os.getpid()}\n"
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def handler(tag):
    return lambda num: note(tag, num)


# Plain calls: signal 10 to the target the test asks for, 11 to every worker, 14 raises.
uwsgi.register_signal(10, os.environ.get("HR_SIG_TARGET", ""), handler("h10"))
uwsgi.register_signal(11, "workers", handler("h11"))
uwsgi.register_signal(12, "worker2", handler("h12"))
uwsgi.register_signal(13, "active-workers", handler("h13"))


def broken(num):
    raise RuntimeError(f"handler of {num} is broken")


uwsgi.register_signal(14, "worker", broken)


def slow(num):
    note("slowstart", num)
    time.sleep(float(os.environ.get("HR_SIG_SLOW", "1.5")))
    note("slowdone", num)


uwsgi.register_signal(15, "", slow)


@signal(20)
def decorated(num):
    note("deco", num)


if os.environ.get("HR_SIG_TIMER"):

    @timer(int(os.environ["HR_SIG_TIMER"]))
    def every(num):
        note("timer", num)


if os.environ.get("HR_SIG_MSTIMER"):
    uwsgi.register_signal(30, "", handler("mstimer"))
    uwsgi.add_ms_timer(30, int(os.environ["HR_SIG_MSTIMER"]))

if os.environ.get("HR_SIG_MSTIMERDECO"):

    @uwsgidecorators.mstimer(int(os.environ["HR_SIG_MSTIMERDECO"]))
    def every_ms(num):
        note("msdeco", num)


if os.environ.get("HR_SIG_RB"):
    secs, iterations = os.environ["HR_SIG_RB"].split()
    uwsgi.register_signal(31, "", handler("rb"))
    uwsgi.add_rb_timer(31, int(secs), int(iterations))

if os.environ.get("HR_SIG_RBDECO"):

    @rbtimer(int(os.environ["HR_SIG_RBDECO"]))
    def rb_forever(num):
        note("rbdeco", num)


if os.environ.get("HR_SIG_CRON"):
    minute, hour = (int(v) for v in os.environ["HR_SIG_CRON"].split())

    @cron(minute, hour, -1, -1, -1)
    def at_minute(num):
        note("cron", num)

    uwsgi.register_signal(32, "", handler("addcron"))
    assert uwsgi.add_cron(32, minute, -1, -1, -1, -1) is True


if os.environ.get("HR_SIG_FILEMON"):

    @filemon(os.environ["HR_SIG_FILEMON"])
    def changed(num):
        note("filemon", num)


if os.environ.get("HR_SIG_TOUCH"):
    # --touch-signal FILE 40
    uwsgi.register_signal(40, "workers", handler("touch"))


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    body = "ok"
    try:
        if path == "/raise":
            uwsgi.signal(int(q["n"]))
        elif path == "/burst":
            for _ in range(int(q["k"])):
                uwsgi.signal(int(q["n"]))
        elif path == "/register":
            # A registration after fork, in this worker only.
            uwsgi.register_signal(int(q["n"]), q.get("target", ""), handler("late"))
        elif path == "/registered":
            body = repr(uwsgi.signal_registered(int(q["n"])))
        elif path == "/free":
            body = str(uwsgidecorators.get_free_signal())
        elif path == "/wait":
            if "n" in q:
                r = uwsgi.signal_wait(int(q["n"]))
            else:
                r = uwsgi.signal_wait()
            body = f"{r!r} {uwsgi.signal_received()}"
        elif path == "/add_timer":
            uwsgi.add_timer(int(q["n"]), int(q["s"]))
        elif path == "/add_rb_timer":
            uwsgi.add_rb_timer(int(q["n"]), int(q["s"]), int(q.get("i", 0)))
        elif path == "/add_file_monitor":
            uwsgi.add_file_monitor(int(q["n"]), q["path"])
        elif path == "/bad":
            out = []
            for call in (
                lambda: uwsgi.signal(256),
                lambda: uwsgi.signal(-1),
                lambda: uwsgi.register_signal(50, "nobody", handler("x")),
                lambda: uwsgi.register_signal(50, "x" * 64, handler("x")),
                lambda: uwsgi.add_timer(50, 0),
                lambda: uwsgi.add_file_monitor(50, "/nonexistent/headrace/path"),
                lambda: uwsgi.add_cron(50, 61, -1, -1, -1, -1),
            ):
                try:
                    call()
                    out.append("none")
                except (ValueError, TypeError) as e:
                    out.append(type(e).__name__)
            body = " ".join(out)
        elif path == "/worker":
            body = who()
    except Exception as e:  # noqa: BLE001 - the test reads what failed
        print(f"signal_app: {path} failed: {e!r}", file=sys.stderr)
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [repr(e).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
