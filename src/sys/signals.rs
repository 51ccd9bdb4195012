//! What uWSGI signals, timers and cron need from the system: the shared signal table's types
//! as `Shareable`, local time broken down for cron, an inotify watch for file monitors, and
//! the shell a cron command runs in (uWSGI's `uwsgi_run_command`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

// SAFETY: atomics only (state, registering worker, target bytes); all-zero is a free entry.
unsafe impl super::shm::Shareable for crate::offload::signals::table::Entry {}
// SAFETY: atomics only (counters); all-zero is "nothing added yet".
unsafe impl super::shm::Shareable for crate::offload::signals::table::Header {}

/// A moment in local time as cron sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronTime {
    /// 0-59.
    pub minute: i32,
    /// 0-23.
    pub hour: i32,
    /// Day of the month, 1-31.
    pub day: i32,
    /// 1-12 (uWSGI's "fix month": `tm_mon + 1`).
    pub month: i32,
    /// Day of the week, 0 (Sunday) to 6.
    pub weekday: i32,
}

/// Unix time `secs` broken down in local time (`None` if libc cannot).
#[must_use]
pub fn local_cron_time(secs: i64) -> Option<CronTime> {
    // SAFETY: tm is plain data.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs;
    // SAFETY: both pointers are valid; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&raw const t, &raw mut tm) }.is_null() {
        return None;
    }
    Some(CronTime {
        minute: tm.tm_min,
        hour: tm.tm_hour,
        day: tm.tm_mday,
        month: tm.tm_mon + 1,
        weekday: tm.tm_wday,
    })
}

/// An inotify instance (nonblocking, close-on-exec) for `uwsgi.add_file_monitor`.
pub struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    /// A new instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd, if any, is ours alone.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// The fd, to poll.
    #[must_use]
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Watch `path` for what uWSGI's file monitor watches (attributes, creation, deletion,
    /// modification, moves of the file itself or of entries of a directory); the watch
    /// descriptor.
    pub fn watch(&self, path: &std::path::Path) -> io::Result<i32> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
        let mask = libc::IN_ATTRIB
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_DELETE_SELF
            | libc::IN_MODIFY
            | libc::IN_MOVE_SELF
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO;
        // SAFETY: a valid fd and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// The watch descriptors with events waiting, once each, in order (nonblocking: empty when
    /// there are none).
    #[must_use]
    pub fn ready(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let head = std::mem::size_of::<libc::inotify_event>();
        loop {
            let Ok(n) = super::fd::read(self.fd.as_raw_fd(), &mut buf) else {
                return out;
            };
            if n == 0 {
                return out;
            }
            let mut at = 0;
            while at + head <= n {
                let wd = i32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
                let len_at = at + head - 4;
                let len = u32::from_ne_bytes([
                    buf[len_at],
                    buf[len_at + 1],
                    buf[len_at + 2],
                    buf[len_at + 3],
                ]);
                if !out.contains(&wd) {
                    out.push(wd);
                }
                at += head + usize::try_from(len).unwrap_or(n);
            }
        }
    }
}

/// Run `command` with `/bin/sh -c` in a new session, as uWSGI runs a cron command: stdin from
/// /dev/null, stdout and stderr the server's log, no other descriptor of this process (they are
/// marked close-on-exec in the child). The pid is the new session's (and process group's) id,
/// so [`kill_group`] reaches whatever the command started. The caller reaps it.
pub fn spawn_shell(command: &str) -> io::Result<i32> {
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null());
    // SAFETY: between fork and exec the child calls only setsid, close_range/fcntl and, as a
    // fallback, reads /proc/self/fd. The master that forks here runs a single thread (checked
    // before every fork it makes), so no lock can be held by a thread that does not exist in
    // the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            cloexec_from(3);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))
}

/// Mark every descriptor from `first` up close-on-exec (close_range with CLOSE_RANGE_CLOEXEC,
/// Linux 5.11, else each entry of /proc/self/fd).
fn cloexec_from(first: RawFd) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOEXEC closes nothing; it only sets a flag.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first.cast_unsigned(),
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds.into_iter().filter(|&fd| fd >= first) {
            // SAFETY: fcntl(F_SETFD) only changes a flag; EBADF is harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Send `sig` to process group `pgid` (a cron command and its children). Errors (gone) are
/// ignored.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill with a negative pid signals exactly that process group.
        unsafe { libc::kill(-pgid, sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inotify_reports_a_touched_file_once() {
        let dir = std::env::temp_dir().join(format!("hr-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("watched");
        std::fs::write(&f, b"a").unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino.watch(&f).unwrap();
        assert!(ino.ready().is_empty());
        std::fs::write(&f, b"b").unwrap();
        std::fs::write(&f, b"c").unwrap();
        assert_eq!(ino.ready(), vec![wd]);
        assert!(ino.ready().is_empty());
        assert!(ino.watch(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn local_time_is_in_range() {
        let t = local_cron_time(1_700_000_000).unwrap();
        assert!((0..60).contains(&t.minute));
        assert!((1..=12).contains(&t.month));
        assert!((0..7).contains(&t.weekday));
    }
}
