"""`home` / `virtualenv` / `venv` / `pyhome` (uWSGI's -H): the app imports from the virtualenv's
site-packages (and its .pth files) before the server's own, on every front; a directory that is
not there is a one-line config error (exit 2); a virtualenv of another Python version is refused
at startup rather than silently ignored."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import free_port, run_headrace

APP = """\
import hr_venv_probe, hr_pth_probe

def application(environ, start_response):
    body = (hr_venv_probe.WHERE + " " + hr_pth_probe.WHERE).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                   timeout=120)
    v = sys.version_info
    site = env_dir / "lib" / f"python{v.major}.{v.minor}" / "site-packages"
    (site / "hr_venv_probe.py").write_text('WHERE = "from-the-virtualenv"\n')
    extra = root / "extra"
    extra.mkdir()
    (extra / "hr_pth_probe.py").write_text('WHERE = "via-a-pth-file"\n')
    (site / "hr_extra.pth").write_text(str(extra) + "\n")
    app = root / "venv_app.py"
    app.write_text(APP)
    return env_dir, app


@pytest.mark.parametrize("name", ["home", "virtualenv", "venv", "pyhome"])
@pytest.mark.parametrize("front", ["--http-socket", "--http"])
def test_app_imports_from_the_virtualenv(headrace, tmp_path, venv, name, front):
    env_dir, app = venv
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\n{front[2:]} = 127.0.0.1:{port}\nwsgi-file = {app}\n"
                   f"{name} = {env_dir}\nmaster = true\n")
    srv = headrace("--ini", str(ini), port=port)
    r = srv.request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (r.status, r.body) == (200, b"from-the-virtualenv via-a-pth-file")


def test_lazy_apps_import_from_the_virtualenv_too(headrace, venv):
    env_dir, app = venv
    srv = headrace("--wsgi-file", str(app), "-H", str(env_dir), "--lazy-apps", "--processes", "2")
    r = srv.request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (r.status, r.body) == (200, b"from-the-virtualenv via-a-pth-file")


def test_missing_virtualenv_is_a_config_error(tmp_path):
    port = free_port()
    missing = tmp_path / "no-such-env"
    r = run_headrace(["--http-socket", f"127.0.0.1:{port}", "--wsgi-file", "x.py",
                      "--virtualenv", str(missing)])
    assert r.returncode == 2, r.stderr
    lines = [line for line in (r.stdout + r.stderr).splitlines() if "virtualenv" in line]
    assert len(lines) == 1 and str(missing) in lines[0], r.stdout + r.stderr


def test_virtualenv_of_another_python_is_refused(tmp_path):
    env_dir = tmp_path / "other"
    (env_dir / "lib" / "python2.7" / "site-packages").mkdir(parents=True)
    app = tmp_path / "a.py"
    app.write_text("def application(e, s):\n    s('200 OK', [])\n    return [b'']\n")
    port = free_port()
    r = run_headrace(["--http-socket", f"127.0.0.1:{port}", "--wsgi-file", str(app),
                      "--home", str(env_dir)])
    assert r.returncode != 0
    assert "no lib/python" in r.stdout + r.stderr
