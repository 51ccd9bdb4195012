"""uWSGI's config language end to end: real-looking ini, yaml and json files start unchanged,
placeholders and logic expand as uWSGI expands them, unknown keys warn, refused options and
broken files stop with one line and exit 2. Unit tests in src/config/ cover each rule; these
check that the running server sees the result, on both HTTP fronts."""

from __future__ import annotations

import json
import subprocess

import pytest
from support import APPS, app, build_request, free_port, run_headrace

FRONTS = ["http-socket", "http"]


def body(srv, path="/"):
    r = srv.request(build_request(path=path))
    assert r.status == 200, r
    return r.body.decode()


def one_line_error(p: subprocess.CompletedProcess) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, f"exit {p.returncode}; stderr={p.stderr!r}"
    assert len(lines) == 1, f"wanted one line on stderr, got {lines!r}"
    return lines[0]


@pytest.mark.parametrize("front", FRONTS)
def test_real_ini_with_placeholders_and_logic(headrace, tmp_path, front):
    port = free_port()
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        "[uwsgi]\n"
        "; a Django-style file, as found in the wild\n"
        f"projecthome = {APPS}\n"
        "base = 4\n"
        f"{front} = 127.0.0.1:{port}\n"
        "chdir = %(projecthome)\n"
        "wsgi-file = %(projecthome)/basic.py\n"
        "plugins = python3\n"
        "master = true\n"
        "enable-threads = true\n"
        "stats = 127.0.0.1:0\n"
        "env = HR_ARITH=%(base + 3 * 2)\n"
        "env = HR_LATER=%(later)\n"
        "env = HR_LOGFMT=%(ltime) %(status)\n"
        "env = HR_FROM_ENV=$(HR_CFG_VALUE)\n"
        "env = HR_DEFAULT=$(HR_CFG_UNSET:-fallback)\n"
        "env = HR_MAGIC=%n.%e\n"
        "env = HR_INLINE=a ; b\n"
        "if-env = HR_CFG_VALUE\n"
        "env = HR_IF=%(_)\n"
        "endif =\n"
        "for = x y\n"
        "env = HR_FOR_%(_)=%(_)\n"
        "endfor =\n"
        "later = set-after-use\n"
        "zuid = 1000\n"
    )
    srv = headrace("--ini", str(ini), port=port, env={"HR_CFG_VALUE": "from-env"})
    for name, want in [
        ("HR_ARITH", "14"),
        ("HR_LATER", "set-after-use"),
        ("HR_LOGFMT", "%(ltime) %(status)"),
        ("HR_FROM_ENV", "from-env"),
        ("HR_DEFAULT", "fallback"),
        ("HR_MAGIC", "uwsgi.ini"),
        ("HR_INLINE", "a ; b"),
        ("HR_IF", "from-env"),
        ("HR_FOR_x", "x"),
        ("HR_FOR_y", "y"),
    ]:
        assert body(srv, f"/env?name={name}") == want, name
    assert body(srv, "/cwd") == str(APPS)
    log = srv.log()
    assert f"unknown option `zuid` in {ini} line 26; did you mean `uid`?" in log, log
    assert "option `plugins`" in log and "accepted but ignored" in log, log
    assert "stats server enabled on 127.0.0.1" in log, log
    assert "unknown option `projecthome`" not in log, "a key used as a placeholder is not unknown"


@pytest.mark.parametrize("front", FRONTS)
def test_yaml_and_json_files(headrace, tmp_path, front):
    port = free_port()
    y = tmp_path / "app.yaml"
    y.write_text(
        f"uwsgi:\n  {front}: 127.0.0.1:{port}\n  wsgi-file: {app('basic.py')}\n"
        "  env: HR_Y=yes # comment\n  master: true\n"
    )
    srv = headrace("--yaml", str(y), port=port, bind=False)
    assert body(srv, "/env?name=HR_Y") == "yes"
    srv.stop()
    port = free_port()
    j = tmp_path / "app.json"
    j.write_text(json.dumps({"uwsgi": {front: f"127.0.0.1:{port}", "wsgi-file": app("basic.py"),
                                       "env": ["HR_J=1", "HR_K=2"], "master": True}}))
    srv = headrace(str(j), port=port, bind=False)
    assert body(srv, "/env?name=HR_K") == "2"


def test_sections_includes_and_uwsgi_ini_env(headrace, tmp_path):
    port = free_port()
    base = tmp_path / "base.ini"
    base.write_text(f"[uwsgi]\nwsgi-file = {app('basic.py')}\nenv = HR_WHO=base\n"
                    f"[prod]\nhttp-socket = 127.0.0.1:{port}\nenv = HR_WHO=prod\n")
    main = tmp_path / "main.ini"
    main.write_text(f"[uwsgi]\ninclude = {base}\nini = :prod\nenv = HR_SECTION=%x\n"
                    "[uwsgi]\nenv = HR_MERGED=second-section\n")
    srv = headrace(env={"UWSGI_INI": str(main)}, port=port, bind=False)
    assert body(srv, "/env?name=HR_WHO") == "prod"
    assert body(srv, "/env?name=HR_MERGED") == "second-section"
    assert body(srv, "/env?name=HR_SECTION") == ""


def write(tmp_path, text: str, port: int = 0) -> str:
    p = tmp_path / "uwsgi.ini"
    p.write_text("[uwsgi]\n" + f"http-socket = 127.0.0.1:{port or free_port()}\n"
                 + f"wsgi-file = {app('basic.py')}\n" + text)
    return str(p)


@pytest.mark.parametrize("text,line,needle", [
    ("emperor = /etc/vassals\n", 4, "Emperor"),
    ("master = true\nfile-serve-mode = x-accel-redirect\n", 5, "static-file option is not implemented"),
    ("gevent = 100\n", 4, "async"),
    ("need-plugins = python3,php\n", 4, "plugin `php`"),
    ("https = :443,cert.pem,key.pem\n", 4, "TLS"),
], ids=["emperor", "file-serve-mode", "gevent", "php-plugin", "https"])
def test_refused_options_exit_2_naming_file_and_line(tmp_path, text, line, needle):
    ini = write(tmp_path, text)
    err = one_line_error(run_headrace(["--ini", ini]))
    key = text.splitlines()[-1].split(" =")[0]
    assert f"option `{key}` in {ini} line {line} is not supported" in err, err
    assert needle in err, err


@pytest.mark.parametrize("text,needle", [
    ("a = x%(a)\n", "a -> a"),
    ("a = %(b)\nb = %(a)\n", "a -> b -> a"),
    ("processes = many\n", "invalid processes \"many\""),
    ("set = novalue\n", "expected NAME=VALUE"),
    ("ini = /no/such/file.ini\n", "/no/such/file.ini"),
], ids=["self-cycle", "cycle", "bad-number", "bad-set", "missing-include"])
def test_broken_files_exit_2_with_one_line(tmp_path, text, needle):
    err = one_line_error(run_headrace(["--ini", write(tmp_path, text)]))
    assert needle in err, err


@pytest.mark.parametrize("how", ["file", "cli"])
def test_strict_makes_unknown_keys_fatal(tmp_path, how):
    ini = write(tmp_path, "zuid = 1000\n" + ("strict = true\n" if how == "file" else ""))
    args = ["--ini", ini] + (["--strict"] if how == "cli" else [])
    err = one_line_error(run_headrace(args))
    assert "unknown option \"zuid\"" in err and "strict" in err, err


def test_show_config_prints_the_merged_config(headrace, tmp_path):
    port = free_port()
    ini = write(tmp_path, "base = 4\nthreads = %(base + 1)\nshow-config = true\n", port)
    srv = headrace("--ini", ini, bind=False, port=port)
    log = srv.log()
    assert ";uWSGI instance configuration" in log and "threads = 5\n" in log, log
    assert ";end of configuration" in log
