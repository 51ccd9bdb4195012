//! The control channel: any process of the server (worker, mule, spooler, and the master
//! itself) sends the master a short message — raise a uWSGI signal, reload, stop — on a
//! datagram socket pair the master opens before the app is loaded and every child inherits.
//! One datagram is one message, text, so a message is never split or merged.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

static RX: AtomicI32 = AtomicI32::new(-1);
static TX: AtomicI32 = AtomicI32::new(-1);

/// One message to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `uwsgi.reload()`: a graceful reload, as SIGHUP.
    Reload,
    /// A chain reload, as `--touch-chain-reload`.
    ChainReload,
    /// `uwsgi.stop()`: stop the server, as SIGINT.
    Stop,
    /// `uwsgi.signal(N)`: raise uWSGI signal N; the master delivers it to its target.
    Signal(u8),
    /// `uwsgi.add_timer` and friends after fork: a signal source for the master to run, in
    /// `crate::offload::signals::source::Source`'s text form.
    SignalSource(String),
}

impl Control {
    /// The message as sent.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Reload => b"reload".to_vec(),
            Self::ChainReload => b"chain-reload".to_vec(),
            Self::Stop => b"stop".to_vec(),
            Self::Signal(n) => format!("signal {n}").into_bytes(),
            Self::SignalSource(s) => format!("signal-source {s}").into_bytes(),
        }
    }

    /// A message as received (`None`: not one).
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(b).ok()?;
        let (verb, rest) = s.split_once(' ').unwrap_or((s, ""));
        match (verb, rest) {
            ("reload", "") => Some(Self::Reload),
            ("chain-reload", "") => Some(Self::ChainReload),
            ("stop", "") => Some(Self::Stop),
            ("signal", n) => n.parse().ok().map(Self::Signal),
            ("signal-source", s) if !s.is_empty() => Some(Self::SignalSource(s.to_owned())),
            _ => None,
        }
    }
}

/// Open the channel (the master, once, before the app is loaded). The ends stay open for the
/// life of the process (and its children); they close on exec.
pub fn open() -> io::Result<()> {
    let (rx, tx) = crate::sys::fd::socketpair(libc::SOCK_DGRAM)?;
    crate::sys::fd::set_nonblocking(rx.as_raw_fd())?;
    RX.store(rx.into_raw_fd(), Ordering::Relaxed);
    TX.store(tx.into_raw_fd(), Ordering::Relaxed);
    Ok(())
}

/// The master's end, to poll; -1 before [`open`].
#[must_use]
pub fn rx_fd() -> RawFd {
    RX.load(Ordering::Relaxed)
}

/// Send `msg` to the master. Blocks only while the master's queue is full.
pub fn send(msg: &Control) -> io::Result<()> {
    let fd = TX.load(Ordering::Relaxed);
    if fd < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "not inside a headrace server",
        ));
    }
    crate::sys::fd::send_record(fd, &msg.encode()).map(drop)
}

/// Every message waiting for the master (nonblocking).
#[must_use]
pub fn receive() -> Vec<Control> {
    let fd = rx_fd();
    let mut out = Vec::new();
    if fd < 0 {
        return out;
    }
    let mut buf = [0u8; 4096];
    loop {
        match crate::sys::fd::read(fd, &mut buf) {
            Ok(n) => {
                if let Some(m) = Control::decode(&buf[..n]) {
                    out.push(m);
                } else {
                    crate::log!(
                        "headrace: the master got a control message it does not know: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                }
            }
            Err(_) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Control::Reload,
            Control::ChainReload,
            Control::Stop,
            Control::Signal(0),
            Control::Signal(255),
            Control::SignalSource("timer 3 1000".to_owned()),
        ] {
            assert_eq!(Control::decode(&m.encode()), Some(m));
        }
        assert_eq!(Control::decode(b"signal 256"), None);
        assert_eq!(Control::decode(b"reload now"), None);
        assert_eq!(Control::decode(b"\xff"), None);
    }
}
