//! The one typed `Config`, merged from defaults < ini < env < command line by [`Config::load`].

mod cli;
pub mod ini;
pub mod spec;

use std::collections::HashMap;
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
    /// The app.
    pub app: AppSource,
    /// The callable's name in the app module.
    pub callable: String,
    /// Directory to change to before loading.
    pub chdir: Option<PathBuf>,
    /// Extra `sys.path` entries.
    pub pythonpath: Vec<String>,
    /// Worker processes.
    pub processes: usize,
    /// Request threads per worker.
    pub threads: usize,
    /// Load the app in each worker after fork.
    pub lazy_apps: bool,
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
    /// The stats server and the metrics listener.
    pub stats: StatsConfig,
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

/// Where a raw value came from, for error messages.
#[derive(Debug, Clone)]
enum Source {
    Default,
    Ini(String),
    Env(String),
    Cli,
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Self::Default => "(default)".to_owned(),
            Self::Ini(f) => format!("in {f}"),
            Self::Env(v) => format!("in ${v}"),
            Self::Cli => "on the command line".to_owned(),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Default => 0,
            Self::Ini(_) => 1,
            Self::Env(_) => 2,
            Self::Cli => 3,
        }
    }
}

/// Raw values per option name, before typing.
#[derive(Default)]
struct Raw {
    values: HashMap<&'static str, Vec<(String, Source)>>,
    /// systemd passed listening sockets (LISTEN_FDS), so no socket option is required.
    systemd_sockets: bool,
}

impl Raw {
    fn push(&mut self, spec: &'static spec::OptSpec, value: String, source: Source) {
        self.values
            .entry(spec.name)
            .or_default()
            .push((value, source));
    }

    /// The winning value of a single-valued option: highest-ranked source, last given.
    fn get(&self, name: &'static str) -> Option<&(String, Source)> {
        let list = self.values.get(name)?;
        let top = list.iter().map(|(_, s)| s.rank()).max()?;
        list.iter().rev().find(|(_, s)| s.rank() == top)
    }

    /// Every value of a repeatable option, lowest-ranked source first.
    fn all(&self, name: &'static str) -> Vec<&(String, Source)> {
        let mut v: Vec<&(String, Source)> = self
            .values
            .get(name)
            .map(|l| {
                l.iter()
                    .filter(|(_, s)| !matches!(s, Source::Default))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|(_, s)| s.rank());
        v
    }

    fn str(&self, name: &'static str) -> Option<String> {
        self.get(name).map(|(v, _)| v.clone())
    }

    fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        let Some((v, src)) = self.get(name) else {
            return Ok(false);
        };
        parse_bool(v).ok_or_else(|| invalid(name, v, src, "expected true or false"))
    }

    fn number<T>(&self, name: &'static str, min: &T, what: &str) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd,
    {
        let (v, src) = self
            .get(name)
            .ok_or(ConfigError::Missing("internal: option without default"))?;
        match v.trim().parse::<T>() {
            Ok(n) if n >= *min => Ok(n),
            _ => Err(invalid(name, v, src, what)),
        }
    }

    fn seconds(&self, name: &'static str) -> Result<Duration, ConfigError> {
        self.number::<u64>(name, &1, "expected a whole number of seconds, at least 1")
            .map(Duration::from_secs)
    }
}

fn invalid(option: &'static str, value: &str, src: &Source, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        option,
        value: value.to_owned(),
        source_desc: src.describe(),
        reason: reason.to_owned(),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" | "y" => Some(true),
        "0" | "false" | "no" | "off" | "n" => Some(false),
        _ => None,
    }
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

impl Config {
    /// Build the configuration from argv (argv[0] is the program) and the environment.
    pub fn load(argv: &[String], env: &[(String, String)]) -> Result<Request, ConfigError> {
        let mut raw = Raw::default();
        for spec in spec::OPTIONS {
            if let Some(d) = spec.default {
                raw.push(spec, d.to_owned(), Source::Default);
            }
        }
        let cli = match cli::parse(argv)? {
            cli::Parsed::Print(text) => return Ok(Request::Print(text)),
            cli::Parsed::Values(v) => v,
        };
        // Ini files: named on the command line (--ini or a positional *.ini) or in the env.
        let mut ini_files: Vec<String> = cli
            .iter()
            .filter(|(s, _)| s.name == "ini")
            .map(|(_, v)| v.clone())
            .collect();
        for (k, v) in env {
            if (k == "UWSGI_INI" || k == "HEADRACE_INI") && ini_files.is_empty() {
                ini_files.push(v.clone());
            }
        }
        for file in &ini_files {
            for (key, value) in ini::read(file)? {
                let spec = spec::find(&key).ok_or_else(|| ConfigError::Unknown {
                    key: key.clone(),
                    source_desc: format!("in {file}"),
                })?;
                raw.push(spec, value, Source::Ini(file.clone()));
            }
        }
        for (k, v) in env {
            let Some(name) = k
                .strip_prefix("HEADRACE_")
                .or_else(|| k.strip_prefix("UWSGI_"))
            else {
                continue;
            };
            let name = name.to_ascii_lowercase().replace('_', "-");
            // Unknown UWSGI_* variables are ignored: uWSGI itself sets some in its children.
            if let Some(spec) = spec::find(&name) {
                if spec.name != "ini" {
                    raw.push(spec, v.clone(), Source::Env(k.clone()));
                }
            }
        }
        for (spec, value) in cli {
            raw.push(spec, value, Source::Cli);
        }
        raw.systemd_sockets = env
            .iter()
            .any(|(k, v)| k == "LISTEN_FDS" && v.parse::<u32>().is_ok_and(|n| n > 0));
        Self::from_raw(&raw).map(|c| Request::Serve(Box::new(c)))
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one flat list of options, read top to bottom"
    )]
    fn from_raw(raw: &Raw) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        for spec in spec::OPTIONS {
            if let (Some(why), Some((v, src))) = (spec.compat, raw.get(spec.name)) {
                if !matches!(src, Source::Default) && parse_bool(v) != Some(false) {
                    warnings.push(format!("option --{} {}: {why}", spec.name, src.describe()));
                }
            }
        }
        // Values with a shape are checked before what is missing, so that
        // `headrace --processes abc` names --processes first.
        let processes = raw.number(
            "processes",
            &1,
            "expected a whole number of processes, at least 1",
        )?;
        let threads = raw.number(
            "threads",
            &1,
            "expected a whole number of threads, at least 1",
        )?;
        let listen = raw.number("listen", &1, "expected a backlog size, at least 1")?;
        let buffer_size = raw.number(
            "buffer-size",
            &1024,
            "expected a size in bytes, at least 1024",
        )?;
        let limit_post = raw.number("limit-post", &0, "expected a size in bytes (0 = no limit)")?;
        let keepalive_timeout = raw.seconds("http-keepalive")?;
        let socket_timeout = raw.seconds("socket-timeout")?;
        let lazy_apps = raw.flag("lazy-apps")?;
        let secs = |name: &'static str| -> Result<u64, ConfigError> {
            raw.number::<u64>(name, &0, "expected a whole number of seconds")
        };
        let optional = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        let supervision = Supervision {
            harakiri: optional(secs("harakiri")?),
            harakiri_grace: Duration::from_secs(secs("harakiri-graceful-timeout")?),
            max_requests: raw.number(
                "max-requests",
                &0,
                "expected a number of requests (0 = never)",
            )?,
            max_requests_delta: raw.number(
                "max-requests-delta",
                &0,
                "expected a number of requests",
            )?,
            reload_on_rss: raw
                .number::<u64>("reload-on-rss", &0, "expected megabytes (0 = never)")?
                .saturating_mul(1024 * 1024),
            max_lifetime: optional(secs("max-worker-lifetime")?),
            max_lifetime_delta: Duration::from_secs(secs("max-worker-lifetime-delta")?),
            min_lifetime: Duration::from_secs(secs("min-worker-lifetime")?),
            reload_mercy: Duration::from_secs(secs("worker-reload-mercy")?),
            touch_reload: raw
                .all("touch-reload")
                .into_iter()
                .map(|(v, _)| PathBuf::from(v))
                .collect(),
            touch_chain_reload: raw
                .all("touch-chain-reload")
                .into_iter()
                .map(|(v, _)| PathBuf::from(v))
                .collect(),
            chain_reload: raw.flag("chain-reload")?,
            uid: raw.str("uid"),
            gid: raw.str("gid"),
            vacuum: raw.flag("vacuum")?,
        };
        let disable_logging = raw.flag("disable-logging")?;
        let mut env = Vec::new();
        for (v, src) in raw.all("env") {
            let (k, val) = v
                .split_once('=')
                .ok_or_else(|| invalid("env", v, src, "expected KEY=VALUE"))?;
            env.push((k.to_owned(), val.to_owned()));
        }
        let mut sockets = Vec::new();
        for (name, kind) in [
            ("http-socket", SocketKind::Http),
            ("socket", SocketKind::Uwsgi),
            ("http", SocketKind::Router),
        ] {
            for (v, src) in raw.all(name) {
                let addr = parse_addr(v).map_err(|r| invalid(name, v, src, &r))?;
                sockets.push(SocketSpec { addr, kind });
            }
        }
        let chmod_socket = match raw.get("chmod-socket") {
            None => None,
            Some((v, src)) => {
                // uWSGI: a bare --chmod-socket means 666.
                let text = if v.trim().is_empty() || v.trim() == "true" {
                    "666"
                } else {
                    v.trim()
                };
                Some(
                    u32::from_str_radix(text, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| {
                            invalid(
                                "chmod-socket",
                                v,
                                src,
                                "expected octal permissions like 660",
                            )
                        })?,
                )
            }
        };
        let router = RouterConfig {
            queue_timeout: {
                let t = raw.number::<f64>(
                    "queue-timeout",
                    &0.0,
                    "expected seconds, fractions allowed (0 = wait)",
                )?;
                (t.is_finite() && t > 0.0).then(|| Duration::from_secs_f64(t.min(1e9)))
            },
            max_queue: raw.number(
                "max-queue",
                &0,
                "expected a number of requests (0 = no limit)",
            )?,
            post_buffering: raw.number("post-buffering", &0, "expected a size in bytes")?,
        };
        let callable = raw.str("callable").unwrap_or_default();
        if callable.is_empty() {
            let (v, src) = raw
                .get("callable")
                .cloned()
                .unwrap_or((String::new(), Source::Default));
            return Err(invalid("callable", &v, &src, "expected a name"));
        }
        if sockets.is_empty() && !raw.systemd_sockets {
            return Err(ConfigError::Missing(
                "no socket to serve: give --http-socket ADDR, --http ADDR or --socket ADDR",
            ));
        }
        let app = match (raw.get("wsgi-file"), raw.get("module")) {
            (Some((f, _)), None) => AppSource::File(PathBuf::from(f)),
            (None, Some((m, _))) => AppSource::Module(m.clone()),
            (Some((f, fs)), Some((m, ms))) => {
                if fs.rank() >= ms.rank() {
                    AppSource::File(PathBuf::from(f))
                } else {
                    AppSource::Module(m.clone())
                }
            }
            (None, None) => {
                return Err(ConfigError::Missing(
                    "no app to serve: give --wsgi-file FILE or --module MODULE[:CALLABLE]",
                ))
            }
        };
        Ok(Self {
            sockets,
            chmod_socket,
            router,
            app,
            callable,
            chdir: raw.str("chdir").map(PathBuf::from),
            pythonpath: raw
                .all("pythonpath")
                .into_iter()
                .map(|(v, _)| v.clone())
                .collect(),
            processes,
            threads,
            lazy_apps,
            listen,
            env,
            disable_logging,
            logto: raw.str("logto").map(PathBuf::from),
            pidfile: raw.str("pidfile").map(PathBuf::from),
            buffer_size,
            limit_post,
            keepalive_timeout,
            socket_timeout,
            warnings,
            supervision,
            stats: stats_options(raw)?,
        })
    }
}

fn stats_options(raw: &Raw) -> Result<StatsConfig, ConfigError> {
    let addr = |name: &'static str| {
        raw.get(name)
            .map(|(v, src)| parse_addr(v).map_err(|r| invalid(name, v, src, &r)))
            .transpose()
    };
    Ok(StatsConfig {
        addr: addr("stats")?,
        http: raw.flag("stats-http")?,
        minified: raw.flag("stats-minified")?,
        metrics: addr("metrics")?,
    })
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
    fn precedence_default_ini_env_cli() {
        let dir = std::env::temp_dir().join(format!("hr-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ini = dir.join("u.ini");
        std::fs::write(&ini, "[uwsgi]\nprocesses = 3\nthreads = 2\nenv = A=1\nhttp-socket = :9000\nwsgi-file = app.py\n").unwrap();
        let ini = ini.to_str().unwrap();
        let c = load(&["--ini", ini], &[]).unwrap();
        assert_eq!((c.processes, c.threads), (3, 2));
        let c = load(&["--ini", ini], &[("UWSGI_PROCESSES", "4")]).unwrap();
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
        assert_eq!(c.app, AppSource::Module("pkg.mod:app".into()));
        assert_eq!(c.processes, 2);
        assert!(c.disable_logging && c.lazy_apps);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }
}
