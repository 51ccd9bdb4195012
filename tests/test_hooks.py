"""uWSGI's hooks (`hook-asap`, `hook-as-user`, `hook-pre-app`, `hook-post-app`,
`hook-master-start`, `hook-accepting`, `hook-accepting1`) and the `exec-*` shortcuts: each
runs where uWSGI runs it (the master, or each worker for accepting and, with --lazy-apps, for
pre/post-app), in uWSGI's order; a failing one stops the instance with uWSGI's FATAL line."""

from __future__ import annotations

import re

import pytest
from support import app, build_request, free_port, run_headrace, wait_until

APP = app("gaps_hooks.py")
PHASES = ("asap", "as-root", "as-user", "pre-app", "post-app", "master-start", "accepting", "accepting1")


def trace_ini(tmp_path, port, extra=""):
    trace = tmp_path / "trace"
    ini = tmp_path / "app.ini"
    lines = ["[uwsgi]", f"http-socket = 127.0.0.1:{port}", f"wsgi-file = {APP}",
             "processes = 2", f"env = GAPS_TRACE={trace}"]
    for phase in PHASES:
        lines.append(f"hook-{phase} = exec:echo {phase} $$ >> {trace}")
    # putenv is seen by the commands of later hooks (uWSGI's putenv(3))
    lines += ["hook-pre-app = putenv:GAPS_HOOK_VAR=from-hook",
              f"exec-pre-app = echo exec-pre-app $GAPS_HOOK_VAR >> {trace}", extra]
    ini.write_text("\n".join(lines) + "\n")
    return ini, trace


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy-apps"])
def test_phases_run_in_uwsgi_order_and_place(headrace, tmp_path, lazy):
    port = free_port()
    ini, trace = trace_ini(tmp_path, port, "lazy-apps = true" if lazy else "")
    srv = headrace("--ini", str(ini), port=port, workers=2)
    r = srv.request(build_request("GET", "/", headers=[("Connection", "close")]))
    assert r.status == 200, r
    wait_until(lambda: trace.read_text().count("accepting ") == 2, 10, "both workers' hooks")
    wait_until(lambda: "accepting1" in trace.read_text(), 10, "the accepting1 hook")
    wait_until(lambda: "master-start" in trace.read_text(), 10, "the master-start hook")
    lines = [line.split() for line in trace.read_text().splitlines()]
    names = [x[0] for x in lines]
    master = srv.master_pid()
    # asap and as-user run once, in the master (exec's shell is its child: the pid is the
    # shell's, so check the order and counts, and the app's import pid for the place).
    assert names.count("asap") == 1 and names.count("as-user") == 1, names
    assert names.count("as-root") == 1, names
    assert names.index("asap") < names.index("as-root") < names.index("as-user") \
        < names.index("pre-app"), names
    assert names.count("accepting") == 2 and names.count("accepting1") == 1, names
    imports = [int(x[1]) for x in lines if x[0] == "import"]
    if lazy:
        # each worker loads the app: pre-app, exec-pre-app, import, post-app in each
        assert names.count("pre-app") == 2 and names.count("post-app") == 2, names
        assert names.count("exec-pre-app") == 2, names
        assert set(imports) == set(srv.worker_pids()), (imports, srv.worker_pids())
    else:
        assert names.count("pre-app") == 1 and names.count("post-app") == 1, names
        assert imports == [master], (imports, master)
        assert names.index("pre-app") < names.index("exec-pre-app") < names.index("import") \
            < names.index("post-app") < names.index("accepting"), names
    log = srv.log()
    assert f'running "exec:echo asap $$ >> {trace}" (asap)...' in log
    assert f'running "echo exec-pre-app $GAPS_HOOK_VAR >> {trace}" (pre app)...' in log
    assert next(x for x in lines if x[0] == "exec-pre-app")[1] == "from-hook", lines


@pytest.mark.parametrize(
    "line",
    ["hook-pre-app = exec:exit 3", "exec-pre-app = false", "hook-asap = exec:exit 4",
     "hook-post-app = exec:false", "hook-as-user = exec:false", "exec-as-root = false"],
)
def test_a_failing_master_hook_stops_startup(tmp_path, line):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nwsgi-file = {APP}\n{line}\n")
    r = run_headrace(["--ini", str(ini)])
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "FATAL hook failed, destroying instance" in out, out
    assert re.search(r'command ".*" exited with non-zero code: \d+', out), out
    assert "spawned headrace worker" not in out, out


@pytest.mark.parametrize("line", ["hook-accepting = exec:false",
                                  "hook-master-start = exec:false"])
def test_a_failing_hook_after_fork_stops_the_instance(tmp_path, line):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nwsgi-file = {APP}\n"
                   f"processes = 2\n{line}\n")
    r = run_headrace(["--ini", str(ini)], timeout=30)
    out = r.stdout + r.stderr
    assert "FATAL hook failed, destroying instance" in out, out
    assert "goodbye to headrace" in out, out


def test_graceful_term_master_start_hook_still_starts(headrace, tmp_path):
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {APP}\n"
                   "hook-master-start = unix_signal:15 gracefully_kill_them_all\n")
    srv = headrace("--ini", str(ini), port=port, workers=1)
    assert srv.request(build_request("GET", "/", headers=[("Connection", "close")])).status == 200


@pytest.mark.parametrize(
    ("line", "option"),
    [("hook-pre-app = ./manage.py migrate", "hook-pre-app"),
     ("hook-asap = call:my_function", "hook-asap"),
     ("hook-accepting = putenv:NOVALUE", "hook-accepting"),
     ("exec-post-app = ", "exec-post-app")],
)
def test_bad_hook_values_exit_2_naming_the_option(tmp_path, line, option):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nwsgi-file = {APP}\n{line}\n")
    r = run_headrace(["--ini", str(ini)])
    out = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2, out
    assert len(out) == 1 and option in out[0], out
