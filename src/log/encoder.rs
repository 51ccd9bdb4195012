//! `--log-encoder` / `--log-req-encoder`: uWSGI's chain of log encoders (core/logging.c):
//! `prefix TEXT`, `suffix TEXT`, `nl`, `format TEMPLATE` and `json TEMPLATE`, where a template
//! holds `${msg}` (the line without its newline), `${msgnl}`, `${unix}`, `${micros}`,
//! `${millis}` and `${strftime:FORMAT}`; `json` escapes the message for a JSON string. Each
//! encoder takes the previous one's output, in the order given. As in uWSGI, no newline is
//! added: end the chain with `nl` (or put `${msgnl}` in the template).

use std::fmt::Write as _;

/// One template piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `${name}`.
    Var(String),
}

/// One encoder of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoder {
    /// `prefix TEXT`.
    Prefix(String),
    /// `suffix TEXT`.
    Suffix(String),
    /// `nl`.
    Nl,
    /// `format TEMPLATE`.
    Format(Vec<Piece>),
    /// `json TEMPLATE`.
    Json(Vec<Piece>),
}

/// Why an encoder is refused.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// Not one of uWSGI's built-in encoders headrace has.
    #[error("unknown log encoder {0:?}: expected prefix, suffix, nl, format or json")]
    Unknown(String),
}

impl Encoder {
    /// Parse uWSGI's `NAME[:ID] ARGS`. An encoder bound to a logger id (`json:ID`) applies only
    /// to that logger; headrace's loggers have no ids, so such an encoder is `None` (unused).
    ///
    /// # Errors
    /// An unknown encoder name.
    pub fn parse(spec: &str) -> Result<Option<Self>, EncoderError> {
        let (head, args) = spec.split_once(' ').unwrap_or((spec, ""));
        let (name, use_for) = match head.split_once(':') {
            Some((n, id)) => (n, Some(id)),
            None => (head, None),
        };
        let enc = match name {
            "prefix" => Self::Prefix(args.to_owned()),
            "suffix" => Self::Suffix(args.to_owned()),
            "nl" => Self::Nl,
            "format" => Self::Format(parse_vars(args)),
            "json" => Self::Json(parse_vars(args)),
            _ => return Err(EncoderError::Unknown(name.to_owned())),
        };
        Ok(use_for.is_none().then_some(enc))
    }

    /// Encode one message.
    #[must_use]
    pub fn encode(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Self::Prefix(p) => [p.as_bytes(), msg].concat(),
            Self::Suffix(s) => [msg, s.as_bytes()].concat(),
            Self::Nl => [msg, b"\n"].concat(),
            Self::Format(t) => render(t, msg, false),
            Self::Json(t) => render(t, msg, true),
        }
    }
}

/// Encode `msg` through a chain.
#[must_use]
pub fn apply(chain: &[Encoder], msg: &[u8]) -> Vec<u8> {
    let mut out = msg.to_vec();
    for e in chain {
        out = e.encode(&out);
    }
    out
}

/// uWSGI's `uwsgi_log_encoder_parse_vars`: `${name}` variables between literal text; a `$`
/// not followed by `{` stays text, and an unclosed `${` is kept as text.
fn parse_vars(args: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut var = String::new();
    let mut state = 0u8;
    for c in args.chars() {
        match state {
            1 => {
                if c == '{' {
                    state = 2;
                } else {
                    // uWSGI keeps the `$` and the character after it.
                    text.push('$');
                    text.push(c);
                    state = 0;
                }
            }
            2 => {
                if c == '}' {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                    out.push(Piece::Var(std::mem::take(&mut var)));
                    state = 0;
                } else {
                    var.push(c);
                }
            }
            _ => {
                if c == '$' {
                    state = 1;
                } else {
                    text.push(c);
                }
            }
        }
    }
    match state {
        1 => text.push('$'),
        2 => {
            text.push_str("${");
            text.push_str(&var);
        }
        _ => {}
    }
    out.push(Piece::Text(text));
    out.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
    out
}

fn render(template: &[Piece], msg: &[u8], json: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    let trimmed = msg.strip_suffix(b"\n").unwrap_or(msg);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    for p in template {
        match p {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::Var(v) => {
                let mut s = String::new();
                match v.as_str() {
                    "msg" => push_msg(&mut out, trimmed, json),
                    "msgnl" => push_msg(&mut out, msg, json),
                    "unix" => {
                        let _ = write!(s, "{}", now.as_secs());
                    }
                    "micros" => {
                        let _ = write!(s, "{}", now.as_micros());
                    }
                    "millis" => {
                        let _ = write!(s, "{}", now.as_millis());
                    }
                    other => {
                        if let Some(f) = other.strip_prefix("strftime:") {
                            let secs = i64::try_from(now.as_secs()).unwrap_or(0);
                            let t = crate::sys::time::strftime(f, secs);
                            if json {
                                push_msg(&mut out, t.as_bytes(), true);
                            } else {
                                s = t;
                            }
                        }
                    }
                }
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

/// The message, escaped as uWSGI's `escape_json` does for the json encoder.
fn push_msg(out: &mut Vec<u8>, msg: &[u8], json: bool) {
    if !json {
        out.extend_from_slice(msg);
        return;
    }
    for &b in msg {
        match b {
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(spec: &str, msg: &str) -> String {
        let e = Encoder::parse(spec).unwrap().unwrap();
        String::from_utf8(e.encode(msg.as_bytes())).unwrap()
    }

    #[test]
    fn encoders_like_uwsgi() {
        for (spec, msg, want) in [
            ("prefix [x] ", "a\n", "[x] a\n"),
            ("suffix !", "a", "a!"),
            ("nl", "a", "a\n"),
            ("format <${msg}>", "a\n", "<a>"),
            ("format <${msgnl}>", "a\n", "<a\n>"),
            ("format $x ${nope} $", "a", "$x  $"),
            ("format a ${msg", "m", "a ${msg"),
            (
                "json {\"msg\":\"${msg}\"}",
                "say \"hi\"\\\tnow\n",
                "{\"msg\":\"say \\\"hi\\\"\\\\\\tnow\"}",
            ),
        ] {
            assert_eq!(enc(spec, msg), want, "{spec:?}");
        }
    }

    #[test]
    fn unknown_and_bound_encoders() {
        assert!(Encoder::parse("gzip").is_err());
        assert_eq!(Encoder::parse("json:mylogger {}").unwrap(), None);
    }

    #[test]
    fn chains_apply_in_order() {
        let chain = [
            Encoder::parse("json {\"m\":\"${msg}\"}").unwrap().unwrap(),
            Encoder::parse("nl").unwrap().unwrap(),
        ];
        assert_eq!(apply(&chain, b"x\n"), b"{\"m\":\"x\"}\n");
    }
}
