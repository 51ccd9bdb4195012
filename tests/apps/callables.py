"""A file with a non-default callable name, for `--callable`."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"default callable"]


def custom(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"custom callable"]
