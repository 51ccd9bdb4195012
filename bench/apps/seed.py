"""The seed app: every request takes one second (scenario saturation)."""

import time


def application(environ, start_response):
    time.sleep(1)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "4")])
    return [b"true"]
