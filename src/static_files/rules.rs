//! `static-expires*` and `static-gzip*`: which files get an `Expires` header, and which are
//! looked for as FILE.gz. uWSGI matches its regexps unanchored (PCRE search); so does this.

use super::StaticError;
use regex::bytes::Regex;
use std::time::{Duration, SystemTime};

/// What an expires rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// `static-expires`: the file's real path, by regexp.
    File,
    /// `static-expires-uri`: REQUEST_URI, by regexp.
    Uri,
    /// `static-expires-path-info`: PATH_INFO (decoded), by regexp.
    PathInfo,
    /// `static-expires-type`: the Content-Type, exactly.
    Type,
}

/// One `static-expires*` value.
#[derive(Debug, Clone)]
pub struct Expires {
    /// What it looks at.
    pub on: On,
    /// The `-mtime` form: Expires counts from the file's modification time, not from now.
    pub from_mtime: bool,
    /// The regexp (`None` for [`On::Type`]).
    pattern: Option<Regex>,
    /// The Content-Type of an [`On::Type`] rule, matched whole.
    ty: String,
    /// Seconds added.
    secs: u64,
}

impl Expires {
    /// Parse `REGEXP SECONDS` (`TYPE=SECONDS` for [`On::Type`]).
    pub fn parse(on: On, from_mtime: bool, value: &str) -> Result<Self, StaticError> {
        let value = value.trim();
        let split = if on == On::Type {
            value.rsplit_once('=')
        } else {
            value.rsplit_once([' ', '\t'])
        };
        let (what, secs) = split.ok_or(StaticError::Expires)?;
        let secs = secs.trim().parse().map_err(|_| StaticError::Expires)?;
        let what = what.trim();
        if what.is_empty() {
            return Err(StaticError::Expires);
        }
        let (pattern, ty) = if on == On::Type {
            (None, what.to_owned())
        } else {
            let re = Regex::new(what).map_err(|e| StaticError::Regex(e.to_string()))?;
            (Some(re), String::new())
        };
        Ok(Self {
            on,
            from_mtime,
            pattern,
            ty,
            secs,
        })
    }
}

/// What a request and its file offer to the expires rules.
pub struct Subject<'a> {
    /// The file's real path.
    pub file: &'a [u8],
    /// REQUEST_URI as sent.
    pub uri: &'a [u8],
    /// The decoded path.
    pub path_info: &'a [u8],
    /// The Content-Type.
    pub content_type: &'a str,
    /// The file's modification time.
    pub mtime: SystemTime,
}

/// When the response expires, from the first rule that matches, in uWSGI's order: by type,
/// by file name, by PATH_INFO, by URI; within each the plain rules before the `-mtime` ones.
#[must_use]
pub fn expires(rules: &[Expires], s: &Subject<'_>) -> Option<SystemTime> {
    const ORDER: [(On, bool); 8] = [
        (On::Type, false),
        (On::Type, true),
        (On::File, false),
        (On::File, true),
        (On::PathInfo, false),
        (On::PathInfo, true),
        (On::Uri, false),
        (On::Uri, true),
    ];
    ORDER.iter().find_map(|&(on, from_mtime)| {
        let rule = rules.iter().find(|r| {
            r.on == on
                && r.from_mtime == from_mtime
                && match (on, &r.pattern) {
                    (On::Type, _) => r.ty == s.content_type,
                    (On::File, Some(p)) => p.is_match(s.file),
                    (On::PathInfo, Some(p)) => p.is_match(s.path_info),
                    (On::Uri, Some(p)) => p.is_match(s.uri),
                    (_, None) => false,
                }
        })?;
        let base = if from_mtime {
            s.mtime
        } else {
            SystemTime::now()
        };
        Some(base + Duration::from_secs(rule.secs))
    })
}

/// `static-gzip-all`, `static-gzip-dir`/`-prefix`, `static-gzip-ext`/`-suffix`, `static-gzip`.
#[derive(Debug, Clone, Default)]
pub struct Gzip {
    /// Every file.
    pub all: bool,
    /// Files whose real path starts with one of these.
    pub prefixes: Vec<String>,
    /// Files whose real path ends with one of these.
    pub suffixes: Vec<String>,
    /// Files whose real path matches one of these.
    pub regexes: Vec<Regex>,
}

impl Gzip {
    /// Whether FILE.gz is looked for when serving `file` (its real path).
    #[must_use]
    pub fn wants(&self, file: &[u8]) -> bool {
        self.all
            || self.prefixes.iter().any(|p| file.starts_with(p.as_bytes()))
            || self.suffixes.iter().any(|p| file.ends_with(p.as_bytes()))
            || self.regexes.iter().any(|r| r.is_match(file))
    }

    /// Parse a `static-gzip` regexp.
    pub fn regex(value: &str) -> Result<Regex, StaticError> {
        Regex::new(value.trim()).map_err(|e| StaticError::Regex(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let now = SystemTime::now();
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let rules = vec![
            Expires::parse(On::File, false, r"\.css$ 60").unwrap(),
            Expires::parse(On::Uri, true, "/* 7776000").unwrap(),
            Expires::parse(On::Type, false, "image/png=5").unwrap(),
        ];
        let subject = |file: &'static [u8], ty: &'static str| Subject {
            file,
            uri: b"/static/x",
            path_info: b"/static/x",
            content_type: ty,
            mtime,
        };
        let css = expires(&rules, &subject(b"/srv/a.css", "text/css")).unwrap();
        assert!(css >= now + Duration::from_secs(60) && css < now + Duration::from_secs(70));
        let js = expires(&rules, &subject(b"/srv/a.js", "text/javascript")).unwrap();
        assert_eq!(js, mtime + Duration::from_secs(7_776_000));
        // The type rule comes first, as in uWSGI.
        let png = expires(&rules, &subject(b"/srv/a.css", "image/png")).unwrap();
        assert!(png < now + Duration::from_secs(10));
        assert!(expires(&rules[..1], &subject(b"/srv/a.js", "x")).is_none());
        for bad in ["60", "\\.css$ x", "(unclosed 60"] {
            assert!(Expires::parse(On::File, false, bad).is_err(), "{bad}");
        }
        assert!(Expires::parse(On::Type, false, "text/css 60").is_err());
    }

    #[test]
    fn gzip_rules() {
        let g = Gzip {
            prefixes: vec!["/srv/assets/".into()],
            suffixes: vec![".css".into()],
            regexes: vec![Gzip::regex(r"\.js$").unwrap()],
            ..Gzip::default()
        };
        assert!(g.wants(b"/srv/assets/a.bin"));
        assert!(g.wants(b"/srv/x/a.css"));
        assert!(g.wants(b"/srv/x/a.js"));
        assert!(!g.wants(b"/srv/x/a.png"));
        assert!(Gzip {
            all: true,
            ..Gzip::default()
        }
        .wants(b"/any"));
    }
}
