"""Run uWSGI (pyuwsgi) and headrace on every rewritten corpus file and compare.

    .venv/bin/python tests/ini_corpus/compare.py             # uWSGI vs expected.json
    .venv/bin/python tests/ini_corpus/compare.py --headrace  # and headrace today
    .venv/bin/python tests/ini_corpus/compare.py --write     # record uWSGI's outcomes
    .venv/bin/python tests/ini_corpus/compare.py 01 17       # only files starting so

Needs pyuwsgi (`.venv/bin/pip install pyuwsgi==2.0.30.post1`) for the uWSGI side. Every
server binds 127.0.0.1 or a unix socket in a temporary directory, and is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ini_corpus.corpus import (
    FILES,
    MANIFEST,
    Prepared,
    _descendants,
    corpus_dir,
    load_manifest,
    prepare,
    run_uwsgi,
    wait_status,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def headrace_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "headrace"
    return [str(exe)] if exe.exists() else [shutil.which("headrace") or "headrace"]


def run_headrace(p: Prepared, timeout: float = 15.0) -> tuple[str, str]:
    """("starts", note) on a 200; ("exit N", first stderr line) when it stops; else
    ("no 200", why)."""
    import os
    import signal

    env = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "HEADRACE_"))}
    env.update(p.env)
    log_path = p.workdir / "headrace.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(headrace_cmd() + p.args, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=p.workdir)
        kids: set[int] = set()
        try:
            status = wait_status(proc, p.probe, timeout)
            kids.update(_descendants(proc.pid))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            for pid in sorted(kids):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    text = log_path.read_bytes().decode("utf-8", "replace").strip()
    first = next((ln for ln in text.splitlines() if ln.strip()), "(no output)")
    if status == 200:
        return "starts", ""
    if proc.returncode not in (None, 0) and status is None:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return f"exit {proc.returncode}", (first if len(lines) == 1 else
                                           f"{len(lines)} lines: {first}")[:220]
    return "no 200", f"status {status}: {first}"[:220]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="store uWSGI's outcomes")
    ap.add_argument("--headrace", action="store_true", help="run headrace too")
    ap.add_argument("--no-uwsgi", action="store_true", help="skip uWSGI")
    ap.add_argument("only", nargs="*", help="file name prefixes")
    a = ap.parse_args()
    manifest = load_manifest()
    where = corpus_dir()
    if where is None:
        print("the corpus files are not here (see SOURCES.md)", file=sys.stderr)
        return 2
    names = [f for f in FILES if not a.only or any(f.startswith(o) for o in a.only)]
    tally: Counter[str] = Counter()
    mismatch = 0
    with tempfile.TemporaryDirectory(prefix="ini-corpus-") as tmp:
        for name in names:
            entry = manifest.setdefault(name, {"uwsgi": "broken", "uwsgi_note": ""})
            row = [name]
            if not a.no_uwsgi:
                p = prepare(name, entry, Path(tmp) / name / "uwsgi", free_port, where)
                outcome, note, _ = run_uwsgi(p)
                tally["uwsgi " + outcome] += 1
                row.append(f"uwsgi={outcome}")
                if outcome != entry["uwsgi"]:
                    row.append(f"(expected.json says {entry['uwsgi']})")
                    mismatch += 1
                if a.write and outcome != entry["uwsgi"]:
                    # a hand-written note (and "option") is kept while the outcome holds
                    entry["uwsgi"], entry["uwsgi_note"] = outcome, note
                if outcome == "broken":
                    row.append(note)
            if a.headrace:
                p = prepare(name, entry, Path(tmp) / name / "headrace", free_port, where)
                got, note = run_headrace(p)
                tally["headrace " + got.split()[0]] += 1
                ok = (got == "starts") == (entry["uwsgi"] == "starts")
                row.append(f"headrace={got}{'' if ok else ' MISMATCH'} {note}")
            print(" | ".join(row), flush=True)
    print(dict(tally))
    if a.write:
        MANIFEST.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return 1 if mismatch and not a.write else 0


if __name__ == "__main__":
    sys.exit(main())
