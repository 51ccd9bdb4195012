//! Elastic workers: uWSGI's cheaper subsystem (`--cheaper` and friends), `--idle` and
//! `--die-on-idle`, typed and checked as uWSGI's core/init.c checks them.

use super::spec::{Opt, OptSpec};
use super::typed::{invalid, Resolved};
use super::ConfigError;
use std::time::Duration;

/// How the number of workers follows the load (`--cheaper-algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// headrace's default: as many workers as requests wait, at once; idle ones stop after
    /// `--cheaper-idle` seconds.
    Queue,
    /// uWSGI's default: one step more after `--cheaper-overload` seconds with every worker busy.
    Spare,
    /// Keep `--cheaper` workers idle.
    Spare2,
    /// Grow while the listen queue is longer than `--cheaper-overload`.
    Backlog,
    /// Grow and shrink on the share of time workers spend in requests.
    Busyness,
    /// Never change on its own (only the RSS limits act).
    Manual,
}

impl Algo {
    /// Every algorithm, by the name `--cheaper-algo` takes.
    pub const ALL: [(&'static str, Algo); 6] = [
        ("queue", Algo::Queue),
        ("spare", Algo::Spare),
        ("spare2", Algo::Spare2),
        ("backlog", Algo::Backlog),
        ("busyness", Algo::Busyness),
        ("manual", Algo::Manual),
    ];

    /// The name `--cheaper-algo` takes.
    #[must_use]
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("queue", |(n, _)| n)
    }
}

/// `--cheaper-busyness-*` (uWSGI's plugins/cheaper_busyness defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busyness {
    /// Percent above which workers count as loaded.
    pub max: u64,
    /// Percent below which workers count as idle.
    pub min: u64,
    /// Cycles of `--cheaper-overload` seconds a worker must be idle before it is stopped.
    pub multiplier: u64,
    /// Added to the multiplier when workers are respawned too soon after being stopped.
    pub penalty: u64,
    /// Log every evaluation.
    pub verbose: bool,
    /// Requests waiting that spawn emergency workers at once.
    pub backlog_alert: u64,
    /// The multiplier for emergency workers.
    pub backlog_multiplier: u64,
    /// Emergency workers spawned at a time.
    pub backlog_step: usize,
    /// Seconds the queue may stay non-empty before an emergency worker is spawned.
    pub backlog_nonzero: u64,
}

/// `--cheaper` and friends: between `count` and `--processes` workers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheaperConfig {
    /// `--cheaper`: the fewest workers.
    pub count: usize,
    /// `--cheaper-initial`: workers at startup.
    pub initial: usize,
    /// `--cheaper-step`: most workers started at once (`None`: the algorithm's own rule).
    pub step: Option<usize>,
    /// `--cheaper-overload` (seconds for spare and busyness, a queue length for backlog).
    pub overload: u64,
    /// `--cheaper-algo`.
    pub algo: Algo,
    /// `--cheaper-idle`: seconds a worker stays idle before it is stopped (queue, spare2).
    pub idle: u64,
    /// `--cheaper-busyness-*`.
    pub busyness: Busyness,
    /// `--cheaper-rss-limit-soft`: no more workers while all of them together use this many
    /// bytes (0: no limit).
    pub rss_soft: u64,
    /// `--cheaper-rss-limit-hard`: stop one worker while they use this many bytes (0: no limit).
    pub rss_hard: u64,
}

/// Everything elastic: the cheaper settings (if on), `--idle`, `--die-on-idle`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elastic {
    /// `--cheaper N` with N > 0.
    pub cheaper: Option<CheaperConfig>,
    /// `--idle`: seconds without a request after which every worker stops until the next
    /// connection.
    pub idle: Option<Duration>,
    /// `--die-on-idle`: stop the server instead.
    pub die_on_idle: bool,
    /// `--cheap`: no worker until the first connection.
    pub cheap: bool,
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The error for `opt`'s value.
fn bad(r: &Resolved<'_>, opt: Opt, reason: &str) -> ConfigError {
    match r.get(opt) {
        Some((value, origin)) => invalid(OptSpec::of(opt), &value, &origin, reason),
        None => ConfigError::Missing("internal: a cheaper option without a value"),
    }
}

fn given(r: &Resolved<'_>, opt: Opt) -> bool {
    r.all(opt).next().is_some()
}

fn busyness(r: &Resolved<'_>) -> Result<Busyness, ConfigError> {
    Ok(Busyness {
        max: r.count(Opt::CheaperBusynessMax)?,
        min: r.count(Opt::CheaperBusynessMin)?,
        multiplier: r.count(Opt::CheaperBusynessMultiplier)?,
        penalty: r.count(Opt::CheaperBusynessPenalty)?,
        verbose: r.flag(Opt::CheaperBusynessVerbose),
        backlog_alert: r.count(Opt::CheaperBusynessBacklogAlert)?,
        backlog_multiplier: r.count(Opt::CheaperBusynessBacklogMultiplier)?,
        backlog_step: usize_of(r.count(Opt::CheaperBusynessBacklogStep)?),
        backlog_nonzero: r.count(Opt::CheaperBusynessBacklogNonzero)?,
    })
}

/// Read the elastic options; warnings (uWSGI's, for values it corrects) go to `warnings`.
pub fn build(
    r: &Resolved<'_>,
    processes: usize,
    warnings: &mut Vec<String>,
) -> Result<Elastic, ConfigError> {
    let idle = r.count(Opt::Idle)?;
    let elastic = Elastic {
        cheaper: None,
        idle: (idle > 0).then(|| Duration::from_secs(idle)),
        die_on_idle: r.flag(Opt::DieOnIdle),
        cheap: r.flag(Opt::Cheap),
    };
    let count = usize_of(r.count(Opt::Cheaper)?);
    let algo_name = r.text(Opt::CheaperAlgo);
    let algo = match algo_name.as_deref().map(str::trim) {
        None | Some("") => Algo::Queue,
        Some(name) => Algo::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                let names: Vec<&str> = Algo::ALL.iter().map(|(n, _)| *n).collect();
                bad(
                    r,
                    Opt::CheaperAlgo,
                    &format!("expected one of {}", names.join(", ")),
                )
            })?,
    };
    let step = r.count(Opt::CheaperStep)?;
    let overload = r.count(Opt::CheaperOverload)?;
    let cheaper_idle = r.count(Opt::CheaperIdle)?;
    let busyness = busyness(r)?;
    let rss_soft = r.count(Opt::CheaperRssLimitSoft)?;
    let rss_hard = r.count(Opt::CheaperRssLimitHard)?;
    if count == 0 {
        return Ok(elastic);
    }
    if count >= processes {
        return Err(bad(
            r,
            Opt::Cheaper,
            &format!("must be lower than --processes ({processes})"),
        ));
    }
    if busyness.min > busyness.max {
        return Err(bad(
            r,
            Opt::CheaperBusynessMin,
            &format!(
                "must not be above --cheaper-busyness-max ({})",
                busyness.max
            ),
        ));
    }
    if rss_hard > 0 && rss_soft == 0 {
        return Err(bad(
            r,
            Opt::CheaperRssLimitHard,
            "needs --cheaper-rss-limit-soft as well",
        ));
    }
    if rss_hard > 0 && rss_hard <= rss_soft {
        return Err(bad(
            r,
            Opt::CheaperRssLimitHard,
            &format!("must be higher than --cheaper-rss-limit-soft ({rss_soft})"),
        ));
    }
    let mut initial = usize_of(r.count(Opt::CheaperInitial)?);
    if !given(r, Opt::CheaperInitial) || initial == 0 {
        initial = count;
    } else if initial < count {
        warnings.push(format!(
            "invalid cheaper-initial value ({initial}), must be equal or higher than cheaper ({count}), using {count} as initial number of workers"
        ));
        initial = count;
    } else if initial > processes {
        warnings.push(format!(
            "invalid cheaper-initial value ({initial}), must be lower or equal than worker count ({processes}), using {processes} as initial number of workers"
        ));
        initial = processes;
    }
    Ok(Elastic {
        cheaper: Some(CheaperConfig {
            count,
            initial,
            step: (step > 0).then_some(usize_of(step)),
            overload: overload.max(1),
            algo,
            idle: cheaper_idle.max(1),
            busyness,
            rss_soft,
            rss_hard,
        }),
        ..elastic
    })
}
