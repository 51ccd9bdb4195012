//! The listening sockets, bound once in the master: every worker inherits the same sockets, so
//! connections waiting in the backlog survive any single worker's exit. Sockets can also come
//! from systemd (`LISTEN_FDS`) or from the master's previous image across a re-exec.

use super::MasterError;
use crate::config::{Config, ListenAddr, SocketKind};
use crate::sys::fd;
use crate::worker::Listener;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Env var naming the listening fds handed across a re-exec, in order.
pub const REEXEC_FDS: &str = "HEADRACE_FDS";

/// Where the listening sockets come from.
pub fn listeners(config: &Config) -> Result<Vec<Listener>, MasterError> {
    if let Ok(list) = std::env::var(REEXEC_FDS) {
        std::env::remove_var(REEXEC_FDS);
        let mut out: Vec<Listener> = Vec::new();
        for item in list.split(',') {
            let (raw, kind) = item.split_once(':').unwrap_or((item, "http"));
            let Ok(raw) = raw.parse::<RawFd>() else {
                continue;
            };
            // Never stdio, never one number twice: either would give a descriptor two owners.
            if raw <= 2 || out.iter().any(|l| l.fd.as_raw_fd() == raw) {
                continue;
            }
            #[expect(unsafe_code, reason = "adopting an inherited descriptor: see SAFETY")]
            // SAFETY: the previous image of the master listed this number in HEADRACE_FDS and
            // exec'd us with it open, so it was open before this image opened anything; the
            // variable was removed above and the checks above skip stdio and repeats, so this is
            // its one owner.
            let fd = unsafe { crate::sys::proc::adopt_fd(raw) }?;
            crate::sys::proc::close_on_exec(raw);
            out.push(describe(
                fd,
                kind_from_name(kind),
                "inherited across re-exec",
            ));
        }
        log_bound(&out);
        return Ok(out);
    }
    let mut passed = systemd_fds();
    let mut out = Vec::new();
    for spec in &config.sockets {
        let addr = &spec.addr;
        // A socket systemd passed for this address is used instead of binding it again.
        let same = passed.iter().position(|fd| match addr {
            ListenAddr::Tcp(a) => fd::local_addr(fd.as_raw_fd()) == Some(*a),
            ListenAddr::Unix(p) => fd::unix_path(fd.as_raw_fd()).as_deref() == Some(p.as_path()),
        });
        let l = match same {
            Some(i) => describe(passed.remove(i), spec.kind, "from systemd"),
            None => bind_one(addr, spec.kind, config).map_err(|source| MasterError::Bind {
                addr: addr.to_string(),
                source,
            })?,
        };
        out.push(l);
    }
    for fd in passed {
        out.push(describe(fd, SocketKind::Http, "from systemd"));
    }
    log_bound(&out);
    Ok(out)
}

fn log_bound(listeners: &[Listener]) {
    for (i, l) in listeners.iter().enumerate() {
        crate::log!(
            "headrace {} socket {i} bound to {} fd {}",
            kind_name(l.kind),
            l.desc,
            l.fd.as_raw_fd()
        );
    }
}

/// The word for a socket kind in logs and in the re-exec hand-over.
#[must_use]
pub fn kind_name(kind: SocketKind) -> &'static str {
    match kind {
        SocketKind::Http => "http",
        SocketKind::Uwsgi => "uwsgi",
        SocketKind::Router => "router",
    }
}

fn kind_from_name(name: &str) -> SocketKind {
    match name {
        "uwsgi" => SocketKind::Uwsgi,
        "router" => SocketKind::Router,
        _ => SocketKind::Http,
    }
}

/// Sockets passed by systemd socket activation: fds 3.. when LISTEN_PID is us.
fn systemd_fds() -> Vec<OwnedFd> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        .is_some_and(|p| p == crate::sys::proc::getpid());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    // sd_listen_fds(3): unset them so that the app's children do not take them as theirs.
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    if !pid_ok {
        return Vec::new();
    }
    (3..3 + n)
        .filter_map(|raw| {
            #[expect(unsafe_code, reason = "adopting an inherited descriptor: see SAFETY")]
            // SAFETY: sd_listen_fds(3): systemd passed fds 3..3+LISTEN_FDS open to this pid
            // (LISTEN_PID checked above), before this process opened anything; the variables are
            // removed above, so each number is adopted once, here.
            let fd = unsafe { crate::sys::proc::adopt_fd(raw) }.ok()?;
            crate::sys::proc::close_on_exec(raw);
            let _ = fd::set_nonblocking(raw);
            Some(fd)
        })
        .collect()
}

fn bracket(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!("{}:{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

/// A Listener for an already-listening fd.
fn describe(fd: OwnedFd, kind: SocketKind, origin: &str) -> Listener {
    let raw = fd.as_raw_fd();
    if let Some(a) = fd::local_addr(raw) {
        return Listener {
            fd,
            server_name: a.ip().to_string(),
            server_port: a.port().to_string(),
            unix_path: None,
            desc: format!("TCP address {} ({origin})", bracket(&a)),
            kind,
        };
    }
    let path = fd::unix_path(raw);
    Listener {
        fd,
        server_name: "localhost".to_owned(),
        server_port: String::new(),
        desc: format!(
            "UNIX address {} ({origin})",
            path.as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        unix_path: path,
        kind,
    }
}

fn bind_one(addr: &ListenAddr, kind: SocketKind, config: &Config) -> std::io::Result<Listener> {
    let backlog = config.listen;
    match addr {
        ListenAddr::Tcp(sa) => {
            // std sets SO_REUSEADDR on Unix; the backlog is set again below.
            let l = std::net::TcpListener::bind(sa)?;
            let fd: OwnedFd = l.into();
            let raw = fd.as_raw_fd();
            fd::listen(raw, backlog)?;
            fd::set_nonblocking(raw)?;
            // Wake a worker only once the request's first bytes arrived (HTTP and uwsgi clients
            // speak first), saving a round trip through epoll per new connection.
            let _ = fd::setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1);
            let local = fd::local_addr(raw).unwrap_or(*sa);
            Ok(Listener {
                fd,
                server_name: local.ip().to_string(),
                server_port: local.port().to_string(),
                unix_path: None,
                desc: format!("TCP address {}", bracket(&local)),
                kind,
            })
        }
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                // A stale socket from an earlier run, removed as uWSGI does.
                std::fs::remove_file(path)?;
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            let fd: OwnedFd = l.into();
            let raw = fd.as_raw_fd();
            fd::listen(raw, backlog)?;
            fd::set_nonblocking(raw)?;
            if let Some(mode) = config.chmod_socket {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            if let Some(owner) = &config.chown_socket {
                crate::sys::proc::chown(path, owner)?;
            }
            Ok(Listener {
                fd,
                server_name: "localhost".to_owned(),
                server_port: String::new(),
                unix_path: Some(path.clone()),
                desc: format!("UNIX address {}", path.display()),
                kind,
            })
        }
    }
}
