//! Static files, as uWSGI's `static-map`, `static-map2`, `check-static`, `static-index`,
//! `static-gzip-all` and `static-expires-type` serve them: a GET or HEAD whose path names a
//! file under a mapped directory is answered from the file without calling the app; anything
//! else (no mapping, a missing file, a path that leaves the directory) falls through to the app.
//! No Python here: the workers call [`lookup`] and [`send::send_blocking`] with the GIL
//! released, the router calls [`lookup`] on tokio's blocking pool.

mod mime;
mod reply;
pub mod rules;
pub mod send;

pub use reply::{reply, Reply};
pub use rules::{Expires, Gzip};

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A static-file option with a malformed value.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    /// `static-map` and friends need `MOUNTPOINT=DIR`.
    #[error("expected MOUNTPOINT=DIR, like /static=/srv/app/static")]
    Map,
    /// `static-expires*` needs `REGEXP SECONDS` (`TYPE=SECONDS` for `-type`).
    #[error("expected REGEXP SECONDS (CONTENT-TYPE=SECONDS for static-expires-type*), like \\.css$ 3600")]
    Expires,
    /// A regexp that does not compile.
    #[error("bad regexp: {0}")]
    Regex(String),
}

/// One mapping from a URL prefix to a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMap {
    /// The URL prefix's segments (`/static/img` → `["static", "img"]`; `/` → none).
    pub mount: Vec<String>,
    /// The directory.
    pub dir: PathBuf,
    /// `static-map2` and `check-static`: the whole path is appended to the directory, not just
    /// what follows the mountpoint.
    pub whole_path: bool,
}

impl StaticMap {
    /// Parse `MOUNTPOINT=DIR` (`static-map`, or `static-map2` when `whole_path`).
    pub fn parse(value: &str, whole_path: bool) -> Result<Self, StaticError> {
        let (mount, dir) = value.split_once('=').ok_or(StaticError::Map)?;
        let (mount, dir) = (mount.trim(), dir.trim());
        if dir.is_empty() || !mount.starts_with('/') {
            return Err(StaticError::Map);
        }
        Ok(Self {
            mount: mount
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            dir: PathBuf::from(dir),
            whole_path,
        })
    }

    /// `check-static DIR`: every path, appended to DIR.
    #[must_use]
    pub fn docroot(dir: &str) -> Self {
        Self {
            mount: Vec::new(),
            dir: PathBuf::from(dir),
            whole_path: true,
        }
    }
}

/// Everything the static-file options say.
#[derive(Debug, Clone, Default)]
pub struct StaticConfig {
    /// Mappings in the order given (`static-map*` first, then `check-static`, as uWSGI tries them).
    pub maps: Vec<StaticMap>,
    /// `static-index`: file names tried, in order, when the path names a directory.
    pub index: Vec<String>,
    /// Which files are served as FILE.gz when the client accepts gzip.
    pub gzip: Gzip,
    /// `static-expires*`: when an `Expires` header is added.
    pub expires: Vec<Expires>,
    /// `static-safe`: a file whose real path is under one of these may be served although it
    /// lies outside its mapped directory (a symlink out, on purpose).
    pub safe: Vec<PathBuf>,
    /// `static-skip-ext`: files with these endings are never static (the app serves them).
    pub skip_ext: Vec<String>,
}

impl StaticConfig {
    /// Nothing to serve: the request path never looks here.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

/// The parts of a request the static server reads, all as sent by the client.
#[derive(Debug, Default, Clone)]
pub struct Request<'a> {
    /// The request method.
    pub method: &'a [u8],
    /// The path of the request target, still percent-encoded, without the query.
    pub path: &'a [u8],
    /// The request target as sent (REQUEST_URI), for `static-expires-uri`.
    pub uri: &'a [u8],
    /// `Range`.
    pub range: Option<&'a [u8]>,
    /// `If-Range`.
    pub if_range: Option<&'a [u8]>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a [u8]>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a [u8]>,
    /// `Accept-Encoding`.
    pub accept_encoding: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// Record a header by its name (HTTP form, any case); others are ignored.
    pub fn header(&mut self, name: &[u8], value: &'a [u8]) {
        let slot = if name.eq_ignore_ascii_case(b"range") {
            &mut self.range
        } else if name.eq_ignore_ascii_case(b"if-range") {
            &mut self.if_range
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            &mut self.if_none_match
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            &mut self.if_modified_since
        } else if name.eq_ignore_ascii_case(b"accept-encoding") {
            &mut self.accept_encoding
        } else {
            return;
        };
        *slot = Some(value);
    }

    /// Record a uwsgi packet variable (`HTTP_RANGE`, ...); others are ignored.
    pub fn cgi_var(&mut self, key: &[u8], value: &'a [u8]) {
        match key {
            b"REQUEST_METHOD" => self.method = value,
            b"HTTP_RANGE" => self.range = Some(value),
            b"HTTP_IF_RANGE" => self.if_range = Some(value),
            b"HTTP_IF_NONE_MATCH" => self.if_none_match = Some(value),
            b"HTTP_IF_MODIFIED_SINCE" => self.if_modified_since = Some(value),
            b"HTTP_ACCEPT_ENCODING" => self.accept_encoding = Some(value),
            b"REQUEST_URI" => {
                self.uri = value;
                self.path = crate::http::target::split_target(value).0;
            }
            // Only when the sender gave no REQUEST_URI (it is decoded already: a second
            // decoding is harmless, since the path is normalized after it).
            b"PATH_INFO" if self.path.is_empty() => self.path = value,
            _ => {}
        }
    }
}

/// A file found for a request, open.
#[derive(Debug)]
pub struct Found {
    /// The open file.
    pub file: File,
    /// Its size.
    pub len: u64,
    /// Its modification time.
    pub mtime: SystemTime,
    /// From the name of the file asked for (not of its `.gz`).
    pub content_type: &'static str,
    /// The `.gz` next to the file is served: `Content-Encoding: gzip`.
    pub gzip: bool,
    /// When the response expires (`static-expires*`).
    pub expires: Option<SystemTime>,
}

/// The decoded path's segments with `.` and empty segments dropped and `..` applied; a `..`
/// above the root stays at the root, as a browser resolves it. `None` for a path that cannot
/// name a file (NUL byte, not starting with `/`).
fn segments(raw: &[u8]) -> Option<Vec<Vec<u8>>> {
    if raw.first() != Some(&b'/') {
        return None;
    }
    // Decoded before the split: `%2e%2e` and `%2f` must not survive as harmless-looking text.
    let decoded = crate::http::target::percent_decode(raw);
    if decoded.contains(&0) {
        return None;
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for seg in decoded.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s.to_vec()),
        }
    }
    Some(out)
}

/// Whether the client takes gzip: a token `gzip` (or `*`) in Accept-Encoding without `q=0`.
fn accepts_gzip(header: Option<&[u8]>) -> bool {
    let Some(h) = header else { return false };
    h.split(|b| *b == b',').any(|item| {
        let mut parts = item.split(|b| *b == b';');
        let name = parts.next().unwrap_or_default().trim_ascii();
        if !(name.eq_ignore_ascii_case(b"gzip") || name == b"*") {
            return false;
        }
        !parts.any(|p| {
            let p = p.trim_ascii();
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case(b"q=")
                && p[2..].iter().all(|c| *c == b'0' || *c == b'.')
        })
    })
}

/// `path` resolved (symlinks followed) and still under `root` (or a `static-safe` path), as a
/// regular file or directory.
fn contained(path: &Path, root: &Path, safe: &[PathBuf]) -> Option<(PathBuf, std::fs::Metadata)> {
    let real = std::fs::canonicalize(path).ok()?;
    if !real.starts_with(root)
        && !safe
            .iter()
            .any(|s| std::fs::canonicalize(s).is_ok_and(|s| real.starts_with(s)))
    {
        return None;
    }
    let meta = std::fs::metadata(&real).ok()?;
    Some((real, meta))
}

fn open(path: &Path, meta: &std::fs::Metadata) -> Option<(File, u64, SystemTime)> {
    let file = File::open(path).ok()?;
    Some((
        file,
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    ))
}

/// Find the file a GET/HEAD request names. Blocking file-system calls: run it without the GIL
/// or on a blocking pool. `None`: not a static request, or no such file: the app answers.
#[must_use]
pub fn lookup(cfg: &StaticConfig, req: &Request<'_>) -> Option<Found> {
    if cfg.maps.is_empty() || !(req.method == b"GET" || req.method == b"HEAD") {
        return None;
    }
    let segs = segments(req.path)?;
    cfg.maps.iter().find_map(|m| lookup_in(cfg, m, &segs, req))
}

fn lookup_in(
    cfg: &StaticConfig,
    m: &StaticMap,
    segs: &[Vec<u8>],
    req: &Request<'_>,
) -> Option<Found> {
    if segs.len() < m.mount.len()
        || !m
            .mount
            .iter()
            .zip(segs)
            .all(|(a, b)| a.as_bytes() == b.as_slice())
    {
        return None;
    }
    let rest = if m.whole_path {
        segs
    } else {
        &segs[m.mount.len()..]
    };
    let root = std::fs::canonicalize(&m.dir).ok()?;
    let mut path = root.clone();
    for s in rest {
        path.push(OsStr::from_bytes(s));
    }
    let (mut real, mut meta) = contained(&path, &root, &cfg.safe)?;
    if meta.is_dir() {
        (real, meta) = cfg.index.iter().find_map(|name| {
            contained(&real.join(name), &root, &cfg.safe).filter(|(_, m)| m.is_file())
        })?;
    }
    if !meta.is_file() {
        return None;
    }
    let real_bytes = real.as_os_str().as_bytes();
    if cfg
        .skip_ext
        .iter()
        .any(|e| real_bytes.ends_with(e.as_bytes()))
    {
        return None;
    }
    let content_type = mime::content_type(real_bytes);
    let mut found = None;
    if accepts_gzip(req.accept_encoding) && cfg.gzip.wants(real_bytes) {
        let mut gz = real.clone().into_os_string();
        gz.push(".gz");
        if let Some((gz, gmeta)) =
            contained(Path::new(&gz), &root, &cfg.safe).filter(|(_, m)| m.is_file())
        {
            found = open(&gz, &gmeta).map(|f| (f, true));
        }
    }
    let ((file, len, mtime), gzip) = match found {
        Some(f) => f,
        None => (open(&real, &meta)?, false),
    };
    let expires = if cfg.expires.is_empty() {
        None
    } else {
        let path_info = crate::http::target::percent_decode(req.path);
        rules::expires(
            &cfg.expires,
            &rules::Subject {
                file: real_bytes,
                uri: if req.uri.is_empty() {
                    req.path
                } else {
                    req.uri
                },
                path_info: &path_info,
                content_type,
                mtime,
            },
        )
    };
    Some(Found {
        file,
        len,
        mtime,
        content_type,
        gzip,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_normalize() {
        let s = |p: &[u8]| {
            segments(p).map(|v| {
                v.iter()
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
        };
        for (p, want) in [
            (&b"/static/a.css"[..], Some("static/a.css")),
            (b"/static/../secret", Some("secret")),
            (b"/static/%2e%2e/secret", Some("secret")),
            (b"/static/%2E%2E%2fsecret", Some("secret")),
            (b"/../../etc/passwd", Some("etc/passwd")),
            (b"//a/./b/", Some("a/b")),
            (b"/a%00b", None),
            (b"a/b", None),
            (b"/", Some("")),
        ] {
            assert_eq!(s(p).as_deref(), want, "{:?}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn map_values() {
        let m = StaticMap::parse("/static/=/srv/s", false).unwrap();
        assert_eq!(m.mount, vec!["static"]);
        assert_eq!(m.dir, PathBuf::from("/srv/s"));
        assert!(StaticMap::parse("/static", false).is_err());
        assert!(StaticMap::parse("static=/x", false).is_err());
        assert!(StaticMap::parse("/s=", false).is_err());
    }

    #[test]
    fn gzip_acceptance() {
        for (h, want) in [
            (None, false),
            (Some(&b"gzip"[..]), true),
            (Some(b"br, GZIP;q=0.5"), true),
            (Some(b"gzip;q=0"), false),
            (Some(b"gzip;q=0.0"), false),
            (Some(b"deflate"), false),
            (Some(b"*"), true),
        ] {
            assert_eq!(accepts_gzip(h), want, "{h:?}");
        }
    }

    #[test]
    fn lookup_stays_inside() {
        let base = std::env::temp_dir().join(format!("headrace-static-{}", std::process::id()));
        let dir = base.join("static");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.css"), b"body{}").unwrap();
        std::fs::write(dir.join("sub/index.html"), b"<p>").unwrap();
        std::fs::write(base.join("secret"), b"no").unwrap();
        let _ = std::fs::remove_file(dir.join("link"));
        std::os::unix::fs::symlink(base.join("secret"), dir.join("link")).unwrap();
        let cfg = StaticConfig {
            maps: vec![StaticMap::parse(&format!("/static={}", dir.display()), false).unwrap()],
            index: vec!["index.html".into()],
            ..StaticConfig::default()
        };
        let get = |p: &'static [u8]| {
            lookup(
                &cfg,
                &Request {
                    method: b"GET",
                    path: p,
                    ..Request::default()
                },
            )
        };
        let f = get(b"/static/a.css").unwrap();
        assert_eq!((f.len, f.content_type), (6, "text/css"));
        assert_eq!(get(b"/static/sub/").unwrap().content_type, "text/html");
        for p in [
            &b"/static/../secret"[..],
            b"/static/%2e%2e/secret",
            b"/static/link",
            b"/static/missing",
            b"/staticx/a.css",
            b"/static/sub/nothing/..%2f..%2f..%2fsecret",
        ] {
            assert!(get(p).is_none(), "{:?}", String::from_utf8_lossy(p));
        }
        let post = lookup(
            &cfg,
            &Request {
                method: b"POST",
                path: b"/static/a.css",
                ..Request::default()
            },
        );
        assert!(post.is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
