//! WebSocket echo load for bench/run: `wsload PORT CLIENTS WARMUP_S DURATION_S [SIZE]`.
//!
//! Opens CLIENTS connections to ws://127.0.0.1:PORT/ (TCP_NODELAY), then every client sends a
//! masked text message of SIZE bytes (32 by default) and waits for its echo, over and over, for
//! WARMUP_S seconds (not counted) and DURATION_S seconds (counted). One thread drives every
//! connection from one level-triggered epoll loop, so the client spends a few microseconds per
//! message and stays far from being the limit (a thread per client cost ~20 µs a message).
//! It ends by itself: at the deadline it sends each client's close frame (1000) and drains
//! replies for at most a second; an echo that takes over 5 s counts as a timeout and drops
//! that client.
//!
//! Prints one line that bench/run parses, with wrk's field names (bench/wrk/report.lua):
//! `BENCH_JSON {"requests": echoed messages in the measured window, "duration_us": ..., ...}`;
//! latencies are per round trip, in microseconds. A server that does not switch protocols
//! gets `BENCH_UNSUPPORTED <its status line>` instead, exit code 3.
//! 127.0.0.1 only: the address is not an argument.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::process::exit;
use std::time::{Duration, Instant};

// RFC 6455 §1.3's example key and the accept value it implies.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Errors {
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
}

enum Failure {
    Connect,
    Read,
    Write,
    Timeout,
    Status,
    Unsupported(String),
}

impl Errors {
    fn add(&mut self, f: &Failure) {
        match f {
            Failure::Connect => self.connect += 1,
            Failure::Read => self.read += 1,
            Failure::Write => self.write += 1,
            Failure::Timeout => self.timeout += 1,
            Failure::Status | Failure::Unsupported(_) => self.status += 1,
        }
    }
}

fn io_failure(e: &io::Error, read: bool) -> Failure {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::Timeout,
        _ if read => Failure::Read,
        _ => Failure::Write,
    }
}

/// A blocking handshake; the connection is switched to non-blocking afterwards.
fn handshake(port: u16) -> Result<TcpStream, Failure> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|_| Failure::Connect)?;
    s.set_nodelay(true).map_err(|_| Failure::Connect)?;
    s.set_read_timeout(Some(ECHO_TIMEOUT))
        .map_err(|_| Failure::Connect)?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| io_failure(&e, false))?;
    // Byte by byte: nothing after the head may be consumed.
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => {
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or("").to_string();
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
    s.set_nonblocking(true).map_err(|_| Failure::Connect)?;
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

/// One complete frame at the start of `buf`: (FIN and opcode byte, payload range, frame length).
fn parse_frame(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>, usize)>, Failure> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err(Failure::Status); // servers never mask
    }
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(l), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > 1 << 20 {
        return Err(Failure::Status);
    }
    let end = at + len as usize;
    Ok((buf.len() >= end).then(|| (buf[0], at..end, end)))
}

/// Writes a whole (small) frame to a non-blocking socket; it waits for room if it must.
fn send_all(s: &mut TcpStream, mut data: &[u8]) -> Result<(), Failure> {
    let give_up = Instant::now() + ECHO_TIMEOUT;
    while !data.is_empty() {
        match s.write(data) {
            Ok(0) => return Err(Failure::Write),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > give_up {
                    return Err(Failure::Timeout);
                }
                std::thread::yield_now();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Failure::Write),
        }
    }
    Ok(())
}

struct Conn {
    stream: TcpStream,
    frame: Vec<u8>,
    buf: Vec<u8>,
    sent: Instant,
    alive: bool,
    closing: bool,
}

fn epoll_add(ep: i32, fd: i32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `ev` lives across the call; epoll copies it.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn epoll_del(ep: i32, fd: i32) {
    // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
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
        match (args.get(i).map(|a| a.parse::<u64>()), default) {
            (Some(Ok(v)), _) => v,
            (None, Some(d)) => d,
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
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();

    let mut errors = Errors::default();
    let mut conns: Vec<Conn> = Vec::with_capacity(clients);
    for id in 0..clients {
        match handshake(port) {
            Ok(stream) => {
                let mask = [(id as u8) ^ 0x5a, 0x13, 0x37, ((id >> 8) as u8) ^ 0xa5];
                conns.push(Conn {
                    stream,
                    frame: masked_frame(0x1, &payload, mask),
                    buf: Vec::with_capacity(4096),
                    sent: Instant::now(),
                    alive: true,
                    closing: false,
                });
            }
            Err(Failure::Unsupported(line)) => {
                println!("BENCH_UNSUPPORTED {line}");
                exit(3);
            }
            Err(f) => errors.add(&f),
        }
    }
    // SAFETY: plain syscall; the descriptor is closed at exit.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        eprintln!("epoll_create1: {}", io::Error::last_os_error());
        exit(1);
    }
    let t0 = Instant::now();
    let measure_from = t0 + warmup;
    let deadline = measure_from + duration;
    for (i, c) in conns.iter_mut().enumerate() {
        let sent = epoll_add(ep, c.stream.as_raw_fd(), i as u64)
            .map_err(|_| Failure::Connect)
            .and_then(|()| send_all(&mut c.stream, &c.frame));
        c.sent = Instant::now();
        if let Err(f) = sent {
            errors.add(&f);
            c.alive = false;
        }
    }

    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut bytes: u64 = 0;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut chunk = vec![0u8; 64 * 1024];
    let mut closing_since: Option<Instant> = None;
    let mut last_sweep = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline && closing_since.is_none() {
            // Say goodbye: a close frame each, then drain the servers' close frames.
            for c in conns.iter_mut().filter(|c| c.alive) {
                let mask = [c.frame[2], c.frame[3], c.frame[4], c.frame[5]];
                let close = masked_frame(0x8, &1000u16.to_be_bytes(), mask);
                c.closing = true;
                if send_all(&mut c.stream, &close).is_err() {
                    c.alive = false;
                }
            }
            closing_since = Some(now);
        }
        if let Some(since) = closing_since {
            if now >= since + Duration::from_secs(1) || !conns.iter().any(|c| c.alive) {
                break;
            }
        }
        if now >= last_sweep + Duration::from_millis(250) {
            last_sweep = now;
            for c in conns.iter_mut().filter(|c| c.alive && !c.closing) {
                if now > c.sent + ECHO_TIMEOUT {
                    errors.timeout += 1;
                    c.alive = false;
                    epoll_del(ep, c.stream.as_raw_fd());
                }
            }
        }
        // SAFETY: `events` outlives the call and its length bounds maxevents.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
        if n < 0 {
            if io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            eprintln!("epoll_wait: {}", io::Error::last_os_error());
            exit(1);
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            if !c.alive {
                continue;
            }
            let mut failure = None;
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        if !c.closing {
                            failure = Some(Failure::Read);
                        }
                        c.alive = false;
                        break;
                    }
                    Ok(k) => {
                        c.buf.extend_from_slice(&chunk[..k]);
                        if k < chunk.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        if !c.closing {
                            failure = Some(Failure::Read);
                        }
                        c.alive = false;
                        break;
                    }
                }
            }
            let mut used = 0;
            while failure.is_none() {
                let (head, range, end) = match parse_frame(&c.buf[used..]) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(f) => {
                        failure = Some(f);
                        break;
                    }
                };
                let frame_payload = &c.buf[used + range.start..used + range.end];
                match head & 0x0f {
                    0x9 => {
                        let mask = [c.frame[2], c.frame[3], c.frame[4], c.frame[5]];
                        let pong = masked_frame(0xA, frame_payload, mask);
                        if let Err(f) = send_all(&mut c.stream, &pong) {
                            failure = Some(f);
                        }
                    }
                    0xA => {}
                    0x8 => {
                        if !c.closing {
                            failure = Some(Failure::Read);
                        }
                        c.alive = false;
                    }
                    0x1 if head & 0x80 != 0 && frame_payload == payload.as_slice() => {
                        let done = Instant::now();
                        if done >= measure_from && done < deadline {
                            let us = (done - c.sent).as_micros().min(u128::from(u32::MAX));
                            latencies.push(us as u32);
                            bytes += end as u64;
                        }
                        if !c.closing && done < deadline {
                            if let Err(f) = send_all(&mut c.stream, &c.frame) {
                                failure = Some(f);
                            }
                            c.sent = Instant::now();
                        }
                    }
                    _ => failure = Some(Failure::Status), // a wrong echo
                }
                used += end;
                if !c.alive {
                    break;
                }
            }
            c.buf.drain(..used.min(c.buf.len()));
            if let Some(f) = failure {
                errors.add(&f);
                c.alive = false;
            }
            if !c.alive {
                epoll_del(ep, c.stream.as_raw_fd());
            }
        }
    }

    latencies.sort_unstable();
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&v| f64::from(v)).sum::<f64>() / latencies.len() as f64
    };
    println!(
        "BENCH_JSON {{\"requests\":{},\"duration_us\":{},\"bytes\":{},\"p50_us\":{},\"p90_us\":{},\
         \"p99_us\":{},\"max_us\":{},\"mean_us\":{:.1},\"connect\":{},\"read\":{},\"write\":{},\
         \"status\":{},\"timeout\":{},\"clients\":{}}}",
        latencies.len(),
        duration.as_micros(),
        bytes,
        pct(&latencies, 50.0),
        pct(&latencies, 90.0),
        pct(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0),
        mean,
        errors.connect,
        errors.read,
        errors.write,
        errors.status,
        errors.timeout,
        clients,
    );
}
