"""The command line in uWSGI's spellings: options, ini files, UWSGI_* env vars, bad input, and
the address forms."""

from __future__ import annotations

import json
import re
import socket
import subprocess

import pytest
from support import APPS, REPO, app, build_request, free_port, run_headrace


def stderr_lines(p: subprocess.CompletedProcess) -> list[str]:
    return [line for line in p.stderr.splitlines() if line.strip()]


# --- errors -------------------------------------------------------------------------------


def valid_base() -> list[str]:
    return ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", app("basic.py")]


@pytest.mark.parametrize("args,name", [
    (["--bogus"], "bogus"),
    (["--no-such-option", "1"], "no-such-option"),
    (["--processes", "abc"], "processes"),
    (["--threads", "many"], "threads"),
    (["--listen", "lots"], "listen"),
    (["--processes=abc"], "processes"),
    (["-p", "x"], "processes"),
    (["--wsgi-file"], "wsgi-file"),
], ids=["unknown", "unknown-with-value", "processes-abc", "threads-many", "listen-lots",
        "processes=abc", "p-x", "missing-value"])
@pytest.mark.parametrize("context", ["alone", "with-valid-options"])
def test_bad_command_line_exits_2_with_one_line(args, name, context):
    # "alone": exactly what a user might type first, e.g. `headrace --processes abc`.
    p = run_headrace(args if context == "alone" else valid_base() + args)
    assert p.returncode == 2, f"exit {p.returncode}; stderr={p.stderr!r}"
    lines = stderr_lines(p)
    assert len(lines) == 1, f"wanted one line on stderr, got {lines!r}"
    aliases = {"processes": ("processes", "-p")}
    assert any(n in lines[0] for n in aliases.get(name, (name,))), (
        f"the error does not name {name!r}: {lines[0]!r}"
    )


def test_version():
    p = run_headrace(["--version"])
    assert p.returncode == 0
    assert re.search(r"\d+\.\d+", p.stdout + p.stderr), p.stdout + p.stderr


def test_help():
    p = run_headrace(["--help"])
    assert p.returncode == 0
    out = p.stdout + p.stderr
    for opt in ("--http-socket", "--wsgi-file", "--processes", "--threads", "--module"):
        assert opt in out, f"--help does not mention {opt}"


@pytest.mark.parametrize("extra", [[], ["--need-app"], ["--processes", "2"]],
                         ids=["default", "need-app", "two-processes"])
def test_app_that_fails_to_import_exits_1_with_traceback(extra):
    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file",
                      app("broken.py"), *extra])
    out = p.stdout + p.stderr
    assert p.returncode == 1, f"exit {p.returncode}; output:\n{out}"
    assert "Traceback" in out
    assert "broken-app-marker" in out


@pytest.mark.parametrize("args", [
    ["--wsgi-file", str(APPS / "does_not_exist.py")],
    ["--wsgi-file", app("callables.py"), "--callable", "no_such_callable"],
    ["--module", "no_such_module_hr"],
], ids=["missing-file", "missing-callable", "missing-module"])
def test_app_that_cannot_be_loaded_exits_1(args):
    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}", *args])
    assert p.returncode == 1, f"exit {p.returncode}; output:\n{p.stdout}{p.stderr}"


# --- where the app comes from -------------------------------------------------------------


def body(srv, path="/"):
    r = srv.request(build_request(path=path))
    assert r.status == 200, r
    return r.body.decode()


@pytest.mark.parametrize("args,expected", [
    (["--module", "modapp:app"], "modapp:app"),
    (["-w", "modapp"], "modapp:application"),
    (["--module", "modapp", "--callable", "app"], "modapp:app"),
    (["--wsgi", "modapp:app"], "modapp:app"),
], ids=["module-colon", "w-default-callable", "module-callable", "wsgi-alias"])
def test_module(headrace, args, expected):
    srv = headrace("--pythonpath", str(APPS / "pkg"), *args)
    assert body(srv).startswith(expected + " ")


def test_pythonpath_repeatable(headrace, tmp_path):
    srv = headrace("--pythonpath", str(tmp_path), "--pythonpath", str(APPS / "pkg"),
                   "--module", "modapp:app")
    assert body(srv).startswith("modapp:app")


def test_wsgi_file_with_callable(headrace):
    srv = headrace("--wsgi-file", app("callables.py"), "--callable", "custom")
    assert body(srv) == "custom callable"


def test_chdir(headrace):
    srv = headrace("--chdir", str(APPS), "--wsgi-file", "basic.py", cwd=str(REPO))
    assert body(srv, "/cwd") == str(APPS)


def test_chdir_module(headrace):
    srv = headrace("--chdir", str(APPS / "pkg"), "--pythonpath", str(APPS / "pkg"),
                   "--module", "modapp:app")
    assert body(srv) == f"modapp:app cwd={APPS / 'pkg'}"


def test_env_repeatable(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--env", "HR_A=one", "--env",
                   "HR_B=two=three")
    assert body(srv, "/env?name=HR_A") == "one"
    assert body(srv, "/env?name=HR_B") == "two=three"


def test_accepted_compat_flags(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--master", "--enable-threads",
                   "--processes", "1")
    assert body(srv, "/pid").isdigit()


@pytest.mark.parametrize("flag", ["--processes", "-p", "--workers"])
def test_processes_spellings(headrace, flag):
    srv = headrace("--wsgi-file", app("basic.py"), flag, "2", probe=None, workers=2)
    assert len(set(srv.worker_pids())) == 2


# --- ini and env --------------------------------------------------------------------------


def test_ini_file(headrace, tmp_path):
    port = free_port()
    ini = tmp_path / "hr.ini"
    ini.write_text(
        "[other]\nprocesses = 7\n\n"
        "[uwsgi]\n"
        "# a comment\n"
        "; another comment\n"
        f"http-socket = 127.0.0.1:{port}\n"
        f"wsgi-file = {app('basic.py')}\n"
        "processes = 2\n"
        "master = true\n"
        "env = HR_INI=from-ini\n"
    )
    srv = headrace("--ini", str(ini), port=port, workers=2)
    assert body(srv, "/env?name=HR_INI") == "from-ini"
    srv.wait_log("spawned headrace worker 2")
    assert len(set(srv.worker_pids())) == 2


def test_uwsgi_env_vars(headrace):
    srv = headrace(env={"UWSGI_PROCESSES": "3", "UWSGI_WSGI_FILE": app("basic.py")},
                   probe=None, workers=3)
    assert len(set(srv.worker_pids())) == 3
    assert body(srv, "/pid").isdigit()


# --- addresses ----------------------------------------------------------------------------


def test_unix_socket(headrace, tmp_path):
    path = str(tmp_path / "hr.sock")
    srv = headrace("--wsgi-file", app("basic.py"), unix=path)
    r = srv.request(build_request(path="/list"))
    assert r.status == 200 and r.body == b"hello world"
    env = json.loads(srv.request(build_request(path="/environ")).body)
    assert env["REQUEST_METHOD"] == "GET"


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_ipv6_loopback(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), host="::1")
    r = srv.request(build_request(path="/environ"))
    assert r.status == 200
    assert json.loads(r.body)["REMOTE_ADDR"] == "::1"


def test_http_option_serves(headrace):
    port = free_port()
    srv = headrace("--http", f"127.0.0.1:{port}", "--wsgi-file", app("basic.py"), port=port)
    assert srv.request(build_request(path="/list")).body == b"hello world"


def test_listen_backlog(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--listen", "17")
    out = subprocess.run(["ss", "-ltnH", f"sport = :{srv.port}"], check=False, capture_output=True,
                         text=True, timeout=10)
    if out.returncode != 0:
        pytest.skip("ss not usable here")
    # For a listening socket ss shows the backlog as Send-Q.
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    assert rows, out.stdout
    assert {row[2] for row in rows} == {"17"}, out.stdout
