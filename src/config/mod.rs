//! The one typed `Config`, read the way uWSGI reads its configuration ([`Config::load`]):
//! `UWSGI_*`/`HEADRACE_*` environment variables, then the command line, with config files
//! spliced in where they are met (`collect`); then the `$(...)`, `@(...)` and `%(...)` passes
//! (`expand`); then every key is resolved against the option tables and the implemented ones
//! are typed (`typed`). For a single-valued option the last value given wins, as in uWSGI.

pub mod cheaper;
mod cli;
mod collect;
mod expand;
mod gaps;
pub mod ini;
mod json;
mod logic;
pub mod offload;
mod sections;
pub mod spec;
pub mod table;
mod titles;
mod typed;
mod uwsgi_options;

pub use titles::Titles;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem; the message names the option, its value and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line could not be parsed (unknown option, missing value).
    #[error("{0}")]
    Cli(String),
    /// An option has a value of the wrong shape.
    #[error("invalid {option} \"{value}\" {source_desc}: {reason}")]
    Invalid {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: String,
        /// "on the command line", "in uwsgi.ini", "in $UWSGI_PROCESSES".
        source_desc: String,
        /// What was expected.
        reason: String,
    },
    /// An ini file could not be read or parsed.
    #[error("cannot read ini {file}: {reason}")]
    Ini {
        /// The file (and line).
        file: String,
        /// Why.
        reason: String,
    },
    /// An ini key or option that headrace does not know.
    #[error("unknown option \"{key}\" {source_desc}")]
    Unknown {
        /// The key.
        key: String,
        /// Where it came from.
        source_desc: String,
    },
    /// Something required is missing.
    #[error("{0}")]
    Missing(&'static str),
    /// A uWSGI option headrace does not implement and cannot ignore.
    #[error("option `{key}` {source_desc} is not supported: {reason}")]
    Refused {
        /// The key as written.
        key: String,
        /// Where it came from.
        source_desc: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A config-language construct that cannot be applied (bad `set`, a placeholder cycle).
    #[error("{key} {source_desc}: {reason}")]
    Lang {
        /// The key whose value is at fault.
        key: String,
        /// Where it came from.
        source_desc: String,
        /// Why.
        reason: String,
    },
}

/// What `--help` and `--version` ask for instead of serving.
#[derive(Debug)]
pub enum Request {
    /// Serve with this configuration.
    Serve(Box<Config>),
    /// Print this text (help or version) and exit 0.
    Print(String),
}

/// Where the WSGI app comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// `--wsgi-file`.
    File(PathBuf),
    /// `--module mod[:callable]`.
    Module(String),
}

/// A socket address to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// TCP, v4 or v6.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// `--http-socket`: HTTP/1.1 served by the workers.
    Http,
    /// `--socket`/`--uwsgi-socket`: the uwsgi protocol served by the workers.
    Uwsgi,
    /// `--http`: HTTP/1.1 served by the router process, which dispatches to the workers.
    Router,
}

/// One socket to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    /// Where.
    pub addr: ListenAddr,
    /// What it speaks.
    pub kind: SocketKind,
}

/// The router's queue and buffering.
#[derive(Debug, Clone, Default)]
pub struct RouterConfig {
    /// `--queue-timeout`: answer 503 to a request that waited this long for a worker.
    pub queue_timeout: Option<Duration>,
    /// `--max-queue`: answer 503 at once beyond this many waiting requests (0 = no limit).
    pub max_queue: usize,
    /// `--post-buffering`: request bodies larger than this spill to a temporary file (0 = the
    /// default of 1 MiB).
    pub post_buffering: usize,
}

/// The validated configuration every process works from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every socket to bind, with what it speaks.
    pub sockets: Vec<SocketSpec>,
    /// `--chmod-socket`: permissions of unix sockets.
    pub chmod_socket: Option<u32>,
    /// The `--http` router's settings.
    pub router: RouterConfig,
    /// The main app (mountpoint ''), if one is given (`--mount` alone is enough).
    pub app: Option<AppSource>,
    /// `--mount /PATH=APP`: more apps, by mountpoint.
    pub mounts: Vec<(String, AppSource)>,
    /// `--manage-script-name`: choose the mounted app by PATH_INFO.
    pub manage_script_name: bool,
    /// The callable's name in the app module.
    pub callable: String,
    /// Directory to change to before loading.
    pub chdir: Option<PathBuf>,
    /// `--home` / `--virtualenv`: a virtualenv whose site-packages the app imports from.
    pub home: Option<PathBuf>,
    /// Extra `sys.path` entries.
    pub pythonpath: Vec<String>,
    /// Worker processes.
    pub processes: usize,
    /// Request threads per worker.
    pub threads: usize,
    /// Load the app in each worker after fork.
    pub lazy_apps: bool,
    /// `--interface`, `--lifespan`, `--loop`: how an ASGI app is served.
    pub asgi: AsgiOptions,
    /// Listen backlog.
    pub listen: i32,
    /// Environment variables to set.
    pub env: Vec<(String, String)>,
    /// Request logging off.
    pub disable_logging: bool,
    /// Log file.
    pub logto: Option<PathBuf>,
    /// Pid file.
    pub pidfile: Option<PathBuf>,
    /// Largest request head.
    pub buffer_size: usize,
    /// Largest request body (0 = unlimited).
    pub limit_post: u64,
    /// Idle keep-alive timeout.
    pub keepalive_timeout: Duration,
    /// Head read timeout and read/write stall timeout.
    pub socket_timeout: Duration,
    /// Warnings to log at startup (compat options used).
    pub warnings: Vec<String>,
    /// Supervision: harakiri, recycling, reloads, privileges.
    pub supervision: Supervision,
    /// Elastic workers: `--cheaper` and friends, `--idle`.
    pub elastic: cheaper::Elastic,
    /// The stats server and the metrics listener.
    pub stats: StatsConfig,
    /// Process titles (`--auto-procname`, `--procname*`).
    pub titles: Titles,
    /// `--daemonize FILE` (detach at startup) and `--daemonize2 FILE` (after the app is
    /// loaded): the file all output is appended to.
    pub daemonize: Option<(PathBuf, bool)>,
    /// `--py-autoreload N`: check imported modules' files every N seconds (0: off), except
    /// the modules named by `--py-auto-reload-ignore`.
    pub py_autoreload: (u64, Vec<String>),
    /// `route = REGEXP donotlog:` / `route-uri = ...`: requests not logged; `true` matches
    /// REQUEST_URI, `false` PATH_INFO. (The regex compiled when the config was read.)
    pub donotlog: Vec<(bool, String)>,
    /// `--chown-socket USER[:GROUP]`: owner of unix sockets.
    pub chown_socket: Option<String>,
    /// `--umask`: the process umask, set before the sockets are bound.
    pub umask: Option<u32>,
    /// `--add-header`: header lines (`Name: value`) added to every response.
    pub add_headers: Vec<String>,
    /// Request log format and conditions, `--log-date`.
    pub log: LogConfig,
    /// `static-map`, `check-static` and friends.
    pub static_files: crate::static_files::StaticConfig,
    /// Spoolers, mules, signals, timers, cron, attached daemons, caches and locks.
    pub offload: offload::OffloadConfig,
    /// `hook-*` and `exec-*`: actions run at uWSGI's startup phases.
    pub hooks: crate::hooks::Hooks,
    /// `route*` lines: uWSGI's internal routing, applied by the worker before the app.
    pub routes: Vec<crate::routing::Rule>,
}

/// `--log-format`, `--logformat-strftime`, `--log-date`, `--log-4xx`, `--log-5xx`,
/// `--log-zero`, `--log-slow`, `--log-big`, `--log-x-forwarded-for`, `--log-micros`,
/// `--memory-report`.
#[derive(Debug, Clone, Default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent uWSGI switches, one field each"
)]
pub struct LogConfig {
    /// `--log-format`.
    pub format: Option<String>,
    /// `--logformat-strftime`.
    pub format_strftime: bool,
    /// `--log-date`: `Some(None)` for the ctime date, `Some(Some(fmt))` for a strftime format.
    pub date: Option<Option<String>>,
    /// `--log-4xx`.
    pub log_4xx: bool,
    /// `--log-5xx`.
    pub log_5xx: bool,
    /// `--log-zero`.
    pub log_zero: bool,
    /// `--log-slow` in milliseconds (0 = off).
    pub slow_ms: u64,
    /// `--log-big` in bytes (0 = off).
    pub big: u64,
    /// `--log-x-forwarded-for`.
    pub x_forwarded_for: bool,
    /// `--log-micros`.
    pub micros: bool,
    /// `--memory-report`.
    pub memory_report: bool,
    /// `--req-logger file:PATH`: request lines go to this file.
    pub req_logger_file: Option<PathBuf>,
    /// `--log-maxsize` in bytes (0 = never).
    pub max_size: u64,
    /// `--log-backupname`.
    pub backupname: Option<PathBuf>,
    /// `--log-reopen`.
    pub reopen: bool,
    /// `--touch-logreopen` files.
    pub touch_reopen: Vec<PathBuf>,
    /// `--log-encoder` chain, parsed, and the values as given (for the startup lines).
    pub encoders: Vec<crate::log::encoder::Encoder>,
    /// See `encoders`.
    pub encoder_specs: Vec<String>,
    /// `--log-req-encoder` chain, parsed, and the values as given.
    pub req_encoders: Vec<crate::log::encoder::Encoder>,
    /// See `req_encoders`.
    pub req_encoder_specs: Vec<String>,
    /// `--logger syslog...` / `socket:...`: datagram loggers of the log lines.
    pub net_loggers: Vec<crate::log::net::Target>,
    /// `--req-logger syslog...` / `socket:...`: datagram loggers of the request lines.
    pub net_req_loggers: Vec<crate::log::net::Target>,
}

/// `--stats`, `--stats-http`, `--stats-minified`, `--metrics`.
#[derive(Debug, Clone, Default)]
pub struct StatsConfig {
    /// `--stats`/`--stats-server`: where the master serves the stats JSON.
    pub addr: Option<ListenAddr>,
    /// `--stats-http`: the stats listener speaks HTTP (and serves `/metrics`).
    pub http: bool,
    /// `--stats-minified`: JSON without whitespace.
    pub minified: bool,
    /// `--metrics`: a dedicated HTTP listener for Prometheus text.
    pub metrics: Option<ListenAddr>,
}

/// The options of the master's supervision.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    /// `--harakiri`: longest request before the worker is killed.
    pub harakiri: Option<Duration>,
    /// `--harakiri-graceful-timeout`.
    pub harakiri_grace: Duration,
    /// `--max-requests` (0 = off) and its jitter.
    pub max_requests: u64,
    /// `--max-requests-delta`.
    pub max_requests_delta: u64,
    /// `--reload-on-rss` in bytes (0 = off).
    pub reload_on_rss: u64,
    /// `--max-worker-lifetime` (None = off).
    pub max_lifetime: Option<Duration>,
    /// `--max-worker-lifetime-delta`.
    pub max_lifetime_delta: Duration,
    /// `--min-worker-lifetime`.
    pub min_lifetime: Duration,
    /// `--worker-reload-mercy`.
    pub reload_mercy: Duration,
    /// `--touch-reload` files.
    pub touch_reload: Vec<PathBuf>,
    /// `--touch-chain-reload` files.
    pub touch_chain_reload: Vec<PathBuf>,
    /// `--chain-reload`: SIGHUP replaces workers one at a time.
    pub chain_reload: bool,
    /// `--uid`.
    pub uid: Option<String>,
    /// `--gid`.
    pub gid: Option<String>,
    /// `--vacuum`.
    pub vacuum: bool,
}

/// Parse a uWSGI socket address: `:8000` (all IPv4 interfaces), `host:port`, `[v6]:port`, or a
/// path (anything with a `/` or without a port) for a unix socket.
pub fn parse_addr(s: &str) -> Result<ListenAddr, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("expected an address like :8000, 127.0.0.1:8000 or /path.sock".to_owned());
    }
    if s.contains('/') || !s.contains(':') {
        return Ok(ListenAddr::Unix(PathBuf::from(s)));
    }
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        s.to_owned()
    };
    if let Ok(a) = full.parse::<SocketAddr>() {
        return Ok(ListenAddr::Tcp(a));
    }
    let (_, port) = full.rsplit_once(':').unwrap_or((&full, ""));
    if port.parse::<u16>().is_err() {
        return Err(format!("port \"{port}\" is not a number from 0 to 65535"));
    }
    full.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .map(ListenAddr::Tcp)
        .ok_or_else(|| "cannot resolve host".to_owned())
}

/// uWSGI variables that are not options (uWSGI's `parse_sys_envs` skips them).
const NOT_OPTIONS: &[&str] = &[
    "UWSGI_RELOADS",
    "UWSGI_VASSALS_DIR",
    "UWSGI_EMPEROR_FD",
    "UWSGI_BROODLORD_NUM",
    "UWSGI_EMPEROR_FD_CONFIG",
    "UWSGI_EMPEROR_PROXY",
    "UWSGI_JAIL_PID",
    "UWSGI_ORIGINAL_PROC_NAME",
];

/// uWSGI's `env_to_arg`: `UWSGI_HTTP_SOCKET` -> `http-socket`.
fn env_to_arg(rest: &str) -> String {
    rest.to_ascii_lowercase().replace('_', "-")
}

/// The final merged configuration in uWSGI's `--show-config` format.
fn show_config(entries: &[collect::Entry]) -> String {
    let mut out = String::from("\n;uWSGI instance configuration\n[uwsgi]\n");
    for e in entries {
        out.push_str(&e.key);
        out.push_str(" = ");
        out.push_str(&e.value);
        out.push('\n');
    }
    out.push_str(";end of configuration\n");
    out
}

/// The options as uWSGI exports them to `uwsgi.opt`: every one given, in order; a flag given
/// on the command line without a value has none (uWSGI's `True`), any other keeps its text.
fn exported_options(entries: &[collect::Entry]) -> Vec<(String, Option<String>)> {
    entries
        .iter()
        .map(|e| {
            let bare_flag = e.origin == collect::Origin::Cli
                && e.value == "true"
                && table::lookup(&e.key).is_some_and(|k| k.arg() == table::Arg::No);
            (e.key.clone(), (!bare_flag).then(|| e.value.clone()))
        })
        .collect()
}

impl Config {
    /// Build the configuration from argv (argv[0] is the program) and the environment.
    pub fn load(argv: &[String], env: &[(String, String)]) -> Result<Request, ConfigError> {
        let (options, files) = match cli::parse(argv)? {
            cli::Parsed::Print(text) => return Ok(Request::Print(text)),
            cli::Parsed::Args { options, files } => (options, files),
        };
        let is_reload = env.iter().any(|(k, _)| k == "HEADRACE_REEXEC");
        let mut c = collect::Collector::new(is_reload);
        for (k, v) in env {
            let origin = collect::Origin::Env(k.clone());
            if let Some(rest) = k.strip_prefix("UWSGI_") {
                if !NOT_OPTIONS.contains(&k.as_str()) {
                    c.add(&env_to_arg(rest), v, &origin)?;
                }
            } else if let Some(rest) = k.strip_prefix("HEADRACE_") {
                // headrace's own variables (HEADRACE_FDS, HEADRACE_REEXEC...) are not options.
                let key = env_to_arg(rest);
                if table::lookup(&key).is_some() {
                    c.add(&key, v, &origin)?;
                }
            }
        }
        for (k, v) in &options {
            c.add(k, v, &collect::Origin::Cli)?;
        }
        for f in &files {
            c.load_by_ext(f, &collect::Origin::Cli)?;
        }
        let mut referenced = expand::expand(&mut c.entries, env)?;
        if c.load_inherited()? {
            referenced.extend(expand::expand(&mut c.entries, env)?);
        }
        let resolved = typed::resolve(&c.entries, &referenced, &c.customs, c.strict)?;
        if resolved.show_config {
            crate::log::raw(show_config(&c.entries).as_bytes());
        }
        for p in &resolved.prints {
            crate::log!("{p}");
        }
        let systemd_sockets = env
            .iter()
            .any(|(k, v)| k == "LISTEN_FDS" && v.parse::<u32>().is_ok_and(|n| n > 0));
        let mut config = typed::build(&resolved, systemd_sockets)?;
        config.offload.exported = exported_options(&c.entries);
        let mut warnings = std::mem::take(&mut c.warnings);
        warnings.append(&mut config.warnings);
        config.warnings = warnings;
        Ok(Request::Serve(Box::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let full_args: Vec<String> = std::iter::once("headrace")
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match Config::load(&full_args, &env)? {
            Request::Serve(c) => Ok(*c),
            Request::Print(_) => panic!("unexpected print"),
        }
    }

    #[test]
    fn addresses() {
        let cases: &[(&str, Option<ListenAddr>)] = &[
            (
                ":8000",
                Some(ListenAddr::Tcp("0.0.0.0:8000".parse().unwrap())),
            ),
            (
                "127.0.0.1:80",
                Some(ListenAddr::Tcp("127.0.0.1:80".parse().unwrap())),
            ),
            ("[::1]:9", Some(ListenAddr::Tcp("[::1]:9".parse().unwrap()))),
            ("/tmp/x.sock", Some(ListenAddr::Unix("/tmp/x.sock".into()))),
            ("127.0.0.1:http", None),
            ("127.0.0.1:70000", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_addr(input).ok(), *want, "{input}");
        }
    }

    #[test]
    fn precedence_is_uwsgi_order() {
        let dir = std::env::temp_dir().join(format!("hr-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ini = dir.join("u.ini");
        std::fs::write(&ini, "[uwsgi]\nprocesses = 3\nthreads = 2\nenv = A=1\nhttp-socket = :9000\nwsgi-file = app.py\n").unwrap();
        let ini = ini.to_str().unwrap();
        let c = load(&["--ini", ini], &[]).unwrap();
        assert_eq!((c.processes, c.threads), (3, 2));
        // uWSGI reads the environment first, then the command line with its files: the ini
        // given on the command line comes later, so it wins over UWSGI_PROCESSES.
        let c = load(&["--ini", ini], &[("UWSGI_PROCESSES", "4")]).unwrap();
        assert_eq!(c.processes, 3);
        let c = load(&["-p", "4", "--ini", ini], &[]).unwrap();
        assert_eq!(c.processes, 3);
        let c = load(&["--ini", ini, "-p", "4"], &[]).unwrap();
        assert_eq!(c.processes, 4);
        let c = load(
            &["--ini", ini, "-p", "5", "--env", "B=2"],
            &[("UWSGI_PROCESSES", "4")],
        )
        .unwrap();
        assert_eq!(c.processes, 5);
        assert_eq!(
            c.env,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        let c = load(&[ini], &[]).unwrap();
        assert_eq!(c.processes, 3, "a positional .ini is read like --ini");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_option_and_source() {
        let base = ["--http-socket", ":0", "--wsgi-file", "a.py"];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            load(&v, &[]).unwrap_err().to_string()
        };
        assert_eq!(
            with(&["--processes", "abc"]),
            "invalid processes \"abc\" on the command line: expected a whole number of processes, at least 1"
        );
        assert!(with(&["--bogus"]).contains("--bogus"));
        assert!(with(&["--env", "NOEQUALS"]).contains("invalid env"));
        let e = load(
            &["--wsgi-file", "a.py"],
            &[("UWSGI_THREADS", "0"), ("UWSGI_HTTP_SOCKET", ":1")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("threads \"0\" in $UWSGI_THREADS"), "{e}");
        assert!(load(&["--wsgi-file", "a.py"], &[])
            .unwrap_err()
            .to_string()
            .contains("no socket"));
    }

    #[test]
    fn flags_and_aliases() {
        let c = load(
            &[
                "--http",
                "127.0.0.1:1",
                "-w",
                "pkg.mod:app",
                "--workers",
                "2",
                "--master",
                "-L",
                "--lazy-apps",
                "--die-on-term",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.app, Some(AppSource::Module("pkg.mod:app".into())));
        assert_eq!(c.processes, 2);
        assert!(c.disable_logging && c.lazy_apps);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }
}

/// `--interface`, `--lifespan` and `--loop`, each one of a few words (checked when read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgiOptions {
    /// `auto`, `wsgi` or `asgi`.
    pub interface: String,
    /// `auto`, `on` or `off`.
    pub lifespan: String,
    /// `auto`, `asyncio` or `uvloop`.
    pub event_loop: String,
    /// `--ws-max-size`: largest WebSocket message, bytes.
    pub ws_max_size: u64,
    /// `--ws-ping-interval`: server pings of idle WebSockets (zero: off).
    pub ws_ping_interval: std::time::Duration,
    /// `--limit-concurrency`: requests one ASGI worker runs at once (0 = no limit).
    pub limit_concurrency: u64,
}
