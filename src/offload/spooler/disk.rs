//! The disk backend: uWSGI's spool directory, byte for byte, made durable.
//!
//! A task is a file `DIR/uwsgi_spoolfile_on_HOST_PID_N_RANDOM_SEC_USEC` holding the spool
//! packet (see [`super::backend`]); a task with a `priority` lives in `DIR/PRIORITY/`, as
//! uWSGI puts it; a file whose modification time is in the future waits until then (uWSGI's
//! `at`, which headrace also uses for retry backoff). Beyond uWSGI:
//! - enqueue writes a hidden temporary file, fsyncs it, renames it into place and fsyncs the
//!   directory, so a spooled task survives a crash of the machine;
//! - a spooler leases a task by an open-file-description lock it holds while the task runs:
//!   two spoolers never run one task, and a killed spooler's task is run again;
//! - priority directories are always honoured (uWSGI reads them only with `--spooler-ordered`);
//! - a failed task records its attempts in a hidden variable (`headrace_attempts`, never shown
//!   to the task) and, after the last one, moves to `DIR/dead/` with a `NAME.traceback` file;
//! - new files are noticed at once (inotify); the directory is rescanned every
//!   `--spooler-frequency` seconds as well.

use super::backend::{Backend, Lease, SpoolError, Task};
use crate::sys::spooler::{set_times, try_lock, Inotify};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The prefix of every spool file (uWSGI's).
pub const PREFIX: &str = "uwsgi_spoolfile_on_";
/// The hidden variable counting a task's failed attempts.
pub const ATTEMPTS_VAR: &[u8] = b"headrace_attempts";
/// The dead-letter directory, inside the spool directory.
pub const DEAD_DIR: &str = "dead";
const TMP_PREFIX: &str = ".headrace_tmp_";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Unix time now, in seconds.
#[must_use]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a task file waits, in run order: priority directories first (lowest number first),
/// then the top directory; then the time in the name (the order of spooling); then the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    priority: (u8, u64),
    sec: u64,
    usec: u64,
    name: String,
}

#[derive(Debug)]
struct Candidate {
    path: PathBuf,
    not_before: u64,
}

enum Take {
    Taken(Box<Lease>, File),
    NotYet(u64),
    Gone,
}

/// A spool directory.
pub struct DiskQueue {
    dir: PathBuf,
    hostname: String,
    made_dirs: HashSet<String>,
    // The lease side, built on first use.
    candidates: BTreeMap<Key, Candidate>,
    watch: Option<Inotify>,
    watched: HashMap<i32, (u8, u64)>,
    last_scan: Option<Instant>,
    frequency: Duration,
    held: HashMap<String, File>,
}

/// The priority directory a value names (digits only, as uWSGI's `is_a_number`).
fn priority_dir(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The key of `name` in the directory of `priority`; `None`: not a spool file.
fn key_of(name: &str, priority: (u8, u64)) -> Option<Key> {
    if !name.starts_with(PREFIX) {
        return None;
    }
    let mut parts = name.rsplitn(3, '_');
    let usec = parts.next()?.parse().unwrap_or(0);
    let sec = parts.next()?.parse().unwrap_or(0);
    Some(Key {
        priority,
        sec,
        usec,
        name: name.to_owned(),
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `bytes` to a hidden file in `tmp_dir`, give it the times `at` (if any), fsync it when
/// `sync` says so, and rename it to `target`. Returns the open file (for a later fsync); on an
/// error the hidden file is removed.
fn place(
    tmp_dir: &Path,
    target: &Path,
    bytes: &[u8],
    at: Option<u64>,
    sync: bool,
) -> std::io::Result<File> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tmp_dir.join(format!("{TMP_PREFIX}{name}"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if let Some(at) = at {
            set_times(f.as_raw_fd(), at)?;
        }
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, target)?;
        Ok(f)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`place`] the file, fsynced, then fsync `target`'s directory.
fn write_durably(
    tmp_dir: &Path,
    target: &Path,
    bytes: &[u8],
    at: Option<u64>,
) -> std::io::Result<()> {
    place(tmp_dir, target, bytes, at, true)?;
    sync_dir(target.parent().unwrap_or(tmp_dir))
}

/// Spool files waiting for their fsync, and the thread that does them (see [`enqueue_file`]).
struct Syncer {
    queue: std::sync::Mutex<Vec<(File, PathBuf)>>,
    ready: std::sync::Condvar,
}

static SYNCER: std::sync::OnceLock<&'static Syncer> = std::sync::OnceLock::new();

/// The background syncer of this process: fsyncs every file handed to it, then each of their
/// directories once per batch (concurrent enqueues share one journal commit).
fn syncer() -> &'static Syncer {
    SYNCER.get_or_init(|| {
        let s: &'static Syncer = Box::leak(Box::new(Syncer {
            queue: std::sync::Mutex::new(Vec::new()),
            ready: std::sync::Condvar::new(),
        }));
        std::thread::spawn(move || loop {
            let batch = {
                let mut q = s
                    .queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while q.is_empty() {
                    q = s
                        .ready
                        .wait(q)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                std::mem::take(&mut *q)
            };
            let mut dirs: Vec<PathBuf> = Vec::new();
            for (file, dir) in batch {
                if let Err(e) = file.sync_all() {
                    crate::log!("[spooler] fsync of a spool file in {}: {e}", dir.display());
                }
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
            for d in dirs {
                if let Err(e) = sync_dir(&d) {
                    crate::log!("[spooler] fsync of {}: {e}", d.display());
                }
            }
        });
        s
    })
}

/// Put a new spool file in place: written to a hidden file, renamed to `target` (from then on
/// it survives any crash of any process: it is in the kernel's page cache), then fsynced with
/// its directory. In the master (before any fork: no thread may run there) the fsyncs happen
/// before this returns; in the other processes a background thread does them at once, batched,
/// so a request that spools does not wait for the disk's journal (milliseconds on a busy disk).
/// A machine crash in those milliseconds can leave the file short: the spooler then moves it to
/// the dead letters ("not a spool packet"), it is never run half.
fn enqueue_file(
    tmp_dir: &Path,
    target: &Path,
    bytes: &[u8],
    at: Option<u64>,
) -> std::io::Result<()> {
    if matches!(crate::offload::role(), crate::offload::Role::Master) {
        return write_durably(tmp_dir, target, bytes, at);
    }
    let f = place(tmp_dir, target, bytes, at, false)?;
    let s = syncer();
    let dir = target.parent().unwrap_or(tmp_dir).to_path_buf();
    s.queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((f, dir));
    s.ready.notify_one();
    Ok(())
}

impl DiskQueue {
    /// The queue in `dir` (created if missing, as uWSGI does); `frequency` is how often the
    /// lease side rescans it.
    pub fn open(dir: &Path, frequency: Duration) -> Result<Self, SpoolError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
        }
        let dir = std::fs::canonicalize(dir)?;
        Ok(Self {
            dir,
            hostname: crate::config::ini::hostname(),
            made_dirs: HashSet::new(),
            candidates: BTreeMap::new(),
            watch: None,
            watched: HashMap::new(),
            last_scan: None,
            frequency: frequency.max(Duration::from_secs(1)),
            held: HashMap::new(),
        })
    }

    /// The directory (canonical).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Change the rescan period (`uwsgi.set_spooler_frequency`).
    pub fn set_frequency(&mut self, f: Duration) {
        self.frequency = f.max(Duration::from_secs(1));
    }

    /// The inotify descriptor, once the lease side is running (to wait on with other fds).
    #[must_use]
    pub fn watch_fd(&self) -> Option<i32> {
        self.watch.as_ref().map(Inotify::raw)
    }

    fn new_name(&self) -> String {
        use std::hash::{BuildHasher, Hasher};
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        let rand = h.finish() & 0x7fff_ffff;
        format!(
            "{PREFIX}{}_{}_{n}_{rand}_{}_{}",
            self.hostname,
            std::process::id(),
            now.as_secs(),
            now.subsec_micros()
        )
    }

    fn watch_dir(&mut self, path: &Path, priority: (u8, u64)) {
        if let Some(w) = &self.watch {
            let mask = libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_ATTRIB;
            let mask = if priority.0 == 1 {
                mask | libc::IN_CREATE | libc::IN_ONLYDIR
            } else {
                mask
            };
            match w.add_watch(path, mask & !libc::IN_ONLYDIR) {
                Ok(wd) => {
                    self.watched.insert(wd, priority);
                }
                Err(e) => crate::log!("[spooler] cannot watch {}: {e}", path.display()),
            }
        }
    }

    fn path_of(&self, priority: (u8, u64), name: &str) -> PathBuf {
        if priority.0 == 0 {
            self.dir.join(priority.1.to_string()).join(name)
        } else {
            self.dir.join(name)
        }
    }

    fn consider(&mut self, priority: (u8, u64), name: &str) {
        let Some(key) = key_of(name, priority) else {
            return;
        };
        let path = self.path_of(priority, name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            self.candidates.remove(&key);
            return;
        };
        if !meta.is_file() {
            return;
        }
        let not_before = u64::try_from(meta.mtime()).unwrap_or(0);
        self.candidates.insert(key, Candidate { path, not_before });
    }

    /// Read the whole directory again (and start watching it, the first time).
    fn scan(&mut self) -> Result<(), SpoolError> {
        if self.watch.is_none() {
            match Inotify::new() {
                Ok(w) => self.watch = Some(w),
                Err(e) => crate::log!(
                    "[spooler] no inotify ({e}): new tasks are seen every {}s",
                    self.frequency.as_secs()
                ),
            }
        }
        let first = self.watched.is_empty();
        if first {
            let dir = self.dir.clone();
            self.watch_dir(&dir, (1, 0));
        }
        self.candidates.clear();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(p) = priority_dir(name.as_bytes()) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    self.scan_priority(p);
                }
            } else if name.starts_with(TMP_PREFIX) {
                // A temporary file of an enqueue that died before its rename: stale after a
                // minute (an enqueue takes milliseconds).
                if entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .is_some_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            } else {
                self.consider((1, 0), &name);
            }
        }
        self.last_scan = Some(Instant::now());
        Ok(())
    }

    fn scan_priority(&mut self, p: u64) {
        let path = self.dir.join(p.to_string());
        if !self.watched.values().any(|v| *v == (0, p)) {
            self.watch_dir(&path, (0, p));
        }
        if let Ok(entries) = std::fs::read_dir(&path) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                self.consider((0, p), &name);
            }
        }
    }

    /// Take in what inotify reported, and rescan when due.
    fn refresh(&mut self) -> Result<(), SpoolError> {
        if self.last_scan.is_none_or(|t| t.elapsed() >= self.frequency) {
            return self.scan();
        }
        let events = match &self.watch {
            Some(w) => w.read_events(),
            None => return Ok(()),
        };
        for ev in events {
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                return self.scan();
            }
            let Some(&priority) = self.watched.get(&ev.wd) else {
                continue;
            };
            let name = String::from_utf8_lossy(&ev.name).into_owned();
            if priority.0 == 1 {
                if let Some(p) = priority_dir(name.as_bytes()) {
                    if ev.mask & libc::IN_ISDIR != 0 {
                        self.scan_priority(p);
                        continue;
                    }
                }
            }
            self.consider(priority, &name);
        }
        Ok(())
    }

    fn try_take(path: &Path) -> Result<Take, SpoolError> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Take::Gone),
            Err(e) => return Err(e.into()),
        };
        if !try_lock(file.as_raw_fd())? {
            // Another spooler runs it (or uWSGI is still writing it): look again in a second,
            // in case that spooler dies with it.
            return Ok(Take::NotYet(unix_now() + 1));
        }
        let held = file.metadata()?;
        // Between our open and our lock the owner may have finished it (unlinked) or
        // rescheduled it (renamed a new file over it): then this description is stale.
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
            _ => return Ok(Take::Gone),
        }
        let mut bytes = Vec::with_capacity(usize::try_from(held.len()).unwrap_or(0));
        (&file).read_to_end(&mut bytes)?;
        let name = path.to_string_lossy().into_owned();
        let mut task = match Task::decode(&bytes) {
            Ok(t) => t,
            Err(e) => {
                return Ok(Take::Taken(
                    Box::new(Lease {
                        name,
                        task: Task {
                            vars: vec![(b"headrace_bad_packet".to_vec(), e.to_string().into())],
                            body: bytes,
                        },
                        attempts: u32::MAX,
                    }),
                    file,
                ))
            }
        };
        let not_before = u64::try_from(held.mtime())
            .unwrap_or(0)
            .max(task.at().unwrap_or(0));
        if not_before > unix_now() {
            return Ok(Take::NotYet(not_before));
        }
        let mut attempts = 0;
        task.vars.retain(|(k, v)| {
            if k == ATTEMPTS_VAR {
                attempts = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                false
            } else {
                true
            }
        });
        Ok(Take::Taken(
            Box::new(Lease {
                name,
                task,
                attempts,
            }),
            file,
        ))
    }

    /// One pass over the waiting tasks: the first one leased, or when the next one is due.
    fn take_one(&mut self) -> Result<(Option<Lease>, Option<u64>), SpoolError> {
        self.refresh()?;
        let now = unix_now();
        let mut next_due: Option<u64> = None;
        let mut cursor: Option<Key> = None;
        loop {
            // Walk in order while entries are removed: one lookup per step, not a copy of all.
            let next = match &cursor {
                None => self.candidates.iter().next(),
                Some(k) => self
                    .candidates
                    .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
                    .next(),
            };
            let Some((key, c)) = next else {
                break;
            };
            let key = key.clone();
            cursor = Some(key.clone());
            if c.not_before > now {
                next_due = Some(next_due.map_or(c.not_before, |d| d.min(c.not_before)));
                continue;
            }
            let path = c.path.clone();
            match Self::try_take(&path)? {
                Take::Taken(lease, file) => {
                    self.candidates.remove(&key);
                    self.held.insert(lease.name.clone(), file);
                    return Ok((Some(*lease), None));
                }
                Take::NotYet(t) => {
                    if let Some(c) = self.candidates.get_mut(&key) {
                        c.not_before = t;
                    }
                    next_due = Some(next_due.map_or(t, |d| d.min(t)));
                }
                Take::Gone => {
                    self.candidates.remove(&key);
                }
            }
        }
        Ok((None, next_due))
    }

    fn release_file(&mut self, name: &str) -> Option<File> {
        self.held.remove(name)
    }

    /// Rewrite a held task in place (same name) with `attempts` and not before `not_before`.
    fn reschedule(
        &mut self,
        lease: &Lease,
        attempts: u32,
        not_before: u64,
    ) -> Result<(), SpoolError> {
        let mut task = lease.task.clone();
        task.vars
            .push((ATTEMPTS_VAR.to_vec(), attempts.to_string().into_bytes()));
        let bytes = task.encode()?;
        let target = PathBuf::from(&lease.name);
        write_durably(&self.dir, &target, &bytes, Some(not_before))?;
        Ok(())
    }
}

impl Backend for DiskQueue {
    fn enqueue(&mut self, task: &Task) -> Result<String, SpoolError> {
        let bytes = task.encode()?;
        let dir = match task.get(b"priority") {
            Some(p) if !p.is_empty() => {
                let n = priority_dir(p).ok_or_else(|| {
                    SpoolError::Format(format!(
                        "priority {:?} is not a number (uWSGI runs only numeric priority directories)",
                        String::from_utf8_lossy(p)
                    ))
                })?;
                let d = self.dir.join(n.to_string());
                if self.made_dirs.insert(n.to_string()) && !d.is_dir() {
                    std::fs::create_dir_all(&d)?;
                    sync_dir(&self.dir)?;
                }
                d
            }
            _ => self.dir.clone(),
        };
        let target = dir.join(self.new_name());
        enqueue_file(&self.dir, &target, &bytes, task.at().filter(|&a| a > 0))?;
        Ok(target.to_string_lossy().into_owned())
    }

    fn lease(&mut self, wait: Duration) -> Result<Option<Lease>, SpoolError> {
        let deadline = Instant::now() + wait;
        loop {
            let (lease, next_due) = self.take_one()?;
            if lease.is_some() {
                return Ok(lease);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut until = deadline;
            if let Some(due) = next_due {
                let secs = due.saturating_sub(unix_now());
                until = until.min(now + Duration::from_secs(secs).max(Duration::from_millis(50)));
            }
            if let Some(scan) = self.last_scan {
                until = until.min(scan + self.frequency);
            }
            let ms = i32::try_from(until.saturating_duration_since(now).as_millis())
                .unwrap_or(i32::MAX)
                .max(1);
            match self.watch_fd() {
                Some(fd) => {
                    let _ = crate::sys::proc::poll_readable(fd, ms);
                }
                None => std::thread::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(1))),
            }
        }
    }

    fn ack(&mut self, lease: Lease) -> Result<(), SpoolError> {
        // The lock is held until the file is gone: no other spooler can take it meanwhile.
        let file = self.release_file(&lease.name);
        let r = std::fs::remove_file(&lease.name);
        drop(file);
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn retry(&mut self, lease: Lease, not_before: u64) -> Result<(), SpoolError> {
        let r = self.reschedule(&lease, lease.attempts.saturating_add(1), not_before);
        drop(self.release_file(&lease.name));
        r
    }

    fn release(&mut self, lease: Lease, not_before: u64) -> Result<(), SpoolError> {
        // Not a failure: the attempts stay; only the time it may run again moves (the file's
        // mtime, as uWSGI's `at`).
        let file = self.release_file(&lease.name);
        if let Some(f) = &file {
            set_times(f.as_raw_fd(), not_before)?;
        }
        Ok(())
    }

    fn bury(&mut self, lease: Lease, why: &str) -> Result<(), SpoolError> {
        let dead = self.dir.join(DEAD_DIR);
        std::fs::create_dir_all(&dead)?;
        let file_name = Path::new(&lease.name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = if lease.task.get(b"headrace_bad_packet").is_some() {
            lease.task.body.clone()
        } else {
            lease.task.encode()?
        };
        write_durably(&self.dir, &dead.join(&file_name), &bytes, None)?;
        write_durably(
            &self.dir,
            &dead.join(format!("{file_name}.traceback")),
            why.as_bytes(),
            None,
        )?;
        let file = self.release_file(&lease.name);
        let _ = std::fs::remove_file(&lease.name);
        drop(file);
        Ok(())
    }

    fn pending(&mut self) -> Result<Vec<String>, SpoolError> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(p) = priority_dir(name.as_bytes()) {
                if let Ok(sub) = std::fs::read_dir(entry.path()) {
                    for e in sub.flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if let Some(k) = key_of(&n, (0, p)) {
                            keys.push(k);
                        }
                    }
                }
            } else if let Some(k) = key_of(&name, (1, 0)) {
                keys.push(k);
            }
        }
        keys.sort();
        Ok(keys
            .into_iter()
            .map(|k| {
                self.path_of(k.priority, &k.name)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect())
    }
}

/// Read one task file (`uwsgi.spooler_get_task`), without leasing it.
#[must_use]
pub fn read_task(path: &Path) -> Option<Task> {
    let bytes = std::fs::read(path).ok()?;
    let mut task = Task::decode(&bytes).ok()?;
    task.vars.retain(|(k, _)| k != ATTEMPTS_VAR);
    Some(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "headrace-spool-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn task(vars: &[(&str, &str)]) -> Task {
        Task {
            vars: vars
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn names_sort_by_priority_then_time() {
        let a = key_of("uwsgi_spoolfile_on_h_o_st_1_1_7_100_5", (1, 0)).unwrap();
        let b = key_of("uwsgi_spoolfile_on_host_1_2_7_100_6", (1, 0)).unwrap();
        let c = key_of("uwsgi_spoolfile_on_host_1_3_7_200_0", (0, 9)).unwrap();
        assert!(c < a && a < b);
        assert_eq!((a.sec, a.usec), (100, 5));
        assert!(key_of("other", (1, 0)).is_none());
        assert_eq!(priority_dir(b"10"), Some(10));
        assert_eq!(priority_dir(b"-1"), None);
        assert_eq!(priority_dir(b""), None);
    }

    #[test]
    fn enqueue_lease_ack_in_priority_order() {
        let d = tmpdir("order");
        let mut q = DiskQueue::open(&d, Duration::from_secs(30)).unwrap();
        let plain = q.enqueue(&task(&[("n", "plain")])).unwrap();
        let p5 = q.enqueue(&task(&[("n", "p5"), ("priority", "5")])).unwrap();
        let p1 = q.enqueue(&task(&[("n", "p1"), ("priority", "1")])).unwrap();
        assert!(q.enqueue(&task(&[("priority", "high")])).is_err());
        assert!(p5.starts_with(&format!("{}/5/{PREFIX}", q.dir().display())));
        assert_eq!(
            q.pending().unwrap(),
            vec![p1.clone(), p5.clone(), plain.clone()]
        );
        let mut other = DiskQueue::open(&d, Duration::from_secs(30)).unwrap();
        let l = q.lease(Duration::ZERO).unwrap().unwrap();
        assert_eq!(
            (l.name.as_str(), l.task.get(b"n")),
            (p1.as_str(), Some(&b"p1"[..]))
        );
        // Held by q: the other spooler takes the next one.
        let l2 = other.lease(Duration::ZERO).unwrap().unwrap();
        assert_eq!(l2.name, p5);
        q.ack(l).unwrap();
        other.ack(l2).unwrap();
        let l3 = q.lease(Duration::from_millis(10)).unwrap().unwrap();
        assert_eq!(l3.name, plain);
        q.ack(l3).unwrap();
        assert!(q.lease(Duration::from_millis(10)).unwrap().is_none());
        assert!(q.pending().unwrap().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn retries_count_then_bury() {
        let d = tmpdir("retry");
        let mut q = DiskQueue::open(&d, Duration::from_secs(30)).unwrap();
        let name = q.enqueue(&task(&[("n", "x")])).unwrap();
        let l = q.lease(Duration::ZERO).unwrap().unwrap();
        assert_eq!(l.attempts, 0);
        q.retry(l, unix_now() + 100).unwrap();
        assert!(
            q.lease(Duration::from_millis(10)).unwrap().is_none(),
            "not yet"
        );
        make_due(&name);
        let l = q.lease(Duration::from_millis(10)).unwrap().unwrap();
        assert_eq!(l.attempts, 1);
        assert_eq!(l.task.vars.len(), 1, "the attempts variable is hidden");
        assert_eq!(read_task(Path::new(&name)).unwrap().vars.len(), 1);
        q.bury(l, "Traceback: boom").unwrap();
        assert!(!Path::new(&name).exists());
        let dead = d.join(DEAD_DIR);
        let file = Path::new(&name)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            std::fs::read_to_string(dead.join(format!("{file}.traceback"))).unwrap(),
            "Traceback: boom"
        );
        let t = Task::decode(&std::fs::read(dead.join(&file)).unwrap()).unwrap();
        assert_eq!(t, task(&[("n", "x")]));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn at_waits_and_a_uwsgi_file_runs() {
        let d = tmpdir("at");
        let mut q = DiskQueue::open(&d, Duration::from_secs(30)).unwrap();
        let later = (unix_now() + 1000).to_string();
        q.enqueue(&task(&[("n", "later"), ("at", &later)])).unwrap();
        // As uWSGI writes one: in place, no temporary file.
        let raw = task(&[("n", "uwsgi")]).encode().unwrap();
        let name = d.join(format!("{PREFIX}otherhost_12_1_99_1700000000_1"));
        std::fs::write(&name, raw).unwrap();
        let l = q.lease(Duration::from_millis(500)).unwrap().unwrap();
        assert_eq!(l.task.get(b"n"), Some(&b"uwsgi"[..]));
        q.ack(l).unwrap();
        assert!(q.lease(Duration::from_millis(10)).unwrap().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn make_due(name: &str) {
        let f = File::open(name).unwrap();
        set_times(f.as_raw_fd(), 1).unwrap();
    }
}
