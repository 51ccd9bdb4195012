"""A 100 KiB response body, sent as one bytes object with Content-Length (scenario big100k)."""

BODY = b"x" * (100 * 1024)
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
