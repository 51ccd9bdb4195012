"""The stats tests' app: fixed bodies, chosen statuses, an exception and a slow route."""

import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/status":
        code = int(q.get("code", "200"))
        start_response(f"{code} Chosen", [("Content-Type", "text/plain")])
        return [b"status"]
    if path == "/raise":
        raise RuntimeError("stats-test-boom")
    if path == "/sleep":
        time.sleep(float(q.get("s", "1")))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
