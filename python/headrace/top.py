"""`headrace top ADDR`: a live view of a stats server (headrace's or uWSGI's), like uwsgitop,
with headrace's queue figures and every running request with how long it has run.

ADDR is what `--stats` was given (`host:port`, a unix socket path, `@abstract`) or an
`http://` URL (`--stats-http`). On a terminal the view refreshes until `q`; otherwise (a pipe,
a file) it prints one plain snapshot, or `--count N` of them, and exits.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.request


def fetch(addr: str, timeout: float = 5.0) -> dict:
    """Read one stats document."""
    if addr.startswith(("http://", "https://")):
        with urllib.request.urlopen(addr, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8", "replace"))
    if addr.startswith("@"):
        family, target = socket.AF_UNIX, "\0" + addr[1:]
    elif ":" in addr and "/" not in addr:
        host, port = addr.rsplit(":", 1)
        family, target = (
            socket.AF_INET6 if ":" in host else socket.AF_INET,
            (
                host.strip("[]") or "127.0.0.1",
                int(port),
            ),
        )
    else:
        family, target = socket.AF_UNIX, addr
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(target)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return json.loads(b"".join(chunks).decode("utf-8", "replace"))


def human(n: float) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}"


def running(stats: dict) -> list[tuple[str, int, float | None, str]]:
    """(worker:core, pid, seconds running or None, request) for every running request."""
    own = stats.get("headrace", {}).get("running")
    if own is not None:
        return [
            (f"{r['worker']}:{r['core']}", r["pid"], r["running_ms"] / 1000, r["request"])
            for r in own
        ]
    # uWSGI: the cores' variables and request start (seconds).
    out = []
    now = time.time()
    for w in stats.get("workers", []):
        for c in w.get("cores", []):
            if not c.get("in_request"):
                continue
            env = dict(v.split("=", 1) for v in c.get("vars", []) if "=" in v)
            start = c.get("req_info", {}).get("request_start")
            req = f"{env.get('REQUEST_METHOD', '?')} {env.get('REQUEST_URI', '?')}"
            out.append((f"{w['id']}:{c['id']}", w["pid"], now - start if start else None, req))
    return out


def render(stats: dict, prev: dict | None, dt: float, width: int = 200) -> list[str]:
    """The view as lines of text."""
    workers = stats.get("workers", [])
    total = sum(w["requests"] for w in workers)
    rps_of = {}
    if prev is not None and dt > 0:
        before = {w["id"]: w["requests"] for w in prev.get("workers", [])}
        for w in workers:
            rps_of[w["id"]] = max(0.0, (w["requests"] - before.get(w["id"], w["requests"])) / dt)
    rps = f"{sum(rps_of.values()):.0f}" if rps_of else "-"
    hr = stats.get("headrace", {})
    q = hr.get("queue")
    head = (
        f"{'headrace' if hr else 'uwsgi'} {stats.get('version', '?')} - {time.ctime()} - "
        f"master pid: {stats.get('pid', '?')} - req: {total} - RPS: {rps} - "
        f"tx: {human(sum(w['tx'] for w in workers))}"
    )
    lines = [head]
    if q is not None:
        sat = " - SATURATED" if q["saturated"] else ""
        lines.append(
            f"queue ({q['source']}): {q['depth']} waiting - oldest: {q['oldest_wait_ms'] / 1000:.1f}s"
            f" - shed (503): {q['shed']}{sat}"
        )
    else:
        lines.append(f"listen queue: {stats.get('listen_queue', 0)}")
    lines.append("")
    lines.append(
        f"{'WID':>4} {'PID':>8} {'STATUS':<7} {'REQ':>9} {'RPS':>6} {'EXC':>5} {'AVG':>8} "
        f"{'RSS':>7} {'VSZ':>7} {'TX':>7} {'RESPAWN':>7} {'HARAKIRI':>8}"
    )
    for w in workers:
        wrps = f"{rps_of[w['id']]:.0f}" if w["id"] in rps_of else "-"
        lines.append(
            f"{w['id']:>4} {w['pid']:>8} {w['status']:<7} {w['requests']:>9} {wrps:>6} "
            f"{w['exceptions']:>5} {w['avg_rt'] / 1000:>6.1f}ms {human(w['rss']):>7} "
            f"{human(w['vsz']):>7} {human(w['tx']):>7} {w['respawn_count']:>7} "
            f"{w['harakiri_count']:>8}"
        )
    lines.append("")
    now_running = running(stats)
    lines.append(f"running requests: {len(now_running)}")
    if now_running:
        lines.append(f"{'W:C':>6} {'PID':>8} {'FOR':>8}  REQUEST")
        for wc, pid, secs, req in sorted(now_running, key=lambda r: -(r[2] or 0)):
            took = f"{secs:.1f}s" if secs is not None else "?"
            lines.append(f"{wc:>6} {pid:>8} {took:>8}  {req}")
    return [line[:width] for line in lines]


def plain(addr: str, count: int, frequency: float) -> int:
    prev, prev_t = None, 0.0
    for i in range(count):
        if i:
            time.sleep(frequency)
        stats = fetch(addr)
        now = time.monotonic()
        if i:
            print()
        print("\n".join(render(stats, prev, now - prev_t)), flush=True)
        prev, prev_t = stats, now
    return 0


def live(addr: str, frequency: float, count: int | None) -> int:
    import curses

    def loop(screen) -> None:
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        screen.timeout(int(frequency * 1000))
        prev, prev_t = None, 0.0
        shown = 0
        while count is None or shown < count:
            try:
                stats = fetch(addr)
                now = time.monotonic()
                lines = render(stats, prev, now - prev_t, curses.COLS - 1)
                prev, prev_t = stats, now
            except (OSError, ValueError) as e:
                lines = [f"cannot read stats from {addr}: {e}"]
            screen.erase()
            for y, line in enumerate(lines[: curses.LINES - 1]):
                screen.addstr(y, 0, line, curses.A_REVERSE if line.startswith(" WID") else 0)
            screen.refresh()
            shown += 1
            if screen.getch() in (ord("q"), ord("Q")):
                break

    curses.wrapper(loop)
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="headrace top", description="live view of a headrace (or uWSGI) stats server"
    )
    p.add_argument(
        "address", help="the --stats address: host:port, /path.sock, @abstract, or http://..."
    )
    p.add_argument("--frequency", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument(
        "--count",
        type=int,
        default=None,
        help="snapshots to show, then exit (default: one when stdout is not a terminal, else until q)",
    )
    args = p.parse_args(argv)
    try:
        if sys.stdout.isatty():
            return live(args.address, args.frequency, args.count)
        return plain(args.address, args.count or 1, args.frequency)
    except (OSError, ValueError) as e:
        print(f"headrace top: cannot read stats from {args.address}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
