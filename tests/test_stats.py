"""The stats server (`--stats`, uWSGI's JSON), Prometheus metrics (`/metrics`, `--metrics`) and
`headrace top`, on each front; checked against the real uwsgitop and the real uWSGI 2.0.30
(pyuwsgi), and against a stats client that never reads."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import REPO, app, build_request, free_port, headrace_cmd, wait_until

APP = app("stats_app.py")
FRONTS = ["direct", "router", "uwsgi"]
VENV_BIN = Path(sys.executable).parent


# --- talking to the servers ----------------------------------------------------------------


def uwsgi_get(path: str) -> bytes:
    uri = path.encode()
    p, _, qs = uri.partition(b"?")
    pairs = [
        (b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", uri), (b"PATH_INFO", p),
        (b"QUERY_STRING", qs), (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"SERVER_NAME", b"x"),
        (b"SERVER_PORT", b"80"), (b"REMOTE_ADDR", b"127.0.0.1"), (b"HTTP_HOST", b"x"),
    ]
    data = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    return struct.pack("<BHB", 0, len(data), 0) + data


def ask(port: int, front: str, path: str, timeout: float = 30.0) -> int:
    """One request on a new connection; returns the status."""
    raw = uwsgi_get(path) if front == "uwsgi" else build_request(
        "GET", path, headers=[("Connection", "close")])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def in_background(port: int, front: str, path: str) -> threading.Thread:
    """A request in a thread; its answer (or the error, e.g. the harakiri'd worker's empty
    reply) is not the test's business."""

    def run():
        try:
            ask(port, front, path)
        except (OSError, IndexError, ValueError):
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def raw_stats(addr) -> bytes:
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(addr)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def stats(addr) -> dict:
    return json.loads(raw_stats(addr))


def http_get(port: int, path: str) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def metrics(port: int, path: str = "/metrics") -> dict[str, float]:
    """Every sample as `name{labels}` -> value, parsed by prometheus_client."""
    head, body = http_get(port, path)
    assert head.startswith(b"HTTP/1.0 200 OK\r\n"), head
    assert b"Content-Type: text/plain; version=0.0.4" in head, head
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def start(headrace, front: str, *args: str, processes: int = 2, threads: int = 1):
    port = free_port()
    front_opt = {"direct": "--http-socket", "router": "--http", "uwsgi": "--socket"}[front]
    srv = headrace(front_opt, f"127.0.0.1:{port}", "--wsgi-file", APP, "--master",
                   "--processes", str(processes), "--threads", str(threads), *args,
                   port=port, probe=None, workers=processes, bind=False)
    srv.port = port
    return srv


def served(addr) -> int:
    return sum(w["requests"] for w in stats(addr)["workers"])


# --- the JSON and the metrics, on each front ------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
def test_stats_and_metrics_count_exactly_what_was_served(headrace, front):
    sport, mport = free_port(), free_port()
    srv = start(headrace, front, "--stats", f"127.0.0.1:{sport}", "--metrics",
                f"127.0.0.1:{mport}")
    addr = ("127.0.0.1", sport)
    wait_until(lambda: all(w["accepting"] for w in stats(addr)["workers"]), 10,
               "both workers accepting")
    assert served(addr) == 0
    statuses = [ask(srv.port, front, p) for p in
                ["/"] * 5 + ["/status?code=404"] * 2 + ["/status?code=302", "/raise"]]
    assert statuses == [200] * 5 + [404, 404, 302, 500]
    wait_until(lambda: served(addr) == 9, 10, "9 requests in the stats")
    doc = stats(addr)
    assert doc["pid"] == srv.proc.pid
    assert [w["id"] for w in doc["workers"]] == [1, 2]
    assert sum(w["exceptions"] for w in doc["workers"]) == 1
    assert sum(w["delta_requests"] for w in doc["workers"]) == 9
    assert sum(c["requests"] for w in doc["workers"] for c in w["cores"]) == 9
    assert all(w["tx"] > 0 for w in doc["workers"] if w["requests"])
    assert all(w["rss"] > 0 and w["status"] == "idle" for w in doc["workers"])
    assert all(w["respawn_count"] == 1 for w in doc["workers"])
    assert doc["headrace"]["queue"]["source"] == ("router" if front == "router" else "listen")
    assert doc["headrace"]["running"] == []
    m = metrics(mport, "/anything")  # the dedicated listener serves metrics on any path
    assert m['headrace_requests_total{code="2xx"}'] == 5
    assert m['headrace_requests_total{code="3xx"}'] == 1
    assert m['headrace_requests_total{code="4xx"}'] == 2
    assert m['headrace_requests_total{code="5xx"}'] == 1
    assert m["headrace_exceptions_total"] == 1
    assert m["headrace_request_duration_seconds_count"] == 9
    assert m['headrace_request_duration_seconds_bucket{le="+Inf"}'] == 9
    assert m["headrace_request_duration_seconds_sum"] > 0
    assert m['headrace_workers{state="idle"}'] == 2
    assert m["headrace_queue_depth"] == 0
    assert m['headrace_worker_resident_memory_bytes{worker="1"}'] > 0
    if front == "router":
        assert m["headrace_queue_wait_seconds_count"] == 9
    # Live: one more request, exactly one more.
    assert ask(srv.port, front, "/") == 200
    wait_until(lambda: served(addr) == 10, 10, "the 10th request in the stats")
    assert metrics(mport)['headrace_requests_total{code="2xx"}'] == 6


def test_stats_http_minified_and_unix(headrace, tmp_path):
    sport = free_port()
    srv = start(headrace, "direct", "--stats", f"127.0.0.1:{sport}", "--stats-http",
                "--stats-minified")
    assert ask(srv.port, "direct", "/") == 200
    head, body = http_get(sport, "/")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and b"application/json" in head, head
    assert b"\n" not in body and b"\t" not in body, body[:200]
    wait_until(lambda: sum(w["requests"] for w in json.loads(http_get(sport, "/")[1])
                           ["workers"]) == 1, 10, "one request over --stats-http")
    m = metrics(sport)
    assert m['headrace_requests_total{code="2xx"}'] == 1
    # A unix path, pretty (uWSGI's tabs and newlines).
    path = str(tmp_path / "stats.sock")
    start(headrace, "direct", "--stats-server", path, processes=1)
    text = raw_stats(path).decode()
    assert text.startswith('{\n\t"version":"') and text.endswith("}\n"), text[:80]
    assert len(json.loads(text)["workers"]) == 1


# --- the same keys as uWSGI 2.0.30 ----------------------------------------------------------


def state(item):
    return (item.get("status"), item.get("in_request")) if isinstance(item, dict) else None


def compare(ours, theirs, path="$") -> list[str]:
    if isinstance(theirs, dict):
        if not isinstance(ours, dict):
            return [f"{path}: {ours!r} is not an object"]
        out = []
        missing = set(theirs) - set(ours)
        extra = set(ours) - set(theirs) - ({"headrace"} if path == "$" else set())
        if missing or extra:
            out.append(f"{path}: missing {sorted(missing)}, extra {sorted(extra)}")
        for k in set(theirs) & set(ours):
            out += compare(ours[k], theirs[k], f"{path}.{k}")
        return out
    if isinstance(theirs, list):
        if not isinstance(ours, list):
            return [f"{path}: {ours!r} is not a list"]
        # Items are compared with the other side's items in the same state (a busy core has
        # req_info.request_start, an idle one not); uWSGI lists locks headrace has none of.
        out = []
        for i, o in enumerate(ours):
            for t in theirs:
                if state(o) == state(t):
                    out += compare(o, t, f"{path}[{i}]")
        return out
    same = type(ours) is type(theirs)
    return [] if same else [f"{path}: {ours!r} is not a {type(theirs).__name__} like {theirs!r}"]


def uwsgi_binary() -> str:
    exe = shutil.which("uwsgi", path=str(VENV_BIN)) or shutil.which("uwsgi")
    if exe is None:
        pytest.fail("pyuwsgi's uwsgi is not installed (./dev setup installs pyuwsgi)")
    return exe


def test_json_has_uwsgi_2_0_30_keys_and_types(headrace, tmp_path):
    uport, ustats = free_port(), free_port()
    log = open(tmp_path / "uwsgi.log", "wb")  # noqa: SIM115 - closed below
    uw = subprocess.Popen(
        [uwsgi_binary(), "--http-socket", f"127.0.0.1:{uport}", "--wsgi-file", APP,
         "--master", "--processes", "2", "--threads", "2", "--stats", f"127.0.0.1:{ustats}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO))
    try:
        hstats = free_port()
        srv = start(headrace, "direct", "--stats", f"127.0.0.1:{hstats}", threads=2)

        def fetch_both():
            try:
                return stats(("127.0.0.1", ustats)), stats(("127.0.0.1", hstats))
            except (OSError, ValueError):
                return None

        wait_until(fetch_both, 15, "both stats servers")
        theirs_v = stats(("127.0.0.1", ustats))["version"]
        assert theirs_v.startswith("2.0.30"), theirs_v
        for port in (uport, srv.port):
            assert ask(port, "direct", "/") == 200
        # Idle, then with a request running on each (vars and req_info filled in).
        snaps = [fetch_both()]
        sleepers = [in_background(p, "direct", "/sleep?s=3") for p in (uport, srv.port)]

        def both_busy():
            pair = fetch_both()
            busy = pair and all(any(c["in_request"] for w in d["workers"] for c in w["cores"])
                                for d in pair)
            return pair if busy else None

        snaps.append(wait_until(both_busy, 10, "a request running on both"))
        for theirs, ours in snaps:
            problems = compare(ours, theirs)
            assert not problems, "\n".join(problems)
        busy = [c for w in snaps[1][1]["workers"] for c in w["cores"] if c["in_request"]]
        assert busy[0]["vars"][:2] == ["REQUEST_METHOD=GET", "REQUEST_URI=/sleep?s=3"]
        for t in sleepers:
            t.join(10)
    finally:
        uw.send_signal(signal.SIGINT)
        try:
            uw.wait(10)
        except subprocess.TimeoutExpired:
            uw.kill()
            uw.wait(5)
        log.close()


# --- uwsgitop and headrace top ---------------------------------------------------------------


def run_in_pty(argv: list[str], until: re.Pattern, timeout: float = 20.0) -> tuple[str, int]:
    """Run `argv` on a pseudo-terminal until its screen matches `until`, then press q.
    Returns (everything it drew, exit code)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes argv
        os.environ["TERM"] = "xterm"
        os.environ["COLUMNS"], os.environ["LINES"] = "160", "40"
        os.execv(argv[0], argv)
    screen = b""
    deadline = time.monotonic() + timeout
    pressed = False
    code = None
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break  # the child closed the terminal
                if not chunk:
                    break
                screen += chunk
            if not pressed and until.search(screen.decode("utf-8", "replace")):
                os.write(fd, b"q")
                pressed = True
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
    finally:
        # The terminal closes a moment before the process is reaped: wait for it, bounded.
        end = time.monotonic() + 5
        while code is None and time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.02)
        if code is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return screen.decode("utf-8", "replace"), code


@pytest.mark.parametrize("front", ["direct", "router"])
def test_uwsgitop_shows_the_live_request_count(headrace, front):
    sport = free_port()
    srv = start(headrace, front, "--stats", f"127.0.0.1:{sport}")
    for _ in range(7):
        assert ask(srv.port, front, "/") == 200
    wait_until(lambda: served(("127.0.0.1", sport)) == 7, 10, "7 requests in the stats")
    exe = shutil.which("uwsgitop", path=str(VENV_BIN)) or shutil.which("uwsgitop")
    assert exe, "uwsgitop is not installed (./dev setup installs it)"
    screen, code = run_in_pty([exe, f"127.0.0.1:{sport}"], re.compile(r"req: 7 "))
    assert "Traceback" not in screen, screen
    assert re.search(r"uwsgi-0\.\d+\.\d+ - .* - req: 7 - RPS: \d+ - lq: 0 - tx: ", screen), screen
    assert code == 0, screen


def headrace_top(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(headrace_cmd() + ["top", *args], capture_output=True, text=True,
                          timeout=30, check=False, stdin=subprocess.DEVNULL)


def test_headrace_top_plain_shows_queue_and_running_requests(headrace):
    sport = free_port()
    srv = start(headrace, "router", "--stats", f"127.0.0.1:{sport}", "--max-queue", "2",
                processes=1)
    addr = ("127.0.0.1", sport)
    assert ask(srv.port, "router", "/") == 200
    wait_until(lambda: served(addr) == 1, 10, "the first request in the stats")
    # One request runs, two wait in the router's queue, a fourth is shed (503).
    slow = [in_background(srv.port, "router", "/sleep?s=4")]
    wait_until(lambda: stats(addr)["headrace"]["running"], 10, "the slow request running")
    slow += [in_background(srv.port, "router", "/") for _ in range(2)]
    wait_until(lambda: stats(addr)["headrace"]["queue"]["depth"] == 2, 10, "2 queued")
    assert ask(srv.port, "router", "/") == 503
    out = headrace_top(f"127.0.0.1:{sport}")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "\x1b" not in text, "plain mode draws no terminal codes"
    assert re.search(r"req: 1 - RPS: - ", text), text
    assert re.search(r"queue \(router\): 2 waiting - oldest: \d+\.\ds - shed \(503\): 1", text), text
    assert re.search(r"   1:0 +\d+ +\d+\.\ds  GET /sleep\?s=4", text), text
    assert "running requests: 1" in text, text
    doc = stats(addr)
    assert doc["headrace"]["queue"]["shed"] == 1
    for t in slow:
        t.join(20)
    wait_until(lambda: served(addr) == 4, 10, "every queued request served")
    out = headrace_top(f"127.0.0.1:{sport}", "--count", "2", "--frequency", "0.2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("req: 4 - RPS: ") == 2, out.stdout
    assert "queue (router): 0 waiting" in out.stdout


def test_headrace_top_on_a_terminal(headrace):
    sport = free_port()
    srv = start(headrace, "direct", "--stats", f"127.0.0.1:{sport}", processes=1)
    for _ in range(3):
        assert ask(srv.port, "direct", "/") == 200
    wait_until(lambda: served(("127.0.0.1", sport)) == 3, 10, "3 requests in the stats")
    exe = shutil.which("headrace", path=str(VENV_BIN)) or shutil.which("headrace")
    screen, code = run_in_pty([exe, "top", f"127.0.0.1:{sport}"], re.compile(r"req: 3 "))
    assert "Traceback" not in screen, screen
    assert re.search(r"req: 3 - RPS: ", screen), screen
    assert code == 0, screen


# --- a stuck stats client does not stall the master ------------------------------------------


def test_stuck_stats_clients_do_not_stall_supervision(headrace):
    sport, mport = free_port(), free_port()
    # 2 x 100 cores: a JSON far larger than a tiny receive window takes.
    srv = start(headrace, "direct", "--stats", f"127.0.0.1:{sport}", "--metrics",
                f"127.0.0.1:{mport}", "--harakiri", "2", threads=100)
    stuck = []
    try:
        # Clients that connect to the HTTP listener and never send a request...
        for _ in range(3):
            stuck.append(socket.create_connection(("127.0.0.1", mport)))
        # ...and clients of the raw JSON that never read it.
        for _ in range(3):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.connect(("127.0.0.1", sport))
            stuck.append(s)
        t0 = time.monotonic()
        # Meanwhile the stats answer others at once, and harakiri fires on time.
        assert len(stats(("127.0.0.1", sport))["workers"]) == 2
        assert time.monotonic() - t0 < 2, "a stats read waited behind the stuck clients"
        slow = in_background(srv.port, "direct", "/sleep?s=30")
        srv.wait_log("HARAKIRI: worker", timeout=10)
        took = time.monotonic() - t0
        assert took < 5, f"harakiri after {took:.1f} s with a 2 s limit"
        srv.wait_log("stats: dropped", timeout=10)
        slow.join(10)
        wait_until(lambda: "Respawned headrace worker" in srv.log(), 10, "the respawn")
        doc = stats(("127.0.0.1", sport))
        assert sum(w["harakiri_count"] for w in doc["workers"]) == 1
        assert max(w["respawn_count"] for w in doc["workers"]) == 2
        assert metrics(mport)["headrace_harakiri_total"] == 1
        assert metrics(mport)["headrace_worker_respawns_total"] == 1
    finally:
        for s in stuck:
            s.close()
