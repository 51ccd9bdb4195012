//! A request on an ASGI connection, its response side: the head built from
//! `http.response.start` (`build_head`), body writes with chunk framing (`send_body`), error
//! responses, and the request's end (`finish`: the 500 or 504 when nothing was written, keep-alive
//! or close, the next request) with its bookkeeping (`record`).

use super::channel::bytes_of;
use super::conn::{Action, AfterFlush, AsgiConn, READ_SIZE};
use super::coro::is_done;
use super::request::Req;
use super::{ctx, EndRecord};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::time::Instant;

/// The response and the request's end.
impl AsgiConn {
    /// The response head for the first body message.
    pub(super) fn build_head(
        &mut self,
        py: Python<'_>,
        first_len: usize,
        more: bool,
    ) -> PyResult<Vec<u8>> {
        let stopping = self.draining();
        let uwsgi = self.uwsgi;
        let Some(r) = self.req.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/");
        out.extend_from_slice(r.version.as_bytes());
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(r.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut has_length = false;
        let mut chunked = false;
        let mut count = 0;
        if let Some(headers) = r.headers.take() {
            for item in headers.bind(py).try_iter()? {
                let item = item?;
                let name = item.get_item(0)?;
                let value = item.get_item(1)?;
                let name = bytes_of(&name)?;
                let value = bytes_of(&value)?;
                if name.eq_ignore_ascii_case(b"content-length") {
                    has_length = true;
                } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    if contains_ci(&value, b"chunked") {
                        chunked = true;
                    }
                } else if name.eq_ignore_ascii_case(b"connection") && contains_ci(&value, b"close")
                {
                    r.close_after = true;
                }
                out.extend_from_slice(&name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(&value);
                out.extend_from_slice(b"\r\n");
                count += 1;
            }
        }
        let no_body = r.status < 200 || r.status == 204 || r.status == 304;
        // A uwsgi-protocol peer other than headrace's router (nginx's uwsgi_pass) reads the
        // body until the connection closes and does not decode chunks.
        let plain_uwsgi = uwsgi && !r.keep_alive;
        if !has_length && !chunked && !no_body {
            if !more {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(first_len).as_bytes());
                out.extend_from_slice(b"\r\n");
                count += 1;
            } else if r.version == "1.1" && !plain_uwsgi {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                r.chunked_out = true;
                count += 1;
            } else {
                r.close_after = true;
            }
        }
        if chunked {
            r.chunked_out = true;
        }
        if stopping {
            r.close_after = true;
        }
        if r.close_after && !plain_uwsgi {
            out.extend_from_slice(b"connection: close\r\n");
            count += 1;
        } else if r.version == "1.0" {
            out.extend_from_slice(b"connection: keep-alive\r\n");
            count += 1;
        }
        out.extend_from_slice(b"\r\n");
        r.header_count = count;
        Ok(out)
    }

    /// `http.response.body` (after the start): returns whether the bytes are all written.
    pub(super) fn send_body(
        &mut self,
        py: Python<'_>,
        body: &[u8],
        more: bool,
    ) -> PyResult<Result<bool, ()>> {
        let head = if self.req.as_ref().is_some_and(|r| r.head_bytes == 0) {
            let h = self.build_head(py, body.len(), more)?;
            if let Some(r) = self.req.as_mut() {
                r.head_bytes = h.len();
            }
            h
        } else {
            Vec::new()
        };
        let Some(r) = self.req.as_mut() else {
            return Ok(Err(()));
        };
        let mut size_line = [0u8; 18];
        let mut size_len = 0;
        let mut parts: [&[u8]; 5] = [&head, b"", b"", b"", b""];
        if !r.head_only {
            if r.chunked_out {
                if !body.is_empty() {
                    let (line, n) = crate::http::response::chunk_size_line(body.len());
                    size_line = line;
                    size_len = n;
                }
            } else {
                parts[1] = body;
            }
            r.body_bytes += body.len() as u64;
        }
        let chunked = !r.head_only && r.chunked_out;
        if !more {
            r.complete = true;
        }
        if chunked {
            if !body.is_empty() {
                parts[1] = &size_line[..size_len];
                parts[2] = body;
                parts[3] = b"\r\n";
            }
            if !more {
                parts[4] = b"0\r\n\r\n";
            }
        }
        let written = self.write(py, &parts);
        if !more {
            self.wake(py);
        }
        if written.is_err() {
            if let Some(r) = self.req.as_mut() {
                r.write_error = true;
                r.gone = true;
            }
        }
        Ok(written)
    }

    /// The app failed before writing anything: a plain 500.
    fn error_500(&mut self, py: Python<'_>) {
        self.error_response(py, 500, b"Internal Server Error\n");
    }

    /// Answer the request with `status` and a plain-text `body` (nothing was written yet).
    fn error_response(&mut self, py: Python<'_>, status: u16, body: &[u8]) {
        if let Some(r) = self.req.as_mut() {
            r.started = true;
            r.status = status;
            let headers = PyList::empty(py);
            let _ = headers.append((
                PyBytes::new(py, b"content-type"),
                PyBytes::new(py, b"text/plain"),
            ));
            r.headers = Some(headers.into_any().unbind());
        }
        if let Err(e) = self.send_body(py, body, false) {
            e.print(py);
        }
    }

    /// The request's task ended (`tb`: the app raised; `cancelled`: the task was cancelled).
    pub(super) fn finish(
        &mut self,
        py: Python<'_>,
        id: u64,
        tb: Option<&str>,
        cancelled: bool,
        me: &Py<Self>,
    ) -> Option<Action> {
        if self.req.as_ref().is_none_or(|r| r.id != id) {
            return None;
        }
        let (gone, head_bytes, started, complete) = match &self.req {
            Some(r) => (r.gone, r.head_bytes, r.started, r.complete),
            None => return None,
        };
        if let Some(tb) = tb {
            if let Some(r) = self.req.as_mut() {
                r.exception = true;
                crate::log!(
                    "headrace: exception in ASGI app for {} {}:\n{}",
                    r.method,
                    String::from_utf8_lossy(&r.target),
                    tb.trim_end()
                );
            }
            if head_bytes == 0 && !gone {
                // Nothing was written yet (a start without a body counts as nothing).
                self.error_500(py);
            } else if let Some(r) = self.req.as_mut() {
                r.close_after = true;
            }
        } else if cancelled {
            let harakiri = self
                .shared
                .running
                .borrow()
                .iter()
                .find(|r| r.id == id && r.cancelled)
                .map(|r| r.user_limit);
            if let (Some(user), 0, false) = (harakiri, head_bytes, gone) {
                // Cancelled by a harakiri before it answered: say so.
                let body: &[u8] = if user == 0 {
                    b"Gateway Timeout: the request ran longer than --harakiri\n"
                } else {
                    b"Gateway Timeout: the request ran longer than its uwsgi.set_user_harakiri\n"
                };
                self.error_response(py, 504, body);
            }
            if let Some(r) = self.req.as_mut() {
                r.close_after = true;
            }
        } else if !started && !gone {
            crate::log!("headrace: the ASGI app returned without a response");
            self.error_500(py);
        } else if !complete {
            if let Some(r) = self.req.as_mut() {
                r.close_after = true;
            }
        }
        let r = self.req.take()?;
        self.record(&r);
        if let Some(w) = &r.waiter {
            if !is_done(py, w.bind(py)) {
                let _ = w.call_method0(py, intern!(py, "cancel"));
            }
        }
        if self.closed || r.gone {
            self.close(py);
            return None;
        }
        if r.close_after || !r.body_done() {
            // A body the app did not read would be taken for the next request.
            self.finish_connection(py);
            return None;
        }
        self.last_active = Instant::now();
        if self.pending().is_empty() && self.buf.capacity() > READ_SIZE {
            // A large body passed through: an idle connection keeps no large buffer.
            self.buf = Vec::new();
            self.start = 0;
        }
        self.resume(py);
        if self.out.is_empty() && self.file.is_none() {
            self.process(py, me)
        } else {
            self.after_flush = AfterFlush::Next;
            None
        }
    }

    /// The request's bookkeeping: counters, harakiri clock, log line, recycling.
    fn record(&self, r: &Req) {
        let Ok(c) = ctx() else {
            return;
        };
        let sh = &self.shared;
        // Held to the end of this function: `end` calls no Python code.
        let mut running = sh.running.borrow_mut();
        if let Some(at) = running.iter().position(|x| x.id == r.id) {
            running.remove(at);
        }
        let oldest = running
            .first()
            .map(|o| (o.start_ms, o.method.as_slice(), o.uri.as_slice()));
        let other;
        let protocol = match r.version.as_str() {
            "1.1" => "HTTP/1.1",
            "1.0" => "HTTP/1.0",
            v => {
                other = format!("HTTP/{v}");
                other.as_str()
            }
        };
        let (host, ua, referer) = r.log.as_ref().map_or(("", "", ""), |(h, u, f)| {
            (h.as_str(), u.as_str(), f.as_str())
        });
        let rec = EndRecord {
            status: if r.status == 0 { 500 } else { r.status },
            head_bytes: r.head_bytes,
            body_bytes: r.body_bytes,
            headers: r.header_count,
            vars: r.request_headers,
            elapsed_us: u64::try_from(r.t0.elapsed().as_micros()).unwrap_or(u64::MAX),
            start_micros: r.start_micros,
            exception: r.exception,
            write_error: r.write_error,
            read_error: r.gone && !r.complete,
            method: r.method.as_bytes(),
            uri: &r.target,
            protocol,
            remote: r.remote.as_deref().unwrap_or(&self.remote),
            host,
            user_agent: ua,
            referer,
            content_length: r.content_length,
        };
        super::end(c, &rec, oldest);
    }
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Reason phrases for the statuses apps commonly send.
pub(super) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}
