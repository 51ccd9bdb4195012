"""`--umask` (files and unix sockets the server creates get the mask) and `--add-header`
(every response carries the header, on every front); bad values are one-line errors, exit 2."""

from __future__ import annotations

import os
import socket
import stat
import tempfile

import pytest
from support import app, build_request, free_port, run_headrace

BASIC = app("basic.py")


def test_umask_applies_to_sockets_and_pidfile(headrace):
    d = tempfile.mkdtemp(prefix="hr-umask-")
    os.chmod(d, 0o755)
    sock, pid = os.path.join(d, "s.sock"), os.path.join(d, "hr.pid")
    port = free_port()
    headrace("--http-socket", f"127.0.0.1:{port}", "--socket", sock, "--pidfile", pid,
             "--wsgi-file", BASIC, "--umask", "027", port=port)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(pid).st_mode) == 0o640


@pytest.mark.parametrize("front", ["--http-socket", "--http"])
def test_add_header_on_every_response(headrace, front):
    port = free_port()
    srv = headrace(front, f"127.0.0.1:{port}", "--wsgi-file", BASIC,
                   "--add-header", "X-Served-By: headrace", "--add-header", "X-Frame-Options:DENY",
                   port=port)
    for path in ("/", "/nope-404"):
        r = srv.request(build_request("GET", path, headers=[("Connection", "close")]))
        assert r.header("X-Served-By") == "headrace", r.headers
        assert r.header("X-Frame-Options") == "DENY", r.headers


def test_add_header_over_uwsgi_protocol(headrace):
    port = free_port()
    headrace("--socket", f"127.0.0.1:{port}", "--wsgi-file", BASIC,
             "--add-header", "X-Served-By: headrace", bind=False, port=port, probe=None,
             workers=1)
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/"), (b"REQUEST_URI", b"/"),
             (b"QUERY_STRING", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
             (b"SERVER_NAME", b"x"), (b"SERVER_PORT", b"80")]
    body = b"".join(len(k).to_bytes(2, "little") + k + len(v).to_bytes(2, "little") + v
                    for k, v in pairs)
    packet = b"\0" + len(body).to_bytes(2, "little") + b"\0" + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(packet)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b"\r\nX-Served-By: headrace\r\n" in data.split(b"\r\n\r\n")[0] + b"\r\n"


@pytest.mark.parametrize("args,option", [
    (["--add-header", "no colon here"], "add-header"),
    (["--add-header", "Bad Name: x"], "add-header"),
    (["--umask", "999"], "umask"),
])
def test_bad_values_are_config_errors(args, option):
    r = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", BASIC, *args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert option in r.stdout + r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_chown_socket(headrace):
    import grp
    import pwd

    d = tempfile.mkdtemp(prefix="hr-chown-")
    sock = os.path.join(d, "s.sock")
    port = free_port()
    headrace("--http-socket", f"127.0.0.1:{port}", "--socket", sock, "--wsgi-file", BASIC,
             "--chown-socket", "nobody:nogroup", port=port)
    st = os.stat(sock)
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam("nobody").pw_uid,
                                      grp.getgrnam("nogroup").gr_gid)


def test_chown_socket_unknown_user_stops_startup(tmp_path):
    r = run_headrace(["--socket", str(tmp_path / "s.sock"), "--wsgi-file", BASIC,
                      "--chown-socket", "no-such-user-here"])
    assert r.returncode != 0
    assert "no such user" in r.stdout + r.stderr
