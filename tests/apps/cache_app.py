"""Calls the uwsgi cache, shared area and lock API from a request and answers with JSON.

GET /call?fn=cache_set&a=key&a=value&kw=expires:5&kw=cache:mine
  arguments: each ``a`` in order (prefix ``b:`` for bytes, ``x:`` for bytes in hex, ``i:``
  for an int, ``n:`` None); ``wait=S``: sleep S seconds before answering (to keep the worker
  busy, so that the next requests go to another one);
  keyword arguments: ``kw=name:value`` (same prefixes after the colon).
  Answer: {"worker": id, "pid": pid, "result": repr(result)} or {"error": "TypeName: text"}.
GET /hold?n=0&s=1      holds user lock n for s seconds (uwsgi.lock/unlock), then answers
                       with when it got and released it.
GET /decorated?s=1     the same through uwsgidecorators' @lock (lock 0).
GET /memoryview        writes b"mv" through sharedarea_memoryview(0) at 100, reads it back.
GET /bench?n=N         times N cache_set (update), N cache_get, N cache_inc, N lock+unlock
                       in this worker: {"update": ops/s, "get": ..., "inc": ..., "lock": ...}.
"""

import json
import os
import time
from urllib.parse import parse_qsl

import uwsgi
from uwsgidecorators import lock as lock_decorator


def _value(text):
    if text.startswith("b:"):
        return text[2:].encode()
    if text.startswith("x:"):
        return bytes.fromhex(text[2:])
    if text.startswith("i:"):
        return int(text[2:])
    if text.startswith("n:"):
        return None
    return text


@lock_decorator
def _held(seconds):
    got = time.time()
    time.sleep(seconds)
    return got, time.time()


def _bench(n):
    value = b"x" * 100
    keys = [f"key{i}" for i in range(1000)]
    rates = {}
    t = time.perf_counter()
    for i in range(n):
        uwsgi.cache_update(keys[i % 1000], value)
    rates["update"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        uwsgi.cache_get(keys[i % 1000])
    rates["get"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):
        uwsgi.cache_inc("counter")
    rates["inc"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):
        uwsgi.lock()
        uwsgi.unlock()
    rates["lock"] = n / (time.perf_counter() - t)
    return rates


def application(environ, start_response):
    q = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    path = environ["PATH_INFO"]
    out = {"pid": os.getpid()}
    try:
        if path == "/call":
            fn = getattr(uwsgi, dict(q)["fn"])
            args = [_value(v) for k, v in q if k == "a"]
            kwargs = {}
            for k, v in q:
                if k == "kw":
                    name, _, val = v.partition(":")
                    kwargs[name] = _value(val)
            out["result"] = repr(fn(*args, **kwargs))
            time.sleep(float(dict(q).get("wait", 0)))
        elif path == "/hold":
            n = int(dict(q).get("n", 0))
            seconds = float(dict(q).get("s", 1))
            uwsgi.lock(n)
            got = time.time()
            time.sleep(seconds)
            released = time.time()
            uwsgi.unlock(n)
            out.update(got=got, released=released)
        elif path == "/decorated":
            got, released = _held(float(dict(q).get("s", 1)))
            out.update(got=got, released=released)
        elif path == "/memoryview":
            mv = uwsgi.sharedarea_memoryview(0)
            mv[100:102] = b"mv"
            out["result"] = repr((len(mv), uwsgi.sharedarea_read(0, 100, 2)))
        elif path == "/bench":
            out.update(_bench(int(dict(q).get("n", 100000))))
        else:
            out["result"] = "hello"
    except Exception as e:  # noqa: BLE001 - the test reads the error
        out["error"] = f"{type(e).__name__}: {e}"
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
