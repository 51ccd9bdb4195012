"""The clients that put load on a server and what they measure: wrk, the saturation client,
the stats scraper, and the memory of the server's process tree."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path

from harness.common import CLIENT_CORE, WRK_SCRIPTS, RunError, one_line
from harness.prepare import Setup
from harness.procs import run_bounded, tree
from harness.records import SaturationRun, TreeMemory
from harness.servers import Launch, stats_socket

WRK_SOCKET_TIMEOUT = "5s"


def wrk(
    st: Setup,
    port: int,
    connections: int,
    duration: int,
    script: str,
    headers: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    marker: str = "BENCH_JSON",
) -> dict:
    """One wrk run (one thread, on the client core); the JSON object that the Lua script prints
    after `marker` (bench/wrk/report.lua: its counters and latency percentiles)."""
    assert st.wrk
    argv = [
        st.wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        WRK_SOCKET_TIMEOUT,
        "-s",
        str(WRK_SCRIPTS / script),
    ]
    for h in headers:
        argv += ["-H", h]
    argv.append(f"http://127.0.0.1:{port}/")
    env = dict(os.environ, **(extra_env or {}))
    rc, out = run_bounded(st.pinned(CLIENT_CORE, argv), timeout=duration + 30, env=env)
    for line in out.splitlines():
        if line.startswith(marker + " "):
            return json.loads(line[len(marker) + 1 :])
    raise RunError(f"wrk gave no result (exit {rc}): {one_line(out.splitlines()[-3:])}")


def wsload(st: Setup, port: int, clients: int, warmup: int, duration: int) -> dict:
    """One run of bench/wsload (on the client core): `clients` WebSocket connections, each
    sending a 32-byte text message and waiting for its echo, over and over, `warmup` seconds
    uncounted, then `duration` seconds counted. Its result has wrk's field names (requests =
    echoed messages). A server that answers the upgrade with anything but 101 raises RunError
    "WebSocket not supported", so the scenario reports it instead of a zero."""
    assert st.wsload
    argv = [str(st.wsload), str(port), str(clients), str(warmup), str(duration)]
    rc, out = run_bounded(st.pinned(CLIENT_CORE, argv), timeout=warmup + duration + 30)
    for line in out.splitlines():
        if line.startswith("BENCH_UNSUPPORTED "):
            got = line[len("BENCH_UNSUPPORTED ") :].strip()
            raise RunError(f"WebSocket not supported: the upgrade was answered {got!r}")
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON ") :])
    raise RunError(f"wsload gave no result (exit {rc}): {one_line(out.splitlines()[-3:])}")


def saturation_client(port: int, clients: int, per_client: int, timeout: float) -> SaturationRun:
    """`clients` threads, each one keep-alive connection sending `per_client` requests in turn;
    the log fields of the result are the caller's to fill."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + timeout

    def client(i: int) -> None:
        conn: http.client.HTTPConnection | None = None
        for k in range(per_client):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with lock:
                    errors.append("deadline")
                return
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=remaining)
                conn.request("GET", f"/?client={i}&n={k}")
                resp = conn.getresponse()
                resp.read()
                with lock:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors.append(f"HTTP {resp.status}")
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(type(e).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    total = time.perf_counter() - t0
    with lock:
        lat = sorted(latencies)
        errs = list(errors)
    hung = sum(t.is_alive() for t in threads)
    if hung:
        errs += ["client hung"] * hung
    return SaturationRun(
        total_s=total,
        errors=len(errs),
        error_kinds=sorted(set(errs)),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        p50_s=percentile(lat, 50),
        p99_s=percentile(lat, 99),
        max_s=lat[-1] if lat else None,
    )


def percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def tree_memory(leader: int) -> TreeMemory:
    rss = pss = 0
    pids = sorted(pid for pid, info in tree(leader).items() if info.state != "Z")
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return TreeMemory(rss_kib=rss, pss_kib=pss, processes=len(pids))


class Scraper:
    """Polls a headrace-stats server's `/metrics` and stats JSON, alternately, once a second
    (what a Prometheus scraper and a uwsgitop would do), until stopped."""

    def __init__(self, ln: Launch):
        self.name = "\0" + stats_socket(ln)[1:]
        self.polls = 0
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        paths = ["/metrics", "/"]
        while not self._stop.wait(1.0):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(self.name)
                    s.sendall(f"GET {paths[self.polls % 2]} HTTP/1.0\r\n\r\n".encode())
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                ok = data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]
                self.errors += 0 if ok else 1
            except OSError:
                self.errors += 1
            self.polls += 1

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._t.join(10)
        return self.polls, self.errors
