"""uWSGI's request logging options: --log-format (every variable), --logformat-strftime,
--log-date, --log-4xx/5xx/zero/slow/big with --disable-logging, --log-x-forwarded-for,
--log-micros and --memory-report.

The request line is written by the worker on every front, so each case runs on the direct
(`--http-socket`) and router (`--http`) fronts. Each format starts with `LF|` and ends with `|`,
so the line under test is found exactly; values that depend on the clock are matched with a
regex and then checked against the time of the request.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from support import REQUEST_LINE, Conn, app, build_request, free_port, wait_until

APP = app("basic.py")
FRONTS = ["direct", "router"]

UA = "lf-agent/1.0"
REFERER = "http://ref.example/page"
HOST = "lf.example:8080"


def start(headrace, front: str, *args: str, env: dict[str, str] | None = None):
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    srv = headrace(opt, f"127.0.0.1:{port}", "--wsgi-file", APP, "--master",
                   "--processes", "1", *args, port=port, probe=None, workers=1, bind=False,
                   env=env)
    srv.port = port
    return srv


def get(srv, path: str, method: str = "GET", body: bytes = b"", headers=None):
    hdrs = [("User-Agent", UA), ("Referer", REFERER), ("X-Custom", "custom-value")]
    raw = build_request(method, path, headers=hdrs + list(headers or []), body=body, host=False)
    raw = raw.replace(b"\r\n", f"\r\nHost: {HOST}\r\n".encode(), 1)
    return srv.request(raw, method)


def lf_lines(srv, count: int = 1) -> list[str]:
    def found():
        lines = [x for x in srv.log().splitlines() if x.startswith("LF|")]
        return lines if len(lines) >= count else None

    return wait_until(found, 10, f"{count} LF| lines; log:\n{srv.tail()}")


def one_line(headrace, front, fmt, path="/list?q=1", method="GET", body=b"", args=(), env=None):
    srv = start(headrace, front, "--log-format", f"LF|{fmt}|", *args, env=env)
    before = time.time()
    resp = get(srv, path, method, body)
    after = time.time()
    line = lf_lines(srv)[0]
    return srv, resp, line, before, after


def default_line(headrace, front, path="/list?q=1", method="GET", body=b""):
    """The same request's default (uWSGI-format) line, for the sizes and counts it gives."""
    srv = start(headrace, front)
    get(srv, path, method, body)
    return srv.wait_request_lines(1)[0]


# --- variables with a fixed value ----------------------------------------------------------

FIXED = [
    ("addr", "127.0.0.1"),
    ("user", "-"),  # no REMOTE_USER: uWSGI writes `-` for an empty variable
    ("method", "GET"),
    ("uri", "/list?q=1"),
    ("proto", "HTTP/1.1"),
    ("status", "200"),
    ("rsize", "11"),
    ("uagent", UA),
    ("referer", REFERER),
    ("host", HOST),
    ("wid", "1"),
    ("core", "0"),
    ("switches", "1"),
    ("cl", "0"),
    ("modifier1", "0"),
    ("modifier2", "0"),
    ("werr", "0"),
    ("rerr", "0"),
    ("ioerr", "0"),
    ("var.HTTP_X_CUSTOM", "custom-value"),
    ("var.QUERY_STRING", "q=1"),
    ("var.REQUEST_METHOD", "GET"),
    ("var.HTTP_X_MISSING", "-"),
    ("metric.anything", "0"),  # no uWSGI metrics: uWSGI writes 0 for an unknown one
    ("nosuchvar", "-"),  # an unset logvar
]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(("var", "want"), FIXED, ids=[v for v, _ in FIXED])
def test_fixed_variable(headrace, front, var, want):
    _, resp, line, _, _ = one_line(headrace, front, f"%({var})")
    assert resp.status == 200
    assert line == f"LF|{want}|"


@pytest.mark.parametrize("front", FRONTS)
def test_cl_is_the_request_content_length(headrace, front):
    _, resp, line, _, _ = one_line(headrace, front, "%(cl) %(method) %(rsize)",
                                   path="/echo?n=5", method="POST", body=b"hello")
    assert resp.status == 200
    assert line == "LF|5 POST 5|"


@pytest.mark.parametrize("front", FRONTS)
def test_pid_is_the_worker(headrace, front):
    _, resp, line, _, _ = one_line(headrace, front, "%(pid)", path="/pid")
    assert line == f"LF|{int(resp.body)}|"


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("var", ["hsize", "headers", "vars", "pktsize", "size"])
def test_counts_match_the_default_line(headrace, front, var):
    base = default_line(headrace, front)
    want = {
        "hsize": base["hbytes"],
        "headers": base["nheaders"],
        "vars": base["vars"],
        "pktsize": base["vbytes"],
        "size": str(int(base["hbytes"]) + int(base["size"])),
    }[var]
    _, _, line, _, _ = one_line(headrace, front, f"%({var})")
    assert line == f"LF|{want}|"


# --- time values ---------------------------------------------------------------------------

@pytest.mark.parametrize("front", FRONTS)
def test_unix_times(headrace, front):
    _, _, line, before, after = one_line(
        headrace, front, "%(time) %(tmsecs) %(tmicros) %(epoch)")
    m = re.fullmatch(r"LF\|(\d+) (\d+) (\d+) (\d+)\|", line)
    assert m, line
    t, ms, us, epoch = (int(x) for x in m.groups())
    assert int(before) - 1 <= t <= after
    assert ms // 1000 == t and us // 1000 == ms
    assert before - 1 <= us / 1e6 <= after
    assert t <= epoch <= after + 1


@pytest.mark.parametrize("front", FRONTS)
def test_durations(headrace, front):
    _, _, line, before, after = one_line(
        headrace, front, "%(msecs) %(micros) %(secs)", path="/sleep?s=0.25")
    m = re.fullmatch(r"LF\|(\d+) (\d+) (\d\.\d{6})\|", line)
    assert m, line
    ms, us, secs = int(m[1]), int(m[2]), float(m[3])
    assert 250 <= ms <= (after - before) * 1000 + 1
    # One measurement gives all three (uWSGI's end - start).
    assert ms == us // 1000
    assert secs == pytest.approx(us / 1e6, abs=1e-6)


LTIME = r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}"


@pytest.mark.parametrize("front", FRONTS)
def test_ltime_and_ftime(headrace, front):
    _, _, line, before, after = one_line(headrace, front, "[%(ltime)] [%(ftime)]")
    m = re.fullmatch(rf"LF\|\[({LTIME})\] \[({LTIME})\]\|", line)
    assert m, line
    assert m[1] == m[2]  # without --logformat-strftime, ftime is ltime
    t = datetime.strptime(m[1], "%d/%b/%Y:%H:%M:%S %z").timestamp()
    assert int(before) - 1 <= t <= after


@pytest.mark.parametrize("front", FRONTS)
def test_ftime_uses_log_date_format_with_logformat_strftime(headrace, front):
    _, _, line, before, _ = one_line(
        headrace, front, "%(ftime)", args=("--log-date", "%Y-%m-%d %H", "--logformat-strftime"),
        env={"TZ": "UTC"})
    want = time.strftime("%Y-%m-%d %H", time.gmtime(before))
    assert line == f"LF|{want}|"


@pytest.mark.parametrize("front", FRONTS)
def test_ctime(headrace, front):
    _, _, line, before, after = one_line(headrace, front, "%(ctime)")
    m = re.fullmatch(r"LF\|([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\|", line)
    assert m, line
    t = time.mktime(time.strptime(m[1], "%a %b %d %H:%M:%S %Y"))
    assert int(before) - 1 <= t <= after


@pytest.mark.parametrize("front", FRONTS)
def test_memory(headrace, front):
    _, _, line, _, _ = one_line(headrace, front, "%(rss) %(rssM) %(vsz) %(vszM)")
    m = re.fullmatch(r"LF\|(\d+) (\d+) (\d+) (\d+)\|", line)
    assert m, line
    rss, rss_m, vsz, vsz_m = (int(x) for x in m.groups())
    assert 1 << 20 < rss < vsz
    assert rss_m == rss // (1 << 20) and vsz_m == vsz // (1 << 20)


# --- the format language -------------------------------------------------------------------

ODD = [
    # literal text around and between variables, a lone % and parentheses
    ('%(addr) - %(user) [x] "%(method) %(uri) %(proto)" %(status) 100%',
     '127.0.0.1 - - [x] "GET /list?q=1 HTTP/1.1" 200 100%'),
    ("%%(status)", "%200"),
    # uWSGI's parser: `%()` is no variable, the next character starts one two bytes back
    ("a%()b", "a%a%()b"),
    # an unclosed variable: the text before it, then the whole tail from the last variable
    ("%(status) x %(sta", "200 x  x %(sta"),
]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(("fmt", "want"), ODD, ids=range(len(ODD)))
def test_format_parsing_like_uwsgi(headrace, front, fmt, want):
    srv = start(headrace, front, "--logformat", fmt + "|LF")
    get(srv, "/list?q=1")
    line = wait_until(
        lambda: next((x for x in srv.log().splitlines() if x.endswith("|LF")), None), 10,
        f"the line; log:\n{srv.tail()}")
    assert line == want + "|LF"


# --- which requests are logged -------------------------------------------------------------

def statuses(srv) -> list[str]:
    return [x.split("|")[1] for x in srv.log().splitlines() if x.startswith("LF|")]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(("opts", "paths", "want"), [
    (("--log-4xx",), ["/list", "/status?code=500", "/nothing", "/list", "/status?code=404"],
     ["404 /nothing", "404 /status?code=404"]),
    (("--log-5xx",), ["/list", "/nothing", "/status?code=503", "/raise"],
     ["503 /status?code=503", "500 /raise"]),
    (("--log-slow", "200"), ["/list", "/pid", "/sleep?s=0.3"], ["200 /sleep?s=0.3"]),
    (("--log-big", "11"), ["/status", "/pid?x=1" + "1" * 20, "/list"], ["200 /list"]),
    (("--log-zero",), ["/list", "/empty", "/status?code=204"],
     ["200 /empty", "204 /status?code=204"]),
    (("--log-4xx", "--log-5xx"), ["/list", "/nothing", "/raise"], ["404 /nothing", "500 /raise"]),
], ids=["4xx", "5xx", "slow", "big", "zero", "4xx+5xx"])
def test_disabled_logging_keeps_selected(headrace, front, opts, paths, want):
    srv = start(headrace, front, "--disable-logging", "--log-format", "LF|%(status) %(uri)|",
                *opts)
    for p in paths:
        get(srv, p)
    # One worker with one thread writes its lines in request order and the last path is a
    # wanted one: once its line is there, every earlier request has been logged or skipped.
    lines = lf_lines(srv, len(want))
    assert [x[3:-1] for x in lines] == want


@pytest.mark.parametrize("front", FRONTS)
def test_conditions_do_nothing_while_logging_is_on(headrace, front):
    srv = start(headrace, front, "--log-4xx", "--log-format", "LF|%(status)|")
    for p in ["/list", "/nothing", "/pid"]:
        get(srv, p)
    assert lf_lines(srv, 3) == ["LF|200|", "LF|404|", "LF|200|"]


# --- options of the default line -----------------------------------------------------------

@pytest.mark.parametrize("front", FRONTS)
def test_x_forwarded_for_in_default_line_and_format(headrace, front):
    srv = start(headrace, front, "--log-x-forwarded-for")
    get(srv, "/list", headers=[("X-Forwarded-For", "10.1.2.3")])
    get(srv, "/list")
    lines = srv.wait_request_lines(2)
    assert [m["addr"] for m in lines] == ["10.1.2.3", "127.0.0.1"]

    # uWSGI logs the whole header, every hop included.
    srv2 = start(headrace, front, "--log-x-forwarded-for", "--log-format", "LF|%(addr)|")
    get(srv2, "/list", headers=[("X-Forwarded-For", "10.9.9.9, 10.0.0.1")])
    assert lf_lines(srv2) == ["LF|10.9.9.9, 10.0.0.1|"]


@pytest.mark.parametrize("front", FRONTS)
def test_without_x_forwarded_for_option_the_peer_is_logged(headrace, front):
    srv = start(headrace, front)
    get(srv, "/list", headers=[("X-Forwarded-For", "10.1.2.3")])
    assert srv.wait_request_lines(1)[0]["addr"] == "127.0.0.1"


@pytest.mark.parametrize("front", FRONTS)
def test_log_micros(headrace, front):
    srv = start(headrace, front, "--log-micros")
    get(srv, "/sleep?s=0.05")
    text = srv.wait_log(" micros (HTTP/1.1 200)")
    line = next(x for x in text.splitlines() if x.startswith("[pid: "))
    m = REQUEST_LINE.match(line)
    assert m, line
    assert re.search(r" => generated \d+ bytes in \d+ micros \(HTTP/1\.1 200\) ", line), line
    assert int(m["msecs"]) >= 50_000


@pytest.mark.parametrize("front", FRONTS)
def test_memory_report_prefix(headrace, front):
    srv = start(headrace, front, "--memory-report")
    get(srv, "/list")
    text = srv.wait_log("{rss usage: ")
    line = next(x for x in text.splitlines() if x.startswith("{address space usage: "))
    m = re.fullmatch(
        r"\{address space usage: (\d+) bytes/(\d+)MB\} \{rss usage: (\d+) bytes/(\d+)MB\} (.*)",
        line)
    assert m, line
    vsz, vsz_m, rss, rss_m = (int(m[i]) for i in range(1, 5))
    assert vsz_m == vsz // (1 << 20) and rss_m == rss // (1 << 20)
    assert 1 << 20 < rss < vsz
    rest = REQUEST_LINE.match(m[5])
    assert rest and rest["uri"] == "/list", line


def test_log_date_prefixes_server_lines_not_request_lines(headrace):
    srv = start(headrace, "direct", "--log-date")
    get(srv, "/list")
    lines = srv.wait_request_lines(1)
    assert lines[0]["uri"] == "/list"  # the request line starts with `[pid: `, no date
    text = srv.log()
    start_line = next(x for x in text.splitlines() if "*** Starting headrace" in x)
    assert re.fullmatch(
        r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} - \*\*\* Starting headrace .*",
        start_line), start_line


def test_log_date_with_strftime_format(headrace):
    srv = start(headrace, "direct", "--logdate", "%Y-%m-%d", env={"TZ": "UTC"})
    text = srv.wait_log("*** Starting headrace")
    start_line = next(x for x in text.splitlines() if "*** Starting headrace" in x)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert start_line.startswith(f"{day} - *** Starting headrace "), start_line


# --- log files: loggers, rotation by size, reopening -----------------------------------------

def file_lines(path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def request_lines_in(paths) -> list[str]:
    out = []
    for p in paths:
        for x in file_lines(p):
            if x.startswith("[pid: "):
                assert REQUEST_LINE.match(x), f"torn or malformed line in {p}: {x!r}"
                out.append(x)
    return out


def start_to_file(headrace, front, *args, processes: int = 1):
    """A server whose log goes to a file: ready when its port accepts (no probe request)."""
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    srv = headrace(opt, f"127.0.0.1:{port}", "--wsgi-file", APP, "--master",
                   "--processes", str(processes), *args, port=port, probe=None, workers=0,
                   bind=False)
    srv.port = port
    return srv


@pytest.mark.parametrize("front", FRONTS)
def test_rotation_by_size_keeps_every_line(headrace, front, tmp_path):
    log = tmp_path / "app.log"
    srv = start_to_file(headrace, front, "--logto", str(log), "--log-maxsize", "4000",
                        processes=2)
    per_client, clients = 60, 3
    errors = []

    def client(n):
        try:
            for i in range(per_client):
                assert get(srv, f"/list?c={n}&i={i}").status == 200
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    total = per_client * clients

    def every_line():
        lines = request_lines_in(sorted(tmp_path.glob("app.log*")))
        return lines if len(lines) >= total else None

    lines = wait_until(every_line, 10, f"{total} request lines across the rotated files")
    uris = sorted(x.split(" GET ", 1)[1].split(" ", 1)[0] for x in lines)
    assert uris == sorted(f"/list?c={n}&i={i}" for n in range(clients) for i in range(per_client))
    rotated = sorted(tmp_path.glob("app.log.*"))
    # 180 lines of ~200 bytes in 4000-byte files: several rotations happened.
    assert len(rotated) >= 3, rotated
    for p in rotated:
        text = p.read_text()
        assert len(text) > 4000 - 400, (p, len(text))
    notes = [x for p in rotated for x in file_lines(p) if "triggering rotation to" in x]
    assert len(notes) == len(rotated)
    assert all(re.fullmatch(
        r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} - logsize: \d+, "
        r"triggering rotation to .*/app\.log\.\d+(\.\d+)?\.\.\.", x) for x in notes), notes


def test_rotation_uses_backupname(headrace, tmp_path):
    log, backup = tmp_path / "app.log", tmp_path / "old.log"
    srv = start_to_file(headrace, "direct", "--logto", str(log), "--log-maxsize", "1500",
                        "--log-backupname", str(backup))
    for i in range(8):  # ~400 bytes of startup lines and ~200 per request line
        get(srv, f"/list?i={i}")
    wait_until(lambda: backup.exists() and "triggering rotation to" in backup.read_text(), 10,
               "the rotated file")
    assert f"triggering rotation to {backup}..." in backup.read_text()
    assert not list(tmp_path.glob("app.log.*"))  # the backup name replaces PATH.UNIXTIME


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("how", ["log-reopen", "touch-logreopen"])
def test_reopen_after_logrotate_moves_the_file(headrace, front, how, tmp_path):
    log, moved, touch = tmp_path / "app.log", tmp_path / "app.log.1", tmp_path / "reopen"
    touch.write_text("")
    opts = ["--log-reopen"] if how == "log-reopen" else ["--touch-logreopen", str(touch)]
    srv = start_to_file(headrace, front, "--logto", str(log), *opts)
    get(srv, "/list?n=1")
    wait_until(lambda: request_lines_in([log]), 10, "the first line")
    log.rename(moved)  # what logrotate does, then it touches the file or signals
    touch.write_text("x")
    get(srv, "/list?n=2")
    wait_until(lambda: request_lines_in([log]), 10, "a line in the new file")
    assert [x.split(" GET ")[1].split(" ")[0] for x in request_lines_in([moved])] == ["/list?n=1"]
    assert [x.split(" GET ")[1].split(" ")[0] for x in request_lines_in([log])] == ["/list?n=2"]


@pytest.mark.parametrize("front", FRONTS)
def test_req_logger_file_takes_request_lines_only(headrace, front, tmp_path):
    req = tmp_path / "req.log"
    srv = start(headrace, front, "--req-logger", f"file:{req}")
    get(srv, "/list")
    lines = wait_until(lambda: request_lines_in([req]), 10, "the request line")
    assert len(lines) == 1 and " GET /list => generated 11 bytes " in lines[0]
    assert "*** Starting headrace" in srv.log()
    assert srv.request_lines() == []
    assert not [x for x in file_lines(req) if not x.startswith("[pid: ")]


@pytest.mark.parametrize("front", FRONTS)
def test_logger_file_takes_everything(headrace, front, tmp_path):
    path = tmp_path / "all.log"
    srv = start_to_file(headrace, front, "--logger", f"file:{path}")
    get(srv, "/list")
    wait_until(lambda: request_lines_in([path]), 10, "the request line")
    assert "*** Starting headrace" in path.read_text()
    assert "*** Starting headrace" not in srv.log()


@pytest.mark.parametrize(("value", "why"), [
    ("graylog2:127.0.0.1:12201", ("expected file:PATH, stdio, syslog[:IDENT[,FACILITY]] or "
     "socket:ADDR: other log plugins are not supported")),
    ("file:", "expected file:PATH"),
])
def test_logger_refuses_what_it_cannot_do(headrace, value, why):
    srv = headrace("--wsgi-file", APP, "--logger", value, wait=False)
    assert srv.proc.wait(10) == 2
    assert f'invalid logger "{value}" on the command line: {why}' in srv.log()


# --- log encoders --------------------------------------------------------------------------

@pytest.mark.parametrize("front", FRONTS)
def test_json_encoder_wraps_every_line(headrace, front):
    srv = start(headrace, front, "--log-encoder", 'json {"unix":${unix},"msg":"${msg}"}',
                "--log-encoder", "nl")
    before = int(time.time())
    get(srv, '/list?q="x"')
    wait_until(lambda: " GET /list?q=" in srv.log(), 10, f"the request line; {srv.tail()}")
    # the shutdown lines too: every line the server wrote is one JSON object
    srv.stop()
    records = [json.loads(x) for x in srv.log().splitlines()]
    assert all(set(r) == {"unix", "msg"} for r in records)
    assert all(before - 60 <= r["unix"] <= time.time() + 1 for r in records)
    msgs = [r["msg"] for r in records]
    assert msgs[0] == '[log-encoder] registered json {"unix":${unix},"msg":"${msg}"}'
    assert any(m.startswith("*** Starting headrace ") for m in msgs)
    reqs = [REQUEST_LINE.match(m) for m in msgs if m.startswith("[pid: ")]
    assert len(reqs) == 1 and reqs[0] and reqs[0]["uri"] == '/list?q="x"'


@pytest.mark.parametrize("front", FRONTS)
def test_req_encoder_applies_to_the_req_logger(headrace, front, tmp_path):
    req = tmp_path / "req.log"
    srv = start(headrace, front, "--req-logger", f"file:{req}",
                "--log-req-encoder", "prefix REQ ", "--log-encoder", "format ${msg}|MAIN",
                "--log-encoder", "nl")
    get(srv, "/list")
    lines = wait_until(lambda: file_lines(req), 10, "the request line")
    assert len(lines) == 1 and lines[0].startswith("REQ [pid: ")
    assert REQUEST_LINE.match(lines[0][4:])
    assert all(x.endswith("|MAIN") for x in srv.log().splitlines())


def test_unknown_encoder_is_refused(headrace):
    srv = headrace("--wsgi-file", APP, "--log-encoder", "gzip", wait=False)
    assert srv.proc.wait(10) == 2
    assert 'invalid log-encoder "gzip" on the command line: unknown log encoder "gzip"' in srv.log()


# --- the same format through uWSGI 2.0.30 (pyuwsgi) ------------------------------------------

# Variables whose values do not depend on how each server counts its own response head and
# environ (hsize, headers, vars, pktsize and switches do: those follow the default line).
SAME_AS_UWSGI = (
    "%(addr)|%(user)|%(method) %(uri) %(proto)|%(status)|%(rsize)|%(uagent)|%(referer)|"
    "%(var.HTTP_X_CUSTOM)|%(var.QUERY_STRING)|%(var.NOPE)|%(cl)|%(metric.x)|%(foo)|%(werr)|"
    "%(rerr)|%(ioerr)|%(core)|%(wid)|%(modifier1)|%(modifier2)|a%()b|100% %%(status)|"
)


def test_format_matches_uwsgi(headrace, tmp_path):
    exe = shutil.which("uwsgi", path=str(Path(sys.executable).parent)) or shutil.which("uwsgi")
    if exe is None:
        pytest.fail("pyuwsgi's uwsgi is not installed (./dev setup installs pyuwsgi)")
    uport = free_port()
    ulog = tmp_path / "uwsgi.log"
    with open(ulog, "wb") as out:
        uw = subprocess.Popen(
            [exe, "--http-socket", f"127.0.0.1:{uport}", "--wsgi-file", APP, "--master",
             "--log-format", "LF|" + SAME_AS_UWSGI],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        class Uwsgi:
            port = uport

            @staticmethod
            def request(raw, method):
                s = socket.create_connection(("127.0.0.1", uport), timeout=10)
                with Conn(s) as c:
                    c.send(raw)
                    return c.read_response(method)

        def uwsgi_up():
            try:
                return get(Uwsgi, "/list?q=1").status == 200
            except OSError:
                return False

        wait_until(uwsgi_up, 15, "uWSGI to serve")
        theirs = wait_until(
            lambda: [x for x in ulog.read_text().splitlines() if x.startswith("LF|")], 10,
            "uWSGI's line")
        srv = start(headrace, "direct", "--log-format", "LF|" + SAME_AS_UWSGI)
        get(srv, "/list?q=1")
        ours = lf_lines(srv)
        assert ours[0] == theirs[0]
        assert ours[0] == ("LF|127.0.0.1|-|GET /list?q=1 HTTP/1.1|200|11|lf-agent/1.0|"
                           "http://ref.example/page|custom-value|q=1|-|0|0|-|0|0|0|0|1|0|0|"
                           "a%|a%()b|100% %200|")
    finally:
        uw.send_signal(signal.SIGINT)
        uw.wait(10)


def test_log_prefix_is_log_date_with_a_fixed_text(headrace):
    # uWSGI 2.0 handles log-prefix with log-date's function: the text is a strftime format.
    srv = start(headrace, "direct", "--log-prefix", "[app1]")
    get(srv, "/list")
    srv.wait_request_lines(1)
    text = srv.log()
    assert "[app1] - *** Starting headrace " in text
    assert all(x.startswith(("[app1] - ", "[pid: ")) for x in text.splitlines()), text


UWSGI_PAIRS = [
    (b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/list?q=1"), (b"PATH_INFO", b"/list"),
    (b"QUERY_STRING", b"q=1"), (b"SERVER_PROTOCOL", b"HTTP/1.0"),
    (b"SERVER_NAME", b"nginx.example"), (b"SERVER_PORT", b"80"),
    (b"REMOTE_ADDR", b"192.0.2.7"), (b"REMOTE_USER", b"alice"),
    (b"HTTP_HOST", b"nginx.example"), (b"HTTP_USER_AGENT", b"ua-via-nginx"),
    (b"HTTP_X_FORWARDED_FOR", b"198.51.100.1"), (b"HTTP_X_CUSTOM", b"c1"),
]


def uwsgi_request(port: int) -> bytes:
    data = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in UWSGI_PAIRS)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("<BHB", 0, len(data), 0) + data)
        resp = b""
        while chunk := s.recv(65536):
            resp += chunk
    return resp


def test_uwsgi_protocol_front_default_line_shows_remote_user(headrace):
    port = free_port()
    srv = headrace("--socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--master",
                   port=port, probe=None, workers=1, bind=False)
    assert uwsgi_request(port).startswith(b"HTTP/1.0 200 OK\r\n")
    line = srv.wait_request_lines(1)[0]
    assert (line["addr"], line["user"], line["uri"]) == ("192.0.2.7", "alice", "/list?q=1")


def test_uwsgi_protocol_front_reads_the_packet_variables(headrace):
    """Behind nginx (`--socket`), the variables come from the uwsgi packet."""
    port = free_port()
    srv = headrace("--socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--master",
                   "--log-x-forwarded-for", "--log-format",
                   "LF|%(addr)|%(host)|%(uagent)|%(referer)|%(method) %(uri) %(proto)|"
                   "%(status)|%(rsize)|%(var.HTTP_X_CUSTOM)|%(user)|",
                   port=port, probe=None, workers=1, bind=False)
    resp = uwsgi_request(port)
    assert resp.startswith(b"HTTP/1.0 200 OK\r\n"), resp
    assert lf_lines(srv) == [
        "LF|198.51.100.1|nginx.example|ua-via-nginx|-|GET /list?q=1 HTTP/1.0|200|11|c1|alice|"
    ]
