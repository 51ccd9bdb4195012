"""Descriptor and thread hygiene across fork (issue 10).

Each child holds only what it serves: a worker holds the `--http-socket`/`--socket` listeners
but not the router's listening socket; the `--http` router holds its own listening socket but
not the workers'; neither holds the master's signalfd. Every descriptor a process opened is
close-on-exec, so a program the app runs inherits none of them.

A socket is told apart by its inode: readlink(/proc/PID/fd/N) gives `socket:[INODE]`, and
/proc/net/tcp names the inode listening on each port.

The master forks only while it runs one thread: an app that starts a thread while it is
preloaded makes headrace exit with a one-line error naming --lazy-apps; under --lazy-apps the
same app serves.
"""

from __future__ import annotations

import os
import re

import pytest
from support import app, build_request, free_port, run_headrace

SIGNALFD = "anon_inode:[signalfd]"
ROUTER_LINE = re.compile(r"spawned headrace http 1 \(pid: (\d+)\)")
O_CLOEXEC = 0o2000000


def fd_targets(pid: int) -> dict[int, str]:
    """Every open descriptor of `pid` and what it points at."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:  # closed while we looked
            continue
    return out


def listening_inodes() -> dict[str, int]:
    """`socket:[INODE]` -> port, for every TCP socket in LISTEN state on this machine."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A":  # TCP_LISTEN
                out[f"socket:[{inode}]"] = int(local.rsplit(":", 1)[1], 16)
    return out


def listening_ports(pid: int) -> set[int]:
    """The TCP ports whose listening socket `pid` holds."""
    inodes = listening_inodes()
    return {inodes[t] for t in fd_targets(pid).values() if t in inodes}


def flags(pid: int, fd: int) -> int:
    """The open flags of `pid`'s descriptor `fd`; O_CLOEXEC alone for one closed since it was
    listed (a connection ending while the test looks: nothing left to inherit)."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8)
    except FileNotFoundError:
        return O_CLOEXEC
    raise AssertionError(f"no flags line in /proc/{pid}/fdinfo/{fd}")


def router_pid(srv) -> int | None:
    m = ROUTER_LINE.search(srv.log())
    return int(m.group(1)) if m else None


# Each front, the options that make it, and which of its ports the workers and the router
# listen on. H: --http-socket, S: --socket (uwsgi), R: --http (the router's port).
FRONTS = {
    "http-socket": (["H"], {"H"}, None),
    "http": (["R"], set(), {"R"}),
    "socket+http-socket": (["S", "H"], {"S", "H"}, None),
    "http+socket+http-socket": (["R", "S", "H"], {"S", "H"}, {"R"}),
}
OPTION = {"H": "--http-socket", "S": "--socket", "R": "--http"}


def start(headrace, front: str):
    """headrace on `front` with two workers; returns (server, ports by letter, router pid)."""
    letters, _, router = FRONTS[front]
    ports = {letter: free_port() for letter in letters}
    args = []
    for letter in letters:
        args += [OPTION[letter], f"127.0.0.1:{ports[letter]}"]
    # Readiness goes through the HTTP front: the router's port if any, else --http-socket.
    probe_port = ports["R"] if router else ports["H"]
    srv = headrace(*args, "--wsgi-file", app("basic.py"), "--processes", "2", port=probe_port)
    r = srv.request(build_request("GET", "/"))
    assert r.status == 200, r
    rpid = router_pid(srv) if router else None
    assert (rpid is not None) == bool(router), srv.tail()
    return srv, ports, rpid


@pytest.mark.parametrize("front", list(FRONTS))
def test_master_holds_its_signalfd_and_every_listener(headrace, front):
    # The baseline the children are compared with: the master binds every socket and reads its
    # signals from a signalfd.
    srv, ports, _ = start(headrace, front)
    master = srv.proc.pid
    assert SIGNALFD in fd_targets(master).values()
    assert listening_ports(master) == set(ports.values())


@pytest.mark.parametrize("front", list(FRONTS))
def test_children_do_not_hold_the_master_signalfd(headrace, front):
    srv, _, rpid = start(headrace, front)
    workers = srv.worker_pids()
    assert len(workers) == 2, srv.tail()
    for pid in workers + ([rpid] if rpid else []):
        held = [f"{fd} -> {t}" for fd, t in fd_targets(pid).items() if t == SIGNALFD]
        assert held == [], f"child {pid} holds the master's signalfd: {held}"


@pytest.mark.parametrize("front", list(FRONTS))
def test_children_hold_only_their_listeners(headrace, front):
    # NEEDS THE LEAD'S CALLS in src/master/mod.rs (Master::spawn and Master::spawn_router, the
    # ForkResult::Child arms: drop the listeners the child does not serve). Until they are in,
    # the worker holds the router's listening socket and the router the workers' listeners.
    srv, ports, rpid = start(headrace, front)
    _, worker_letters, router_letters = FRONTS[front]
    for pid in srv.worker_pids():
        held = listening_ports(pid)
        assert held == {ports[x] for x in worker_letters}, (
            f"worker {pid} listens on {sorted(held)}; ports: {ports}"
        )
    if rpid:
        held = listening_ports(rpid)
        assert held == {ports[x] for x in router_letters}, (
            f"router {rpid} listens on {sorted(held)}; ports: {ports}"
        )


@pytest.mark.parametrize("front", ["http-socket", "http+socket+http-socket"])
def test_every_descriptor_is_close_on_exec(headrace, front):
    # A program the app starts (subprocess with close_fds=False, os.system) must inherit none of
    # the server's descriptors; only stdin, stdout and stderr are meant to be inherited.
    srv, _, rpid = start(headrace, front)
    for pid in [srv.proc.pid, *srv.worker_pids(), *([rpid] if rpid else [])]:
        leaking = [
            f"{fd} -> {target}"
            for fd, target in fd_targets(pid).items()
            if fd > 2 and not flags(pid, fd) & O_CLOEXEC
        ]
        assert leaking == [], f"pid {pid}: descriptors without close-on-exec: {leaking}"


@pytest.mark.parametrize("front", list(FRONTS))
def test_master_runs_one_thread(headrace, front):
    # What a normal startup looks like: the master runs exactly one thread (its poll loop), so
    # the thread check before fork never refuses a well-behaved app.
    srv, _, _ = start(headrace, front)
    assert os.listdir(f"/proc/{srv.proc.pid}/task") == [str(srv.proc.pid)]


# --- fork safety ------------------------------------------------------------------------------


def test_threads_started_while_preloading_refuse_fork():
    # NEEDS THE LEAD'S CALL in src/master/mod.rs (run(), right after the app is loaded:
    # proc::ensure_single_threaded()?). Without it, sys::proc::fork() still refuses, but the
    # master only logs the refusal and retries the spawn every second instead of exiting.
    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}",
                      "--wsgi-file", app("threads_at_import.py")], timeout=15)
    out = p.stdout + p.stderr
    assert p.returncode == 1, f"exit {p.returncode}; output:\n{out}"
    lines = [line for line in out.splitlines() if "--lazy-apps" in line]
    assert len(lines) == 1, out
    assert "1 thread" in lines[0] and "fork" in lines[0], lines[0]
    assert "spawned headrace worker" not in out


def test_threads_started_at_import_serve_with_lazy_apps(headrace):
    srv = headrace("--wsgi-file", app("threads_at_import.py"), "--lazy-apps",
                   "--processes", "2")
    r = srv.request(build_request("GET", "/"))
    assert r.status == 200, r
    assert "import-time-ticker" in r.body.decode().split(","), r.body
