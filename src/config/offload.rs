//! The options of the work that runs beside the workers (spoolers, mules, signals, timers,
//! cron, attached daemons, the cache, shared areas and locks), typed. Values with a grammar of
//! their own (`--cache2 name=...`, `--farm NAME:1,2`, `--cron ...`) are kept as written, with
//! where they came from, and checked by the module that runs them (`crate::offload`), so a bad
//! one is refused at startup with the option's name.

use super::spec::{Opt, OptSpec};
use super::typed::Resolved;
use super::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

/// One value of a repeatable option, with where it came from ("in uwsgi.ini line 7").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    /// The value as written.
    pub value: String,
    /// Where it came from, for error messages.
    pub source_desc: String,
}

impl Given {
    /// The error for this value of `option`: `invalid --farm "x" in uwsgi.ini line 3: why`.
    #[must_use]
    pub fn invalid(&self, option: &'static str, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            option,
            value: self.value.clone(),
            source_desc: self.source_desc.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// `--spooler` and friends.
#[derive(Debug, Clone, Default)]
pub struct SpoolerConfig {
    /// `--spooler DIR|redis://...`, in order, then `--spooler-external` ones.
    pub spoolers: Vec<Given>,
    /// Index of the first `--spooler-external` in `spoolers`: tasks can be spooled there, but
    /// another instance runs them (no spooler process here).
    pub external_from: usize,
    /// `--spooler-processes`: processes per spooler.
    pub processes: usize,
    /// `--spooler-frequency`: rescan period.
    pub frequency: Duration,
    /// `--spooler-harakiri` (zero: off).
    pub harakiri: Duration,
    /// `--spooler-max-tasks` (zero: never recycled).
    pub max_tasks: u64,
    /// `--spooler-chdir`.
    pub chdir: Option<PathBuf>,
    /// `--spooler-quiet`.
    pub quiet: bool,
    /// `--spooler-max-retries`.
    pub max_retries: u64,
    /// `--spooler-import`: modules imported in the spooler processes.
    pub imports: Vec<String>,
    /// `--touch-spoolers-reload`.
    pub touch_reload: Vec<PathBuf>,
}

/// `--mule`, `--mules`, `--farm` and friends.
#[derive(Debug, Clone, Default)]
pub struct MuleConfig {
    /// One entry per mule, in id order (mule 1 first): "" for an empty mule, else what it runs.
    /// `--mules N` adds N empty ones after the `--mule` ones.
    pub mules: Vec<Given>,
    /// `--farm NAME:1,2`.
    pub farms: Vec<Given>,
    /// `--mule-msg-size`.
    pub msg_size: usize,
    /// `--mule-harakiri` (zero: off).
    pub harakiri: Duration,
    /// `--mule-reload-mercy`.
    pub reload_mercy: Duration,
    /// `--touch-mules-reload`.
    pub touch_reload: Vec<PathBuf>,
}

/// `--timer`, `--cron` and friends.
#[derive(Debug, Clone, Default)]
pub struct SignalConfig {
    /// `--timer SIGNUM SECONDS`.
    pub timers: Vec<Given>,
    /// `--rbtimer SIGNUM SECONDS`.
    pub rbtimers: Vec<Given>,
    /// `--cron MIN HOUR DAY MONTH WEEKDAY COMMAND`.
    pub crons: Vec<Given>,
    /// `--cron2 key=value,... COMMAND`.
    pub crons2: Vec<Given>,
    /// `--unique-cron`.
    pub unique_crons: Vec<Given>,
    /// `--cron-harakiri` (zero: off).
    pub cron_harakiri: Duration,
    /// `--touch-signal FILE SIGNUM`.
    pub touch_signals: Vec<Given>,
}

/// `--attach-daemon` and friends.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// `--attach-daemon COMMAND`.
    pub attach: Vec<Given>,
    /// `--attach-daemon2 key=value,...`.
    pub attach2: Vec<Given>,
    /// `--smart-attach-daemon PIDFILE COMMAND`.
    pub smart: Vec<Given>,
    /// `--smart-attach-daemon2 PIDFILE COMMAND`.
    pub smart2: Vec<Given>,
    /// `--attach-control-daemon COMMAND`.
    pub control: Vec<Given>,
    /// `--daemons-honour-stdin`.
    pub honour_stdin: bool,
}

/// `--cache2`, `--cache`, `--sharedarea`, `--locks`.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    /// `--cache2 name=...,items=...`.
    pub caches: Vec<Given>,
    /// `--cache N`: the legacy (unnamed, default) cache's items (zero: none).
    pub legacy_items: u64,
    /// `--cache-blocksize`.
    pub legacy_blocksize: u64,
    /// `--cache-store`.
    pub legacy_store: Option<PathBuf>,
    /// `--cache-store-sync` (zero: at stop only).
    pub store_sync: Duration,
    /// `--cache-expire-freq`.
    pub expire_freq: Duration,
    /// `--sharedarea`.
    pub sharedareas: Vec<Given>,
    /// `--locks`: user locks besides lock 0.
    pub locks: usize,
}

/// Everything that runs beside the workers.
#[derive(Debug, Clone, Default)]
pub struct OffloadConfig {
    /// Spoolers.
    pub spooler: SpoolerConfig,
    /// Mules and farms.
    pub mules: MuleConfig,
    /// Signals, timers and cron.
    pub signals: SignalConfig,
    /// Attached daemons.
    pub daemons: DaemonConfig,
    /// Caches, shared areas and locks.
    pub cache: CacheConfig,
    /// `--import`: modules imported with the app (in the master, or in each worker with
    /// `--lazy-apps`).
    pub imports: Vec<String>,
    /// `--shared-import`: modules imported in the master before any fork.
    pub shared_imports: Vec<String>,
    /// Every option as given, in order, for `uwsgi.opt`: (key, value), `None` for a flag
    /// given on the command line without a value (uWSGI's `True`). Set by `Config::load`.
    pub exported: Vec<(String, Option<String>)>,
}

fn given(r: &Resolved<'_>, opt: Opt) -> Vec<Given> {
    r.all(opt)
        .map(|e| Given {
            value: e.value.clone(),
            source_desc: e.origin.describe(),
        })
        .collect()
}

fn texts(r: &Resolved<'_>, opt: Opt) -> Vec<String> {
    r.all(opt).map(|e| e.value.trim().to_owned()).collect()
}

fn paths(r: &Resolved<'_>, opt: Opt) -> Vec<PathBuf> {
    r.all(opt).map(|e| PathBuf::from(e.value.trim())).collect()
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Read the offload options, then let each part check the values only it understands.
pub fn build(r: &Resolved<'_>) -> Result<OffloadConfig, ConfigError> {
    let mut mules = given(r, Opt::Mule);
    let empty = r.count(Opt::Mules)?;
    mules.extend((0..empty).map(|_| Given {
        value: String::new(),
        source_desc: OptSpec::of(Opt::Mules).name.to_owned(),
    }));
    let o = OffloadConfig {
        spooler: SpoolerConfig {
            spoolers: {
                let mut s = given(r, Opt::Spooler);
                s.extend(given(r, Opt::SpoolerExternal));
                s
            },
            external_from: r.all(Opt::Spooler).count(),
            processes: usize_of(r.count(Opt::SpoolerProcesses)?),
            frequency: r.secs(Opt::SpoolerFrequency)?,
            harakiri: r.secs(Opt::SpoolerHarakiri)?,
            max_tasks: r.count(Opt::SpoolerMaxTasks)?,
            chdir: r.text(Opt::SpoolerChdir).map(PathBuf::from),
            quiet: r.flag(Opt::SpoolerQuiet),
            max_retries: r.count(Opt::SpoolerMaxRetries)?,
            imports: texts(r, Opt::SpoolerImport),
            touch_reload: paths(r, Opt::TouchSpoolersReload),
        },
        mules: MuleConfig {
            mules,
            farms: given(r, Opt::Farm),
            msg_size: usize_of(r.count(Opt::MuleMsgSize)?),
            harakiri: r.secs(Opt::MuleHarakiri)?,
            reload_mercy: r.secs(Opt::MuleReloadMercy)?,
            touch_reload: paths(r, Opt::TouchMulesReload),
        },
        signals: SignalConfig {
            timers: given(r, Opt::Timer),
            rbtimers: given(r, Opt::Rbtimer),
            crons: given(r, Opt::Cron),
            crons2: given(r, Opt::Cron2),
            unique_crons: given(r, Opt::UniqueCron),
            cron_harakiri: r.secs(Opt::CronHarakiri)?,
            touch_signals: given(r, Opt::TouchSignal),
        },
        daemons: DaemonConfig {
            attach: given(r, Opt::AttachDaemon),
            attach2: given(r, Opt::AttachDaemon2),
            smart: given(r, Opt::SmartAttachDaemon),
            smart2: given(r, Opt::SmartAttachDaemon2),
            control: given(r, Opt::AttachControlDaemon),
            honour_stdin: r.flag(Opt::DaemonsHonourStdin),
        },
        cache: CacheConfig {
            caches: given(r, Opt::Cache2),
            legacy_items: r.count(Opt::Cache)?,
            legacy_blocksize: r.count(Opt::CacheBlocksize)?,
            legacy_store: r.text(Opt::CacheStore).map(PathBuf::from),
            store_sync: r.secs(Opt::CacheStoreSync)?,
            expire_freq: r.secs(Opt::CacheExpireFreq)?,
            sharedareas: given(r, Opt::Sharedarea),
            locks: usize_of(r.count(Opt::Locks)?),
        },
        imports: texts(r, Opt::Import),
        shared_imports: texts(r, Opt::SharedImport),
        exported: Vec::new(),
    };
    crate::offload::validate(&o)?;
    Ok(o)
}
