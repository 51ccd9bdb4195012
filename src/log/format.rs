//! `--log-format`: uWSGI's request log format (`%(addr) - %(user) [%(ltime)] "%(method) %(uri)
//! %(proto)" %(status) %(size)`), compiled once at startup into a list of parts, rendered per
//! request without parsing. The parser is uWSGI's state machine (core/logging.c,
//! `uwsgi_build_log_format`) so odd formats (`%(`, `%()`, unclosed variables) come out as
//! uWSGI writes them, and each variable is formatted as its `uwsgi_lf_*` function does.

use std::fmt::Write as _;

/// One variable of uWSGI's registered log chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `%(addr)`: REMOTE_ADDR (or X-Forwarded-For with `--log-x-forwarded-for`).
    Addr,
    /// `%(user)`: REMOTE_USER.
    User,
    /// `%(host)`: HTTP_HOST.
    Host,
    /// `%(proto)`: SERVER_PROTOCOL.
    Proto,
    /// `%(uagent)`: HTTP_USER_AGENT.
    Uagent,
    /// `%(referer)`: HTTP_REFERER.
    Referer,
    /// `%(uri)`: REQUEST_URI.
    Uri,
    /// `%(method)`: REQUEST_METHOD.
    Method,
    /// `%(status)`: response status.
    Status,
    /// `%(rsize)`: response body bytes.
    Rsize,
    /// `%(hsize)`: response head bytes.
    Hsize,
    /// `%(size)`: head and body bytes.
    Size,
    /// `%(cl)`: the request's Content-Length.
    Cl,
    /// `%(micros)`: response time in microseconds.
    Micros,
    /// `%(msecs)`: response time in milliseconds.
    Msecs,
    /// `%(secs)`: response time in seconds, `%f`.
    Secs,
    /// `%(tmsecs)`: request start, Unix milliseconds.
    Tmsecs,
    /// `%(tmicros)`: request start, Unix microseconds.
    Tmicros,
    /// `%(time)`: request start, Unix seconds.
    Time,
    /// `%(ltime)`: request start as `01/Dec/2026:09:00:00 +0000`.
    Ltime,
    /// `%(ftime)`: request start formatted with `--log-date`'s strftime format (with
    /// `--logformat-strftime`), else as `ltime`.
    Ftime,
    /// `%(ctime)`: request start as ctime(3) without the newline.
    Ctime,
    /// `%(epoch)`: now, Unix seconds.
    Epoch,
    /// `%(pid)`: worker pid.
    Pid,
    /// `%(wid)`: worker id.
    Wid,
    /// `%(switches)`: always 1 (no async switches in headrace).
    Switches,
    /// `%(vars)`: CGI variables in the request.
    Vars,
    /// `%(core)`: the serving thread.
    Core,
    /// `%(vsz)`: address space, bytes.
    Vsz,
    /// `%(rss)`: resident set, bytes.
    Rss,
    /// `%(vszM)`: address space, MB.
    VszM,
    /// `%(rssM)`: resident set, MB.
    RssM,
    /// `%(pktsize)`: the request's variables as a uwsgi packet would count them.
    Pktsize,
    /// `%(modifier1)`: always 0 (WSGI).
    Modifier1,
    /// `%(modifier2)`: always 0.
    Modifier2,
    /// `%(headers)`: response header count.
    Headers,
    /// `%(werr)`: write errors.
    Werr,
    /// `%(rerr)`: read errors.
    Rerr,
    /// `%(ioerr)`: read and write errors.
    Ioerr,
}

impl Var {
    fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "addr" => Self::Addr,
            "user" => Self::User,
            "host" => Self::Host,
            "proto" => Self::Proto,
            "uagent" => Self::Uagent,
            "referer" => Self::Referer,
            "uri" => Self::Uri,
            "method" => Self::Method,
            "status" => Self::Status,
            "rsize" => Self::Rsize,
            "hsize" => Self::Hsize,
            "size" => Self::Size,
            "cl" => Self::Cl,
            "micros" => Self::Micros,
            "msecs" => Self::Msecs,
            "secs" => Self::Secs,
            "tmsecs" => Self::Tmsecs,
            "tmicros" => Self::Tmicros,
            "time" => Self::Time,
            "ltime" => Self::Ltime,
            "ftime" => Self::Ftime,
            "ctime" => Self::Ctime,
            "epoch" => Self::Epoch,
            "pid" => Self::Pid,
            "wid" => Self::Wid,
            "switches" => Self::Switches,
            "vars" => Self::Vars,
            "core" => Self::Core,
            "vsz" => Self::Vsz,
            "rss" => Self::Rss,
            "vszM" => Self::VszM,
            "rssM" => Self::RssM,
            "pktsize" => Self::Pktsize,
            "modifier1" => Self::Modifier1,
            "modifier2" => Self::Modifier2,
            "headers" => Self::Headers,
            "werr" => Self::Werr,
            "rerr" => Self::Rerr,
            "ioerr" => Self::Ioerr,
            _ => return None,
        })
    }
}

/// One piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// A registered variable.
    Var(Var),
    /// `%(var.NAME)`: a request variable; the index into [`Format::request_vars`].
    Request(usize),
    /// `%(metric.NAME)`: headrace has no uWSGI metrics, and uWSGI writes 0 for an unknown one.
    Metric,
    /// Any other name: a "logvar" the app sets with `uwsgi.set_logvar(NAME, value)` (`-`
    /// when it did not).
    Logvar(String),
}

/// A compiled `--log-format`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Format {
    /// The parts in order (a newline follows the last).
    pub parts: Vec<Part>,
    /// The request variables `%(var.NAME)` reads, in the order of their first use.
    pub request_vars: Vec<String>,
    /// `--log-date=FORMAT` when `--logformat-strftime` is on: what `%(ftime)` uses.
    pub ftime: Option<String>,
}

impl Format {
    /// Compile `format` with uWSGI's parser.
    #[must_use]
    pub fn compile(format: &str, ftime: Option<String>) -> Self {
        let mut f = Self {
            parts: Vec::new(),
            request_vars: Vec::new(),
            ftime,
        };
        let b = format.as_bytes();
        let mut state = 0u8;
        let mut current = 0usize;
        let mut logvar: Option<usize> = None;
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'%' => {
                    if state == 0 {
                        state = 1;
                    }
                }
                b'(' => {
                    if state == 1 {
                        state = 2;
                    }
                }
                b')' => {
                    if let Some(start) = logvar.take() {
                        f.push_var(format.get(start..i).unwrap_or(""));
                        state = 0;
                        current = i + 1;
                    }
                }
                _ => {
                    if state == 2 {
                        // The text before `%(` (uWSGI cuts the two bytes it just saw).
                        let end = i.saturating_sub(2).max(current);
                        f.push_text(format.get(current..end).unwrap_or(""));
                        logvar = Some(i);
                    }
                    state = 0;
                }
            }
        }
        // uWSGI adds the tail from `current`, even when an unclosed variable began after it.
        f.push_text(format.get(current..).unwrap_or(""));
        f
    }

    fn push_text(&mut self, s: &str) {
        if !s.is_empty() {
            self.parts.push(Part::Text(s.to_owned()));
        }
    }

    fn push_var(&mut self, name: &str) {
        let part = if let Some(v) = Var::by_name(name) {
            Part::Var(v)
        } else if let Some(var) = name.strip_prefix("var.") {
            let i = if let Some(i) = self.request_vars.iter().position(|v| v == var) {
                i
            } else {
                self.request_vars.push(var.to_owned());
                self.request_vars.len() - 1
            };
            Part::Request(i)
        } else if name.starts_with("metric.") {
            Part::Metric
        } else {
            Part::Logvar(name.to_owned())
        };
        self.parts.push(part);
    }

    /// Whether any part reads the given variable.
    #[must_use]
    pub fn uses(&self, wanted: &[Var]) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v) if wanted.contains(v)))
    }

    /// Render one request's line, newline included.
    #[must_use]
    pub fn render(&self, r: &super::RequestLog<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut s = String::new();
        for part in &self.parts {
            s.clear();
            let bytes: &[u8] = match part {
                Part::Text(t) => {
                    out.extend_from_slice(t.as_bytes());
                    continue;
                }
                Part::Var(v) => self.var(*v, r, &mut s),
                Part::Request(i) => r
                    .request_vars
                    .get(*i)
                    .and_then(Option::as_deref)
                    .unwrap_or("")
                    .as_bytes(),
                Part::Metric => b"0",
                Part::Logvar(name) => r
                    .logvars
                    .iter()
                    .find(|(k, _)| k.as_slice() == name.as_bytes())
                    .map_or(&b""[..], |(_, v)| v.as_slice()),
            };
            // uWSGI writes `-` for any variable that came out empty.
            out.extend_from_slice(if bytes.is_empty() { b"-" } else { bytes });
        }
        out.push(b'\n');
        out
    }

    fn var<'a>(&self, v: Var, r: &'a super::RequestLog<'a>, s: &'a mut String) -> &'a [u8] {
        let elapsed = r.micros;
        let _ = match v {
            Var::Addr => return r.remote_addr.as_bytes(),
            Var::User => return r.remote_user.as_bytes(),
            Var::Host => return r.host.as_bytes(),
            Var::Proto => return r.protocol.as_bytes(),
            Var::Uagent => return r.user_agent.as_bytes(),
            Var::Referer => return r.referer.as_bytes(),
            Var::Uri => return r.uri,
            Var::Method => return r.method,
            Var::Status => write!(s, "{}", r.status),
            Var::Rsize => write!(s, "{}", r.body_bytes),
            Var::Hsize => write!(s, "{}", r.head_bytes),
            Var::Size => write!(s, "{}", r.body_bytes + r.head_bytes as u64),
            Var::Cl => write!(s, "{}", r.content_length),
            Var::Micros => write!(s, "{elapsed}"),
            Var::Msecs => write!(s, "{}", elapsed / 1000),
            Var::Secs => {
                // uwsgi_float2str: a C float printed with "%f" into 11 bytes (10 characters).
                #[allow(
                    clippy::cast_precision_loss,
                    clippy::cast_possible_truncation,
                    reason = "uWSGI passes the value as a C float"
                )]
                let secs = (elapsed as f64 / 1_000_000.0) as f32;
                let _ = write!(s, "{secs:.6}");
                s.truncate(10);
                Ok(())
            }
            Var::Tmsecs => write!(s, "{}", r.start_micros / 1000),
            Var::Tmicros => write!(s, "{}", r.start_micros),
            Var::Time => write!(s, "{}", r.start_micros / 1_000_000),
            Var::Ltime => {
                s.push_str(&crate::sys::time::strftime(
                    "%d/%b/%Y:%H:%M:%S %z",
                    start_secs(r),
                ));
                Ok(())
            }
            Var::Ftime => {
                let fmt = self.ftime.as_deref().unwrap_or("%d/%b/%Y:%H:%M:%S %z");
                s.push_str(&crate::sys::time::strftime(fmt, start_secs(r)));
                Ok(())
            }
            Var::Ctime => {
                s.push_str(&crate::sys::time::ctime(start_secs(r)));
                Ok(())
            }
            Var::Epoch => write!(
                s,
                "{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ),
            Var::Pid => write!(s, "{}", r.pid),
            Var::Wid => write!(s, "{}", r.wid),
            Var::Switches => write!(s, "1"),
            Var::Vars => write!(s, "{}", r.vars),
            Var::Core => write!(s, "{}", r.core),
            Var::Vsz => write!(s, "{}", r.memory.1),
            Var::Rss => write!(s, "{}", r.memory.0),
            Var::VszM => write!(s, "{}", r.memory.1 / 1024 / 1024),
            Var::RssM => write!(s, "{}", r.memory.0 / 1024 / 1024),
            Var::Pktsize => write!(s, "{}", r.vars_bytes),
            Var::Modifier1 | Var::Modifier2 => write!(s, "0"),
            Var::Headers => write!(s, "{}", r.headers),
            Var::Werr => write!(s, "{}", u8::from(r.write_error)),
            Var::Rerr => write!(s, "{}", u8::from(r.read_error)),
            Var::Ioerr => write!(s, "{}", u8::from(r.write_error) + u8::from(r.read_error)),
        };
        s.as_bytes()
    }
}

fn start_secs(r: &super::RequestLog<'_>) -> i64 {
    i64::try_from(r.start_micros / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Part {
        Part::Text(s.to_owned())
    }

    #[test]
    fn compiles_like_uwsgi() {
        use Part::{Logvar, Metric, Request, Var as V};
        for (fmt, want) in [
            ("", vec![]),
            ("plain", vec![text("plain")]),
            (
                "%(addr) - %(user) [%(ltime)]",
                vec![
                    V(Var::Addr),
                    text(" - "),
                    V(Var::User),
                    text(" ["),
                    V(Var::Ltime),
                    text("]"),
                ],
            ),
            (
                "%(var.HTTP_X) %(metric.a)",
                vec![Request(0), text(" "), Metric],
            ),
            ("%(nope)", vec![Logvar("nope".to_owned())]),
            // Unclosed: uWSGI writes the text before it, then the whole format again.
            ("ab %(foo", vec![text("ab "), text("ab %(foo")]),
            // `%()`: no variable; the next character starts one, cutting two bytes.
            ("a%()b", vec![text("a%"), text("a%()b")]),
            ("100% (x)", vec![text("100% (x)")]),
            ("%%(pid)", vec![text("%"), V(Var::Pid)]),
        ] {
            assert_eq!(Format::compile(fmt, None).parts, want, "{fmt:?}");
        }
    }

    #[test]
    fn repeated_request_vars_share_a_slot() {
        let f = Format::compile("%(var.A)%(var.B)%(var.A)", None);
        assert_eq!(f.request_vars, ["A", "B"]);
        assert_eq!(
            f.parts,
            [Part::Request(0), Part::Request(1), Part::Request(0)]
        );
    }
}
