"""Generate src/config/uwsgi_options.rs: every option uWSGI 2.0 knows (core, python, http).

Usage (from the repository root, with a snapshot of https://github.com/unbit/uwsgi):

    git -C UWSGI_GIT archive uwsgi-2.0 core plugins/python plugins/http | tar -x -C /tmp/u2
    python3 tests/gen_uwsgi_options.py /tmp/u2 > src/config/uwsgi_options.rs

Each option gets its argument kind and short letter from uWSGI's tables (so the command line
parses like uWSGI's getopt) and one disposition, decided by the rules below:
- an option headrace implements is declared in src/config/spec.rs, which wins at run time; the
  generated row says `Works` for it so the table alone can be counted;
- the config language itself (ini, include, if-*, for, set, ...) is handled by the reader: `Lang`;
- `Accepted(reason)`: ignoring it does not change what the app sees or how a request is
  answered; one warning line at startup names it and gives the reason;
- `Refused(reason)`: ignoring it would silently change behaviour; exit 2 with the reason.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FILES = ["core/uwsgi.c", "plugins/python/python_plugin.c", "plugins/http/http.c"]
ROW = re.compile(r'^\s*\{"([^"]+)",\s*(no|required|optional)_argument,\s*(\'.\'|0)', re.MULTILINE)

# Plugin options of plugins headrace will never be (uWSGI builds them as plugins, so they are
# not in the three tables above), refused by name so users get a reason, not "unknown".
EXTRA = {
    name: "required"
    for name in ["gevent", "gevent-monkey-patch", "gevent-early-monkey-patch", "gevent-wait-for-hub", "ugreen", "ugreen-stacksize", "greenlet", "asyncio", "tornado", "psgi", "rack", "rbrequire", "lua", "php-ini", "php-docroot", "php-index", "php-allowed-ext", "jvm-classpath", "mono-app"]
}

# Reasons, shared by many options; every refusal says what to do instead.
NOT_YET = "not implemented by headrace yet (issue 11 item 3 / later issues)"
LANG = "config language"

# (pattern, disposition, reason): the first pattern that matches the whole name wins.
RULES: list[tuple[str, str, str]] = [
    # The config language, read by headrace's config reader itself.
    ((r"ini|yaml|yml|json|js|include|inherit|set|set-placeholder|set-ph|declare-option2?|"
     r"for|for-glob|for-times|for-readline|endfor|end-for|endif|end-if|"
     r"if-(not-)?(env|exists|file|dir|directory|opt|reload|hostname|plugin)|"
     r"ifenv|ifexists|ifdir|ifplugin|strict|show-config|config|print|iprint"), "Lang", LANG),
    (r"xml|xmlconfig", "Refused", "xml config files are not supported: convert it to ini"),
    # Accepted: nothing the app or a client sees changes.
    (r"plugins?|need-plugins?|plugin-dir|plugins-dir|autoload|plugin-list|plugins-list",
     "Accepted", "python and the http router are built in; other plugins are refused by value"),
    (r"locks|lock-engine|ftok|persistent-ipcsem", "Accepted", "headrace needs no uWSGI locks"),
    (r"offload-threads?", "Accepted", "headrace writes responses without offload threads"),
    (r"vhost|vhost-host", "Accepted", "one app serves every Host"),
    ((r"stats-no-cores|stats-no-metrics|"
     r"enable-metrics|metrics-no-cores|http-stats|http-stats-server"), "Accepted",
     "these stats variants are not implemented: observability only"),
    (r"cheaper|cheaper-.*|cheap|idle", "Accepted",
     "adaptive process spawning not implemented yet: all `processes` workers run all the time"),
    # log-format, log-date, log-4xx/5xx/zero/slow/big, log-micros, log-x-forwarded-for,
    # memory-report, logger, req-logger, log-maxsize, log-backupname, log-reopen,
    # touch-logreopen, log-encoder and log-req-encoder are implemented (spec.rs); these
    # variants are not.
    ((r"log-(master|master-bufsize|sendfile|ioerror|truncate|"
     r"master-stream|master-req-stream)|threaded-logger|logfile-chmod|logfile-chown"), "Accepted",
     "this log variant is not implemented: each process writes to stderr or the logto file"),
    (r"touch-logrotate", "Accepted", "rotate by size with log-maxsize instead"),
    (r"manage-script-name", "Accepted", "without mount every app is served at /"),
    ((r"max-fd|reuse-port|so-keepalive|tcp-nodelay|tcp-fast-open|tcp-fastopen|"
     r"tcp-fast-open-client|tcp-fastopen-client|freebind|no-defer-accept|"
     r"socket-(rcvbuf|sndbuf|send-timeout|write-timeout)|so-send-timeout|so-write-timeout|"
     r"listen-queue-alarm|shutdown-sockets|close-on-exec2?"), "Accepted",
     "socket tuning headrace chooses itself"),
    ((r"harakiri-verbose|harakiri-no-arh|no-harakiri-arh|no-harakiri-after-req-hook|"
     r"backtrace-depth|harakiri-queue-threshold|harakiri-graceful-signal"), "Accepted",
     "harakiri always logs the Python traceback"),
    ((r"no-orphans|skip-zero|skip-atexit|skip-atexit-teardown|reload-mercy|"
     r"worker-reload-mercy|no-threads-wait|use-abort|exit-on-reload|catch-exceptions|"
     r"reaper|master-as-root|master-fifo|no-initgroups|never-swap|ksm|"
     r"thread-stack-size|thread-stacksize|threads-stack-size|threads-stacksize|"
     r"disable-sendfile|honour-stdin|py-tracebacker|clock|pcre-jit|start_response-nodelay|"
     r"wsgi-accept-buffers?|wsgi-env-behaviou?r|max-vars|max-apps|cpu-affinity|prio|"
     r"no-site|py-call-osafterfork|py-call-uwsgi-fork-hooks|wsgi-disable-file-wrapper|"
     r"write-errors-exception-only|write-errors-tolerance|body-read-warning|"
     r"http-auto-chunked|http-processes|http-workers|http-events|http-buffer-size|"
     r"http-manage-expect|http-chunked-input|http-headers-timeout|http-connect-timeout|"
     r"http-quiet|http-use-code-string|http-raw-body|http-harakiri|http-gracetime|"
     r"http-server-name-as-http-host|enable-proxy-protocol|http-enable-proxy-protocol|"
     r"chunked-input-limit|chunked-input-timeout|post-buffering-bufsize|"
     r"alarm.*|.*-alarm|lq-alarm|log-alarm|not-alarm-log|not-log-alarm|"
     r"notify-socket|heartbeat|py-sys-executable|py-executable|py-program-name|"
     r"py-programname|python-version|dot-h|cflags|help|usage|version|"
     r"limit-as|limit-nproc|evil-reload-on-as|evil-reload-on-rss|reload-on-as|"
     r"mem-collector-freq|forkbomb-delay|response-headers-limit|ignore-script-name|"
     r"check-interval|auto-weight|weight|no-fd-passing|reload-os-env|binary-path|"
     r"(http|http-socket|raw|scgi)-modifier[12]|allowed-modifiers|"
     r"websockets?-(max-size|ping-freq|pong-tolerance)"),
     "Accepted", "tuning or diagnostics that do not change what the app or a client sees"),
    # Refused: ignoring these would change behaviour silently.
    ((r"emperor.*|vassal.*|vassals.*|early-emperor|imperial-monitor.*|call-as-emperor.*|"
     r"call-as-vassal.*|exec-as-emperor|exec-as-vassal|hook-as-vassal|hook-emperor.*|"
     r"hook-as-emperor|mount-as-emperor|mount-as-vassal|umount-as-emperor|"
     r"umount-as-vassal"), "Refused", "the Emperor is not supported: run one headrace per app"),
    ((r"gevent.*|async|ugreen.*|greenlet|asyncio|tornado|loop|loop-list|loops-list|"
     r"suspend|resume"), "Refused",
     "async loops are not supported: headrace serves with --threads"),
    (r"psgi|rack|rbrequire|lua|php-.*|jvm-.*|mono-.*|cgi-mode", "Refused",
     "only Python WSGI apps are served"),
    (r"https.*|ssl-.*|sni.*|http-to-https|https-socket.*|suwsgi-socket", "Refused",
     "TLS is not supported: terminate TLS in nginx or another proxy"),
    (r"zerg.*|http-zerg|fastrouter.*|rawrouter.*|sslrouter.*|httprouter", "Refused",
     "not supported: use --http, --http-socket or --socket"),
    ((r"subscribe.*|subscription.*|subscriptions.*|unsubscribe.*|start-unsubscribed|"
     r"http-subscription.*|http-resubscribe|legion.*|.*-legion|unique-legion-cron|"
     r"cron-legion"), "Refused", "subscriptions and legions are not supported"),
    ((r"chroot|jail.*|jailed|libjail|jidfile|jid-file|pivot-root|pivot_root|unshare2?|"
     r"setns.*|namespace.*|ns|ns-net|cgroup.*|cap|.*-in-jail|.*-jail|"
     r"(un)?privileged-binary-patch.*|refork.*|re-fork.*"), "Refused",
     "process isolation is not supported: use the container or systemd settings"),
    (r"stats-push|stats-pushers?-default-freq|snmp.*|carbon.*|rrdtool.*|metric.*|metrics-dir.*",
     "Refused", "metric pushers are not supported"),
    (r"spooler.*|touch-spoolers-reload", "Refused",
     "the spooler is not implemented yet: run tasks with a queue such as celery or rq"),
    (r"mule.*|mules|farm|touch-mules-reload", "Refused",
     "mules are not implemented yet: run the code as a separate process"),
    (r"cache.*|load-file-in-cache.*|add-cache-item|check-cache", "Refused",
     "this cache option is not implemented (cache2, cache, cache-blocksize, cache-store, cache-store-sync and cache-expire-freq are): see the README's cache section"),
    (r"cron.*|unique-cron|signal.*|timer|rbtimer|signals-bufsize", "Refused",
     "sending signals to another instance is not implemented (local signals, timers and cron are): raise them from the app with uwsgi.signal()"),
    ((r"attach-daemon.*|smart-attach-daemon.*|attach-control-daemon|daemons-honour-stdin|"
     r"worker-exec2?"), "Refused",
     "a worker runs the Python app: to run another program beside the server, use attach-daemon"),
    ((r"static-.*|check-static.*|file-serve-mode|fileserve-mode|mime-file|mimefile|"
     r"honour-range"), "Refused", ("this static-file option is not implemented (static-map, static-map2, "
     "check-static, static-index, static-safe, static-skip-ext, static-gzip* and static-expires* "
     "are): serve those files with nginx")),
    ((r"route.*|final-route.*|error-route.*|response-route.*|router-list|routers-list|"
     r"error-page-.*"), "Refused", NOT_YET + ": internal routing changes responses"),
    (r"del-header|rem-header|collect-header|pull-header|response-header-collect",
     "Refused", NOT_YET + ": response headers would differ"),
    (r"mount|mountpoint-check|mount-check|check-mount|check-mountpoint|worker-mount", "Refused",
     NOT_YET + ": one app per headrace, selected with module or wsgi-file"),
    (r"virtualenv|venv|home|pyhome", "Refused",
     NOT_YET + ": install headrace in that virtualenv and run its headrace"),
    (r"hook-.*|exec-.*|call-.*|after-request-(hook|call)|mount-.*|umount-.*", "Refused",
     "hooks are not supported: run the command before starting headrace"),
    ((r"logger-list|loggers-list|log-(route|req-route|filter|"
     r"socket|syslog|drain)"), "Refused",
     "log plugins are not supported: use logto, logger file:PATH or read stderr"),
    (r"touch-.*|fs-.*|reload-on-fd|brutal-reload-on-fd", "Refused", NOT_YET),
]


def disposition(name: str, works: set[str]) -> tuple[str, str]:
    if name in works:
        return "Works", ""
    for pattern, disp, reason in RULES:
        if re.fullmatch(pattern, name):
            return disp, reason
    return "Refused", "not implemented by headrace"


def rust_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main() -> None:
    root = Path(sys.argv[1])
    spec = (Path(__file__).resolve().parent.parent / "src/config/spec.rs").read_text()
    block = spec.split("// options! {", 1)[1].split("// }", 1)[0]
    works = set(re.findall(r'"([a-z0-9][a-z0-9-]*)"', block))
    rows: dict[str, tuple[str, str]] = {}
    for f in FILES:
        for m in ROW.finditer((root / f).read_text()):
            rows.setdefault(m.group(1), (m.group(2), m.group(3)))
    for name, arg in EXTRA.items():
        rows.setdefault(name, (arg, "0"))
    reasons: list[str] = []
    out = []
    for name in sorted(rows):
        arg, short = rows[name]
        disp, reason = disposition(name, works)
        if reason and reason not in reasons:
            reasons.append(reason)
        disp_rs = disp if not reason else f"{disp}({reasons.index(reason)})"
        short_rs = "None" if short == "0" else f"Some({short})"
        arg_rs = {"no": "No", "required": "Required", "optional": "Optional"}[arg]
        out.append(f"    u({rust_str(name)}, {arg_rs}, {short_rs}, {disp_rs}),")
    print("//! GENERATED by tests/gen_uwsgi_options.py from uWSGI 2.0's option tables (core/uwsgi.c,")
    print("//! plugins/python/python_plugin.c, plugins/http/http.c); do not edit by hand, edit the")
    print("//! rules in the generator and run it again (see its docstring).")
    print()
    print("use super::table::{")
    print("    u,")
    print("    Arg::{No, Optional, Required},")
    print("    Disp::{Accepted, Lang, Refused, Works},")
    print("    UwsgiOpt,")
    print("};")
    print()
    print("/// The reasons rows point at by index.")
    print("pub const REASONS: &[&str] = &[")
    for r in reasons:
        print(f"    {rust_str(r)},")
    print("];")
    print()
    print("/// Every uWSGI option, sorted by name for binary search.")
    print("#[rustfmt::skip]")
    print("pub const UWSGI_OPTIONS: &[UwsgiOpt] = &[")
    for i in range(0, len(out), 3):
        print("   " + "".join(out[i:i + 3]).replace("    u(", " u("))
    print("];")


if __name__ == "__main__":
    main()
