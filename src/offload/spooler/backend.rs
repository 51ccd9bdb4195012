//! A spooled task and the queue it lives in.
//!
//! A task is uWSGI's spool packet: a 4-byte uwsgi header (modifier1 17, the size of the
//! variables as a little-endian u16, modifier2 0), the variables (each key and value preceded by
//! its little-endian u16 length), then the body, if any, up to the end. The same bytes are a
//! spool file on disk and a message on Redis, so a task moves between the two unchanged.

use std::time::Duration;

/// uWSGI's modifier1 for spool packets.
pub const SPOOL_MODIFIER1: u8 = 17;

/// Why a task or a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or socket operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Bytes that are not a spool packet, or a task too big for one.
    #[error("bad task: {0}")]
    Format(String),
    /// The Redis server answered with an error, or not at all.
    #[error("redis: {0}")]
    Redis(String),
}

/// One task: its variables in order (the `body` variable is kept apart, as uWSGI does) and
/// its body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    /// Keys and values, as given (bytes: Python 3 passes bytes or str, stored as UTF-8).
    pub vars: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body (the `body` argument of `uwsgi.spool`), stored after the variables.
    pub body: Vec<u8>,
}

impl Task {
    /// The value of `key`, if present.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The `priority` variable, as uWSGI reads it (a number; anything else: none).
    #[must_use]
    pub fn priority(&self) -> Option<i64> {
        std::str::from_utf8(self.get(b"priority")?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The `at` variable: unix time before which the task must not run (a fraction is cut
    /// off, as uWSGI does: `at` may be a float).
    #[must_use]
    pub fn at(&self) -> Option<u64> {
        let s = std::str::from_utf8(self.get(b"at")?).ok()?.trim();
        s.split('.').next()?.parse().ok()
    }

    /// The spool packet.
    pub fn encode(&self) -> Result<Vec<u8>, SpoolError> {
        let mut vars = Vec::new();
        for (k, v) in &self.vars {
            for part in [k, v] {
                let len = u16::try_from(part.len()).map_err(|_| {
                    SpoolError::Format(format!(
                        "a key or value of {} bytes (at most 65535)",
                        part.len()
                    ))
                })?;
                vars.extend_from_slice(&len.to_le_bytes());
                vars.extend_from_slice(part);
            }
        }
        let size = u16::try_from(vars.len()).map_err(|_| {
            SpoolError::Format(format!(
                "{} bytes of variables (at most 65535; pass big data as body)",
                vars.len()
            ))
        })?;
        let mut out = Vec::with_capacity(4 + vars.len() + self.body.len());
        out.push(SPOOL_MODIFIER1);
        out.extend_from_slice(&size.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&vars);
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// A task from a spool packet.
    pub fn decode(b: &[u8]) -> Result<Self, SpoolError> {
        let bad = |why: &str| SpoolError::Format(why.to_owned());
        if b.len() < 4 {
            return Err(bad("shorter than a uwsgi header"));
        }
        let size = usize::from(u16::from_le_bytes([b[1], b[2]]));
        let vars = b
            .get(4..4 + size)
            .ok_or_else(|| bad("the header announces more variables than there are"))?;
        let mut task = Task {
            vars: Vec::new(),
            body: b[4 + size..].to_vec(),
        };
        let mut rest = vars;
        let take = |rest: &mut &[u8]| -> Result<Vec<u8>, SpoolError> {
            if rest.len() < 2 {
                return Err(bad("a variable is cut short"));
            }
            let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let v = rest
                .get(2..2 + n)
                .ok_or_else(|| bad("a variable is cut short"))?
                .to_vec();
            *rest = &rest[2 + n..];
            Ok(v)
        };
        while !rest.is_empty() {
            let k = take(&mut rest)?;
            let v = take(&mut rest)?;
            task.vars.push((k, v));
        }
        Ok(task)
    }
}

/// A task taken by a spooler process: no other process runs it until it is acknowledged,
/// retried or buried, or until this process dies (then it is run again: at least once).
#[derive(Debug)]
pub struct Lease {
    /// The task's name: the spool file's path on disk, the message id on Redis. `uwsgi.spool`
    /// returns it, and the spooler function sees it as `spooler_task_name`.
    pub name: String,
    /// The task.
    pub task: Task,
    /// How many times it failed before (0 the first time it runs).
    pub attempts: u32,
}

/// A queue of tasks. One value per process: enqueuing happens in any process (workers, mules,
/// spoolers), leasing in the spooler processes.
pub trait Backend: Send {
    /// Store `task` durably (it survives a crash of every process, and of the machine for disk)
    /// and return its name.
    fn enqueue(&mut self, task: &Task) -> Result<String, SpoolError>;
    /// The next task whose time has come (`at`), highest priority first (a lower `priority`
    /// number runs first, as uWSGI's sorted priority directories do; tasks without one come
    /// after those with one), then in the order they were spooled; waits up to `wait` for one.
    fn lease(&mut self, wait: Duration) -> Result<Option<Lease>, SpoolError>;
    /// The task is done (`SPOOL_OK`, `SPOOL_IGNORE`): remove it.
    fn ack(&mut self, lease: Lease) -> Result<(), SpoolError>;
    /// The task failed (`SPOOL_RETRY` or an exception): run it again, not before unix time
    /// `not_before`; its attempt count goes up by one.
    fn retry(&mut self, lease: Lease, not_before: u64) -> Result<(), SpoolError>;
    /// Run the task again, not before unix time `not_before`, without counting an attempt
    /// (`@spoolforever`'s `SPOOL_RETRY`, which asks to be run again rather than failing). A
    /// backend that keeps no such distinction may count it as a retry.
    fn release(&mut self, lease: Lease, not_before: u64) -> Result<(), SpoolError> {
        self.retry(lease, not_before)
    }
    /// The task failed for the last time: move it to the dead letters with `why` (the
    /// traceback), where an operator can read it and re-queue it by hand.
    fn bury(&mut self, lease: Lease, why: &str) -> Result<(), SpoolError>;
    /// Names of the tasks waiting (`uwsgi.spooler_jobs()`).
    fn pending(&mut self) -> Result<Vec<String>, SpoolError>;
    /// Called by a spooler process at least once a second while it runs a task or waits, so a
    /// backend can tell a live lease from one whose process died.
    fn heartbeat(&mut self) -> Result<(), SpoolError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip() {
        let t = Task {
            vars: vec![
                (b"name".to_vec(), b"value".to_vec()),
                (b"priority".to_vec(), b"3".to_vec()),
                (b"at".to_vec(), b"1700000000".to_vec()),
                (b"".to_vec(), b"".to_vec()),
            ],
            body: b"\x00body bytes".to_vec(),
        };
        let b = t.encode().unwrap();
        assert_eq!(&b[..4], &[17, 46, 0, 0]);
        assert_eq!(Task::decode(&b).unwrap(), t);
        assert_eq!(t.priority(), Some(3));
        assert_eq!(t.at(), Some(1_700_000_000));
        let float_at = Task {
            vars: vec![(b"at".to_vec(), b"1700000000.75".to_vec())],
            body: Vec::new(),
        };
        assert_eq!(float_at.at(), Some(1_700_000_000));
    }

    #[test]
    fn bad_packets_are_refused() {
        for b in [
            &b""[..],
            b"\x11\x05\x00\x00ab",
            b"\x11\x03\x00\x00\x05\x00a",
            b"\x11\x02\x00\x00\x00\x00",
        ] {
            assert!(Task::decode(b).is_err(), "{b:?}");
        }
        let big = Task {
            vars: vec![(b"k".to_vec(), vec![b'x'; 70_000])],
            body: Vec::new(),
        };
        assert!(big.encode().is_err());
    }
}
