"""App for tests/test_hooks.py: its import is a line in $GAPS_TRACE, so a test sees where it
falls among the hooks' lines; each request answers the environment a hook may have set."""

import os

TRACE = os.environ.get("GAPS_TRACE")
if TRACE:
    with open(TRACE, "a") as f:
        f.write(f"import {os.getpid()}\n")


def application(environ, start_response):
    body = os.environ.get("GAPS_HOOK_VAR", "-").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
