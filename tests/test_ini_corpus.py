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
  option at fault ("option" in expected.json).

`test_uwsgi_reference` re-checks expected.json against uWSGI itself; it needs pyuwsgi and is
skipped without it (tests/ini_corpus/compare.py runs both servers side by side).
"""

from __future__ import annotations

import re

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
from support import START_TIMEOUT, free_port, run_headrace

MANIFEST = load_manifest()
CORPUS = corpus_dir()


def corpus():
    if CORPUS is None:
        pytest.skip("the corpus files are not here: put them in shared/ini_corpus (see "
                    "tests/ini_corpus/SOURCES.md) or point HEADRACE_INI_CORPUS at them")
    return CORPUS


def test_manifest_covers_the_corpus():
    assert len(FILES) >= 50
    formats = {name.rsplit(".", 1)[1] for name in FILES}
    assert {"ini", "json"} <= formats and formats & {"yml", "yaml"}, formats
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


@pytest.mark.parametrize("name", FILES)
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
        named = entry["option"].lower() in lines[0].lower()
        assert named, f"the line must name `{entry['option']}`: {lines[0]}"


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
