#!/usr/bin/env python3
"""Static files: headrace's `--static-map` / `--check-static` against uWSGI's `static-map` and
nginx, in one interleaved run (issue 11).

    python3 bench/static.py                     # 3 rounds, about 5 minutes
    python3 bench/static.py --rounds 5 --duration 5
    python3 bench/static.py --headrace PATH --uwsgi PATH

Two files, 1 KiB and 1 MiB, are written to a temporary directory and fetched with wrk (one
thread, keep-alive) from every server in turn: round 1 runs every server once per file, then
round 2, and so on, so drift of this shared machine hits all servers alike. Each run starts a
fresh server on a free port of 127.0.0.1, waits for the file's first 200, warms up for 1 s,
measures for `--duration` s, and stops the server by PID. Servers are pinned to core 0 and wrk
to core 1 as in bench/run. The result is the median req/s over the rounds, its spread, and
ratios; it goes to stdout and to bench/results/static-<date>.md (raw numbers in .json).

Uses bench/bench.py's helpers (wrk and nginx from Debian when missing, process stopping).
The headrace and uWSGI executables default to the checkout's .venv (`./dev build`; pyuwsgi is
installed there) or bench/.venv when it has them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
from bench import (
    APPS,
    CLIENT_CORE,
    CORES,
    LISTEN_BACKLOG,
    RESULTS,
    ROOT,
    WRK_SCRIPTS,
    RunError,
    Setup,
    free_port,
    http_status,
    log,
    run_bounded,
    spawn,
    stop_process,
    tail,
    wrk_metrics,
)

SIZES = {"1k": 1024, "1m": 1024 * 1024}
#: wrk connections per file: many small requests, fewer large ones
CONNECTIONS = {"1k": 64, "1m": 16}
READY_TIMEOUT = 30.0

NGINX_CONF = """\
# Written by bench/static.py for one run; not the system's nginx.
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    types {{ application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port} backlog={backlog};
        location /static/ {{ alias {docroot}/; }}
    }}
}}
"""


@dataclass
class Peer:
    id: str
    config: str
    #: the URL prefix the files are under
    prefix: str
    #: argv for (executables, port, docroot, temp dir)
    argv: Callable[[dict[str, str], int, Path, Path], list[str]]
    #: headers wrk sends
    headers: tuple[str, ...] = ()


def headrace(front: str, check: bool = False) -> Callable:
    def argv(exe: dict[str, str], port: int, docroot: Path, tmp: Path) -> list[str]:
        static = (
            ["--check-static", str(docroot)] if check else ["--static-map", f"/static={docroot}"]
        )
        return [
            exe["headrace"],
            front,
            f"127.0.0.1:{port}",
            "--wsgi-file",
            str(APPS / "hello.py"),
            "--master",
            "--processes",
            "1",
            "--listen",
            str(LISTEN_BACKLOG),
            "--disable-logging",
            *static,
        ]

    return argv


def uwsgi(front: list[str]) -> Callable:
    def argv(exe: dict[str, str], port: int, docroot: Path, tmp: Path) -> list[str]:
        return [
            exe["uwsgi"],
            *[a.replace("ADDR", f"127.0.0.1:{port}") for a in front],
            "--wsgi-file",
            str(APPS / "hello.py"),
            "--master",
            "--processes",
            "1",
            "--listen",
            str(LISTEN_BACKLOG),
            "--die-on-term",
            "--need-app",
            "--disable-logging",
            "--static-map",
            f"/static={docroot}",
        ]

    return argv


def nginx(exe: dict[str, str], port: int, docroot: Path, tmp: Path) -> list[str]:
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir(exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    (tmp / "nginx.conf").write_text(
        NGINX_CONF.format(user=user, prefix=tmp, port=port, backlog=LISTEN_BACKLOG, docroot=docroot)
    )
    return [
        exe["nginx"],
        "-p",
        f"{tmp}/",
        "-c",
        str(tmp / "nginx.conf"),
        "-e",
        str(tmp / "error.log"),
    ]


PEERS = [
    Peer(
        "headrace",
        "`--http-socket ADDR --static-map /static=DIR` (workers serve the file)",
        "/static",
        headrace("--http-socket"),
    ),
    Peer(
        "headrace-check",
        "`--http-socket ADDR --check-static DIR`",
        "",
        headrace("--http-socket", check=True),
    ),
    Peer(
        "headrace-router",
        "`--http ADDR --static-map /static=DIR` (the router serves it)",
        "/static",
        headrace("--http"),
    ),
    Peer(
        "uwsgi",
        "`--http-socket ADDR --add-header 'Connection: close' --static-map "
        "/static=DIR` (uWSGI's http-socket closes after each response, and says so; its "
        "keep-alive variant `--http11-socket` served 23 req/s of the 1 KiB file here)",
        "/static",
        uwsgi(["--http-socket", "ADDR", "--add-header", "Connection: close"]),
    ),
    Peer(
        "uwsgi-router",
        "`--http ADDR --http-keepalive --static-map /static=DIR`",
        "/static",
        uwsgi(["--http", "ADDR", "--http-keepalive"]),
    ),
    Peer(
        "nginx",
        "nginx 1 worker, `location /static/ { alias DIR/; }`, sendfile on",
        "/static",
        nginx,
    ),
]


@contextmanager
def started(
    st: Setup, peer: Peer, exe: dict[str, str], docroot: Path, logdir: Path, tag: str, path: str
) -> Iterator[int]:
    """Start `peer` on a free port, wait until `path` answers 200, stop it after."""
    tmp = Path(tempfile.mkdtemp(prefix="headrace-static-"))
    port = free_port()
    log_path = logdir / f"{tag}.log"
    proc = spawn(st, peer.argv(exe, port, docroot, tmp), log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while http_status(port, path) != 200:
            if proc.poll() is not None:
                raise RunError(f"exited with {proc.returncode}: {tail(log_path, 3)}")
            if time.monotonic() > deadline:
                raise RunError(f"no 200 on {path} in {READY_TIMEOUT:.0f} s")
            time.sleep(0.01)
        yield port
    finally:
        stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def wrk_url(st: Setup, url: str, connections: int, duration: int, headers: tuple[str, ...]) -> dict:
    argv = [
        st.wrk or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPTS / "get.lua"),
        url,
    ]
    for h in headers:
        argv[1:1] = ["-H", h]
    rc, out = run_bounded(st.pinned(CLIENT_CORE, argv), timeout=duration + 30)
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            return wrk_metrics(json.loads(line[len("BENCH_JSON ") :]))
    raise RunError(f"wrk gave no result (exit {rc}): {out.splitlines()[-3:]}")


def default_exe(name: str) -> str | None:
    for venv in (ROOT / ".venv", bench.VENV):
        if (venv / "bin" / name).exists():
            return str(venv / "bin" / name)
    return shutil.which(name)


#: the uWSGI configuration each headrace one is compared with (the same front)
UWSGI_PEER = {"headrace": "uwsgi", "headrace-check": "uwsgi", "headrace-router": "uwsgi-router"}


def round_ratio(a: dict | None, b: dict | None) -> str:
    """The median over the rounds of a's req/s divided by b's in the same round (both ran a few
    seconds apart, so each ratio sees about the same machine)."""
    if not a or not b or not a.get("rps") or len(a["rps"]) != len(b.get("rps", [])):
        return ""
    return f"{statistics.median(x / y for x, y in zip(a['rps'], b['rps'])):.2f}x"


def render(results: dict, meta: dict) -> str:
    lines = [
        f"# Static files: headrace, uWSGI, nginx ({meta['date']})",
        "",
        (
            f"{meta['rounds']} interleaved rounds, {meta['duration']} s each after 1 s of "
            f"warm-up; servers on core 0, wrk (1 thread, keep-alive) on core 1; load "
            f"{meta['load_start']} at start, {meta['load_end']} at end. Commit {meta['git']}. "
            "Ratios are medians of per-round ratios (same round, seconds apart)."
        ),
        "",
    ]
    for size, per_peer in results.items():
        lines += [
            f"## {size} file ({SIZES[size]} bytes, {CONNECTIONS[size]} connections)",
            "",
            (
                "| server | req/s (median) | spread | p99 ms | errors | ÷ uWSGI, same front "
                "| ÷ nginx |"
            ),
            "|---|---|---|---|---|---|---|",
        ]
        for peer in PEERS:
            r = per_peer.get(peer.id)
            if r is None:
                continue
            if r.get("failed"):
                lines.append(f"| {peer.id} | could not run: {r and r.get('failed')} | | | | | |")
                continue
            vs_uwsgi = round_ratio(r, per_peer.get(UWSGI_PEER.get(peer.id, "")))
            lines.append(
                f"| {peer.id} | {r['median']:,.0f} | {min(r['rps']):,.0f}–{max(r['rps']):,.0f} "
                f"| {r['p99_ms']:.2f} | {r['errors']} | {vs_uwsgi} "
                f"| {round_ratio(r, per_peer.get('nginx'))} |"
            )
        lines.append("")
    lines += ["Configurations:", ""] + [f"- `{p.id}`: {p.config}" for p in PEERS] + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3, help="seconds of load per run")
    ap.add_argument("--headrace", default=default_exe("headrace"))
    ap.add_argument("--uwsgi", default=default_exe("uwsgi"))
    ap.add_argument("--only", help="comma-separated server ids")
    ap.add_argument("--no-apt", action="store_true")
    ap.add_argument("--render", metavar="JSON", help="rewrite the .md from a results .json")
    args = ap.parse_args(argv)
    if args.render:
        raw = json.loads(Path(args.render).read_text())
        text = render(raw["results"], raw["meta"])
        Path(args.render).with_suffix(".md").write_text(text)
        print(text)
        return 0
    peers = [p for p in PEERS if not args.only or p.id in args.only.split(",")]
    st = Setup()
    st.pin = CORES >= 2 and shutil.which("taskset") is not None
    if st.pin:
        os.sched_setaffinity(0, {CLIENT_CORE})
    bench.ensure_apt_tools(st, allow_apt=not args.no_apt)
    exe = {"headrace": args.headrace, "uwsgi": args.uwsgi, "nginx": st.nginx}
    missing = [k for k, v in exe.items() if not v] + (["wrk"] if not st.wrk else [])
    if missing:
        log(f"missing: {', '.join(missing)}")
        return 2
    logdir = Path(tempfile.mkdtemp(prefix="headrace-static-logs-"))
    docroot = Path(tempfile.mkdtemp(prefix="headrace-static-files-"))
    for size, n in SIZES.items():
        (docroot / f"{size}.bin").write_bytes(os.urandom(n))
    meta = {
        "date": dt.date.today().isoformat(),
        "rounds": args.rounds,
        "duration": args.duration,
        "git": bench.git_describe(),
        "load_start": bench.loadavg(),
        "headrace": args.headrace,
        "uwsgi": args.uwsgi,
    }
    results: dict[str, dict[str, dict]] = {s: {} for s in SIZES}
    try:
        for rnd in range(1, args.rounds + 1):
            for size in SIZES:
                for peer in peers:
                    rec = results[size].setdefault(peer.id, {"runs": []})
                    if rec.get("failed"):
                        continue
                    path = f"{peer.prefix}/{size}.bin"
                    tag = f"{peer.id}-{size}-r{rnd}"
                    try:
                        with started(st, peer, exe, docroot, logdir, tag, path) as port:
                            url = f"http://127.0.0.1:{port}{path}"
                            wrk_url(st, url, CONNECTIONS[size], 1, peer.headers)
                            m = wrk_url(st, url, CONNECTIONS[size], args.duration, peer.headers)
                    except RunError as e:
                        rec["failed"] = str(e)[:200]
                        log(f"{tag}: could not run: {rec['failed']}")
                        continue
                    rec["runs"].append(m)
                    log(
                        f"{tag}: {m['rps']:,.0f} req/s, p99 {m['p99_ms']:.2f} ms, "
                        f"{m['errors']} errors"
                    )
    finally:
        shutil.rmtree(docroot, ignore_errors=True)
    for per_peer in results.values():
        for rec in per_peer.values():
            if rec["runs"]:
                rec["rps"] = [m["rps"] for m in rec["runs"]]
                rec["median"] = statistics.median(rec["rps"])
                rec["p99_ms"] = statistics.median(m["p99_ms"] for m in rec["runs"])
                rec["errors"] = sum(m["errors"] for m in rec["runs"])
            elif not rec.get("failed"):
                rec["failed"] = "no run"
    meta["load_end"] = bench.loadavg()
    text = render(results, meta)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"static-{meta['date']}"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1) + "\n"
    )
    log(f"wrote {out}.md (server logs in {logdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
