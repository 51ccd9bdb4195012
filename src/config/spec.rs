//! Every option headrace implements, declared once: its name, aliases, short letter, value type
//! with bounds, repeatability, default and help. The command line, ini/yaml/json files and
//! environment variables are all read through this table, and the typed [`super::Config`] is
//! built by asking it for an [`Opt`]: a misspelt option is a compile error, not a silent
//! `false`. The other uWSGI options (accepted or refused) are in `uwsgi_options.rs`.

/// One implemented option. The order of the variants is the order of [`OPTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "each variant is documented by its row in OPTIONS"
)]
pub enum Opt {
    HttpSocket,
    Http,
    Socket,
    Protocol,
    ChmodSocket,
    QueueTimeout,
    MaxQueue,
    PostBuffering,
    WsgiFile,
    Module,
    Callable,
    Chdir,
    Home,
    Pythonpath,
    Master,
    Processes,
    Threads,
    EnableThreads,
    LazyApps,
    Listen,
    Env,
    DisableLogging,
    Logto,
    Pidfile,
    NeedApp,
    BufferSize,
    LimitPost,
    HttpKeepalive,
    SocketTimeout,
    Harakiri,
    HarakiriGracefulTimeout,
    MaxRequests,
    MaxRequestsDelta,
    ReloadOnRss,
    MaxWorkerLifetime,
    MaxWorkerLifetimeDelta,
    MinWorkerLifetime,
    WorkerReloadMercy,
    TouchReload,
    TouchChainReload,
    ChainReload,
    Uid,
    Gid,
    Vacuum,
    DieOnTerm,
    IgnoreSigpipe,
    IgnoreWriteErrors,
    DisableWriteException,
    ThunderLock,
    SingleInterpreter,
    Stats,
    StatsHttp,
    StatsMinified,
    Metrics,
    AutoProcname,
    Procname,
    ProcnameMaster,
    ProcnamePrefix,
    ProcnamePrefixSpaced,
    ProcnameAppend,
    LogFormat,
    LogFormatStrftime,
    LogDate,
    Log4xx,
    Log5xx,
    LogZero,
    LogSlow,
    LogBig,
    LogXForwardedFor,
    LogMicros,
    MemoryReport,
    Logger,
    ReqLogger,
    LogMaxsize,
    LogBackupname,
    LogReopen,
    TouchLogreopen,
    LogEncoder,
    LogReqEncoder,
    LogRoute,
    Umask,
    AddHeader,
    Daemonize,
    Daemonize2,
    ChownSocket,
    PyAutoreload,
    PyAutoreloadIgnore,
    Route,
    RouteUri,
    Mount,
    ManageScriptName,
    StaticMap,
    StaticMap2,
    CheckStatic,
    StaticIndex,
    StaticGzipAll,
    StaticExpiresType,
    StaticExpiresTypeMtime,
    StaticExpires,
    StaticExpiresMtime,
    StaticExpiresUri,
    StaticExpiresUriMtime,
    StaticExpiresPathInfo,
    StaticExpiresPathInfoMtime,
    StaticGzip,
    StaticGzipDir,
    StaticGzipExt,
    StaticSafe,
    StaticSkipExt,
    HonourRange,
    StaticCachePaths,
    // #13 spooler
    Spooler,
    SpoolerProcesses,
    SpoolerFrequency,
    SpoolerHarakiri,
    SpoolerMaxTasks,
    SpoolerOrdered,
    SpoolerChdir,
    SpoolerQuiet,
    SpoolerMaxRetries,
    SpoolerImport,
    Import,
    SharedImport,
    TouchSpoolersReload,
    // #13 mules
    Mule,
    Mules,
    Farm,
    MuleMsgSize,
    MuleHarakiri,
    MuleReloadMercy,
    TouchMulesReload,
    // #13 signals, timers, cron
    Timer,
    Rbtimer,
    Cron,
    Cron2,
    UniqueCron,
    CronHarakiri,
    TouchSignal,
    // #13 attached daemons
    AttachDaemon,
    AttachDaemon2,
    SmartAttachDaemon,
    SmartAttachDaemon2,
    AttachControlDaemon,
    DaemonsHonourStdin,
    // #13 cache, sharedarea, locks
    Cache2,
    Cache,
    CacheBlocksize,
    CacheStore,
    CacheStoreSync,
    CacheExpireFreq,
    Sharedarea,
    Locks,
    // #14 elastic workers
    Cheaper,
    CheaperInitial,
    CheaperStep,
    CheaperOverload,
    CheaperAlgo,
    CheaperIdle,
    CheaperBusynessMax,
    CheaperBusynessMin,
    CheaperBusynessMultiplier,
    CheaperBusynessPenalty,
    CheaperBusynessVerbose,
    CheaperBusynessBacklogAlert,
    CheaperBusynessBacklogMultiplier,
    CheaperBusynessBacklogStep,
    CheaperBusynessBacklogNonzero,
    CheaperRssLimitSoft,
    CheaperRssLimitHard,
    Idle,
    DieOnIdle,
    Cheap,
    SpoolerExternal,
    // #11 hooks, loggers, internal routing (the gaps work)
    HookAsap,
    HookAsUser,
    HookPreApp,
    HookPostApp,
    HookMasterStart,
    HookAccepting,
    HookAccepting1,
    ExecAsap,
    ExecAsUser,
    ExecPreApp,
    ExecPostApp,
    RouteIf,
    RouteIfNot,
    RouteHost,
    HookAsRoot,
    ExecAsRoot,
    Interface,
    Lifespan,
    Loop,
    WsMaxSize,
    WsPingInterval,
    LimitConcurrency,
}

/// The shape of an option's value; the bounds live here, with the words used when a value is
/// out of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    /// A switch. False only for `false`, `off`, `no` and `0` (uWSGI's `uwsgi_opt_true`).
    Flag,
    /// Any text.
    Text,
    /// A whole number, at least `min`; `expect` completes "expected ...".
    Count {
        /// Smallest accepted value.
        min: u64,
        /// What a valid value is, for the error message.
        expect: &'static str,
    },
    /// Seconds, fractions allowed, at least 0.
    FracSeconds {
        /// What a valid value is, for the error message.
        expect: &'static str,
    },
    /// Unix permissions in octal.
    Octal,
    /// A socket address (see `parse_addr`).
    Addr,
    /// `KEY=VALUE`.
    KeyValue,
}

/// One option's declaration.
#[derive(Debug)]
pub struct OptSpec {
    /// Which option this row declares.
    pub opt: Opt,
    /// The uWSGI name, also the ini key and (upper-cased, `-` → `_`) the env suffix.
    pub name: &'static str,
    /// Single-letter command-line form.
    pub short: Option<char>,
    /// Other long names that mean the same.
    pub aliases: &'static [&'static str],
    /// The value's type and bounds.
    pub ty: Ty,
    /// Repeatable: every value is kept, in order. Otherwise the last value given wins.
    pub multi: bool,
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

impl OptSpec {
    /// The spec of `opt`.
    #[must_use]
    pub fn of(opt: Opt) -> &'static OptSpec {
        &OPTIONS[opt as usize]
    }
}

/// `row!(Variant, "name", Ty, "help", modifiers...)`: one table row; modifiers are
/// `multi`, `short 'x'`, `aliases ["a", "b"]`, `default "v"`, `bare "v"`, `compat "why"`.
macro_rules! row {
    ($opt:ident, $name:literal, $ty:expr, $help:literal $(, $($m:tt)+)?) => {{
        #[allow(unused_mut, reason = "rows without modifiers do not change the base")]
        let mut o = OptSpec {
            opt: Opt::$opt,
            name: $name,
            short: None,
            aliases: &[],
            ty: $ty,
            multi: false,
            default: None,
            compat: None,
            help: $help,
            bare: None,
        };
        $(row!(@m o; $($m)+);)?
        o
    }};
    (@m $o:ident; multi $(, $($rest:tt)+)?) => { $o.multi = true; $(row!(@m $o; $($rest)+);)? };
    (@m $o:ident; short $c:literal $(, $($rest:tt)+)?) => { $o.short = Some($c); $(row!(@m $o; $($rest)+);)? };
    (@m $o:ident; aliases $a:expr $(, $($rest:tt)+)?) => { $o.aliases = &$a; $(row!(@m $o; $($rest)+);)? };
    (@m $o:ident; default $d:literal $(, $($rest:tt)+)?) => { $o.default = Some($d); $(row!(@m $o; $($rest)+);)? };
    (@m $o:ident; bare $d:literal $(, $($rest:tt)+)?) => { $o.bare = Some($d); $(row!(@m $o; $($rest)+);)? };
    (@m $o:ident; compat $d:literal $(, $($rest:tt)+)?) => { $o.compat = Some($d); $(row!(@m $o; $($rest)+);)? };
}

const fn count(min: u64, expect: &'static str) -> Ty {
    Ty::Count { min, expect }
}

const SECS: Ty = count(0, "a whole number of seconds");
const SECS1: Ty = count(1, "a whole number of seconds, at least 1");
const NUM: Ty = count(0, "a whole number");

use Ty::{Addr, Flag, KeyValue, Octal, Text};

/// The option table, in the order of [`Opt`]'s variants (a unit test checks it).
/// The generator of `uwsgi_options.rs` reads the names between `options! {` and the closing
/// brace to mark these rows as implemented.
pub const OPTIONS: &[OptSpec] = &options();

#[rustfmt::skip]
#[allow(clippy::too_many_lines, clippy::large_stack_arrays, reason = "the option table: one row per option, built at compile time")]
const fn options() -> [OptSpec; 195] {
    // options! {
    [
    row!(HttpSocket, "http-socket", Addr, "serve HTTP directly from the workers on ADDR (:8000, 127.0.0.1:8000, [::1]:8000, /path.sock); HTTP/1.1 with keep-alive", multi, aliases ["http11-socket"]),
    row!(Http, "http", Addr, "serve HTTP on ADDR through the router process, which queues requests and dispatches them to free workers", multi),
    row!(Socket, "socket", Addr, "serve the uwsgi protocol (nginx uwsgi_pass) from the workers on ADDR", multi, short 's', aliases ["uwsgi-socket"]),
    row!(Protocol, "protocol", Text, "what --socket speaks: uwsgi (default) or http", aliases ["socket-protocol"]),
    row!(ChmodSocket, "chmod-socket", Octal, "permissions of unix sockets, octal (bare: 666)", short 'C', aliases ["chmod"], bare "666"),
    row!(QueueTimeout, "queue-timeout", Ty::FracSeconds { expect: "seconds, fractions allowed (0 = wait)" }, "router: answer 503 to a request that waited this many seconds for a worker (0 = wait)", default "0"),
    row!(MaxQueue, "max-queue", count(0, "a number of requests (0 = no limit)"), "router: answer 503 at once when this many requests already wait (0 = no limit)", default "0"),
    row!(PostBuffering, "post-buffering", count(0, "a size in bytes"), "router: request bodies larger than this many bytes spill to a temporary file (0 = 1 MiB)", default "0"),
    row!(WsgiFile, "wsgi-file", Text, "load the WSGI app from this Python file", aliases ["file"]),
    row!(Module, "module", Text, "load the WSGI app from MODULE[:CALLABLE]", short 'w', aliases ["wsgi"]),
    row!(Callable, "callable", Text, "name of the WSGI callable", default "application"),
    row!(Chdir, "chdir", Text, "change to this directory before loading the app"),
    row!(Home, "home", Text, "a virtualenv whose site-packages the app imports from (before the server's own)", short 'H', aliases ["virtualenv", "venv", "pyhome"]),
    row!(Pythonpath, "pythonpath", Text, "add a directory to sys.path (repeatable)", multi, aliases ["python-path", "pp"]),
    row!(Master, "master", Flag, "accepted: headrace always runs a master", short 'M'),
    row!(Processes, "processes", count(1, "a whole number of processes, at least 1"), "number of worker processes", short 'p', aliases ["workers"], default "1"),
    row!(Threads, "threads", count(1, "a whole number of threads, at least 1"), "request threads per worker", default "1"),
    row!(EnableThreads, "enable-threads", Flag, "accepted: Python threads are always enabled", short 'T'),
    row!(LazyApps, "lazy-apps", Flag, "load the app in each worker after fork instead of once in the master", aliases ["lazy"]),
    row!(Listen, "listen", count(1, "a backlog size, at least 1"), "listen queue (backlog) size", short 'l', default "1024"),
    row!(Env, "env", KeyValue, "set an environment variable KEY=VALUE before loading the app (repeatable)", multi),
    row!(DisableLogging, "disable-logging", Flag, "do not log requests", short 'L'),
    row!(Logto, "logto", Text, "append all output (logs and the app's stdout/stderr) to FILE", aliases ["daemonize-logto", "logto2"]),
    row!(Pidfile, "pidfile", Text, "write the master's pid to FILE", aliases ["pidfile2", "safe-pidfile", "safe-pidfile2"]),
    row!(NeedApp, "need-app", Flag, "exit 1 when the app cannot be loaded (always on)", default "true"),
    row!(BufferSize, "buffer-size", count(1024, "a size in bytes, at least 1024"), "largest request head in bytes (431 beyond it)", short 'b', default "32768"),
    row!(LimitPost, "limit-post", count(0, "a size in bytes (0 = no limit)"), "largest request body in bytes, 0 = no limit (413 beyond it)", default "0"),
    row!(HttpKeepalive, "http-keepalive", SECS1, "seconds an idle keep-alive connection is kept open", default "60"),
    row!(SocketTimeout, "socket-timeout", SECS1, "seconds to wait for a request head or for a stalled read/write", aliases ["http-timeout"], default "60"),
    row!(Harakiri, "harakiri", SECS, "kill a worker whose request runs longer than this many seconds (0 = never); its Python traceback is logged first", short 't', default "0"),
    row!(HarakiriGracefulTimeout, "harakiri-graceful-timeout", SECS, "seconds of SIGTERM grace between the harakiri traceback and SIGKILL", default "0"),
    row!(MaxRequests, "max-requests", count(0, "a number of requests (0 = never)"), "recycle a worker after this many requests (0 = never)", short 'R', default "0"),
    row!(MaxRequestsDelta, "max-requests-delta", count(0, "a number of requests"), "add a random 0..N to each worker's --max-requests, so they do not recycle at once", default "0"),
    row!(ReloadOnRss, "reload-on-rss", count(0, "megabytes (0 = never)"), "recycle a worker whose resident memory exceeds this many MB (0 = never)", default "0"),
    row!(MaxWorkerLifetime, "max-worker-lifetime", SECS, "recycle a worker after this many seconds (0 = never)", default "0"),
    row!(MaxWorkerLifetimeDelta, "max-worker-lifetime-delta", SECS, "add a random 0..N seconds to each worker's lifetime", default "0"),
    row!(MinWorkerLifetime, "min-worker-lifetime", SECS, "seconds a worker runs before it may be recycled", default "0"),
    row!(WorkerReloadMercy, "worker-reload-mercy", SECS, "seconds a stopping worker may take to finish its requests before SIGKILL", default "60"),
    row!(TouchReload, "touch-reload", Text, "reload gracefully when FILE's modification time changes (repeatable)", multi, aliases ["touch-workers-reload"]),
    row!(TouchChainReload, "touch-chain-reload", Text, "chain-reload (one worker at a time) when FILE's modification time changes (repeatable)", multi),
    row!(ChainReload, "chain-reload", Flag, "make SIGHUP replace workers one at a time instead of all at once"),
    row!(Uid, "uid", Text, "run as this user (name or number) after binding the sockets"),
    row!(Gid, "gid", Text, "run as this group (name or number) after binding the sockets"),
    row!(Vacuum, "vacuum", Flag, "remove unix socket files and the pidfile on exit"),
    row!(DieOnTerm, "die-on-term", Flag, "stop on SIGTERM", compat "SIGTERM always stops headrace gracefully"),
    row!(IgnoreSigpipe, "ignore-sigpipe", Flag, "do not report SIGPIPE", compat "headrace never gets SIGPIPE; a client gone is one log line"),
    row!(IgnoreWriteErrors, "ignore-write-errors", Flag, "do not report write errors", compat "a client gone is always one concise log line"),
    row!(DisableWriteException, "disable-write-exception", Flag, "no exception on write errors", compat "write() raises OSError only to the app that called it; the server logs one line"),
    row!(ThunderLock, "thunder-lock", Flag, "serialize accept", compat "headrace uses EPOLLEXCLUSIVE instead"),
    row!(SingleInterpreter, "single-interpreter", Flag, "one interpreter per worker", compat "headrace always uses one interpreter per worker"),
    row!(Stats, "stats", Addr, "serve uWSGI's stats JSON on ADDR (host:port, a unix path or @abstract) to every client that connects", aliases ["stats-server"]),
    row!(StatsHttp, "stats-http", Flag, "serve the stats over HTTP: JSON, and Prometheus text at /metrics"),
    row!(StatsMinified, "stats-minified", Flag, "write the stats JSON without whitespace", aliases ["stats-min"]),
    row!(Metrics, "metrics", Addr, "serve Prometheus metrics over HTTP on ADDR (host:port, a unix path or @abstract)"),
    row!(AutoProcname, "auto-procname", Flag, "name processes in ps/top: headrace master, headrace worker N, headrace http 1"),
    row!(Procname, "procname", Text, "process title for the master (and, with auto-procname, the workers)"),
    row!(ProcnameMaster, "procname-master", Text, "process title for the master"),
    row!(ProcnamePrefix, "procname-prefix", Text, "put this before every process title"),
    row!(ProcnamePrefixSpaced, "procname-prefix-spaced", Text, "put this and a space before every process title"),
    row!(ProcnameAppend, "procname-append", Text, "put this after every process title"),
    row!(LogFormat, "log-format", Text, "write request lines in this uWSGI log format: %(addr) %(user) %(ltime) %(method) %(uri) %(proto) %(status) %(size) %(msecs) %(var.NAME) ...", aliases ["logformat"]),
    row!(LogFormatStrftime, "logformat-strftime", Flag, "make %(ftime) use the strftime format given to log-date", aliases ["log-format-strftime"]),
    row!(LogDate, "log-date", Text, "prefix log lines (not request lines) with the date, or with this strftime format (log-prefix is the same option in uWSGI 2.0)", aliases ["logdate", "log-prefix"], bare "true"),
    row!(Log4xx, "log-4xx", Flag, "with disable-logging, still log requests answered 4xx"),
    row!(Log5xx, "log-5xx", Flag, "with disable-logging, still log requests answered 5xx"),
    row!(LogZero, "log-zero", Flag, "with disable-logging, still log responses without a body"),
    row!(LogSlow, "log-slow", count(0, "milliseconds (0 = off)"), "with disable-logging, still log requests that took at least this many milliseconds", default "0"),
    row!(LogBig, "log-big", count(0, "bytes (0 = off)"), "with disable-logging, still log responses of at least this many body bytes", default "0"),
    row!(LogXForwardedFor, "log-x-forwarded-for", Flag, "log the X-Forwarded-For header as the client address when the request has one"),
    row!(LogMicros, "log-micros", Flag, "give the response time in microseconds in the default request line"),
    row!(MemoryReport, "memory-report", Flag, "measure the worker's memory after each request and start the default request line with it", short 'm'),
    row!(Logger, "logger", Text, "where log lines go: file:PATH (like logto) or stdio (other log plugins are refused)", multi),
    row!(ReqLogger, "req-logger", Text, "where request lines go: file:PATH or stdio", aliases ["logger-req"], multi),
    row!(LogMaxsize, "log-maxsize", count(0, "bytes (0 = never)"), "rotate the logto file once it is larger than this many bytes (0 = never)", default "0"),
    row!(LogBackupname, "log-backupname", Text, "name of the rotated log file (default: the logto path with .UNIXTIME appended)"),
    row!(LogReopen, "log-reopen", Flag, "reopen the logto file when it has been moved (by logrotate) or on reload"),
    row!(TouchLogreopen, "touch-logreopen", Text, "reopen the logto file when FILE is touched; headrace already reopens it as soon as it is moved (repeatable)", multi),
    row!(LogEncoder, "log-encoder", Text, "add an encoder to the log chain: prefix TEXT, suffix TEXT, nl, format TEMPLATE or json TEMPLATE with ${msg} ${unix} ${micros} ${millis} ${strftime:FMT} (repeatable)", multi),
    row!(LogReqEncoder, "log-req-encoder", Text, "add an encoder to the chain of request lines written to the req-logger (repeatable)", multi),
    row!(LogRoute, "log-route", Text, "LOGGER REGEXP: accepted; headrace keeps one log, so routed lines stay in it and a named logger only routed to is not opened (repeatable)", multi, compat "log routing is not implemented: every line stays in the main log, and a named logger that only receives routed lines is not opened"),
    row!(Umask, "umask", Octal, "set the process umask (octal), before the sockets are bound"),
    row!(AddHeader, "add-header", Text, "add this `Name: value` header to every response (repeatable)", multi),
    row!(Daemonize, "daemonize", Text, "detach from the terminal at startup and append all output to FILE", short 'd'),
    row!(Daemonize2, "daemonize2", Text, "as --daemonize, but after the app is loaded (startup errors still reach the terminal)"),
    row!(ChownSocket, "chown-socket", Text, "owner of unix sockets: USER or USER:GROUP (names or numbers)"),
    row!(PyAutoreload, "py-autoreload", SECS, "every N seconds, check the files of every imported module; a change reloads the workers (development)", aliases ["py-auto-reload", "python-autoreload", "python-auto-reload"], default "0"),
    row!(PyAutoreloadIgnore, "py-auto-reload-ignore", Text, "a module name py-autoreload does not watch (repeatable)", multi),
    row!(Route, "route", Text, "REGEXP ACTION on PATH_INFO; only the donotlog: action (no request line) is supported (repeatable)", multi),
    row!(RouteUri, "route-uri", Text, "REGEXP ACTION on REQUEST_URI; only donotlog: is supported (repeatable)", multi),
    row!(Mount, "mount", Text, "serve another app at a mountpoint: /PATH=FILE.py or /PATH=MODULE[:CALLABLE] (repeatable)", multi),
    row!(ManageScriptName, "manage-script-name", Flag, "choose the mounted app by the longest mountpoint that starts PATH_INFO, and move it to SCRIPT_NAME"),
    row!(StaticMap, "static-map", Text, "serve files under DIR for paths under MOUNTPOINT, given as MOUNTPOINT=DIR (repeatable)", multi),
    row!(StaticMap2, "static-map2", Text, "like static-map, but the whole path is appended to DIR (repeatable)", multi),
    row!(CheckStatic, "check-static", Text, "serve a file under DIR named by the request path, if there is one (repeatable)", multi, aliases ["static-check"]),
    row!(StaticIndex, "static-index", Text, "file name served for a static path naming a directory (repeatable)", multi),
    row!(StaticGzipAll, "static-gzip-all", Flag, "serve FILE.gz for a static FILE when the client accepts gzip"),
    row!(StaticExpiresType, "static-expires-type", Text, "static files of a Content-Type get Expires: now + SECONDS, given as TYPE=SECONDS (repeatable)", multi),
    row!(StaticExpiresTypeMtime, "static-expires-type-mtime", Text, "like static-expires-type, counted from the file's modification time (repeatable)", multi),
    row!(StaticExpires, "static-expires", Text, "static files whose path matches REGEXP get Expires: now + SECONDS, given as REGEXP SECONDS (repeatable)", multi),
    row!(StaticExpiresMtime, "static-expires-mtime", Text, "like static-expires, counted from the file's modification time (repeatable)", multi),
    row!(StaticExpiresUri, "static-expires-uri", Text, "like static-expires, matching REQUEST_URI (repeatable)", multi),
    row!(StaticExpiresUriMtime, "static-expires-uri-mtime", Text, "like static-expires-uri, counted from the file's modification time (repeatable)", multi),
    row!(StaticExpiresPathInfo, "static-expires-path-info", Text, "like static-expires, matching PATH_INFO (repeatable)", multi),
    row!(StaticExpiresPathInfoMtime, "static-expires-path-info-mtime", Text, "like static-expires-path-info, counted from the file's modification time (repeatable)", multi),
    row!(StaticGzip, "static-gzip", Text, "serve FILE.gz for static files whose path matches REGEXP, to clients that accept gzip (repeatable)", multi),
    row!(StaticGzipDir, "static-gzip-dir", Text, "serve FILE.gz for static files under this path prefix, to clients that accept gzip (repeatable)", multi, aliases ["static-gzip-prefix"]),
    row!(StaticGzipExt, "static-gzip-ext", Text, "serve FILE.gz for static files with this ending, to clients that accept gzip (repeatable)", multi, aliases ["static-gzip-suffix"]),
    row!(StaticSafe, "static-safe", Text, "a static file whose real path is under this directory may be served although a symlink leads there from outside its mapped directory (repeatable)", multi),
    row!(StaticSkipExt, "static-skip-ext", Text, "files with this ending are never served as static files (repeatable)", multi),
    row!(HonourRange, "honour-range", Flag, "honour Range requests for static files", compat "Range is always honoured for static files"),
    row!(StaticCachePaths, "static-cache-paths", Text, "cache resolved static paths for N seconds", aliases ["static-cache-paths-name"], compat "static paths are resolved on every request, so a new file is seen at once"),
    // #13 spooler (owned by the spooler work)
    row!(Spooler, "spooler", Text, "run a spooler on DIR (or redis://HOST:PORT/DB?queue=NAME): tasks enqueued with uwsgi.spool run there (repeatable)", multi, short 'Q'),
    row!(SpoolerProcesses, "spooler-processes", count(1, "a whole number, at least 1"), "processes per spooler", default "1"),
    row!(SpoolerFrequency, "spooler-frequency", SECS1, "how often a spooler rescans its directory for tasks whose time has come (new files are seen at once)", aliases ["spooler-freq"], default "30"),
    row!(SpoolerHarakiri, "spooler-harakiri", SECS, "kill a spooler whose task runs longer than N seconds (0: never); the task is run again", default "0"),
    row!(SpoolerMaxTasks, "spooler-max-tasks", NUM, "recycle a spooler process after N tasks (0: never)", default "0"),
    row!(SpoolerOrdered, "spooler-ordered", Flag, "run tasks in the order they were spooled", compat "tasks always run by priority, then in the order they were spooled"),
    row!(SpoolerChdir, "spooler-chdir", Text, "directory a spooler changes to before running tasks"),
    row!(SpoolerQuiet, "spooler-quiet", Flag, "do not log each task a spooler runs"),
    row!(SpoolerMaxRetries, "spooler-max-retries", NUM, "a task that failed this many times goes to the spooler's dead-letter directory (0: never retried)", default "5"),
    row!(SpoolerImport, "spooler-import", Text, "import this Python module in the spooler processes (repeatable)", multi, aliases ["spooler-py-import", "spooler-pyimport", "spooler-python-import"]),
    row!(Import, "import", Text, "import this Python module with the app (repeatable)", multi, aliases ["pyimport", "py-import", "python-import"]),
    row!(SharedImport, "shared-import", Text, "import this Python module in the master, before any fork (repeatable)", multi, aliases ["shared-pyimport", "shared-py-import", "shared-python-import"]),
    row!(TouchSpoolersReload, "touch-spoolers-reload", Text, "restart the spoolers when this file's modification time changes (repeatable)", multi),
    // #13 mules (owned by the mule work)
    row!(Mule, "mule", Text, "add a mule: an empty one (bare) or one running FILE.py or a module:function (repeatable)", multi, bare ""),
    row!(Mules, "mules", NUM, "add N empty mules", default "0"),
    row!(Farm, "farm", Text, "a farm of mules: NAME:1,2 (repeatable)", multi),
    row!(MuleMsgSize, "mule-msg-size", count(1, "a whole number of bytes, at least 1"), "largest message a mule queue carries", default "65536"),
    row!(MuleHarakiri, "mule-harakiri", SECS, "kill a mule stuck this many seconds in a task (0: never)", default "0"),
    row!(MuleReloadMercy, "mule-reload-mercy", SECS, "seconds a mule may take to stop on reload before SIGKILL", default "60"),
    row!(TouchMulesReload, "touch-mules-reload", Text, "restart the mules when this file's modification time changes (repeatable)", multi),
    // #13 signals, timers, cron (owned by the signal work)
    row!(Timer, "timer", Text, "raise uWSGI signal SIGNUM every SECONDS: SIGNUM SECONDS (repeatable)", multi, aliases ["signal-timer"]),
    row!(Rbtimer, "rbtimer", Text, "as --timer (repeatable)", multi, aliases ["signal-rbtimer"]),
    row!(Cron, "cron", Text, "run a shell command at MINUTE HOUR DAY MONTH WEEKDAY (-1 is any): uWSGI's cron (repeatable)", multi),
    row!(Cron2, "cron2", Text, "run a shell command: key=value cron spec (minute=,hour=,day=,month=,week=,unique=,harakiri=) then the command (repeatable)", multi),
    row!(UniqueCron, "unique-cron", Text, "as --cron, but never two runs of the command at once (repeatable)", multi),
    row!(CronHarakiri, "cron-harakiri", SECS, "kill a cron command running longer than N seconds (0: never)", default "0"),
    row!(TouchSignal, "touch-signal", Text, "raise a uWSGI signal when FILE's modification time changes: FILE SIGNUM (repeatable)", multi),
    // #13 attached daemons (owned by the daemon work)
    row!(AttachDaemon, "attach-daemon", Text, "run a shell command beside the server, restarted when it dies, stopped with it (repeatable)", multi),
    row!(AttachDaemon2, "attach-daemon2", Text, "as --attach-daemon, with key=value settings (cmd=, pidfile=, control=, daemonize=, freq=, touch=, stopsignal=, reloadsignal=, uid=, gid=) (repeatable)", multi),
    row!(SmartAttachDaemon, "smart-attach-daemon", Text, "PIDFILE COMMAND: a daemon that forks away, followed through its pidfile (repeatable)", multi),
    row!(SmartAttachDaemon2, "smart-attach-daemon2", Text, "as --smart-attach-daemon, for a daemon that does not fork away (repeatable)", multi),
    row!(AttachControlDaemon, "attach-control-daemon", Text, "as --attach-daemon; the server stops when it dies (repeatable)", multi),
    row!(DaemonsHonourStdin, "daemons-honour-stdin", Flag, "attached daemons keep the server's stdin (otherwise /dev/null)"),
    // #13 cache, sharedarea, locks (owned by the cache work)
    row!(Cache2, "cache2", Text, "a shared cache: name=NAME,items=N[,blocksize=B][,store=FILE][,...] (repeatable)", multi),
    row!(Cache, "cache", NUM, "the legacy cache: N items (0: none)", default "0"),
    row!(CacheBlocksize, "cache-blocksize", count(1, "a whole number of bytes, at least 1"), "the legacy cache's largest item", default "65536"),
    row!(CacheStore, "cache-store", Text, "keep the legacy cache in this file across restarts"),
    row!(CacheStoreSync, "cache-store-sync", SECS, "write the legacy cache's store file every N seconds (0: at stop)", default "0"),
    row!(CacheExpireFreq, "cache-expire-freq", SECS1, "how often expired cache items are swept", default "3"),
    row!(Sharedarea, "sharedarea", Text, "a shared memory area all processes see: N pages, or key=value settings (repeatable)", multi, short 'A'),
    row!(Locks, "locks", NUM, "user locks for uwsgi.lock(N), besides lock 0", default "0"),
    // #14 elastic workers
    row!(Cheaper, "cheaper", NUM, "elastic workers: keep at least N running (below --processes) and start the rest when the load needs them (0: off)", default "0"),
    row!(CheaperInitial, "cheaper-initial", NUM, "workers started at startup with --cheaper (default: --cheaper)", default "0"),
    row!(CheaperStep, "cheaper-step", NUM, "most workers started at once (0: the algorithm's own rule: as many as wait for queue, 1 for the others)", default "0"),
    row!(CheaperOverload, "cheaper-overload", count(1, "a whole number, at least 1"), "spare and busyness: seconds of overload before growing; backlog: queued requests that make it grow", default "3"),
    row!(CheaperAlgo, "cheaper-algo", Text, "how workers follow the load: queue (default), spare, spare2, backlog, busyness, manual"),
    row!(CheaperIdle, "cheaper-idle", SECS1, "queue and spare2: seconds a worker stays idle before it is stopped", default "10"),
    row!(CheaperBusynessMax, "cheaper-busyness-max", count(0, "a percentage"), "busyness: percent of time in requests above which workers are added", default "50"),
    row!(CheaperBusynessMin, "cheaper-busyness-min", count(0, "a percentage"), "busyness: percent of time in requests below which workers are stopped", default "25"),
    row!(CheaperBusynessMultiplier, "cheaper-busyness-multiplier", NUM, "busyness: a worker must be idle cheaper-overload * this many seconds to be stopped", default "10"),
    row!(CheaperBusynessPenalty, "cheaper-busyness-penalty", NUM, "busyness: added to the multiplier when workers come back too soon after being stopped", default "2"),
    row!(CheaperBusynessVerbose, "cheaper-busyness-verbose", Flag, "busyness: log every evaluation"),
    row!(CheaperBusynessBacklogAlert, "cheaper-busyness-backlog-alert", NUM, "busyness: spawn emergency workers when this many requests wait", default "33"),
    row!(CheaperBusynessBacklogMultiplier, "cheaper-busyness-backlog-multiplier", NUM, "busyness: the multiplier for emergency workers", default "3"),
    row!(CheaperBusynessBacklogStep, "cheaper-busyness-backlog-step", count(1, "a whole number, at least 1"), "busyness: emergency workers spawned at a time", default "1"),
    row!(CheaperBusynessBacklogNonzero, "cheaper-busyness-backlog-nonzero", NUM, "busyness: spawn an emergency worker when requests have waited this many seconds", default "60"),
    row!(CheaperRssLimitSoft, "cheaper-rss-limit-soft", NUM, "start no more workers while all of them use this many bytes of resident memory (0: no limit)", default "0"),
    row!(CheaperRssLimitHard, "cheaper-rss-limit-hard", NUM, "stop a worker while all of them use this many bytes of resident memory (0: no limit)", default "0"),
    row!(Idle, "idle", NUM, "stop every worker after N seconds without a request; the next connection starts them again (0: never)", default "0"),
    row!(DieOnIdle, "die-on-idle", Flag, "with --idle: stop the server instead"),
    row!(Cheap, "cheap", Flag, "start no worker until the first connection"),
    row!(SpoolerExternal, "spooler-external", Text, "a spooler directory (or redis:// queue) that another instance runs: tasks can be spooled to it, no spooler process runs it here (repeatable)", multi),
    // #11 hooks, loggers, internal routing (the gaps work)
    row!(HookAsap, "hook-asap", Text, "run ACTION:ARGS (exec:CMD, safeexec, print, putenv, chdir, mkdir, exit) in the master at startup; a failure stops the instance (repeatable)", multi),
    row!(HookAsUser, "hook-as-user", Text, "run ACTION:ARGS in the master after the privileges are dropped (repeatable)", multi),
    row!(HookPreApp, "hook-pre-app", Text, "run ACTION:ARGS before the app is loaded (in the master, or each worker with lazy-apps) (repeatable)", multi),
    row!(HookPostApp, "hook-post-app", Text, "run ACTION:ARGS after the app is loaded (repeatable)", multi),
    row!(HookMasterStart, "hook-master-start", Text, "run ACTION:ARGS in the master once the workers are spawned (repeatable)", multi),
    row!(HookAccepting, "hook-accepting", Text, "run ACTION:ARGS in each worker before it accepts requests (repeatable)", multi),
    row!(HookAccepting1, "hook-accepting1", Text, "run ACTION:ARGS in worker 1 before it accepts requests (repeatable)", multi),
    row!(ExecAsap, "exec-asap", Text, "run a shell command in the master at startup; a non-zero exit stops the instance (repeatable)", multi),
    row!(ExecAsUser, "exec-as-user", Text, "run a shell command after the privileges are dropped (repeatable)", multi),
    row!(ExecPreApp, "exec-pre-app", Text, "run a shell command before the app is loaded (repeatable)", multi),
    row!(ExecPostApp, "exec-post-app", Text, "run a shell command after the app is loaded (repeatable)", multi),
    row!(RouteIf, "route-if", Text, "COND:ARGS ACTION: run ACTION when the condition holds (equal:A;B, startswith, endswith, contains, regexp/re, empty, isfile, isdir, ...) (repeatable)", multi),
    row!(RouteIfNot, "route-if-not", Text, "COND:ARGS ACTION: run ACTION when the condition does not hold (repeatable)", multi),
    row!(RouteHost, "route-host", Text, "REGEXP ACTION on the Host (HTTP_HOST) (repeatable)", multi),
    row!(HookAsRoot, "hook-as-root", Text, "run ACTION:ARGS in the master before the privileges are dropped (repeatable)", multi),
    row!(ExecAsRoot, "exec-as-root", Text, "run a shell command before the privileges are dropped (repeatable)", multi),
    row!(Interface, "interface", Text, "what the app speaks: auto (an async callable is ASGI 3), wsgi or asgi", default "auto"),
    row!(Lifespan, "lifespan", Text, "ASGI lifespan protocol: auto (used unless the app refuses it), on or off", default "auto"),
    row!(Loop, "loop", Text, "ASGI event loop: auto (uvloop when installed), asyncio or uvloop", default "auto"),
    row!(WsMaxSize, "ws-max-size", count(1, "a size in bytes, at least 1"), "ASGI WebSockets: largest message in bytes, on the wire and inflated (1009 beyond it)", default "16777216"),
    row!(WsPingInterval, "ws-ping-interval", SECS, "ASGI WebSockets: ping idle connections every N seconds and drop those whose pong does not come within N seconds (0 = off)", default "0"),
    row!(LimitConcurrency, "limit-concurrency", count(0, "a number of requests (0 = no limit)"), "ASGI: requests one worker runs at once; more get 503 with Retry-After (0 = no limit)", default "0"),
    ]
    // }
}

/// Look an option up by its name or an alias.
#[must_use]
pub fn find(name: &str) -> Option<&'static OptSpec> {
    OPTIONS
        .iter()
        .find(|o| o.name == name || o.aliases.contains(&name))
}

/// Look an option up by its short letter.
#[must_use]
pub fn find_short(c: char) -> Option<&'static OptSpec> {
    OPTIONS.iter().find(|o| o.short == Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_variant_order_and_names_unique() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert_eq!(o.opt as usize, i, "{} is out of order", o.name);
        }
        let mut names: Vec<&str> = OPTIONS
            .iter()
            .flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied()))
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a name or alias is declared twice");
    }

    #[test]
    fn lookups() {
        assert_eq!(find("workers").map(|o| o.opt), Some(Opt::Processes));
        assert_eq!(find_short('w').map(|o| o.opt), Some(Opt::Module));
        assert_eq!(OptSpec::of(Opt::Listen).default, Some("1024"));
        assert!(find("no-such").is_none());
    }
}
