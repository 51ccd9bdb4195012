//! The `--spooler redis://...` address, and the names of the Redis keys of one queue.

use std::fmt;
use std::time::Duration;

/// The Redis port when the address names none.
pub const DEFAULT_PORT: u16 = 6379;

/// The queue when the address names none.
pub const DEFAULT_QUEUE: &str = "spooler";

/// A lease whose spooler sent no heartbeat for this long goes back to the queue (Dramatiq
/// waits 60 s; a spooler beats at least once a second, so 30 s leaves room for a busy host).
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest queue name: it is part of every key.
const MAX_QUEUE_LEN: usize = 100;

/// A parsed `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?queue=NAME&heartbeat_timeout=SECS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address (an IPv6 address without its brackets); 127.0.0.1 when empty.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database number (`SELECT`).
    pub db: u32,
    /// User and password, still percent-encoded as written (the client decodes them).
    pub userinfo: Option<String>,
    /// Queue name: the keys are `headrace:spooler:{NAME}:...`.
    pub queue: String,
    /// See [`DEFAULT_HEARTBEAT_TIMEOUT`].
    pub heartbeat_timeout: Duration,
}

impl RedisUrl {
    /// Parse `url`; `Err(reason)` names what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some(("redis", rest)) => rest,
            Some(("rediss", _)) => {
                return Err("TLS (rediss://) is not supported: reach Redis over a private network or a TLS tunnel".into())
            }
            Some((scheme, _)) => return Err(format!("unknown scheme \"{scheme}\" (expected redis://HOST:PORT/DB?queue=NAME)")),
            None => return Err("expected a directory or redis://HOST:PORT/DB?queue=NAME".into()),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        if rest.contains('#') || query.is_some_and(|q| q.contains('#')) {
            return Err("a fragment (#...) has no meaning here".into());
        }
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        let db = match path.trim_end_matches('/') {
            "" => 0,
            d if d.bytes().all(|b| b.is_ascii_digit()) => d
                .parse()
                .map_err(|_| format!("database number {d} is too big"))?,
            d => {
                return Err(format!(
                    "bad database \"{d}\" (expected a number, as in redis://HOST:PORT/0)"
                ))
            }
        };
        let mut parsed = RedisUrl {
            host,
            port,
            db,
            userinfo,
            queue: DEFAULT_QUEUE.to_owned(),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "queue" => {
                    check_queue(v)?;
                    v.clone_into(&mut parsed.queue);
                }
                "heartbeat_timeout" => {
                    let secs: u64 = v.parse().ok().filter(|s| (1..=86_400).contains(s)).ok_or_else(|| {
                        format!("bad heartbeat_timeout \"{v}\" (expected whole seconds, 1 to 86400)")
                    })?;
                    parsed.heartbeat_timeout = Duration::from_secs(secs);
                }
                _ => {
                    return Err(format!(
                        "unknown parameter \"{k}\" (known: queue, heartbeat_timeout)"
                    ))
                }
            }
        }
        Ok(parsed)
    }

    /// The address for the Redis client: the same server, database and credentials.
    #[must_use]
    pub fn client_url(&self) -> String {
        let auth = self
            .userinfo
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("redis://{auth}{host}:{}/{}", self.port, self.db)
    }

    /// The keys of this queue.
    #[must_use]
    pub fn keys(&self) -> Keys {
        Keys::new(&self.queue)
    }
}

/// For logs: the address without the password.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "redis://{host}:{}/{}?queue={}",
            self.port, self.db, self.queue
        )
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| {
            format!("bad host \"{hostport}\" (an IPv6 address needs its closing ])")
        })?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("bad host \"{hostport}\""))?,
                ),
            ),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.contains(|c: char| c.is_whitespace() || "/?#@[]".contains(c)) {
        return Err(format!("bad host \"{host}\""));
    }
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("bad port \"{p}\" (expected 1 to 65535)"))?,
    };
    Ok((host.to_owned(), port))
}

fn check_queue(q: &str) -> Result<(), String> {
    let ok = !q.is_empty()
        && q.len() <= MAX_QUEUE_LEN
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad queue name \"{q}\" (1 to {MAX_QUEUE_LEN} letters, digits, '_', '.', '-')"
        ))
    }
}

/// The Redis keys of one queue, all under `headrace:spooler:{NAME}:` (the braces are a Redis
/// Cluster hash tag: every key of a queue lives on one node, so one script can touch them all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Sorted set of the ids ready to run, scored by priority (a lower number first; `+inf`
    /// without one). Equal scores sort by member, and ids are zero-padded counters, so tasks
    /// of one priority run in the order they were spooled.
    pub ready: String,
    /// Sorted set of the ids waiting for their time (`at`, or a retry's backoff), scored by
    /// unix time.
    pub delayed: String,
    /// Hash id -> spool packet (the bytes of a spool file).
    pub tasks: String,
    /// Hash id -> how many times the task failed.
    pub attempts: String,
    /// Hash id -> its priority score in `ready`.
    pub scores: String,
    /// Hash id -> the consumer (spooler process) running it.
    pub leased: String,
    /// Sorted set consumer -> the server's time (ms) of its last heartbeat.
    pub heartbeats: String,
    /// List of wake-up tokens: pushed by every enqueue, popped (BLPOP) by idle spoolers.
    pub wake: String,
    /// Counter of the ids.
    pub seq: String,
    /// List of the ids of dead-lettered tasks, oldest first (the packets stay in `tasks`).
    pub dead: String,
    /// Hash id -> why it was buried (the last traceback).
    pub dead_why: String,
    /// Hash enqueue token -> the id it created, for a minute: an enqueue tried again after its
    /// reply was lost (Redis died, the connection broke) finds its task instead of adding a
    /// second copy.
    pub enqueued: String,
    /// Sorted set enqueue token -> the server's time (s) it was made, to forget old tokens.
    pub enqueued_at: String,
}

impl Keys {
    fn new(queue: &str) -> Self {
        let k = |name: &str| format!("headrace:spooler:{{{queue}}}:{name}");
        Keys {
            ready: k("ready"),
            delayed: k("delayed"),
            tasks: k("tasks"),
            attempts: k("attempts"),
            scores: k("scores"),
            leased: k("leased"),
            heartbeats: k("heartbeats"),
            wake: k("wake"),
            seq: k("seq"),
            dead: k("dead"),
            dead_why: k("dead_why"),
            enqueued: k("enqueued"),
            enqueued_at: k("enqueued_at"),
        }
    }

    /// Every key, in the order the scripts read `KEYS` (see `scripts.rs`).
    #[must_use]
    pub fn all(&self) -> [&str; 13] {
        [
            &self.ready,
            &self.delayed,
            &self.tasks,
            &self.attempts,
            &self.scores,
            &self.leased,
            &self.heartbeats,
            &self.wake,
            &self.seq,
            &self.dead,
            &self.dead_why,
            &self.enqueued,
            &self.enqueued_at,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls() {
        let d = |host: &str, port, db, queue: &str| RedisUrl {
            host: host.into(),
            port,
            db,
            userinfo: None,
            queue: queue.into(),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
        };
        for (url, want) in [
            (
                "redis://127.0.0.1:6380/2?queue=mail",
                d("127.0.0.1", 6380, 2, "mail"),
            ),
            ("redis://localhost", d("localhost", 6379, 0, "spooler")),
            ("redis://", d("127.0.0.1", 6379, 0, "spooler")),
            ("redis://:7000/", d("127.0.0.1", 7000, 0, "spooler")),
            ("redis://h/15/", d("h", 6379, 15, "spooler")),
            (
                "redis://[::1]:6379/1?queue=a.b-c_d",
                d("::1", 6379, 1, "a.b-c_d"),
            ),
            ("redis://[::1]?queue=q&", d("::1", 6379, 0, "q")),
        ] {
            assert_eq!(RedisUrl::parse(url), Ok(want), "{url}");
        }
        let u = RedisUrl::parse("redis://user:p%40ss@h:1/3?heartbeat_timeout=5&queue=x").unwrap();
        assert_eq!(u.userinfo.as_deref(), Some("user:p%40ss"));
        assert_eq!(u.heartbeat_timeout, Duration::from_secs(5));
        assert_eq!(u.client_url(), "redis://user:p%40ss@h:1/3");
        assert_eq!(
            u.to_string(),
            "redis://h:1/3?queue=x",
            "no password in logs"
        );
        let v6 = RedisUrl::parse("redis://[::1]:7/0").unwrap();
        assert_eq!(v6.client_url(), "redis://[::1]:7/0");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("/var/spool", "expected a directory or redis://"),
            ("http://h:1/0", "unknown scheme \"http\""),
            ("rediss://h/0", "TLS"),
            ("redis://h:0/0", "bad port \"0\""),
            ("redis://h:65536/0", "bad port \"65536\""),
            ("redis://h:abc/0", "bad port \"abc\""),
            ("redis://h/x", "bad database \"x\""),
            ("redis://h/1/2", "bad database \"1/2\""),
            ("redis://h/99999999999", "too big"),
            ("redis://h/0?queue=", "bad queue name \"\""),
            ("redis://h/0?queue=a:b", "bad queue name \"a:b\""),
            ("redis://h/0?queue=a{b}", "bad queue name"),
            ("redis://h/0?queue=a%20b", "bad queue name"),
            ("redis://h/0?queues=a", "unknown parameter \"queues\""),
            (
                "redis://h/0?heartbeat_timeout=0",
                "bad heartbeat_timeout \"0\"",
            ),
            ("redis://h/0?heartbeat_timeout=1.5", "bad heartbeat_timeout"),
            ("redis://h/0#x", "fragment"),
            ("redis://[::1/0", "closing ]"),
            ("redis://[::1]x/0", "bad host"),
            ("redis://a b/0", "bad host"),
        ] {
            let err = RedisUrl::parse(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
        let long = format!("redis://h/0?queue={}", "q".repeat(101));
        assert!(RedisUrl::parse(&long).is_err());
        let longest = format!("redis://h/0?queue={}", "q".repeat(100));
        assert!(RedisUrl::parse(&longest).is_ok());
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = RedisUrl::parse("redis://h/0?queue=mail").unwrap().keys();
        assert_eq!(keys.ready, "headrace:spooler:{mail}:ready");
        assert_eq!(keys.dead_why, "headrace:spooler:{mail}:dead_why");
        let all = keys.all();
        assert!(all
            .iter()
            .all(|k| k.starts_with("headrace:spooler:{mail}:")));
        let mut unique = all.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
    }
}
