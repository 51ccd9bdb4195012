//! Reading the option groups that have their own structs or value syntax (static files, logs,
//! stats, mounts, routes, headers) from the resolved options: split from `typed.rs`, which
//! builds the `Config` from them.

use super::collect::Entry;
use super::spec::{Opt, OptSpec};
use super::typed::{invalid, Resolved};
use super::{parse_addr, AppSource, ConfigError};
use std::path::PathBuf;

pub(super) fn static_options(
    r: &Resolved<'_>,
) -> Result<crate::static_files::StaticConfig, ConfigError> {
    use crate::static_files::rules::On;
    use crate::static_files::{Expires, Gzip, StaticConfig, StaticMap};
    let bad = |opt: Opt, e: &Entry, why: &dyn std::fmt::Display| {
        invalid(OptSpec::of(opt), &e.value, &e.origin, &why.to_string())
    };
    let mut maps = Vec::new();
    for (opt, whole) in [(Opt::StaticMap, false), (Opt::StaticMap2, true)] {
        for e in r.all(opt) {
            maps.push(StaticMap::parse(&e.value, whole).map_err(|why| bad(opt, e, &why))?);
        }
    }
    maps.extend(
        r.all(Opt::CheckStatic)
            .map(|e| StaticMap::docroot(e.value.trim())),
    );
    let mut expires = Vec::new();
    for (opt, on, mtime) in [
        (Opt::StaticExpiresType, On::Type, false),
        (Opt::StaticExpiresTypeMtime, On::Type, true),
        (Opt::StaticExpires, On::File, false),
        (Opt::StaticExpiresMtime, On::File, true),
        (Opt::StaticExpiresUri, On::Uri, false),
        (Opt::StaticExpiresUriMtime, On::Uri, true),
        (Opt::StaticExpiresPathInfo, On::PathInfo, false),
        (Opt::StaticExpiresPathInfoMtime, On::PathInfo, true),
    ] {
        for e in r.all(opt) {
            expires.push(Expires::parse(on, mtime, &e.value).map_err(|why| bad(opt, e, &why))?);
        }
    }
    let mut regexes = Vec::new();
    for e in r.all(Opt::StaticGzip) {
        regexes.push(Gzip::regex(&e.value).map_err(|why| bad(Opt::StaticGzip, e, &why))?);
    }
    let texts = |opt| r.all(opt).map(|e| e.value.trim().to_owned()).collect();
    Ok(StaticConfig {
        maps,
        index: texts(Opt::StaticIndex),
        gzip: Gzip {
            all: r.flag(Opt::StaticGzipAll),
            prefixes: texts(Opt::StaticGzipDir),
            suffixes: texts(Opt::StaticGzipExt),
            regexes,
        },
        expires,
        safe: r
            .all(Opt::StaticSafe)
            .map(|e| PathBuf::from(e.value.trim()))
            .collect(),
        skip_ext: texts(Opt::StaticSkipExt),
    })
}

pub(super) fn log_options(r: &Resolved<'_>) -> Result<crate::config::LogConfig, ConfigError> {
    // uWSGI's uwsgi_opt_log_date: a boolean-looking value means the ctime date.
    let date = r.text(Opt::LogDate).map(|v| {
        let boolean = ["true", "1", "on", "yes"]
            .iter()
            .any(|b| v.eq_ignore_ascii_case(b));
        (!boolean && !v.is_empty()).then_some(v)
    });
    Ok(crate::config::LogConfig {
        format: r.text(Opt::LogFormat),
        format_strftime: r.flag(Opt::LogFormatStrftime),
        date,
        log_4xx: r.flag(Opt::Log4xx),
        log_5xx: r.flag(Opt::Log5xx),
        log_zero: r.flag(Opt::LogZero),
        slow_ms: r.count(Opt::LogSlow)?,
        big: r.count(Opt::LogBig)?,
        x_forwarded_for: r.flag(Opt::LogXForwardedFor),
        micros: r.flag(Opt::LogMicros),
        memory_report: r.flag(Opt::MemoryReport),
        req_logger_file: logger_file(r, Opt::ReqLogger)?.0,
        // `log-maxsize`, else the main file logger's own `maxsize=`
        max_size: match r.count(Opt::LogMaxsize)? {
            0 => logger_file(r, Opt::Logger)?.1.unwrap_or(0),
            n => n,
        },
        backupname: r.text(Opt::LogBackupname).map(PathBuf::from),
        reopen: r.flag(Opt::LogReopen),
        touch_reopen: r
            .all(Opt::TouchLogreopen)
            .map(|e| PathBuf::from(&e.value))
            .collect(),
        encoders: encoders(r, Opt::LogEncoder)?,
        encoder_specs: r.all(Opt::LogEncoder).map(|e| e.value.clone()).collect(),
        req_encoders: encoders(r, Opt::LogReqEncoder)?,
        req_encoder_specs: r.all(Opt::LogReqEncoder).map(|e| e.value.clone()).collect(),
        net_loggers: super::gaps::net_loggers(r, Opt::Logger)?,
        net_req_loggers: super::gaps::net_loggers(r, Opt::ReqLogger)?,
    })
}

pub(super) fn encoders(
    r: &Resolved<'_>,
    opt: Opt,
) -> Result<Vec<crate::log::encoder::Encoder>, ConfigError> {
    let mut out = Vec::new();
    for e in r.all(opt) {
        match crate::log::encoder::Encoder::parse(&e.value) {
            Ok(Some(enc)) => out.push(enc),
            Ok(None) => {}
            Err(why) => {
                return Err(invalid(
                    OptSpec::of(opt),
                    &e.value,
                    &e.origin,
                    &why.to_string(),
                ))
            }
        }
    }
    Ok(out)
}

/// `--logger`/`--req-logger`: uWSGI's `[ID ]PLUGIN[:ARGS]`; headrace has the `file` and
/// `stdio` loggers. The file, if any (several files are refused: lines go to one place), and
/// the `maxsize=` of the file logger's keyval form (`file:logfile=PATH,maxsize=BYTES`).
pub(super) fn logger_file(
    r: &Resolved<'_>,
    opt: Opt,
) -> Result<(Option<PathBuf>, Option<u64>), ConfigError> {
    let mut file = None;
    let mut max_size = None;
    // Loggers that `log-route` sends lines to take only those lines in uWSGI; headrace does
    // not route, so such a named logger is not opened (its lines stay in the main log).
    let routed: Vec<&str> = r
        .all(Opt::LogRoute)
        .filter_map(|e| e.value.split_whitespace().next())
        .collect();
    for e in r.all(opt) {
        let bad = |why: &str| invalid(OptSpec::of(opt), &e.value, &e.origin, why);
        let (id, spec) = e
            .value
            .split_once(' ')
            .map_or(("", e.value.as_str()), |(id, s)| (id, s.trim_start()));
        if !id.is_empty() && routed.contains(&id) {
            continue;
        }
        let (name, arg) = spec.split_once(':').unwrap_or((spec, ""));
        match name {
            // The datagram loggers are read by `gaps::net_loggers`.
            "stdio" | "syslog" | "socket" => {}
            "file" => {
                // The file logger also takes `path=PATH[,...]` or `logfile=PATH[,maxsize=N]`.
                let mut path = arg;
                if arg.starts_with("path=") || arg.starts_with("logfile=") {
                    path = "";
                    for kv in arg.split(',') {
                        match kv.split_once('=') {
                            Some(("path" | "logfile", p)) => path = p,
                            Some(("maxsize", n)) => {
                                max_size =
                                    Some(n.trim().parse().map_err(|_| {
                                        bad("expected maxsize=BYTES (a whole number)")
                                    })?);
                            }
                            _ => {}
                        }
                    }
                }
                if path.is_empty() {
                    return Err(bad("expected file:PATH"));
                }
                if file.is_some() {
                    return Err(bad(
                        "headrace writes its log to one file: give one file logger",
                    ));
                }
                file = Some(PathBuf::from(path));
            }
            _ => {
                return Err(bad(
                    "expected file:PATH, stdio, syslog[:IDENT[,FACILITY]] or socket:ADDR: other log plugins are not supported",
                ))
            }
        }
    }
    Ok((file, max_size))
}

/// An octal option (`--umask 022`), at most `max`.
pub(super) fn octal(
    r: &Resolved<'_>,
    opt: Opt,
    max: u32,
    expect: &str,
) -> Result<Option<u32>, ConfigError> {
    let Some((v, o)) = r.get(opt) else {
        return Ok(None);
    };
    u32::from_str_radix(v.trim(), 8)
        .ok()
        .filter(|m| *m <= max)
        .map(Some)
        .ok_or_else(|| invalid(OptSpec::of(opt), &v, &o, expect))
}

/// `--add-header Name: value`: a header field name (RFC 9110 token) and a value without control
/// characters, as the header line it becomes.
pub(super) fn add_headers(r: &Resolved<'_>) -> Result<Vec<String>, ConfigError> {
    r.all(Opt::AddHeader)
        .map(|e| {
            let bad = || {
                invalid(
                    OptSpec::of(Opt::AddHeader),
                    &e.value,
                    &e.origin,
                    "expected `Name: value` (a header name, a colon, a value without control characters)",
                )
            };
            let (name, value) = e.value.split_once(':').ok_or_else(bad)?;
            let name = name.trim();
            let value = value.trim();
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) || value.chars().any(char::is_control) {
                return Err(bad());
            }
            Ok(format!("{name}: {value}"))
        })
        .collect()
}

/// `--mount /PATH=APP`: a file when APP names a Python file (`.py`, `.wsgi`, or a path with
/// `/`), else a `MODULE[:CALLABLE]`, as uWSGI's python plugin decides.
pub(super) fn mounts(r: &Resolved<'_>) -> Result<Vec<(String, AppSource)>, ConfigError> {
    r.all(Opt::Mount)
        .map(|e| {
            let Some((point, target)) = e.value.split_once('=') else {
                return Err(invalid(
                    OptSpec::of(Opt::Mount),
                    &e.value,
                    &e.origin,
                    "expected /MOUNTPOINT=APP (a Python file or MODULE[:CALLABLE])",
                ));
            };
            let point = point.trim().trim_end_matches('/').to_owned();
            let target = target.trim();
            let ext = std::path::Path::new(target).extension();
            let file_ext =
                ext.is_some_and(|e| e.eq_ignore_ascii_case("py") || e.eq_ignore_ascii_case("wsgi"));
            let src = if file_ext || target.contains('/') {
                AppSource::File(PathBuf::from(target))
            } else {
                AppSource::Module(target.to_owned())
            };
            Ok((point, src))
        })
        .collect()
}

/// `route = REGEXP ACTION` (PATH_INFO) and `route-uri = REGEXP ACTION` (REQUEST_URI). Only
/// `donotlog:` is supported: every other action changes responses, so it stops startup.
pub(super) fn routes(r: &Resolved<'_>) -> Result<Vec<(bool, String)>, ConfigError> {
    let mut out = Vec::new();
    for (opt, uri) in [(Opt::Route, false), (Opt::RouteUri, true)] {
        for e in r.all(opt) {
            let bad = |why: &str| invalid(OptSpec::of(opt), &e.value, &e.origin, why);
            let line = e.value.trim();
            // uWSGI splits at the first space; the other actions are `gaps::routes`'.
            let Some((regex, action)) = line.split_once(' ') else {
                return Err(bad("expected `REGEXP ACTION`"));
            };
            if !matches!(action.trim(), "donotlog:" | "donotlog") {
                continue;
            }
            let regex = regex.trim();
            regex::Regex::new(regex).map_err(|e| bad(&format!("bad regular expression: {e}")))?;
            out.push((uri, regex.to_owned()));
        }
    }
    Ok(out)
}

pub(super) fn stats_options(r: &Resolved<'_>) -> Result<crate::config::StatsConfig, ConfigError> {
    let addr = |opt: Opt| {
        r.get(opt)
            .map(|(v, o)| parse_addr(&v).map_err(|why| invalid(OptSpec::of(opt), &v, &o, &why)))
            .transpose()
    };
    Ok(crate::config::StatsConfig {
        addr: addr(Opt::Stats)?,
        http: r.flag(Opt::StatsHttp),
        minified: r.flag(Opt::StatsMinified),
        metrics: addr(Opt::Metrics)?,
    })
}
