//! Building the WSGI environ: constant keys once per worker (a template dict copied per
//! request), interned key strings, and the per-request CGI variables from the request head.

use crate::http::target::{app_headers, cgi_key, percent_decode, split_target};
use crate::http::{Framing, RequestHead, Version};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// Headers common enough to have a ready-made, interned `HTTP_*` key.
const COMMON_HEADERS: &[(&str, &str)] = &[
    ("host", "HTTP_HOST"),
    ("user-agent", "HTTP_USER_AGENT"),
    ("accept", "HTTP_ACCEPT"),
    ("accept-encoding", "HTTP_ACCEPT_ENCODING"),
    ("accept-language", "HTTP_ACCEPT_LANGUAGE"),
    ("connection", "HTTP_CONNECTION"),
    ("cookie", "HTTP_COOKIE"),
    ("referer", "HTTP_REFERER"),
    ("cache-control", "HTTP_CACHE_CONTROL"),
    ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
    ("x-forwarded-proto", "HTTP_X_FORWARDED_PROTO"),
    ("x-real-ip", "HTTP_X_REAL_IP"),
    ("x-requested-with", "HTTP_X_REQUESTED_WITH"),
    ("origin", "HTTP_ORIGIN"),
    ("authorization", "HTTP_AUTHORIZATION"),
    ("if-modified-since", "HTTP_IF_MODIFIED_SINCE"),
    ("if-none-match", "HTTP_IF_NONE_MATCH"),
    (
        "upgrade-insecure-requests",
        "HTTP_UPGRADE_INSECURE_REQUESTS",
    ),
    ("expect", "HTTP_EXPECT"),
];

/// Interned key strings used on every request.
pub struct Keys {
    request_method: Py<PyString>,
    request_uri: Py<PyString>,
    path_info: Py<PyString>,
    query_string: Py<PyString>,
    server_protocol: Py<PyString>,
    remote_addr: Py<PyString>,
    remote_port: Py<PyString>,
    content_type: Py<PyString>,
    content_length: Py<PyString>,
    /// `wsgi.input`.
    pub wsgi_input: Py<PyString>,
    http10: Py<PyString>,
    http11: Py<PyString>,
    methods: Vec<(&'static [u8], Py<PyString>)>,
    common: Vec<(&'static str, Py<PyString>)>,
    /// Interned keys for the variables a uwsgi packet usually carries.
    cgi: Vec<(&'static [u8], Py<PyString>)>,
    url_scheme: Py<PyString>,
}

/// Variables nginx's uwsgi_params and headrace's router send.
const CGI_KEYS: &[&str] = &[
    "REQUEST_METHOD",
    "REQUEST_URI",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SERVER_NAME",
    "SERVER_PORT",
    "SCRIPT_NAME",
    "DOCUMENT_ROOT",
    "REQUEST_SCHEME",
    "HTTPS",
    "SERVER_ADDR",
];

impl Keys {
    fn new(py: Python<'_>) -> Self {
        let i = |s: &str| PyString::intern(py, s).unbind();
        Self {
            request_method: i("REQUEST_METHOD"),
            request_uri: i("REQUEST_URI"),
            path_info: i("PATH_INFO"),
            query_string: i("QUERY_STRING"),
            server_protocol: i("SERVER_PROTOCOL"),
            remote_addr: i("REMOTE_ADDR"),
            remote_port: i("REMOTE_PORT"),
            content_type: i("CONTENT_TYPE"),
            content_length: i("CONTENT_LENGTH"),
            wsgi_input: i("wsgi.input"),
            http10: i("HTTP/1.0"),
            http11: i("HTTP/1.1"),
            methods: ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]
                .iter()
                .map(|m| (m.as_bytes(), i(m)))
                .collect(),
            common: COMMON_HEADERS.iter().map(|(n, k)| (*n, i(k))).collect(),
            cgi: CGI_KEYS
                .iter()
                .copied()
                .chain(COMMON_HEADERS.iter().map(|(_, k)| *k))
                .map(|k| (k.as_bytes(), i(k)))
                .collect(),
            url_scheme: i("wsgi.url_scheme"),
        }
    }
}

/// Where a connection came in and from: the parts of the environ fixed per connection.
pub struct Peer {
    /// Index of the listening socket (selects the SERVER_NAME/PORT template).
    pub listener: usize,
    /// REMOTE_ADDR ("" for unix sockets).
    pub addr: String,
    /// REMOTE_PORT ("" for unix sockets).
    pub port: String,
}

/// What the log line needs to know about the environ.
#[derive(Debug, Default, Clone, Copy)]
pub struct VarStats {
    /// CGI variables set.
    pub count: usize,
    /// Their size counted as a uwsgi packet does (2-byte lengths plus key and value).
    pub bytes: usize,
}

impl VarStats {
    fn add(&mut self, key_len: usize, value_len: usize) {
        self.count += 1;
        self.bytes += 4 + key_len + value_len;
    }
}

/// Builds environ dicts for one worker.
pub struct EnvironBuilder {
    keys: Keys,
    /// One template per listening socket: the constant keys and SERVER_NAME/PORT.
    templates: Vec<Py<PyDict>>,
    template_stats: Vec<VarStats>,
}

/// The constant parts of every environ.
pub struct Constants<'a> {
    /// (SERVER_NAME, SERVER_PORT) per listening socket.
    pub servers: &'a [(String, String)],
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// `wsgi.multiprocess`.
    pub multiprocess: bool,
}

impl EnvironBuilder {
    /// Build the templates; `extra` holds wsgi.errors, wsgi.file_wrapper and the like.
    pub fn new(py: Python<'_>, c: &Constants<'_>, extra: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut templates = Vec::new();
        let mut template_stats = Vec::new();
        for (name, port) in c.servers {
            let d = PyDict::new(py);
            let mut stats = VarStats::default();
            for (k, v) in [
                ("SCRIPT_NAME", ""),
                ("SERVER_NAME", name.as_str()),
                ("SERVER_PORT", port.as_str()),
            ] {
                d.set_item(PyString::intern(py, k), v)?;
                stats.add(k.len(), v.len());
            }
            d.set_item(
                "SERVER_SOFTWARE",
                concat!("headrace/", env!("CARGO_PKG_VERSION")),
            )?;
            d.set_item("wsgi.version", (1, 0))?;
            d.set_item("wsgi.url_scheme", "http")?;
            d.set_item("wsgi.multithread", c.multithread)?;
            d.set_item("wsgi.multiprocess", c.multiprocess)?;
            d.set_item("wsgi.run_once", false)?;
            d.set_item("wsgi.input_terminated", true)?;
            d.update(extra.as_mapping())?;
            templates.push(d.unbind());
            template_stats.push(stats);
        }
        Ok(Self {
            keys: Keys::new(py),
            templates,
            template_stats,
        })
    }

    /// The interned keys.
    #[must_use]
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Build the environ for one request whose head was parsed from `buf`.
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        buf: &[u8],
        head: &RequestHead,
        peer: &Peer,
    ) -> PyResult<(Bound<'py, PyDict>, VarStats)> {
        let k = &self.keys;
        let env = self.templates[peer.listener].bind(py).copy()?;
        let mut stats = self.template_stats[peer.listener];
        let method = &buf[head.method.clone()];
        match k.methods.iter().find(|(m, _)| *m == method) {
            Some((_, s)) => env.set_item(k.request_method.bind(py), s.bind(py))?,
            None => env.set_item(
                k.request_method.bind(py),
                crate::sys::py::latin1(py, method)?,
            )?,
        }
        stats.add(14, method.len());
        let target = &buf[head.target.clone()];
        env.set_item(k.request_uri.bind(py), crate::sys::py::latin1(py, target)?)?;
        stats.add(11, target.len());
        let (path, query) = split_target(target);
        let decoded = percent_decode(path);
        env.set_item(k.path_info.bind(py), crate::sys::py::latin1(py, &decoded)?)?;
        stats.add(9, decoded.len());
        env.set_item(k.query_string.bind(py), crate::sys::py::latin1(py, query)?)?;
        stats.add(12, query.len());
        let proto = match head.version {
            Version::Http10 => &k.http10,
            Version::Http11 => &k.http11,
        };
        env.set_item(k.server_protocol.bind(py), proto.bind(py))?;
        stats.add(15, 8);
        env.set_item(k.remote_addr.bind(py), &peer.addr)?;
        stats.add(11, peer.addr.len());
        env.set_item(k.remote_port.bind(py), &peer.port)?;
        stats.add(11, peer.port.len());
        self.add_headers(py, &env, buf, head, &mut stats)?;
        Ok((env, stats))
    }

    /// Build the environ for a uwsgi packet parsed from `buf`: its variables are the CGI
    /// environ already (they come from nginx or the router); PATH_INFO is derived from
    /// REQUEST_URI if missing, and UWSGI_SCHEME/HTTPS set wsgi.url_scheme.
    pub fn build_uwsgi<'py>(
        &self,
        py: Python<'py>,
        buf: &[u8],
        packet: &crate::uwsgi_proto::Packet,
        peer: &Peer,
    ) -> PyResult<(Bound<'py, PyDict>, VarStats)> {
        let k = &self.keys;
        let env = self.templates[peer.listener].bind(py).copy()?;
        let mut has_path = false;
        let mut has_query = false;
        for (idx, (kr, vr)) in packet.vars.iter().enumerate() {
            let key = &buf[kr.clone()];
            let mut value = std::borrow::Cow::Borrowed(&buf[vr.clone()]);
            if key.starts_with(b"HTTP_") {
                // nginx sends a repeated header as repeated variables: join them as the HTTP
                // front does, into the first.
                if packet.vars[..idx]
                    .iter()
                    .any(|(k2, _)| &buf[k2.clone()] == key)
                {
                    continue;
                }
                for (k2, v2) in &packet.vars[idx + 1..] {
                    if &buf[k2.clone()] == key {
                        let mut joined = value.into_owned();
                        joined.extend_from_slice(b", ");
                        joined.extend_from_slice(&buf[v2.clone()]);
                        value = std::borrow::Cow::Owned(joined);
                    }
                }
            }
            let value: &[u8] = &value;
            match key {
                crate::uwsgi_proto::KEEPALIVE_VAR => continue,
                b"PATH_INFO" => has_path = true,
                b"QUERY_STRING" => has_query = true,
                b"UWSGI_SCHEME" => {
                    env.set_item(k.url_scheme.bind(py), crate::sys::py::latin1(py, value)?)?;
                    continue;
                }
                b"HTTPS" if value.eq_ignore_ascii_case(b"on") || value == b"1" => {
                    env.set_item(k.url_scheme.bind(py), "https")?;
                }
                _ => {}
            }
            let pyvalue = match k.methods.iter().find(|(m, _)| *m == value) {
                Some((_, s)) if key == b"REQUEST_METHOD" => s.bind(py).clone(),
                _ => crate::sys::py::latin1(py, value)?,
            };
            match k.cgi.iter().find(|(name, _)| *name == key) {
                Some((_, interned)) => env.set_item(interned.bind(py), pyvalue)?,
                None => env.set_item(crate::sys::py::latin1(py, key)?, pyvalue)?,
            }
        }
        if !has_path || !has_query {
            let uri = packet
                .uri
                .map_or(&b""[..], |i| &buf[packet.vars[i].1.clone()]);
            let (path, query) = split_target(uri);
            if !has_path {
                env.set_item(
                    k.path_info.bind(py),
                    crate::sys::py::latin1(py, &percent_decode(path))?,
                )?;
            }
            if !has_query {
                env.set_item(k.query_string.bind(py), crate::sys::py::latin1(py, query)?)?;
            }
        }
        let stats = VarStats {
            count: packet.vars.len(),
            bytes: packet.len - 4,
        };
        Ok((env, stats))
    }

    fn add_headers(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        buf: &[u8],
        head: &RequestHead,
        stats: &mut VarStats,
    ) -> PyResult<()> {
        let k = &self.keys;
        for (name, value) in app_headers(buf, &head.headers) {
            let pyvalue = crate::sys::py::latin1(py, &value)?;
            if name.eq_ignore_ascii_case(b"content-type") {
                env.set_item(k.content_type.bind(py), pyvalue)?;
                stats.add(12, value.len());
            } else if name.eq_ignore_ascii_case(b"content-length") {
                if head.framing != Framing::Chunked {
                    env.set_item(k.content_length.bind(py), pyvalue)?;
                    stats.add(14, value.len());
                }
            } else if let Some((_, key)) = k
                .common
                .iter()
                .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            {
                env.set_item(key.bind(py), pyvalue)?;
                stats.add(5 + name.len(), value.len());
            } else {
                let key = cgi_key(name);
                env.set_item(PyString::new(py, &key), pyvalue)?;
                stats.add(key.len(), value.len());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_decoding() {
        let table: &[(&[u8], &[u8], &[u8])] = &[
            (b"/a/b?x=1&y", b"/a/b", b"x=1&y"),
            (b"/", b"/", b""),
            (b"/p%20q%2Fr?%20", b"/p q/r", b"%20"),
            (b"/bad%zz%4", b"/bad%zz%4", b""),
            (b"/caf%E9", b"/caf\xe9", b""),
            (b"http://example.com/x?y", b"/x", b"y"),
            (b"http://example.com", b"/", b""),
            (b"*", b"*", b""),
        ];
        for (target, path, query) in table {
            let (p, q) = split_target(target);
            assert_eq!(
                (&*percent_decode(p), q),
                (*path, *query),
                "{}",
                String::from_utf8_lossy(target)
            );
        }
        assert_eq!(cgi_key(b"X-Custom-thing"), "HTTP_X_CUSTOM_THING");
    }

    #[test]
    fn environ_from_head() {
        Python::initialize();
        Python::attach(|py| {
            let raw = b"POST /a%20b?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nContent-Type: text/x\r\nContent-Length: 3\r\nX_Bad: 1\r\n\r\nabc";
            let head = crate::http::parse::parse_head(
                raw,
                crate::http::Limits {
                    head: 1000,
                    body: 0,
                },
            )
            .unwrap()
            .unwrap();
            let servers = [("localhost".to_owned(), "80".to_owned())];
            let c = Constants {
                servers: &servers,
                multithread: false,
                multiprocess: true,
            };
            let b = EnvironBuilder::new(py, &c, &PyDict::new(py)).unwrap();
            let peer = Peer {
                listener: 0,
                addr: "127.0.0.1".into(),
                port: "5555".into(),
            };
            let (env, stats) = b.build(py, raw, &head, &peer).unwrap();
            let get = |k: &str| env.get_item(k).unwrap().map(|v| v.to_string());
            assert_eq!(get("REQUEST_METHOD").as_deref(), Some("POST"));
            assert_eq!(get("PATH_INFO").as_deref(), Some("/a b"));
            assert_eq!(get("QUERY_STRING").as_deref(), Some("q=1"));
            assert_eq!(get("REQUEST_URI").as_deref(), Some("/a%20b?q=1"));
            assert_eq!(get("HTTP_X_A").as_deref(), Some("1, 2"));
            assert_eq!(get("CONTENT_TYPE").as_deref(), Some("text/x"));
            assert_eq!(get("CONTENT_LENGTH").as_deref(), Some("3"));
            assert_eq!(get("HTTP_CONTENT_TYPE"), None);
            assert_eq!(get("HTTP_X_BAD"), None);
            assert_eq!(get("SERVER_PORT").as_deref(), Some("80"));
            assert_eq!(get("REMOTE_PORT").as_deref(), Some("5555"));
            assert_eq!(stats.count, 3 + 7 + 4);
        });
    }
}
