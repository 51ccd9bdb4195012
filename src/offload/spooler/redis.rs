//! The Redis backend (`--spooler redis://HOST:PORT/DB?queue=NAME`): web hosts spool, worker
//! hosts run the tasks, all sharing one Redis.
//!
//! A task is the same spool packet as a spool file ([`Task::encode`]), kept in a hash under a
//! zero-padded counter id. Ready ids wait in a sorted set by priority (ties: by id, the order
//! they were spooled), ids whose time has not come (`at`, retry backoff) in a sorted set by
//! time. A spooler leases a task by moving its id to the `leased` hash with its consumer name
//! (host, pid and a nonce); from its first lease on, a thread of the spooler process beats (the
//! server's time, in a sorted set) once a second, whatever the process is doing. The next
//! lease by anyone puts back the leases of consumers whose beat is older than
//! `heartbeat_timeout` (as Dramatiq does), so a task whose spooler died runs again: at least
//! once. Every change is one Lua script (`scripts.rs`), atomic on
//! the server. The key layout is in [`url::Keys`].
//!
//! Redis down: a spooler logs one line, keeps trying with backoff (0.1 s doubling to 5 s),
//! logs one line when it is back, and loses nothing Redis acknowledged (how much Redis keeps
//! across its own crash is its `appendfsync`: `always` keeps every enqueued task). An enqueue
//! (in a worker) tries twice, on a fresh connection the second time (the same token, so a
//! task stored by a try whose reply was lost is not stored again), then fails: `uwsgi.spool`
//! raises, so the request knows its task was not queued.

#[cfg(test)]
mod live_tests;
mod scripts;
pub mod url;

use super::backend::{Backend, Lease, SpoolError, Task};
use ::redis::{Connection, FromRedisValue, RedisError, Script, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use url::{Keys, RedisUrl};

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reply may take (longer than [`BEAT`], the longest BLPOP).
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle spooler wakes this often at least, to beat and to see delayed tasks come due.
const BEAT: Duration = Duration::from_secs(1);
/// The first wait after Redis could not be reached; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Open the queue `url` names. Nothing is connected yet: a spooler started while Redis is
/// down waits for it.
pub fn open(url: &str) -> Result<Box<dyn Backend>, SpoolError> {
    Ok(Box::new(RedisBackend::open(url)?))
}

/// Check `url` at startup: `Err(reason)` when it is not a usable Redis spooler address.
/// The server is not contacted (it may come up after headrace).
pub fn check_url(url: &str) -> Result<(), String> {
    RedisUrl::parse(url).map(|_| ())
}

/// The scripts, with their SHA1s computed once (EVALSHA, and EVAL after a Redis restart).
struct Scripts {
    enqueue: Script,
    lease: Script,
    ack: Script,
    retry: Script,
    bury: Script,
    heartbeat: Script,
    pending: Script,
    requeue_dead: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body| Script::new(&scripts::source(body));
        Scripts {
            enqueue: s(scripts::ENQUEUE),
            lease: s(scripts::LEASE),
            ack: s(scripts::ACK),
            retry: s(scripts::RETRY),
            bury: s(scripts::BURY),
            heartbeat: s(scripts::HEARTBEAT),
            pending: s(scripts::PENDING),
            requeue_dead: s(scripts::REQUEUE_DEAD),
        }
    }
}

/// Whether Redis is being reached, and when to try next when it is not.
#[derive(Debug)]
struct Outage {
    since: Option<Instant>,
    backoff: Duration,
    next_try: Instant,
}

/// One process's handle on one Redis queue.
pub struct RedisBackend {
    url: RedisUrl,
    client: ::redis::Client,
    conn: Option<Connection>,
    keys: Keys,
    scripts: Scripts,
    consumer: String,
    outage: Outage,
    /// The heartbeat thread, started by the first lease (only spooler processes lease, so the
    /// master and the workers never get one, and no thread exists across a fork).
    beater: Option<Beater>,
}

/// A thread that beats for a consumer once every [`BEAT`], on its own connection, as long as
/// its backend lives: a spooler that runs a long task keeps its lease, and one that dies (kill
/// -9, harakiri, the host) stops beating with it, whatever the spooler's loop does.
struct Beater {
    stop: Arc<AtomicBool>,
}

impl Beater {
    fn start(url: RedisUrl, consumer: String) -> Result<Self, SpoolError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut own = RedisBackend::with_url(url)?;
        own.consumer = consumer;
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("spooler-heartbeat".into())
            .spawn(move || {
                let mut said = false;
                while !flag.load(Ordering::Relaxed) {
                    match own.beat() {
                        Ok(()) => said = false,
                        Err(e) if !said => {
                            said = true;
                            crate::log!(
                                "[spooler {} pid: {}] heartbeat: {e}",
                                own.url,
                                crate::sys::proc::getpid()
                            );
                        }
                        Err(_) => {}
                    }
                    std::thread::sleep(BEAT);
                }
            })?;
        Ok(Beater { stop })
    }
}

impl Drop for Beater {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one script call gave.
enum Leased {
    Task(Lease),
    /// Nothing ready; the next delayed task is due in this many seconds.
    Empty(Option<u64>),
}

impl RedisBackend {
    /// Open the queue `url` names (no connection yet).
    pub fn open(url: &str) -> Result<Self, SpoolError> {
        let url = RedisUrl::parse(url).map_err(|why| SpoolError::Redis(format!("{url}: {why}")))?;
        Self::with_url(url)
    }

    fn with_url(url: RedisUrl) -> Result<Self, SpoolError> {
        let client = ::redis::Client::open(url.client_url())
            .map_err(|e| SpoolError::Redis(format!("{url}: {e}")))?;
        Ok(RedisBackend {
            keys: url.keys(),
            url,
            client,
            conn: None,
            scripts: Scripts::new(),
            consumer: consumer_id(),
            outage: Outage {
                since: None,
                backoff: FIRST_BACKOFF,
                next_try: Instant::now(),
            },
            beater: None,
        })
    }

    /// Stop beating, as a dead process would.
    #[cfg(test)]
    fn stop_beating(&mut self) {
        self.beater = None;
    }

    /// This process's consumer name (`HOST:PID:NONCE`), as the `leased` hash records it.
    #[must_use]
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The buried tasks, oldest first: id and why.
    pub fn dead_letters(&mut self) -> Result<Vec<(String, String)>, SpoolError> {
        self.twice(|conn, keys, _| {
            let ids: Vec<String> = ::redis::cmd("LRANGE")
                .arg(&keys.dead)
                .arg(0)
                .arg(-1)
                .query(conn)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let why: Option<String> = ::redis::cmd("HGET")
                    .arg(&keys.dead_why)
                    .arg(&id)
                    .query(conn)?;
                out.push((id, why.unwrap_or_default()));
            }
            Ok(out)
        })
    }

    /// Put a buried task back in the queue with its attempts reset; false when `id` is not
    /// buried.
    pub fn requeue_dead(&mut self, id: &str) -> Result<bool, SpoolError> {
        self.twice(|conn, keys, s| invoke(conn, &s.requeue_dead, keys, &[id.as_bytes()]))
    }

    /// Run `f` on a connection (made if there is none); any error drops the connection, so
    /// the next call starts on a fresh one.
    fn once<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &Keys, &Scripts) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let mut conn = if let Some(conn) = self.conn.take() {
            conn
        } else {
            let conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            conn.set_read_timeout(Some(IO_TIMEOUT))?;
            conn.set_write_timeout(Some(IO_TIMEOUT))?;
            conn
        };
        let out = f(&mut conn, &self.keys, &self.scripts);
        if out.is_ok() {
            self.conn = Some(conn);
        }
        out
    }

    /// For calls whose caller is waiting (an enqueue in a request, `spooler_jobs`): once, and
    /// once more on a fresh connection when the first one was broken (Redis restarted).
    fn twice<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection, &Keys, &Scripts) -> Result<T, RedisError>,
    ) -> Result<T, SpoolError> {
        let out = match self.once(&mut f) {
            Err(e) if is_down(&e) => self.once(f),
            out => out,
        };
        match out {
            Ok(v) => {
                self.reached();
                Ok(v)
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    /// For the end of a task (ack, retry, bury): keep trying while Redis is down, so a task
    /// that ran is not run again because Redis blinked (unless the outage outlasts the
    /// heartbeat timeout and another spooler took the task over: at least once).
    fn persist<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection, &Keys, &Scripts) -> Result<T, RedisError>,
    ) -> Result<T, SpoolError> {
        loop {
            self.nap_until(None);
            match self.once(&mut f) {
                Ok(v) => {
                    self.reached();
                    return Ok(v);
                }
                Err(e) if is_down(&e) => self.unreachable(&e),
                Err(e) => return Err(self.error(&e)),
            }
        }
    }

    /// Sleep until the next attempt to reach Redis is due, or `deadline` if sooner.
    fn nap_until(&self, deadline: Option<Instant>) {
        let until = deadline.map_or(self.outage.next_try, |d| d.min(self.outage.next_try));
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }

    /// Redis could not be reached: say so once per process (a spooler may hold two handles,
    /// one for its heartbeats), and back off.
    fn unreachable(&mut self, e: &RedisError) {
        let now = Instant::now();
        if self.outage.since.is_none() {
            if outage_noted(&self.url.to_string(), true) {
                crate::log!(
                    "[spooler {} pid: {}] Redis unreachable ({e}), retrying with backoff",
                    self.url,
                    crate::sys::proc::getpid()
                );
            }
            self.outage.since = Some(now);
            self.outage.backoff = FIRST_BACKOFF;
        } else {
            self.outage.backoff = (self.outage.backoff * 2).min(MAX_BACKOFF);
        }
        self.outage.next_try = now + self.outage.backoff;
    }

    /// Redis answered: if it had been said unreachable, say it is back.
    fn reached(&mut self) {
        if let Some(since) = self.outage.since.take() {
            if outage_noted(&self.url.to_string(), false) {
                crate::log!(
                    "[spooler {} pid: {}] Redis reachable again after {:.1}s",
                    self.url,
                    crate::sys::proc::getpid(),
                    since.elapsed().as_secs_f64()
                );
            }
        }
        self.outage.backoff = FIRST_BACKOFF;
        self.outage.next_try = Instant::now();
    }

    fn error(&self, e: &RedisError) -> SpoolError {
        if is_down(e) {
            SpoolError::Redis(format!("{}: cannot reach Redis: {e}", self.url))
        } else {
            SpoolError::Redis(format!("{}: {e}", self.url))
        }
    }

    /// One lease script call.
    fn try_lease(&mut self) -> Result<Leased, RedisError> {
        let consumer = self.consumer.clone();
        let timeout_ms = self.url.heartbeat_timeout.as_millis().to_string();
        let reply: Vec<Value> = self.once(|conn, keys, s| {
            invoke(
                conn,
                &s.lease,
                keys,
                &[consumer.as_bytes(), timeout_ms.as_bytes()],
            )
        })?;
        let bad = || {
            RedisError::from((
                ::redis::ErrorKind::UnexpectedReturnType,
                "unexpected reply to the lease script",
            ))
        };
        let mut it = reply.into_iter();
        let id = String::from_redis_value(it.next().ok_or_else(bad)?)?;
        let second = it.next().ok_or_else(bad)?;
        if id.is_empty() {
            let due = i64::from_redis_value(second)?;
            return Ok(Leased::Empty(u64::try_from(due).ok()));
        }
        let packet = Vec::<u8>::from_redis_value(second)?;
        let attempts = u32::from_redis_value(it.next().ok_or_else(bad)?)?;
        match Task::decode(&packet) {
            Ok(task) => Ok(Leased::Task(Lease {
                name: id,
                task,
                attempts,
            })),
            Err(e) => {
                // Not a spool packet (written by something else): bury it rather than fail
                // every lease on it.
                let why = format!("not a spool packet: {e}");
                crate::log!(
                    "[spooler {} pid: {}] task {id}: {why}",
                    self.url,
                    crate::sys::proc::getpid()
                );
                let consumer = self.consumer.clone();
                let _: i64 = self.once(|conn, keys, s| {
                    invoke(
                        conn,
                        &s.bury,
                        keys,
                        &[consumer.as_bytes(), id.as_bytes(), why.as_bytes()],
                    )
                })?;
                Ok(Leased::Empty(Some(0)))
            }
        }
    }

    /// Block up to `wait` on the wake-up list (an enqueue pushes a token).
    fn wait_for_wake(&mut self, wait: Duration) -> Result<(), RedisError> {
        // BLPOP's timeout is in seconds, with decimals; 0 would mean forever.
        let secs = wait.as_secs_f64().max(0.01);
        let _: Value =
            self.once(|conn, keys, _| ::redis::cmd("BLPOP").arg(&keys.wake).arg(secs).query(conn))?;
        Ok(())
    }
}

impl Backend for RedisBackend {
    fn enqueue(&mut self, task: &Task) -> Result<String, SpoolError> {
        let packet = task.encode()?;
        let score = priority_score(task.priority());
        let at = task.at().unwrap_or(0).to_string();
        let token = enqueue_token();
        self.twice(|conn, keys, s| {
            invoke(
                conn,
                &s.enqueue,
                keys,
                &[&packet, score.as_bytes(), at.as_bytes(), token.as_bytes()],
            )
        })
    }

    fn lease(&mut self, wait: Duration) -> Result<Option<Lease>, SpoolError> {
        if self.beater.is_none() {
            self.beater = Some(Beater::start(self.url.clone(), self.consumer.clone())?);
        }
        let deadline = Instant::now() + wait;
        loop {
            if self.outage.since.is_some() {
                self.nap_until(Some(deadline));
                if Instant::now() < self.outage.next_try {
                    return Ok(None);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = match self.try_lease() {
                Ok(Leased::Task(lease)) => {
                    self.reached();
                    return Ok(Some(lease));
                }
                Ok(Leased::Empty(due)) => {
                    self.reached();
                    if left.is_zero() {
                        return Ok(None);
                    }
                    let due = due.map_or(BEAT, Duration::from_secs);
                    if due.is_zero() {
                        continue;
                    }
                    self.wait_for_wake(left.min(BEAT).min(due))
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {}
                Err(e) if is_down(&e) => {
                    self.unreachable(&e);
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(self.error(&e)),
            }
        }
    }

    fn ack(&mut self, lease: Lease) -> Result<(), SpoolError> {
        let id = lease.name;
        self.persist(|conn, keys, s| invoke::<i64>(conn, &s.ack, keys, &[id.as_bytes()]))?;
        Ok(())
    }

    fn retry(&mut self, lease: Lease, not_before: u64) -> Result<(), SpoolError> {
        let (consumer, id, nb) = (self.consumer.clone(), lease.name, not_before.to_string());
        let kept: i64 = self.persist(|conn, keys, s| {
            invoke(
                conn,
                &s.retry,
                keys,
                &[consumer.as_bytes(), id.as_bytes(), nb.as_bytes()],
            )
        })?;
        if kept == 0 {
            self.lost(&id);
        }
        Ok(())
    }

    fn bury(&mut self, lease: Lease, why: &str) -> Result<(), SpoolError> {
        let (consumer, id) = (self.consumer.clone(), lease.name);
        let kept: i64 = self.persist(|conn, keys, s| {
            invoke(
                conn,
                &s.bury,
                keys,
                &[consumer.as_bytes(), id.as_bytes(), why.as_bytes()],
            )
        })?;
        if kept == 0 {
            self.lost(&id);
        }
        Ok(())
    }

    fn pending(&mut self) -> Result<Vec<String>, SpoolError> {
        self.twice(|conn, keys, s| invoke(conn, &s.pending, keys, &[]))
    }

    fn heartbeat(&mut self) -> Result<(), SpoolError> {
        self.beat()
    }
}

impl RedisBackend {
    /// One heartbeat; while Redis is down, at most one attempt per backoff step, and no
    /// error (the outage is logged once; the lease and the end of the task keep trying).
    fn beat(&mut self) -> Result<(), SpoolError> {
        if self.outage.since.is_some() && Instant::now() < self.outage.next_try {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        match self
            .once(|conn, keys, s| invoke::<i64>(conn, &s.heartbeat, keys, &[consumer.as_bytes()]))
        {
            Ok(_) => {
                self.reached();
                Ok(())
            }
            Err(e) if is_down(&e) => {
                self.unreachable(&e);
                Ok(())
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    fn lost(&self, id: &str) {
        crate::log!(
            "[spooler {} pid: {}] task {id}: lease lost (no heartbeat for {}s): it was queued again",
            self.url,
            crate::sys::proc::getpid(),
            self.url.heartbeat_timeout.as_secs()
        );
    }
}

/// Call `script` with every key of the queue and `args`.
fn invoke<T: FromRedisValue>(
    conn: &mut Connection,
    script: &Script,
    keys: &Keys,
    args: &[&[u8]],
) -> Result<T, RedisError> {
    let mut call = script.prepare_invoke();
    for k in keys.all() {
        call.key(k);
    }
    for a in args {
        call.arg(*a);
    }
    call.invoke(conn)
}

/// A broken or refused connection, a timeout, or a server not ready yet (loading its data
/// after a restart): worth trying again. Other errors (a script error, a wrong password) are
/// not.
fn is_down(e: &RedisError) -> bool {
    use ::redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
            )
        )
}

/// The `ready` score of a task: its priority (a lower number runs first), `+inf` without one.
/// Scores are doubles: priorities beyond ±2^53 are clamped, as no two of them could be told
/// apart anyway.
fn priority_score(priority: Option<i64>) -> String {
    const LIMIT: i64 = 1 << 53;
    match priority {
        Some(p) => p.clamp(-LIMIT, LIMIT).to_string(),
        None => "+inf".to_owned(),
    }
}

/// Note that the Redis at `url` is down (`down`) or up in this process; true when that is
/// news, to be logged.
fn outage_noted(url: &str, down: bool) -> bool {
    static DOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut list = DOWN.lock().unwrap_or_else(PoisonError::into_inner);
    let known = list.iter().position(|u| u == url);
    match (down, known) {
        (true, None) => {
            list.push(url.to_owned());
            true
        }
        (false, Some(i)) => {
            list.swap_remove(i);
            true
        }
        _ => false,
    }
}

/// `HOST:PID:NONCE`, one per process: threads of a process (a heartbeat thread) share it, a
/// forked child gets its own, and a later process with the same pid on the same host does not
/// inherit the dead one's leases.
/// A name no other enqueue anywhere has: this process's consumer name (host, pid, nonce) and
/// a counter, so the retry of an enqueue whose reply was lost is known for what it is.
fn enqueue_token() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}:{}",
        consumer_id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

fn consumer_id() -> String {
    static ID: Mutex<Option<(i32, String)>> = Mutex::new(None);
    let pid = crate::sys::proc::getpid();
    let mut id = ID.lock().unwrap_or_else(PoisonError::into_inner);
    match &*id {
        Some((p, name)) if *p == pid => name.clone(),
        _ => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned());
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!("{host}:{pid}:{:x}", nanos & 0xffff_ffff_ffff);
            *id = Some((pid, name.clone()));
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_scores() {
        for (p, want) in [
            (Some(0), "0"),
            (Some(-3), "-3"),
            (Some(7), "7"),
            (Some(i64::MAX), "9007199254740992"),
            (Some(i64::MIN), "-9007199254740992"),
            (None, "+inf"),
        ] {
            assert_eq!(priority_score(p), want, "{p:?}");
        }
    }

    #[test]
    fn one_consumer_per_process() {
        let a = consumer_id();
        assert_eq!(a, consumer_id());
        let pid = crate::sys::proc::getpid().to_string();
        assert_eq!(a.split(':').nth(1), Some(pid.as_str()), "{a}");
    }

    #[test]
    fn urls_are_checked_without_a_server() {
        assert!(check_url("redis://127.0.0.1:1/0?queue=q").is_ok());
        assert!(check_url("redis://127.0.0.1:1/zero").is_err());
        assert!(
            open("redis://127.0.0.1:1/0?queue=q").is_ok(),
            "open does not connect"
        );
        let err = open("redis://h:0/0").err().expect("bad port");
        assert!(err.to_string().contains("bad port"), "{err}");
    }
}
