"""Mules e2e app: routes that message mules, and what the mules do with the messages.

Everything a mule does is recorded as a file in $HR_RECORD (name: what happened; text: the
mule id and pid), so tests see it without talking to the mule. Runs unchanged under uWSGI
(pyuwsgi), the reference: there, farm names must be bytes.
"""

import os
import time
from urllib.parse import parse_qs

import uwsgi
from uwsgidecorators import mulefunc

RECORD = os.environ.get("HR_RECORD")


def record(name, text=""):
    if not RECORD:
        return
    path = os.path.join(RECORD, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def me():
    return f"{uwsgi.mule_id()} {os.getpid()}"


# uWSGI 2.0's uwsgidecorators makes its @mulefunc dispatcher the mule_msg_hook; headrace's
# runs beside the app's hook. Chaining to the previous hook works with both.
previous_hook = getattr(uwsgi, "mule_msg_hook", None)


def on_message(msg):
    """uwsgi.mule_msg_hook: b"rec:NAME" records NAME; b"sleep:S" sleeps S seconds (a task
    that blocks the mule, for full queues and harakiri); other messages (pickled @mulefunc
    calls) go to the previous hook."""
    if msg.startswith(b"rec:"):
        record("msg-" + msg[4:].decode(), me())
    elif msg.startswith(b"sleep:"):
        record("sleeping-" + str(os.getpid()), me())
        time.sleep(float(msg[6:]))
        record("slept-" + str(os.getpid()), me())
    elif previous_hook is not None:
        previous_hook(msg)


uwsgi.mule_msg_hook = on_message


@mulefunc
def remember(name, suffix=""):
    record("func-" + name + suffix, me())


@mulefunc(2)
def remember_in_two(name):
    record("func2-" + name, me())


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    out = b"?"
    if path == "/msg":
        to = q.get("to")
        body = q["body"].encode()
        if to is None:  # uWSGI refuses an explicit None target
            out = str(uwsgi.mule_msg(body)).encode()
        else:
            out = str(uwsgi.mule_msg(body, int(to) if to.isdigit() else to.encode())).encode()
    elif path == "/farm_msg":
        out = str(uwsgi.farm_msg(q["farm"], q["body"].encode())).encode()
    elif path == "/flood":
        # Send until the queue refuses: how many went in, then False.
        sent = 0
        while uwsgi.mule_msg(b"x" * int(q.get("size", "100")), int(q["to"])):
            sent += 1
            if sent > 100000:
                break
        out = str(sent).encode()
    elif path == "/call":
        remember(q["name"], suffix=q.get("suffix", ""))
        out = b"called"
    elif path == "/call2":
        remember_in_two(q["name"])
        out = b"called"
    elif path == "/error":
        try:
            uwsgi.mule_msg(b"x", int(q["to"]))
            out = b"no error"
        except ValueError as e:
            out = str(e).encode()
    elif path == "/get":
        try:
            uwsgi.mule_get_msg()
        except ValueError as e:
            out = str(e).encode()
    elif path == "/id":
        out = str(uwsgi.mule_id()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [out]
