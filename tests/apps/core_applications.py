"""No `application`: uWSGI's `uwsgi.applications` maps mountpoints to apps instead (a callable,
or a "module:callable" string)."""

import uwsgi


def root(environ, start_response):
    body = f"root {environ['SCRIPT_NAME']!r} {environ['PATH_INFO']!r}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def app_b(environ, start_response):
    body = f"b {environ['SCRIPT_NAME']!r} {environ['PATH_INFO']!r}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


uwsgi.applications = {"": root, "/b": "core_applications:app_b"}
