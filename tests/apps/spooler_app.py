"""The spooler's test app: runs unchanged under headrace and uWSGI (pyuwsgi).

Every task run appends one JSON line to ``$SPOOL_MARKS/<id>`` (pid, start/end time, the types
of the dict it got), so a test sees how many times each task ran, where and in which order.
"""

import json
import os
import time
from urllib.parse import parse_qs

import uwsgi
from uwsgidecorators import manage_spool_request, spool, spoolforever, spoolraw

MARKS = os.environ.get("SPOOL_MARKS", "/tmp/spool-marks")


def mark(task_id, **extra):
    line = {"pid": os.getpid(), "t": time.time(), **extra}
    with open(os.path.join(MARKS, task_id), "a") as f:
        f.write(json.dumps(line) + "\n")


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def spooler(env):
    """The raw callback: decorated tasks go to uwsgidecorators' dispatch."""
    if b"ud_spool_func" in env:
        return manage_spool_request(env)
    task_id = _s(env[b"id"])
    kind = _s(env.get(b"kind", b"ok"))
    types = sorted(f"{type(k).__name__}:{_s(k)}={type(v).__name__}" for k, v in env.items())
    mark(
        task_id,
        kind=kind,
        types=types,
        cwd=os.getcwd(),
        spooler=bool(uwsgi.i_am_the_spooler()),
        body=_s(env.get("body", b"")),
        name=_s(env["spooler_task_name"]),
    )
    sleep = float(_s(env.get(b"sleep", b"0")))
    if sleep:
        time.sleep(sleep)
    if kind == "raise":
        raise RuntimeError(f"task {task_id} fails on purpose")
    if kind == "retry":
        return uwsgi.SPOOL_RETRY
    if kind == "ignore":
        return uwsgi.SPOOL_IGNORE
    if kind == "respool":
        uwsgi.spool({b"id": (task_id + "-child").encode()})
    return uwsgi.SPOOL_OK


uwsgi.spooler = spooler


@spool
def seed_task(args):
    time.sleep(float(args.get("sleep", "1")))
    mark(args["id"], kind="seed")


@spool(pass_arguments=True)
def with_args(task_id, n, label="none"):
    mark(task_id, kind="args", n=n, label=label)


@spoolraw
def raw_task(args):
    seen = os.path.exists(os.path.join(MARKS, args["id"]))
    mark(args["id"], kind="raw")
    return uwsgi.SPOOL_OK if seen else uwsgi.SPOOL_RETRY


@spoolforever
def forever_task(args):
    mark(args["id"], kind="forever")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    parts = path.strip("/").split("/")
    out = b""
    if parts[0] == "seed":
        out = seed_task.spool(id=parts[1], sleep=q.get("sleep", "1"))
    elif parts[0] == "raw":
        d = {b"id": parts[1].encode()}
        for k, v in q.items():
            d[k.encode()] = v.encode()
        out = uwsgi.spool(d)
    elif parts[0] == "kw":
        out = uwsgi.send_to_spooler(id=parts[1].encode(), kind=b"ok")
    elif parts[0] == "args":
        out = with_args(parts[1], 7, label="x")
    elif parts[0] == "oldform":
        out = seed_task.spool({"id": parts[1], "sleep": "0"})
    elif parts[0] == "rawdeco":
        out = raw_task.spool(id=parts[1])
    elif parts[0] == "forever":
        out = forever_task.spool(id=parts[1])
    elif parts[0] == "api":
        info = {
            "spooler_pid": uwsgi.spooler_pid(),
            "spooler_pids": uwsgi.spooler_pids(),
            "i_am_the_spooler": uwsgi.i_am_the_spooler(),
            "jobs": [_s(j) for j in uwsgi.spooler_jobs()],
            "SPOOL": [uwsgi.SPOOL_OK, uwsgi.SPOOL_RETRY, uwsgi.SPOOL_IGNORE],
        }
        out = json.dumps(info).encode()
    elif parts[0] == "task":
        t = uwsgi.spooler_get_task(q["path"])
        out = json.dumps(
            None
            if t is None
            else sorted(
                f"{type(k).__name__}:{_s(k)}={type(v).__name__}:{_s(v)}" for k, v in t.items()
            )
        ).encode()
    elif parts[0] == "freq":
        out = repr(uwsgi.set_spooler_frequency(int(parts[1]))).encode()
    if isinstance(out, str):
        out = ("STR:" + out).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [out]
