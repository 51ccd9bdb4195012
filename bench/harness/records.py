"""The typed result records: the numbers of one run, as bench/results/<date>.json keeps them
(a flat object per run), and the summary of one server's runs of a scenario, as the report
prints it."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Union


@dataclass
class WrkRun:
    """A wrk run: successful responses per second, latency percentiles, errors."""

    rps: float  # wrk's requests minus responses with status >= 400, per second
    p50_ms: float
    p99_ms: float
    errors: int  # non2xx + socket_errors
    non2xx: int
    socket_errors: int  # connect, read, write and timeout errors
    requests: int
    wrk: dict[str, int]  # wrk's own counters, as bench/wrk/report.lua prints them

    @classmethod
    def from_wrk(cls, raw: dict[str, int]) -> WrkRun:
        secs = raw["duration_us"] / 1e6 or 1.0
        socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
        good = max(0, raw["requests"] - raw["status"])
        return cls(
            rps=good / secs,
            p50_ms=raw["p50_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            errors=raw["status"] + socket_errors,
            non2xx=raw["status"],
            socket_errors=socket_errors,
            requests=raw["requests"],
            wrk=raw,
        )


@dataclass
class SaturationRun:
    """The saturation client's run: how long all requests took, and what the server logged."""

    total_s: float
    errors: int
    error_kinds: list[str]
    statuses: dict[str, int]  # status code -> responses
    p50_s: float | None  # None: no request succeeded
    p99_s: float | None
    max_s: float | None
    ideal_s: float = 0.0  # all workers busy all the time
    log_lines: int = 0  # lines the server logged while saturated
    log_tail: list[str] = field(default_factory=list)
    log_notable: list[str] = field(default_factory=list)  # lines that look like warnings


@dataclass
class TreeMemory:
    """Memory of a server's process tree, summed over its processes."""

    rss_kib: int
    pss_kib: int
    processes: int


@dataclass
class MemoryRun:
    """Memory of the server idle and after a fixed number of requests."""

    idle: TreeMemory
    after: TreeMemory
    requests: int
    errors: int  # non-2xx responses


Numbers = Union[WrkRun, SaturationRun, MemoryRun]
# The key that only one kind of numbers has: how a record read back from JSON tells its kind.
KIND_KEY: dict[str, type[Numbers]] = {"rps": WrkRun, "total_s": SaturationRun, "after": MemoryRun}


def known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of `data` that are fields of the dataclass `cls`."""
    return {f.name: data[f.name] for f in fields(cls) if f.name in data}


def numbers_from_json(cls: type[Numbers], data: dict[str, Any]) -> Numbers:
    given = known(cls, data)
    if cls is MemoryRun:
        given["idle"] = TreeMemory(**given["idle"])
        given["after"] = TreeMemory(**given["after"])
    return cls(**given)


@dataclass
class RunRecord:
    """One run of one scenario for one server. In the JSON its numbers are flattened into it,
    and what was never measured (None) is left out."""

    scenario: str
    server: str
    round: int  # from 1; 0 for a server that could not run at all
    ok: bool = False
    ready_s: float | None = None  # launch to the first 200; None: it never answered
    scrapes: int | None = None  # headrace-stats: polls of its stats and metrics during the run
    scrape_errors: int | None = None
    numbers: Numbers | None = None  # None for startup runs and failed ones
    reason: str | None = None  # why the run failed
    wall_s: float | None = None
    first_try: str | None = None  # a run retried because the server did not start: why

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "numbers":
                out.update(asdict(value) if value is not None else {})
            elif value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        kind = next((numbers for key, numbers in KIND_KEY.items() if key in data), None)
        given = known(cls, data)
        given["numbers"] = numbers_from_json(kind, data) if kind else None
        return cls(**given)


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass
class WrkSummary:
    rps: float  # median over the runs
    best: float  # the highest req/s of any run
    spread: float  # (max - min) / median
    p50_ms: float  # medians over the runs
    p99_ms: float
    errors: int  # summed over the runs, like the three below
    non2xx: int
    socket_errors: int
    kinds: dict[str, int]  # wrk's error counters by kind
    requests: int
    by_round: dict[int, float] = field(default_factory=dict)  # round -> req/s (set by summarize)

    def ratio_by_round(self, base: WrkSummary) -> float | None:
        """The median over the rounds both ran of this req/s divided by `base`'s in the same
        round: two runs of one round are seconds apart, so this is steadier than the ratio of
        the medians on a noisy machine."""
        ratios = [v / base.by_round[k] for k, v in self.by_round.items() if base.by_round.get(k)]
        return statistics.median(ratios) if ratios else None

    @classmethod
    def of(cls, runs: list[WrkRun]) -> WrkSummary:
        rps = [r.rps for r in runs]
        median = statistics.median(rps)
        return cls(
            rps=median,
            best=max(rps),
            spread=(max(rps) - min(rps)) / median if median else 0.0,
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            errors=sum(r.errors for r in runs),
            non2xx=sum(r.non2xx for r in runs),
            socket_errors=sum(r.socket_errors for r in runs),
            kinds={
                kind: sum(r.wrk[kind] for r in runs)
                for kind in ("status", "connect", "read", "write", "timeout")
            },
            requests=sum(r.requests for r in runs),
        )


@dataclass
class SaturationSummary:
    total_s: float  # medians over the runs, like the two below
    p50_s: float | None
    p99_s: float | None
    max_s: float  # the slowest request of any run
    ideal_s: float
    errors: int
    log_tail: list[str]  # of the last run, like the two below
    log_notable: list[str]
    log_lines: int

    @classmethod
    def of(cls, runs: list[SaturationRun]) -> SaturationSummary:
        return cls(
            total_s=statistics.median(r.total_s for r in runs),
            p50_s=med([r.p50_s for r in runs]),
            p99_s=med([r.p99_s for r in runs]),
            max_s=max((r.max_s or 0) for r in runs),
            ideal_s=runs[0].ideal_s,
            errors=sum(r.errors for r in runs),
            log_tail=runs[-1].log_tail,
            log_notable=runs[-1].log_notable,
            log_lines=runs[-1].log_lines,
        )


@dataclass
class MemorySummary:
    idle_rss_kib: float  # medians over the runs, like the three below
    idle_pss_kib: float
    after_rss_kib: float
    after_pss_kib: float
    processes: int  # of the last run
    errors: int

    @classmethod
    def of(cls, runs: list[MemoryRun]) -> MemorySummary:
        return cls(
            idle_rss_kib=statistics.median(r.idle.rss_kib for r in runs),
            idle_pss_kib=statistics.median(r.idle.pss_kib for r in runs),
            after_rss_kib=statistics.median(r.after.rss_kib for r in runs),
            after_pss_kib=statistics.median(r.after.pss_kib for r in runs),
            processes=runs[-1].after.processes,
            errors=sum(r.errors for r in runs),
        )


NumbersSummary = Union[WrkSummary, SaturationSummary, MemorySummary]


@dataclass
class Summary:
    """One server's runs of one scenario."""

    runs: int
    ok_runs: int
    reason: str | None = None  # no run succeeded: the first one's reason
    ready_s: float | None = None  # launch to the first 200: median, min, max
    ready_min: float | None = None
    ready_max: float | None = None
    numbers: NumbersSummary | None = None  # None for startup runs and when none succeeded


SUMMARY_OF: dict[type[Numbers], Callable[[Any], NumbersSummary]] = {
    WrkRun: WrkSummary.of,
    SaturationRun: SaturationSummary.of,
    MemoryRun: MemorySummary.of,
}


def summarize(records: list[RunRecord], scenario: str, server: str) -> Summary:
    recs = [r for r in records if r.scenario == scenario and r.server == server]
    ok = [r for r in recs if r.ok]
    if not ok:
        return Summary(len(recs), 0, reason=recs[0].reason or "?" if recs else "not run")
    ready = [r.ready_s for r in ok if r.ready_s is not None]
    out = Summary(
        len(recs), len(ok), ready_s=med(ready), ready_min=min(ready), ready_max=max(ready)
    )
    numbers = [r.numbers for r in ok if r.numbers is not None]
    if numbers:
        out.numbers = SUMMARY_OF[type(numbers[0])](numbers)
        if isinstance(out.numbers, WrkSummary):
            out.numbers.by_round = {
                r.round: r.numbers.rps for r in ok if isinstance(r.numbers, WrkRun)
            }
    return out
