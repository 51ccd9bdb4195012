"""Cache and lock calls per second inside one worker: headrace against uWSGI (pyuwsgi).

    .venv/bin/python bench/cache_ops.py [N]

Both servers run tests/apps/cache_app.py with one worker and `--cache2 name=b,items=2000,
blocksize=128`; `/bench?n=N` times N calls of each kind in the worker (no HTTP in the loop)
and the best of three rounds is printed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "tests" / "apps" / "cache_app.py")
ARGS = ["--wsgi-file", APP, "--master", "--processes", "1",
        "--cache2", "name=b,items=2000,blocksize=128"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(exe: str, n: int) -> dict:
    port = free_port()
    p = subprocess.Popen([exe, "--http-socket", f"127.0.0.1:{port}", *ARGS],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        best: dict = {}
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench?n={n}", timeout=120) as r:
                out = json.load(r)
            for k in ("update", "get", "inc", "lock"):
                best[k] = max(best.get(k, 0), out[k])
        return best
    finally:
        p.terminate()
        p.wait(20)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    bin_dir = Path(sys.executable).parent
    servers = {"headrace": str(bin_dir / "headrace"),
               "uWSGI": shutil.which("uwsgi", path=str(bin_dir)) or "uwsgi"}
    results = {name: run(exe, n) for name, exe in servers.items()}
    print(f"calls per second in one worker, best of 3 x {n}")
    print(f"{'':10}" + "".join(f"{k:>12}" for k in ("update", "get", "inc", "lock")))
    for name, r in results.items():
        print(f"{name:10}" + "".join(f"{r[k]:>12,.0f}" for k in ("update", "get", "inc", "lock")))


if __name__ == "__main__":
    main()
