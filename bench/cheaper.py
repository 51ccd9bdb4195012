#!/usr/bin/env python3
"""The seed burst under elastic workers: headrace's `--cheaper` against uWSGI's (#14).

Every server runs bench/apps/seed.py (each request sleeps 1 s) with `--processes 10
--cheaper 2` on 127.0.0.1. A run waits until the server answers, then sends the seed's burst —
20 parallel requests on new connections — and records the total time (until the last answer)
and the number of worker processes every 100 ms from the burst until `--after` seconds after it
(default 15). Servers run interleaved, `--rounds` times each:

    headrace-direct   headrace --http-socket, default algorithm (queue)
    headrace-router   headrace --http, default algorithm (queue)
    uwsgi-spare       uWSGI --http-socket, its default algorithm (spare)
    uwsgi-busyness    uWSGI --http-socket, --cheaper-algo busyness

    bench/cheaper.py [--rounds 2] [--after 15] [--headrace .venv/bin/headrace]
                     [--uwsgi .venv/bin/uwsgi] [--out bench/results/cheaper.md]

The default executables are the ones `./dev build` installs (pyuwsgi is a test dependency).
Every server is stopped by its PID (SIGTERM, then SIGKILL of its process group after 5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "bench" / "apps" / "seed.py"
BURST = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line or process title) of the live children of `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            out.append((int(entry), cmdline.decode(errors="replace")))
    return out


def get(port: int, timeout: float = 30.0) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


SERVERS = {
    # --auto-procname: the router's title ("headrace http 1") tells it from the workers.
    "headrace-direct": lambda a, port: [a.headrace, "--http-socket", f"127.0.0.1:{port}",
                                        "--auto-procname"],
    "headrace-router": lambda a, port: [a.headrace, "--http", f"127.0.0.1:{port}",
                                        "--auto-procname"],
    "uwsgi-spare": lambda a, port: [a.uwsgi, "--http-socket", f"127.0.0.1:{port}",
                                    "--die-on-term"],
    "uwsgi-busyness": lambda a, port: [a.uwsgi, "--http-socket", f"127.0.0.1:{port}",
                                       "--die-on-term", "--cheaper-algo", "busyness"],
}


def run_one(args, name: str) -> dict:
    port = free_port()
    argv = SERVERS[name](args, port) + [
        "--wsgi-file", str(APP), "--master", "--processes", "10", "--cheaper", "2",
        "--disable-logging",
    ]
    log_path = Path(args.logdir) / f"{name}.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(port, timeout=5) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                return {"error": "did not start"}
            time.sleep(0.1)
        time.sleep(1.5)  # the readiness request is done and the server is at rest

        def workers() -> int:
            # A router is not a worker.
            return sum(1 for _, title in children(proc.pid) if "http 1" not in title)

        at_rest = workers()
        results: list[float | str] = []
        lock = threading.Lock()

        def one():
            t0 = time.monotonic()
            try:
                status = get(port)
                r: float | str = time.monotonic() - t0 if status == 200 else f"status {status}"
            except OSError as e:
                r = repr(e)
            with lock:
                results.append(r)

        start = time.monotonic()
        threads = [threading.Thread(target=one, daemon=True) for _ in range(BURST)]
        for t in threads:
            t.start()
        samples = []
        done_at = None
        end = start + 60
        while time.monotonic() < end:
            now = time.monotonic() - start
            samples.append((round(now, 1), workers()))
            if done_at is None and not any(t.is_alive() for t in threads):
                done_at = now
                end = time.monotonic() + args.after
            time.sleep(0.1)
        failed = [r for r in results if isinstance(r, str)]
        with open(log_path, "rb") as f:
            f.seek(log_start)
            text = f.read().decode(errors="replace")
        # headrace logs how long each worker it started took to take requests.
        ready_ms = [int(m) for m in re.findall(r"takes requests (\d+) ms after", text)]
        return {
            "ready_ms": statistics.median(ready_ms) if ready_ms else None,
            "at_rest": at_rest,
            "total": done_at if done_at is not None else float("nan"),
            "failed": len(failed) + BURST - len(results),
            "peak": max(n for _, n in samples),
            "end": samples[-1][1],
            "samples": samples,
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def ready(runs: list[dict]) -> str:
    """Median time from the decision to grow to the new worker taking requests (headrace logs
    it; 100 ms resolution, the master's tick)."""
    ms = [x["ready_ms"] for x in runs if x.get("ready_ms") is not None]
    return f"{statistics.median(ms):.0f} ms" if ms else "not logged"


def timeline(samples: list[tuple[float, int]], every: float = 1.0) -> str:
    out, nxt = [], 0.0
    for t, n in samples:
        if t >= nxt:
            out.append(f"{t:.0f}s:{n}")
            nxt += every
    return " ".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--after", type=float, default=15.0)
    p.add_argument("--headrace", default=str(REPO / ".venv/bin/headrace"))
    p.add_argument("--uwsgi", default=str(REPO / ".venv/bin/uwsgi"))
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--out", default=str(REPO / "bench/results/cheaper.md"))
    p.add_argument("--logdir", default="/tmp")
    args = p.parse_args()
    names = args.servers.split(",")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names:
            res = run_one(args, name)
            runs[name].append(res)
            print(f"round {r + 1} {name}: {json.dumps({k: v for k, v in res.items() if k != 'samples'})}",
                  flush=True)
    lines = [
        "# The seed burst under elastic workers",
        "",
        (f"`bench/cheaper.py --rounds {args.rounds} --after {args.after:g}`, "
         f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f}. "
         "20 parallel 1 s requests, `--processes 10 --cheaper 2`; total = until the last "
         f"answer; workers at rest before, at the peak, and {args.after:g} s after the burst."),
        "",
        "| server | total (median) | each round | at rest | peak | after | failed | new worker ready |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        ok = [x for x in runs[name] if "error" not in x]
        if not ok:
            lines.append(f"| {name} | could not run | | | | | | |")
            continue
        totals = [x["total"] for x in ok]
        lines.append(
            f"| {name} | {statistics.median(totals):.1f} s | "
            f"{', '.join(f'{t:.1f}' for t in totals)} | {ok[0]['at_rest']} | "
            f"{max(x['peak'] for x in ok)} | {ok[-1]['end']} | {sum(x['failed'] for x in ok)} | "
            f"{ready(ok)} |")
    lines += ["", "Workers over time (last round, one sample a second from the burst):", ""]
    for name in names:
        ok = [x for x in runs[name] if "error" not in x]
        if ok:
            lines.append(f"- {name}: {timeline(ok[-1]['samples'])}")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
