"""The app behind the static-file tests: it says who answered, so a test can tell a static
hit (the file's bytes) from a fall-through to the app (uWSGI gives the app a missing file)."""

import os


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/":
        body = b"app root"
        status = "200 OK"
    elif path == "/pid":
        body = str(os.getpid()).encode()
        status = "200 OK"
    else:
        body = b"app 404 " + path.encode("latin-1")
        status = "404 Not Found"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
