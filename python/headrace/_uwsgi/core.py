"""The `uwsgi` module: identity, reload/stop, logging and the post-fork hooks.

uWSGI 2.0's names, argument forms and return values, with Python 3's types as uWSGI gives
them: option values, ``version``, ``hostname``, logvars and ``workers()``' ``status`` are
bytes; keys are str. Where uWSGI has a bug, headrace does the evident right thing (see the
README, "The `uwsgi` module").
"""

import atexit as _atexit
import os
import socket
import sys
import threading
import time
import traceback

from headrace import _headrace

__all__ = [
    "applications",
    "buffer_size",
    "connection_fd",
    "cores",
    "get_logvar",
    "has_threads",
    "hostname",
    "is_a_reload",
    "is_connected",
    "log",
    "loop",
    "magic_table",
    "masterpid",
    "mem",
    "micros",
    "mule_id",
    "numproc",
    "opt",
    "ready",
    "reload",
    "request_id",
    "set_logvar",
    "set_user_harakiri",
    "setprocname",
    "started_on",
    "stop",
    "total_requests",
    "unbit",
    "version",
    "version_info",
    "worker_id",
    "workers",
]
DECORATORS: list = ["postfork", "thread", "harakiri", "postfork_chain"]

# The uWSGI release whose API this module follows; apps compare `version_info` against it.
_UWSGI_VERSION = (2, 0, 30)


def _build_opt():
    """uWSGI's ``opt``: every option given, values as bytes, a flag given bare as ``True``, an
    option given more than once as a list in the order given."""
    opt: dict = {}
    for key, value in _headrace.core_opt():
        v = True if value is None else value.encode("utf-8", "surrogateescape")
        if key in opt:
            if isinstance(opt[key], list):
                opt[key].append(v)
            else:
                opt[key] = [opt[key], v]
        else:
            opt[key] = v
    return opt


opt = _build_opt()
numproc, cores, buffer_size, started_on = _headrace.core_info()
version = ".".join(map(str, _UWSGI_VERSION)).encode()
version_info = (*_UWSGI_VERSION, 0, b"headrace")
hostname = socket.gethostname().encode()
#: uWSGI sets this to None; an app may assign ``{mountpoint: callable}`` to it (see README).
applications = None
has_threads = 1
is_a_reload = _headrace.core_is_a_reload()
loop = None
unbit = None


def _magic_table():
    """The `%x` magic variables uWSGI's config language knows, as uWSGI exposes them."""
    now = time.time()
    try:
        import grp
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
    except (ImportError, KeyError):
        user = group = ""
    table = {
        "%": "%",
        "(": "%(",
        "[": "\x1b",
        "V": version.decode(),
        "h": hostname.decode(),
        "k": str(os.cpu_count() or 1),
        "t": str(int(now)),
        "T": str(int(now * 1_000_000)),
        "u": str(os.getuid()),
        "g": str(os.getgid()),
        "U": user,
        "G": group,
        "v": os.getcwd(),
    }
    return {k.encode(): v.encode() for k, v in table.items()}


magic_table = _magic_table()


def _role():
    return _headrace.role() or ("master", 0, 0)


def worker_id():
    """This worker's id (1-based); 0 in the master, mules and spoolers."""
    kind, n, _ = _role()
    return n if kind == "worker" else 0


def mule_id():
    """This mule's id (1-based); 0 elsewhere."""
    kind, n, _ = _role()
    return n if kind == "mule" else 0


def masterpid():
    """The master's pid (headrace always has a master)."""
    return _headrace.core_master_pid()


def total_requests():
    """Requests served by all workers so far."""
    return _headrace.core_total_requests()


def request_id():
    """The running request's number on its serving thread (0 for the thread's first)."""
    return _headrace.core_request_id()


def workers():
    """A tuple with one dict per worker, uWSGI's keys (id, pid, requests, delta_requests,
    signals, exceptions, status, rss, vsz, running_time, last_spawn, respawn_count, tx, avg_rt,
    apps)."""
    return _headrace.core_workers()


def reload():
    """Gracefully reload the workers (as SIGHUP to the master)."""
    _headrace.control("reload")
    return True


def stop():
    """Stop the server: workers finish the requests they serve (this one too), for 3 s at most."""
    _headrace.control("stop")
    return True


def log(message):
    """Write one line to the server's log."""
    _headrace.core_log(message)
    return True


def set_logvar(key, value):
    """Set ``%(key)`` for this request's line in ``--log-format``."""
    _headrace.core_set_logvar(key, value)


def get_logvar(key):
    """This request's logvar ``key`` as bytes, or None."""
    return _headrace.core_get_logvar(key)


def setprocname(name):
    """Set this process's title (as ``ps`` shows it)."""
    _headrace.core_setprocname(name)


def set_user_harakiri(seconds):
    """Kill this process if the running request (outside a request: the process) is still at
    it after ``seconds``; 0 disarms it. The request's end disarms it too."""
    _headrace.core_set_user_harakiri(int(seconds))


def connection_fd():
    """The running request's socket."""
    return _headrace.core_connection_fd()


def is_connected(fd):
    """Whether the peer of socket ``fd`` is still there: no pending socket error (uWSGI's
    test) and, unlike uWSGI, no end-of-stream waiting to be read (a client that went away)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with sock:
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False


def ready():
    """True once the workers have been started, else None."""
    return True if _headrace.core_ready() else None


def micros():
    """Now, in microseconds since the epoch."""
    return time.time_ns() // 1000


def mem():
    """(rss, vsz) of this process, in bytes."""
    return _headrace.core_mem()


# ---- hooks ---------------------------------------------------------------------------------

# Functions to run in every forked child that runs Python (worker, mule, spooler), after the
# app's ``uwsgi.post_fork_hook``: ``@postfork`` and the decorators built on it (``@mule``,
# ``@muleloop``, ...) append here. A hook that raises is logged; the others still run.
_postfork_hooks: list = []
#: uwsgidecorators' name for the same list.
postfork_chain = _postfork_hooks


def _after_fork():
    """Run in every forked child that runs Python, after its role is set."""
    uwsgi = sys.modules.get("uwsgi")
    hooks = []
    if uwsgi is not None and callable(getattr(uwsgi, "post_fork_hook", None)):
        hooks.append(uwsgi.post_fork_hook)
    hooks.extend(_postfork_hooks)
    for hook in hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - a failing hook is logged; the others still run
            traceback.print_exc()


_atexit_done = False


def _run_atexit():
    """Call ``uwsgi.atexit`` once per process, if the app set it: a worker calls it when it
    stops gracefully; the master when it exits (through Python's atexit)."""
    global _atexit_done
    if _atexit_done:
        return
    _atexit_done = True
    func = getattr(sys.modules.get("uwsgi"), "atexit", None)
    if callable(func):
        try:
            func()
        except Exception:  # noqa: BLE001 - logged, the process still exits cleanly
            traceback.print_exc()


_atexit.register(_run_atexit)


# ---- decorators (uwsgidecorators) ------------------------------------------------------------


class postfork:
    """``@postfork``: run the function in every forked process; ``@postfork(N)``: in worker N
    only."""

    def __init__(self, f):
        if callable(f):
            self.wid = 0
            self.f = f
        else:
            self.f = None
            self.wid = f
        _postfork_hooks.append(self)

    def __call__(self, *args, **kwargs):
        if self.f:
            if self.wid > 0 and self.wid != worker_id():
                return None
            return self.f()
        self.f = args[0]
        return self.f


class thread:
    """``@thread``: each call runs the function in a new daemon thread and returns at once
    (uWSGI returns the function itself; so does headrace)."""

    def __init__(self, f):
        self.f = f

    def __call__(self, *args, **kwargs):
        t = threading.Thread(target=self.f, args=args, kwargs=kwargs)
        t.daemon = True
        t.start()
        return self.f


class harakiri:
    """``@harakiri(seconds)``: a call still running after ``seconds`` kills its process
    (``uwsgi.set_user_harakiri``); disarmed when the call returns or raises."""

    def __init__(self, seconds):
        self.s = seconds

    def real_call(self, *args, **kwargs):
        set_user_harakiri(self.s)
        try:
            return self.f(*args, **kwargs)
        finally:
            set_user_harakiri(0)

    def __call__(self, f):
        self.f = f
        return self.real_call
