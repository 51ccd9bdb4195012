//! sd_notify(3): tell systemd (Type=notify units) when we are ready, reloading or stopping.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The notification socket from `NOTIFY_SOCKET`, taken once at startup (and removed from the
/// environment, so that the app's child processes do not notify in our name).
pub struct Notifier {
    addr: Option<SocketAddr>,
    raw: Option<String>,
}

impl Notifier {
    /// Read and unset `NOTIFY_SOCKET`.
    #[must_use]
    pub fn from_env() -> Self {
        let path = std::env::var("NOTIFY_SOCKET").ok();
        std::env::remove_var("NOTIFY_SOCKET");
        let addr = path.as_ref().and_then(|p| match p.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok(),
            None => SocketAddr::from_pathname(p).ok(),
        });
        Self { addr, raw: path }
    }

    /// Put `NOTIFY_SOCKET` back for the next image of the master (re-exec).
    pub fn restore_env(&self) {
        if let Some(p) = &self.raw {
            std::env::set_var("NOTIFY_SOCKET", p);
        }
    }

    /// Send one notification (`READY=1\nSTATUS=...`); failures are logged once, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(addr) = &self.addr else { return };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), addr));
        if let Err(e) = sent {
            crate::log!("headrace: sd_notify failed: {e}");
        }
    }
}
