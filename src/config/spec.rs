//! Every option, declared once: its name, aliases, kind, default and help. The command line,
//! ini files and environment variables are all read through this table.

/// How an option takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A switch: `--master` on the command line, `master = true` in ini.
    Flag,
    /// One value; the last one given wins.
    Value,
    /// Repeatable; every value is kept, in order.
    Multi,
}

/// One option's declaration.
#[derive(Debug)]
pub struct OptSpec {
    /// The uWSGI name, also the ini key and (upper-cased, `-` → `_`) the env suffix.
    pub name: &'static str,
    /// Single-letter command-line form.
    pub short: Option<char>,
    /// Other long names that mean the same.
    pub aliases: &'static [&'static str],
    /// How it takes values.
    pub kind: Kind,
    /// Default value, as text, parsed like any other source.
    pub default: Option<&'static str>,
    /// Set when headrace accepts the option for compatibility but it changes nothing; the text
    /// says why and is logged as a warning when the option is used.
    pub compat: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
    /// The value meant when the option is given on the command line without one.
    pub bare: Option<&'static str>,
}

const fn opt(name: &'static str, kind: Kind, help: &'static str) -> OptSpec {
    OptSpec {
        name,
        short: None,
        aliases: &[],
        kind,
        default: None,
        compat: None,
        help,
        bare: None,
    }
}

const fn bare(mut o: OptSpec, v: &'static str) -> OptSpec {
    o.bare = Some(v);
    o
}

const fn short(mut o: OptSpec, c: char) -> OptSpec {
    o.short = Some(c);
    o
}

const fn aliases(mut o: OptSpec, a: &'static [&'static str]) -> OptSpec {
    o.aliases = a;
    o
}

const fn default(mut o: OptSpec, d: &'static str) -> OptSpec {
    o.default = Some(d);
    o
}

const fn compat(mut o: OptSpec, why: &'static str) -> OptSpec {
    o.compat = Some(why);
    o
}

use Kind::{Flag, Multi, Value};

/// The option table.
pub const OPTIONS: &[OptSpec] = &[
    opt("http-socket", Multi, "serve HTTP directly from the workers on ADDR (:8000, 127.0.0.1:8000, [::1]:8000, /path.sock)"),
        opt("http", Multi, "serve HTTP on ADDR through the router process, which queues requests and dispatches them to free workers"),
        short(aliases(opt("socket", Multi, "serve the uwsgi protocol (nginx uwsgi_pass) from the workers on ADDR"), &["uwsgi-socket"]), 's'),
    bare(short(opt("chmod-socket", Value, "permissions of unix sockets, octal (bare: 666)"), 'C'), "666"),
    default(opt("queue-timeout", Value, "router: answer 503 to a request that waited this many seconds for a worker (0 = wait)"), "0"),
    default(opt("max-queue", Value, "router: answer 503 at once when this many requests already wait (0 = no limit)"), "0"),
    default(opt("post-buffering", Value, "router: request bodies larger than this many bytes spill to a temporary file (0 = 1 MiB)"), "0"),
    aliases(opt("wsgi-file", Value, "load the WSGI app from this Python file"), &["file"]),
    short(aliases(opt("module", Value, "load the WSGI app from MODULE[:CALLABLE]"), &["wsgi"]), 'w'),
    default(opt("callable", Value, "name of the WSGI callable"), "application"),
    opt("chdir", Value, "change to this directory before loading the app"),
    aliases(opt("pythonpath", Multi, "add a directory to sys.path (repeatable)"), &["python-path", "pp"]),
    short(opt("master", Flag, "accepted: headrace always runs a master"), 'M'),
    short(aliases(default(opt("processes", Value, "number of worker processes"), "1"), &["workers"]), 'p'),
    default(opt("threads", Value, "request threads per worker"), "1"),
    short(opt("enable-threads", Flag, "accepted: Python threads are always enabled"), 'T'),
    opt("lazy-apps", Flag, "load the app in each worker after fork instead of once in the master"),
    short(default(opt("listen", Value, "listen queue (backlog) size"), "1024"), 'l'),
    opt("env", Multi, "set an environment variable KEY=VALUE before loading the app (repeatable)"),
    short(opt("disable-logging", Flag, "do not log requests"), 'L'),
    aliases(opt("logto", Value, "append all output (logs and the app's stdout/stderr) to FILE"), &["daemonize-logto"]),
    opt("pidfile", Value, "write the master's pid to FILE"),
    default(opt("need-app", Flag, "exit 1 when the app cannot be loaded (always on)"), "true"),
    opt("ini", Multi, "read options from the [uwsgi] section of FILE[:SECTION] (repeatable)"),
    short(default(opt("buffer-size", Value, "largest request head in bytes (431 beyond it)"), "32768"), 'b'),
    default(opt("limit-post", Value, "largest request body in bytes, 0 = no limit (413 beyond it)"), "0"),
    default(opt("http-keepalive", Value, "seconds an idle keep-alive connection is kept open"), "60"),
    aliases(default(opt("socket-timeout", Value, "seconds to wait for a request head or for a stalled read/write"), "60"), &["http-timeout"]),
    default(opt("harakiri", Value, "kill a worker whose request runs longer than this many seconds (0 = never); its Python traceback is logged first"), "0"),
    default(opt("harakiri-graceful-timeout", Value, "seconds of SIGTERM grace between the harakiri traceback and SIGKILL"), "0"),
    default(opt("max-requests", Value, "recycle a worker after this many requests (0 = never)"), "0"),
    default(opt("max-requests-delta", Value, "add a random 0..N to each worker's --max-requests, so they do not recycle at once"), "0"),
    default(opt("reload-on-rss", Value, "recycle a worker whose resident memory exceeds this many MB (0 = never)"), "0"),
    default(opt("max-worker-lifetime", Value, "recycle a worker after this many seconds (0 = never)"), "0"),
    default(opt("max-worker-lifetime-delta", Value, "add a random 0..N seconds to each worker's lifetime"), "0"),
    default(opt("min-worker-lifetime", Value, "seconds a worker runs before it may be recycled"), "0"),
    default(opt("worker-reload-mercy", Value, "seconds a stopping worker may take to finish its requests before SIGKILL"), "60"),
    opt("touch-reload", Multi, "reload gracefully when FILE's modification time changes (repeatable)"),
    opt("touch-chain-reload", Multi, "chain-reload (one worker at a time) when FILE's modification time changes (repeatable)"),
    opt("chain-reload", Flag, "make SIGHUP replace workers one at a time instead of all at once"),
    opt("uid", Value, "run as this user (name or number) after binding the sockets"),
    opt("gid", Value, "run as this group (name or number) after binding the sockets"),
    opt("vacuum", Flag, "remove unix socket files and the pidfile on exit"),
        compat(opt("die-on-term", Flag, "stop on SIGTERM"), "SIGTERM always stops headrace gracefully"),
    compat(opt("ignore-sigpipe", Flag, "do not report SIGPIPE"), "headrace never gets SIGPIPE; a client gone is one log line"),
    compat(opt("ignore-write-errors", Flag, "do not report write errors"), "a client gone is always one concise log line"),
    compat(opt("disable-write-exception", Flag, "no exception on write errors"), "write() raises OSError only to the app that called it; the server logs one line"),
    aliases(opt("stats", Value, "serve uWSGI's stats JSON on ADDR (host:port, a unix path or @abstract) to every client that connects"), &["stats-server"]),
    opt("stats-http", Flag, "serve the stats over HTTP: JSON, and Prometheus text at /metrics"),
    aliases(opt("stats-minified", Flag, "write the stats JSON without whitespace"), &["stats-min"]),
    opt("metrics", Value, "serve Prometheus metrics over HTTP on ADDR (host:port, a unix path or @abstract)"),
    compat(opt("thunder-lock", Flag, "serialize accept"), "headrace uses EPOLLEXCLUSIVE instead"),
    compat(opt("single-interpreter", Flag, "one interpreter per worker"), "headrace always uses one interpreter per worker"),
    compat(opt("strict", Flag, "fail on unknown options"), "headrace always fails on unknown options"),
];

/// Look an option up by its name or an alias.
#[must_use]
pub fn find(name: &str) -> Option<&'static OptSpec> {
    OPTIONS
        .iter()
        .find(|o| o.name == name || o.aliases.contains(&name))
}
