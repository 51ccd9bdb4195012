//! The log file behind `--logto` (or `--logger file:PATH`): rotation by size (`--log-maxsize`,
//! `--log-backupname`) and reopening after logrotate moves it (`--log-reopen`,
//! `--touch-logreopen`).
//!
//! uWSGI funnels every process's lines through the master (log-master) and rotates there.
//! headrace's processes write their own lines (one `write(2)` each, so lines never interleave);
//! instead each writer checks, before a line, that the path still names the file its stderr
//! holds (else it reopens the path, as after a rotation or a logrotate move), and after a line,
//! whether the file outgrew the limit. Rotation happens under an exclusive `flock` on the full
//! file, so one process renames it and the others, rechecking under the lock, only reopen. A
//! line written between another process's rename and its own reopen lands in the renamed file:
//! nothing is lost.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// A watched log file.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The path `--logto` names.
    pub path: PathBuf,
    /// `--log-maxsize`: rotate once the file is larger (0 = never).
    pub max_size: u64,
    /// `--log-backupname`: the rotated file's name (uWSGI: replaced at each rotation);
    /// without it, `PATH.UNIXTIME` (headrace adds `.N` rather than replace a file).
    pub backup: Option<PathBuf>,
}

/// Device and inode of what `path` names, and its size.
fn id(path: &Path) -> Option<(u64, u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.len()))
}

/// The file this process's stderr holds (its /proc link, which survives a rename).
const STDERR: &str = "/proc/self/fd/2";

impl Watched {
    /// Before a line: reopen the path if it no longer names our file.
    pub fn before_write(&self) {
        if self.moved() {
            self.reopen();
        }
    }

    /// After a line: rotate when the file outgrew `--log-maxsize`.
    pub fn after_write(&self) {
        if self.max_size == 0 {
            return;
        }
        if id(Path::new(STDERR)).is_some_and(|(_, _, len)| len > self.max_size) {
            self.rotate();
        }
    }

    fn moved(&self) -> bool {
        let ours = id(Path::new(STDERR)).map(|(d, i, _)| (d, i));
        let named = id(&self.path).map(|(d, i, _)| (d, i));
        ours.is_some() && ours != named
    }

    /// Open the path again (creating it, appending, never truncating: another process may
    /// have created it and written already) onto stdout and stderr, as `--logto` set them.
    fn reopen(&self) {
        let Ok(f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        else {
            return;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let _ = crate::sys::fd::dup2(fd, 1);
        let _ = crate::sys::fd::dup2(fd, 2);
    }

    fn rotate(&self) {
        // The lock is on the full file's inode: every process holding it conflicts here.
        let Ok(lock) = File::open(STDERR) else {
            return;
        };
        if crate::sys::fd::lock_exclusive(std::os::fd::AsRawFd::as_raw_fd(&lock)).is_err() {
            return;
        }
        if self.moved() {
            // Another process rotated while we waited.
            self.reopen();
            return;
        }
        let Some((_, _, size)) = id(Path::new(STDERR)) else {
            return;
        };
        if size <= self.max_size {
            return;
        }
        let name = self.backup.clone().unwrap_or_else(|| self.unique_name());
        // uWSGI's uwsgi_log_do_rotate writes this to the full file, dated, before the rename.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let note = format!(
            "{} - logsize: {size}, triggering rotation to {}...\n",
            crate::sys::time::ctime(now),
            name.display()
        );
        let _ = crate::sys::fd::write_all(2, note.as_bytes());
        if std::fs::rename(&self.path, &name).is_ok() {
            self.reopen();
        }
    }

    fn unique_name(&self) -> PathBuf {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = format!("{}.{secs}", self.path.display());
        let mut name = PathBuf::from(&base);
        let mut n = 1;
        while name.exists() && n < 10_000 {
            name = PathBuf::from(format!("{base}.{n}"));
            n += 1;
        }
        name
    }
}
