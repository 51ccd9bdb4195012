"""``uwsgidecorators``, as headrace provides it (uWSGI 2.0's names and behaviour).

Each decorator is written next to the part of the ``uwsgi`` API it uses; this module gathers
them under the names ``uwsgidecorators`` has.
"""

import importlib

# By module path, not as attributes of the package: `uwsgi.spooler` is the app's callback.
cache, core, mules, signals, spooler = (
    importlib.import_module(f"headrace._uwsgi.{name}")
    for name in ("cache", "core", "mules", "signals", "spooler")
)


def _gather():
    for part in (core, spooler, mules, signals, cache):
        for name in part.DECORATORS:
            globals()[name] = getattr(part, name)
        # A decorator whose name the part's `uwsgi` function already has (`signal`).
        globals().update(getattr(part, "DECORATORS_AS", {}))


_gather()
