"""Where things are, which core does what, and the small helpers every module uses."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
APPS = BENCH / "apps"
WRK_SCRIPTS = BENCH / "wrk"
RESULTS = BENCH / "results"
CEILING_DIR = BENCH / "ceiling"
WSLOAD_DIR = BENCH / "wsload"
REQUIREMENTS = BENCH / "requirements.txt"
LOGS = VENV / "logs"

SERVER_CORE = 0
CLIENT_CORE = 1
LISTEN_BACKLOG = 1024


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class RunError(Exception):
    """A server or a load run failed; the message goes into the results as the reason."""


def tail(path: Path, lines: int = 20, max_bytes: int = 64 * 1024) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    return [line.rstrip() for line in text if line.strip()][-lines:]


def one_line(lines: list[str], limit: int = 240) -> str:
    text = " | ".join(lines)
    return text if len(text) <= limit else "..." + text[-limit:]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


CORES = _cores()  # read before the harness pins itself to the client core
