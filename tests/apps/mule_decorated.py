"""@mule, @muleloop, @mulemsg and @farm: each records what it did in $HR_RECORD."""

import os
import time

import uwsgi
from uwsgidecorators import farm, mule, muleloop, mulemsg

RECORD = os.environ["HR_RECORD"]


def record(name, text=""):
    path = os.path.join(RECORD, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


@mule(1)
def brain():
    record(f"brain-{os.getpid()}", str(uwsgi.mule_id()))


@muleloop(2)
def loop():
    n = len([f for f in os.listdir(RECORD) if f.startswith(f"loop-{os.getpid()}-")])
    record(f"loop-{os.getpid()}-{n}", str(uwsgi.mule_id()))
    time.sleep(0.1)


@mulemsg(3)
def got(message):
    record("mulemsg-" + message.decode(), f"{uwsgi.mule_id()} {os.getpid()}")


@farm("pool")
def farmed(message):
    record("farm-" + message.decode(), f"{uwsgi.mule_id()} {os.getpid()}")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    out = b"?"
    if path.startswith("/mule/"):
        _, _, to, body = path.split("/", 3)
        out = str(uwsgi.mule_msg(body.encode(), int(to))).encode()
    elif path.startswith("/farm/"):
        _, _, name, body = path.split("/", 3)
        out = str(uwsgi.farm_msg(name, body.encode())).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [out]
