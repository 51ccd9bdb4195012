"""`route = REGEXP donotlog:` (PATH_INFO) and `route-uri = REGEXP donotlog:` (REQUEST_URI):
matching requests are served but get no request line, on each front; any other route action
stops startup with one line naming it."""

from __future__ import annotations

import pytest
from support import app, build_request, free_port, run_headrace

BASIC = app("basic.py")


@pytest.mark.parametrize("front", ["--http-socket", "--http"])
def test_donotlog_routes(headrace, tmp_path, front):
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\n{front[2:]} = 127.0.0.1:{port}\nwsgi-file = {BASIC}\n"
                   "route = ^/health donotlog:\nroute-uri = secret=1 donotlog:\n")
    srv = headrace("--ini", str(ini), port=port, probe=None, workers=1)
    for path in ("/health", "/health/deep", "/a%20b?secret=1", "/logged?x=1"):
        r = srv.request(build_request("GET", path, headers=[("Connection", "close")]))
        assert r.status == 404, r  # basic.py has none of these paths: its own 404
    srv.wait_log("GET /logged?x=1 =>", timeout=5)
    uris = [m.group("uri") for m in srv.request_lines()]
    assert uris == ["/logged?x=1"], uris


@pytest.mark.parametrize("line", ["^/old goto:label", "^/x rewrite:/y", "^/z"])
def test_other_route_actions_stop_startup(tmp_path, line):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nwsgi-file = {BASIC}\n"
                   f"route = {line}\n")
    r = run_headrace(["--ini", str(ini)])
    assert r.returncode == 2, r.stdout + r.stderr
    out = [x for x in (r.stdout + r.stderr).splitlines() if "route" in x]
    assert len(out) == 1 and "line 4" in out[0], out
