"""uWSGI signals, timers, cron, touch-signal and file monitors, end to end through the real
binary with tests/apps/signal_app.py (an app written for uWSGI: `import uwsgi`,
`uwsgidecorators`).

Every handler the app runs appends ``TAG SIGNUM ROLE ID PID`` to $HR_RECORD/signals.log, so
each test counts who ran what. Mule and spooler targets are covered by the Rust tests of
`offload::signals::route` (mules and spoolers are other parts of the server).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests
from support import APPS, REPO, free_port, run_headrace, wait_until

APP = str(APPS / "signal_app.py")
MODES = {"preloaded": [], "lazy": ["--lazy-apps"]}


def records(srv) -> list[tuple[str, int, str, int, int]]:
    path = srv.record / "signals.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        tag, sig, role, wid, pid = line.split()
        out.append((tag, int(sig), role, int(wid), int(pid)))
    return out


def tagged(srv, tag: str) -> list[tuple[str, int, str, int, int]]:
    return [r for r in records(srv) if r[0] == tag]


def wait_tagged(srv, tag: str, count: int, timeout: float = 10.0):
    wait_until(
        lambda: len(tagged(srv, tag)) >= count,
        timeout,
        f"{count} x {tag} in the record; log:\n{srv.tail()}",
    )
    return tagged(srv, tag)


def get(srv, path: str) -> str:
    r = requests.get(srv.url(path), timeout=10)
    assert r.status_code == 200, (path, r.text, srv.tail())
    return r.text


def start(headrace, *args, env=None, processes=2, threads=1):
    return headrace(
        "--wsgi-file",
        APP,
        "--master",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        *args,
        env=env or {},
        probe=None,
        workers=processes,
    )


def ready(srv, processes=2):
    """Every worker's signal thread runs once its app is loaded: wait for the lines."""
    wait_until(lambda: srv.log().count("WSGI app 0") >= 1, 10, "the app")
    wait_until(lambda: get(srv, "/worker").startswith("worker"), 10, "an answer")


# --- uwsgi.register_signal / uwsgi.signal and the targets ----------------------------------


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("mode", list(MODES))
def test_targets(headrace, mode, threads):
    srv = start(headrace, *MODES[mode], threads=threads)
    ready(srv)
    if mode == "lazy":
        # Each worker registers in its own row of the table.
        srv.wait_log("[uwsgi-signal] signum 11 registered (wid: 2", timeout=10)
        srv.wait_log("[uwsgi-signal] signum 11 registered (wid: 1", timeout=10)
    else:
        assert (
            "[uwsgi-signal] signum 10 registered (wid: 0 modifier1: 0 target: default, any worker)"
            in srv.log()
        )
    pids = {r: p for r, p in enumerate(srv.worker_pids(), start=1)}
    for n in (10, 11, 12, 13, 20):
        assert get(srv, f"/raise?n={n}") == "ok"
    wait_tagged(srv, "h11", 2)
    wait_tagged(srv, "h13", 2)
    wait_tagged(srv, "h10", 1)
    wait_tagged(srv, "h12", 1)
    wait_tagged(srv, "deco", 1)
    time.sleep(0.5)  # nothing more may come
    assert len(tagged(srv, "h10")) == 1  # one worker, the first to take it
    assert sorted(r[3] for r in tagged(srv, "h11")) == [1, 2]  # every worker
    assert [r[3] for r in tagged(srv, "h12")] == [2]  # worker2 only
    assert sorted(r[3] for r in tagged(srv, "h13")) == [1, 2]  # the active ones
    assert len(tagged(srv, "deco")) == 1
    for tag, sig, role, wid, pid in records(srv):
        assert role == "worker" and pids[wid] == pid, (tag, sig, role, wid, pid)


@pytest.mark.parametrize("mode", list(MODES))
def test_failing_and_unregistered_handlers_are_logged_and_the_worker_lives(headrace, mode):
    srv = start(headrace, *MODES[mode])
    ready(srv)
    before = srv.worker_pids()
    get(srv, "/raise?n=14")
    srv.wait_log("RuntimeError: handler of 14 is broken")
    srv.wait_log("error managing signal 14 on worker")
    get(srv, "/raise?n=99")
    srv.wait_log("error managing signal 99 on worker")
    for _ in range(4):
        get(srv, "/raise?n=11")
    wait_tagged(srv, "h11", 8)
    assert srv.worker_pids() == before  # nobody died or was respawned
    assert "DAMN" not in srv.log()


def test_a_burst_of_signals_is_all_delivered(headrace):
    srv = start(headrace)
    ready(srv)
    get(srv, "/burst?n=10&k=200")
    get(srv, "/burst?n=11&k=50")
    wait_tagged(srv, "h10", 200)
    wait_tagged(srv, "h11", 100)
    time.sleep(0.3)
    assert len(tagged(srv, "h10")) == 200
    assert "SIGNAL QUEUE IS FULL" not in srv.log()
    assert "could not deliver" not in srv.log()


def test_a_burst_to_a_slow_handler_is_queued_not_dropped(headrace):
    srv = start(headrace, processes=1, env={"HR_SIG_SLOW": "0.02"})
    ready(srv, 1)
    get(srv, "/burst?n=15&k=60")
    wait_tagged(srv, "slowdone", 60, 20)
    assert "SIGNAL QUEUE IS FULL" not in srv.log()


@pytest.mark.parametrize("mode", list(MODES))
def test_registered_and_get_free_signal(headrace, mode):
    srv = start(headrace, *MODES[mode])
    ready(srv)
    assert get(srv, "/registered?n=10") == "True"
    assert get(srv, "/registered?n=20") == "True"  # @signal(20)
    assert get(srv, "/registered?n=99") == "None"  # uWSGI returns None, not False
    assert get(srv, "/free") == "0"  # uwsgidecorators' scan: 0 is the first free


def test_registered_after_fork_goes_to_the_registering_worker(headrace):
    srv = start(headrace)
    ready(srv)
    who = get(srv, "/register?n=60&target=")
    assert who == "ok"
    line = srv.wait_log("[uwsgi-signal] signum 60 registered (wid: ")
    wid = int(re.search(r"signum 60 registered \(wid: (\d)", line).group(1))
    assert wid in (1, 2)
    for _ in range(4):
        get(srv, "/raise?n=60")
    got = wait_tagged(srv, "late", 4)
    assert {r[3] for r in got} == {wid}, got
    assert "error managing signal 60" not in srv.log()


def test_bad_calls_raise(headrace):
    srv = start(headrace, processes=1)
    ready(srv, 1)
    # signal(256), signal(-1), unknown target, 64-byte target, add_timer(n, 0), a monitor of
    # a missing path, a cron minute of 61.
    assert get(srv, "/bad") == " ".join(["ValueError"] * 7)
    srv.wait_log('[uwsgi-signal] unsupported signal target: "nobody"')


def test_signal_wait(headrace):
    srv = start(headrace, processes=1, threads=2)
    ready(srv, 1)
    got = {}

    def wait():
        got["any"] = requests.get(srv.url("/wait?n=11"), timeout=20).text

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.5)
    get(srv, "/raise?n=10")  # not the one it waits for
    time.sleep(0.3)
    assert t.is_alive()
    get(srv, "/raise?n=11")
    t.join(10)
    assert got["any"] == "'' 11"
    assert len(tagged(srv, "h11")) == 1  # the handler ran too


# --- raising through every front ------------------------------------------------------------


def test_raise_through_the_router(headrace):
    port = free_port()
    srv = headrace(
        "--http",
        f"127.0.0.1:{port}",
        "--wsgi-file",
        APP,
        "--master",
        "--processes",
        "2",
        port=port,
        probe=None,
        workers=2,
        bind=False,
    )
    wait_until(
        lambda: requests.get(srv.url("/worker"), timeout=5).status_code == 200, 10, "the router"
    )
    get(srv, "/raise?n=11")
    got = wait_tagged(srv, "h11", 2)
    assert sorted(r[3] for r in got) == [1, 2]


def test_raise_through_nginx(headrace):
    from test_nginx import Stack, nginx_binary

    if nginx_binary() is None:
        pytest.skip("nginx is not installed")
    st = Stack(headrace, "signal_app.py", 2)
    try:
        st.start_nginx()
        for kind in ("unix", "tcp"):
            r = requests.get(st.url(kind, "/raise?n=11"), timeout=10)
            assert r.status_code == 200 and r.text == "ok", st.nginx_log()
        got = wait_tagged(st.hr, "h11", 4)
        assert sorted(r[3] for r in got) == [1, 1, 2, 2]
    finally:
        st.stop()


# --- timers ---------------------------------------------------------------------------------


def intervals(rows) -> list[float]:
    return [b - a for a, b in zip(rows, rows[1:])]


def assert_period(t: list[float], period: float = 1.0) -> None:
    """Once per period: on average (a busy machine may delay one run, the next keeps the
    cadence), and never two at once (a doubled timer)."""
    d = intervals(t)
    mean = (t[-1] - t[0]) / len(d)
    assert 0.85 * period < mean < 1.2 * period, d
    assert all(0.3 * period < x < 1.8 * period for x in d), d


def stamps(srv, tag: str, count: int, timeout: float) -> list[float]:
    """Monotonic times at which the record gained each of `count` more `tag` lines."""
    out = []
    seen = len(tagged(srv, tag))
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        n = len(tagged(srv, tag))
        out.extend([time.monotonic()] * (n - seen))
        seen = n
        time.sleep(0.02)
    assert len(out) >= count, f"{len(out)} x {tag}; log:\n{srv.tail()}"
    return out


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("mode", list(MODES))
def test_timer_decorator_fires_once_per_period(headrace, mode, threads):
    srv = start(headrace, *MODES[mode], threads=threads, env={"HR_SIG_TIMER": "1"})
    ready(srv)
    # From the first run on (stamps sees each line as it comes: no need to wait one out first).
    t = stamps(srv, "timer", 4, 8)
    # One timer, not one per worker (--lazy-apps: each worker's app adds it again).
    assert_period(t)
    assert all(r[1] == 0 for r in tagged(srv, "timer"))  # get_free_signal() gave 0


def test_ms_timer(headrace):
    srv = start(headrace, processes=1, env={"HR_SIG_MSTIMER": "200", "HR_SIG_MSTIMERDECO": "500"})
    ready(srv, 1)
    wait_tagged(srv, "mstimer", 1)
    wait_tagged(srv, "msdeco", 1)
    n0, d0 = len(tagged(srv, "mstimer")), len(tagged(srv, "msdeco"))
    time.sleep(2)
    n = len(tagged(srv, "mstimer")) - n0
    d = len(tagged(srv, "msdeco")) - d0
    assert 6 <= n <= 12, n  # uwsgi.add_ms_timer(30, 200)
    assert 2 <= d <= 5, d  # @mstimer(500)


@pytest.mark.parametrize("mode", list(MODES))
def test_rb_timer_stops_after_its_iterations(headrace, mode):
    # Two iterations (not more: each costs a second of the test); a third would come one
    # period after the second, so 1.5 periods of silence show it stopped.
    srv = start(headrace, *MODES[mode], env={"HR_SIG_RB": "1 2", "HR_SIG_RBDECO": "1"})
    ready(srv)
    wait_tagged(srv, "rb", 2, 8)
    time.sleep(1.5)
    assert len(tagged(srv, "rb")) == 2
    wait_tagged(srv, "rbdeco", 4, 8)  # @rbtimer runs forever: past the 2 of the other


def test_timer_options(headrace):
    srv = start(headrace, "--timer", "10 1", "--rbtimer", "11 1")
    ready(srv)
    wait_tagged(srv, "h10", 3, 6)
    got = wait_tagged(srv, "h11", 4, 6)  # "workers": both, each second
    assert {r[3] for r in got} == {1, 2}


@pytest.mark.parametrize("mode", list(MODES))
def test_add_timer_after_fork(headrace, mode):
    srv = start(headrace, *MODES[mode])
    ready(srv)
    # Twice: the second is the same source, and is not run twice.
    get(srv, "/add_timer?n=13&s=1")
    get(srv, "/add_timer?n=13&s=1")
    # The rb timer runs alongside (another signal): its 2 iterations end first, and the
    # 3 periods of h13 counted after them are the silence that shows it stopped.
    get(srv, "/add_rb_timer?n=12&s=1&i=2")
    wait_tagged(srv, "h12", 2, 5)
    wait_tagged(srv, "h13", 2)
    t = stamps(srv, "h13", 6, 6)  # 2 workers x 3 periods
    assert t[-1] - t[0] > 1.5
    assert len(tagged(srv, "h12")) == 2


# --- cron -----------------------------------------------------------------------------------


def this_minute() -> time.struct_time:
    """Local time, away from the end of a minute (so "this minute" stays so for 15 s)."""
    now = time.localtime()
    if now.tm_sec > 44:
        time.sleep(61 - now.tm_sec)
        now = time.localtime()
    return now


def test_cron_signal_of_this_minute_fires_once(headrace):
    now = this_minute()
    srv = start(headrace, env={"HR_SIG_CRON": f"{now.tm_min} {now.tm_hour}"})
    ready(srv)
    wait_tagged(srv, "cron", 1, 5)
    wait_tagged(srv, "addcron", 1, 5)
    time.sleep(2.5)
    assert len(tagged(srv, "cron")) == 1
    assert len(tagged(srv, "addcron")) == 1
    assert "[uwsgi-cron] routing signal" in srv.log()


def test_cron_command_runs_and_is_logged(headrace, tmp_path):
    now = this_minute()
    out = tmp_path / "cron.out"
    cmd = f"echo ran >> {out}"
    srv = start(
        headrace,
        "--cron",
        f"{now.tm_min} -1 -1 -1 -1 {cmd}",
        "--cron2",
        f"minute={now.tm_min},hour={now.tm_hour} echo two >> {out}",
    )
    ready(srv)
    wait_until(lambda: out.exists() and len(out.read_text().split()) == 2, 5, "the commands")
    srv.wait_log(f'[uwsgi-cron] running "{cmd}" (pid ')
    srv.wait_log(f'[uwsgi-cron] command "{cmd}" running with pid ')
    time.sleep(2)
    assert sorted(out.read_text().split()) == ["ran", "two"]


def test_cron_harakiri_kills_the_command(headrace, tmp_path):
    # Every minute (so it runs at once): the minute's matching is the test above; waiting for
    # a minute away from its end cost up to 16 s here.
    cmd = "sleep 30; echo late"
    srv = start(headrace, "--cron", f"-1 -1 -1 -1 -1 {cmd}", "--cron-harakiri", "1")
    ready(srv)
    srv.wait_log(f'*** HARAKIRI ON CRON "{cmd}" (pid: ', timeout=6)
    srv.wait_log("killed by signal 9", timeout=5)


def test_unique_cron_runs_while_no_run_lives(headrace, tmp_path):
    # One run within the minute, as --cron; the no-overlap rule across minutes is in the Rust
    # tests of master::timers (waiting for two minutes is too slow here).
    out = tmp_path / "u.out"
    srv = start(headrace, "--unique-cron", f"-1 -1 -1 -1 -1 echo u >> {out}; sleep 3")
    ready(srv)
    wait_until(lambda: out.exists(), 5, "the unique cron")
    time.sleep(2)
    assert out.read_text() == "u\n"


# --- touch-signal and file monitors ---------------------------------------------------------


def test_touch_signal(headrace, tmp_path):
    f = tmp_path / "touch.me"
    f.write_text("x")
    srv = start(headrace, "--touch-signal", f"{f} 40", env={"HR_SIG_TOUCH": "1"})
    ready(srv)
    time.sleep(1.2)
    assert tagged(srv, "touch") == []
    future = time.time() + 5
    os.utime(f, (future, future))
    got = wait_tagged(srv, "touch", 2, 5)
    assert {r[3] for r in got} == {1, 2}
    srv.wait_log("[uwsgi-touch-signal] raising 40")


@pytest.mark.parametrize("mode", list(MODES))
def test_file_monitor(headrace, tmp_path, mode):
    d = tmp_path / "watched"
    d.mkdir()
    srv = start(headrace, *MODES[mode], env={"HR_SIG_FILEMON": str(d)})
    ready(srv)
    srv.wait_log(f"[uwsgi-fmon] monitoring {d}")
    time.sleep(0.3)
    assert tagged(srv, "filemon") == []
    (d / "new").write_text("hello")
    wait_tagged(srv, "filemon", 1, 5)
    # A monitor added after fork, on a file.
    f = tmp_path / "file"
    f.write_text("a")
    get(srv, f"/add_file_monitor?n=10&path={f}")
    srv.wait_log(f"[uwsgi-fmon] monitoring {f}")
    f.write_text("b")
    wait_tagged(srv, "h10", 1, 5)


# --- bad option values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [
        ("--timer", "x 1"),
        ("--timer", "5"),
        ("--timer", "5 0"),
        ("--rbtimer", "300 1"),
        ("--cron", "1 2 3 cmd"),
        ("--cron", "61 -1 -1 -1 -1 cmd"),
        ("--unique-cron", "-1 -1 -1 -1 -1"),
        ("--cron2", "second=1 ls"),
        ("--cron2", "minute=1"),
        ("--touch-signal", "/tmp/file"),
        ("--touch-signal", "/tmp/file 256"),
    ],
)
def test_bad_values_exit_2(option, value):
    p = run_headrace(
        ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", APP, "--master", option, value]
    )
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = (p.stdout + p.stderr).strip().splitlines()
    assert len(lines) == 1 and f"invalid {option[2:]} " in lines[0], lines


# --- uWSGI itself, as the reference ---------------------------------------------------------


def test_pyuwsgi_runs_the_same_timer_app(tmp_path):
    exe = shutil.which("uwsgi", path=str(REPO / ".venv" / "bin")) or shutil.which("uwsgi")
    if exe is None:
        pytest.fail("pyuwsgi's uwsgi is not installed (./dev setup installs pyuwsgi)")
    rec = tmp_path / "rec"
    rec.mkdir()
    port = free_port()
    log = open(tmp_path / "uwsgi.log", "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "HR_RECORD": str(rec), "HR_SIG_TIMER": "1"}
    uw = subprocess.Popen(
        [
            exe,
            "--http-socket",
            f"127.0.0.1:{port}",
            "--wsgi-file",
            APP,
            "--master",
            "--processes",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        path = rec / "signals.log"

        def timer_lines():
            return (
                [ln for ln in path.read_text().splitlines() if ln.startswith("timer ")]
                if path.exists()
                else []
            )

        wait_until(
            lambda: len(timer_lines()) >= 3,
            10,
            "uWSGI's timer: " + (tmp_path / "uwsgi.log").read_text(errors="replace"),
        )
        wait_until(
            lambda: (
                requests.get(f"http://127.0.0.1:{port}/raise?n=11", timeout=5).status_code == 200
            ),
            10,
            "uWSGI answers",
        )
        wait_until(
            lambda: sum(ln.startswith("h11 ") for ln in path.read_text().splitlines()) >= 2,
            10,
            "uWSGI's 'workers' target",
        )
        # The same shape of record as headrace's: TAG SIGNUM worker ID PID.
        assert all(re.fullmatch(r"timer 0 worker [12] \d+", ln) for ln in timer_lines())
    finally:
        uw.terminate()
        try:
            uw.wait(10)
        except subprocess.TimeoutExpired:
            uw.kill()
            uw.wait(5)
        log.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_timer_after_a_reload_still_fires_once_per_period(headrace, mode):
    srv = start(headrace, *MODES[mode], env={"HR_SIG_TIMER": "1"})
    ready(srv)
    wait_tagged(srv, "timer", 1)
    old = set(srv.worker_pids())
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(set(srv.worker_pids()) - old) >= 2, 10, "new workers")
    srv.wait_log("of the previous generation finished", count=2, timeout=15)
    time.sleep(1.2)
    t = stamps(srv, "timer", 4, 8)
    assert_period(t)
    # The reloaded app got the same signal number (the new workers' rows start empty).
    assert {r[1] for r in tagged(srv, "timer")} == {0}
    assert "error managing signal" not in srv.log()
    get(srv, "/raise?n=11")
    wait_until(
        lambda: sum(r[4] not in old for r in tagged(srv, "h11")) == 2, 5, "h11 in both new workers"
    )


@pytest.mark.parametrize("mode", list(MODES))
def test_graceful_stop_lets_a_running_handler_finish(headrace, mode):
    srv = start(headrace, *MODES[mode], processes=1)
    ready(srv, 1)
    get(srv, "/raise?n=15")
    wait_tagged(srv, "slowstart", 1)
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < 10
    assert len(tagged(srv, "slowdone")) == 1, srv.tail()
