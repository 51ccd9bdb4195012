//! uWSGI's config logic (core/config.c `uwsgi_logic_opt_*`): after `if-env = X`, every option
//! up to `endif` is added only when X is set; after `for = a b`, every option up to `endfor` is
//! added once per item, with `%(_)` replaced by the item (or by the tested value for `if-*`).

use super::collect::{Collector, Origin};
use super::ConfigError;
use std::path::Path;

/// One logic block kind; `bool` is "not" (`if-not-env`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logic {
    /// `for = a b c`.
    For,
    /// `for-glob = PATTERN`.
    ForGlob,
    /// `for-times = N`: 1..=N.
    ForTimes,
    /// `for-readline = FILE`.
    ForReadline,
    /// `if-opt = KEY[=VALUE]`.
    IfOpt(bool),
    /// `if-env = VAR[=VALUE]`.
    IfEnv(bool),
    /// `if-reload`.
    IfReload(bool),
    /// `if-exists = PATH`.
    IfExists(bool),
    /// `if-file = PATH`.
    IfFile(bool),
    /// `if-dir = PATH`.
    IfDir(bool),
    /// `if-plugin = NAME`.
    IfPlugin(bool),
    /// `if-hostname = NAME`.
    IfHostname(bool),
}

/// The logic block a key opens, if any.
#[must_use]
pub fn kind(key: &str) -> Option<Logic> {
    let (not, rest) = match key.strip_prefix("if-not-") {
        Some(r) => (true, r),
        None => (false, key.strip_prefix("if-").unwrap_or(key)),
    };
    Some(match (key, rest) {
        ("for", _) => Logic::For,
        ("for-glob", _) => Logic::ForGlob,
        ("for-times", _) => Logic::ForTimes,
        ("for-readline", _) => Logic::ForReadline,
        ("ifenv", _) => Logic::IfEnv(false),
        ("ifexists", _) => Logic::IfExists(false),
        ("ifdir", _) => Logic::IfDir(false),
        ("ifplugin", _) => Logic::IfPlugin(false),
        (k, _) if !k.starts_with("if-") => return None,
        (_, "opt") => Logic::IfOpt(not),
        (_, "env") => Logic::IfEnv(not),
        (_, "reload") => Logic::IfReload(not),
        (_, "exists") => Logic::IfExists(not),
        (_, "file") => Logic::IfFile(not),
        (_, "dir" | "directory") => Logic::IfDir(not),
        (_, "plugin") => Logic::IfPlugin(not),
        (_, "hostname") => Logic::IfHostname(not),
        _ => return None,
    })
}

/// Plugins headrace has built in, for `if-plugin`: python (any version) and the http router.
#[must_use]
pub fn has_plugin(name: &str) -> bool {
    let name = name.trim().trim_end_matches("_plugin.so");
    let name = name.rsplit('/').next().unwrap_or(name);
    let py = name
        .strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    // `logfile`: file loggers are built in (`--logger file:PATH`).
    py || matches!(name, "http" | "corerouter" | "pyuwsgi" | "logfile")
}

/// Upper bound of `for-times`, so a typo cannot make millions of options.
const MAX_TIMES: i64 = 100_000;

/// Apply the open logic block to one option.
pub fn run(
    c: &mut Collector,
    logic: Logic,
    arg: &str,
    key: &str,
    value: &str,
    origin: &Origin,
) -> Result<(), ConfigError> {
    let sub = |with: &str| value.replace("%(_)", with);
    let cond = |yes: bool, not: bool| yes != not;
    match logic {
        Logic::For => {
            for item in arg.split(' ').filter(|s| !s.is_empty()) {
                c.add_entry(key, &sub(item), origin, false)?;
            }
        }
        Logic::ForGlob => {
            for item in glob(arg) {
                c.add_entry(key, &sub(&item), origin, false)?;
            }
        }
        Logic::ForTimes => {
            let n = super::typed::atoi(arg);
            if n > MAX_TIMES {
                return Err(ConfigError::Lang {
                    key: "for-times".to_owned(),
                    source_desc: origin.describe(),
                    reason: format!("{n} is more than {MAX_TIMES}"),
                });
            }
            for i in 1..=n {
                c.add_entry(key, &sub(&i.to_string()), origin, false)?;
            }
        }
        Logic::ForReadline => match std::fs::read_to_string(arg) {
            Ok(text) => {
                for line in text.lines() {
                    c.add_entry(
                        key,
                        &sub(line.trim_end_matches(['\r', '\n'])),
                        origin,
                        false,
                    )?;
                }
            }
            Err(e) => c.warnings.push(format!("for-readline {arg}: {e}")),
        },
        Logic::IfOpt(not) | Logic::IfEnv(not) => {
            let (name, want) = match arg.split_once('=') {
                Some((n, w)) => (n, Some(w)),
                None => (arg, None),
            };
            let found = if matches!(logic, Logic::IfOpt(_)) {
                c.first(name).map(str::to_owned)
            } else {
                std::env::var(name).ok()
            };
            let yes = match (&found, want) {
                (Some(v), Some(w)) => v == w,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if cond(yes, not) {
                let v = found.map_or_else(|| value.to_owned(), |f| sub(&f));
                c.add_entry(key, &v, origin, false)?;
            }
        }
        Logic::IfReload(not) => {
            if cond(c.is_reload, not) {
                c.add_entry(key, value, origin, false)?;
            }
        }
        Logic::IfExists(not) | Logic::IfFile(not) | Logic::IfDir(not) => {
            let p = Path::new(arg);
            let yes = match logic {
                Logic::IfExists(_) => p.exists(),
                Logic::IfFile(_) => p.is_file(),
                _ => p.is_dir(),
            };
            if cond(yes, not) {
                c.add_entry(key, &sub(arg), origin, false)?;
            }
        }
        Logic::IfPlugin(not) => {
            if cond(has_plugin(arg), not) {
                c.add_entry(key, &sub(arg), origin, false)?;
            }
        }
        Logic::IfHostname(not) => {
            if cond(super::ini::hostname() == arg, not) {
                c.add_entry(key, &sub(arg), origin, false)?;
            }
        }
    }
    Ok(())
}

/// `glob(3)` with GLOB_MARK (directories get a `/`) and GLOB_NOCHECK (no match: the pattern
/// itself), sorted; `*`, `?` and `[...]` per path component, hidden files only when the
/// component starts with a dot.
#[must_use]
pub fn glob(pattern: &str) -> Vec<String> {
    let mut found: Vec<String> = vec![if pattern.starts_with('/') {
        "/".to_owned()
    } else {
        String::new()
    }];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for base in &found {
            if !part.contains(['*', '?', '[']) {
                next.push(format!("{base}{part}/"));
                continue;
            }
            let dir = if base.is_empty() { "." } else { base.as_str() };
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if (name.starts_with('.') && !part.starts_with('.')) || !matches(part, &name) {
                    continue;
                }
                next.push(format!("{base}{name}/"));
            }
        }
        found = next;
    }
    let mut out: Vec<String> = found
        .into_iter()
        .filter_map(|p| {
            let bare = p.trim_end_matches('/').to_owned();
            let bare = if bare.is_empty() {
                "/".to_owned()
            } else {
                bare
            };
            let meta = std::fs::metadata(&bare).ok()?;
            Some(if meta.is_dir() && bare != "/" {
                format!("{bare}/")
            } else {
                bare
            })
        })
        .collect();
    out.sort();
    if out.is_empty() {
        out.push(pattern.to_owned());
    }
    out
}

/// fnmatch(3) for one path component.
fn matches(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => class(&p[pi..], n[ni]),
            Some(&c) if c == n[ni] => Some(1),
            _ => None,
        };
        if let Some(len) = step {
            pi += len;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the `[...]` class at the start of `p`; the class's length when it matches.
fn class(p: &[char], c: char) -> Option<usize> {
    let mut i = 1;
    let neg = matches!(p.get(1), Some('!' | '^'));
    if neg {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while let Some(&pc) = p.get(i) {
        if pc == ']' && !first {
            return (hit != neg).then_some(i + 1);
        }
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            hit |= (pc..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= pc == c;
            i += 1;
        }
        first = false;
    }
    // No closing bracket: a literal '['.
    (c == '[').then_some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_block(lines: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut c = Collector::new(false);
        for (k, v) in lines {
            c.add(k, v, &Origin::Cli).unwrap();
        }
        c.entries
            .into_iter()
            .filter(|e| kind(&e.key).is_none() && !e.key.starts_with("end"))
            .map(|e| (e.key, e.value))
            .collect()
    }

    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);

    #[test]
    fn blocks() {
        // Expected outputs from uWSGI 2.0.30 --show-config on the same lines.
        std::env::set_var("HR_LOGIC_SET", "yes");
        let cases: &[Case] = &[
            (
                &[("for", "a  b c"), ("item", "%(_)"), ("endfor", "")],
                &[("item", "a"), ("item", "b"), ("item", "c")],
            ),
            (
                &[("for-times", "2"), ("t", "n%(_)"), ("end", "")],
                &[("t", "n1"), ("t", "n2")],
            ),
            (
                &[
                    ("if-env", "HR_LOGIC_SET"),
                    ("x", "%(_)"),
                    ("endif", ""),
                    ("y", "1"),
                ],
                &[("x", "yes"), ("y", "1")],
            ),
            (
                &[("if-env", "HR_LOGIC_SET=no"), ("x", "1"), ("endif", "")],
                &[],
            ),
            (
                &[
                    ("if-not-env", "HR_LOGIC_UNSET"),
                    ("x", "keep %(_)"),
                    ("endif", ""),
                ],
                &[("x", "keep %(_)")],
            ),
            (
                &[("if-not-env", "HR_LOGIC_SET"), ("x", "1"), ("endif", "")],
                &[],
            ),
            (
                &[
                    ("p", "1"),
                    ("p", "2"),
                    ("if-opt", "p=2"),
                    ("x", "1"),
                    ("endif", ""),
                ],
                &[("p", "1"), ("p", "2")],
            ),
            (
                &[("p", "1"), ("if-opt", "p"), ("x", "%(_)"), ("endif", "")],
                &[("p", "1"), ("x", "1")],
            ),
            (
                &[("if-not-opt", "q"), ("x", "1"), ("endif", "")],
                &[("x", "1")],
            ),
            (
                &[("if-exists", "/tmp"), ("x", "%(_)"), ("endif", "")],
                &[("x", "/tmp")],
            ),
            (&[("if-file", "/tmp"), ("x", "1"), ("endif", "")], &[]),
            (
                &[("if-dir", "/tmp"), ("x", "1"), ("endif", "")],
                &[("x", "1")],
            ),
            (
                &[("if-not-dir", "/nope"), ("x", "1"), ("endif", "")],
                &[("x", "1")],
            ),
            (
                &[("if-plugin", "python3"), ("x", "%(_)"), ("endif", "")],
                &[("x", "python3")],
            ),
            (&[("if-plugin", "php"), ("x", "1"), ("endif", "")], &[]),
            (&[("if-reload", ""), ("x", "1"), ("endif", "")], &[]),
            (
                &[("if-not-reload", ""), ("x", "1"), ("endif", "")],
                &[("x", "1")],
            ),
            (
                &[("if-hostname", "no-such-host-x"), ("x", "1"), ("endif", "")],
                &[],
            ),
        ];
        for (input, want) in cases {
            let got = run_block(input);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(got, want, "{input:?}");
        }
        let mut c = Collector::new(false);
        c.add("for", "a", &Origin::Cli).unwrap();
        assert!(
            c.add("if-env", "X", &Origin::Cli).is_err(),
            "uWSGI: recursive logic is refused"
        );
        let mut c = Collector::new(false);
        c.add("for-times", "1000000", &Origin::Cli).unwrap();
        assert!(c.add("x", "1", &Origin::Cli).is_err());
    }

    #[test]
    fn glob_and_fnmatch() {
        assert!(matches("*.ini", "a.ini") && !matches("*.ini", "a.ini.bak"));
        assert!(matches("a?c", "abc") && matches("[a-c]x", "bx") && !matches("[!a-c]x", "bx"));
        assert!(matches("*", "") && matches("a*b*c", "aXXbYc") && !matches("a*b", "ac"));
        let dir = std::env::temp_dir().join(format!("hr-glob-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["b.ini", "a.ini", "c.txt", ".h.ini"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let d = dir.display();
        assert_eq!(
            glob(&format!("{d}/*.ini")),
            [format!("{d}/a.ini"), format!("{d}/b.ini")]
        );
        assert_eq!(glob(&format!("{d}/s*")), [format!("{d}/sub/")]);
        assert_eq!(glob(&format!("{d}/*.none")), [format!("{d}/*.none")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
