"""An ASGI app for tests/test_asgi_uwsgi.py: the `uwsgi` module's calls tied to the running
request (logvars, connection_fd, request_id), from concurrent requests on one event loop."""

import asyncio
import json
from urllib.parse import parse_qs

import uwsgi


async def application(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError("no lifespan")
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["path"] == "/lv":
        uwsgi.set_logvar("who", q["who"])
        fd = uwsgi.connection_fd()
        # Another request runs its steps while this one sleeps.
        await asyncio.sleep(float(q.get("sleep", "0")))
        uwsgi.set_logvar(b"late", q["who"].upper().encode())
        body = {
            "who": uwsgi.get_logvar("who").decode(),
            "late": uwsgi.get_logvar("late").decode(),
            "missing": uwsgi.get_logvar("missing"),
            "fd_stable": uwsgi.connection_fd() == fd,
        }
    else:
        body = {"who": uwsgi.get_logvar("who")}
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
