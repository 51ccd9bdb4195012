"""An app run under `wsgiref.validate.validator` with every warning turned into an error.

The validator checks both sides of PEP 3333: what the app does and what the server gives it
(environ types, wsgi.input/wsgi.errors methods, start_response, iteration and close()).
Anything it objects to raises; the outer wrapper logs `VALIDATOR-FAILURE` with the traceback
and answers 500, and a failure while the server iterates or closes the body reaches the log as
a traceback too. The test then asserts the log has neither.
"""

import hashlib
import json
import os
import sys
import traceback
import warnings
from wsgiref.validate import validator

warnings.simplefilter("error")

HERE = os.path.abspath(__file__)


def inner(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    inp = environ["wsgi.input"]

    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]

    if path == "/echo" and method == "POST":
        parts = []
        while True:
            chunk = inp.read(1000)
            if not chunk:
                break
            parts.append(chunk)
        data = b"".join(parts)
        body = json.dumps({"len": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]

    if path == "/lines" and method == "POST":
        first = inp.readline()
        rest = list(inp)
        body = json.dumps({"first": first.decode(), "rest": [x.decode() for x in rest]})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]

    if path == "/readlines" and method == "POST":
        lines = inp.readlines()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"".join(lines)]

    if path == "/stream":
        def gen():
            for i in range(10):
                yield b"part %d\n" % i
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"from write; ")
        return [b"from iterable"]

    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/x-python")])
        return environ["wsgi.file_wrapper"](open(HERE, "rb"), 8192)

    if path == "/errors":
        environ["wsgi.errors"].write("validated errors line\n")
        environ["wsgi.errors"].writelines(["validated errors line 2\n"])
        environ["wsgi.errors"].flush()
        start_response("204 No Content", [])
        return []

    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


validated = validator(inner)


def application(environ, start_response):
    try:
        return validated(environ, start_response)
    except BaseException:  # noqa: BLE001 - report whatever the validator raised
        text = traceback.format_exc()
        print("VALIDATOR-FAILURE " + text.replace("\n", " | "), flush=True)
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                       sys.exc_info())
        return [b"validator failure"]
