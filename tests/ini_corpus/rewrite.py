"""Make a real uWSGI config runnable on the test machine, changing only what cannot work here.

A file from the corpus names its project's app (`module = hc.wsgi`), that project's paths
(`chdir = /opt/healthchecks`), sockets on fixed ports or in directories of its image, users
of its image, and commands of its project. None of that exists here. `rewrite` changes
exactly those values, line by line, and keeps every other byte (comments, order, unknown
keys, placeholders, logic blocks, line endings), so the same rewritten file can be given to
headrace and to uWSGI and both see the config a user moving to headrace would have.

The rules, by key (keys compared lowercased, `_` as `-`):

* app target: `module`/`wsgi`/`w` -> `corpus_app` (keeping a `:callable` suffix; the app
  has both `application` and `app`); `wsgi-file`/`file` -> the app file; `mount` ->
  same mountpoint, the app file; `chdir` -> the work dir; `home`/`virtualenv`/`venv`/
  `pyhome` -> the test's own virtualenv; `pythonpath`/`python-path`/`pp` -> the work dir;
  `mule = X.py` -> an idle mule script. Imports of the project's own modules (`import`,
  `pyimport`, `python-import`, `shared-import`, `shared-pyimport`, `spooler-import`) are
  dropped.
* sockets: every address of `socket`, `uwsgi-socket`, `http-socket`, `http11-socket`,
  `http`, `fastcgi-socket`, `scgi-socket`, `shared-socket`, ... and `stats`/`stats-server`
  -> `127.0.0.1:<free port>`, or a path in the work dir when it was a unix socket path.
  `https` (router with a certificate and key of the image) is dropped.
* addresses the server would send to (`stats-push`, `carbon`, `subscribe-to`, ...): every
  IPv4 address in the value -> 127.0.0.1 (nothing leaves the machine).
* users: `uid`, `gid`, `chown-socket`, `immediate-uid`, `immediate-gid` are dropped (the
  work dir is private to whoever runs the tests, and the image's users are not here).
* files the server writes: `pidfile`/`pidfile2`/`safe-pidfile`/`safe-pidfile2`,
  `logto`/`logto2`, `log-backupname`, `master-fifo`, `spooler`, and `file:` paths of
  `logger`/`req-logger`/`logger-req` -> paths in the work dir. `daemonize`/`daemonize2`
  become `logto`/`logto2` to the same kind of path: the test keeps the server in the
  foreground so that it can stop it by PID.
* commands of the project: `exec-*` -> `true`; a `hook-*` `exec:` action -> `exec:true`;
  `attach-daemon*` -> `true`; the command of `cron`/`unique-cron` -> `true`.

What the deployment gives outside the file, the test gives on the command line, the same
for both servers: `--http-socket 127.0.0.1:PORT` when the file binds nothing, and
`--wsgi-file APP` when it names no app.

A dropped line becomes a comment (`# corpus: dropped ...`), so line numbers stay those of
the original file. JSON has no comments: a dropped JSON key is removed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

APP_MODULE = "corpus_app"

MODULE_KEYS = {"module", "wsgi", "w"}
APP_FILE_KEYS = {"wsgi-file", "file"}
VENV_KEYS = {"home", "virtualenv", "venv", "pyhome"}
PYTHONPATH_KEYS = {"pythonpath", "python-path", "pp"}
IMPORT_KEYS = {"import", "pyimport", "python-import", "shared-import", "shared-pyimport",
               "spooler-import", "spooler-python-import"}
#: sockets that serve requests, in the order the probe prefers them (HTTP first)
HTTP_SOCKET_KEYS = ["http-socket", "http11-socket", "http"]
UWSGI_SOCKET_KEYS = ["socket", "s", "uwsgi-socket", "shared-socket"]
OTHER_SOCKET_KEYS = ["fastcgi-socket", "scgi-socket", "suwsgi-socket", "puwsgi-socket",
                     "raw-socket", "zerg-server"]
STATS_KEYS = {"stats", "stats-server"}
DROP_KEYS = {"uid", "gid", "chown-socket", "immediate-uid", "immediate-gid", "https"}
PIDFILE_KEYS = {"pidfile", "pidfile2", "safe-pidfile", "safe-pidfile2"}
LOGFILE_KEYS = {"logto", "logto2", "log-backupname"}
DAEMONIZE_KEYS = {"daemonize": "logto", "daemonize2": "logto2"}
LOGGER_KEYS = {"logger", "req-logger", "logger-req"}
DAEMON_KEYS = {"attach-daemon", "attach-daemon2", "attach-control-daemon"}
CRON_KEYS = {"cron", "unique-cron"}
PUSH_KEYS = {"stats-push", "carbon", "subscribe-to", "subscribe2", "st", "subscribe",
             "zerg"}
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")

INI_LINE = re.compile(r"^(?P<key>\s*[^\s;#\[=][^=]*?)(?P<sep>\s*=\s*)(?P<value>.*?)(?P<eol>\r?\n?)$")
INI_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]*)\]")
YAML_LINE = re.compile(r"^(?P<key>\s+[A-Za-z0-9_.-]+)(?P<sep>\s*:\s*)(?P<value>.*?)(?P<eol>\r?\n?)$")
YAML_SECTION = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)\s*:\s*$")
JSON_LINE = re.compile(
    r'^(?P<key>\s*"[^"]+")(?P<sep>\s*:\s*)(?P<value>.*?)(?P<comma>,?)(?P<eol>\s*)$', re.DOTALL
)
JSON_SECTION = re.compile(r'^\s*\{?\s*"(?P<name>[^"]+)"\s*:\s*\{')


@dataclass
class Probe:
    """Where the readiness request goes: `proto` is "http" or "uwsgi"; `address` is
    ("127.0.0.1", port) or a unix socket path."""

    proto: str
    address: tuple[str, int] | str


@dataclass
class Rewritten:
    text: str
    #: options the test adds on the command line (see the module doc)
    extra_args: list[str]
    probe: Probe
    #: one line per change, for failure messages and the comparison script
    changes: list[str] = field(default_factory=list)


def fmt_of(name: str) -> str:
    """"ini", "yaml" or "json", from the file name as uWSGI decides it."""
    if name.endswith((".yml", ".yaml")):
        return "yaml"
    if name.endswith((".json", ".js")):
        return "json"
    return "ini"


def rewrite(
    text: str,
    fmt: str,
    workdir: Path,
    app_file: Path,
    mule_file: Path,
    venv: str,
    free_port: Callable[[], int],
    section: str = "uwsgi",
) -> Rewritten:
    """Rewrite `text` (a config in format `fmt`) per the module doc. `section` is the one
    the server will read; its bindings and app decide the probe and the added options."""
    out: list[str] = []
    changes: list[str] = []
    bindings: list[tuple[str, Probe]] = []  # (key, where) in the used section
    has_app = False
    protocol_http = False
    current = None
    used = {section}  # the section read, and those it loads with `ini = :name`
    counter = {"n": 0}

    def path_in_workdir(stem: str) -> str:
        counter["n"] += 1
        return str(workdir / f"{stem}-{counter['n']}")

    line_re, section_re = {"ini": (INI_LINE, INI_SECTION), "yaml": (YAML_LINE, YAML_SECTION),
                           "json": (JSON_LINE, JSON_SECTION)}[fmt]
    for line in text.splitlines(keepends=True):
        sec = section_re.match(line)
        if sec:
            current = sec.group("name").strip()
        m = line_re.match(line)
        stripped = line.lstrip()
        if m is None or (fmt != "json" and stripped.startswith(("#", ";"))):
            out.append(line)
            continue
        raw_key = m.group("key")
        key = raw_key.strip().strip('"').lower().replace("_", "-")
        raw_value = m.group("value")
        value = _unquote(raw_value, fmt)
        in_used = current in used
        if in_used and key in ("ini", "inherit", "include") and value.strip().startswith(":"):
            used.add(value.strip()[1:])
        new_key = None
        new_value: str | None = value
        drop = False

        if key in MODULE_KEYS:
            _, colon, func = value.partition(":")
            new_value = APP_MODULE + (colon + func if colon else "")
            has_app |= in_used
        elif key in APP_FILE_KEYS:
            new_value = str(app_file)
            has_app |= in_used
        elif key == "mount":
            mountpoint, _, _ = value.partition("=")
            new_value = f"{mountpoint}={app_file}"
            has_app |= in_used
        elif key == "chdir":
            new_value = str(workdir)
        elif key in VENV_KEYS:
            new_value = venv
        elif key in PYTHONPATH_KEYS:
            new_value = str(workdir)
        elif key == "mule" and value.strip().endswith(".py"):
            new_value = str(mule_file)
        elif key in IMPORT_KEYS or key in DROP_KEYS:
            drop = True
        elif key in HTTP_SOCKET_KEYS or key in UWSGI_SOCKET_KEYS or key in OTHER_SOCKET_KEYS \
                or key in STATS_KEYS:
            where = _address(value, workdir, free_port, path_in_workdir)
            new_value = where if isinstance(where, str) else f"{where[0]}:{where[1]}"
            if in_used and key not in STATS_KEYS:
                bindings.append((key, Probe("?", where)))
        elif key == "protocol":
            protocol_http = in_used and value.strip() == "http" or protocol_http
        elif key in PIDFILE_KEYS:
            new_value = path_in_workdir("pid")
        elif key in LOGFILE_KEYS:
            new_value = path_in_workdir("log")
        elif key in DAEMONIZE_KEYS:
            new_key = DAEMONIZE_KEYS[key]
            new_value = path_in_workdir("log")
        elif key == "master-fifo":
            new_value = path_in_workdir("fifo")
        elif key == "spooler":
            new_value = path_in_workdir("spool")
        elif key in LOGGER_KEYS and "file:" in value:
            new_value = re.sub(r"file:(logfile=)?[^,\s]+",
                               lambda mm: f"file:{mm.group(1) or ''}{path_in_workdir('log')}",
                               value)
        elif key in PUSH_KEYS and IPV4.search(value):
            new_value = IPV4.sub("127.0.0.1", value)
        elif key.startswith("exec-"):
            new_value = "true"
        elif key.startswith("hook-") and value.strip().startswith("exec:"):
            new_value = "exec:true"
        elif key in DAEMON_KEYS:
            new_value = "true"
        elif key in CRON_KEYS:
            new_value = " ".join(value.split()[:5] + ["true"])
        else:
            out.append(line)
            continue

        if drop:
            changes.append(f"dropped {raw_key.strip()} = {value}")
            if fmt == "json":
                continue
            out.append("# corpus: dropped " + line.lstrip())
            continue
        if new_value == value and new_key is None:
            out.append(line)
            continue
        shown_key = raw_key if new_key is None else raw_key.replace(raw_key.strip().strip('"'),
                                                                     new_key)
        changes.append(f"{raw_key.strip()} = {value}  ->  {shown_key.strip()} = {new_value}")
        out.append(shown_key + m.group("sep") + _quote(new_value, fmt)
                   + (m.group("comma") if fmt == "json" else "") + m.group("eol"))

    extra: list[str] = []
    probe = _pick_probe(bindings, protocol_http)
    if probe is None:
        port = free_port()
        extra += ["--http-socket", f"127.0.0.1:{port}"]
        probe = Probe("http", ("127.0.0.1", port))
        changes.append(f"the file binds nothing: added --http-socket 127.0.0.1:{port}")
    if not has_app:
        extra += ["--wsgi-file", str(app_file)]
        changes.append(f"the file names no app: added --wsgi-file {app_file}")
    return Rewritten("".join(out), extra, probe, changes)


def _unquote(raw: str, fmt: str) -> str:
    if fmt == "json":
        try:
            v = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(v, bool):
            return "true" if v else "false"
        return v if isinstance(v, str) else json.dumps(v)
    return raw


def _quote(value: str, fmt: str) -> str:
    return json.dumps(value) if fmt == "json" else value


def _address(value: str, workdir: Path, free_port, path_in_workdir):
    """The replacement for one socket address: a unix path stays a unix path (in the work
    dir), anything else becomes 127.0.0.1 and a free port."""
    v = value.strip()
    if "/" in v.split(",")[0] and ":" not in v.split(",")[0]:
        return path_in_workdir("sock")
    return ("127.0.0.1", free_port())


def _pick_probe(bindings: list[tuple[str, Probe]], protocol_http: bool) -> Probe | None:
    for want in HTTP_SOCKET_KEYS:
        for key, p in bindings:
            if key == want:
                return Probe("http", p.address)
    for key, p in bindings:
        if key in UWSGI_SOCKET_KEYS:
            return Probe("http" if protocol_http else "uwsgi", p.address)
    return None
