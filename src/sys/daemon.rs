//! What attached daemons need from the OS: the child's way from fork to `/bin/sh -c COMMAND`
//! (uWSGI's `daemon_spawn`), liveness of a pid and of a process group read from /proc, signals
//! to a group, and user and group names.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// How a daemon's child gets from fork to exec.
pub struct DaemonExec<'a> {
    /// Run as `/bin/sh -c COMMAND`.
    pub command: &'a str,
    /// Enter this directory first.
    pub chdir: Option<&'a Path>,
    /// Switch to this group (supplementary groups dropped when we may).
    pub gid: Option<u32>,
    /// Switch to this user.
    pub uid: Option<u32>,
    /// Fork once more (the first child exits at once) and write the grandchild's pid here
    /// (`--smart-attach-daemon2`).
    pub daemonize_pidfile: Option<&'a Path>,
    /// Keep the server's stdin instead of /dev/null.
    pub keep_stdin: bool,
    /// Die with the master (PR_SET_PDEATHSIG): plain daemons, as in uWSGI.
    pub die_with_parent: bool,
}

fn fail(what: &str, command: &str, e: &io::Error) -> ! {
    crate::log!("[headrace-daemons] cannot spawn \"{command}\": {what}: {e}");
    super::proc::exit_now(1)
}

/// The body of a daemon's child, right after fork: leave the master's signal state, its
/// descriptors and its session, then exec the command. Never returns (exit code 1 when a step
/// fails, after a log line).
///
/// Called only in a freshly forked child of the single-threaded master: it never returns to
/// the master's code and ends in exec or `_exit`, so closing descriptors owned by values of the
/// master's image is sound (no destructor runs after this).
pub fn exec_daemon(plan: &DaemonExec<'_>) -> ! {
    let cmd = plan.command;
    let Ok(command_c) = CString::new(cmd) else {
        fail(
            "the command",
            cmd,
            &io::Error::from(io::ErrorKind::InvalidInput),
        )
    };
    // The master blocks its signals (they go to its signalfd) and Python ignores SIGPIPE: both
    // survive exec, and a daemon with SIGTERM blocked could not be stopped.
    // SAFETY: the only thread of a fresh child resets its own signal state; every signal
    // number from 1 to 31 is valid (SIGKILL and SIGSTOP are refused harmlessly).
    unsafe {
        for sig in 1..32 {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
    }
    // uWSGI closes every descriptor but stdio: a daemon must not hold the listening sockets,
    // the signalfd or the scoreboard (a dead master's port would stay bound).
    // SAFETY: see the function's contract: nothing of the master's image runs after this.
    if let Err(e) = unsafe { super::proc::close_fds_except(&[]) } {
        fail("closing descriptors", cmd, &e);
    }
    if let Some(dir) = plan.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            fail(&format!("chdir {}", dir.display()), cmd, &e);
        }
    }
    if let Some(gid) = plan.gid {
        // SAFETY: credential changes of this process only. setgroups needs CAP_SETGID; without
        // it the supplementary groups stay (as uWSGI, which never drops them for daemons).
        unsafe {
            if libc::geteuid() == 0 {
                libc::setgroups(1, &raw const gid);
            }
            if libc::setgid(gid) != 0 {
                fail(&format!("setgid {gid}"), cmd, &io::Error::last_os_error());
            }
        }
    }
    if let Some(uid) = plan.uid {
        // SAFETY: credential change of this process only.
        if unsafe { libc::setuid(uid) } != 0 {
            fail(&format!("setuid {uid}"), cmd, &io::Error::last_os_error());
        }
    }
    if let Some(pidfile) = plan.daemonize_pidfile {
        // SAFETY: fork in a single-threaded child that runs no Python; the first child exits
        // at once, the grandchild goes on to exec.
        match unsafe { libc::fork() } {
            -1 => fail("fork", cmd, &io::Error::last_os_error()),
            0 => {}
            _ => super::proc::exit_now(0),
        }
        let pid = super::proc::getpid();
        if let Err(e) = std::fs::write(pidfile, format!("{pid}\n")) {
            fail(&format!("writing {}", pidfile.display()), cmd, &e);
        }
    }
    if !plan.keep_stdin {
        match std::fs::File::open("/dev/null") {
            Ok(null) => {
                if let Err(e) = super::fd::dup2(null.as_raw_fd(), 0) {
                    fail("stdin", cmd, &e);
                }
            }
            Err(e) => fail("/dev/null", cmd, &e),
        }
    }
    // Its own session and process group: the master signals the whole group (a shell and what
    // it started), and the terminal's ^C does not reach it.
    // SAFETY: plain syscalls on this process.
    unsafe {
        libc::setsid();
        if plan.die_with_parent {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
    }
    let sh = c"/bin/sh";
    let argv = [
        sh.as_ptr(),
        c"-c".as_ptr(),
        command_c.as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: every pointer is a live NUL-terminated string and the array ends with NULL;
    // execv returns only on failure.
    unsafe { libc::execv(sh.as_ptr(), argv.as_ptr()) };
    fail("exec /bin/sh", cmd, &io::Error::last_os_error())
}

/// (state, process group) of `pid` from /proc/PID/stat.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// `pid` exists and is not a zombie (uWSGI's `kill(pid, 0)`, which a zombie would pass).
#[must_use]
pub fn alive(pid: i32) -> bool {
    pid > 0 && stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Some process of group `pgid` is alive (not a zombie).
#[must_use]
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| stat(pid).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z'))
}

/// Send `sig` to process group `pgid` (a daemon made itself its leader); when there is no such
/// group (a daemon that is not a group leader), to the process `pgid`. Returns whether the
/// signal went anywhere.
#[allow(
    clippy::must_use_candidate,
    reason = "most callers signal and go on; the result is for those that care"
)]
pub fn signal_group(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill with a negative pid signals that process group only; pgid > 1 rules out
    // "every process" (-1) and our own group (0).
    if unsafe { libc::kill(-pgid, sig) } == 0 {
        return true;
    }
    // SAFETY: as above, a positive pid signals that one process.
    unsafe { libc::kill(pgid, sig) == 0 }
}

/// When `pid` started (from /proc: its start in clock ticks after boot, and the boot time;
/// exact to about a second).
#[must_use]
pub fn started_at(pid: i32) -> Option<std::time::SystemTime> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 of the stat line; the fields after the command's ")" start at field 3.
    let ticks: u64 = text
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf only reads a system constant.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|h| *h > 0)?;
    let since_boot = std::time::Duration::from_millis(ticks * 1000 / hz);
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(boot) + since_boot)
}

/// A user (`group` false) or group name, or a number, as an id.
pub fn lookup_id(name: &str, group: bool) -> io::Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a user or group name"))?;
    // SAFETY: getpwnam/getgrnam return a pointer to static storage or NULL, read at once; the
    // configuration is read before the master starts any thread.
    let id = unsafe {
        if group {
            let g = libc::getgrnam(cname.as_ptr());
            (!g.is_null()).then(|| (*g).gr_gid)
        } else {
            let p = libc::getpwnam(cname.as_ptr());
            (!p.is_null()).then(|| (*p).pw_uid)
        }
    };
    id.ok_or_else(|| {
        let what = if group { "group" } else { "user" };
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such {what} \"{name}\""),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_from_proc() {
        let me = super::super::proc::getpid();
        assert!(alive(me));
        assert!(!alive(0) && !alive(-3));
        let (_, pgrp) = stat(me).unwrap();
        assert!(group_alive(pgrp));
        assert!(!group_alive(1) && !group_alive(0));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // A zombie until waited for: not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while stat(pid).is_some_and(|(s, _)| s != 'Z') && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn start_time_of_this_process() {
        let now = std::time::SystemTime::now();
        let me = started_at(super::super::proc::getpid()).unwrap();
        // /proc's boot time is whole seconds.
        assert!(me <= now + std::time::Duration::from_secs(2));
        assert!(me + std::time::Duration::from_secs(3600) > now);
        assert!(started_at(-1).is_none());
    }

    #[test]
    fn ids() {
        assert_eq!(lookup_id("0", false).unwrap(), 0);
        assert_eq!(lookup_id("root", false).unwrap(), 0);
        assert_eq!(lookup_id("root", true).unwrap(), 0);
        assert!(lookup_id("no-such-user-here", false).is_err());
    }
}
