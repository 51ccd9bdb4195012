"""The results files: bench/results/<date>.md (the report) and <date>.json (the raw numbers of
every run, from which --render writes the report again)."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Any, Callable, TypeVar

from harness.prepare import Setup
from harness.records import (
    MemoryRun,
    MemorySummary,
    RunRecord,
    SaturationRun,
    SaturationSummary,
    Summary,
    WrkRun,
    WrkSummary,
    summarize,
)
from harness.scenarios import MEMORY_REQUESTS, SCENARIOS, Options, Scenario
from harness.servers import SERVERS, Server, counterpart, server_reason

T = TypeVar("T")
WS_KEYS = {sc.key for sc in SCENARIOS if sc.kind == "ws"}


def describe(rec: RunRecord) -> str:
    """The console line for one run."""
    n = rec.numbers
    if not rec.ok:
        return f"could not run: {rec.reason}"
    if isinstance(n, WrkRun):
        unit = "msg/s" if rec.scenario in WS_KEYS else "req/s"
        return (
            f"{n.rps:,.0f} {unit}  p50 {n.p50_ms:.2f} ms  p99 {n.p99_ms:.2f} ms  errors {n.errors}"
        )
    if isinstance(n, SaturationRun):
        return f"total {n.total_s:.1f} s  p99 {fmt_s(n.p99_s)}  errors {n.errors}"
    if isinstance(n, MemoryRun):
        return f"RSS idle {mib(n.idle.rss_kib)} MiB, after {mib(n.after.rss_kib)} MiB"
    return f"first 200 after {(rec.ready_s or 0) * 1000:.0f} ms"


def fmt_s(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def fmt_errors(m: WrkSummary) -> str:
    kinds = [f"{'non-2xx' if kind == 'status' else kind} {n:,}" for kind, n in m.kinds.items() if n]
    return f"{m.errors:,}" + (f" ({', '.join(kinds)})" if kinds else "")


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def fmt_ratio(v: float | None, base: float | None) -> str:
    if v is None or not base:
        return "n/a"
    return f"{v / base:.2f}"


def run_status(st: Setup, server: Server, records: list[RunRecord]) -> str:
    reason = server_reason(st, server)
    if reason:
        return f"could not run: {reason}"
    recs = [r for r in records if r.server == server.id]
    failed = [r for r in recs if not r.ok]
    if not recs:
        return "not run"
    if len(failed) == len(recs):
        return f"could not run: {failed[0].reason}"
    if failed:
        return f"ok, but {len(failed)} of {len(recs)} runs failed (see below)"
    return "ok"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summaries(records: list[RunRecord], sc: Scenario, servers: list[Server]) -> dict[str, Summary]:
    """The summary of each server the scenario applies to, by server id, in table order."""
    return {
        s.id: summarize(records, sc.key, s.id)
        for s in servers
        if s.applies_to(sc.key, sc.interface)
    }


def figures_table(
    header: list[str],
    servers: list[Server],
    sums: dict[str, Summary],
    pick: Callable[[Summary], T | None],
    figures: Callable[[T, T | None], list[str]],
    runs_ok: bool = True,
) -> list[str]:
    """A row per server in `sums`: its id, its mode, then `figures(what pick finds in its
    summary, the same of headrace in the same mode)` or, where pick finds nothing, "could not
    run"; then "runs ok"."""
    rows = []
    for s in servers:
        m = sums.get(s.id)
        if m is None:
            continue
        base_srv = counterpart(s)
        base = sums.get(base_srv.id) if base_srv else None
        picked = pick(m)
        if picked is None:
            cells = [f"could not run: {m.reason}", *[""] * (len(header) - 3 - runs_ok)]
        else:
            cells = figures(picked, pick(base) if base else None)
        rows.append([f"`{s.id}`", s.mode, *cells, *([f"{m.ok_runs}/{m.runs}"] if runs_ok else [])])
    return table(header, rows)


def numbers_of(kind: type[T]) -> Callable[[Summary], T | None]:
    """For figures_table: a summary's numbers when they are of that kind."""
    return lambda m: m.numbers if isinstance(m.numbers, kind) else None


def wrk_section(
    sc: Scenario, opts: Options, servers: list[Server], sums: dict[str, Summary]
) -> list[str]:
    def figures(n: WrkSummary, base: WrkSummary | None) -> list[str]:
        return [
            f"{n.rps:,.0f}",
            f"{n.best:,.0f}",
            f"{n.spread * 100:.0f}%",
            f"{n.p50_ms:.2f} ms",
            f"{n.p99_ms:.2f} ms",
            fmt_errors(n),
            fmt_ratio(n.rps, base and base.rps),
            fmt_ratio(n.ratio_by_round(base) if base else None, 1.0),
        ]

    unit = "messages/s" if sc.kind == "ws" else "req/s"
    header = ["server", "mode", f"{unit} (median)", "best", "spread", "p50", "p99", "errors"]
    out = figures_table(
        [*header, "÷ headrace", "÷ headrace per round", "runs ok"],
        servers,
        sums,
        numbers_of(WrkSummary),
        figures,
    )
    if not sc.pinned:
        out += [
            "",
            (
                "Unpinned: every server process may run on every core (`taskset -c 0-N`), so "
                "servers with threads of their own (Granian's Rust runtime, headrace's) can use "
                "the second core, which the load client (pinned to core 1) also needs."
            ),
        ]
    if sc.kind == "ws":
        out += [
            "",
            (
                "bench/wsload: one connection per client, all driven by one epoll loop on the "
                "client core; each client sends a 32-byte masked text frame and waits for the "
                "echo, over and over. messages/s = "
                "echoes completed in the measured window / its length; p50/p99 are per round "
                "trip; errors = failed handshakes, socket errors and wrong echoes. A server that "
                'answers the upgrade with anything but 101 is reported as "WebSocket not '
                'supported".'
            ),
        ]
    if "Connection: close" in sc.headers:
        out += [
            "",
            (
                "wrk counts a read error each time a server closes the connection after a "
                "response that did not itself say `Connection: close`. Here the client asked "
                "for the close, so such read errors are not failed requests; the server "
                "merely did not echo the header (RFC 9112 §9.6: it SHOULD)."
            ),
        ]
    return out


def saturation_section(
    sc: Scenario, opts: Options, servers: list[Server], sums: dict[str, Summary]
) -> list[str]:
    def figures(n: SaturationSummary, base: SaturationSummary | None) -> list[str]:
        return [
            fmt_s(n.total_s),
            fmt_s(n.ideal_s),
            fmt_s(n.p50_s),
            fmt_s(n.p99_s),
            str(n.errors),
            fmt_ratio(n.total_s, base and base.total_s),
        ]

    header = ["server", "mode", "total time (median)", "ideal", "p50", "p99", "errors"]
    header += ["÷ headrace (time)", "runs ok"]
    out = figures_table(header, servers, sums, numbers_of(SaturationSummary), figures)
    out += [
        "",
        (
            f"{opts.saturation_requests} requests per client "
            f"({sc.connections * opts.saturation_requests} in all); ideal = all "
            "workers busy all the time. Last lines each server logged while saturated "
            "(last round; the full logs are in bench/.venv/logs/):"
        ),
        "",
    ]
    for server_id, m in sums.items():
        n = m.numbers
        if not isinstance(n, SaturationSummary):
            continue
        out.append(f"`{server_id}` ({n.log_lines} lines while saturated):")
        out.append("")
        out.append("```")
        out += n.log_tail or ["(nothing)"]
        if n.log_notable:
            out += ["...", "# lines that look like warnings about the load:"]
            out += n.log_notable
        out.append("```")
        out.append("")
    return out


def memory_section(
    sc: Scenario, opts: Options, servers: list[Server], sums: dict[str, Summary]
) -> list[str]:
    def figures(n: MemorySummary, base: MemorySummary | None) -> list[str]:
        return [
            str(n.processes),
            mib(n.idle_rss_kib),
            mib(n.after_rss_kib),
            mib(n.idle_pss_kib),
            mib(n.after_pss_kib),
            fmt_ratio(n.after_rss_kib, base and base.after_rss_kib),
            str(n.errors),
        ]

    header = ["server", "mode", "processes", "RSS idle MiB", "RSS after MiB", "PSS idle MiB"]
    header += ["PSS after MiB", "÷ headrace (RSS after)", "non-2xx"]
    out = figures_table(header, servers, sums, numbers_of(MemorySummary), figures, runs_ok=False)
    out += [
        "",
        (
            "Sum over the server's process tree (master, workers, router) from "
            "/proc/PID/status (RSS) and /proc/PID/smaps_rollup (PSS, which splits "
            "copy-on-write pages shared between master and workers); nginx is not "
            f"counted. Medians over the rounds; {MEMORY_REQUESTS:,} requests over 64 "
            "connections."
        ),
    ]
    return out


def startup_section(
    sc: Scenario, opts: Options, servers: list[Server], sums: dict[str, Summary]
) -> list[str]:
    def started(m: Summary) -> Summary | None:
        return m if m.ready_s is not None else None

    def figures(m: Summary, base: Summary | None) -> list[str]:
        assert m.ready_s is not None and m.ready_min is not None and m.ready_max is not None
        return [
            f"{m.ready_s * 1000:.0f} ms",
            f"{m.ready_min * 1000:.0f}–{m.ready_max * 1000:.0f} ms",
            fmt_ratio(m.ready_s, base and base.ready_s),
        ]

    header = ["server", "mode", "first 200 (median)", "range", "÷ headrace"]
    out = figures_table(header, servers, sums, started, figures, runs_ok=False)
    out += [
        "",
        (
            "Measured from the launch of the server process to the first 200 answered "
            "to a probe polling every 5 ms (through nginx in nginx mode)."
        ),
    ]
    return out


# The section of each kind of scenario; startup's comes last, after all the others.
SECTIONS: dict[str, Callable[[Scenario, Options, list[Server], dict[str, Summary]], list[str]]] = {
    "wrk": wrk_section,
    "ws": wrk_section,
    "saturation": saturation_section,
    "memory": memory_section,
    "startup": lambda sc, opts, servers, sums: [],
}


def render(
    st: Setup,
    opts: Options,
    scenarios: list[Scenario],
    servers: list[Server],
    records: list[RunRecord],
    meta: dict[str, Any],
) -> str:
    quick = meta.get("quick", "--quick" in meta.get("argv", []))
    # only the servers that some scenario of this run applies to (WSGI or ASGI)
    servers = [s for s in servers if any(s.applies_to(sc.key, sc.interface) for sc in scenarios)]
    out = [f"# headrace benchmarks — {meta['date']}{' (quick)' if quick else ''}", ""]
    out += [
        f"Produced by `bench/run {' '.join(meta['argv'])}`".rstrip() + " — see bench/README.md "
        "for what each scenario does and how every server is configured.",
        "",
        "## Setup",
        "",
        (
            f"- machine: {meta['cpu']}, {meta['cores']} cores, Linux {platform.release()}; "
            f"load average {meta['load_start']} at start, {meta.get('load_end', '?')} at end "
            "(a shared, noisy machine: read spreads before ratios)"
        ),
        (
            f"- headrace: {st.versions.get('headrace', 'not available')}, checkout "
            f"{meta['git']}, {st.headrace_origin}"
        ),
        "- peers: "
        + ", ".join(
            f"{n} {st.versions[n]}"
            for n in (
                "granian",
                "pyuwsgi",
                "gunicorn",
                "uvicorn",
                "flask",
                "django",
                "fastapi",
                "starlette",
                "pydantic",
                "uvloop",
                "httptools",
                "websockets",
            )
            if n in st.versions
        )
        + f"; Python {meta['python']}",
        "- tools: "
        + ", ".join(st.versions[n] for n in ("wrk", "nginx", "rustc") if n in st.versions),
        (
            "- pinning: every server process (and nginx) on core 0 with `taskset -c 0`; wrk and the "
            "harness on core 1 (scenarios `*-free`: servers on every core, wrk still on core 1)"
            if st.pin
            else "- pinning: none (fewer than 2 cores, or no taskset)"
        ),
        *[f"- note: {note}" for note in st.notes],
        (
            f"- method: {opts.rounds} interleaved rounds (every server once per round, in table "
            f"order); each wrk run is {opts.warmup} s warm-up + {opts.duration} s measured, 1 wrk "
            "thread; each run starts a fresh server, which is stopped by PID afterwards"
        ),
        (
            "- logging: access/request logging is OFF for every server (`--disable-logging` for "
            "uWSGI and headrace, Granian's and Gunicorn's access logs are off by default) except "
            "in `saturation`, where it is ON and the server's output is captured"
        ),
        (
            "- req/s counts successful responses (wrk's requests minus responses with status "
            ">= 400) per second; p50/p99 are wrk's latency percentiles; errors = non-2xx + socket "
            "errors (connect, read, write, timeout), summed over all rounds"
        ),
        (
            "- `÷ headrace` divides the peer's number by headrace's in the same mode (direct HTTP vs "
            "direct HTTP, router vs router, nginx+uwsgi vs nginx+uwsgi): for req/s above 1 means the "
            "peer is faster; for times and memory above 1 means the peer is slower or bigger"
        ),
        (
            "- `÷ headrace per round`: the median over the rounds of the peer's req/s divided by "
            "headrace's in the same round (runs seconds apart), steadier than the ratio of the "
            "medians when the machine's load drifts"
        ),
        (
            "- best = the highest req/s of any round (noise from other work on the machine only "
            "ever lowers throughput, so best is the least disturbed figure); spread = (max − min) / "
            "median of req/s over the rounds"
        ),
        "",
    ]
    if st.unavailable:
        out += ["Could not be set up:", ""]
        out += [f"- {k}: {v}" for k, v in st.unavailable.items()]
        out.append("")

    out += ["## Servers", ""]
    rows = []
    for s in servers:
        config = s.config
        if s.flag and st.headrace_help:
            said = st.headrace_help.get(s.flag)
            config += (
                f" — `headrace --help`: {said!r}"
                if said
                else f" — no `{s.flag}` in `headrace --help`"
            )
        rows.append([f"`{s.id}`", s.mode, config, run_status(st, s, records)])
    out += table(["server", "mode", "configuration", "status"], rows)
    out.append("")

    for sc in scenarios:
        sums = summaries(records, sc, servers)
        out += [f"## {sc.key} — {sc.title}", ""]
        out += SECTIONS[sc.kind](sc, opts, servers, sums)
        out.append("")

    # startup: from the startup scenario, else from the hello1 launches (same app and workers)
    start_sc = next((s for s in scenarios if s.kind == "startup"), None)
    source = start_sc or next((s for s in scenarios if s.key == "hello1"), None)
    if source is not None:
        if start_sc is None:
            out += ["## startup — time from launch to the first 200 (from the hello1 launches)", ""]
        out += startup_section(source, opts, servers, summaries(records, source, servers))
        out.append("")

    if st.build_log_tail:
        out += ["## headrace build failure", "", "Last lines of `pip install <repo>`:", "", "```"]
        out += st.build_log_tail
        out += ["```", ""]
    out += [f"Raw per-run numbers: `{meta['json_name']}`.", ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_results(
    out_md: Path,
    st: Setup,
    opts: Options,
    scenarios: list[Scenario],
    servers: list[Server],
    records: list[RunRecord],
    meta: dict[str, Any],
) -> Path:
    """Writes the report to `out_md` and the raw numbers next to it (.json); returns the latter."""
    out_json = out_md.with_suffix(".json")
    write_atomic(out_md, render(st, opts, scenarios, servers, records, meta))
    results = {
        "meta": meta,
        "unavailable": st.unavailable,
        "versions": st.versions,
        "setup": {
            "pin": st.pin,
            "notes": st.notes,
            "headrace_origin": st.headrace_origin,
            "headrace_help": st.headrace_help,
            "build_log_tail": st.build_log_tail,
        },
        "options": {
            "rounds": opts.rounds,
            "duration": opts.duration,
            "warmup": opts.warmup,
            "saturation_requests": opts.saturation_requests,
        },
        "records": [r.to_json() for r in records],
    }
    write_atomic(out_json, json.dumps(results, indent=1, default=str) + "\n")
    return out_json


def rerender(path: Path) -> Path:
    """--render RESULTS.json: rewrites RESULTS.md from the raw numbers, without running anything;
    returns the path of the .md."""
    data = json.loads(path.read_text())
    meta = data["meta"]
    setup = data.get("setup", {})
    st = Setup(pin=setup.get("pin", True))
    st.unavailable = data.get("unavailable", {})
    st.versions = data.get("versions", {})
    st.notes = setup.get("notes", [])
    st.headrace_origin = setup.get("headrace_origin", st.headrace_origin)
    st.headrace_help = setup.get("headrace_help", {})
    st.build_log_tail = setup.get("build_log_tail", [])
    o = data["options"]
    opts = Options(
        o["rounds"], o["duration"], o["warmup"], o["saturation_requests"], Path(meta["logs"])
    )
    records = [RunRecord.from_json(r) for r in data["records"]]
    sc_keys = meta.get("scenarios") or {r.scenario for r in records}
    srv_ids = meta.get("servers") or {r.server for r in records}
    scenarios = [s for s in SCENARIOS if s.key in sc_keys]
    servers = [s for s in SERVERS if s.id in srv_ids]
    meta["json_name"] = path.name
    out_md = path.with_suffix(".md")
    write_atomic(out_md, render(st, opts, scenarios, servers, records, meta))
    return out_md
