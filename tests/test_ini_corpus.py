"""Real uwsgi.ini (and yaml/json) files from public projects start under headrace as they do
under uWSGI 2.0.30 (issue 11).

Each file of the corpus (listed with sources and licenses in tests/ini_corpus/SOURCES.md; the
files themselves stay out of this repository's commits and are read from shared/ini_corpus,
$HEADRACE_INI_CORPUS or a local tests/ini_corpus/files/, see corpus.corpus_dir) is rewritten by
tests/ini_corpus/rewrite.py: only its app target, sockets, users, the paths it writes and
its project's commands change, the same way for both servers. tests/ini_corpus/expected.json
records what uWSGI 2.0.30 (pyuwsgi) does with each rewritten file:

* "starts": headrace must start on it and answer the probe (GET / over HTTP, or a uwsgi
  packet when the file only has uwsgi sockets) with a 200;
* "broken": uWSGI refuses it; headrace must exit with code 2 and print one line naming the
  option at fault ("option" in expected.json: a name, or a list of names when the file has
  several faults and uWSGI stops at a different one than headrace).

GAPS lists the files uWSGI starts that headrace does not start yet, each with the reason; they
are strict xfails, so a file that starts makes its test fail until it leaves the list.

`test_uwsgi_reference` re-checks expected.json against uWSGI itself; it needs pyuwsgi and is
skipped without it (tests/ini_corpus/compare.py runs both servers side by side).
"""

from __future__ import annotations

import itertools
import re
import urllib.request
from pathlib import Path

import pytest
from ini_corpus.corpus import (
    FILES,
    check_sha,
    corpus_dir,
    load_manifest,
    prepare,
    run_uwsgi,
    uwsgi_cmd,
    wait_status,
)
from ini_corpus.rewrite import rewrite
from support import START_TIMEOUT, free_port, run_headrace

MANIFEST = load_manifest()
CORPUS = corpus_dir()

#: Files uWSGI starts that headrace refuses today, and why (what is missing in headrace).
GAPS: dict[str, str] = {}


def corpus():
    if CORPUS is None:
        pytest.skip("the corpus files are not here: put them in shared/ini_corpus (see "
                    "tests/ini_corpus/SOURCES.md) or point HEADRACE_INI_CORPUS at them")
    return CORPUS


def test_manifest_covers_the_corpus():
    assert len(FILES) >= 50
    formats = {name.rsplit(".", 1)[1] for name in FILES}
    assert {"ini", "json"} <= formats and formats & {"yml", "yaml"}, formats
    assert set(GAPS) <= {n for n, e in MANIFEST.items() if e["uwsgi"] == "starts"}
    for name, entry in MANIFEST.items():
        assert entry["uwsgi"] in ("starts", "broken"), name
        if entry["uwsgi"] == "broken":
            assert entry.get("option"), f"{name}: a broken file names the option at fault"


def test_corpus_files_are_the_recorded_ones():
    where = corpus()
    present = sorted(p.name for p in where.iterdir() if re.match(r"^\d\d-", p.name))
    assert present == FILES
    for name in FILES:
        check_sha(where / name, MANIFEST[name]["sha256"])


# --- the rewrite itself (no server) ---------------------------------------------------------

W = Path("/w")


def _rw(text: str, fmt: str = "ini", section: str = "uwsgi"):
    ports = itertools.count(40001)
    return rewrite(text, fmt, W, W / "corpus_app.py", W / "corpus_mule.py", "/venv",
                   lambda: next(ports), section)


def test_rewrite_keeps_every_other_byte():
    text = ("; a comment with socket = :1\r\n[uwsgi]\r\nmaster\r\nsocket = :8000 ; why\r\n"
            "processes = %(%k * 2)\r\nif-env = X\r\nstatic-map = /s=/srv/s\r\nendif =\r\n")
    r = _rw(text)
    assert r.text == text.replace(":8000 ; why", "127.0.0.1:40001")
    assert r.extra_args == ["--wsgi-file", "/w/corpus_app.py"]
    assert (r.probe.proto, r.probe.address) == ("uwsgi", ("127.0.0.1", 40001))


@pytest.mark.parametrize(("line", "want"), [
    ("module = hc.wsgi:application", "module = corpus_app:application"),
    ("module = mwdb.app", "module = corpus_app"),
    ("wsgi-file = hauki/wsgi.py", "wsgi-file = /w/corpus_app.py"),
    ("mount = /mapproxy=/app.py", "mount = /mapproxy=/w/corpus_app.py"),
    ("virtualenv = %(_)", "virtualenv = /venv"),
    ("chdir = %(base)", "chdir = /w"),
    ("http = 0.0.0.0:80", "http = 127.0.0.1:40001"),
    ("socket = /tmp/uwsgi.sock", "socket = /w/sock-1"),
    ("stats = :9191", "stats = 127.0.0.1:40001"),
    ("uid = www-data", "# corpus: dropped uid = www-data"),
    ("https = :8443,a.crt,a.key", "# corpus: dropped https = :8443,a.crt,a.key"),
    ("daemonize = /var/log/x.log", "logto = /w/log-1"),
    ("logger = cron file:/var/log/c.log", "logger = cron file:/w/log-1"),
    ("logger = file:logfile=/l/a.log,maxsize=9", "logger = file:logfile=/w/log-1,maxsize=9"),
    ("hook-pre-app = exec:./manage.py migrate", "hook-pre-app = exec:true"),
    ("unique-cron = 0 -1 -1 -1 -1 ./manage.py runjobs", "unique-cron = 0 -1 -1 -1 -1 true"),
    ("stats-push = zabbix:129.114.99.128:10051,uwsgi", "stats-push = zabbix:127.0.0.1:10051,uwsgi"),
    ("mule = py/mules/radius.py", "mule = /w/corpus_mule.py"),
    ("callable = app", "callable = app"),
])
def test_rewrite_rules(line, want):
    assert _rw(f"[uwsgi]\n{line}\n").text == f"[uwsgi]\n{want}\n"


def test_rewrite_yaml_json_and_sections():
    y = _rw("uwsgi:\n  http: :8000  # the port\n  module: app\n", "yaml")
    assert y.text == "uwsgi:\n  http: 127.0.0.1:40001\n  module: corpus_app\n"
    assert y.extra_args == []
    j = _rw('{"uwsgi": {\n  "socket": ":8080",\n  "protocol": "http",\n  "home": "/e"\n}}\n',
            "json")
    assert j.text == ('{"uwsgi": {\n  "socket": "127.0.0.1:40001",\n  "protocol": "http",\n'
                      '  "home": "/venv"\n}}\n')
    assert j.probe.proto == "http"
    # `ini = :base` makes [base] part of the section read: its app counts
    s = _rw("[uwsgi]\nini = :base\n[base]\nmodule = x\n[other]\nhttp = :1\n")
    assert s.extra_args[:1] == ["--http-socket"] and "--wsgi-file" not in s.extra_args


def _file_param(name):
    if name in GAPS:
        return pytest.param(name, marks=pytest.mark.xfail(reason=GAPS[name], strict=True))
    return name


@pytest.mark.parametrize("name", [_file_param(n) for n in FILES])
def test_corpus_file(name, tmp_path, headrace):
    entry = MANIFEST[name]
    p = prepare(name, entry, tmp_path / "work", free_port, corpus())
    if entry["uwsgi"] == "starts":
        port = None if isinstance(p.probe.address, str) else p.probe.address[1]
        unix = p.probe.address if isinstance(p.probe.address, str) else None
        srv = headrace(*p.args, bind=False, port=port, unix=unix, wait=False,
                       cwd=str(p.workdir), env=p.env)
        status = wait_status(srv.proc, p.probe, START_TIMEOUT)
        assert status == 200, (
            f"uWSGI starts {name} and answers 200; headrace gave "
            f"{'no answer' if status is None else status}"
            f"{'' if srv.proc.poll() is None else f' and exited with {srv.proc.returncode}'}"
            f"; rewrites: {p.changes}; log:\n{srv.tail(20)}"
        )
    else:
        r = run_headrace(p.args, env=p.env, cwd=str(p.workdir))
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2, (
            f"uWSGI refuses {name} ({entry['uwsgi_note']}); headrace exited with "
            f"{r.returncode}; stderr:\n{r.stderr[-2000:]}"
        )
        assert len(lines) == 1, f"one error line wanted, got {len(lines)}:\n{r.stderr[-2000:]}"
        options = entry["option"] if isinstance(entry["option"], list) else [entry["option"]]
        named = any(o.lower() in lines[0].lower() for o in options)
        assert named, f"the line must name one of {options}: {lines[0]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_uwsgi_reference(name, tmp_path):
    """expected.json is what uWSGI 2.0.30 does with the rewritten file."""
    if uwsgi_cmd() is None:
        pytest.skip("pyuwsgi is not installed (pip install pyuwsgi==2.0.30.post1)")
    entry = MANIFEST[name]
    p = prepare(name, entry, tmp_path / "work", free_port, corpus())
    outcome, note, _ = run_uwsgi(p)
    assert outcome == entry["uwsgi"], f"uWSGI: {outcome} ({note}); expected.json: {entry}"


def test_first_mount_is_the_default_app(tmp_path, headrace):
    """With no app at '' a request no mountpoint matches goes to the first app mounted, as
    in uWSGI 2.0 (the corpus's 46-Oslandia-docker-mapproxy.yml mounts only /mapproxy and
    uWSGI answers GET / with it)."""
    app = Path(__file__).parent / "apps" / "corpus_app.py"
    srv = headrace("--mount", f"/mapproxy={app}", "--manage-script-name")
    for path in ("/", "/mapproxy/x"):
        with urllib.request.urlopen(srv.url(path), timeout=10) as r:
            assert (r.status, r.read()) == (200, b"corpus ok\n"), path


def test_what_the_corpus_needed(tmp_path, headrace):
    """The options the corpus showed headrace refusing, which uWSGI starts with: a plugin that
    is not here (a warning, as uWSGI's `UNABLE to load`), `log-slow = True` (atoi: 0, off),
    the file logger's `logfile=PATH,maxsize=N` form, `log-route` to a named logger (not split:
    the named logger is not opened) and `http11-socket`."""
    port = free_port()
    log, routed = tmp_path / "main.log", tmp_path / "cron.log"
    app = Path(__file__).parent / "apps" / "corpus_app.py"
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        "[uwsgi]\nplugins = python3, zabbix\nlog-slow = True\n"
        f"logger = file:logfile={log},maxsize=1000000\nlogger = cron file:{routed}\n"
        f"log-route = cron uwsgi-cron\nhttp11-socket = 127.0.0.1:{port}\nwsgi-file = {app}\n"
    )
    # Its log goes to the logger's file: ready on the probe alone (workers=0), not after
    # 5 s of looking for spawn lines in a log that has none.
    headrace(str(ini), bind=False, port=port, workers=0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        assert (r.status, r.read()) == (200, b"corpus ok\n")
    text = log.read_text()
    assert "plugin `zabbix` is not available" in text, text
    assert "`True` is not a number of milliseconds; read as 0 (off)" in text, text
    assert "option `log-route`" in text and not routed.exists(), text
