"""Every kind of request through `wsgiref.validate.validator` with warnings as errors: the
server must give the validator nothing to complain about."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from support import app, build_request, chunked


@pytest.fixture(scope="module")
def srv(headrace_module):
    return headrace_module("--wsgi-file", app("validated.py"), "--processes", "1",
                           "--threads", "2")


def post(path, body, **kw):
    return build_request("POST", path, body=body, **kw)


def test_validator_finds_nothing(srv):
    sent = 1  # the fixture's readiness probe

    def do(raw, method="GET", status=200):
        nonlocal sent
        sent += 1
        with srv.connect(timeout=30) as c:
            c.send(raw)
            r = c.read_response(method)
        assert r.status == status, f"{raw[:60]!r}: {r.status} {r.reason}"
        return r

    r = do(build_request("GET", "/"))
    assert (r.status, r.body) == (200, b"hello")
    r = do(build_request("HEAD", "/"), "HEAD")
    assert r.status == 200 and r.body == b""
    r = do(build_request("HEAD", "/stream"), "HEAD")
    assert r.status == 200 and r.body == b""

    big = os.urandom(300_000)
    r = do(post("/echo", big))
    assert json.loads(r.body) == {"len": len(big), "sha256": hashlib.sha256(big).hexdigest()}
    r = do(post("/echo", chunked(big[:1000], big[1000:]),
                headers=[("Transfer-Encoding", "chunked")], content_length=False))
    assert json.loads(r.body)["len"] == len(big)
    r = do(post("/echo", b""))
    assert json.loads(r.body)["len"] == 0
    r = do(post("/echo", b"abc", headers=[("Expect", "100-continue")]))
    assert json.loads(r.body)["len"] == 3

    r = do(post("/lines", b"one\ntwo\nthree"))
    assert json.loads(r.body) == {"first": "one\n", "rest": ["two\n", "three"]}
    r = do(post("/lines", chunked(b"a\nb", b"\nc\n"), headers=[("Transfer-Encoding", "chunked")],
                content_length=False))
    assert json.loads(r.body) == {"first": "a\n", "rest": ["b\n", "c\n"]}
    r = do(post("/readlines", b"x\ny\n"))
    assert r.body == b"x\ny\n"

    r = do(build_request("GET", "/stream"))
    assert r.body == b"".join(b"part %d\n" % i for i in range(10))
    r = do(build_request("GET", "/write"))
    assert r.body == b"from write; from iterable"
    r = do(build_request("GET", "/file"))
    with open(app("validated.py"), "rb") as f:
        assert r.body == f.read()
    do(build_request("GET", "/errors"), status=204)
    do(build_request("GET", "/missing?x=1"), status=404)

    # Once every request is logged, the validator has seen them all (including close()).
    srv.wait_request_lines(sent, timeout=15)
    srv.wait_log("validated errors line 2")
    log = srv.log()
    for bad in ("VALIDATOR-FAILURE", "Traceback", "Warning", "AssertionError",
                "garbage collected without being closed"):
        assert bad not in log, f"{bad!r} in the log:\n{log[-4000:]}"
