//! A link: one pooled connection from the router to a worker thread, over the worker's private
//! abstract unix socket, in the uwsgi protocol with `HEADRACE_KEEPALIVE` (the worker frames its
//! responses as HTTP/1.1, so one link carries many requests).
//!
//! A link may carry several requests at once (pipelining): the router writes every job it was
//! given in one write, and the worker's thread serves them in order from its buffer, so one
//! wakeup of each process carries many requests. Writing and reading run in one task with
//! `select!`, so a worker writing a large response never waits for the router to finish
//! writing requests (no deadlock), and a slow client only fills the relay queue.
//!
//! When a link fails, what happens to each job follows from that order: a job the worker was
//! answering is cut; the first unanswered job is retried elsewhere only when no byte of it can
//! have reached the app (never written, the worker had announced `Connection: close`, or the
//! worker reset the link with the job's head still unread and no body), else it gets 502; every
//! job behind it is retried, since the worker had not started it.
//!
//! A link the worker closes in the middle of a response (the app failed after its head went
//! out, or its body was shorter than its Content-Length) does not mean the worker died: when
//! its process is still there and not exiting, and its scoreboard slot still says ready, it
//! stays in rotation and the next job opens a new link. Only a worker that is gone (or dying)
//! is not chosen again until the scoreboard shows its successor. A write that fails because
//! the worker closed its end does not end the link at once: what the worker wrote before it
//! closed is read (and relayed) first, so the link ends the way the read side saw it.

use super::request::{Job, Queued, Reply, ReqInfo, Stage, RELAY_QUEUE_BYTES};
use super::Router;
use crate::http::{ChunkedDecoder, ReadBuf, Version};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Largest response head accepted from a worker.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Bytes read from a spilled body per step.
const FILE_CHUNK: usize = 256 * 1024;
/// How much a link reads from the worker at once.
const READ_CHUNK: usize = 256 * 1024;

/// A link's state as the router's dispatcher sees it.
#[derive(Default)]
pub struct LinkState {
    /// Jobs given to the link and not yet answered in full.
    pub in_flight: Cell<usize>,
    /// When the job at the head of the line was given to the link (`None`: idle).
    pub oldest: Cell<Option<Instant>>,
    /// Takes no more jobs: the worker announced `Connection: close`, or the link failed.
    pub closing: Cell<bool>,
}

/// The dispatcher's handle on a link: dropping it tells the link task to finish what it holds
/// and close.
pub struct LinkHandle {
    /// The worker thread it lands on.
    pub core: usize,
    /// Jobs for the link.
    pub tx: mpsc::UnboundedSender<Job>,
    /// Its state.
    pub state: Rc<LinkState>,
}

/// Connect to thread `core` of the worker in scoreboard slot `slot` and start the link's task.
pub fn open(
    router: &Rc<Router>,
    slot: usize,
    pid: i32,
    nonce: u64,
    core: usize,
) -> io::Result<LinkHandle> {
    let name = super::link_name(&super::socket_name(nonce, slot), core);
    let fd = crate::sys::unix::connect_abstract(name.as_bytes())?;
    let stream = UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Rc::new(LinkState::default());
    let link = Link {
        router: router.clone(),
        slot,
        pid,
        state: state.clone(),
        sent: VecDeque::new(),
        wq: VecDeque::new(),
        queued_bytes: 0,
        written: 0,
        rbuf: ReadBuf::with_capacity(16 * 1024),
        body: None,
        last_done: Instant::now(),
        write_closed: false,
        worker_closes: false,
    };
    tokio::task::spawn_local(link.run(stream, rx));
    Ok(LinkHandle { core, tx, state })
}

/// A job written (or being written) to the worker.
struct Sent {
    job: Job,
    /// Offset of its first byte in the link's outgoing stream.
    start: u64,
    /// When it was given to the link.
    at: Instant,
}

/// Outgoing bytes, in order.
enum Chunk {
    /// In memory; `.1` bytes of it already written.
    Bytes(Vec<u8>, usize),
    /// A spilled body still to be read: file, offset, bytes left.
    File(Arc<std::fs::File>, u64, u64),
}

/// How the body of the response being relayed ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    /// Chunked; `raw`: pass the framing through (HTTP/1.1 client), else decode (HTTP/1.0).
    Chunked {
        raw: bool,
    },
    UntilClose,
}

/// The response body being relayed for the job at the head of the line.
struct BodyRelay {
    framing: Framing,
    decoder: ChunkedDecoder,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Rc<Queued>,
    /// When its job was given to the link.
    at: Instant,
    /// Its job's uwsgi packet, to name the request if the response is cut.
    packet: Vec<u8>,
}

impl BodyRelay {
    /// The client queue is full (and the client still there).
    fn blocked(&self) -> bool {
        self.queued.bytes.get() >= RELAY_QUEUE_BYTES && !self.tx.is_closed()
    }

    fn send(&self, chunk: &[u8]) {
        // A client that went away no longer reads: the body is read from the worker and
        // dropped, so that the link stays usable.
        if chunk.is_empty() || self.tx.is_closed() {
            return;
        }
        self.queued.bytes.set(self.queued.bytes.get() + chunk.len());
        let _ = self.tx.send(chunk.to_vec());
    }
}

/// What the relay of a body did with the bytes at hand.
enum Pump {
    Done,
    NeedMore,
    Blocked,
}

/// Why a link ends.
enum End {
    /// No more jobs will come and none is pending.
    Idle,
    /// The worker closed the link (EOF).
    Eof,
    /// A socket error.
    Io(io::Error),
    /// The worker sent something that is not a valid response.
    Bad(String),
    /// No progress within `--socket-timeout` while a job waited.
    Timeout,
    /// The client of the link's only job went away: the link is closed so that the worker sees
    /// the disconnect (an ASGI app gets `http.disconnect`, a WSGI response's write fails)
    /// instead of serving a request nobody waits for.
    ClientGone,
}

struct Link {
    router: Rc<Router>,
    slot: usize,
    pid: i32,
    state: Rc<LinkState>,
    sent: VecDeque<Sent>,
    wq: VecDeque<Chunk>,
    /// Bytes ever queued for writing, and written.
    queued_bytes: u64,
    written: u64,
    rbuf: ReadBuf,
    /// The head-of-line job's response body, while it is relayed.
    body: Option<BodyRelay>,
    /// When the last response completed (for the worker's service-time estimate).
    last_done: Instant,
    /// The worker closed its end: nothing more is written (see [`Link::write_failed`]).
    write_closed: bool,
    /// The worker announced that it closes the link after the current response
    /// (`Connection: close`, or a body delimited by the close): it started no job behind it.
    worker_closes: bool,
}

type Fill = tokio::task::JoinHandle<io::Result<Vec<u8>>>;

impl Link {
    async fn run(mut self, stream: UnixStream, mut rx: mpsc::UnboundedReceiver<Job>) {
        let timeout = self.router.config.socket_timeout;
        let mut rx_open = true;
        let mut fill: Option<Fill> = None;
        let mut last_progress = Instant::now();
        let end = loop {
            if let Err(e) = self.process() {
                break e;
            }
            // Every job already handed to the link goes out in this turn, in one write: that is
            // what makes one wakeup of the worker carry many requests.
            while rx_open && !self.state.closing.get() {
                match rx.try_recv() {
                    Ok(job) => self.take(job, &mut last_progress),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => rx_open = false,
                }
            }
            if !self.waiting() && (!rx_open || self.state.closing.get()) {
                break End::Idle;
            }
            if matches!(self.wq.front(), Some(Chunk::Bytes(..))) {
                if let Err(e) = self.write(&stream) {
                    if let Some(end) = self.write_failed(e) {
                        break end;
                    }
                }
            }
            if fill.is_none() {
                fill = self.start_fill();
            }
            let blocked = self.body.as_ref().is_some_and(BodyRelay::blocked);
            let want_write = matches!(self.wq.front(), Some(Chunk::Bytes(..)));
            let room = self.body.as_ref().map(|b| b.queued.clone());
            let deadline = last_progress + timeout;
            // Only a lone job is cut with its client: with jobs pipelined behind it the worker
            // may already be serving the next one, which must not run twice; the gone client's
            // response is then read and dropped.
            let lone = usize::from(self.body.is_some()) + self.sent.len() == 1;
            tokio::select! {
                () = client_gone(&mut self.sent, self.body.as_ref()), if lone => break End::ClientGone,
                job = rx.recv(), if rx_open && !self.state.closing.get() => match job {
                    Some(job) => self.take(job, &mut last_progress),
                    None => rx_open = false,
                },
                r = stream.readable(), if !blocked => {
                    if let Err(e) = r {
                        break End::Io(e);
                    }
                    match self.read(&stream) {
                        Ok(0) => break End::Eof,
                        Ok(_) => last_progress = Instant::now(),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => break End::Io(e),
                    }
                },
                r = stream.writable(), if want_write => {
                    if let Err(e) = r {
                        break End::Io(e);
                    }
                    if let Err(e) = self.write(&stream) {
                        if let Some(end) = self.write_failed(e) {
                            break end;
                        }
                    }
                },
                () = async { if let Some(q) = &room { q.room.notified().await } }, if blocked => {},
                r = async { fill.as_mut().expect("guarded by is_some").await }, if fill.is_some() => {
                    fill = None;
                    match r {
                        Ok(Ok(_)) if self.write_closed => {}
                        Ok(Ok(bytes)) if !bytes.is_empty() => self.filled(bytes),
                        Ok(Ok(_)) => break End::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "the spilled body file is shorter than its length")),
                        Ok(Err(e)) => break End::Io(e),
                        Err(e) => break End::Io(io::Error::other(e.to_string())),
                    }
                },
                () = tokio::time::sleep_until(deadline.into()), if self.waiting() && !blocked => {
                    break End::Timeout;
                },
            }
            if !self.waiting() {
                last_progress = Instant::now();
            }
        };
        rx.close();
        let mut unsent = Vec::new();
        while let Ok(job) = rx.try_recv() {
            unsent.push(job);
        }
        self.finish(&end, unsent);
    }

    /// A job handed to the link: the timeout runs from now if the link was idle. One whose
    /// client already left is dropped unsent.
    fn take(&mut self, job: Job, last_progress: &mut Instant) {
        if job.abandoned() {
            self.state
                .in_flight
                .set(self.state.in_flight.get().saturating_sub(1));
            if !self.waiting() {
                self.state.oldest.set(None);
            }
            return;
        }
        if !self.waiting() {
            *last_progress = Instant::now();
        }
        self.push(job);
    }

    /// A write to the worker failed. `None`: the worker closed its end (EPIPE, or a reset);
    /// the link takes no more jobs and writes nothing more, but goes on reading, since the
    /// responses the worker wrote before it closed (typically the one after which it closed:
    /// an app that failed mid-response, with requests pipelined behind it) are still to be
    /// read. The read side then ends the link (EOF or the reset). Else the error ends it.
    fn write_failed(&mut self, e: io::Error) -> Option<End> {
        match e.kind() {
            io::ErrorKind::WouldBlock => None,
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                self.write_closed = true;
                self.wq.clear();
                self.state.closing.set(true);
                None
            }
            _ => Some(End::Io(e)),
        }
    }

    /// Read the next piece of a spilled body, off the runtime thread, when one is next to go.
    fn start_fill(&self) -> Option<Fill> {
        let Some(Chunk::File(f, off, left)) = self.wq.front() else {
            return None;
        };
        let (f, off, n) = (f.clone(), *off, (*left).min(FILE_CHUNK as u64));
        Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; usize::try_from(n).unwrap_or(FILE_CHUNK)];
            let got = f.read_at(&mut buf, off)?;
            buf.truncate(got);
            Ok(buf)
        }))
    }

    /// Something is owed by the worker.
    fn waiting(&self) -> bool {
        !self.sent.is_empty() || self.body.is_some()
    }

    /// Queue a job's bytes for writing, after those already queued (small ones coalesce into
    /// one buffer: one write carries them all).
    fn push(&mut self, job: Job) {
        job.stage.set(Stage::Sent);
        let start = self.queued_bytes;
        self.queued_bytes += job.packet.len() as u64 + job.body.len();
        if !matches!(self.wq.back(), Some(Chunk::Bytes(..))) {
            self.wq.push_back(Chunk::Bytes(Vec::new(), 0));
        }
        let Some(Chunk::Bytes(tail, _)) = self.wq.back_mut() else {
            return;
        };
        tail.extend_from_slice(&job.packet);
        match &*job.body {
            super::request::Body::Memory(v) => tail.extend_from_slice(v),
            super::request::Body::File(f, len) => {
                if *len > 0 {
                    self.wq.push_back(Chunk::File(f.clone(), 0, *len));
                }
            }
        }
        let now = Instant::now();
        if self.sent.is_empty() {
            self.state.oldest.set(Some(now));
        }
        self.sent.push_back(Sent {
            job,
            start,
            at: now,
        });
    }

    /// Bytes of a spilled body arrived from the file: they go out before the rest of it.
    fn filled(&mut self, bytes: Vec<u8>) {
        let n = bytes.len() as u64;
        if let Some(Chunk::File(_, off, left)) = self.wq.front_mut() {
            *off += n;
            *left = left.saturating_sub(n);
            if *left == 0 {
                self.wq.pop_front();
            }
        }
        self.wq.push_front(Chunk::Bytes(bytes, 0));
    }

    fn write(&mut self, stream: &UnixStream) -> io::Result<()> {
        while let Some(Chunk::Bytes(v, pos)) = self.wq.front_mut() {
            if *pos >= v.len() {
                self.wq.pop_front();
                continue;
            }
            let n = stream.try_write(&v[*pos..])?;
            *pos += n;
            self.written += n as u64;
        }
        Ok(())
    }

    fn read(&mut self, stream: &UnixStream) -> io::Result<usize> {
        let spare = self.rbuf.spare(READ_CHUNK, self.rbuf.len() + READ_CHUNK);
        let n = stream.try_read(spare)?;
        self.rbuf.commit(n);
        Ok(n)
    }

    /// Relay every complete response in the buffer.
    fn process(&mut self) -> Result<(), End> {
        loop {
            if let Some(body) = &mut self.body {
                match pump(body, &mut self.rbuf)? {
                    Pump::Done => {
                        body.queued.complete.set(true);
                        let at = body.at;
                        self.body = None;
                        self.done(at);
                        continue;
                    }
                    Pump::NeedMore | Pump::Blocked => return Ok(()),
                }
            }
            if self.rbuf.is_empty() {
                return Ok(());
            }
            let Some(front) = self.sent.front() else {
                return Err(End::Bad(
                    "the worker sent bytes no request asked for".to_owned(),
                ));
            };
            let head = match parse_head(self.rbuf.filled(), front.job.info) {
                Ok(Some(h)) => h,
                Ok(None) if self.rbuf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(End::Bad("response head too large".to_owned()))
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Bad(e)),
            };
            self.rbuf.consume(head.len);
            if head.close {
                // The worker serves nothing after this response on this link.
                self.worker_closes = true;
                self.state.closing.set(true);
            }
            let info = front.job.info;
            let no_body = info.is_head || crate::http::response::status_has_no_body(head.status);
            let whole = head
                .content_length
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| no_body || n <= self.rbuf.len());
            if no_body || whole.is_some() {
                let mut out = head.out;
                if !no_body {
                    let n = whole.unwrap_or(0);
                    out.extend_from_slice(&self.rbuf.filled()[..n]);
                    self.rbuf.consume(n);
                }
                if let Some(s) = self.sent.pop_front() {
                    let _ = s.job.reply.send(Reply::Whole(out, head.keep));
                    self.done(s.at);
                }
                continue;
            }
            let framing = if let Some(n) = head.content_length {
                Framing::Length(n)
            } else if head.chunked {
                Framing::Chunked {
                    raw: info.version == Version::Http11,
                }
            } else {
                Framing::UntilClose
            };
            let (tx, chunks) = mpsc::unbounded_channel();
            let queued = Rc::new(Queued::default());
            let (at, packet) = match self.sent.pop_front() {
                Some(s) => {
                    let _ = s.job.reply.send(Reply::Stream {
                        head: head.out,
                        keep: head.keep && framing != Framing::UntilClose,
                        chunks,
                        queued: queued.clone(),
                    });
                    (s.at, s.job.packet)
                }
                None => (Instant::now(), Vec::new()),
            };
            if framing == Framing::UntilClose {
                // Delimited by the close: nothing more can follow on this link.
                self.worker_closes = true;
                self.state.closing.set(true);
            }
            self.body = Some(BodyRelay {
                framing,
                decoder: ChunkedDecoder::new(0),
                tx,
                queued,
                at,
                packet,
            });
        }
    }

    /// The head-of-line job, given to the link at `at`, is answered in full.
    fn done(&mut self, at: Instant) {
        let now = Instant::now();
        // Its share of the worker's time: from when it could start (given to the link, or the
        // previous response done) to its own end.
        let service = now.duration_since(at.max(self.last_done));
        self.last_done = now;
        self.state
            .in_flight
            .set(self.state.in_flight.get().saturating_sub(1));
        let idle = self.sent.is_empty() && self.body.is_none();
        self.state.oldest.set((!idle).then_some(now));
        self.router.served(self.slot, self.pid, service);
        self.router.dispatch_waiting();
    }

    /// The link ends: settle every job it still holds.
    fn finish(mut self, end: &End, unsent: Vec<Job>) {
        let reset = matches!(end, End::Io(e) if e.kind() == io::ErrorKind::ConnectionReset);
        // The link failed with work pending. Only a worker whose process is gone or going is
        // given up: one that is alive was slow, went silent or answered garbage for this
        // request, and serves the next one on a new link once it is idle.
        let failed = !matches!(end, End::Idle | End::ClientGone)
            && (!self.sent.is_empty() || self.body.is_some());
        let alive = failed && self.router.worker_serving(self.slot, self.pid);
        let worker_failed = failed && !alive;
        // A job whose response was being relayed is cut short, unless its body was delimited by
        // the close; every job behind it was not started.
        let answering = self.body.is_some();
        // The worker is alive and cut the response it was relaying (see below).
        let mut live_cut = false;
        if let Some(body) = self.body.take() {
            let complete = matches!(end, End::Eof) && body.framing == Framing::UntilClose;
            body.queued.complete.set(complete);
            if complete {
                self.router.served(self.slot, self.pid, Duration::ZERO);
            } else if failed {
                // The response broke off in the middle (the worker closed the link because its
                // app failed after the head, or the body fell short of its length; or it sent
                // nothing for --socket-timeout, or bytes that are no body): nothing can follow
                // the head the client already has, so its connection closes (the body is
                // truncated), and so does the link, which tells the worker.
                let how = match end {
                    End::Io(e) => format!("broke its link ({e})"),
                    End::Timeout => "sent nothing for --socket-timeout".to_owned(),
                    End::Bad(why) => format!("sent a malformed response ({why})"),
                    _ => "closed its link".to_owned(),
                };
                crate::log!(
                    "headrace router: worker (pid {}) {how} in the middle of the response to {}; the client's connection is closed{}",
                    self.pid,
                    describe(&body.packet),
                    if alive { "" } else { " (the worker is gone)" }
                );
                live_cut = alive;
            }
        }
        let closing = self.worker_closes;
        let mut retry = Vec::new();
        let sole = self.sent.len() == 1;
        for (i, s) in std::mem::take(&mut self.sent).into_iter().enumerate() {
            let untouched = s.start >= self.written
                || closing
                || answering
                || i > 0
                || (reset && sole && s.job.body.is_empty());
            if untouched {
                retry.push(s.job);
                continue;
            }
            let why = match end {
                End::Timeout => {
                    crate::log!(
                        "headrace router: 504 Gateway Timeout: worker (pid {}) sent no response within --socket-timeout",
                        self.pid
                    );
                    let _ = s.job.reply.send(Reply::Timeout);
                    continue;
                }
                End::Eof => format!(
                    "worker (pid {}) closed the connection before answering",
                    self.pid
                ),
                End::Io(e) => format!("worker (pid {}): {e}", self.pid),
                End::Bad(why) => format!("worker (pid {}): {why}", self.pid),
                End::Idle => "the link closed".to_owned(),
                // Nobody reads this reply: the client is gone.
                End::ClientGone => "the client went away".to_owned(),
            };
            let _ = s.job.reply.send(Reply::BadGateway(why));
        }
        retry.extend(unsent);
        self.state.in_flight.set(0);
        self.state.closing.set(true);
        self.router
            .link_ended(self.slot, self.pid, &self.state, worker_failed && !closing);
        self.router.retry(retry, !live_cut);
    }
}

/// `METHOD URI` of a job's uwsgi packet, for the log.
fn describe(packet: &[u8]) -> String {
    let Ok(Some(p)) = crate::uwsgi_proto::parse(packet, usize::MAX) else {
        return "a request".to_owned();
    };
    let var = |i: Option<usize>| {
        i.and_then(|i| p.vars.get(i))
            .map_or(std::borrow::Cow::Borrowed("-"), |(_, v)| {
                String::from_utf8_lossy(&packet[v.clone()])
            })
    };
    format!("{} {}", var(p.method), var(p.uri))
}

/// Resolves when nobody waits any longer for the answer the link owes: the client dropped the
/// reply of the first job, or the body being relayed (`body`, which then comes first).
async fn client_gone(sent: &mut VecDeque<Sent>, body: Option<&BodyRelay>) {
    match (body, sent.front_mut()) {
        (Some(b), _) => b.tx.closed().await,
        (None, Some(s)) => s.job.reply.closed().await,
        (None, None) => std::future::pending().await,
    }
}

/// Relay what the buffer holds of the current body.
fn pump(body: &mut BodyRelay, rbuf: &mut ReadBuf) -> Result<Pump, End> {
    loop {
        match body.framing {
            Framing::Length(0) => return Ok(Pump::Done),
            Framing::Chunked { .. } if body.decoder.is_done() => return Ok(Pump::Done),
            _ => {}
        }
        if body.blocked() {
            return Ok(Pump::Blocked);
        }
        if rbuf.is_empty() {
            return Ok(Pump::NeedMore);
        }
        match body.framing {
            Framing::Length(left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(rbuf.len());
                body.send(&rbuf.filled()[..take]);
                rbuf.consume(take);
                body.framing = Framing::Length(left - take as u64);
            }
            Framing::Chunked { raw } => {
                let input = rbuf.filled();
                let (used, data) = body
                    .decoder
                    .step(input)
                    .map_err(|e| End::Bad(format!("bad chunked response: {e}")))?;
                body.send(if raw { &input[..used] } else { &input[data] });
                rbuf.consume(used);
                if used == 0 {
                    return Ok(Pump::NeedMore);
                }
            }
            Framing::UntilClose => {
                body.send(rbuf.filled());
                let n = rbuf.len();
                rbuf.consume(n);
            }
        }
    }
}

/// The parts of the worker's response head the relay needs.
struct Head {
    len: usize,
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    /// The client connection may carry another request after this response.
    keep: bool,
    /// The head to send the client.
    out: Vec<u8>,
}

fn parse_head(buf: &[u8], info: ReqInfo) -> Result<Option<Head>, String> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid response head from the worker: {e}")),
    };
    let status = resp.code.unwrap_or(502);
    let mut head = Head {
        len,
        status,
        content_length: None,
        chunked: false,
        close: false,
        keep: false,
        out: Vec::with_capacity(len + 32),
    };
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            head.content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            head.close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let http10 = info.version == Version::Http10;
    let no_body = info.is_head || crate::http::response::status_has_no_body(status);
    let dechunk = head.chunked && http10 && !no_body;
    let framed = no_body || head.content_length.is_some() || (head.chunked && !dechunk);
    head.keep = info.keep_alive && framed;
    // The status line as the worker wrote it, in the client's HTTP version; hop-by-hop
    // headers are the router's.
    let line_end = buf.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
    let line = &buf[..line_end];
    if http10 && line.starts_with(b"HTTP/1.1") {
        head.out.extend_from_slice(b"HTTP/1.0");
        head.out.extend_from_slice(&line[8..]);
    } else {
        head.out.extend_from_slice(line);
    }
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"keep-alive")
            || (dechunk && name.eq_ignore_ascii_case(b"transfer-encoding"))
        {
            continue;
        }
        head.out.extend_from_slice(name);
        head.out.extend_from_slice(b": ");
        head.out.extend_from_slice(h.value);
        head.out.extend_from_slice(b"\r\n");
    }
    if !head.keep {
        head.out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        head.out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    head.out.extend_from_slice(b"\r\n");
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: Version, keep_alive: bool, is_head: bool) -> ReqInfo {
        ReqInfo {
            version,
            keep_alive,
            is_head,
        }
    }

    #[test]
    fn response_heads() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi";
        let h = parse_head(ok, info(Version::Http11, true, false))
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.keep, h.close),
            (200, Some(2), true, false)
        );
        assert_eq!(h.out, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        // HTTP/1.0 clients get an HTTP/1.0 status line and an explicit keep-alive.
        let h = parse_head(ok, info(Version::Http10, true, false))
            .unwrap()
            .unwrap();
        assert_eq!(
            h.out,
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
        );
        // A chunked body for an HTTP/1.0 client is de-chunked and close-delimited.
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let h = parse_head(chunked, info(Version::Http10, true, false))
            .unwrap()
            .unwrap();
        assert!(h.chunked && !h.keep);
        assert_eq!(h.out, b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n");
        // The worker's close is seen; no length and no chunking means close-delimited.
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        let h = parse_head(close, info(Version::Http11, true, false))
            .unwrap()
            .unwrap();
        assert!(h.close && !h.keep);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\n", info(Version::Http11, true, false))
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"garbage\r\n\r\n", info(Version::Http11, true, false)).is_err());
    }

    fn job(reply: tokio::sync::oneshot::Sender<Reply>) -> Job {
        Job {
            packet: Vec::new(),
            body: Rc::new(super::super::request::Body::Memory(Vec::new())),
            info: info(Version::Http11, true, false),
            reply,
            stage: Rc::new(Cell::new(Stage::Sent)),
            since: Instant::now(),
            attempts: 0,
        }
    }

    /// Whether `f` is ready at its first poll.
    async fn ready_now(f: impl std::future::Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::ZERO, f).await.is_ok()
    }

    #[test]
    fn a_link_watches_the_client_of_what_it_owes_first() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut none = VecDeque::new();
            assert!(!ready_now(client_gone(&mut none, None)).await);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut sent = VecDeque::from([Sent {
                job: job(tx),
                start: 0,
                at: Instant::now(),
            }]);
            assert!(!ready_now(client_gone(&mut sent, None)).await, "awaited");
            // A response body being relayed comes before the next job's reply.
            let (btx, brx) = mpsc::unbounded_channel();
            let body = BodyRelay {
                framing: Framing::Length(10),
                decoder: ChunkedDecoder::new(0),
                tx: btx,
                queued: Rc::new(Queued::default()),
                at: Instant::now(),
                packet: Vec::new(),
            };
            drop(rx);
            assert!(
                ready_now(client_gone(&mut sent, None)).await,
                "reply dropped"
            );
            assert!(
                !ready_now(client_gone(&mut sent, Some(&body))).await,
                "body read"
            );
            drop(brx);
            assert!(
                ready_now(client_gone(&mut sent, Some(&body))).await,
                "body dropped"
            );
        });
    }

    #[test]
    fn describes_a_request_by_its_packet() {
        let mut packet = Vec::new();
        crate::uwsgi_proto::begin_packet(&mut packet);
        crate::uwsgi_proto::push_var(&mut packet, b"REQUEST_METHOD", b"GET");
        crate::uwsgi_proto::push_var(&mut packet, b"REQUEST_URI", b"/fail?x=1");
        crate::uwsgi_proto::finish_packet(&mut packet, 0).unwrap();
        let mut no_uri = Vec::new();
        crate::uwsgi_proto::begin_packet(&mut no_uri);
        crate::uwsgi_proto::push_var(&mut no_uri, b"REQUEST_METHOD", b"POST");
        crate::uwsgi_proto::finish_packet(&mut no_uri, 0).unwrap();
        for (input, want) in [
            (&packet[..], "GET /fail?x=1"),
            (&no_uri[..], "POST -"),
            (&packet[..3], "a request"),
            (&[9, 0, 0, 0][..], "a request"),
        ] {
            assert_eq!(describe(input), want);
        }
    }

    #[test]
    fn relays_chunked_bodies_raw_or_decoded() {
        for (raw, want) in [(true, &b"2\r\nhi\r\n0\r\n\r\n"[..]), (false, &b"hi"[..])] {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut body = BodyRelay {
                framing: Framing::Chunked { raw },
                decoder: ChunkedDecoder::new(0),
                tx,
                queued: Rc::new(Queued::default()),
                at: Instant::now(),
                packet: Vec::new(),
            };
            let mut rbuf = ReadBuf::with_capacity(64);
            rbuf.extend(b"2\r\nhi\r\n0\r\n\r\nHTTP/1.1");
            assert!(matches!(pump(&mut body, &mut rbuf), Ok(Pump::Done)));
            assert_eq!(rbuf.filled(), b"HTTP/1.1", "the next response stays");
            let mut got = Vec::new();
            while let Ok(c) = rx.try_recv() {
                got.extend(c);
            }
            assert_eq!(got, want);
        }
    }
}
