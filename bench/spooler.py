#!/usr/bin/env python3
"""Spooler throughput and enqueue latency: headrace (disk, and Redis with --redis URL) against
uWSGI's spooler (pyuwsgi), in one interleaved run, on 127.0.0.1 only.

Each round, for each server: start it with one worker and one spooler process on a fresh
directory, stop the spooler (SIGSTOP), have the app spool N empty tasks timing each
`uwsgi.spool` call (the enqueue latency), let the spooler go (SIGCONT) and time until every
task is done (tasks per second: the spool directory is empty, or the Redis queue's tasks all
ran). Rounds alternate servers; the report gives medians and headrace/uWSGI ratios.

    bench/spooler.py                      # 3 rounds of 2000 tasks
    bench/spooler.py --rounds 5 --tasks 5000 --dir /dev/shm
    bench/spooler.py --redis redis://127.0.0.1:6379/0?queue=bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APP = HERE / "apps" / "spooler_bench.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float = 120):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def pending(spool: Path) -> int:
    n = 0
    for p in spool.rglob("uwsgi_spoolfile_on_*"):
        if "dead" not in p.parts:
            n += 1
    return n


def binary(name: str) -> str:
    for d in (REPO / ".venv" / "bin", Path(sys.executable).parent):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        sys.exit(f"{name} not found (./dev build installs headrace and pyuwsgi in .venv)")
    return found


def one_round(server: str, target: str, n: int, limit: float, base: Path) -> dict:
    port = free_port()
    work = Path(tempfile.mkdtemp(dir=base))
    spool = target if target.startswith("redis") else str(work / "spool")
    if not target.startswith("redis"):
        os.makedirs(spool)
    exe = binary("headrace" if server != "uwsgi" else "uwsgi")
    args = [
        exe,
        "--master",
        "--http-socket",
        f"127.0.0.1:{port}",
        "--wsgi-file",
        str(APP),
        "--processes",
        "1",
        "--spooler",
        spool,
        "--spooler-quiet",
        "--disable-logging",
        "--spooler-frequency",
        "1",
    ]
    stats_port = free_port()
    if target.startswith("redis"):
        args += ["--stats", f"127.0.0.1:{stats_port}"]
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sp = get(port, "/pid", timeout=2)["spooler"]
                if sp:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{server} did not start: {(work / 'server.log').read_text()}")
            time.sleep(0.1)
        time.sleep(0.3)
        os.kill(sp, signal.SIGSTOP)
        lat = get(port, f"/spool/{n}")
        # Both queues on stable storage before they run (uWSGI never fsyncs; headrace's
        # background fsyncs finish here), so the throughput is the spooler's alone.
        os.sync()
        time.sleep(0.2)
        os.sync()
        t0 = time.perf_counter()
        os.kill(sp, signal.SIGCONT)
        end = t0 + limit
        if target.startswith("redis"):
            # No directory to watch: the spooler's figures in the stats JSON count the tasks.
            done = lambda: sum(x["tasks"] for x in stats(stats_port)) >= n
        else:
            done = lambda: pending(Path(spool)) == 0
        while not done():
            if time.perf_counter() > end:
                raise RuntimeError(f"{server}: tasks not done in {limit} s")
            time.sleep(0.002)
        elapsed = time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    lat.sort()
    return {
        "tasks_per_s": n / elapsed,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


def stats(port: int) -> list[dict]:
    """The spoolers of headrace's stats JSON (uWSGI's keys)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data).get("spoolers", [])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--limit", type=float, default=120.0, help="seconds a round may take at most")
    ap.add_argument(
        "--dir", default=None, help="where the spool directories go (default: a temp dir)"
    )
    ap.add_argument("--redis", default=None, help="also run headrace on this redis:// spooler URL")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="headrace-spool-bench-", dir=a.dir))
    servers = [("headrace-disk", "dir"), ("uwsgi", "dir")]
    if a.redis:
        servers.append(("headrace-redis", a.redis))
    results: dict[str, list[dict]] = {s: [] for s, _ in servers}
    try:
        for r in range(a.rounds):
            for name, target in servers:
                res = one_round(name, target, a.tasks, a.limit, base)
                results[name].append(res)
                print(
                    f"round {r + 1} {name:15s} {res['tasks_per_s']:9.0f} tasks/s  "
                    f"enqueue p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms",
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {
        s: {k: statistics.median(x[k] for x in v) for k in v[0]} for s, v in results.items() if v
    }
    print(
        f"\nmedians over {a.rounds} rounds of {a.tasks} empty tasks (spool dir under {a.dir or tempfile.gettempdir()}):"
    )
    for s, m in med.items():
        print(
            f"  {s:15s} {m['tasks_per_s']:9.0f} tasks/s  enqueue p50 {m['p50_ms']:.3f} ms  p99 {m['p99_ms']:.3f} ms"
        )
    u = med.get("uwsgi")
    if u:
        for s, m in med.items():
            if s != "uwsgi":
                print(
                    f"  {s} / uwsgi: throughput x{m['tasks_per_s'] / u['tasks_per_s']:.2f}, "
                    f"enqueue p50 x{m['p50_ms'] / u['p50_ms']:.2f}"
                )


if __name__ == "__main__":
    main()
