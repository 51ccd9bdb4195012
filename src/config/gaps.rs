//! Reading the hook, logger and internal-routing options (issue 11's last real-config gaps):
//! `hook-*` / `exec-*`, `logger = syslog|socket`, `route*` with their actions.

use super::spec::{Opt, OptSpec};
use super::typed::{invalid, Resolved};
use super::ConfigError;
use crate::hooks::{Hook, Hooks, Phase};

/// The `hook-*` and `exec-*` options, in the order of their phases (each phase keeps the
/// order given: uWSGI keeps one list per option).
pub(super) fn hooks(r: &Resolved<'_>) -> Result<Hooks, ConfigError> {
    let mut out = Vec::new();
    for (opt, phase, exec_only) in [
        (Opt::HookAsap, Phase::Asap, false),
        (Opt::ExecAsap, Phase::Asap, true),
        (Opt::HookAsRoot, Phase::AsRoot, false),
        (Opt::ExecAsRoot, Phase::AsRoot, true),
        (Opt::HookAsUser, Phase::AsUser, false),
        (Opt::ExecAsUser, Phase::AsUser, true),
        (Opt::HookPreApp, Phase::PreApp, false),
        (Opt::ExecPreApp, Phase::PreApp, true),
        (Opt::HookPostApp, Phase::PostApp, false),
        (Opt::ExecPostApp, Phase::PostApp, true),
        (Opt::HookMasterStart, Phase::MasterStart, false),
        (Opt::HookAccepting, Phase::Accepting, false),
        (Opt::HookAccepting1, Phase::Accepting1, false),
    ] {
        for e in r.all(opt) {
            out.push(
                Hook::parse(phase, &e.value, exec_only)
                    .map_err(|why| invalid(OptSpec::of(opt), &e.value, &e.origin, &why))?,
            );
        }
    }
    Ok(Hooks(out))
}

/// The datagram loggers of `--logger` / `--req-logger` (`[ID ]syslog[:IDENT[,FACILITY]]`,
/// `[ID ]socket:ADDR[,PREFIX]`); the file and stdio loggers are read by
/// `sections::logger_file`. A named logger that `log-route` sends lines to is not opened,
/// as there.
pub(super) fn net_loggers(
    r: &Resolved<'_>,
    opt: Opt,
) -> Result<Vec<crate::log::net::Target>, ConfigError> {
    let routed: Vec<&str> = r
        .all(Opt::LogRoute)
        .filter_map(|e| e.value.split_whitespace().next())
        .collect();
    let mut out = Vec::new();
    for e in r.all(opt) {
        let (id, spec) = e
            .value
            .split_once(' ')
            .map_or(("", e.value.as_str()), |(id, s)| (id, s.trim_start()));
        if !id.is_empty() && routed.contains(&id) {
            continue;
        }
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        match crate::log::net::Target::parse(name.trim(), arg) {
            Ok(Some(t)) => out.push(t),
            Ok(None) => {}
            Err(why) => return Err(invalid(OptSpec::of(opt), &e.value, &e.origin, &why)),
        }
    }
    Ok(out)
}

/// `route`, `route-uri`, `route-host`, `route-if`, `route-if-not`: one chain, in the order
/// the lines were given across these options (uWSGI keeps a single list).
pub(super) fn routes(r: &Resolved<'_>) -> Result<Vec<crate::routing::Rule>, ConfigError> {
    let mut out = Vec::new();
    for opt in [
        Opt::Route,
        Opt::RouteUri,
        Opt::RouteHost,
        Opt::RouteIf,
        Opt::RouteIfNot,
    ] {
        let s = OptSpec::of(opt);
        for e in r.all(opt) {
            let rule = crate::routing::Rule::parse(s.name, &e.value)
                .map_err(|why| invalid(s, &e.value, &e.origin, &why))?;
            // Entries live in one slice in the order read: their addresses give that order.
            out.push((std::ptr::from_ref(e) as usize, rule));
        }
    }
    out.sort_by_key(|(at, _)| *at);
    Ok(out.into_iter().map(|(_, rule)| rule).collect())
}
