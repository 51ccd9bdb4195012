"""A `--mule=mule_script.py` mule: records that it started, then reads its messages with
uwsgi.mule_get_msg (a 1 s timeout returns b"") and records each one."""

import os

import uwsgi

RECORD = os.environ["HR_RECORD"]


def record(name, text):
    path = os.path.join(RECORD, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# uwsgi.mule_file() is uWSGI 2.1's (headrace has it; 2.0.30 does not).
mule_file = getattr(uwsgi, "mule_file", lambda: "-")()
record(f"script-{os.getpid()}", f"{uwsgi.mule_id()} {__name__} {mule_file}")
timeouts = 0
while True:
    msg = uwsgi.mule_get_msg(timeout=1)
    if msg == b"":
        timeouts += 1
        record(f"script-timeouts-{os.getpid()}", str(timeouts))
        continue
    record("got-" + msg.decode(), f"{uwsgi.mule_id()} {os.getpid()}")
