"""The corpus of real uWSGI configs: its manifest, preparing a file to run, probing a server,
and running uWSGI itself (pyuwsgi) on a prepared file for the reference outcome.

Used by tests/test_ini_corpus.py and dev/ini-corpus-compare. See SOURCES.md for where each
file comes from and rewrite.py for what is changed before a server reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .rewrite import Probe, fmt_of, rewrite

HERE = Path(__file__).resolve().parent
APPS = HERE.parent / "apps"
MANIFEST = HERE / "expected.json"
FORMAT_OPTION = {"ini": "--ini", "yaml": "--yaml", "json": "--json"}


def load_manifest() -> dict[str, dict]:
    """expected.json: per corpus file, its "sha256", "uwsgi" ("starts" | "broken"),
    "uwsgi_note", and optionally "section" (the section a user would name), "include"
    (companion files of the same deployment, name -> sha256, copied next to it) and
    "option" (for a broken file: what headrace's one error line must name)."""
    return json.loads(MANIFEST.read_text())


#: the corpus files, in their order (the manifest is the list; the files live elsewhere)
FILES = sorted(load_manifest())


def corpus_dir() -> Path | None:
    """Where the corpus files are. They are copies of public repositories' files, kept out
    of this repository's commits (SOURCES.md); the first of these that holds them:
    $HEADRACE_INI_CORPUS, `shared/ini_corpus` beside the checkout (or beside one of its
    parent directories), and tests/ini_corpus/files/ (a local, git-ignored copy)."""
    candidates = []
    if os.environ.get("HEADRACE_INI_CORPUS"):
        candidates.append(Path(os.environ["HEADRACE_INI_CORPUS"]))
    candidates += [parent / "shared" / "ini_corpus" for parent in HERE.parents]
    candidates.append(HERE / "files")
    for c in candidates:
        if (c / FILES[0]).is_file():
            return c
    return None


def check_sha(path: Path, sha256: str) -> None:
    """The corpus file at `path` is the one the manifest describes, byte for byte."""
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    assert got == sha256, f"{path} is not the recorded file (sha256 {got}, want {sha256})"


@dataclass
class Prepared:
    """A corpus file rewritten into a work dir, and how to start a server on it."""

    name: str
    workdir: Path
    #: the arguments after the server's executable
    args: list[str]
    probe: Probe
    env: dict[str, str]
    changes: list[str]


def prepare(name: str, entry: dict, workdir: Path, free_port, corpus: Path) -> Prepared:
    """Copy `name` from the `corpus` dir into `workdir` rewritten (rewrite.py), with the
    app, the idle mule and the companion files beside it."""
    check_sha(corpus / name, entry["sha256"])
    workdir.mkdir(parents=True, exist_ok=True)
    app_file = workdir / "corpus_app.py"
    mule_file = workdir / "corpus_mule.py"
    shutil.copyfile(APPS / "corpus_app.py", app_file)
    shutil.copyfile(APPS / "corpus_mule.py", mule_file)
    for inc, sha in entry.get("include", {}).items():
        check_sha(corpus / "include" / inc, sha)
        shutil.copyfile(corpus / "include" / inc, workdir / inc)
    fmt = fmt_of(name)
    section = entry.get("section", "uwsgi")
    text = (corpus / name).read_bytes().decode("utf-8")
    rw = rewrite(text, fmt, workdir, app_file, mule_file, sys.prefix, free_port, section)
    target = workdir / name
    target.write_bytes(rw.text.encode("utf-8"))
    where = str(target) + (f":{section}" if "section" in entry else "")
    args = [FORMAT_OPTION[fmt], where, *rw.extra_args]
    env = {"PYTHONPATH": str(workdir)}
    return Prepared(name, workdir, args, rw.probe, env, rw.changes)


# --- probing --------------------------------------------------------------------------------


def _uwsgi_packet(path: bytes = b"/") -> bytes:
    pairs = [
        (b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", path), (b"PATH_INFO", path),
        (b"QUERY_STRING", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"127.0.0.1"), (b"SERVER_PORT", b"80"),
        (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"40000"),
        (b"HTTP_HOST", b"127.0.0.1"),
    ]
    data = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    return struct.pack("<BHB", 0, len(data), 0) + data


def probe_once(probe: Probe, timeout: float = 5.0) -> int | None:
    """Send one GET / (HTTP or a uwsgi packet) and return the response's status, or None
    when nothing answers yet (refused, closed, or no status line)."""
    try:
        if isinstance(probe.address, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with s:
            s.settimeout(timeout)
            s.connect(probe.address)
            if probe.proto == "http":
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            else:
                s.sendall(_uwsgi_packet())
            line = s.makefile("rb").readline(4096)
    except OSError:
        return None
    m = re.match(rb"^HTTP/\d\.\d (\d{3})", line)
    return int(m.group(1)) if m else None


def wait_status(proc: subprocess.Popen, probe: Probe, timeout: float) -> int | None:
    """Probe until a response comes, the process exits, or `timeout` s pass; the status
    of the first response, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = probe_once(probe)
        if status is not None:
            return status
        if proc.poll() is not None:
            return probe_once(probe)  # a daemonized server could still answer
        time.sleep(0.1)
    return None


# --- uWSGI itself -----------------------------------------------------------------------------


def uwsgi_cmd() -> list[str] | None:
    """uWSGI from pyuwsgi in this interpreter's environment, or None when not installed."""
    exe = Path(sys.executable).parent / "uwsgi"
    if exe.exists():
        return [str(exe)]
    try:
        import pyuwsgi  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "pyuwsgi"]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1 and int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo and len(seen) < 1000:
        for c in _children(todo.pop()):
            seen.append(c)
            todo.append(c)
    return seen


def _note(log: str) -> str:
    """The line of a uWSGI log that says why it stopped (the last that looks like an error)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    if "Operational MODE: no-workers" in log:
        return "runs with no workers (Operational MODE: no-workers)"
    for ln in reversed(lines):
        if re.search(r"error|unable|invalid|unknown|no such|not found|cannot|fatal|missing|"
                     r"no app|!!!", ln, re.IGNORECASE) and not ln.startswith("unlink("):
            return ln[:200]
    return lines[-1][:200] if lines else "(no output)"


def run_uwsgi(p: Prepared, timeout: float = 15.0) -> tuple[str, str, int | None]:
    """Start uWSGI on a prepared file, probe it, stop it (SIGINT, then SIGKILL by PID,
    and every process it left), and return (outcome, note, status): "starts" when the
    probe got a 200, else "broken"."""
    cmd = uwsgi_cmd()
    assert cmd is not None, "pyuwsgi is not installed"
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("UWSGI_", "HEADRACE_")):
            env.pop(k)
    env.update(p.env)
    log_path = p.workdir / "uwsgi.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd + p.args, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=p.workdir)
        kids: set[int] = set()
        try:
            status = wait_status(proc, p.probe, timeout)
            kids.update(_descendants(proc.pid))
        finally:
            kids.update(_descendants(proc.pid))
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # uWSGI 2.0: SIGINT stops, SIGTERM reloads
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
    text = log_path.read_bytes().decode("utf-8", "replace")
    if status == 200:
        return "starts", "200 on the probe", status
    code = proc.returncode
    why = f"status {status} on the probe" if status is not None else f"exit {code}"
    return "broken", f"{why}: {_note(text)}", status
