//! The backend against a real `redis-server` (Debian's; `./dev test` installs it), started on
//! a free 127.0.0.1 port per test and killed by its pid after. Skipped, with a line saying so,
//! when `redis-server` is not on PATH.

use super::RedisBackend;
use crate::offload::spooler::backend::{Backend, Lease, Task};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A redis-server of one test.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    durable: bool,
}

impl Server {
    /// Start one, or `None` (and say why) when redis-server is not installed. `durable`:
    /// every write fsynced to an append-only file, so a SIGKILL loses nothing acknowledged.
    fn start(durable: bool) -> Option<Server> {
        if !which("redis-server") {
            eprintln!("SKIPPED: redis-server is not on PATH (apt-get install redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("headrace-redis-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut s = Server {
            child: None,
            port,
            dir,
            durable,
        };
        s.restart();
        Some(s)
    }

    fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        self.child = Some(cmd.spawn().expect("redis-server starts"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .raw()
            .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c).ok())
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, by pid.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self, query: &str) -> String {
        format!("redis://127.0.0.1:{}/3?{query}", self.port)
    }

    /// A plain connection, to look at the keys.
    fn raw(&self) -> Option<::redis::Connection> {
        ::redis::Client::open(format!("redis://127.0.0.1:{}/3", self.port))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(exe: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(exe).is_file()))
}

fn task(name: &str, extra: &[(&str, &str)]) -> Task {
    let mut vars = vec![(b"name".to_vec(), name.as_bytes().to_vec())];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())),
    );
    Task {
        vars,
        body: b"\x00\xffbody".to_vec(),
    }
}

fn name_of(lease: &Lease) -> String {
    String::from_utf8_lossy(lease.task.get(b"name").unwrap_or_default()).into_owned()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn lease_now(b: &mut RedisBackend) -> Option<Lease> {
    b.lease(Duration::ZERO).expect("lease")
}

#[test]
fn a_task_is_the_spool_packet_and_runs_once() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let mut b = RedisBackend::open(&srv.url("queue=q")).unwrap();
    let t = task("one", &[("k", "v")]);
    let id = b.enqueue(&t).unwrap();
    assert_eq!(id, "00000000000000000001");
    let stored: Vec<u8> = ::redis::cmd("HGET")
        .arg("headrace:spooler:{q}:tasks")
        .arg(&id)
        .query(&mut srv.raw().unwrap())
        .unwrap();
    assert_eq!(
        stored,
        t.encode().unwrap(),
        "the same bytes as a spool file"
    );
    assert_eq!(b.pending().unwrap(), vec![id.clone()]);
    let lease = lease_now(&mut b).expect("the task");
    assert_eq!((lease.name.as_str(), lease.attempts), (id.as_str(), 0));
    assert_eq!(lease.task, t);
    assert!(
        b.pending().unwrap().is_empty(),
        "a leased task is not pending"
    );
    let mut other_spooler = RedisBackend::open(&srv.url("queue=q")).unwrap();
    other_spooler.consumer = "other:1:0".into();
    assert!(
        lease_now(&mut other_spooler).is_none(),
        "nobody else gets it"
    );
    // A consumer asks only when it holds nothing: a lease it holds had its reply lost (Redis
    // died after the script ran), so it gets that task again, not a task nobody runs.
    let again = lease_now(&mut b).expect("the lost lease, again");
    assert_eq!((again.name.as_str(), again.attempts), (id.as_str(), 0));
    b.ack(lease).unwrap();
    assert!(lease_now(&mut b).is_none());
    let left: Vec<String> = ::redis::cmd("KEYS")
        .arg("headrace:*")
        .query(&mut srv.raw().unwrap())
        .unwrap();
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        [
            "headrace:spooler:{q}:enqueued",
            "headrace:spooler:{q}:enqueued_at",
            "headrace:spooler:{q}:heartbeats",
            "headrace:spooler:{q}:seq",
            "headrace:spooler:{q}:wake"
        ],
        "an acknowledged task leaves nothing behind but the enqueue tokens of the last minute"
    );
    // Another queue on the same server is another queue.
    let mut other = RedisBackend::open(&srv.url("queue=other")).unwrap();
    other.enqueue(&task("elsewhere", &[])).unwrap();
    assert!(lease_now(&mut b).is_none());
    assert_eq!(name_of(&lease_now(&mut other).unwrap()), "elsewhere");
}

#[test]
fn an_enqueue_tried_again_after_a_lost_reply_adds_no_second_task() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let mut b = RedisBackend::open(&srv.url("queue=q")).unwrap();
    let packet = task("once", &[]).encode().unwrap();
    let mut conn = srv.raw().unwrap();
    let mut enqueue = |token: &str| -> String {
        super::invoke(
            &mut conn,
            &b.scripts.enqueue,
            &b.keys,
            &[&packet, b"+inf", b"0", token.as_bytes()],
        )
        .unwrap()
    };
    // The same call twice (its first reply lost): one task, the same id both times.
    let first = enqueue("host:1:abc:7");
    assert_eq!(enqueue("host:1:abc:7"), first);
    // Another token is another task.
    let second = enqueue("host:1:abc:8");
    assert_ne!(second, first);
    assert_eq!(b.pending().unwrap(), vec![first, second]);
    // Through the backend, every call is its own task.
    let a = b.enqueue(&task("a", &[])).unwrap();
    let c = b.enqueue(&task("a", &[])).unwrap();
    assert_ne!(a, c);
}

#[test]
fn priorities_then_spool_order() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let mut b = RedisBackend::open(&srv.url("queue=q")).unwrap();
    for (name, prio) in [
        ("p5a", Some("5")),
        ("none-a", None),
        ("p1", Some("1")),
        ("p5b", Some("5")),
        ("p-2", Some("-2")),
        ("none-b", None),
        ("junk", Some("high")),
        ("p0", Some("0")),
    ] {
        let extra: Vec<(&str, &str)> = prio.map(|p| ("priority", p)).into_iter().collect();
        b.enqueue(&task(name, &extra)).unwrap();
    }
    let mut order = Vec::new();
    while let Some(l) = lease_now(&mut b) {
        order.push(name_of(&l));
        b.ack(l).unwrap();
    }
    assert_eq!(
        order,
        ["p-2", "p0", "p1", "p5a", "p5b", "none-a", "none-b", "junk"]
    );
}

#[test]
fn at_holds_a_task_until_its_time() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let mut b = RedisBackend::open(&srv.url("queue=q")).unwrap();
    let later = (now() + 2).to_string();
    let past = (now() - 100).to_string();
    let later_id = b.enqueue(&task("later", &[("at", &later)])).unwrap();
    let past_id = b.enqueue(&task("past", &[("at", &past)])).unwrap();
    assert_eq!(
        b.pending().unwrap(),
        vec![past_id, later_id],
        "ready first, then delayed"
    );
    let l = lease_now(&mut b).expect("a task whose time has come runs");
    assert_eq!(name_of(&l), "past");
    b.ack(l).unwrap();
    assert!(lease_now(&mut b).is_none(), "not before its time");
    let l = b
        .lease(Duration::from_secs(5))
        .unwrap()
        .expect("at its time");
    assert_eq!(name_of(&l), "later");
    assert!(now() >= later.parse().unwrap());
}

#[test]
fn retries_are_counted_then_buried_with_the_reason() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let mut b = RedisBackend::open(&srv.url("queue=q")).unwrap();
    let id = b.enqueue(&task("flaky", &[("priority", "3")])).unwrap();
    let l = lease_now(&mut b).unwrap();
    b.retry(l, 0).unwrap();
    let l = lease_now(&mut b).expect("retried at once");
    assert_eq!(l.attempts, 1);
    b.retry(l, now() + 2).unwrap();
    assert!(lease_now(&mut b).is_none(), "not before its backoff");
    assert_eq!(b.pending().unwrap(), vec![id.clone()]);
    let l = b
        .lease(Duration::from_secs(5))
        .unwrap()
        .expect("after its backoff");
    assert_eq!((l.name.clone(), l.attempts), (id.clone(), 2));
    b.bury(l, "Traceback (most recent call last):\n  ValueError: no")
        .unwrap();
    assert!(lease_now(&mut b).is_none());
    assert!(b.pending().unwrap().is_empty());
    assert_eq!(
        b.dead_letters().unwrap(),
        vec![(
            id.clone(),
            "Traceback (most recent call last):\n  ValueError: no".to_owned()
        )]
    );
    assert!(b.requeue_dead(&id).unwrap());
    assert!(!b.requeue_dead(&id).unwrap(), "only once");
    let l = lease_now(&mut b).expect("requeued by hand");
    assert_eq!((l.attempts, name_of(&l)), (0, "flaky".to_owned()));
    assert!(b.dead_letters().unwrap().is_empty());
}

#[test]
fn a_dead_spoolers_lease_goes_back_after_the_heartbeat_timeout() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let url = srv.url("queue=q&heartbeat_timeout=1");
    let mut dead = RedisBackend::open(&url).unwrap();
    dead.consumer = "dead-host:1:0".into();
    let mut live = RedisBackend::open(&url).unwrap();
    live.consumer = "live-host:2:0".into();
    let id = dead.enqueue(&task("orphan", &[])).unwrap();
    let gone = lease_now(&mut dead).unwrap();
    dead.stop_beating();
    assert!(
        lease_now(&mut live).is_none(),
        "a fresh lease is not taken over"
    );
    // `dead` beats no more: within the timeout and a beat, `live` gets the task, as a failed
    // attempt.
    let l = live
        .lease(Duration::from_secs(5))
        .unwrap()
        .expect("requeued");
    assert_eq!((l.name.as_str(), l.attempts), (id.as_str(), 1));
    // The dead one comes back after all: its retry is refused (the task is `live`'s now) ...
    dead.retry(gone, 0).unwrap();
    assert!(lease_now(&mut dead).is_none(), "no second copy");
    live.ack(l).unwrap();
    assert!(lease_now(&mut live).is_none());
    assert!(live.pending().unwrap().is_empty());
}

#[test]
fn a_live_spooler_keeps_its_lease_through_a_long_task() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let url = srv.url("queue=q&heartbeat_timeout=1");
    let mut busy = RedisBackend::open(&url).unwrap();
    busy.consumer = "busy:1:0".into();
    let mut idle = RedisBackend::open(&url).unwrap();
    idle.consumer = "idle:2:0".into();
    busy.enqueue(&task("long", &[])).unwrap();
    let l = lease_now(&mut busy).unwrap();
    let end = Instant::now() + Duration::from_millis(2500);
    // No call from the loop: the backend's own thread beats while `busy` runs the task.
    while Instant::now() < end {
        assert!(idle.lease(Duration::from_millis(300)).unwrap().is_none());
    }
    busy.ack(l).unwrap();
}

#[test]
fn a_waiting_lease_wakes_on_enqueue() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let url = srv.url("queue=q");
    let waiter = std::thread::spawn(move || {
        let mut b = RedisBackend::open(&url).unwrap();
        let t0 = Instant::now();
        let l = b.lease(Duration::from_secs(20)).unwrap();
        (l.map(|l| name_of(&l)), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    RedisBackend::open(&srv.url("queue=q"))
        .unwrap()
        .enqueue(&task("wake", &[]))
        .unwrap();
    let (got, took) = waiter.join().unwrap();
    assert_eq!(got.as_deref(), Some("wake"));
    assert!(took < Duration::from_secs(20));
}

#[test]
fn not_a_spool_packet_is_buried_not_looped_on() {
    let Some(srv) = Server::start(false) else {
        return;
    };
    let mut b = RedisBackend::open(&srv.url("queue=q")).unwrap();
    let mut raw = srv.raw().unwrap();
    let _: () = ::redis::pipe()
        .cmd("HSET")
        .arg("headrace:spooler:{q}:tasks")
        .arg("x")
        .arg("garbage")
        .ignore()
        .cmd("ZADD")
        .arg("headrace:spooler:{q}:ready")
        .arg(0)
        .arg("x")
        .ignore()
        .query(&mut raw)
        .unwrap();
    b.enqueue(&task("good", &[])).unwrap();
    let l = b
        .lease(Duration::from_secs(3))
        .unwrap()
        .expect("the good one");
    assert_eq!(name_of(&l), "good");
    let dead = b.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "x");
    assert!(dead[0].1.starts_with("not a spool packet"), "{dead:?}");
}

#[test]
fn redis_down_then_back_loses_nothing_acknowledged() {
    let Some(mut srv) = Server::start(true) else {
        return;
    };
    let mut spooler = RedisBackend::open(&srv.url("queue=q")).unwrap();
    let mut web = RedisBackend::open(&srv.url("queue=q")).unwrap();
    for i in 0..3 {
        web.enqueue(&task(&format!("t{i}"), &[])).unwrap();
    }
    let running = lease_now(&mut spooler).unwrap();
    srv.kill();
    // Down: an enqueue fails (the request hears of it), a lease waits and finds nothing.
    let err = web.enqueue(&task("lost", &[])).unwrap_err().to_string();
    assert!(err.contains("cannot reach Redis"), "{err}");
    assert!(spooler.lease(Duration::from_millis(300)).unwrap().is_none());
    assert!(spooler.outage.since.is_some());
    // The end of the running task waits for Redis to come back.
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        srv.restart();
        srv
    });
    spooler.ack(running).unwrap();
    let srv = restarter.join().unwrap();
    assert!(spooler.outage.since.is_none(), "back");
    let mut names = Vec::new();
    while let Some(l) = spooler.lease(Duration::from_millis(200)).unwrap() {
        names.push(name_of(&l));
        spooler.ack(l).unwrap();
    }
    assert_eq!(names, ["t1", "t2"]);
    // The web side reconnects by itself.
    web.enqueue(&task("after", &[])).unwrap();
    assert_eq!(name_of(&lease_now(&mut spooler).unwrap()), "after");
    drop(srv);
}

#[test]
fn a_spooler_started_before_redis_waits_for_it() {
    let Some(mut srv) = Server::start(false) else {
        return;
    };
    srv.kill();
    let mut b = RedisBackend::open(&srv.url("queue=q")).unwrap();
    assert!(b.lease(Duration::from_millis(200)).unwrap().is_none());
    b.heartbeat().unwrap();
    assert!(b.pending().is_err());
    srv.restart();
    b.enqueue(&task("first", &[])).unwrap();
    let l = b
        .lease(Duration::from_secs(10))
        .unwrap()
        .expect("after the backoff");
    assert_eq!(name_of(&l), "first");
}

/// A measurement, not a check of behaviour: run by hand with
/// `cargo test --release --lib spooler::redis::live_tests::figures -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: prints enqueue latency and lease+ack throughput"]
fn figures() {
    for durable in [false, true] {
        let Some(srv) = Server::start(durable) else {
            return;
        };
        let mut b = RedisBackend::open(&srv.url("queue=q")).unwrap();
        let t = task("empty", &[]);
        let n = 5000;
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            b.enqueue(&t).unwrap();
            lat.push(t0.elapsed());
        }
        lat.sort();
        let t0 = Instant::now();
        let mut done = 0;
        while let Some(l) = lease_now(&mut b) {
            b.ack(l).unwrap();
            done += 1;
        }
        let rate = f64::from(done) / t0.elapsed().as_secs_f64();
        assert_eq!(done, 5000);
        eprintln!(
            "redis ({}): enqueue p50 {:?} p99 {:?}; lease+ack {rate:.0} tasks/s (one consumer)",
            if durable {
                "appendfsync always"
            } else {
                "no persistence"
            },
            lat[n / 2],
            lat[n * 99 / 100],
        );
    }
}
