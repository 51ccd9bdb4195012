"""The `uwsgi` module: spooler (uWSGI 2.0's names, argument forms and py3 bytes/str).

A task is a dict of variables. ``uwsgi.spool`` stores it (keys and values as bytes) and returns
its name (the spool file's path, as bytes); a spooler process calls ``uwsgi.spooler`` with a
dict whose keys and values are bytes, plus ``"spooler_task_name"`` and ``"body"`` (str keys,
bytes values), as uWSGI 2.0 on Python 3 does. Deliberately kinder than uWSGI: str keys and
values are accepted (stored as UTF-8; uWSGI raises ValueError), and a number is stored as its
digits (uWSGI 2.0 stores ``bytes(n)``, n zero bytes).
"""

import importlib
import importlib.util
import os
import pickle
import sys
import traceback
from functools import partial

from headrace import _headrace as _native

SPOOL_OK = -2
SPOOL_RETRY = -1
SPOOL_IGNORE = 0

DECORATORS = ["spoolforever", "spoolraw"]


def _names():
    try:
        return list(_native.spooler_names())
    except Exception:  # noqa: BLE001 - outside a server: no spooler
        return []


# As uWSGI: the spooler functions exist only when a spooler is configured (``uwsgi.spool``
# without one is an AttributeError).
__all__ = [
    "SPOOL_IGNORE",
    "SPOOL_OK",
    "SPOOL_RETRY",
    "i_am_the_spooler",
    "spooler_pid",
    "spooler_pids",
]
if _names():
    __all__ += [
        "send_to_spooler",
        "set_spooler_frequency",
        "spool",
        "spooler_dir",
        "spooler_get_task",
        "spooler_jobs",
        "spoolers",
    ]

spoolers = tuple(n.encode() for n in _names())


def _uwsgi():
    return sys.modules.get("uwsgi")


def _b(v, what):
    if isinstance(v, bytes):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v).encode()
    if what == "key":
        raise ValueError("spooler callable dictionary must contains only bytes")
    try:
        return bytes(v)
    except Exception:  # noqa: BLE001 - uWSGI's message for any value it cannot store
        raise ValueError("spooler callable dictionary must contains only bytes") from None


def spool(*args, **kwargs):
    """Enqueue a task (a dict, or keyword arguments); returns its name as bytes."""
    if args:
        d = args[0]
        if not isinstance(d, dict):
            raise ValueError("The argument of spooler callable must be a dictionary")
    else:
        d = kwargs
    d = dict(d)
    body = b""
    for k in ("body", b"body"):
        if k in d and isinstance(d[k], (bytes, bytearray, str)):
            v = d.pop(k)
            body = v.encode("utf-8") if isinstance(v, str) else bytes(v)
    pairs = [(_b(k, "key"), _b(v, "value")) for k, v in d.items()]
    return _native.spool(pairs, body).encode()


send_to_spooler = spool


def spooler_jobs():
    """The names (paths, as bytes) of the tasks waiting on the first spooler."""
    return [j.encode() for j in _native.spooler_jobs()]


def spooler_pid():
    """The first spooler process's pid (0 without a spooler)."""
    pids = _native.spooler_pids()
    return pids[0] if pids else 0


def spooler_pids():
    """Every spooler process's pid."""
    return list(_native.spooler_pids())


def i_am_the_spooler():
    """True in a spooler process, else None (as uWSGI)."""
    role = _native.role()
    return True if role and role[0] == "spooler" else None


def spooler_get_task(path):
    """The dict a spooler function would get for the task file `path`, or None."""
    if isinstance(path, bytes):
        path = path.decode()
    got = _native.spooler_get_task(path)
    if got is None:
        return None
    return _task_dict(path, got[0], got[1])


def set_spooler_frequency(seconds):
    """Change the spoolers' period (how often a `@spoolforever` task runs again)."""
    return _native.set_spooler_frequency(int(seconds))


def spooler_dir():
    """This spooler process's directory."""
    return _native.spooler_dir().encode()


def _task_dict(name, pairs, body):
    d = {"spooler_task_name": name.encode()}
    for k, v in pairs:
        d[k] = v
    if body:
        d["body"] = body
    return d


def _run_task(name, pairs, body):
    """Run one task in a spooler process: ("code", n, ""), ("missing", 0, "") or
    ("error", 0, traceback)."""
    uwsgi = _uwsgi()
    fn = getattr(uwsgi, "spooler", None) if uwsgi is not None else None
    d = _task_dict(name, pairs, body)
    if fn is None and (b"ud_spool_func" in d):
        fn = manage_spool_request
    if not callable(fn):
        return ("missing", 0, "")
    try:
        ret = fn(d)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a failing task (even sys.exit) is logged; the spooler lives
        text = traceback.format_exc()
        sys.stderr.write(text)
        sys.stderr.flush()
        return ("error", 0, text)
    if isinstance(ret, bool) or not isinstance(ret, int):
        text = f"the spooler function returned {ret!r}, not an int (uWSGI retries such a task)"
        return ("error", 0, text)
    return ("code", ret, "")


def _import(name):
    """`--spooler-import NAME`: a module, or a file when it has a slash or ends with .py."""
    if "/" in name or name.endswith(".py"):
        mod = os.path.splitext(os.path.basename(name))[0].replace(".", "_").replace("-", "_")
        spec = importlib.util.spec_from_file_location(mod, name)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {name}")
        m = importlib.util.module_from_spec(spec)
        sys.modules[mod] = m
        spec.loader.exec_module(m)
    else:
        importlib.import_module(name)


# --- uwsgidecorators: @spool, @spoolforever, @spoolraw (uWSGI 2.0's behaviour) ---

spooler_functions = {}


def _decode1(val):
    return val.decode("utf-8") if isinstance(val, bytes) else val


def _encode1(val):
    return val.encode("utf-8") if isinstance(val, str) else val


def manage_spool_request(vars):
    """uwsgidecorators' dispatch: run the decorated function a task names."""
    vars = {_decode1(k): v for k, v in vars.items()}
    if "args" in vars:
        for k in ("args", "kwargs"):
            vars[k] = pickle.loads(vars.pop(k))
    vars = {_decode1(k): _decode1(v) for k, v in vars.items()}
    f = spooler_functions[vars["ud_spool_func"]]
    if "args" in vars:
        ret = f(*vars["args"], **vars["kwargs"])
    else:
        ret = f(vars)
    return int(vars.get("ud_spool_ret", ret))


class _spoolraw:
    def __call__(self, *args, **kwargs):
        arguments = self.base_dict.copy()
        if not self.pass_arguments:
            if len(args) > 0:
                arguments.update(args[0])
            if kwargs:
                arguments.update(kwargs)
        else:
            spooler_args = {}
            for key in ("message_dict", "spooler", "priority", "at", "body"):
                if key in kwargs:
                    spooler_args.update({key: kwargs.pop(key)})
            arguments.update(spooler_args)
            arguments.update({"args": pickle.dumps(args), "kwargs": pickle.dumps(kwargs)})
        return spool({_encode1(k): _encode1(v) for k, v in arguments.items()})

    # For backward compatibility (uWSGI < 1.9.13)
    def spool(self, *args, **kwargs):
        return self.__class__.__call__(self, *args, **kwargs)

    def __init__(self, f, pass_arguments):
        if not _names():
            raise Exception(  # noqa: TRY002 - uWSGI raises a bare Exception here
                f"you have to enable the uWSGI spooler to use @{self.__class__.__name__} decorator"
            )
        self.f = f
        spooler_functions[self.f.__name__] = self.f
        # For backward compatibility (uWSGI < 1.9.13)
        self.f.spool = self.__call__
        self.pass_arguments = pass_arguments
        self.base_dict = {"ud_spool_func": self.f.__name__}
        uwsgi = _uwsgi()
        if uwsgi is not None and getattr(uwsgi, "spooler", None) is None:
            # As importing uwsgidecorators does in uWSGI.
            uwsgi.spooler = manage_spool_request


class _spool(_spoolraw):
    def __call__(self, *args, **kwargs):
        self.base_dict["ud_spool_ret"] = str(SPOOL_OK)
        return _spoolraw.__call__(self, *args, **kwargs)


class _spoolforever(_spoolraw):
    def __call__(self, *args, **kwargs):
        self.base_dict["ud_spool_ret"] = str(SPOOL_RETRY)
        return _spoolraw.__call__(self, *args, **kwargs)


def _spool_decorate(f=None, pass_arguments=False, _class=_spoolraw):
    if not f:
        return partial(_class, pass_arguments=pass_arguments)
    return _class(f, pass_arguments)


def spoolraw(f=None, pass_arguments=False):
    """Spool a call of `f`; its return value is the task's (SPOOL_OK, SPOOL_RETRY, ...)."""
    return _spool_decorate(f, pass_arguments)


def _spool_deco(f=None, pass_arguments=False):
    """Spool a call of `f`; the task is done once it returns."""
    return _spool_decorate(f, pass_arguments, _spool)


def spoolforever(f=None, pass_arguments=False):
    """Spool a call of `f` that runs again every spooler period, forever."""
    return _spool_decorate(f, pass_arguments, _spoolforever)


# ``uwsgidecorators.spool`` is a decorator, ``uwsgi.spool`` enqueues: same name, two objects.
DECORATORS_AS = {
    "spool": _spool_deco,
    "spool_decorate": _spool_decorate,
    "manage_spool_request": manage_spool_request,
    "spooler_functions": spooler_functions,
}
