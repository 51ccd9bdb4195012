"""The `uwsgi` module, as headrace provides it.

The master puts this package in ``sys.modules["uwsgi"]`` (and ``decorators`` in
``sys.modules["uwsgidecorators"]``) before it loads the app, so code written for uWSGI runs
unchanged inside a headrace server, and ``import uwsgi`` fails outside one, as it does without
uWSGI. Each part of the API lives in its own module: ``core`` (identity, reload/stop, logging,
hooks), ``spooler``, ``mules``, ``signals`` (signals, timers, cron, file monitors) and
``cache`` (caches, shared areas, locks). Attributes that apps assign (``uwsgi.spooler``,
``uwsgi.post_fork_hook``, ``uwsgi.mule_msg_hook``, ``uwsgi.atexit``) are read from this module
when they are needed.
"""

from headrace._uwsgi.cache import *
from headrace._uwsgi.core import *
from headrace._uwsgi.core import _after_fork  # noqa: F401
from headrace._uwsgi.mules import *
from headrace._uwsgi.signals import *
from headrace._uwsgi.spooler import *

# `uwsgi.spooler` is the callback an app assigns (None until then; `@spool` sets uWSGI's
# dispatcher), not this package's `spooler` submodule, which importing it bound to that name.
spooler = None
