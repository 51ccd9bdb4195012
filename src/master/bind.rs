//! Binding the listening sockets, once, in the master: every worker inherits the same sockets,
//! so connections waiting in the backlog survive any single worker's exit.

use super::MasterError;
use crate::config::{Config, ListenAddr};
use crate::sys::fd;
use crate::worker::Listener;
use std::os::fd::{AsRawFd, OwnedFd};

/// Bind every configured socket and log each as uWSGI does.
pub fn bind_all(config: &Config) -> Result<Vec<Listener>, MasterError> {
    let mut out = Vec::new();
    for (i, addr) in config.http_sockets.iter().enumerate() {
        let l = bind_one(addr, config.listen).map_err(|source| MasterError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let raw = l.fd.as_raw_fd();
        match addr {
            ListenAddr::Tcp(_) => crate::log!(
                "headrace http socket {i} bound to TCP address {}:{} fd {raw}",
                bracket(&l.server_name),
                l.server_port
            ),
            ListenAddr::Unix(p) => crate::log!(
                "headrace http socket {i} bound to UNIX address {} fd {raw}",
                p.display()
            ),
        }
        out.push(l);
    }
    Ok(out)
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn bind_one(addr: &ListenAddr, backlog: i32) -> std::io::Result<Listener> {
    match addr {
        ListenAddr::Tcp(sa) => {
            // std sets SO_REUSEADDR on Unix; the backlog is set again below.
            let l = std::net::TcpListener::bind(sa)?;
            let fd: OwnedFd = l.into();
            let raw = fd.as_raw_fd();
            fd::listen(raw, backlog)?;
            fd::set_nonblocking(raw)?;
            // Wake a worker only once the request's first bytes arrived (HTTP clients speak
            // first), saving a round trip through epoll per new connection.
            let _ = fd::setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1);
            let local = fd::local_addr(raw).unwrap_or(*sa);
            Ok(Listener {
                fd,
                server_name: local.ip().to_string(),
                server_port: local.port().to_string(),
                unix: false,
            })
        }
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                // A stale socket from an earlier run; a live server would still hold the path,
                // but binding over it is what uWSGI does too.
                std::fs::remove_file(path)?;
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            let fd: OwnedFd = l.into();
            let raw = fd.as_raw_fd();
            fd::listen(raw, backlog)?;
            fd::set_nonblocking(raw)?;
            Ok(Listener {
                fd,
                server_name: "localhost".to_owned(),
                server_port: String::new(),
                unix: true,
            })
        }
    }
}
