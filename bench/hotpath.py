#!/usr/bin/env python3
"""The profiler behind `bench/profile`: where headrace's worker spends its time in scenario hello1.

Two tools, chosen by `--tool auto` (the default):
- perf (when `perf stat -e instructions true` counts instructions, i.e. hardware counters work):
  `perf record -g` on the worker processes while wrk runs scenario hello1; writes a flat profile
  and a call-graph report.
- callgrind (otherwise): headrace runs under `valgrind --tool=callgrind` twice, once answering
  only the readiness probe and once answering N more requests (wrk, bounded by count). The worker
  inherits the master's counters at fork, so the difference of the two profiles, per function, is
  exactly what N requests cost: instructions per request, repeatable on a noisy machine.

Text reports go to bench/results/profile-<date>-<tool>.txt; raw data (perf.data, callgrind.out)
to bench/results/raw/, which git ignores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as h

RAW = h.RESULTS / "raw"


def perf_counts_instructions() -> bool:
    if not shutil.which("perf"):
        return False
    rc, out = h.run_bounded(["perf", "stat", "-x,", "-e", "instructions", "true"], timeout=30)
    return (
        rc == 0
        and "not supported" not in out
        and "not counted" not in out
        and bool(re.search(r"^\d+,", out, re.MULTILINE))
    )


def headrace_server(wrap: list[str]) -> h.Server:
    base = h.headrace_cmd("--http-socket")
    return h.Server(
        "headrace",
        "headrace",
        "http",
        lambda st, ln: [*wrap, *base(st, ln)],
        "profiled",
        requires=("headrace",),
    )


def background_wrk(st: h.Setup, port: int, seconds: int, connections: int) -> subprocess.Popen:
    assert st.wrk
    argv = [st.wrk, "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    return subprocess.Popen(
        st.pinned(h.CLIENT_CORE, argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def profile_perf(st: h.Setup, args: argparse.Namespace, stem: str, logdir: Path) -> Path:
    data = RAW / f"{stem}.perf.data"
    report = h.RESULTS / f"{stem}.txt"
    event = "cycles" if perf_counts_instructions() else "cpu-clock"
    with h.launched(st, headrace_server([]), h.HELLO, 1, logdir, "profile-perf") as run:
        workers = [pid for pid in h.tree(run.leader.pid) if pid != run.leader.pid]
        h.wrk(st, run.launch.port, args.connections, 1, "get.lua")  # warm-up
        load = background_wrk(st, run.launch.port, args.duration + 3, args.connections)
        try:
            time.sleep(1)
            rc, out = h.run_bounded(
                [
                    "perf",
                    "record",
                    "-e",
                    event,
                    "-F",
                    str(args.frequency),
                    "-g",
                    f"--call-graph={args.call_graph}",
                    "-o",
                    str(data),
                    "-p",
                    ",".join(map(str, workers or [run.leader.pid])),
                    "--",
                    "sleep",
                    str(args.duration),
                ],
                timeout=args.duration + 60,
            )
            if rc != 0:
                raise h.RunError(f"perf record failed ({rc}): {h.one_line(out.splitlines()[-3:])}")
            wrk_out = load.communicate(timeout=args.duration + 30)[0].decode(errors="replace")
        finally:
            h.stop_process(load)
    parts = [f"# headrace hot path, scenario hello1, perf ({event}, {args.call_graph})", ""]
    parts += header(st, args)
    parts += ["", "## load (wrk)", "", wrk_out.strip(), ""]
    for title, extra in (
        (
            "flat profile (self time by symbol)",
            ["--no-children", "-g", "none", "--sort", "dso,symbol", "--percent-limit", "0.3"],
        ),
        (
            "call graph (caller view, with children)",
            ["--children", "-g", "caller,0.5,callee", "--percent-limit", "2"],
        ),
    ):
        rc, out = h.run_bounded(["perf", "report", "--stdio", "-i", str(data), *extra], timeout=600)
        lines = out.strip().splitlines()
        if len(lines) > args.max_lines:
            lines = lines[: args.max_lines] + [
                f"... cut at {args.max_lines} lines: `perf report -i {data}` shows the rest"
            ]
        parts += [f"## {title}", "", *lines, ""]
    report.write_text("\n".join(parts) + "\n")
    return report


COST = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def annotate(path: Path, inclusive: bool) -> tuple[dict[str, int], dict[str, str]]:
    """Function -> instructions from callgrind_annotate, and function -> object file.

    callgrind splits a function by source file (inlined code) and by recursion level; both are
    merged here. callgrind_annotate names the object only on the first line of a run of lines
    from the same object, so the object of a function is taken from any line that names it.
    """
    rc, out = h.run_bounded(
        [
            "callgrind_annotate",
            f"--inclusive={'yes' if inclusive else 'no'}",
            "--threshold=100",
            "--auto=no",
            str(path),
        ],
        timeout=600,
    )
    if rc != 0:
        raise h.RunError(f"callgrind_annotate failed: {h.one_line(out.splitlines()[-3:])}")
    costs: dict[str, int] = {}
    objects: dict[str, str] = {}
    for line in out.splitlines():
        m = COST.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        func, obj = split_name(m.group(2))
        cost = int(m.group(1).replace(",", ""))
        # Self costs of the pieces add up; an inclusive cost already covers the callees of
        # every piece, so the largest piece is taken rather than a (double-counting) sum.
        costs[func] = max(costs.get(func, 0), cost) if inclusive else costs.get(func, 0) + cost
        if obj:
            objects.setdefault(func, obj)
    return costs, objects


def split_name(raw: str) -> tuple[str, str]:
    """`/long/path/file.c:func'2 [/lib/libx.so]` -> (`func`, `libx.so`)."""
    m = re.match(r"^(?:(?P<file>[^:]*?):)?(?P<func>.*?)(?: \[(?P<obj>[^\]]*)\])?$", raw.strip())
    if not m:
        return raw.strip(), ""
    func = re.sub(r"'\d+$", "", m.group("func"))
    return func, os.path.basename(m.group("obj") or "")


def callgrind_once(
    st: h.Setup, args: argparse.Namespace, stem: str, requests: int, logdir: Path
) -> tuple[Path, str]:
    """Runs headrace under callgrind, sends `requests` requests; returns the worker's profile."""
    pattern = RAW / f"{stem}-n{requests}-%p.callgrind.out"
    for old in RAW.glob(f"{stem}-n{requests}-*.callgrind.out"):
        old.unlink()
    wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={pattern}"]
    stopped = ""
    with h.launched(
        st, headrace_server(wrap), h.HELLO, 1, logdir, f"profile-cg-{requests}", probe_timeout=30.0
    ) as run:
        workers = [pid for pid in h.tree(run.leader.pid) if pid != run.leader.pid]
        if requests:
            res = h.wrk(
                st,
                run.launch.port,
                args.connections,
                600,
                "stop_after.lua",
                extra_env={"BENCH_STOP_AFTER": str(requests)},
                marker="BENCH_STOPPED",
            )
            stopped = f"{res['responses']} responses, {res['non2xx']} not 2xx"
    # valgrind writes the profile when the worker exits (the graceful stop above).
    outs = [RAW / f"{stem}-n{requests}-{pid}.callgrind.out" for pid in workers]
    outs = [p for p in outs if p.exists()]
    if not outs:
        raise h.RunError(f"no callgrind profile written by the worker(s) {workers}")
    return outs[0], stopped


def profile_callgrind(st: h.Setup, args: argparse.Namespace, stem: str, logdir: Path) -> Path:
    report = h.RESULTS / f"{stem}.txt"
    h.READY_TIMEOUT = 300.0  # Python starts slowly under valgrind
    h.STOP_GRACE = 60.0  # and the worker must exit by itself to write its profile
    base, _ = callgrind_once(st, args, stem, 0, logdir)
    loaded, stopped = callgrind_once(st, args, stem, args.requests, logdir)
    n = args.requests
    parts = [f"# headrace hot path, scenario hello1, callgrind ({n} requests)", ""]
    parts += header(st, args)
    parts += [
        (
            f"- load: wrk, {args.connections} keep-alive connections, ended after {n} responses "
            f"({stopped})"
        ),
        (
            f"- profiles: {base.name} (readiness probe only) and {loaded.name} (+{n} requests); "
            "the numbers below are their difference divided by the request count, so interpreter "
            "start-up and app import (inherited from the master at fork) cancel out; valgrind "
            "counts user-space instructions only, so the kernel's side of each syscall (the TCP "
            "stack, epoll) is not in them"
        ),
        "",
    ]
    total = 0
    for inclusive in (False, True):
        a, _ = annotate(base, inclusive)
        b, objects = annotate(loaded, inclusive)
        diff = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
        if not inclusive:
            total = sum(diff.values()) or 1
        rows = sorted(((v, k) for k, v in diff.items() if v > 0), reverse=True)[: args.top]
        if inclusive:
            parts += [
                "## instructions per request, inclusive (function and its callees)",
                "",
                (
                    "Shares are of the total above; through recursion (app -> Python -> headrace) "
                    "an inclusive cost can exceed it."
                ),
                "",
            ]
        else:
            parts += [
                "## instructions per request, exclusive (self)",
                "",
                f"total: {total / n:,.0f} instructions per request",
                "",
            ]
        parts += ["```", f"{'instr/req':>12}  {'share':>6}  function  (object)"]
        for v, k in rows:
            parts.append(f"{v / n:12,.1f}  {100 * v / total:5.1f}%  {k}  ({objects.get(k, '?')})")
        parts += ["```", ""]
    report.write_text("\n".join(parts) + "\n")
    return report


def header(st: h.Setup, args: argparse.Namespace) -> list[str]:
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        (
            f"- headrace: {st.versions.get('headrace', '?')}, checkout {h.git_describe()}, "
            f"{st.headrace_origin}"
        ),
        "- server: `headrace --http-socket ADDR --wsgi-file bench/apps/hello.py --master "
        "--processes 1 --listen 1024 --disable-logging`"
        + (", pinned to core 0; wrk on core 1" if st.pin else ""),
        f"- command: `bench/profile {' '.join(args.argv)}`".rstrip("` ") + "`",
    ]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench/profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--tool", choices=("auto", "perf", "callgrind"), default="auto")
    p.add_argument("--duration", type=int, default=10, help="perf: seconds recorded (10)")
    p.add_argument("--frequency", type=int, default=499, help="perf: samples per second (499)")
    p.add_argument(
        "--call-graph",
        default="dwarf,16384",
        help="perf: --call-graph mode (dwarf,16384; fp needs frame pointers)",
    )
    p.add_argument("--requests", type=int, default=20_000, help="callgrind: requests (20000)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--top", type=int, default=40, help="callgrind: functions listed (40)")
    p.add_argument("--max-lines", type=int, default=400, help="perf: lines per report (400)")
    p.add_argument(
        "--headrace",
        metavar="PATH",
        help="profile this executable instead of building one into bench/.venv",
    )
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--no-apt", action="store_true")
    args = p.parse_args(argv)
    args.argv = argv

    st = h.Setup()
    st.pin = h.CORES >= 2 and shutil.which("taskset") is not None
    if st.pin:
        os.sched_setaffinity(0, {h.CLIENT_CORE})
    tool = args.tool
    if tool == "auto":
        tool = "perf" if perf_counts_instructions() else "callgrind"
        h.log(
            f"tool: {tool}"
            + ("" if tool == "perf" else " (perf cannot count instructions on this machine)")
        )
    h.ensure_apt_tools(
        st, allow_apt=not args.no_apt, extra=("linux-perf",) if tool == "perf" else ("valgrind",)
    )
    if "wrk" in st.unavailable:
        raise SystemExit("wrk is not installed")
    if not shutil.which("perf" if tool == "perf" else "valgrind"):
        raise SystemExit(f"{tool} is not installed")
    h.ensure_venv(st)
    if args.headrace:
        h.use_headrace(st, args.headrace)
    else:
        h.build_headrace(st, "never" if args.no_build else "always" if args.rebuild else "auto")
    if "headrace" in st.unavailable:
        raise SystemExit(f"headrace: {st.unavailable['headrace']}")

    RAW.mkdir(parents=True, exist_ok=True)
    logdir = h.LOGS / ("profile-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    logdir.mkdir(parents=True, exist_ok=True)
    stem = f"profile-{datetime.date.today().isoformat()}-{tool}"
    try:
        report = (profile_perf if tool == "perf" else profile_callgrind)(st, args, stem, logdir)
    except h.RunError as e:
        raise SystemExit(f"profile failed: {e} (logs: {logdir})") from e
    h.log(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
