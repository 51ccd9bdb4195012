"""Reads the whole request body and answers with its length (scenario post1m).

The body is read in 64 KiB chunks until CONTENT_LENGTH bytes arrived, as a real app or
framework would; the length is checked so a server that loses bytes answers 500.
"""

CHUNK = 64 * 1024


def application(environ, start_response):
    try:
        expected = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        expected = 0
    stream = environ["wsgi.input"]
    got = 0
    while got < expected:
        chunk = stream.read(min(CHUNK, expected - got))
        if not chunk:
            break
        got += len(chunk)
    body = str(got).encode()
    status = "200 OK" if got == expected else "500 Internal Server Error"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
