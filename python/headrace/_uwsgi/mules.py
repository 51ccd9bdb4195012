"""The `uwsgi` module: mules and farms (uWSGI 2.0's core/mule.c, uwsgi_pymodule.c and
uwsgidecorators.py).

The queues are socket pairs the master made before any fork (``headrace._headrace.mule_send``
/ ``mule_recv``); queue 0 is shared by every mule, 1..N are each mule's own, and the farms'
follow in ``--farm`` order. A message is one datagram: it arrives whole, to exactly one mule.
"""

import contextlib
import importlib
import pickle
import sys
import traceback

from headrace import _headrace
from headrace._uwsgi.core import mule_id

__all__ = [
    "farm_get_msg",
    "farm_msg",
    "in_farm",
    "install_mule_msg_hook",
    "mule_file",
    "mule_get_msg",
    "mule_msg",
    "mule_msg_recv_size",
]
DECORATORS = [
    "farm",
    "farm_loop",
    "mule",
    "mule_brain",
    "mule_brainloop",
    "mule_functions",
    "mule_msg_dispatcher",
    "mulefunc",
    "muleloop",
    "mulemsg",
    "mulemsg_loop",
]

#: uWSGI's receive buffer (``--mule-msg-recv-size``'s default); headrace's own loop reads
#: every message whole.
_RECV_SIZE = 65536
#: Exit code of a mule whose script or function returned (uWSGI's UWSGI_END_CODE).
_END_CODE = 30

# Hooks added by ``install_mule_msg_hook`` (uWSGI's ``mule_msg_extra_hooks``), called after
# ``uwsgi.mule_msg_hook`` for each message an empty mule receives.
_extra_hooks: list = []


_LAYOUT = None


def _layout():
    """(each mule's --mule value, farms as (name, [ids]), --mule-msg-size, --mule-harakiri on);
    fixed for the life of the process."""
    global _LAYOUT
    if _LAYOUT is None:
        _LAYOUT = _headrace.mule_layout()
    return _LAYOUT


def _bytes(message, what="message"):
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"{what} must be str or bytes, not {type(message).__name__}")


def _farm_queue(name):
    mules, farms = _layout()[:2]
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).decode("utf-8", "replace")
    for i, (farm_name, _ids) in enumerate(farms):
        if farm_name == name:
            return 1 + len(mules) + i
    return None


def mule_msg_recv_size():
    """The buffer ``mule_get_msg`` uses by default."""
    return _RECV_SIZE


def mule_file(mule=None):
    """The script or ``module:function`` mule N (default: this one) runs, or None."""
    mules = _layout()[0]
    n = mule_id() if mule is None else mule
    if not isinstance(n, int) or n < 1 or n > len(mules):
        if mule is not None:
            raise ValueError("The id you provided doesn't correspond to any mule")
        return None
    return mules[n - 1] or None


def mule_msg(message, mule=None):
    """Queue `message` (str or bytes) for a mule without blocking: for any mule (no target or
    0), mule N (an int) or one mule of a farm (its name, str or bytes). True when queued,
    False when the queue is full or the message too large (and a line is logged), as uWSGI."""
    data = _bytes(message)
    mules = _layout()[0]
    if not mules:
        raise ValueError("no mule configured")
    if mule is None:
        queue = 0
    elif isinstance(mule, (str, bytes, bytearray)):
        # uWSGI under Python 3 accepts only bytes here; headrace takes either.
        queue = _farm_queue(mule)
        if queue is None:
            raise ValueError("unknown farm")
    elif isinstance(mule, int) and not isinstance(mule, bool):
        if mule < 0 or mule > len(mules):
            raise ValueError("invalid mule number")
        queue = mule
    else:
        raise ValueError("invalid mule")
    return _headrace.mule_send(queue, data)


def farm_msg(farm, message):
    """Queue `message` for one mule of `farm` (None, as uWSGI, also when the farm is unknown
    or its queue is full: that is logged)."""
    data = _bytes(message)
    queue = _farm_queue(farm)
    if queue is not None:
        _headrace.mule_send(queue, data)


def _my_queues(farms=True):
    """This mule's queues, in uWSGI's order: its own, the shared one, then its farms'."""
    me = mule_id()
    mules, farm_list = _layout()[:2]
    queues = [me, 0]
    if farms:
        queues += [1 + len(mules) + i for i, (_, ids) in enumerate(farm_list) if me in ids]
    return queues


def mule_get_msg(signals=True, farms=True, buffer_size=65536, timeout=-1):
    """Wait for the next message for this mule (its own queue, the shared queue and, with
    `farms`, its farms' queues) and return it as bytes; b"" after `timeout` seconds (-1:
    forever), as uWSGI. A message longer than `buffer_size` is cut. uWSGI signals reach mules
    without this call, so `signals` changes nothing."""
    del signals
    if mule_id() == 0:
        raise ValueError("you can receive mule messages only in a mule !!!")
    wait = None if timeout is None or timeout < 0 else float(timeout)
    msg = _headrace.mule_recv(_my_queues(bool(farms)), max(int(buffer_size), 1), wait)
    return b"" if msg is None else msg


def farm_get_msg():
    """Wait for the next message of one of this mule's farms (bytes)."""
    me = mule_id()
    if me == 0:
        raise ValueError("you can receive farm messages only in a mule !!!")
    queues = _my_queues(True)[2:]
    return _headrace.mule_recv(queues, _RECV_SIZE, None)


def in_farm(name=None):
    """True when this mule belongs to farm `name` (any farm if None), else None (as uWSGI)."""
    me = mule_id()
    if me == 0:
        return None
    for farm_name, ids in _layout()[1]:
        if (name is None or farm_name == name) and me in ids:
            return True
    return None


def install_mule_msg_hook(func):
    """Call `func(message)` for each message an empty mule receives, after
    ``uwsgi.mule_msg_hook``."""
    _extra_hooks.append(func)


@contextlib.contextmanager
def _task(what):
    """A unit of mule work, watched by ``--mule-harakiri``."""
    _headrace.mule_task(what)
    try:
        yield
    finally:
        _headrace.mule_task(None)


def _call(kind, func, *args):
    """Run one task (`kind` of work, for the harakiri line); an exception is logged with its
    traceback and the mule lives on."""
    if not _layout()[3]:
        try:
            return func(*args)
        except Exception:  # noqa: BLE001 - a failing task is logged; the mule goes on
            traceback.print_exc()
            return None
    with _task(f"{kind} ({_name(func)})"):
        try:
            return func(*args)
        except Exception:  # noqa: BLE001 - a failing task is logged; the mule goes on
            traceback.print_exc()
            return None


def _name(func):
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _handle(msg):
    """An empty mule's handling of one message (uWSGI's python plugin ``mule_msg``)."""
    uwsgi = sys.modules.get("uwsgi")
    hook = getattr(uwsgi, "mule_msg_hook", None)
    hooks = ([hook] if callable(hook) else []) + list(_extra_hooks)
    if not hooks:
        _headrace.mule_log(f"*** mule {mule_id()} received a {len(msg)} bytes message ***")
        return
    for h in hooks:
        _call("a message", h, msg)


def _serve():
    """The empty mule: wait for messages forever."""
    queues = _my_queues(True)
    while True:
        msg = _headrace.mule_recv(queues, 0, None)
        if msg is not None:
            _handle(msg)


def _exit_code(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run(mule, value):
    """Mule `mule`'s body after the post-fork hooks: its script, its module:function, or the
    message loop. Returns the exit code."""
    try:
        if value.lower().endswith(".py"):
            import runpy

            runpy.run_path(value, run_name="__main__")
        elif ":" in value:
            module, func = (s.strip() for s in value.split(":", 1))
            getattr(importlib.import_module(module), func)()
        else:
            _serve()
    except SystemExit as e:
        return _exit_code(e)
    except BaseException:  # noqa: BLE001 - the mule's code failed: log it, the master respawns
        traceback.print_exc()
        return 1
    _headrace.mule_log(f"mule {mule}: {value} returned: the master respawns the mule")
    return _END_CODE


def _die(code):
    """End this mule now (what ``sys.exit`` in a post-fork hook does in uWSGI)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    import os

    os._exit(code)


# --- uwsgidecorators ----------------------------------------------------------------------

#: Functions ``@mulefunc`` registered, by name (uwsgidecorators' ``mule_functions``).
mule_functions: dict = {}


def mule_msg_dispatcher(message):
    """Run the ``@mulefunc`` a message names (uwsgidecorators' dispatcher: a pickled dict)."""
    try:
        msg = pickle.loads(message)
    except Exception:  # noqa: BLE001 - not a @mulefunc message: another hook's business
        return None
    if not isinstance(msg, dict) or msg.get("service") != "uwsgi_mulefunc":
        return None
    func = mule_functions.get(msg.get("func"))
    if func is None:
        raise KeyError(f"no @mulefunc named {msg.get('func')!r} in mule {mule_id()}")
    return func(*msg.get("args", ()), **msg.get("kwargs", {}))


def _register_mulefunc(func):
    if mule_msg_dispatcher not in _extra_hooks:
        install_mule_msg_hook(mule_msg_dispatcher)
    mule_functions[func.__name__] = func


class mulefunc:
    """``@mulefunc`` or ``@mulefunc(N | "farm")``: calling the function queues a call that a
    mule runs (any mule, mule N, or one of the farm's)."""

    def __init__(self, f):
        if callable(f):
            self.fname = f.__name__
            self.mule = 0
            _register_mulefunc(f)
        else:
            self.mule = f
            self.fname = None

    def real_call(self, *args, **kwargs):
        return mule_msg(
            pickle.dumps(
                {"service": "uwsgi_mulefunc", "func": self.fname, "args": args, "kwargs": kwargs}
            ),
            self.mule,
        )

    def __call__(self, *args, **kwargs):
        if not self.fname:
            self.fname = args[0].__name__
            _register_mulefunc(args[0])
            return self.real_call
        return self.real_call(*args, **kwargs)


class mule_brain:
    """Runs `f` once in mule `num` after fork (``@mule``)."""

    def __init__(self, f, num):
        self.f = f
        self.num = num

    def __call__(self):
        if mule_id() == self.num:
            try:
                self.f()
            except BaseException:  # noqa: BLE001 - as uwsgidecorators: log, the mule exits
                traceback.print_exc()
                _die(1)


class mule_brainloop(mule_brain):
    """Runs `f` over and over in mule `num` after fork (``@muleloop``)."""

    def __call__(self):
        if mule_id() == self.num:
            while True:
                try:
                    self.f()
                except BaseException:  # noqa: BLE001 - as uwsgidecorators: log, the mule exits
                    traceback.print_exc()
                    _die(1)


def _postfork(hook):
    from headrace._uwsgi import core

    core._postfork_hooks.append(hook)


class mule:
    """``@mule(N)``: run the function in mule N once it is forked (then the mule waits for
    messages)."""

    def __init__(self, num):
        self.num = num

    def __call__(self, f):
        _postfork(mule_brain(f, self.num))
        return f


class muleloop(mule):
    """``@muleloop(N)``: call the function over and over in mule N."""

    def __call__(self, f):
        _postfork(mule_brainloop(f, self.num))
        return f


class mulemsg_loop:
    """Passes each message mule `num` receives to `f`."""

    def __init__(self, f, num):
        self.f = f
        self.num = num

    def __call__(self):
        if mule_id() == self.num:
            while True:
                message = mule_get_msg()
                if message:
                    _call("a message", self.f, message)


class mulemsg:
    """``@mulemsg(N)``: mule N passes each message it receives to the function."""

    def __init__(self, num):
        self.num = num

    def __call__(self, f):
        _postfork(mulemsg_loop(f, self.num))
        return f


class farm_loop:
    """Passes each message of `farm` to `f`, in the farm's mules."""

    def __init__(self, f, farm):
        self.f = f
        self.farm = farm

    def __call__(self):
        if mule_id() == 0 or not in_farm(self.farm):
            return
        while True:
            message = farm_get_msg()
            if message:
                _call("a farm message", self.f, message)


class farm:
    """``@farm(name)``: each mule of the farm passes the farm's messages to the function."""

    def __init__(self, name=None, **kwargs):
        del kwargs
        self.name = name

    def __call__(self, f):
        _postfork(farm_loop(f, self.name))
        return f
