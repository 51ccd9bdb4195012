//! WebSocket echo load for bench/run: `wsload PORT CLIENTS WARMUP_S DURATION_S [SIZE]`.
//!
//! Opens CLIENTS connections to ws://127.0.0.1:PORT/ (one thread each, blocking sockets,
//! TCP_NODELAY), then every client sends a masked text message of SIZE bytes (32 by default)
//! and waits for its echo, over and over, for WARMUP_S seconds (not counted) and DURATION_S
//! seconds (counted). It ends by itself: each client stops at the deadline, sends a close
//! frame (1000) and waits at most a second for the server's; every read has a 5 s timeout.
//!
//! Prints one line that bench/run parses, with wrk's field names (bench/wrk/report.lua):
//! `BENCH_JSON {"requests": echoed messages in the measured window, "duration_us": ..., ...}`;
//! latencies are per round trip, in microseconds. A server that does not switch protocols
//! gets `BENCH_UNSUPPORTED <its status line>` instead, exit code 3.
//! 127.0.0.1 only: the address is not an argument.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::exit;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// RFC 6455 §1.3's example key and the accept value it implies.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    bytes: u64,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
    unsupported: Option<String>,
}

enum Failure {
    Connect,
    Read,
    Write,
    Timeout,
    Status,
    Unsupported(String),
}

fn io_failure(e: &std::io::Error, read: bool) -> Failure {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::Timeout,
        _ if read => Failure::Read,
        _ => Failure::Write,
    }
}

fn handshake(port: u16) -> Result<TcpStream, Failure> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|_| Failure::Connect)?;
    s.set_nodelay(true).map_err(|_| Failure::Connect)?;
    s.set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|_| Failure::Connect)?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| io_failure(&e, false))?;
    // Read the head byte by byte: nothing after it may be consumed (the server sends no frame
    // before the client's first message, but be exact anyway).
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => {
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                return Err(if line.is_empty() {
                    Failure::Read
                } else {
                    Failure::Unsupported(format!("{line} (then closed)"))
                });
            }
            Ok(_) => head.push(b[0]),
            Err(e) => return Err(io_failure(&e, true)),
        }
        if head.len() > 16384 {
            return Err(Failure::Read);
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or("").to_string();
    if status.split(' ').nth(1) != Some("101") {
        return Err(Failure::Unsupported(status));
    }
    let accepted = text.lines().any(|l| {
        let mut kv = l.splitn(2, ':');
        let k = kv.next().unwrap_or("").trim();
        let v = kv.next().unwrap_or("").trim();
        k.eq_ignore_ascii_case("sec-websocket-accept") && v == ACCEPT
    });
    if !accepted {
        return Err(Failure::Status);
    }
    Ok(s)
}

fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one data frame's payload into `buf` (answering pings on the way); the opcode.
fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>, mask: [u8; 4]) -> Result<u8, Failure> {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).map_err(|e| io_failure(&e, true))?;
        let opcode = h[0] & 0x0f;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).map_err(|e| io_failure(&e, true))?;
            len = u64::from(u16::from_be_bytes(l));
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).map_err(|e| io_failure(&e, true))?;
            len = u64::from_be_bytes(l);
        }
        if h[1] & 0x80 != 0 || len > 1 << 20 {
            return Err(Failure::Status); // servers never mask; no echo is that big
        }
        buf.resize(len as usize, 0);
        s.read_exact(buf).map_err(|e| io_failure(&e, true))?;
        match opcode {
            0x9 => {
                let pong = masked_frame(0xA, buf, mask);
                s.write_all(&pong).map_err(|e| io_failure(&e, false))?;
            }
            0xA => {}
            0x8 => return Err(Failure::Read),
            _ => return Ok(opcode),
        }
    }
}

fn client(
    id: usize,
    port: u16,
    size: usize,
    barrier: &Barrier,
    start: &Mutex<Option<Instant>>,
    window: (Duration, Duration),
) -> Tally {
    let mut t = Tally::default();
    let conn = handshake(port);
    barrier.wait(); // everyone connected (or failed); the first one past sets the clock
    let t0 = {
        let mut g = start.lock().unwrap();
        *g.get_or_insert_with(Instant::now)
    };
    let mut s = match conn {
        Ok(s) => s,
        Err(f) => {
            record(&mut t, f);
            return t;
        }
    };
    let (warmup, duration) = window;
    let measure_from = t0 + warmup;
    let deadline = measure_from + duration;
    let mask = [(id as u8) ^ 0x5a, 0x13, 0x37, (id >> 8) as u8 ^ 0xa5];
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let frame = masked_frame(0x1, &payload, mask);
    let mut buf = Vec::with_capacity(size);
    t.latencies_us.reserve(1 << 16);
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        if let Err(e) = s.write_all(&frame) {
            record(&mut t, io_failure(&e, false));
            return t;
        }
        match read_message(&mut s, &mut buf, mask) {
            Ok(0x1) if buf == payload => {}
            Ok(_) => {
                t.status += 1; // a wrong echo
                return t;
            }
            Err(f) => {
                record(&mut t, f);
                return t;
            }
        }
        let done = Instant::now();
        if done >= measure_from && done < deadline {
            t.latencies_us
                .push((done - sent).as_micros().min(u128::from(u32::MAX)) as u32);
            t.bytes += (buf.len() + 2) as u64;
        }
    }
    let close = masked_frame(0x8, &1000u16.to_be_bytes(), mask);
    if s.write_all(&close).is_ok() {
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = read_message(&mut s, &mut buf, mask); // the server's close, or a timeout
    }
    t
}

fn record(t: &mut Tally, f: Failure) {
    match f {
        Failure::Connect => t.connect += 1,
        Failure::Read => t.read += 1,
        Failure::Write => t.write += 1,
        Failure::Timeout => t.timeout += 1,
        Failure::Status => t.status += 1,
        Failure::Unsupported(line) => t.unsupported = Some(line),
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let k = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize, default: Option<u64>| -> u64 {
        match args.get(i).map(|a| a.parse::<u64>()) {
            Some(Ok(v)) => v,
            None if default.is_some() => default.unwrap(),
            _ => {
                eprintln!("usage: wsload PORT CLIENTS WARMUP_S DURATION_S [SIZE]");
                exit(2);
            }
        }
    };
    let port = num(1, None) as u16;
    let clients = num(2, None).clamp(1, 10_000) as usize;
    let warmup = Duration::from_secs(num(3, None).min(600));
    let duration = Duration::from_secs(num(4, None).clamp(1, 600));
    let size = num(5, Some(32)).clamp(1, 65_535) as usize;

    let barrier = Arc::new(Barrier::new(clients));
    let start = Arc::new(Mutex::new(None));
    let handles: Vec<_> = (0..clients)
        .map(|id| {
            let (barrier, start) = (Arc::clone(&barrier), Arc::clone(&start));
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || client(id, port, size, &barrier, &start, (warmup, duration)))
                .expect("spawn a client thread")
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let t = h.join().expect("client thread");
        all.latencies_us.extend(t.latencies_us);
        all.bytes += t.bytes;
        all.connect += t.connect;
        all.read += t.read;
        all.write += t.write;
        all.status += t.status;
        all.timeout += t.timeout;
        if all.unsupported.is_none() {
            all.unsupported = t.unsupported;
        }
    }
    if let Some(line) = all.unsupported {
        println!("BENCH_UNSUPPORTED {line}");
        exit(3);
    }
    let lat = &mut all.latencies_us;
    lat.sort_unstable();
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&v| f64::from(v)).sum::<f64>() / lat.len() as f64
    };
    println!(
        "BENCH_JSON {{\"requests\":{},\"duration_us\":{},\"bytes\":{},\"p50_us\":{},\"p90_us\":{},\
         \"p99_us\":{},\"max_us\":{},\"mean_us\":{:.1},\"connect\":{},\"read\":{},\"write\":{},\
         \"status\":{},\"timeout\":{},\"clients\":{}}}",
        lat.len(),
        duration.as_micros(),
        all.bytes,
        pct(lat, 50.0),
        pct(lat, 90.0),
        pct(lat, 99.0),
        lat.last().copied().unwrap_or(0),
        mean,
        all.connect,
        all.read,
        all.write,
        all.status,
        all.timeout,
        clients,
    );
}
