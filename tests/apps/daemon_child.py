"""A daemon for the attached-daemon tests. It appends what happens to it to RECORD, one line
per event, then sleeps until a signal ends it:

    start PID PGID UID GID CWD STDIN     when it starts (STDIN: where fd 0 points)
    signal PID NUM                       a signal arrived (SIGTERM, SIGINT, SIGHUP, SIGUSR1/2)
    exit PID                             it is about to exit
    child PID                            --grandchild: the process it forked (same group)

    daemon_child.py RECORD [--exit CODE] [--ignore-term] [--grandchild]
                           [--daemonize PIDFILE] [--pidfile PIDFILE]

--daemonize: fork away (the parent exits 0) and write the pidfile, as memcached -d does;
--pidfile: write the pidfile and stay in the foreground; --ignore-term: signals are recorded
and ignored (only SIGKILL ends it).
"""

import os
import signal
import sys
import time

args = sys.argv[1:]
record = args.pop(0)


def opt(name):
    if name in args:
        i = args.index(name)
        return args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else True
    return None


def note(text):
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def write_pidfile(path):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, path)


if opt("--daemonize"):
    if os.fork():
        os._exit(0)
    os.setsid()
    write_pidfile(opt("--daemonize"))
if opt("--pidfile"):
    write_pidfile(opt("--pidfile"))

try:
    stdin = os.readlink("/proc/self/fd/0")
except OSError:
    stdin = "closed"
note(f"start {os.getpid()} {os.getpgrp()} {os.getuid()} {os.getgid()} {os.getcwd()} {stdin}")

if opt("--exit") is not None:
    note(f"exit {os.getpid()}")
    sys.exit(int(opt("--exit")))

ignore = bool(opt("--ignore-term"))


def on_signal(num, _frame):
    note(f"signal {os.getpid()} {num}")
    if not ignore:
        note(f"exit {os.getpid()}")
        os._exit(0)


for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, on_signal)

if opt("--grandchild"):
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(1)
    note(f"child {pid}")

while True:
    time.sleep(0.2)
