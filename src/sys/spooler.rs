//! The spooler's system calls: inotify (new spool files are noticed at once), open-file-
//! description locks (a task is leased by a lock its spooler holds while it runs), and setting
//! a spool file's modification time (uWSGI's `at`: a file whose mtime is in the future waits).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An inotify instance (nonblocking, close-on-exec).
pub struct Inotify {
    fd: OwnedFd,
}

/// One inotify event: the watch it came from and the name in that directory (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyEvent {
    /// The watch descriptor.
    pub wd: i32,
    /// The event mask.
    pub mask: u32,
    /// The name inside the watched directory.
    pub name: Vec<u8>,
}

impl Inotify {
    /// A new instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is ours alone.
        let fd = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: fresh descriptor nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watch `path` for `mask` events; returns the watch descriptor.
    pub fn add_watch(&self, path: &std::path::Path, mask: u32) -> io::Result<i32> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
        // SAFETY: a valid NUL-terminated path and our inotify fd.
        cvt(unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) })
    }

    /// The descriptor, to poll.
    #[must_use]
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Every event waiting (nonblocking; empty when none).
    #[must_use]
    pub fn read_events(&self) -> Vec<InotifyEvent> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: buf is a writable buffer of its length.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(r) else {
                return out;
            };
            if n == 0 {
                return out;
            }
            let head = std::mem::size_of::<libc::inotify_event>();
            let mut at = 0;
            while at + head <= n {
                let b = &buf[at..];
                let wd = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                let mask = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
                let len = u32::from_ne_bytes([b[12], b[13], b[14], b[15]]) as usize;
                let name = b.get(head..head + len).unwrap_or(&[]);
                let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                out.push(InotifyEvent {
                    wd,
                    mask,
                    name: name[..end].to_vec(),
                });
                at += head + len;
            }
        }
    }
}

/// Try to take an exclusive open-file-description lock on the whole of `fd`'s file, without
/// waiting. `Ok(false)`: another description holds a lock (another spooler runs the task, or
/// uWSGI is still writing the file: OFD locks conflict with uWSGI's `fcntl` locks). The lock
/// goes with the description: it is released when the last descriptor of it is closed, or when
/// the process dies.
pub fn try_lock(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock is plain data; zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::c_short::try_from(libc::F_WRLCK).unwrap_or(1);
    fl.l_whence = 0; // SEEK_SET
                     // SAFETY: fd is a descriptor number (EBADF otherwise); fl is valid for the call.
    match cvt(unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &raw mut fl) }) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Set `fd`'s file's access and modification times to `secs` (unix time).
pub fn set_times(fd: RawFd, secs: u64) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX),
        tv_nsec: 0,
    };
    let ts = [t, t];
    // SAFETY: ts is two valid timespecs; fd a descriptor number.
    cvt(unsafe { libc::futimens(fd, ts.as_ptr()) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    #[expect(
        clippy::many_single_char_names,
        reason = "three descriptions of one file"
    )]
    fn a_second_description_cannot_lock() {
        let dir = std::env::temp_dir().join(format!("headrace-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"x").unwrap();
        let a = std::fs::File::open(&p).unwrap();
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        assert!(try_lock(b.as_raw_fd()).unwrap());
        let c = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        assert!(!try_lock(c.as_raw_fd()).unwrap());
        drop(b);
        assert!(try_lock(c.as_raw_fd()).unwrap());
        drop(a);
        let ino = Inotify::new().unwrap();
        ino.add_watch(&dir, libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE)
            .unwrap();
        std::fs::write(dir.join("g"), b"y").unwrap();
        let ev = ino.read_events();
        assert!(ev.iter().any(|e| e.name == b"g"), "{ev:?}");
        set_times(c.as_raw_fd(), 2_000_000_000).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&m), 2_000_000_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
