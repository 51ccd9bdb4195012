"""bench/spooler.py's app: an empty spooler task, and an endpoint that spools N of them and
times each `uwsgi.spool` call. Runs unchanged under headrace and uWSGI."""

import json
import time

import uwsgi


def spooler(env):
    return uwsgi.SPOOL_OK


uwsgi.spooler = spooler


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pid":
        out = json.dumps({"spooler": uwsgi.spooler_pid()}).encode()
    else:
        n = int(path.strip("/").split("/")[1])
        lat = []
        for i in range(n):
            t = time.perf_counter()
            uwsgi.spool({b"n": str(i).encode()})
            lat.append(time.perf_counter() - t)
        out = json.dumps(lat).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]
