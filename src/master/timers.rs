//! The master's side of uWSGI signals: raising a signal (`uwsgi.signal`, a timer, a cron
//! entry, a file monitor, `--touch-signal`) and routing it to its target processes; running
//! `--cron` commands (uWSGI's `uwsgi_manage_command_cron`: forked shells, logged, killed by
//! `--cron-harakiri`, not overlapped with `--unique-cron`).

use super::Master;
use crate::offload::signals::cron::{CommandCron, Fields};
use crate::offload::signals::source::Source;
use crate::offload::signals::{self, source};
use crate::sys::proc::{self, ExitStatus, PollFd};
use crate::sys::signals::{local_cron_time, Inotify};
use pyo3::prelude::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// A timer (`add_timer`, `--timer`) or rb timer (`add_rb_timer`, `--rbtimer`).
struct Periodic {
    signal: u8,
    period: Duration,
    next: Instant,
    /// Rb timers: runs left (`None`: forever).
    left: Option<u64>,
}

/// A signal cron (`add_cron`).
struct SignalCron {
    signal: u8,
    fields: Fields,
    last_job: i64,
}

/// A command cron and its runs.
struct CronCommand {
    spec: CommandCron,
    last_job: i64,
    /// Live runs: pid (also its process group), start time, harakiri deadline (Unix seconds).
    running: Vec<(i32, i64, Option<i64>)>,
}

impl CronCommand {
    /// Whether to start a run now (uWSGI's rules): the minute matches, the last start is a
    /// minute old, and a `unique` command's previous run has ended.
    fn due(&self, now: i64, t: &crate::sys::signals::CronTime) -> bool {
        (!self.spec.unique || self.running.is_empty())
            && self.spec.fields.matches(t)
            && now - self.last_job >= 60
    }
}

/// A `--touch-signal FILE SIGNUM`.
struct TouchSignal {
    path: PathBuf,
    signal: u8,
    mtime: Option<SystemTime>,
}

/// Timers, cron entries and file monitors the master runs.
#[derive(Default)]
pub struct Timers {
    started: bool,
    periodic: Vec<Periodic>,
    signal_crons: Vec<SignalCron>,
    commands: Vec<CronCommand>,
    touches: Vec<TouchSignal>,
    last_touch_check: Option<Instant>,
    inotify: Option<Inotify>,
    /// Watch descriptor, signal, path.
    monitors: Vec<(i32, u8, String)>,
    /// Sources added after fork, by their text: a worker that loads the app (`--lazy-apps`, or
    /// a respawn) adds the same ones again, which uWSGI would run twice.
    seen: HashSet<String>,
    /// Turns, to spread signals over the workers that registered one.
    rr: usize,
}

impl Timers {
    /// The inotify fd, for the master's poll.
    pub(super) fn poll_fds(&self, fds: &mut Vec<PollFd>) {
        if let Some(i) = &self.inotify {
            fds.push(PollFd {
                fd: i.raw(),
                write: false,
                ready: false,
            });
        }
    }

    /// How long the master may sleep: `max_ms`, or less when a timer is due sooner.
    pub(super) fn wait_ms(&self, max_ms: i32) -> i32 {
        let now = Instant::now();
        self.periodic
            .iter()
            .map(|p| {
                i32::try_from(p.next.saturating_duration_since(now).as_millis() + 1)
                    .unwrap_or(i32::MAX)
            })
            .fold(max_ms, i32::min)
    }

    fn add(&mut self, src: Source) {
        let now = Instant::now();
        match src {
            Source::Timer { signal, period_ms } => {
                let period = Duration::from_millis(period_ms);
                self.periodic.push(Periodic {
                    signal,
                    period,
                    next: now + period,
                    left: None,
                });
            }
            Source::RbTimer {
                signal,
                secs,
                iterations,
            } => {
                let period = Duration::from_secs(secs);
                self.periodic.push(Periodic {
                    signal,
                    period,
                    next: now + period,
                    left: (iterations > 0).then_some(iterations),
                });
            }
            Source::Cron { signal, fields } => self.signal_crons.push(SignalCron {
                signal,
                fields,
                last_job: 0,
            }),
            Source::FileMonitor { signal, path } => {
                if self.inotify.is_none() {
                    match Inotify::new() {
                        Ok(i) => self.inotify = Some(i),
                        Err(e) => {
                            crate::log!(
                                "[uwsgi-fmon] cannot start inotify: {e}: {path} is not monitored"
                            );
                            return;
                        }
                    }
                }
                let Some(ino) = &self.inotify else { return };
                match ino.watch(std::path::Path::new(&path)) {
                    Ok(wd) => {
                        crate::log!("[uwsgi-fmon] monitoring {path} (signal {signal})");
                        self.monitors.push((wd, signal, path));
                    }
                    Err(e) => crate::log!("[uwsgi-fmon] cannot monitor {path}: {e}"),
                }
            }
        }
    }
}

#[allow(
    clippy::cast_possible_wrap,
    reason = "Unix seconds and harakiri seconds are far below i64::MAX"
)]
impl Master<'_> {
    /// uWSGI signal `n` was raised (by any process, through the control channel).
    pub(super) fn raise_signal(&mut self, _py: Python<'_>, n: u8) {
        self.route_signal(n);
    }

    fn route_signal(&mut self, n: u8) {
        let procs = &self.procs;
        let active = |id: usize| procs.iter().any(|p| p.id == id && !p.old);
        signals::route(n, &active, &mut self.timers.rr);
    }

    /// A source added after fork (`Control::SignalSource`).
    pub(super) fn add_signal_source(&mut self, text: &str) {
        let Some(src) = Source::decode(text) else {
            crate::log!("headrace: the master got a signal source it does not know: {text:?}");
            return;
        };
        let key = src.encode();
        if !self.timers.seen.insert(key) {
            // The same app added it already (another worker, or this one before a respawn).
            return;
        }
        signals::count_source(src.kind().0);
        self.timers.add(src);
    }

    fn start_timers(&mut self) {
        self.timers.started = true;
        for src in signals::option_sources(self.config) {
            signals::count_source(src.kind().0);
            self.timers.add(src);
        }
        self.timers.commands = signals::command_crons(self.config)
            .into_iter()
            .map(|spec| CronCommand {
                spec,
                last_job: 0,
                running: Vec::new(),
            })
            .collect();
        self.timers.touches = self
            .config
            .offload
            .signals
            .touch_signals
            .iter()
            .filter_map(|g| source::parse_touch_signal(&g.value).ok())
            .map(|(path, signal)| {
                let path = PathBuf::from(path);
                let mtime = super::mtime(&path);
                if mtime.is_none() {
                    crate::log!(
                        "unable to stat() {}, events will be triggered as soon as the file is created",
                        path.display()
                    );
                }
                TouchSignal {
                    path,
                    signal,
                    mtime,
                }
            })
            .collect();
    }

    /// Every turn of the master's loop (not while stopping): fire what is due.
    pub(super) fn tick_timers(&mut self, _py: Python<'_>) {
        if !self.timers.started {
            self.start_timers();
        }
        for src in signals::take_pending() {
            signals::count_source(src.kind().0);
            self.timers.add(src);
        }
        self.fire_periodic();
        let now = super::unix_now_secs();
        if !self.timers.signal_crons.is_empty() || !self.timers.commands.is_empty() {
            if let Some(t) = local_cron_time(now) {
                self.fire_signal_crons(now, &t);
                self.run_command_crons(now, &t);
            }
        }
        self.cron_harakiri(now);
        self.check_touch_signals();
        self.check_file_monitors();
    }

    fn fire_periodic(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for p in &mut self.timers.periodic {
            if p.next > now {
                continue;
            }
            due.push(p.signal);
            p.next += p.period;
            if p.next <= now {
                // The master was held up longer than a period: no burst of catch-up signals.
                p.next = now + p.period;
            }
            if let Some(left) = &mut p.left {
                *left -= 1;
            }
        }
        self.timers.periodic.retain(|p| p.left != Some(0));
        for sig in due {
            self.route_signal(sig);
        }
    }

    fn fire_signal_crons(&mut self, now: i64, t: &crate::sys::signals::CronTime) {
        let mut due = Vec::new();
        for c in &mut self.timers.signal_crons {
            if c.fields.matches(t) && now - c.last_job >= 60 {
                c.last_job = now;
                due.push(c.signal);
            }
        }
        for sig in due {
            crate::log!("[uwsgi-cron] routing signal {sig}");
            self.route_signal(sig);
        }
    }

    fn run_command_crons(&mut self, now: i64, t: &crate::sys::signals::CronTime) {
        let global = self.config.offload.signals.cron_harakiri.as_secs();
        for c in &mut self.timers.commands {
            if !c.due(now, t) {
                continue;
            }
            c.last_job = now;
            match crate::sys::signals::spawn_shell(&c.spec.command) {
                Ok(pid) => {
                    crate::log!("[uwsgi-cron] running \"{}\" (pid {pid})", c.spec.command);
                    let limit = c.spec.harakiri.unwrap_or(global);
                    let deadline = (limit > 0).then(|| now + limit as i64);
                    c.running.push((pid, now, deadline));
                }
                Err(e) => crate::log!("[uwsgi-cron] cannot run \"{}\": {e}", c.spec.command),
            }
        }
    }

    fn cron_harakiri(&mut self, now: i64) {
        for c in &mut self.timers.commands {
            for (pid, _, deadline) in &mut c.running {
                if deadline.is_some_and(|d| d < now) {
                    crate::log!(
                        "*** HARAKIRI ON CRON \"{}\" (pid: {pid}) ***",
                        c.spec.command
                    );
                    crate::sys::signals::kill_group(*pid, libc::SIGKILL);
                    // Once: the reaper logs its end.
                    *deadline = None;
                }
            }
        }
    }

    /// A child exited: if it was a cron command, log it. Returns whether it was one.
    pub(super) fn reap_cron(&mut self, pid: i32, status: ExitStatus) -> bool {
        let now = super::unix_now_secs();
        for c in &mut self.timers.commands {
            if let Some(i) = c.running.iter().position(|r| r.0 == pid) {
                let (_, started, _) = c.running.remove(i);
                let how = match status {
                    ExitStatus::Code(0) => String::new(),
                    ExitStatus::Code(code) => format!(" with code {code}"),
                    ExitStatus::Signal(s) => {
                        format!(" killed by signal {s} ({})", proc::signal_name(s))
                    }
                };
                crate::log!(
                    "[uwsgi-cron] command \"{}\" running with pid {pid} exited after {} second(s){how}",
                    c.spec.command,
                    now - started
                );
                return true;
            }
        }
        false
    }

    /// `--touch-signal`: raise the signal when the file's modification time changes (or it
    /// appears, or it goes), checked once a second as uWSGI's touch checks.
    fn check_touch_signals(&mut self) {
        if self.timers.touches.is_empty()
            || self
                .timers
                .last_touch_check
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.timers.last_touch_check = Some(Instant::now());
        let mut due = Vec::new();
        for t in &mut self.timers.touches {
            let now = super::mtime(&t.path);
            if now != t.mtime {
                t.mtime = now;
                due.push(t.signal);
            }
        }
        for sig in due {
            self.route_signal(sig);
            crate::log!("[uwsgi-touch-signal] raising {sig}");
        }
    }

    /// File monitors: raise the signal of each watch with events (once per turn).
    fn check_file_monitors(&mut self) {
        let Some(ino) = &self.timers.inotify else {
            return;
        };
        let ready = ino.ready();
        let due: Vec<u8> = self
            .timers
            .monitors
            .iter()
            .filter(|(wd, ..)| ready.contains(wd))
            .map(|(_, sig, _)| *sig)
            .collect();
        for sig in due {
            self.route_signal(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::signals::CronTime;

    #[test]
    fn cron_commands_start_once_a_minute_and_unique_ones_never_overlap() {
        let t = CronTime {
            minute: 10,
            hour: 4,
            day: 2,
            month: 12,
            weekday: 3,
        };
        let every_minute = |unique| CronCommand {
            spec: CommandCron {
                fields: Fields::ANY,
                command: "true".to_owned(),
                unique,
                harakiri: None,
            },
            last_job: 0,
            running: Vec::new(),
        };
        let now = 1_000_000;
        for unique in [false, true] {
            let mut c = every_minute(unique);
            assert!(c.due(now, &t));
            c.last_job = now;
            c.running.push((1234, now, None));
            // Not twice within the minute.
            assert!(!c.due(now + 59, &t));
            // The next minute: a plain cron starts another run beside the live one, a unique
            // cron waits for it to end.
            assert_eq!(c.due(now + 60, &t), !unique);
            c.running.clear();
            assert!(c.due(now + 60, &t));
        }
        let mut c = every_minute(false);
        c.spec.fields.minute = 11;
        assert!(!c.due(now, &t));
    }

    #[test]
    fn timers_wait_for_the_nearest_and_rb_timers_end() {
        let mut t = Timers::default();
        assert_eq!(t.wait_ms(1000), 1000);
        t.add(Source::Timer {
            signal: 1,
            period_ms: 200,
        });
        assert!(t.wait_ms(1000) <= 201);
        t.add(Source::RbTimer {
            signal: 2,
            secs: 1,
            iterations: 2,
        });
        assert_eq!(t.periodic[1].left, Some(2));
        t.add(Source::RbTimer {
            signal: 3,
            secs: 1,
            iterations: 0,
        });
        assert_eq!(t.periodic[2].left, None);
    }
}
