"""An app found by module name (`--module modapp:app`, `-w modapp`), with two callables."""

import os


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"modapp:application cwd={os.getcwd()}".encode()]


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"modapp:app cwd={os.getcwd()}".encode()]
