//! What headrace does with each of uWSGI's options: the generated table's row type and the one
//! lookup that combines it with the implemented options of `spec`.

use super::spec::{self, OptSpec, Ty};
use super::uwsgi_options::{REASONS, UWSGI_OPTIONS};

/// Whether an option takes a value, as uWSGI's getopt table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A switch (`no_argument`).
    No,
    /// A value is required (`required_argument`).
    Required,
    /// A value may follow with `=` (`optional_argument`).
    Optional,
}

/// What headrace does with an option; the numbers index [`REASONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disp {
    /// Implemented (declared in `spec`).
    Works,
    /// Part of the config language, handled by the reader (ini, include, if-env, set, ...).
    Lang(u16),
    /// Harmless here: a warning at startup gives the reason.
    Accepted(u16),
    /// Would change behaviour silently if ignored: exit 2 with the reason.
    Refused(u16),
}

/// One row of the generated table.
#[derive(Debug)]
pub struct UwsgiOpt {
    /// uWSGI's option name.
    pub name: &'static str,
    /// Whether it takes a value.
    pub arg: Arg,
    /// Its short command-line letter.
    pub short: Option<char>,
    /// What headrace does with it.
    pub disp: Disp,
}

/// A row of the generated table (short constructor keeps the generated file compact).
#[must_use]
pub const fn u(name: &'static str, arg: Arg, short: Option<char>, disp: Disp) -> UwsgiOpt {
    UwsgiOpt {
        name,
        arg,
        short,
        disp,
    }
}

/// An option key, resolved.
#[derive(Debug, Clone, Copy)]
pub enum Known {
    /// Implemented by headrace.
    Spec(&'static OptSpec),
    /// One of uWSGI's other options.
    Uwsgi(&'static UwsgiOpt),
}

impl Known {
    /// Whether it takes a value on the command line.
    #[must_use]
    pub fn arg(self) -> Arg {
        match self {
            Self::Spec(s) if s.ty == Ty::Flag => Arg::No,
            Self::Spec(s) if s.bare.is_some() => Arg::Optional,
            Self::Spec(_) => Arg::Required,
            Self::Uwsgi(u) => u.arg,
        }
    }

    /// Its canonical name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Spec(s) => s.name,
            Self::Uwsgi(u) => u.name,
        }
    }
}

/// The reason text of a disposition.
#[must_use]
pub fn reason(i: u16) -> &'static str {
    REASONS.get(usize::from(i)).copied().unwrap_or("")
}

/// Resolve a key: headrace's own options (and aliases) first, then uWSGI's table.
#[must_use]
pub fn lookup(name: &str) -> Option<Known> {
    if let Some(s) = spec::find(name) {
        return Some(Known::Spec(s));
    }
    UWSGI_OPTIONS
        .binary_search_by(|o| o.name.cmp(name))
        .ok()
        .map(|i| Known::Uwsgi(&UWSGI_OPTIONS[i]))
}

/// Resolve a short command-line letter.
#[must_use]
pub fn lookup_short(c: char) -> Option<Known> {
    if let Some(s) = spec::find_short(c) {
        return Some(Known::Spec(s));
    }
    UWSGI_OPTIONS
        .iter()
        .find(|o| o.short == Some(c))
        .map(Known::Uwsgi)
}

/// The closest known option name to a misspelt key, if one is close enough to suggest.
#[must_use]
pub fn suggest(key: &str) -> Option<&'static str> {
    let names = spec::OPTIONS
        .iter()
        .map(|o| o.name)
        .chain(UWSGI_OPTIONS.iter().map(|o| o.name));
    let limit = (key.len() / 3).clamp(1, 3);
    names
        .map(|n| (distance(key, n), n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// How many rows of the generated table have each disposition, for the report and the tests:
/// (works, lang, accepted, refused).
#[must_use]
pub fn counts() -> (usize, usize, usize, usize) {
    let mut c = (0, 0, 0, 0);
    for o in UWSGI_OPTIONS {
        match o.disp {
            Disp::Works => c.0 += 1,
            Disp::Lang(_) => c.1 += 1,
            Disp::Accepted(_) => c.2 += 1,
            Disp::Refused(_) => c.3 += 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_covers_uwsgi() {
        assert!(UWSGI_OPTIONS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(UWSGI_OPTIONS.len() > 900, "{}", UWSGI_OPTIONS.len());
        let (works, lang, accepted, refused) = counts();
        assert!(works > 40 && lang > 30 && accepted > 100 && refused > 300);
    }

    #[test]
    fn every_spec_name_that_uwsgi_has_is_marked_works() {
        for o in UWSGI_OPTIONS {
            let implemented = spec::find(o.name).is_some();
            assert_eq!(implemented, o.disp == Disp::Works, "{}", o.name);
        }
    }

    #[test]
    fn dispositions() {
        let disp = |n: &str| match lookup(n) {
            Some(Known::Uwsgi(u)) => Some(u.disp),
            _ => None,
        };
        assert!(matches!(lookup("processes"), Some(Known::Spec(_))));
        assert!(matches!(disp("emperor"), Some(Disp::Refused(_))));
        assert!(matches!(lookup("stats"), Some(Known::Spec(_))));
        assert!(matches!(disp("stats-no-cores"), Some(Disp::Accepted(_))));
        assert!(matches!(disp("if-env"), Some(Disp::Lang(_))));
        assert!(matches!(lookup("static-map"), Some(Known::Spec(_))));
        assert!(matches!(
            disp("check-static-docroot"),
            Some(Disp::Refused(_))
        ));
        assert_eq!(lookup("enable-threads").map(Known::arg), Some(Arg::No));
        assert!(lookup("zuid").is_none());
        assert_eq!(suggest("zuid"), Some("uid"));
        assert_eq!(suggest("procesess"), Some("processes"));
        assert_eq!(suggest("projecthome"), None);
    }
}
