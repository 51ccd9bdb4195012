"""Attached daemons (`--attach-daemon`, `--smart-attach-daemon`, `--smart-attach-daemon2`,
`--attach-daemon2`, `--attach-control-daemon`) through the real binary: started after the
workers, restarted when they die (throttled when they die at once), stopped with the master
with nothing left behind (checked by pid), smart daemons followed through their pidfile and
never duplicated, and what a graceful reload (SIGHUP) does to each kind, preloaded (the master
re-execs) and with --lazy-apps. The daemon is tests/apps/daemon_child.py, which records its
life in a file.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support import (
    APPS,
    free_port,
    headrace_cmd,
    pid_alive,
    run_headrace,
    server_env,
    wait_until,
)

APP = str(APPS / "daemon_app.py")
CHILD = str(APPS / "daemon_child.py")
FRONTS = ["direct", "router"]


def child_cmd(record: Path, *flags: str) -> str:
    """The daemon's command line. It runs as `/bin/sh -c COMMAND`, as in uWSGI; `exec` makes
    the daemon the process the master forked (dash would otherwise fork it)."""
    return "exec " + " ".join(shlex.quote(x) for x in (sys.executable, CHILD, str(record), *flags))


def events(record: Path) -> list[list[str]]:
    try:
        return [line.split() for line in record.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def starts(record: Path) -> list[int]:
    return [int(e[1]) for e in events(record) if e[0] == "start"]


def nth_start(record: Path, n: int, timeout: float = 15) -> int:
    """The pid of the daemon's n-th start (1-based), once it happened."""
    return wait_until(
        lambda: starts(record)[n - 1] if len(starts(record)) >= n else None,
        timeout,
        f"start number {n} in {record.name}",
    )


def kids(record: Path) -> list[int]:
    return [int(e[1]) for e in events(record) if e[0] == "child"]


def start(headrace, front: str, *args: str, processes: int = 2):
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    srv = headrace(
        opt,
        f"127.0.0.1:{port}",
        "--wsgi-file",
        APP,
        "--master",
        "--processes",
        str(processes),
        *args,
        port=port,
        probe=None,
        workers=processes,
        bind=False,
    )
    srv.port = port
    return srv


def get_ok(srv) -> bool:
    r = srv.request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return r.status == 200


def all_dead(pids, timeout: float = 5) -> None:
    wait_until(lambda: not [p for p in pids if pid_alive(p)], timeout, f"pids {pids} to be gone")


def pidfile_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


# --- plain daemons: start, respawn, stop ------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
@pytest.mark.parametrize("front", FRONTS)
def test_daemon_starts_after_workers_respawns_after_kill9_and_stops_with_master(
    headrace, tmp_path, front, lazy
):
    rec = tmp_path / "d.rec"
    cmd = child_cmd(rec, "--grandchild")
    srv = start(headrace, front, "--attach-daemon", cmd, *(["--lazy-apps"] if lazy else []))
    first = nth_start(rec, 1)
    log = srv.wait_log(f'[headrace-daemons] spawning "{cmd}" (pid: {first},')
    assert log.index("spawned headrace worker 2 ") < log.index("[headrace-daemons] spawning")
    assert get_ok(srv)
    gc1 = wait_until(lambda: kids(rec), 10, "the grandchild")[0]

    os.kill(first, signal.SIGKILL)
    second = nth_start(rec, 2)
    srv.wait_log(f'daemon "{cmd}" (pid: {first}) died (killed by signal 9 (SIGKILL)): respawning')
    srv.wait_log(f'[headrace-daemons] respawning "{cmd}" (pid: {second},')
    # What the killed daemon started in its group is stopped with it, not left behind.
    all_dead([first, gc1])
    assert get_ok(srv)
    gc2 = wait_until(lambda: kids(rec)[1:], 10, "the second grandchild")[0]
    assert pid_alive(second) and pid_alive(gc2)

    assert srv.stop(signal.SIGTERM) == 0
    all_dead([second, gc2], timeout=1)
    assert f"[headrace-daemons] stopping daemon (pid: {second}): {cmd}" in srv.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_leaves_no_process_behind(headrace, tmp_path, sig):
    polite, stubborn = tmp_path / "polite.rec", tmp_path / "stubborn.rec"
    srv = start(
        headrace,
        "direct",
        "--worker-reload-mercy",
        "2",
        "--attach-daemon",
        child_cmd(polite, "--grandchild"),
        "--attach-daemon",
        child_cmd(stubborn, "--ignore-term", "--grandchild"),
    )
    pids = [nth_start(polite, 1), nth_start(stubborn, 1)]
    pids += wait_until(
        lambda: kids(polite) + kids(stubborn) if len(kids(polite) + kids(stubborn)) == 2 else None,
        10,
        "both grandchildren",
    )
    t0 = time.monotonic()
    assert srv.stop(sig) == 0
    took = time.monotonic() - t0
    all_dead(pids, timeout=1)
    log = srv.log()
    # The polite one got the stop signal (uWSGI's default stopsignal, SIGTERM) and exited;
    # the stubborn one was SIGKILLed, with its grandchild, at the master's deadline.
    assert ["signal", str(pids[0]), str(int(signal.SIGTERM))] in events(polite)
    assert ["signal", str(pids[1]), str(int(signal.SIGTERM))] in events(stubborn)
    assert f"daemon did not die in time, killing (pid: {pids[1]})" in log
    assert took < 8, took


def test_daemon_that_exits_at_once_is_throttled_not_spun(headrace, tmp_path):
    rec = tmp_path / "quick.rec"
    cmd = child_cmd(rec, "--exit", "3")
    srv = start(headrace, "direct", "--attach-daemon", cmd)
    # 1 s, 2 s, 3 s between spawns (uWSGI's throttle); unthrottled, hundreds. Watched up to
    # the third spawn (3 s in), not over a fixed 5 s: the second and third are seen as they
    # come (the first may have come before the test looks), 2 s apart.
    nth_start(rec, 1)
    nth_start(rec, 2)
    second = time.monotonic()
    nth_start(rec, 3)
    assert time.monotonic() - second >= 1.7
    assert len(starts(rec)) == 3
    log = srv.log()
    assert f'daemon "{cmd}" (pid: ' in log and "(exit code 3): respawning" in log
    assert f'[headrace-daemons] throttling "{cmd}" for 1 seconds' in log
    assert f'[headrace-daemons] throttling "{cmd}" for 2 seconds' in log
    assert get_ok(srv)


def test_max_throttle_caps_the_wait(headrace, tmp_path):
    rec = tmp_path / "quick.rec"
    cmd = child_cmd(rec, "--exit", "1")
    srv = start(headrace, "direct", "--attach-daemon2", f"cmd={cmd},max_throttle=1")
    nth_start(rec, 5, timeout=12)
    assert "for 2 seconds" not in srv.log()


def test_control_daemon_death_stops_the_server(headrace, tmp_path):
    rec = tmp_path / "ctl.rec"
    other = tmp_path / "other.rec"
    srv = start(
        headrace,
        "direct",
        "--attach-control-daemon",
        child_cmd(rec),
        "--attach-daemon",
        child_cmd(other),
    )
    pid = nth_start(rec, 1)
    buddy = nth_start(other, 1)
    os.kill(pid, signal.SIGKILL)
    assert srv.proc.wait(15) == 0
    log = srv.log()
    assert f'control daemon "{child_cmd(rec)}" (pid: {pid}) died' in log
    assert "goodbye to headrace." in log
    all_dead([buddy], timeout=1)


# --- smart daemons ------------------------------------------------------------------------------


def test_smart_daemon_is_followed_through_its_pidfile(headrace, tmp_path):
    rec, pidfile = tmp_path / "smart.rec", tmp_path / "smart.pid"
    cmd = child_cmd(rec, "--daemonize", str(pidfile))
    srv = start(headrace, "direct", "--smart-attach-daemon", f"{pidfile} {cmd}")
    first = nth_start(rec, 1)
    wait_until(lambda: pidfile_pid(pidfile) == first, 10, "the pidfile to name the daemon")
    time.sleep(2.5)  # a few pidfile checks: it is alive, nothing is spawned again
    assert starts(rec) == [first]
    os.kill(first, signal.SIGKILL)
    second = nth_start(rec, 2)
    wait_until(lambda: pidfile_pid(pidfile) == second, 10, "the new pid in the pidfile")
    srv.wait_log(f'daemon "{cmd}" (pid: {first}) died: respawning')
    time.sleep(2.5)
    assert starts(rec) == [first, second]  # one copy at a time
    assert srv.stop(signal.SIGTERM) == 0
    all_dead([second], timeout=1)


def test_smart_daemon2_is_daemonized_by_the_master(headrace, tmp_path):
    rec, pidfile = tmp_path / "smart2.rec", tmp_path / "smart2.pid"
    cmd = child_cmd(rec)
    srv = start(headrace, "direct", "--smart-attach-daemon2", f"{pidfile},2 {cmd}")
    first = nth_start(rec, 1)
    # The master forked it away and wrote its pid.
    wait_until(lambda: pidfile_pid(pidfile) == first, 10, "the master's pidfile")
    assert first not in srv.known_pids | set(srv.worker_pids())
    ev = events(rec)[0]
    assert ev[2] == str(first)  # its own session and group
    os.kill(first, signal.SIGKILL)
    second = nth_start(rec, 2)
    wait_until(lambda: pidfile_pid(pidfile) == second, 10, "the new pid")
    assert srv.stop(signal.SIGINT) == 0
    all_dead([second], timeout=1)


def test_smart_daemon_already_running_is_adopted_not_duplicated(headrace, tmp_path):
    rec, pidfile = tmp_path / "adopt.rec", tmp_path / "adopt.pid"
    cmd = child_cmd(rec, "--daemonize", str(pidfile))
    subprocess.run(["/bin/sh", "-c", cmd], check=True, timeout=10)
    mine = nth_start(rec, 1)
    try:
        wait_until(lambda: pidfile_pid(pidfile) == mine, 10, "our daemon's pidfile")
        srv = start(headrace, "direct", "--smart-attach-daemon", f"{pidfile} {cmd}")
        srv.wait_log(f'found valid/active pidfile for "{cmd}" (pid: {mine})')
        time.sleep(2.5)
        assert starts(rec) == [mine]
        assert "[headrace-daemons] spawning" not in srv.log()
        os.kill(mine, signal.SIGKILL)
        second = nth_start(rec, 2)
        assert srv.stop(signal.SIGTERM) == 0
        all_dead([second], timeout=1)
    finally:
        if pid_alive(mine):
            os.kill(mine, signal.SIGKILL)


def test_stale_pidfile_naming_another_process_is_neither_adopted_nor_stopped(headrace, tmp_path):
    rec, pidfile = tmp_path / "stale.rec", tmp_path / "stale.pid"
    bystander = subprocess.Popen(["sleep", "1000"])
    try:
        # An old pidfile whose pid now belongs to a process started long after it was written.
        pidfile.write_text(f"{bystander.pid}\n")
        hour_ago = time.time() - 3600
        os.utime(pidfile, (hour_ago, hour_ago))
        cmd = child_cmd(rec, "--daemonize", str(pidfile))
        srv = start(headrace, "direct", "--smart-attach-daemon", f"{pidfile} {cmd}")
        pid = nth_start(rec, 1)
        assert "found valid/active pidfile" not in srv.log()
        wait_until(lambda: pidfile_pid(pidfile) == pid, 10, "the daemon's own pidfile")
        assert srv.stop(signal.SIGTERM) == 0
        all_dead([pid], timeout=1)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(5)


def test_foreground_smart_daemon_with_its_own_pidfile(headrace, tmp_path):
    # uWSGI: pidfile-governed daemons may stay in the foreground (the master's own child).
    rec, pidfile = tmp_path / "fgp.rec", tmp_path / "fgp.pid"
    cmd = child_cmd(rec, "--pidfile", str(pidfile))
    srv = start(headrace, "direct", "--smart-attach-daemon", f"{pidfile} {cmd}")
    first = nth_start(rec, 1)
    wait_until(lambda: pidfile_pid(pidfile) == first, 10, "its pidfile")
    assert f"(pid: {first}," in srv.log()  # the very process the master forked
    os.kill(first, signal.SIGKILL)
    second = nth_start(rec, 2, timeout=5)  # at once, not after freq (10) pidfile checks
    srv.wait_log(f'daemon "{cmd}" (pid: {first}) died (killed by signal 9 (SIGKILL)): respawning')
    time.sleep(2.5)
    assert starts(rec) == [first, second]
    assert srv.stop(signal.SIGTERM) == 0
    all_dead([second], timeout=1)


def test_foreground_smart_daemon_that_never_daemonizes_is_reported(headrace, tmp_path):
    rec, pidfile = tmp_path / "fg.rec", tmp_path / "never.pid"
    cmd = child_cmd(rec)  # writes no pidfile, stays in the foreground
    srv = start(headrace, "direct", "--smart-attach-daemon", f"{pidfile},1 {cmd}")
    pid = nth_start(rec, 1)
    srv.wait_log(f'"{cmd}" (pid: {pid}) did not daemonize !!!')
    assert starts(rec) == [pid]
    assert srv.stop(signal.SIGTERM) == 0
    all_dead([pid], timeout=1)


# --- attach-daemon2 keys ------------------------------------------------------------------------


def test_attach_daemon2_keys(headrace, tmp_path):
    rec, touch = tmp_path / "kv.rec", tmp_path / "touch-me"
    touch.write_text("")
    workdir = tmp_path / "work"
    workdir.mkdir()
    cmd = child_cmd(rec)
    srv = start(
        headrace,
        "direct",
        "--attach-daemon2",
        f"cmd={cmd},stopsignal=SIGUSR1,chdir={workdir},touch={tmp_path / 'nothing'};{touch}",
    )
    first = nth_start(rec, 1)
    ev = events(rec)[0]
    assert ev[2] == str(first)  # its own process group
    assert ev[5] == str(workdir)
    assert ev[6] == "/dev/null"  # stdin
    time.sleep(1.2)
    os.utime(touch, (time.time() + 5, time.time() + 5))
    second = nth_start(rec, 2)
    assert ["signal", str(first), str(int(signal.SIGUSR1))] in events(rec)
    srv.wait_log(f'has been touched... reloading daemon "{cmd}" (pid: {first})')
    assert srv.stop(signal.SIGTERM) == 0
    assert ["signal", str(second), str(int(signal.SIGUSR1))] in events(rec)
    all_dead([first, second], timeout=1)


def test_attach_daemon2_uid_gid(headrace):
    # A directory the daemon's user (nobody) can write to: pytest's tmp_path is root's only.
    shared = Path(tempfile.mkdtemp(prefix="hr-daemon-", dir="/tmp"))
    try:
        os.chmod(shared, 0o777)
        out = shared / "ids"
        cmd = f"echo $(id -u) $(id -g) >> {out}; exec sleep 1000"
        srv = start(headrace, "direct", "--attach-daemon2", f"cmd={cmd},uid=nobody,gid=65534")
        ids = wait_until(lambda: out.exists() and out.read_text().split(), 10, "the ids")
        assert ids == [str(pwd.getpwnam("nobody").pw_uid), "65534"]
        assert srv.stop(signal.SIGTERM) == 0
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("how", ["stdin=1", "--daemons-honour-stdin"])
def test_honour_stdin_keeps_the_servers_stdin(tmp_path, how):
    rec, plain = tmp_path / "in.rec", tmp_path / "plain.rec"
    stdin = tmp_path / "server-stdin"
    stdin.write_text("")
    if how == "stdin=1":
        args = [
            "--attach-daemon2",
            f"cmd={child_cmd(rec)},stdin=1",
            "--attach-daemon",
            child_cmd(plain),
        ]
    else:
        args = ["--daemons-honour-stdin", "--attach-daemon", child_cmd(rec)]
    with open(stdin) as fin, open(tmp_path / "log", "wb") as out:
        p = subprocess.Popen(
            headrace_cmd()
            + ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", APP, *args],
            stdin=fin,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(),
        )
    try:
        pid = nth_start(rec, 1)
        assert events(rec)[0][6] == str(stdin)
        pids = [pid]
        if how == "stdin=1":
            pids.append(nth_start(plain, 1))
            assert events(plain)[0][6] == "/dev/null"
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        all_dead(pids, timeout=1)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


# --- reloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True], ids=["reexec", "lazy"])
@pytest.mark.parametrize("front", FRONTS)
def test_graceful_reload_restarts_plain_daemons_and_keeps_smart_ones(
    headrace, tmp_path, front, lazy
):
    plain, smart, pidfile = tmp_path / "p.rec", tmp_path / "s.rec", tmp_path / "s.pid"
    hup = tmp_path / "h.rec"
    smart_cmd = child_cmd(smart, "--daemonize", str(pidfile))
    srv = start(
        headrace,
        front,
        "--attach-daemon",
        child_cmd(plain, "--grandchild"),
        "--smart-attach-daemon",
        f"{pidfile} {smart_cmd}",
        "--attach-daemon2",
        f"cmd={child_cmd(hup)},reloadsignal=SIGUSR2",
        *(["--lazy-apps"] if lazy else []),
    )
    old, smart_pid, hup_old = nth_start(plain, 1), nth_start(smart, 1), nth_start(hup, 1)
    old_gc = wait_until(lambda: kids(plain), 10, "the grandchild")[0]
    wait_until(lambda: pidfile_pid(pidfile) == smart_pid, 10, "the smart pidfile")

    os.kill(srv.proc.pid, signal.SIGHUP)
    new = nth_start(plain, 2, timeout=30)
    hup_new = nth_start(hup, 2, timeout=30)
    # The old copy was stopped (uWSGI: plain daemons are flushed with the app) and gone before
    # the new one started: never two copies at once.
    ev = [" ".join(e) for e in events(plain)]
    assert ev.index(f"exit {old}") < ev.index(next(e for e in ev if e.startswith(f"start {new}")))
    assert ["signal", str(hup_old), str(int(signal.SIGUSR2))] in events(hup)
    all_dead([old, old_gc, hup_old], timeout=1)
    srv.wait_log("reload complete", timeout=30)
    if not lazy:
        srv.wait_log(f'found valid/active pidfile for "{smart_cmd}" (pid: {smart_pid})')
    time.sleep(2.5)
    # The smart daemon lived on, alone; each plain daemon runs once.
    assert starts(smart) == [smart_pid] and pid_alive(smart_pid)
    assert starts(plain) == [old, new] and starts(hup) == [hup_old, hup_new]
    assert get_ok(srv)
    assert srv.stop(signal.SIGTERM) == 0
    all_dead([new, hup_new, smart_pid] + kids(plain), timeout=1)


def test_notifypid_smart_daemon_gets_sighup_on_reload(headrace, tmp_path):
    rec, pidfile = tmp_path / "n.rec", tmp_path / "n.pid"
    cmd = child_cmd(rec, "--daemonize", str(pidfile), "--ignore-term")
    srv = start(
        headrace,
        "direct",
        "--lazy-apps",
        "--worker-reload-mercy",
        "2",
        "--attach-daemon2",
        f"cmd={cmd},pidfile={pidfile},notifypid=1",
    )
    pid = nth_start(rec, 1)
    wait_until(lambda: pidfile_pid(pidfile) == pid, 10, "the pidfile")
    os.kill(srv.proc.pid, signal.SIGHUP)
    wait_until(
        lambda: ["signal", str(pid), str(int(signal.SIGHUP))] in events(rec),
        10,
        "SIGHUP to the smart daemon",
    )
    srv.wait_log("reload complete", timeout=30)
    assert starts(rec) == [pid] and pid_alive(pid)
    assert srv.stop(signal.SIGTERM) == 0
    all_dead([pid], timeout=1)


def test_reexec_hands_a_stubborn_old_copy_to_the_new_image(headrace, tmp_path):
    # Preloaded: SIGHUP re-execs the master. The old copy ignores its stop signal; the new
    # image knows its pid, SIGKILLs it at the mercy, and only then starts the new copy.
    rec = tmp_path / "stubborn.rec"
    # --worker-reload-mercy 1: the old copy's deadline, the shortest (the order is checked).
    srv = start(
        headrace,
        "direct",
        "--worker-reload-mercy",
        "1",
        "--attach-daemon",
        child_cmd(rec, "--ignore-term"),
    )
    old = nth_start(rec, 1)
    os.kill(srv.proc.pid, signal.SIGHUP)
    new = nth_start(rec, 2, timeout=30)
    assert not pid_alive(old)
    log = srv.wait_log("reload complete", timeout=30)
    assert "reloading: re-executing the master" in log
    assert f"daemon did not die in time, killing (pid: {old})" in log
    assert log.index(f"killing (pid: {old})") < log.index(f"(pid: {new},")
    assert ["signal", str(old), str(int(signal.SIGTERM))] in events(rec)
    time.sleep(1.5)
    assert starts(rec) == [old, new]
    assert srv.stop(signal.SIGTERM) == 0
    all_dead([new], timeout=1)


def test_plain_daemon_dies_with_a_killed_master(headrace, tmp_path):
    rec = tmp_path / "orphan.rec"
    srv = start(headrace, "direct", "--attach-daemon", child_cmd(rec))
    pid = nth_start(rec, 1)
    srv.remember_pids()
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    # PR_SET_PDEATHSIG, as uWSGI: the daemon does not outlive a master killed with -9.
    all_dead([pid], timeout=5)


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, reason",
    [
        ("--smart-attach-daemon", "/tmp/only-a-pidfile", "expected PIDFILE COMMAND"),
        ("--smart-attach-daemon2", "/tmp/x.pid,zero run", "freq"),
        ("--attach-daemon2", "pidfile=/tmp/x.pid", "a command is needed"),
        ("--attach-daemon2", "cmd=true,ns_pid=1", "ns_pid"),
        ("--attach-daemon2", "cmd=true,stopsignal=SIGNOPE", "not a signal"),
        ("--attach-daemon2", "cmd=true,uid=no-such-user-here", "no such user"),
        ("--attach-daemon2", "cmd=true,colour=blue", 'unknown key "colour"'),
        ("--attach-daemon2", "cmd=true,daemonize=1", "daemonize needs pidfile"),
    ],
)
def test_bad_values_exit_2_naming_the_option(option, value, reason):
    r = run_headrace(
        ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", APP, option, value]
    )
    assert r.returncode == 2, r
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert f"invalid {option[2:]} " in lines[0] and reason in lines[0], lines[0]


# --- the reference: uWSGI (pyuwsgi) does the same with a plain daemon ---------------------------


def test_same_lifecycle_as_uwsgi(headrace, tmp_path):
    exe = shutil.which("uwsgi", path=str(Path(sys.executable).parent)) or shutil.which("uwsgi")
    if exe is None:
        pytest.fail("pyuwsgi's uwsgi is not installed (./dev setup installs pyuwsgi)")

    def scenario(rec: Path, stop) -> None:
        first = nth_start(rec, 1)
        os.kill(first, signal.SIGKILL)
        second = nth_start(rec, 2)
        stop()
        all_dead([first, second], timeout=5)

    # uWSGI 2.0
    urec = tmp_path / "uwsgi.rec"
    with open(tmp_path / "uwsgi.log", "wb") as out:
        uw = subprocess.Popen(
            [
                exe,
                "--http-socket",
                f"127.0.0.1:{free_port()}",
                "--wsgi-file",
                APP,
                "--master",
                "--attach-daemon",
                child_cmd(urec),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        scenario(urec, lambda: (uw.send_signal(signal.SIGINT), uw.wait(15)))
    finally:
        if uw.poll() is None:
            uw.kill()
            uw.wait(5)
    assert ["signal", str(starts(urec)[1]), str(int(signal.SIGTERM))] in events(urec)
    # headrace
    rec = tmp_path / "headrace.rec"
    srv = start(headrace, "direct", "--attach-daemon", child_cmd(rec))
    scenario(rec, lambda: srv.stop(signal.SIGINT))
    assert ["signal", str(starts(rec)[1]), str(int(signal.SIGTERM))] in events(rec)
