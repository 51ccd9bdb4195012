"""`--mount /PATH=APP` with `--manage-script-name` (the longest mountpoint that starts
PATH_INFO picks the app and moves to SCRIPT_NAME) on every front, and without it (the request's
SCRIPT_NAME, as nginx sends it over the uwsgi protocol, picks the app)."""

from __future__ import annotations

import socket
import struct

import pytest
from support import build_request, free_port

APP = """\
def application(environ, start_response):
    body = "{name} " + environ["SCRIPT_NAME"] + "|" + environ["PATH_INFO"]
    body = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def apps(tmp_path):
    for name in ("main", "blog", "blogadmin"):
        (tmp_path / f"{name}.py").write_text(APP.replace("{name}", name))
    return tmp_path


def get(srv, path: str) -> bytes:
    r = srv.request(build_request("GET", path, headers=[("Connection", "close")]))
    assert r.status == 200, r
    return r.body


@pytest.mark.parametrize("front", ["--http-socket", "--http"])
def test_manage_script_name(headrace, apps, front):
    port = free_port()
    srv = headrace(front, f"127.0.0.1:{port}", "--wsgi-file", str(apps / "main.py"),
                   "--mount", f"/blog={apps / 'blog.py'}",
                   "--mount", f"/blog/admin={apps / 'blogadmin.py'}",
                   "--manage-script-name", "--processes", "2", port=port)
    assert get(srv, "/blog/post/1") == b"blog /blog|/post/1"
    assert get(srv, "/blog") == b"blog /blog|"
    assert get(srv, "/blog/admin/x") == b"blogadmin /blog/admin|/x"
    assert get(srv, "/blogger") == b"main |/blogger", "a mountpoint matches whole segments only"
    assert get(srv, "/") == b"main |/"


def test_mount_without_a_main_app_serves_the_first_mount_elsewhere(headrace, apps):
    """uWSGI 2.0 makes the first app mounted the default app (pyloader.c), so a path no
    mountpoint matches goes to it, SCRIPT_NAME unchanged."""
    port = free_port()
    srv = headrace("--http-socket", f"127.0.0.1:{port}", "--mount", f"/blog={apps / 'blog.py'}",
                   "--manage-script-name", port=port, probe="/blog/")
    assert get(srv, "/blog/x") == b"blog /blog|/x"
    assert get(srv, "/other") == b"blog |/other"


def uwsgi_get(port: int, script_name: bytes, path: bytes) -> bytes:
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"SCRIPT_NAME", script_name), (b"PATH_INFO", path),
             (b"REQUEST_URI", script_name + path), (b"QUERY_STRING", b""),
             (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"SERVER_NAME", b"x"), (b"SERVER_PORT", b"80")]
    body = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def test_script_name_from_nginx_picks_the_app(headrace, apps):
    port = free_port()
    headrace("--socket", f"127.0.0.1:{port}", "--wsgi-file", str(apps / "main.py"),
             "--mount", f"/blog={apps / 'blog.py'}", bind=False, port=port, probe=None,
             workers=1)
    assert uwsgi_get(port, b"/blog", b"/post") == b"blog /blog|/post"
    assert uwsgi_get(port, b"", b"/post") == b"main |/post"
