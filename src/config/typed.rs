//! From the expanded option list to the typed [`Config`]: every key is resolved once against the
//! option tables (implemented, accepted, refused, config language, or a placeholder), and the
//! implemented ones are read by [`Opt`], with the type and bounds their row declares.

use super::collect::{Entry, Origin};
use super::spec::{Opt, OptSpec, Ty, OPTIONS};
use super::table::{self, Arg, Disp, Known};
use super::{
    parse_addr, AppSource, Config, ConfigError, RouterConfig, SocketKind, SocketSpec, Supervision,
};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::sections::{
    add_headers, log_options, logger_file, mounts, octal, routes, static_options, stats_options,
};

/// true/false, yes/no, on/off, in any case.
fn is_bool_word(v: &str) -> bool {
    ["true", "false", "yes", "no", "on", "off"]
        .iter()
        .any(|w| v.trim().eq_ignore_ascii_case(w))
}

/// uWSGI's `uwsgi_opt_true`: false only for `false`, `off`, `no` (any case) and `0`.
#[must_use]
pub fn is_true(v: &str) -> bool {
    let v = v.trim();
    !(v.eq_ignore_ascii_case("false")
        || v.eq_ignore_ascii_case("off")
        || v.eq_ignore_ascii_case("no")
        || v == "0")
}

/// C's `atoi`: leading blanks, a sign, digits.
#[must_use]
pub fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, d) = t
        .strip_prefix('-')
        .map_or((false, t.strip_prefix('+').unwrap_or(t)), |r| (true, r));
    let n = d.bytes().take_while(u8::is_ascii_digit).fold(0i64, |n, b| {
        n.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    if neg {
        -n
    } else {
        n
    }
}

/// The hook uWSGI users write to make SIGTERM stop the server, which headrace always does.
const GRACEFUL_TERM_HOOK: &str = "unix_signal:15 gracefully_kill_them_all";

/// The resolved option list: values of implemented options by [`Opt`], plus what to tell the
/// user.
pub struct Resolved<'a> {
    values: Vec<Vec<&'a Entry>>,
    /// Warning lines (accepted options, unknown keys).
    pub warnings: Vec<String>,
    /// `print` values, in order.
    pub prints: Vec<String>,
    /// `show-config` was given.
    pub show_config: bool,
}

#[allow(clippy::too_many_lines, reason = "one match over the dispositions")]
/// Sort every entry into its disposition. Refused options and (in strict mode) unknown keys
/// are errors; the first one met is reported.
pub fn resolve<'a>(
    entries: &'a [Entry],
    referenced: &HashSet<String>,
    customs: &[(String, String)],
    strict: bool,
) -> Result<Resolved<'a>, ConfigError> {
    let mut r = Resolved {
        values: vec![Vec::new(); OPTIONS.len()],
        warnings: Vec::new(),
        prints: Vec::new(),
        show_config: false,
    };
    let mut warned: HashSet<&str> = HashSet::new();
    for e in entries {
        let known = table::lookup(&e.key);
        let refuse = |reason: &str| ConfigError::Refused {
            key: e.key.clone(),
            source_desc: e.origin.describe(),
            reason: reason.to_owned(),
        };
        match known {
            Some(Known::Spec(s)) => {
                if let Some(why) = s.compat {
                    if is_true(&e.value) && warned.insert(s.name) {
                        r.warnings.push(format!(
                            "option `{}` {}: {why}",
                            e.key,
                            e.origin.describe()
                        ));
                    }
                }
                let unit = match s.name {
                    "log-slow" => Some("milliseconds"),
                    "post-buffering" => Some("bytes"),
                    _ => None,
                };
                if let Some(unit) = unit.filter(|_| is_bool_word(&e.value)) {
                    // uWSGI reads these with atoi/strtoul: `log-slow = True` and
                    // `post-buffering = true` are 0, off.
                    r.warnings.push(format!(
                        "option `{}` {}: `{}` is not a number of {unit}; read as 0 (off), as uWSGI does",
                        e.key,
                        e.origin.describe(),
                        e.value.trim()
                    ));
                    continue;
                }
                r.values[s.opt as usize].push(e);
            }
            Some(Known::Uwsgi(u)) => {
                let inert = u.arg == Arg::No && !is_true(&e.value);
                match u.disp {
                    Disp::Works => {}
                    Disp::Lang(_) => match u.name {
                        "print" | "iprint" => r.prints.push(e.value.clone()),
                        "show-config" => r.show_config = is_true(&e.value),
                        _ => {}
                    },
                    Disp::Accepted(why) => {
                        if matches!(
                            u.name,
                            "plugin" | "plugins" | "need-plugin" | "need-plugins"
                        ) {
                            let bad = e
                                .value
                                .split([',', ' '])
                                .find(|p| !p.trim().is_empty() && !super::logic::has_plugin(p));
                            if let Some(p) = bad.filter(|_| u.name.starts_with("need-")) {
                                return Err(refuse(&format!(
                                    "plugin `{}` is not available: headrace serves Python WSGI apps and has the http router built in",
                                    p.trim()
                                )));
                            }
                            if let Some(p) = bad {
                                // uWSGI logs `!!! UNABLE to load uWSGI plugin` and goes on
                                // (need-plugin exits); an option of that plugin is refused
                                // where it is used.
                                r.warnings.push(format!(
                                    "option `{}` {}: plugin `{}` is not available (headrace serves Python WSGI apps and has the http router built in); going on without it, as uWSGI does",
                                    e.key,
                                    e.origin.describe(),
                                    p.trim()
                                ));
                                continue;
                            }
                        }
                        if !inert && warned.insert(u.name) {
                            r.warnings.push(format!(
                                "option `{}` {} accepted but ignored: {}",
                                e.key,
                                e.origin.describe(),
                                table::reason(why)
                            ));
                        }
                    }
                    Disp::Refused(why) => {
                        if u.name == "hook-master-start" && e.value.trim() == GRACEFUL_TERM_HOOK {
                            if warned.insert(u.name) {
                                r.warnings.push(format!("option `{}` {} accepted: SIGTERM always stops headrace gracefully", e.key, e.origin.describe()));
                            }
                        } else if !inert {
                            return Err(refuse(table::reason(why)));
                        }
                    }
                }
            }
            None => {
                if customs.iter().any(|(n, _)| *n == e.key)
                    || e.configured && !matches!(e.origin, Origin::Env(_))
                {
                    continue;
                }
                if strict {
                    return Err(ConfigError::Unknown {
                        key: e.key.clone(),
                        source_desc: format!("{} (strict mode)", e.origin.describe()),
                    });
                }
                // uWSGI sets UWSGI_* variables of its own in its children: ignore them quietly.
                if matches!(e.origin, Origin::Env(_))
                    || referenced.contains(&e.key)
                    || !warned.insert(&e.key)
                {
                    continue;
                }
                let hint = table::suggest(&e.key)
                    .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                r.warnings.push(format!(
                    "unknown option `{}` {}{hint}",
                    e.key,
                    e.origin.describe()
                ));
            }
        }
    }
    Ok(r)
}

impl Resolved<'_> {
    /// The winning value of a single-valued option: the last given, else its default.
    pub(super) fn get(&self, opt: Opt) -> Option<(String, Origin)> {
        let s = OptSpec::of(opt);
        match self.values[opt as usize].last() {
            Some(e) => Some((e.value.clone(), e.origin.clone())),
            None => s.default.map(|d| (d.to_owned(), Origin::Default)),
        }
    }

    pub(super) fn position(&self, opt: Opt) -> Option<usize> {
        self.values[opt as usize]
            .last()
            .map(|e| std::ptr::from_ref(*e) as usize)
    }

    pub(super) fn all(&self, opt: Opt) -> impl Iterator<Item = &Entry> {
        self.values[opt as usize].iter().copied()
    }

    pub(super) fn text(&self, opt: Opt) -> Option<String> {
        self.get(opt).map(|(v, _)| v)
    }

    pub(super) fn flag(&self, opt: Opt) -> bool {
        self.get(opt).is_some_and(|(v, _)| is_true(&v))
    }

    /// A number with the bounds of its row. A trailing comment after blanks (`4 ; workers`)
    /// is tolerated, as uWSGI's `atoi` reads only the digits.
    pub(super) fn count(&self, opt: Opt) -> Result<u64, ConfigError> {
        let s = OptSpec::of(opt);
        let Ty::Count { min, expect } = s.ty else {
            return Err(ConfigError::Missing("internal: option is not a number"));
        };
        let (v, origin) = self
            .get(opt)
            .ok_or(ConfigError::Missing("internal: option without default"))?;
        let t = v.trim();
        let t = t
            .split_once([' ', '\t'])
            .filter(|(_, rest)| rest.trim_start().starts_with([';', '#']))
            .map_or(t, |(n, _)| n);
        match t.parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(invalid(s, &v, &origin, &format!("expected {expect}"))),
        }
    }

    pub(super) fn secs(&self, opt: Opt) -> Result<Duration, ConfigError> {
        self.count(opt).map(Duration::from_secs)
    }
}

pub(super) fn invalid(s: &OptSpec, value: &str, origin: &Origin, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        option: s.name,
        value: value.to_owned(),
        source_desc: origin.describe(),
        reason: reason.to_owned(),
    }
}

/// `--home`/`--virtualenv`: a directory that exists (its site-packages is found when Python
/// starts, since the version decides the path).
fn home(r: &Resolved<'_>) -> Result<Option<PathBuf>, ConfigError> {
    let Some((value, origin)) = r.get(Opt::Home) else {
        return Ok(None);
    };
    let dir = PathBuf::from(&value);
    if !dir.is_dir() {
        return Err(invalid(
            OptSpec::of(Opt::Home),
            &value,
            &origin,
            "expected a virtualenv directory",
        ));
    }
    Ok(Some(dir))
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Build the typed configuration.
#[allow(
    clippy::too_many_lines,
    reason = "one flat list of options, read top to bottom"
)]
pub fn build(r: &Resolved<'_>, systemd_sockets: bool) -> Result<Config, ConfigError> {
    // Values with a shape are checked before what is missing, so that
    // `headrace --processes abc` names --processes first.
    let processes = usize_of(r.count(Opt::Processes)?);
    let mut warnings = r.warnings.clone();
    let elastic = super::cheaper::build(r, processes, &mut warnings)?;
    let threads = usize_of(r.count(Opt::Threads)?);
    let listen = i32::try_from(r.count(Opt::Listen)?).unwrap_or(i32::MAX);
    let buffer_size = usize_of(r.count(Opt::BufferSize)?);
    let limit_post = r.count(Opt::LimitPost)?;
    let keepalive_timeout = r.secs(Opt::HttpKeepalive)?;
    let socket_timeout = r.secs(Opt::SocketTimeout)?;
    let optional = |n: u64| (n > 0).then(|| Duration::from_secs(n));
    let paths = |opt| r.all(opt).map(|e| PathBuf::from(&e.value)).collect();
    let supervision = Supervision {
        harakiri: optional(r.count(Opt::Harakiri)?),
        harakiri_grace: r.secs(Opt::HarakiriGracefulTimeout)?,
        max_requests: r.count(Opt::MaxRequests)?,
        max_requests_delta: r.count(Opt::MaxRequestsDelta)?,
        reload_on_rss: r.count(Opt::ReloadOnRss)?.saturating_mul(1024 * 1024),
        max_lifetime: optional(r.count(Opt::MaxWorkerLifetime)?),
        max_lifetime_delta: r.secs(Opt::MaxWorkerLifetimeDelta)?,
        min_lifetime: r.secs(Opt::MinWorkerLifetime)?,
        reload_mercy: r.secs(Opt::WorkerReloadMercy)?,
        touch_reload: paths(Opt::TouchReload),
        touch_chain_reload: paths(Opt::TouchChainReload),
        chain_reload: r.flag(Opt::ChainReload),
        uid: r.text(Opt::Uid),
        gid: r.text(Opt::Gid),
        vacuum: r.flag(Opt::Vacuum),
    };
    let mut env = Vec::new();
    for e in r.all(Opt::Env) {
        let (k, val) = e.value.split_once('=').ok_or_else(|| {
            invalid(
                OptSpec::of(Opt::Env),
                &e.value,
                &e.origin,
                "expected KEY=VALUE",
            )
        })?;
        env.push((k.to_owned(), val.to_owned()));
    }
    let socket_kind = match r.get(Opt::Protocol) {
        None => SocketKind::Uwsgi,
        Some((v, o)) => match v.trim() {
            "" | "uwsgi" => SocketKind::Uwsgi,
            "http" => SocketKind::Http,
            _ => {
                return Err(invalid(
                    OptSpec::of(Opt::Protocol),
                    &v,
                    &o,
                    "expected uwsgi or http",
                ))
            }
        },
    };
    let mut sockets = Vec::new();
    for (opt, kind) in [
        (Opt::HttpSocket, SocketKind::Http),
        (Opt::Socket, socket_kind),
        (Opt::Http, SocketKind::Router),
    ] {
        for e in r.all(opt) {
            let addr = parse_addr(&e.value)
                .map_err(|why| invalid(OptSpec::of(opt), &e.value, &e.origin, &why))?;
            sockets.push(SocketSpec { addr, kind });
        }
    }
    let chmod_socket = match r.get(Opt::ChmodSocket) {
        None => None,
        Some((v, o)) => {
            // uWSGI: a bare --chmod-socket means 666.
            let t = v.trim();
            let t = if t.is_empty() || t == "true" {
                "666"
            } else {
                t
            };
            Some(
                u32::from_str_radix(t, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        invalid(
                            OptSpec::of(Opt::ChmodSocket),
                            &v,
                            &o,
                            "expected octal permissions like 660",
                        )
                    })?,
            )
        }
    };
    let queue_timeout = match r.get(Opt::QueueTimeout) {
        None => None,
        Some((v, o)) => {
            let Ty::FracSeconds { expect } = OptSpec::of(Opt::QueueTimeout).ty else {
                return Err(ConfigError::Missing(
                    "internal: queue-timeout is fractional seconds",
                ));
            };
            match v.trim().parse::<f64>() {
                Ok(t) if t >= 0.0 => {
                    (t.is_finite() && t > 0.0).then(|| Duration::from_secs_f64(t.min(1e9)))
                }
                _ => {
                    return Err(invalid(
                        OptSpec::of(Opt::QueueTimeout),
                        &v,
                        &o,
                        &format!("expected {expect}"),
                    ))
                }
            }
        }
    };
    let router = RouterConfig {
        queue_timeout,
        max_queue: usize_of(r.count(Opt::MaxQueue)?),
        post_buffering: usize_of(r.count(Opt::PostBuffering)?),
    };
    let callable = r.text(Opt::Callable).unwrap_or_default();
    if callable.is_empty() {
        let (v, o) = r
            .get(Opt::Callable)
            .unwrap_or((String::new(), Origin::Default));
        return Err(invalid(
            OptSpec::of(Opt::Callable),
            &v,
            &o,
            "expected a name",
        ));
    }
    if sockets.is_empty() && !systemd_sockets {
        return Err(ConfigError::Missing(
            "no socket to serve: give --http-socket ADDR, --http ADDR or --socket ADDR",
        ));
    }
    // Both given: the one given last wins.
    let app = match (r.text(Opt::WsgiFile), r.text(Opt::Module)) {
        (Some(f), Some(m)) => {
            if r.position(Opt::WsgiFile) >= r.position(Opt::Module) {
                Some(AppSource::File(PathBuf::from(f)))
            } else {
                Some(AppSource::Module(m))
            }
        }
        (Some(f), None) => Some(AppSource::File(PathBuf::from(f))),
        (None, Some(m)) => Some(AppSource::Module(m)),
        (None, None) => None,
    };
    let mounts = mounts(r)?;
    if app.is_none() && mounts.is_empty() {
        return Err(ConfigError::Missing(
            "no app to serve: give --wsgi-file FILE, --module MODULE[:CALLABLE] or --mount /PATH=APP",
        ));
    }
    Ok(Config {
        sockets,
        chmod_socket,
        router,
        app,
        callable,
        chdir: r.text(Opt::Chdir).map(PathBuf::from),
        home: home(r)?,
        pythonpath: r.all(Opt::Pythonpath).map(|e| e.value.clone()).collect(),
        processes,
        threads,
        lazy_apps: r.flag(Opt::LazyApps),
        asgi: super::AsgiOptions {
            interface: one_of(r, Opt::Interface, &["auto", "wsgi", "asgi"])?,
            lifespan: one_of(r, Opt::Lifespan, &["auto", "on", "off"])?,
            event_loop: one_of(r, Opt::Loop, &["auto", "asyncio", "uvloop"])?,
            ws_max_size: r.count(Opt::WsMaxSize)?,
            ws_ping_interval: r.secs(Opt::WsPingInterval)?,
            limit_concurrency: r.count(Opt::LimitConcurrency)?,
        },
        listen,
        env,
        disable_logging: r.flag(Opt::DisableLogging),
        logto: match r.text(Opt::Logto) {
            Some(path) => Some(PathBuf::from(path)),
            None => logger_file(r, Opt::Logger)?.0,
        },
        pidfile: r.text(Opt::Pidfile).map(PathBuf::from),
        buffer_size,
        limit_post,
        keepalive_timeout,
        socket_timeout,
        warnings,
        supervision,
        elastic,
        stats: stats_options(r)?,
        daemonize: r
            .text(Opt::Daemonize)
            .map(|p| (PathBuf::from(p), false))
            .or_else(|| r.text(Opt::Daemonize2).map(|p| (PathBuf::from(p), true))),
        chown_socket: r.text(Opt::ChownSocket),
        mounts,
        manage_script_name: r.flag(Opt::ManageScriptName),
        donotlog: routes(r)?,
        py_autoreload: (
            r.count(Opt::PyAutoreload)?,
            r.all(Opt::PyAutoreloadIgnore)
                .map(|e| e.value.clone())
                .collect(),
        ),
        umask: octal(r, Opt::Umask, 0o777, "expected an octal umask like 022")?,
        add_headers: add_headers(r)?,
        titles: crate::config::Titles {
            auto: r.flag(Opt::AutoProcname),
            procname: r.text(Opt::Procname),
            master: r.text(Opt::ProcnameMaster),
            prefix: match (
                r.text(Opt::ProcnamePrefixSpaced),
                r.text(Opt::ProcnamePrefix),
            ) {
                (Some(p), _) => format!("{p} "),
                (None, p) => p.unwrap_or_default(),
            },
            append: r.text(Opt::ProcnameAppend).unwrap_or_default(),
        },
        log: log_options(r)?,
        static_files: static_options(r)?,
        offload: super::offload::build(r)?,
        hooks: super::gaps::hooks(r)?,
        routes: super::gaps::routes(r)?,
    })
}

/// An option whose value is one of a few words (the ASGI options).
fn one_of(r: &Resolved<'_>, opt: Opt, words: &[&str]) -> Result<String, ConfigError> {
    let Some((v, origin)) = r.get(opt) else {
        return Ok(words[0].to_owned());
    };
    let word = v.trim().to_ascii_lowercase();
    if words.contains(&word.as_str()) {
        return Ok(word);
    }
    Err(invalid(
        OptSpec::of(opt),
        &v,
        &origin,
        &format!("expected one of {}", words.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_like_uwsgi() {
        for (v, want) in [
            ("", true),
            ("1", true),
            ("true", true),
            ("maybe", true),
            ("yes", true),
            ("false", false),
            ("FALSE", false),
            ("off", false),
            ("No", false),
            ("0", false),
            (" 0 ", false),
        ] {
            assert_eq!(is_true(v), want, "{v:?}");
        }
    }

    #[test]
    fn atoi_like_c() {
        for (s, n) in [("12", 12), (" 7 workers", 7), ("-2", -2), ("x", 0), ("", 0)] {
            assert_eq!(atoi(s), n, "{s}");
        }
    }
}
