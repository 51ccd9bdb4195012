"""Spooler on Redis (tests/test_spooler_redis.py): requests spool tasks, spoolers run them.

GET /spool?name=N[&priority=P][&at=T][&sleep=S][&fail=always] spools one task with uWSGI's
`@spool` decorator and answers the name `uwsgi.spool` returned. A task leaves files in
HR_RECORD: `start.N.HOST.PID.NS` when it starts (its content: the `spooler_task_name` it
was given) and `done.N.HOST.PID.NS` when it ends. HOST is HR_HOST ("web", "worker"), so a
test sees which headrace ran it. `sleep` applies to the first run only (a task run again
after its spooler was killed does not sleep again); `fail=always` raises every time.
"""

import glob
import os
import time
from urllib.parse import parse_qsl

from uwsgidecorators import spool

RECORD = os.environ["HR_RECORD"]
HOST = os.environ.get("HR_HOST", "host")


def _mark(kind, name, text=""):
    path = os.path.join(RECORD, f"{kind}.{name}.{HOST}.{os.getpid()}.{time.time_ns()}")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


@spool
def work(args):
    name = args["name"]
    first = not glob.glob(os.path.join(RECORD, f"start.{name}.*"))
    _mark("start", name, str(args.get("spooler_task_name", "")))
    if first:
        time.sleep(float(args.get("sleep", "0")))
    if args.get("fail") == "always":
        raise RuntimeError(f"task {name} fails on purpose")
    _mark("done", name)


def application(environ, start_response):
    if environ["PATH_INFO"] != "/spool":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    args = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    name = work.spool(**args)
    if isinstance(name, str):
        name = name.encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [name]
