"""The seed experiment's app: every request takes a while, so the server's workers fill up.

Run it with headrace, then send it 20 requests at once with seed_client.py:

    headrace --http :8000 --wsgi-file examples/seed_app.py --master --processes 5
    python examples/seed_client.py

Each request prints `Accept incoming request: <param>`, sleeps 10 s (set SEED_SLEEP to change
that, e.g. SEED_SLEEP=1) and answers `true`. With 5 processes the 20 requests finish in four
waves of five.
"""

import os
import time
from urllib.parse import parse_qs

SLEEP = float(os.environ.get("SEED_SLEEP", "10"))


def application(environ, start_response):
    params = parse_qs(environ.get("QUERY_STRING", ""))
    param = params.get("param", [""])[0]
    print(f"Accept incoming request: {param}")
    time.sleep(SLEEP)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"true"]
