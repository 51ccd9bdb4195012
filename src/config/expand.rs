//! The three expansion passes uWSGI runs over every option's value once all sources are read
//! (core/uwsgi.c: `uwsgi_apply_config_pass` with `$`, `@`, then `%`): `$(VAR)` from the
//! environment, `@(file)` / `@(exec://cmd)` from a file or a command's output, and `%(key)` from
//! the first value of any key (options and placeholders alike, before or after), with
//! left-to-right arithmetic when the key has spaces. A reference that resolves to nothing is left
//! as written (so `%(ltime)` reaches log-format). Unlike uWSGI, which loops forever on
//! `a = x%(a)`, a reference cycle is an error naming the chain.

use super::collect::Entry;
use super::ConfigError;
use std::collections::HashSet;

/// Substitutions in one value before it is declared endless.
const MAX_SUBSTITUTIONS: usize = 10_000;
/// Longest value an expansion may produce.
const MAX_LEN: usize = 1 << 20;
/// Deepest chain of `%(a)` -> `%(b)` -> ...
const MAX_CHAIN: usize = 256;

type Hook<'a> = dyn FnMut(&str) -> Result<Option<String>, String> + 'a;

/// uWSGI's scanner for `S(key)`: nested parentheses belong to the key, an empty key is left,
/// and after each substitution the scan restarts at the value's second byte (as uWSGI's `j = 0`
/// followed by the loop's `j++` does).
fn scan(value: &str, symbol: u8, hook: &mut Hook<'_>) -> Result<String, String> {
    let mut v = value.as_bytes().to_vec();
    let (mut j, mut has, mut depth, mut start, mut subs) = (0usize, 0usize, 0usize, 0usize, 0usize);
    while j < v.len() {
        let c = v[j];
        if c == symbol {
            has = 1;
        } else if c == b'(' && has == 1 {
            has = 2;
            depth = 0;
            start = j + 1;
        } else if has > 1 {
            if c == b'(' {
                has += 1;
                depth += 1;
            } else if c == b')' {
                if depth > 0 {
                    has += 1;
                    depth -= 1;
                } else if has <= 2 {
                    has = 0;
                } else {
                    let key = String::from_utf8_lossy(&v[start..start + has - 2]).into_owned();
                    has = 0;
                    if let Some(val) = hook(&key)? {
                        let mut nv = v[..start - 2].to_vec();
                        nv.extend_from_slice(val.as_bytes());
                        nv.extend_from_slice(&v[j + 1..]);
                        v = nv;
                        subs += 1;
                        if subs > MAX_SUBSTITUTIONS || v.len() > MAX_LEN {
                            return Err(format!(
                                "expanding {}({key}) does not end",
                                char::from(symbol)
                            ));
                        }
                        j = 1;
                        continue;
                    }
                }
            } else {
                has += 1;
            }
        } else {
            has = 0;
        }
        j += 1;
    }
    Ok(String::from_utf8_lossy(&v).into_owned())
}

/// C's `strtoll(s, NULL, 10)`: leading blanks, a sign, digits; anything else ends the number.
fn strtoll(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |n, d| {
            n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if neg {
        -n
    } else {
        n
    }
}

struct Expander<'a> {
    entries: &'a mut [Entry],
    /// 0 = not yet, 1 = in progress, 2 = done.
    state: Vec<u8>,
    chain: Vec<usize>,
    referenced: HashSet<String>,
}

impl Expander<'_> {
    fn value_of(&mut self, key: &str) -> Result<Option<String>, String> {
        self.referenced.insert(key.to_owned());
        let Some(i) = self.entries.iter().position(|e| e.key == key) else {
            return Ok(None);
        };
        if !self.entries[i].configured {
            self.expand(i)?;
        }
        Ok(Some(self.entries[i].value.clone()))
    }

    fn expand(&mut self, i: usize) -> Result<(), String> {
        match self.state[i] {
            2 => return Ok(()),
            1 => {
                let mut names: Vec<&str> = self
                    .chain
                    .iter()
                    .map(|&c| self.entries[c].key.as_str())
                    .collect();
                let from = names
                    .iter()
                    .position(|n| *n == self.entries[i].key)
                    .unwrap_or(0);
                names.drain(..from);
                names.push(&self.entries[i].key);
                return Err(format!(
                    "%({}) refers to itself: {}",
                    self.entries[i].key,
                    names.join(" -> ")
                ));
            }
            _ => {}
        }
        if self.chain.len() >= MAX_CHAIN {
            return Err(format!("placeholders nest more than {MAX_CHAIN} deep"));
        }
        self.state[i] = 1;
        self.chain.push(i);
        let v = self.entries[i].value.clone();
        let out = scan(&v, b'%', &mut |k| self.placeholder(k))?;
        self.chain.pop();
        self.entries[i].value = out;
        self.state[i] = 2;
        Ok(())
    }

    /// uWSGI's `uwsgi_manage_placeholder`: a plain key is looked up; with spaces, tokens are
    /// numbers, operators (`+ - * /`, `++`, `--`) or keys (unknown: empty), applied left to
    /// right; plain juxtaposition concatenates.
    fn placeholder(&mut self, key: &str) -> Result<Option<String>, String> {
        if !key.contains(' ') {
            return self.value_of(key);
        }
        let mut cur: Option<String> = None;
        let mut op = b' ';
        for tok in key.split(' ').filter(|t| !t.is_empty()) {
            let value = match tok {
                "+" | "-" | "*" | "/" => {
                    op = tok.as_bytes()[0];
                    continue;
                }
                "++" | "--" => {
                    if let Some(c) = &cur {
                        let d = if tok == "++" { 1 } else { -1 };
                        cur = Some(strtoll(c).wrapping_add(d).to_string());
                    }
                    op = b' ';
                    continue;
                }
                t if t.bytes().all(|b| b.is_ascii_digit()) => t.to_owned(),
                t => self.value_of(t)?.unwrap_or_default(),
            };
            let a = cur.as_deref().map_or(0, strtoll);
            let b = strtoll(&value);
            cur = Some(match op {
                b'+' => a.wrapping_add(b).to_string(),
                b'-' => a.wrapping_sub(b).to_string(),
                b'*' => a.wrapping_mul(b).to_string(),
                b'/' => a.checked_div(b).unwrap_or(0).to_string(),
                _ => cur.unwrap_or_default() + &value,
            });
            op = b' ';
        }
        Ok(cur)
    }
}

/// `@(...)`: a file's content or, with `exec://`, a command's output, less one trailing newline.
fn at_file(key: &str) -> Result<Option<String>, String> {
    let bytes = if let Some(cmd) = key.strip_prefix("exec://") {
        std::process::Command::new("/bin/sh")
            .args(["-c", cmd])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map(|o| o.stdout)
            .map_err(|e| format!("@(exec://{cmd}): {e}"))?
    } else {
        std::fs::read(key).map_err(|e| format!("@({key}): {e}"))?
    };
    let mut s = String::from_utf8_lossy(&bytes).into_owned();
    if s.ends_with(['\n', '\r']) {
        s.pop();
    }
    Ok(Some(s))
}

/// Run the three passes over the entries not yet applied; returns every key a `%(...)` named,
/// so that custom keys used as placeholders are not reported as unknown options.
pub fn expand(
    entries: &mut [Entry],
    env: &[(String, String)],
) -> Result<HashSet<String>, ConfigError> {
    let err = |e: &Entry, reason: String| ConfigError::Lang {
        key: e.key.clone(),
        source_desc: e.origin.describe(),
        reason,
    };
    let getenv = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for e in entries.iter_mut().filter(|e| !e.configured) {
        let r = scan(&e.value, b'$', &mut |k| {
            // `$(VAR:-default)` as in the shell; uWSGI 2.0 itself leaves it as written.
            Ok(match k.split_once(":-") {
                Some((name, default)) => Some(
                    getenv(name)
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| default.to_owned()),
                ),
                None => getenv(k),
            })
        });
        e.value = r.map_err(|r| err(e, r))?;
    }
    for e in entries.iter_mut().filter(|e| !e.configured) {
        let r = scan(&e.value, b'@', &mut at_file);
        e.value = r.map_err(|r| err(e, r))?;
    }
    let n = entries.len();
    let mut x = Expander {
        entries,
        state: vec![0; n],
        chain: Vec::new(),
        referenced: HashSet::new(),
    };
    for i in 0..n {
        if !x.entries[i].configured {
            if let Err(r) = x.expand(i) {
                return Err(err(&x.entries[i], r));
            }
        }
    }
    Ok(x.referenced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::collect::Origin;

    fn run(lines: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Vec<String>, String> {
        let mut entries: Vec<Entry> = lines
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
                origin: Origin::File {
                    file: "u.ini".into(),
                    line: 1,
                },
                configured: k.starts_with("ph-"),
            })
            .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        expand(&mut entries, &env).map_err(|e| e.to_string())?;
        Ok(entries.into_iter().map(|e| e.value).collect())
    }

    #[test]
    fn passes_match_uwsgi() {
        // Each expected value was printed by uWSGI 2.0.30 --show-config for the same lines.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[("base", "/srv/a"), ("x", "%(base)/y")],
                &["/srv/a", "/srv/a/y"],
            ),
            (&[("y", "%(later)"), ("later", "L")], &["L", "L"]),
            (&[("k", "2"), ("ar", "%(k * 2)")], &["2", "4"]),
            (&[("ar2", "%(n + 3 * 2)"), ("n", "4")], &["14", "4"]),
            (
                &[
                    ("n", "7"),
                    ("a", "%(n / 0)"),
                    ("b", "%(n -- x)"),
                    ("c", "%(n n)"),
                ],
                &["7", "0", "6", "77"],
            ),
            (&[("unk", "%(ltime) %(status)")], &["%(ltime) %(status)"]),
            (
                &[("e", "$(HR_X)|$(HR_UNSET)|$(HR_UNSET:-dflt)|$(HR_X:-d)")],
                &["vx|$(HR_UNSET)|dflt|vx"],
            ),
            // uWSGI rescans from the second byte after a substitution: a value that starts
            // with the substituted text keeps a reference that text begins with.
            (
                &[
                    ("ph-a", "%(b)"),
                    ("b", "1"),
                    ("c", "%(ph-a)"),
                    ("c2", "x%(ph-a)"),
                ],
                &["%(b)", "1", "%(b)", "x1"],
            ),
            (
                &[("e", ""), ("n", "N"), ("x", "%(e)%(n)"), ("y", "-%(e)%(n)")],
                &["", "N", "%(n)", "-N"],
            ),
            (
                &[("a", "%()"), ("b", "%(x(y))"), ("c", "%%(a)")],
                &["%()", "%(x(y))", "%%()"],
            ),
            (
                &[("p", "projecthome"), ("d", "/srv/%(p)/%(p)")],
                &["projecthome", "/srv/projecthome/projecthome"],
            ),
            (
                &[("first", "1"), ("first", "2"), ("r", "%(first)")],
                &["1", "2", "1"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(run(input, &[("HR_X", "vx")]).unwrap(), *want, "{input:?}");
        }
    }

    #[test]
    fn cycles_are_errors() {
        for (lines, chain) in [
            (&[("a", "x%(a)")][..], "a -> a"),
            (
                &[("a", "%(b)"), ("b", "%(c)"), ("c", "%(a)")][..],
                "a -> b -> c -> a",
            ),
            (&[("a", "%(b + 1)"), ("b", "%(a)")][..], "a -> b -> a"),
        ] {
            let e = run(lines, &[]).unwrap_err();
            assert!(e.contains(chain) && e.contains("u.ini line 1"), "{e}");
        }
        let e = run(&[("ph-a", "x%(ph-a)"), ("b", "%(ph-a)")], &[]).unwrap_err();
        assert!(e.contains("does not end"), "{e}");
        let e = run(&[("e", "$(HR_LOOP)")], &[("HR_LOOP", "a$(HR_LOOP)")]).unwrap_err();
        assert!(e.contains("does not end"), "{e}");
    }

    #[test]
    fn at_files() {
        let p = std::env::temp_dir().join(format!("hr-at-{}", std::process::id()));
        std::fs::write(&p, "content\n\n").unwrap();
        let v = format!("@({})|@(exec://echo hi)", p.display());
        assert_eq!(run(&[("a", &v)], &[]).unwrap(), ["content\n|hi"]);
        assert!(run(&[("a", "@(/no/such/file)")], &[]).is_err());
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn strtoll_like_c() {
        for (s, n) in [("12", 12), (" -3x", -3), ("", 0), ("abc", 0), ("+4", 4)] {
            assert_eq!(strtoll(s), n, "{s}");
        }
    }
}
