"""Master and workers: startup lines, the shared listen socket, processes and threads running
in parallel, --lazy-apps, --pidfile, --logto, the request log, app output, signals."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import (
    MASTER_LINE,
    WORKER_LINE,
    app,
    build_request,
    parse_request_lines,
    pid_alive,
    wait_until,
)


def get(path, **kw):
    return build_request("GET", path, **kw)


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[-1].split()[1])


def sleep_all(srv, n, secs):
    """n concurrent /sleep requests; returns the apps' JSON answers."""
    def one(i):
        r = srv.request(get(f"/sleep?s={secs}&tag=par{i}"), timeout=30)
        assert r.status == 200
        return json.loads(r.body)
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


# --- startup ------------------------------------------------------------------------------


def test_startup_lines(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "2", "--threads", "3",
                   "--master", probe=None, workers=2)
    log = srv.log()
    master = MASTER_LINE.search(log)
    assert master, log
    assert int(master.group(1)) == srv.proc.pid
    workers = WORKER_LINE.findall(log)
    assert sorted(int(w[0]) for w in workers) == [1, 2]
    assert {w[2] for w in workers} == {"3"}, "cores: must be the --threads count"
    for _, pid, _ in workers:
        assert ppid(int(pid)) == srv.proc.pid, "workers must be the master's children"


def listen_inodes(port: int) -> list[str]:
    inodes = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[1].split(":")[1], 16) == port and cols[3] == "0A":
                inodes.append(cols[9])
    return inodes


def test_workers_share_one_listen_socket(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "3", probe=None, workers=3)
    inodes = listen_inodes(srv.port)
    assert len(inodes) == 1, f"expected one listening socket on the port, found {inodes}"
    target = f"socket:[{inodes[0]}]"
    for pid in srv.worker_pids():
        fds = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                fds.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        assert target in fds, f"worker {pid} does not hold the listen socket"


@pytest.mark.slow
def test_processes_serve_in_parallel(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "3", workers=3)
    answers = sleep_all(srv, 3, 1.5)
    assert len({a["pid"] for a in answers}) == 3
    assert max(a["start"] for a in answers) < min(a["end"] for a in answers), (
        "the three requests did not run at the same time"
    )


@pytest.mark.slow
def test_threads_overlap_in_one_process(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "1", "--threads", "4")
    answers = sleep_all(srv, 4, 1.5)
    assert len({a["pid"] for a in answers}) == 1
    assert max(a["start"] for a in answers) < min(a["end"] for a in answers), (
        "four requests on --threads 4 did not overlap"
    )
    env = json.loads(srv.request(get("/environ")).body)
    assert env["wsgi.multithread"] is True
    assert "cores: 4" in srv.log()
    # uWSGI's "core" is the serving thread: four overlapping requests, four cores.
    lines = [m for m in srv.wait_request_lines(5) if "tag=par" in m["uri"]]
    assert sorted(m["core"] for m in lines) == ["0", "1", "2", "3"]


def test_idle_keepalive_connection_does_not_block_others(headrace):
    # One process, one thread: a client that keeps its connection open and idle must not
    # stop the next client from being served.
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "1", "--threads", "1")
    with srv.connect() as idle:
        idle.send(get("/pid"))
        assert idle.read_response().status == 200
        started = time.monotonic()
        r = srv.request(get("/list"), timeout=15)
        assert r.status == 200
        assert time.monotonic() - started < 5, "the idle keep-alive connection held the worker"
        # and the idle connection still works afterwards
        idle.send(get("/list"))
        assert idle.read_response().body == b"hello world"


def test_lazy_apps_loads_in_each_worker(headrace, record_dir):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "2", "--lazy-apps",
                   probe=None, workers=2)
    workers = set(srv.worker_pids())
    wait_until(lambda: len(list(record_dir.glob("import-*"))) >= 2, 10, "two imports")
    importers = {int(p.name.split("-")[1]) for p in record_dir.glob("import-*")}
    assert importers == workers, f"imported in {importers}, workers are {workers}"
    assert srv.proc.pid not in importers


def test_app_loaded_once_in_master_by_default(headrace, record_dir):
    headrace("--wsgi-file", app("basic.py"), "--processes", "2", probe=None, workers=2)
    srv_pid = headrace.servers[0].proc.pid
    importers = {int(p.name.split("-")[1]) for p in record_dir.glob("import-*")}
    assert importers == {srv_pid}


def test_pidfile(headrace, tmp_path):
    pidfile = tmp_path / "hr.pid"
    srv = headrace("--wsgi-file", app("basic.py"), "--pidfile", str(pidfile))
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the pidfile")
    assert int(pidfile.read_text().strip()) == srv.proc.pid


def test_logto(headrace, tmp_path):
    logto = tmp_path / "logto.log"
    # The spawn lines go to the --logto file, so readiness is the probe request alone.
    srv = headrace("--wsgi-file", app("basic.py"), "--logto", str(logto), workers=0)
    wait_until(lambda: logto.exists() and "spawned headrace worker" in logto.read_text(), 15,
               "spawn lines in the --logto file")
    r = srv.request(get("/print?msg=LOGTO-PRINT"))
    assert r.status == 200

    def lines():
        text = logto.read_text()
        return [m for m in parse_request_lines(text) if m["uri"] == "/print?msg=LOGTO-PRINT"]
    wait_until(lines, 10, "the request's line in the --logto file")
    assert "LOGTO-PRINT\n" in logto.read_text()


# --- the request log ----------------------------------------------------------------------


def test_request_log_line_fields(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "1", probe=None)
    before = time.time()
    with srv.connect() as c:
        c.send(get("/list?x=1") + get("/nope") + build_request("HEAD", "/list"))
        assert c.read_response().status == 200
        assert c.read_response().status == 404
        assert c.read_response("HEAD").status == 200
    assert srv.request(get("/raise")).status == 500
    lines = srv.wait_request_lines(4)
    first, nope, head, boom = lines[:4]
    worker = srv.worker_pids()[0]
    assert int(first["pid"]) == worker
    assert first["app"] == "0"
    assert (first["wreq"], first["treq"]) == ("1", "1")
    assert (nope["wreq"], nope["treq"]) == ("2", "2")
    assert first["addr"] == "127.0.0.1"
    assert first["method"] == "GET" and first["uri"] == "/list?x=1"
    assert first["size"] == "11"
    assert first["proto"] == "HTTP/1.1" and first["status"] == "200"
    assert int(first["nheaders"]) >= 1 and int(first["hbytes"]) > 0
    assert int(first["vars"]) > 10 and int(first["vbytes"]) > 100
    assert first["core"] == "0"
    when = time.mktime(time.strptime(first["date"], "%a %b %d %H:%M:%S %Y"))
    assert before - 2 <= when <= time.time() + 2
    assert nope["status"] == "404"
    assert head["method"] == "HEAD"
    assert boom["status"] == "500"


@pytest.mark.slow
def test_request_log_msecs_and_start_date(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), probe=None)
    r = srv.request(get("/sleep?s=2"))
    assert r.status == 200
    start = json.loads(r.body)["start"]
    line = srv.wait_request_lines(1)[0]
    assert 1950 <= int(line["msecs"]) < 6000
    # the date is when the request started, not when it ended
    when = time.mktime(time.strptime(line["date"], "%a %b %d %H:%M:%S %Y"))
    assert start - 1.5 <= when <= start + 0.5, (line["date"], start)


def test_stderr_output_reaches_the_log(headrace):
    srv = headrace("--wsgi-file", app("basic.py"))
    assert srv.request(get("/print?msg=STDERR-MARK-77&stderr=1")).status == 200
    srv.wait_log("STDERR-MARK-77")


@pytest.mark.slow
def test_request_counts_across_workers(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "2", probe=None, workers=2)
    sleep_all(srv, 6, 0.5)
    lines = srv.wait_request_lines(6)
    assert sorted(int(m["treq"]) for m in lines) == list(range(1, 7))
    per_pid = {}
    for m in lines:
        per_pid.setdefault(int(m["pid"]), []).append(int(m["wreq"]))
    assert set(per_pid) <= set(srv.worker_pids())
    for counts in per_pid.values():
        assert sorted(counts) == list(range(1, len(counts) + 1))


def test_app_output_appears_at_once(headrace):
    srv = headrace("--wsgi-file", app("basic.py"))
    done = threading.Event()

    def slow():
        srv.request(get("/sleep?s=3&tag=AT-ONCE"), timeout=20)
        done.set()
    t = threading.Thread(target=slow)
    t.start()
    try:
        srv.wait_log("AT-ONCE", timeout=10)
        assert not done.is_set(), "print only reached the log after the request ended"
    finally:
        t.join(20)


def test_app_output_in_order_with_request_lines(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "1", probe=None)
    for i in range(3):
        assert srv.request(get(f"/print?msg=ORDER-MARK-{i}")).status == 200
    srv.wait_request_lines(3)
    events = []
    for line in srv.log().splitlines():
        if line.startswith("ORDER-MARK-"):
            events.append(("print", line))
        elif line.startswith("[pid: ") and "/print?msg=ORDER-MARK-" in line:
            events.append(("req", line.split("msg=")[1].split()[0]))
    assert events == [
        ("print", "ORDER-MARK-0"), ("req", "ORDER-MARK-0"),
        ("print", "ORDER-MARK-1"), ("req", "ORDER-MARK-1"),
        ("print", "ORDER-MARK-2"), ("req", "ORDER-MARK-2"),
    ]


def test_disable_logging(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--disable-logging", probe=None)
    for i in range(2):
        assert srv.request(get(f"/print?msg=DL-MARK-{i}")).status == 200
    srv.wait_log("DL-MARK-1")
    assert srv.request(get("/pid")).status == 200
    assert srv.request_lines() == []
    assert "DL-MARK-0" in srv.log()


def test_killed_worker_is_respawned(headrace):
    # DESIGN.md: a worker that dies is logged and replaced; the others go on serving.
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "2", probe=None, workers=2)
    victim, other = srv.worker_pids()[:2]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(srv.worker_pids()) >= 3, 10, "a respawned worker")
    srv.remember_pids()
    new = srv.worker_pids()[2]
    assert new not in (victim, other)
    assert ppid(new) == srv.proc.pid
    # the death is logged with the pid: a line besides the spawn line names it
    assert sum(f"pid: {victim}" in line for line in srv.log().splitlines()) >= 2, srv.tail()
    pids = {int(srv.request(get("/pid")).body) for _ in range(10)}
    assert victim not in pids
    assert pids <= {other, new}


# --- signals ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_finishes_in_flight_request(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "2", workers=2)
    srv.remember_pids()
    result = {}

    def slow():
        try:
            r = srv.request(get("/sleep?s=2&tag=TERM-INFLIGHT"), timeout=20)
            result["status"], result["body"] = r.status, r.body
        except Exception as e:  # noqa: BLE001 - the assertion below reports it
            result["error"] = repr(e)
    t = threading.Thread(target=slow)
    t.start()
    srv.wait_log("TERM-INFLIGHT", timeout=10)
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    t.join(20)
    assert result.get("status") == 200, f"in-flight request during SIGTERM: {result}"
    code = srv.proc.wait(10)
    srv.stop()
    assert code == 0, f"exit code {code} after SIGTERM"
    assert time.monotonic() - started < 10
    assert srv.leftover_pids() == [], "workers left after the master exited"


@pytest.mark.parametrize("threads", ["1", "4"])
def test_sigterm_with_idle_keepalive_connection(headrace, threads):
    # An open idle keep-alive connection must not hold shutdown for the keep-alive timeout.
    srv = headrace("--wsgi-file", app("basic.py"), "--threads", threads)
    srv.remember_pids()
    with srv.connect() as idle, srv.connect() as half:
        idle.send(get("/pid"))
        assert idle.read_response().status == 200
        half.send(b"GET /pid HTTP/1.1\r\nHost: x")  # a head that never completes
        time.sleep(0.1)
        started = time.monotonic()
        code = srv.stop(signal.SIGTERM)
        assert code == 0, f"exit code {code} (None: still running 5 s after SIGTERM)"
        assert time.monotonic() - started < 5
        assert idle.closed_by_peer(2)
    assert srv.leftover_pids() == []


def test_sigterm_idle_exits_0(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "3", workers=3)
    srv.remember_pids()
    workers = srv.worker_pids()
    assert len(workers) == 3
    code = srv.stop(signal.SIGTERM)
    assert code == 0
    assert srv.leftover_pids() == []
    assert not any(pid_alive(p) for p in workers)


def test_sigint_stops_everything(headrace):
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "2", workers=2)
    srv.remember_pids()
    code = srv.stop(signal.SIGINT)
    assert code is not None, "SIGINT did not stop headrace within 5 s"
    assert srv.leftover_pids() == []


def test_port_closed_after_stop(headrace):
    srv = headrace("--wsgi-file", app("basic.py"))
    assert srv.stop() == 0
    with pytest.raises(OSError):
        srv.connect(timeout=2).close()
