"""`--py-autoreload N`: a change to the file of any module the app imported reloads the
workers gracefully (the new code answers), on each front, preloaded and lazy; a module named
by `--py-auto-reload-ignore` does not."""

from __future__ import annotations

import os
import time

import pytest
from support import build_request, free_port, wait_until

APP = """\
import hr_autoreload_helper, hr_autoreload_ignored

def application(environ, start_response):
    body = hr_autoreload_helper.VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def bump(path) -> None:
    future = time.time() + 5
    os.utime(path, (future, future))


def version(srv) -> bytes:
    return srv.request(build_request("GET", "/", headers=[("Connection", "close")])).body


@pytest.mark.parametrize("mode", [[], ["--lazy-apps"]], ids=["preload", "lazy"])
@pytest.mark.parametrize("front", ["--http-socket", "--http"])
def test_module_change_reloads(headrace, tmp_path, front, mode):
    (tmp_path / "hr_autoreload_helper.py").write_text('VERSION = "one"\n')
    (tmp_path / "hr_autoreload_ignored.py").write_text("X = 1\n")
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    srv = headrace(front, f"127.0.0.1:{port}", "--wsgi-file", str(tmp_path / "app.py"),
                   "--pythonpath", str(tmp_path), "--processes", "2", "--py-autoreload", "1",
                   "--py-auto-reload-ignore", "hr_autoreload_ignored", *mode, port=port)
    assert version(srv) == b"one"
    ignored = tmp_path / "hr_autoreload_ignored.py"
    ignored.write_text("X = 2\n")
    bump(ignored)
    time.sleep(2.5)  # two checks pass: an ignored module reloads nothing
    assert "has been modified" not in srv.log()
    helper = tmp_path / "hr_autoreload_helper.py"
    helper.write_text('VERSION = "two"\n')
    bump(helper)
    srv.wait_log("hr_autoreload_helper.py has been modified", timeout=10)
    srv.wait_log("reload complete", timeout=20)
    wait_until(lambda: version(srv) == b"two", 10, "the new code answering")
