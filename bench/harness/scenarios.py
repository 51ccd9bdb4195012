"""The scenario table, and one run of a scenario for a server: launch it, load it, measure."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.common import RunError
from harness.launch import launched
from harness.load import Scraper, saturation_client, tree_memory, wrk, wsload
from harness.prepare import Setup
from harness.records import MemoryRun, RunRecord, WrkRun
from harness.servers import App, Server, server_reason


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # wrk, ws (WebSocket echo), saturation, memory, startup
    app: App
    processes: int
    connections: int = 64  # wrk's connections; the WebSocket clients in ws
    script: str = "get.lua"
    headers: tuple[str, ...] = ()
    interface: str = "wsgi"  # the servers it runs: those with this interface (Server.interfaces)
    pinned: bool = True  # servers on the server core; False: on every core (wrk stays pinned)
    min_response: int = 0  # bytes every response must have had (a short echo fails the run)


HELLO = App("hello")
SCENARIOS: list[Scenario] = [
    Scenario("hello1", "hello world, 1 worker, 64 keep-alive connections", "wrk", HELLO, 1),
    Scenario(
        "hello2",
        "hello world, 2 workers, 128 keep-alive connections",
        "wrk",
        HELLO,
        2,
        connections=128,
    ),
    Scenario("big100k", "100 KiB response body, 1 worker, 64 connections", "wrk", App("big"), 1),
    Scenario(
        "post1m",
        "POST of a 1 MiB body read fully by the app, 1 worker, 64 connections",
        "wrk",
        App("echo"),
        1,
        script="post_1mib.lua",
    ),
    Scenario(
        "close",
        "hello world with `Connection: close` on every request, 1 worker, 64 connections",
        "wrk",
        HELLO,
        1,
        headers=("Connection: close",),
    ),
    Scenario("flask", "Flask JSON endpoint, 1 worker, 64 connections", "wrk", App("flask_app"), 1),
    Scenario(
        "django",
        "Django view rendering a template, 1 worker, 64 connections",
        "wrk",
        App("django_app"),
        1,
    ),
    Scenario(
        "saturation",
        "seed app (sleep 1 s), 5 single-threaded workers, 20 parallel "
        "keep-alive clients, access logging ON",
        "saturation",
        App("seed"),
        5,
        connections=20,
    ),
    Scenario(
        "memory",
        "RSS of the server's process tree, idle and after 20,000 hello-world requests, 2 workers",
        "memory",
        HELLO,
        2,
    ),
    Scenario(
        "startup", "time from launch to the first 200 (hello world, 1 worker)", "startup", HELLO, 1
    ),
]


def asgi_pair(key: str, title: str, kind: str, app: str, **kw: object) -> list[Scenario]:
    """An ASGI scenario twice: servers pinned to the server core (`asgi-KEY`), and free to use
    every core (`asgi-KEY-free`); one worker, the load client pinned to the client core in both."""
    return [
        Scenario(f"asgi-{key}", f"{title}, pinned", kind, App(app), 1, interface="asgi", **kw),
        Scenario(
            f"asgi-{key}-free",
            f"{title}, unpinned (servers on every core)",
            kind,
            App(app),
            1,
            interface="asgi",
            pinned=False,
            **kw,
        ),
    ]


WS_CLIENTS = 50
SCENARIOS += [
    *asgi_pair(
        "hello", "ASGI hello world (raw ASGI app), 1 worker, 64 connections", "wrk", "asgi_hello"
    ),
    *asgi_pair(
        "echo",
        "ASGI streamed echo: POST of 1 MiB sent back chunk by chunk as it arrives, 1 worker, "
        "64 connections",
        "wrk",
        "asgi_echo",
        script="post_1mib.lua",
        min_response=1024 * 1024,  # wrk counts every byte it read: each echo must be whole
    ),
    *asgi_pair(
        "fastapi",
        "FastAPI JSON endpoint (pydantic response model, 20 items), 1 worker, 64 connections",
        "wrk",
        "asgi_fastapi",
    ),
    *asgi_pair(
        "ws",
        f"WebSocket echo: {WS_CLIENTS} clients, each sending a 32-byte text message and "
        "waiting for its echo, 1 worker",
        "ws",
        "asgi_ws",
        connections=WS_CLIENTS,
    ),
]
QUICK_SCENARIOS = ("hello1",)
# In the saturation logs, lines that may tell an operator that the server is overloaded.
NOTABLE = re.compile(
    r"warn|error|satur|queue|full|busy|backlog|overload|timeout|harakiri|503|retry", re.IGNORECASE
)
MEMORY_REQUESTS = 20_000


@dataclass
class Options:
    rounds: int
    duration: int
    warmup: int
    saturation_requests: int
    logdir: Path


def run_one(st: Setup, opts: Options, sc: Scenario, server: Server, rnd: int) -> RunRecord:
    """One run; a server that did not even start gets a second try (e.g. its port was taken)."""
    rec = run_once(st, opts, sc, server, rnd, "")
    if not rec.ok and rec.ready_s is None and not server_reason(st, server):
        retry = run_once(st, opts, sc, server, rnd, "-retry")
        retry.first_try = rec.reason
        return retry
    return rec


def run_once(
    st: Setup, opts: Options, sc: Scenario, server: Server, rnd: int, suffix: str
) -> RunRecord:
    tag = f"{sc.key}-{server.id}-r{rnd + 1}{suffix}"
    rec = RunRecord(sc.key, server.id, rnd + 1)
    t_start = time.monotonic()
    try:
        if sc.kind == "wrk":
            with launched(
                st, server, sc.app, sc.processes, opts.logdir, tag, pinned=sc.pinned
            ) as run:
                rec.ready_s = run.ready_s
                scraper = Scraper(run.launch) if server.scrape else None
                try:
                    if opts.warmup:
                        wrk(st, run.launch.port, sc.connections, opts.warmup, sc.script, sc.headers)
                    raw = wrk(
                        st, run.launch.port, sc.connections, opts.duration, sc.script, sc.headers
                    )
                finally:
                    if scraper is not None:
                        rec.scrapes, rec.scrape_errors = scraper.stop()
                run.check_alive()
                rec.numbers = WrkRun.from_wrk(raw)
                if sc.min_response and raw["bytes"] < raw["requests"] * sc.min_response:
                    raise RunError(
                        f"short responses: {raw['bytes']:,} bytes for {raw['requests']:,} "
                        f"responses of at least {sc.min_response:,} bytes"
                    )
                if rec.scrape_errors:
                    raise RunError(f"{rec.scrape_errors} of {rec.scrapes} scrapes failed")
        elif sc.kind == "ws":
            if st.wsload is None:
                raise RunError(f"no WebSocket client: {st.unavailable.get('wsload', '?')}")
            with launched(
                st, server, sc.app, sc.processes, opts.logdir, tag, pinned=sc.pinned, ws=True
            ) as run:
                rec.ready_s = run.ready_s
                raw = wsload(st, run.launch.port, sc.connections, opts.warmup, opts.duration)
                run.check_alive()
                rec.numbers = WrkRun.from_wrk(raw)
        elif sc.kind == "saturation":
            with launched(
                st,
                server,
                sc.app,
                sc.processes,
                opts.logdir,
                tag,
                threads=1,
                logging=True,
                probe_timeout=10.0,
            ) as run:
                rec.ready_s = run.ready_s
                time.sleep(0.5)
                offset = run.log_path.stat().st_size
                ideal = sc.connections * opts.saturation_requests / sc.processes
                res = saturation_client(
                    run.launch.port,
                    sc.connections,
                    opts.saturation_requests,
                    timeout=ideal * 4 + 30,
                )
                time.sleep(0.2)
                with open(run.log_path, "rb") as f:
                    f.seek(offset)
                    saturated = f.read().decode("utf-8", "replace").splitlines()
                res.ideal_s = ideal
                res.log_lines = len(saturated)
                lines = [line[:300] for line in saturated if line.strip()]
                res.log_tail = lines[-6:]
                res.log_notable = [line for line in lines if NOTABLE.search(line)][-6:]
                rec.numbers = res
        elif sc.kind == "memory":
            with launched(st, server, sc.app, sc.processes, opts.logdir, tag) as run:
                rec.ready_s = run.ready_s
                time.sleep(1.5)
                idle = tree_memory(run.leader.pid)
                stopped = wrk(
                    st,
                    run.launch.port,
                    sc.connections,
                    120,
                    "stop_after.lua",
                    extra_env={"BENCH_STOP_AFTER": str(MEMORY_REQUESTS)},
                    marker="BENCH_STOPPED",
                )
                run.check_alive()
                time.sleep(1.0)
                rec.numbers = MemoryRun(
                    idle=idle,
                    after=tree_memory(run.leader.pid),
                    requests=stopped["responses"],
                    errors=stopped["non2xx"],
                )
        elif sc.kind == "startup":
            with launched(st, server, sc.app, sc.processes, opts.logdir, tag) as run:
                rec.ready_s = run.ready_s
        else:  # pragma: no cover - table error
            raise RunError(f"unknown scenario kind {sc.kind}")
        rec.ok = True
    except RunError as e:
        rec.reason = str(e)
    rec.wall_s = time.monotonic() - t_start
    return rec
