//! `Sec-WebSocket-Extensions` (RFC 6455 §9.1) and the permessage-deflate agreement
//! (RFC 7692 §7.1): which offer the server accepts, with which parameters, and the response
//! header that says so.

/// The parameters both sides agreed on for permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    /// We reset our compressor after every message (RFC 7692 §7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message, so our decompressor may too.
    pub client_no_context_takeover: bool,
    /// Echo of the client's `server_max_window_bits` (only 15 is accepted: miniz_oxide
    /// always compresses with a 32 KiB window).
    pub server_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` response value.
    #[must_use]
    pub fn header_value(&self) -> String {
        let mut v = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            v.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            v.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            v.push_str("; server_max_window_bits=");
            v.push_str(&bits.to_string());
        }
        v
    }
}

/// The server's side of the permessage-deflate negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Accept permessage-deflate offers at all.
    pub enabled: bool,
    /// Compression level 0-9 for outgoing messages.
    pub level: u32,
    /// Ask for `server_no_context_takeover` even when not offered: less memory kept per
    /// connection between messages, worse ratio.
    pub server_no_context_takeover: bool,
    /// Ask the client for `client_no_context_takeover` even when not offered.
    pub client_no_context_takeover: bool,
}

impl Default for DeflateConfig {
    /// Enabled, level 6, context takeover both ways (what uvicorn's websockets backend does).
    fn default() -> Self {
        Self {
            enabled: true,
            level: 6,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
        }
    }
}

/// One extension of an offer: its name and (param, value) pairs, values unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Extension token (`permessage-deflate`).
    pub name: String,
    /// Parameters in order; `None` for a parameter without `=`.
    pub params: Vec<(String, Option<String>)>,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

/// Splits `s` on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A param value: a token, or a quoted-string whose content is a token (RFC 6455 §9.1).
fn param_value(v: &str) -> Option<String> {
    let v = v.trim();
    let value = if let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            out.push(if c == '\\' { chars.next()? } else { c });
        }
        out
    } else {
        v.to_owned()
    };
    is_token(&value).then_some(value)
}

/// Parses every `Sec-WebSocket-Extensions` value (the header may repeat) into extensions in
/// offer order. A malformed extension is left out: the server then does not accept it, which
/// is what RFC 7692 §5 asks for an offer it cannot read.
pub fn parse_offers<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<Extension> {
    let mut out = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for ext in split_unquoted(value, ',') {
            let mut parts = split_unquoted(ext, ';').into_iter();
            let name = parts.next().unwrap_or_default().trim();
            if name.is_empty() {
                continue; // empty list elements are allowed (RFC 9110 §5.6.1)
            }
            let mut params = Vec::new();
            let mut ok = is_token(name);
            for p in parts {
                let (k, v) = match p.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v)),
                    None => (p.trim(), None),
                };
                let v = match v.map(param_value) {
                    Some(Some(v)) => Some(v),
                    Some(None) => {
                        ok = false;
                        None
                    }
                    None => None,
                };
                ok &= is_token(k);
                params.push((k.to_ascii_lowercase(), v));
            }
            if ok {
                out.push(Extension {
                    name: name.to_ascii_lowercase(),
                    params,
                });
            }
        }
    }
    out
}

fn window_bits(v: &str) -> Option<u8> {
    // RFC 7692 §7.1.2: 1*DIGIT in 8..=15, no leading zero.
    if v.starts_with('0') {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// The agreement for one permessage-deflate offer, or `None` to decline it (RFC 7692 §7.1:
/// unknown or repeated parameters, invalid values, or a window we cannot honour).
fn accept_offer(ext: &Extension, config: DeflateConfig) -> Option<DeflateParams> {
    let mut agreed = DeflateParams {
        server_no_context_takeover: config.server_no_context_takeover,
        client_no_context_takeover: config.client_no_context_takeover,
        server_max_window_bits: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &ext.params {
        if seen.contains(&name.as_str()) {
            return None;
        }
        seen.push(name);
        match (name.as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) => agreed.server_no_context_takeover = true,
            // A hint that the client resets anyway; saying so lets our decompressor reset too.
            ("client_no_context_takeover", None) => agreed.client_no_context_takeover = true,
            // Any window the client compresses with fits our 32 KiB decompression window, so
            // the response leaves client_max_window_bits out (§7.1.2.2 allows that).
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            ("server_max_window_bits", Some(v)) => match window_bits(v)? {
                15 => agreed.server_max_window_bits = Some(15),
                _ => return None,
            },
            _ => return None,
        }
    }
    Some(agreed)
}

/// The first permessage-deflate offer we can accept (RFC 7692 §5: offers are in the client's
/// order of preference), or `None`.
#[must_use]
pub fn negotiate_deflate(offers: &[Extension], config: &DeflateConfig) -> Option<DeflateParams> {
    if !config.enabled {
        return None;
    }
    offers
        .iter()
        .filter(|e| e.name == "permessage-deflate")
        .find_map(|e| accept_offer(e, *config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(header: &str) -> Option<String> {
        let offers = parse_offers([header.as_bytes()]);
        negotiate_deflate(&offers, &DeflateConfig::default()).map(|p| p.header_value())
    }

    #[test]
    fn negotiation_table() {
        let table: &[(&str, Option<&str>)] = &[
            ("permessage-deflate", Some("permessage-deflate")),
            // What browsers send.
            (
                "permessage-deflate; client_max_window_bits",
                Some("permessage-deflate"),
            ),
            // What Python's websockets sends.
            (
                "permessage-deflate; client_max_window_bits=12",
                Some("permessage-deflate"),
            ),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            ),
            (
                "permessage-deflate; server_max_window_bits=15",
                Some("permessage-deflate; server_max_window_bits=15"),
            ),
            (
                "permessage-deflate; server_max_window_bits=\"15\"",
                Some("permessage-deflate; server_max_window_bits=15"),
            ),
            // A smaller server window cannot be honoured: the next offer is taken.
            (
                "permessage-deflate; server_max_window_bits=10, permessage-deflate",
                Some("permessage-deflate"),
            ),
            ("permessage-deflate; server_max_window_bits=10", None),
            ("permessage-deflate; server_max_window_bits", None),
            ("permessage-deflate; server_max_window_bits=16", None),
            ("permessage-deflate; server_max_window_bits=010", None),
            ("permessage-deflate; client_max_window_bits=7", None),
            ("permessage-deflate; server_no_context_takeover=1", None),
            ("permessage-deflate; unknown", None),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                None,
            ),
            ("x-webkit-deflate-frame", None),
            (
                "x-webkit-deflate-frame, Permessage-Deflate; Client_Max_Window_Bits",
                Some("permessage-deflate"),
            ),
            ("", None),
            ("permessage-deflate; server_max_window_bits=\"1 5\"", None),
        ];
        for (header, want) in table {
            assert_eq!(agree(header).as_deref(), *want, "{header}");
        }
    }

    #[test]
    fn repeated_headers_and_disabled() {
        let offers = parse_offers([
            &b"foo"[..],
            b"permessage-deflate; server_no_context_takeover",
        ]);
        assert_eq!(offers.len(), 2);
        let p = negotiate_deflate(&offers, &DeflateConfig::default()).unwrap();
        assert!(p.server_no_context_takeover);
        let off = DeflateConfig {
            enabled: false,
            ..DeflateConfig::default()
        };
        assert_eq!(negotiate_deflate(&offers, &off), None);
        let ask = DeflateConfig {
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let p = negotiate_deflate(&offers, &ask).unwrap();
        assert!(p.client_no_context_takeover);
    }

    #[test]
    fn quoted_values_with_commas_do_not_split() {
        let offers = parse_offers([&b"a; x=\"1,2\", b"[..]]);
        assert_eq!(offers.len(), 1, "{offers:?}"); // "1,2" is no token: `a` dropped
        assert_eq!(offers[0].name, "b");
    }
}
