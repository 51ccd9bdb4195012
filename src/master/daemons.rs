//! The master's side of attached daemons (uWSGI's core/daemons.c): started after the workers,
//! restarted when they die (throttled when they die at once), stopped with the master.
//!
//! A *plain* daemon (`--attach-daemon`, `--attach-control-daemon`, `--attach-daemon2` without
//! `pidfile=`) is the master's child; its death is seen when it is reaped. A *smart* daemon
//! (`--smart-attach-daemon`, `--smart-attach-daemon2`, `pidfile=`) forks away, or is forked
//! away by the master (`daemonize`); the master reads its pidfile every second and respawns it
//! when the pid it names is gone. Every daemon runs in its own session, and is signalled as a
//! process group, so that a shell and what it started go together.
//!
//! As in uWSGI, a reload stops the plain daemons (with `reloadsignal`, else `stopsignal`) and
//! starts them again, and leaves the smart ones running (`notifypid` ones get `reloadsignal`,
//! default SIGHUP). Across a re-exec the old copies are handed to the new image, which starts
//! the new ones only once the old ones are gone: never two copies at once. Unlike uWSGI, a
//! stopping master stops smart daemons too (no process is left behind).

use super::Master;
use crate::offload::daemon::DaemonSpec;
use crate::sys::daemon as sysd;
use crate::sys::proc::{self, ExitStatus, ForkResult};
use pyo3::prelude::*;
use std::time::{Duration, Instant, SystemTime};

/// Pids of daemons a re-exec'd master must see gone before it starts its own.
pub(super) const ENV_RETIRING: &str = "HEADRACE_RETIRING_DAEMONS";
/// A daemon that needs a respawn this soon after its spawn is throttled (uWSGI's 3 s).
const QUICK_DEATH: Duration = Duration::from_secs(3);
/// uWSGI's cap on the throttle when `max_throttle` is not set.
const DEFAULT_MAX_THROTTLE: u32 = 300;
/// Pidfiles and touch files are looked at this often (uWSGI's smart check).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How much later than its pidfile's mtime a process may seem to start (/proc's start times are
/// exact to about a second) before the pidfile counts as stale.
const STALE_SLACK: Duration = Duration::from_secs(2);
/// A group still alive this long after SIGKILL (stuck in the kernel) is given up on.
const GIVE_UP_AFTER_KILL: Duration = Duration::from_secs(10);

/// Where a daemon is in its life (uWSGI's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not running, or not known to run.
    Idle,
    /// Spawned; a smart daemon's pidfile is not confirmed yet.
    Started,
    /// A smart daemon whose pidfile names a live process.
    Monitored,
}

/// One configured daemon.
struct Daemon {
    spec: DaemonSpec,
    /// Our child: a plain daemon itself; a smart daemon's launcher, until it exits.
    child: Option<i32>,
    /// A smart daemon's pid, as its pidfile names it once seen alive.
    pid: Option<i32>,
    status: Status,
    /// A smart daemon's launcher exited (the command forked away, or failed).
    has_daemonized: bool,
    /// One-second checks since the spawn that did not find the pidfile's pid alive.
    pidfile_checks: u32,
    /// When to spawn next.
    next_spawn: Option<Instant>,
    spawned_at: Option<Instant>,
    spawns: u64,
    /// Respawns in a row that came within [`QUICK_DEATH`] of the spawn.
    quick_deaths: u32,
    /// The `touch=` files' modification times.
    touch: Vec<Option<SystemTime>>,
}

/// A daemon told to stop, watched (as a process group) until every process of it is gone.
struct Retiring {
    pid: i32,
    command: String,
    deadline: Instant,
    killed_at: Option<Instant>,
    /// Plain daemons are not started while this one lives (the old copy of a reload).
    blocks_spawn: bool,
}

/// The attached daemons' state in the master.
#[derive(Default)]
pub struct Daemons {
    list: Vec<Daemon>,
    retiring: Vec<Retiring>,
    started: bool,
    stopping: bool,
    last_check: Option<Instant>,
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The pid a pidfile names, when that process is alive (uWSGI's `uwsgi_check_pidfile`) and
/// was not started after the pidfile was written: a process that did is another one that got
/// a stale pidfile's pid (after a reboot, say), which must be neither adopted nor stopped.
fn pidfile_pid(path: &std::path::Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    if !sysd::alive(pid) {
        return None;
    }
    let written = mtime(path)?;
    match sysd::started_at(pid) {
        Some(started) if started > written + STALE_SLACK => None,
        _ => Some(pid),
    }
}

fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exit code {c}"),
        ExitStatus::Signal(s) => format!("killed by signal {s} ({})", proc::signal_name(s)),
    }
}

impl Daemon {
    fn new(spec: DaemonSpec) -> Self {
        Self {
            touch: spec.touch.iter().map(|p| mtime(p)).collect(),
            spec,
            child: None,
            pid: None,
            status: Status::Idle,
            has_daemonized: false,
            pidfile_checks: 0,
            next_spawn: None,
            spawned_at: None,
            spawns: 0,
            quick_deaths: 0,
        }
    }
}

/// The pids of the daemons a previous master image left running (a re-exec reload hands
/// them over in the environment), taken out of the environment.
#[must_use]
pub fn take_inherited() -> Vec<i32> {
    let pids = std::env::var(ENV_RETIRING)
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.parse::<i32>().ok())
        .collect();
    std::env::remove_var(ENV_RETIRING);
    pids
}

impl Daemons {
    /// The daemons of `config` (none started yet), and the ones a previous master image left
    /// stopping.
    #[must_use]
    pub fn new(config: &crate::config::Config, inherited: &[i32]) -> Self {
        // Validated when the configuration was read.
        let specs = crate::offload::daemon::specs(&config.offload.daemons).unwrap_or_default();
        let list = specs.into_iter().map(Daemon::new).collect();
        let deadline = Instant::now() + config.supervision.reload_mercy;
        let retiring = inherited
            .iter()
            .map(|&pid| Retiring {
                pid,
                command: "(a daemon of the previous master image)".to_owned(),
                deadline,
                killed_at: None,
                blocks_spawn: true,
            })
            .collect();
        Self {
            list,
            retiring,
            started: false,
            stopping: false,
            last_check: None,
        }
    }

    /// Every daemon and every group told to stop is gone.
    #[must_use]
    pub fn all_stopped(&self) -> bool {
        self.retiring.is_empty() && self.list.iter().all(|d| d.child.is_none())
    }

    /// Forget the groups that are gone; SIGKILL the ones past their deadline.
    fn sweep(&mut self, now: Instant) {
        self.retiring.retain_mut(|r| {
            if !sysd::alive(r.pid) && !sysd::group_alive(r.pid) {
                crate::log!("[headrace-daemons] daemon (pid: {}) stopped: {}", r.pid, r.command);
                return false;
            }
            if now < r.deadline {
                return true;
            }
            match r.killed_at {
                None => {
                    crate::log!(
                        "[headrace-daemons] daemon did not die in time, killing (pid: {}): {}",
                        r.pid,
                        r.command
                    );
                    r.killed_at = Some(now);
                }
                Some(at) if now.duration_since(at) > GIVE_UP_AFTER_KILL => {
                    crate::log!(
                        "[headrace-daemons] daemon (pid: {}) still alive {}s after SIGKILL; giving up on it: {}",
                        r.pid,
                        GIVE_UP_AFTER_KILL.as_secs(),
                        r.command
                    );
                    return false;
                }
                Some(_) => {}
            }
            // Again on every turn: a process of the group may have forked meanwhile.
            sysd::signal_group(r.pid, libc::SIGKILL);
            true
        });
    }

    /// Tell `pid`'s group to stop with `sig` and watch it until it is gone.
    fn retire(&mut self, pid: i32, sig: i32, command: &str, deadline: Instant, blocks: bool) {
        sysd::signal_group(pid, sig);
        self.retiring.push(Retiring {
            pid,
            command: command.to_owned(),
            deadline,
            killed_at: None,
            blocks_spawn: blocks,
        });
    }

    /// When the next spawn of daemon `i` may happen, throttled as uWSGI throttles a daemon
    /// that keeps dying at once: one more second per quick respawn in a row, up to
    /// `max_throttle` (300 s when unset).
    fn schedule_respawn(&mut self, i: usize, now: Instant) {
        let d = &mut self.list[i];
        let quick = d
            .spawned_at
            .is_some_and(|t| now.duration_since(t) <= QUICK_DEATH);
        d.quick_deaths = if quick { d.quick_deaths + 1 } else { 0 };
        let cap = if d.spec.max_throttle > 0 {
            d.spec.max_throttle
        } else {
            DEFAULT_MAX_THROTTLE
        };
        let throttle = d.quick_deaths.min(cap);
        if throttle > 0 {
            crate::log!(
                "[headrace-daemons] throttling \"{}\" for {throttle} seconds",
                d.spec.command
            );
        }
        d.status = Status::Idle;
        d.next_spawn = Some(now + Duration::from_secs(u64::from(throttle)));
    }

    fn spawn(&mut self, py: Python<'_>, i: usize, now: Instant) {
        let d = &mut self.list[i];
        d.next_spawn = None;
        crate::wsgi::load::flush_stdio(py);
        let pidfile = d.spec.pidfile.as_deref();
        let plan = sysd::DaemonExec {
            command: &d.spec.command,
            chdir: d.spec.chdir.as_deref(),
            gid: d.spec.gid,
            uid: d.spec.uid,
            daemonize_pidfile: if d.spec.daemonize { pidfile } else { None },
            keep_stdin: d.spec.honour_stdin,
            die_with_parent: pidfile.is_none(),
        };
        match proc::fork() {
            Ok(ForkResult::Child) => {
                crate::offload::set_role(crate::offload::Role::Daemon);
                sysd::exec_daemon(&plan)
            }
            Ok(ForkResult::Parent(pid)) => {
                crate::log!(
                    "[headrace-daemons] {}spawning \"{}\" (pid: {pid}, uid: {} gid: {})",
                    if d.spawns > 0 { "re" } else { "" },
                    d.spec.command,
                    d.spec.uid.unwrap_or_else(|| proc::ids().0),
                    d.spec.gid.unwrap_or_else(|| proc::ids().1),
                );
                d.child = Some(pid);
                d.status = Status::Started;
                d.has_daemonized = false;
                d.pidfile_checks = 0;
                d.spawned_at = Some(now);
                d.spawns += 1;
            }
            Err(e) => {
                crate::log!(
                    "[headrace-daemons] cannot spawn \"{}\": {e}",
                    d.spec.command
                );
                d.next_spawn = Some(now + Duration::from_secs(1));
            }
        }
    }

    /// First turn: smart daemons whose pidfile names a live process are adopted (a re-exec, or
    /// a restart of the server), the others are spawned.
    fn start(&mut self, now: Instant) {
        self.started = true;
        for d in &mut self.list {
            if let Some(pid) = d.spec.pidfile.as_deref().and_then(pidfile_pid) {
                crate::log!(
                    "[headrace-daemons] found valid/active pidfile for \"{}\" (pid: {pid})",
                    d.spec.command
                );
                d.pid = Some(pid);
                d.status = Status::Monitored;
            } else {
                d.next_spawn = Some(now);
            }
        }
    }

    /// Every second: follow the smart daemons through their pidfiles (uWSGI's
    /// `uwsgi_daemons_smart_check`).
    fn check_pidfiles(&mut self, now: Instant) {
        for i in 0..self.list.len() {
            let d = &mut self.list[i];
            let Some(pidfile) = d.spec.pidfile.clone() else {
                continue;
            };
            if d.next_spawn.is_some() || d.status == Status::Idle {
                continue;
            }
            match pidfile_pid(&pidfile) {
                Some(pid) => {
                    if let Some(old) = d.pid.filter(|old| *old != pid) {
                        crate::log!(
                            "[headrace-daemons] found changed pid for \"{}\" (old_pid: {old} new_pid: {pid})",
                            d.spec.command
                        );
                    }
                    d.pid = Some(pid);
                    d.status = Status::Monitored;
                }
                None if d.status == Status::Monitored => {
                    crate::log!(
                        "[headrace-daemons] daemon \"{}\" (pid: {}) died: respawning",
                        d.spec.command,
                        d.pid.unwrap_or(0)
                    );
                    d.pid = None;
                    self.schedule_respawn(i, now);
                }
                None => {
                    d.pidfile_checks += 1;
                    if d.pidfile_checks < d.spec.freq {
                        continue;
                    }
                    d.pidfile_checks = 0;
                    if d.has_daemonized {
                        crate::log!(
                            "[headrace-daemons] no live process in {} {}s after spawning \"{}\": respawning",
                            pidfile.display(),
                            d.spec.freq,
                            d.spec.command
                        );
                        self.schedule_respawn(i, now);
                    } else {
                        crate::log!(
                            "[headrace-daemons] \"{}\" (pid: {}) did not daemonize !!!",
                            d.spec.command,
                            d.child.unwrap_or(0)
                        );
                    }
                }
            }
        }
    }

    /// Every second: a changed `touch=` file stops the daemon (`stopsignal`); it is then
    /// respawned like any daemon that died.
    fn check_touches(&mut self) {
        for d in &mut self.list {
            for (path, seen) in d.spec.touch.iter().zip(d.touch.iter_mut()) {
                let now = mtime(path);
                if now == *seen {
                    continue;
                }
                *seen = now;
                let pid = if d.spec.is_smart() { d.pid } else { d.child };
                if let Some(pid) = pid {
                    crate::log!(
                        "*** {} has been touched... reloading daemon \"{}\" (pid: {pid}) !!! ***",
                        path.display(),
                        d.spec.command
                    );
                    sysd::signal_group(pid, d.spec.stop_signal);
                }
            }
        }
    }
}

impl Master<'_> {
    /// Every turn of the master's loop (not while stopping): start what is due, follow the
    /// pidfiles and touch files, and watch the old copies a reload is stopping.
    pub(super) fn tick_daemons(&mut self, py: Python<'_>) {
        let ds = &mut self.daemons;
        if ds.list.is_empty() && ds.retiring.is_empty() {
            return;
        }
        let now = Instant::now();
        ds.sweep(now);
        if !ds.started {
            ds.start(now);
        }
        if ds
            .last_check
            .is_none_or(|t| now.duration_since(t) >= CHECK_EVERY)
        {
            ds.last_check = Some(now);
            ds.check_pidfiles(now);
            ds.check_touches();
        }
        let blocked = ds.retiring.iter().any(|r| r.blocks_spawn);
        for i in 0..ds.list.len() {
            let d = &ds.list[i];
            let due = d.next_spawn.is_some_and(|t| t <= now);
            // A reload's old copies must be gone before plain daemons start again.
            if due && (d.spec.is_smart() || !blocked) {
                ds.spawn(py, i, now);
            }
        }
    }

    /// A child exited: if it was a daemon (or a daemon's launcher), log it and schedule its
    /// successor; a control daemon's death stops the server. Returns whether it was one.
    pub(super) fn reap_daemon(&mut self, pid: i32, status: ExitStatus) -> bool {
        let now = Instant::now();
        let ds = &mut self.daemons;
        if ds.retiring.iter().any(|r| r.pid == pid) {
            // Its group is watched by sweep until every process of it is gone.
            return true;
        }
        let Some(i) = ds
            .list
            .iter()
            .position(|d| d.child == Some(pid) || (d.spec.is_smart() && d.pid == Some(pid)))
        else {
            return false;
        };
        let d = &mut ds.list[i];
        let how = describe(status);
        if d.spec.is_smart() {
            if d.child == Some(pid) {
                d.child = None;
                d.has_daemonized = true;
            }
            // A smart daemon that stayed in the foreground (the pidfile names our child) and
            // died: respawned now, not after `freq` checks.
            let named = d
                .spec
                .pidfile
                .as_deref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| t.trim().parse::<i32>().ok());
            if (d.pid == Some(pid) || named == Some(pid)) && !ds.stopping {
                crate::log!(
                    "[headrace-daemons] daemon \"{}\" (pid: {pid}) died ({how}): respawning",
                    d.spec.command
                );
                d.pid = None;
                ds.schedule_respawn(i, now);
            } else if status != ExitStatus::Code(0) {
                // A launcher that failed: the pidfile checks decide.
                crate::log!(
                    "[headrace-daemons] \"{}\" (pid: {pid}) exited ({how})",
                    d.spec.command
                );
            }
            return true;
        }
        d.child = None;
        let command = d.spec.command.clone();
        let (control, stop_signal) = (d.spec.control, d.spec.stop_signal);
        // What the daemon started in its group goes with it.
        if sysd::group_alive(pid) {
            let mercy = self.config.supervision.reload_mercy;
            ds.retire(pid, stop_signal, &command, now + mercy, false);
        }
        if ds.stopping {
            crate::log!("[headrace-daemons] daemon \"{command}\" (pid: {pid}) stopped ({how})");
            return true;
        }
        if control {
            crate::log!(
                "[headrace-daemons] control daemon \"{command}\" (pid: {pid}) died ({how}): stopping the server"
            );
            if self.stopping.is_none() {
                // As SIGTERM does (uWSGI: gracefully_kill_them_all).
                self.signal_all(libc::SIGTERM);
                self.stopping = Some((now + self.config.supervision.reload_mercy, true));
            }
            return true;
        }
        crate::log!(
            "[headrace-daemons] daemon \"{command}\" (pid: {pid}) died ({how}): respawning"
        );
        ds.schedule_respawn(i, now);
        true
    }

    /// On reload (both kinds): plain daemons are stopped (`reloadsignal`, else `stopsignal`)
    /// and started again once gone; smart daemons stay (`notifypid` ones are told with
    /// `reloadsignal`, default SIGHUP).
    pub(super) fn reload_daemons(&mut self) {
        let now = Instant::now();
        let deadline = now + self.config.supervision.reload_mercy;
        let ds = &mut self.daemons;
        for i in 0..ds.list.len() {
            let d = &mut ds.list[i];
            let reload = d.spec.reload_signal;
            if d.spec.is_smart() {
                // The pidfile itself: the last check may be a second old.
                let pid = d.spec.pidfile.as_deref().and_then(pidfile_pid).or(d.pid);
                if let (true, Some(pid)) = (d.spec.notify_pid, pid) {
                    let sig = if reload > 0 { reload } else { libc::SIGHUP };
                    crate::log!(
                        "[headrace-daemons] reload: sending {} to \"{}\" (pid: {pid})",
                        proc::signal_name(sig),
                        d.spec.command
                    );
                    sysd::signal_group(pid, sig);
                }
                continue;
            }
            let Some(pid) = d.child.take() else {
                continue;
            };
            let sig = if reload > 0 {
                reload
            } else {
                d.spec.stop_signal
            };
            let command = d.spec.command.clone();
            d.status = Status::Idle;
            d.quick_deaths = 0;
            d.spawned_at = None;
            d.next_spawn = Some(now);
            crate::log!(
                "[headrace-daemons] stopping daemon for the reload (pid: {pid}): {command}"
            );
            ds.retire(pid, sig, &command, deadline, true);
        }
    }

    /// Before a re-exec: name the daemons being stopped, so that the new image waits for them
    /// to be gone before it starts its own.
    pub(super) fn hand_over_daemons(&self) {
        let pids: Vec<String> = self
            .daemons
            .retiring
            .iter()
            .map(|r| r.pid.to_string())
            .collect();
        if pids.is_empty() {
            std::env::remove_var(ENV_RETIRING);
        } else {
            std::env::set_var(ENV_RETIRING, pids.join(","));
        }
    }

    /// Every turn of the master's loop while it stops: the first time, tell every daemon to
    /// stop (`stopsignal`, to its process group), smart ones included; then SIGKILL what is
    /// left at `deadline`.
    pub(super) fn stop_daemons(&mut self, deadline: Instant) {
        let ds = &mut self.daemons;
        if !ds.stopping {
            ds.stopping = true;
            for i in 0..ds.list.len() {
                let d = &mut ds.list[i];
                d.next_spawn = None;
                let sig = d.spec.stop_signal;
                let command = d.spec.command.clone();
                let smart_pid = d
                    .spec
                    .pidfile
                    .as_deref()
                    .and_then(pidfile_pid)
                    .or(d.pid.filter(|p| sysd::alive(*p)));
                let mut pids: Vec<i32> = smart_pid.into_iter().collect();
                if let Some(child) = d.child.take() {
                    if !pids.contains(&child) {
                        pids.push(child);
                    }
                }
                d.pid = None;
                for pid in pids {
                    crate::log!("[headrace-daemons] stopping daemon (pid: {pid}): {command}");
                    ds.retire(pid, sig, &command, deadline, false);
                }
            }
        }
        // Never later than the master's own deadline (which moves when it SIGKILLs).
        for r in &mut ds.retiring {
            r.deadline = r.deadline.min(deadline);
        }
        ds.sweep(Instant::now());
    }

    /// Every daemon is gone (the master may exit).
    pub(super) fn daemons_stopped(&self) -> bool {
        self.daemons.all_stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::offload::{DaemonConfig, Given};

    fn one(value: &str) -> Daemons {
        let cfg = DaemonConfig {
            attach2: vec![Given {
                value: value.to_owned(),
                source_desc: "in a test".to_owned(),
            }],
            ..DaemonConfig::default()
        };
        let specs = crate::offload::daemon::specs(&cfg).expect("a valid daemon");
        Daemons {
            list: specs.into_iter().map(Daemon::new).collect(),
            ..Daemons::default()
        }
    }

    /// The waits before each respawn of a daemon that dies `lived` after every spawn.
    fn waits(ds: &mut Daemons, lived: Duration, n: usize) -> Vec<u64> {
        let mut now = Instant::now();
        let mut out = Vec::new();
        for _ in 0..n {
            ds.list[0].spawned_at = Some(now);
            now += lived;
            ds.schedule_respawn(0, now);
            let next = ds.list[0].next_spawn.expect("scheduled");
            out.push(next.duration_since(now).as_secs());
            now = next;
        }
        out
    }

    #[test]
    fn quick_deaths_are_throttled_one_more_second_each() {
        let mut ds = one("cmd=false");
        assert_eq!(
            waits(&mut ds, Duration::from_millis(10), 5),
            [1, 2, 3, 4, 5]
        );
        // A daemon that lived longer than 3 s is respawned at once, and the count restarts.
        assert_eq!(waits(&mut ds, Duration::from_secs(4), 1), [0]);
        assert_eq!(waits(&mut ds, Duration::from_millis(10), 2), [1, 2]);
    }

    #[test]
    fn max_throttle_caps_the_wait() {
        let mut ds = one("cmd=false,max_throttle=2");
        assert_eq!(waits(&mut ds, Duration::ZERO, 4), [1, 2, 2, 2]);
    }

    #[test]
    fn stale_pidfile_is_not_a_live_daemon() {
        let dir = std::env::temp_dir().join(format!("hr-daemons-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("x.pid");
        let me = proc::getpid();
        std::fs::write(&path, format!("{me}\n")).expect("write");
        assert_eq!(pidfile_pid(&path), Some(me));
        // Written long before this process started: the pid was reused.
        let old = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        old.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .expect("set mtime");
        assert_eq!(pidfile_pid(&path), None);
        std::fs::write(&path, "not a pid").expect("write");
        assert_eq!(pidfile_pid(&path), None);
        std::fs::write(&path, "999999999").expect("write");
        assert_eq!(pidfile_pid(&path), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
