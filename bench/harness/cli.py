"""The options of `bench/run`, and the run itself: every scenario, in interleaved rounds over
the servers, saving the results files after each scenario."""

from __future__ import annotations

import argparse
import datetime
import platform
import signal
import time
from pathlib import Path
from typing import Callable

from harness.common import CORES, LOGS, RESULTS, log
from harness.prepare import cpu_model, git_describe, loadavg, prepare
from harness.procs import run_bounded
from harness.records import RunRecord
from harness.report import describe, rerender, write_results
from harness.scenarios import QUICK_SCENARIOS, SCENARIOS, Options, run_one
from harness.servers import SERVERS, server_reason


def select(items: list, names: str | None, what: str, key: Callable) -> list:
    if not names:
        return items
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    chosen = [i for i in items if any(key(i) == w or key(i).startswith(w + "-") for w in wanted)]
    unknown = [
        w for w in wanted if not any(key(i) == w or key(i).startswith(w + "-") for i in items)
    ]
    if unknown:
        raise SystemExit(
            f"unknown {what}: {', '.join(unknown)} (known: {', '.join(key(i) for i in items)})"
        )
    return chosen


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark headrace against uWSGI, Granian and Gunicorn; writes "
        "bench/results/<date>.md. See bench/README.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="only the main scenario (hello1), 3 rounds of 1 s warm-up + 2 s "
        "(under 3 minutes once bench/.venv is built)",
    )
    p.add_argument("--only", metavar="S1,S2", help="scenarios to run (default: all; see --list)")
    p.add_argument(
        "--servers",
        metavar="A,B",
        help="servers to run: ids or families, e.g. headrace,granian or uwsgi-router",
    )
    p.add_argument("--modes", metavar="M1,M2", help="modes to run: http, router, nginx")
    p.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds (default 3; fewer only for debugging, flagged in the results)",
    )
    p.add_argument("--duration", type=int, help="seconds per measured wrk run (default 5, quick 2)")
    p.add_argument("--warmup", type=int, help="seconds of wrk warm-up before each run (default 1)")
    p.add_argument(
        "--saturation-requests",
        type=int,
        default=4,
        help="requests per client in the saturation scenario (default 4; 10 is "
        "the seed experiment's 200 requests)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild headrace even if unchanged")
    p.add_argument(
        "--no-build", action="store_true", help="use the headrace already installed in bench/.venv"
    )
    p.add_argument(
        "--headrace",
        metavar="PATH",
        help="measure this headrace executable (e.g. .venv/bin/headrace from ./dev build) "
        "instead of building one into bench/.venv",
    )
    p.add_argument("--no-apt", action="store_true", help="never call apt-get")
    p.add_argument("--out", type=Path, help="results file (default bench/results/<date>.md)")
    p.add_argument("--setup-only", action="store_true", help="prepare everything, run nothing")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS.json",
        help="rewrite RESULTS.md from a previous run's raw numbers, then exit",
    )
    p.add_argument("--list", action="store_true", help="list scenarios and servers, then exit")
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        log(f"wrote {rerender(args.render)}")
        return 0
    if args.list:
        for sc in SCENARIOS:
            print(
                f"scenario {sc.key:11} {sc.title}{'  [quick]' if sc.key in QUICK_SCENARIOS else ''}"
            )
        for s in SERVERS:
            print(f"server   {s.id:17} {s.mode:7} {s.config}")
        return 0

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    scenarios = select(
        [s for s in SCENARIOS if not args.quick or s.key in QUICK_SCENARIOS]
        if not args.only
        else SCENARIOS,
        args.only,
        "scenario",
        lambda s: s.key,
    )
    servers = select(SERVERS, args.servers, "server", lambda s: s.id)
    servers = select(servers, args.modes, "mode", lambda s: s.mode) if args.modes else servers
    if not servers or not scenarios:
        raise SystemExit("nothing selected")

    started = time.monotonic()
    date = datetime.date.today().isoformat()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_md = args.out or RESULTS / f"{date}.md"
    out_json = out_md.with_suffix(".json")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    st = prepare(args)
    if args.setup_only:
        log(
            "setup done: "
            + (", ".join(f"{k}: {v}" for k, v in st.unavailable.items()) or "everything available")
        )
        return 0
    if "wrk" in st.unavailable:
        log("wrk is missing: nothing can be measured")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    opts = Options(
        rounds=args.rounds or 3,
        duration=args.duration or (2 if args.quick else 5),
        warmup=1 if args.warmup is None else args.warmup,
        saturation_requests=max(1, args.saturation_requests),
        logdir=LOGS / stamp,
    )
    if opts.rounds < 3:
        st.notes.append(f"only {opts.rounds} round(s): for debugging, not for comparisons")
    opts.logdir.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": date,
        "argv": argv,
        "git": git_describe(),
        "cpu": cpu_model(),
        "cores": CORES,
        "python": st.versions.get("python") or platform.python_version(),
        "load_start": loadavg(),
        "json_name": out_json.name,
        "quick": args.quick,
        "scenarios": [s.key for s in scenarios],
        "servers": [s.id for s in servers],
        "logs": str(opts.logdir),
    }
    rc, out = run_bounded(
        [st.bin("python"), "-c", ("import platform; print(platform.python_version())")], timeout=30
    )
    if rc == 0:
        meta["python"] = out.strip()
    records: list[RunRecord] = []

    def save() -> None:
        meta["load_end"] = loadavg()
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
        write_results(out_md, st, opts, scenarios, servers, records, meta)

    log(f"results: {out_md}; server logs: {opts.logdir}")
    try:
        for sc in scenarios:
            applicable = [s for s in servers if s.applies_to(sc.key, sc.interface)]
            gave_up: set[str] = set()
            for s in applicable:
                reason = server_reason(st, s)
                if reason:
                    records.append(RunRecord(sc.key, s.id, 0, reason=reason))
                    gave_up.add(s.id)
            for rnd in range(opts.rounds):
                for s in applicable:
                    if s.id in gave_up:
                        continue
                    rec = run_one(st, opts, sc, s, rnd)
                    records.append(rec)
                    log(f"{sc.key} round {rnd + 1}/{opts.rounds} {s.id}: {describe(rec)}")
                    if not rec.ok and rec.ready_s is None:
                        gave_up.add(s.id)  # it did not even start: do not retry every round
            save()
    finally:
        save()
        log(f"wrote {out_md} and {out_json.name} in {time.monotonic() - started:.0f} s")
    return 0
