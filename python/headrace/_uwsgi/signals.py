"""The `uwsgi` module: signals, timers, cron and file monitors (uWSGI 2.0's names and returns).

A signal is a number 0-255. ``register_signal(num, target, handler)`` records the target in
the shared signal table (the master routes by it) and keeps the handler here, in the
registering process; processes forked later inherit it. ``signal(num)`` asks the master to
route it; the target processes run ``handler(num)`` in their signal thread.
"""

import threading

from headrace import _headrace as _n

__all__ = [
    "add_cron",
    "add_file_monitor",
    "add_ms_timer",
    "add_rb_timer",
    "add_timer",
    "register_signal",
    "signal",
    "signal_received",
    "signal_registered",
    "signal_wait",
]
DECORATORS = ["timer", "mstimer", "rbtimer", "cron", "filemon", "get_free_signal"]
# ``uwsgidecorators.signal`` is a decorator, ``uwsgi.signal`` raises one: same name, two objects.
DECORATORS_AS = {"signal": None}  # filled below

# signum -> handler, in this process.
_handlers: dict = {}
_local = threading.local()


def _signum(value, func):
    """uWSGI parses signal numbers as C unsigned chars (silently wrapping); a value out of
    0-255 is an error here."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{func}() argument 1 must be int, not {type(value).__name__}")
    if not 0 <= value <= 255:
        raise ValueError(f"{func}(): signal number {value} out of range 0-255")
    return value


def _int(value, func):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{func}() expects int arguments, not {type(value).__name__}")
    return value


def _deliver(num):
    """Run in this process's signal thread: call the handler of ``num``; False if none."""
    handler = _handlers.get(num)
    if handler is None:
        return False
    handler(num)
    return True


def register_signal(num, who, handler):
    """``uwsgi.register_signal(num, target, handler)``: ``handler(num)`` runs in the target
    ("", "worker", "workers", "active-workers", "workerN", "spooler", "spoolers", "mules",
    "mule", "muleN", "farm_NAME", "farmN") when ``num`` is raised."""
    num = _signum(num, "register_signal")
    if not isinstance(who, str):
        raise TypeError(f"register_signal() argument 2 must be str, not {type(who).__name__}")
    previous = _handlers.get(num)
    _handlers[num] = handler
    try:
        _n.signal_register(num, who)
    except BaseException:
        if previous is None:
            _handlers.pop(num, None)
        else:
            _handlers[num] = previous
        raise


def signal(num, remote=None):
    """``uwsgi.signal(num)``: raise signal ``num`` (the master routes it to its target)."""
    num = _signum(num, "signal")
    if remote is not None:
        raise ValueError(
            f"unable to deliver signal {num} to node {remote}: remote signals are not supported"
        )
    _n.signal_raise(num)


def signal_registered(num):
    """True when ``num`` has a handler here (registered by this worker or by the master before
    fork); None otherwise, as uWSGI returns."""
    num = _signum(num, "signal_registered")
    return True if _n.signal_registered(num) else None


def signal_wait(num=None):
    """Block until this process receives a signal (``num``, or any) and its handler ran;
    returns "" as uWSGI does (``signal_received()`` says which)."""
    if num is not None:
        num = _signum(num, "signal_wait")
    _local.received = -1
    _local.received = _n.signal_wait(num)
    return ""


def signal_received():
    """The signal the last ``signal_wait`` of this thread got (-1: none)."""
    return getattr(_local, "received", -1)


def add_timer(num, secs):
    """Raise ``num`` every ``secs`` seconds (the master's timer)."""
    num = _signum(num, "add_timer")
    secs = _int(secs, "add_timer")
    if secs <= 0:
        raise ValueError("unable to add timer")
    _n.signal_add(f"timer {num} {secs * 1000}")


def add_ms_timer(num, msecs):
    """Raise ``num`` every ``msecs`` milliseconds."""
    num = _signum(num, "add_ms_timer")
    msecs = _int(msecs, "add_ms_timer")
    if msecs <= 0:
        raise ValueError("unable to add timer")
    _n.signal_add(f"timer {num} {msecs}")


def add_rb_timer(num, secs, iterations=0):
    """Raise ``num`` every ``secs`` seconds, ``iterations`` times (0: forever)."""
    num = _signum(num, "add_rb_timer")
    secs = _int(secs, "add_rb_timer")
    iterations = _int(iterations, "add_rb_timer")
    if secs <= 0 or iterations < 0:
        raise ValueError("unable to add rb_timer")
    _n.signal_add(f"rbtimer {num} {secs} {iterations}")


def add_cron(num, minute, hour, day, month, weekday):
    """Raise ``num`` at the minutes that match (-1: any; -N: every N). Returns True."""
    num = _signum(num, "add_cron")
    fields = [_int(v, "add_cron") for v in (minute, hour, day, month, weekday)]
    try:
        _n.signal_add("cron {} {} {} {} {} {}".format(num, *fields))
    except ValueError:
        raise ValueError("unable to add cron") from None
    return True


def add_file_monitor(num, path):
    """Raise ``num`` when ``path`` (a file, or a directory's entries) changes."""
    num = _signum(num, "add_file_monitor")
    if isinstance(path, bytes):
        path = path.decode()
    if not isinstance(path, str):
        raise TypeError(f"add_file_monitor() argument 2 must be str, not {type(path).__name__}")
    if not path or len(path.encode()) > 254 or "\n" in path:
        raise ValueError("unable to add file monitor")
    _n.signal_add(f"filemon {num} {path}")


# --- uwsgidecorators -------------------------------------------------------------------


def get_free_signal():
    """The first signal number not registered here (uwsgidecorators' scan)."""
    for signum in range(256):
        if not signal_registered(signum):
            return signum
    raise Exception("No free uwsgi signal available")  # noqa: TRY002 - uwsgidecorators' own


class _signal_decorator:
    """``@signal(num, target="")``: register the function as the handler of ``num``."""

    def __init__(self, num, **kwargs):
        self.num = num
        self.target = kwargs.get("target", "")

    def __call__(self, f):
        register_signal(self.num, self.target, f)
        return f


_signal_decorator.__name__ = _signal_decorator.__qualname__ = "signal"
DECORATORS_AS["signal"] = _signal_decorator


class _source:
    """A decorator that registers the function for a signal (``signum=``, else a free one) and
    adds what raises it (``_add(num, *args)``), as uwsgidecorators' timer, cron... do."""

    _add = None

    def __init__(self, *args, **kwargs):
        self.num = kwargs.get("signum", get_free_signal())
        self.target = kwargs.get("target", "")
        self.args = args

    def __call__(self, f):
        register_signal(self.num, self.target, f)
        type(self)._add(self.num, *self.args)
        return f


class timer(_source):
    """``@timer(secs, target="", signum=free)``: run the function every ``secs`` seconds."""

    _add = staticmethod(add_timer)


class mstimer(_source):
    """``@mstimer(msecs, target="", signum=free)``: every ``msecs`` milliseconds."""

    _add = staticmethod(add_ms_timer)


class cron(_source):
    """``@cron(minute, hour, day, month, dayweek, target="", signum=free)``."""

    _add = staticmethod(add_cron)


class rbtimer(_source):
    """``@rbtimer(secs, target="", signum=free)``: every ``secs`` seconds (forever, as
    uwsgidecorators does)."""

    _add = staticmethod(add_rb_timer)


class filemon(_source):
    """``@filemon(path, target="", signum=free)``: run the function when ``path`` changes."""

    _add = staticmethod(add_file_monitor)
