//! Config file text, as uWSGI reads it (core/ini.c, core/yaml.c, core/uwsgi.c): the magic
//! variables (`%d`, `%n`, ...) substituted in the whole text first, then `key = value` lines of
//! one section (ini) or one top-level mapping (yaml).

use std::path::Path;

/// A `key = value` read from a file, with its 1-based line number.
pub type Line = (String, String, usize);

/// uWSGI's magic table: what `%X` becomes in a config file. Every byte not set maps to the empty
/// string (uWSGI's `init_magic_table`), `%%` to `%` and `%(` stays for the placeholder pass.
#[derive(Debug, Clone)]
pub struct Magic {
    table: Vec<String>,
    first_round_done: bool,
}

impl Magic {
    /// The table with the values that do not depend on a file (uWSGI's "static" magic vars).
    #[must_use]
    pub fn new() -> Self {
        let mut m = Self {
            table: vec![String::new(); 256],
            first_round_done: false,
        };
        m.set(b'%', "%".to_owned());
        m.set(b'(', "%(".to_owned());
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        m.set(b'v', cwd);
        m.set(b'h', hostname());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        m.set(b't', now.as_secs().to_string());
        m.set(b'T', now.as_micros().to_string());
        m.set(b'V', env!("CARGO_PKG_VERSION").to_owned());
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        m.set(b'k', cpus.to_string());
        m.set(b'[', "\x1b".to_owned());
        let (uid, gid) = ids();
        m.set(b'u', uid.to_string());
        m.set(
            b'U',
            name_of("/etc/passwd", uid).unwrap_or_else(|| uid.to_string()),
        );
        m.set(b'g', gid.to_string());
        m.set(
            b'G',
            name_of("/etc/group", gid).unwrap_or_else(|| gid.to_string()),
        );
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        m.set(b'b', exe);
        m
    }

    fn set(&mut self, c: u8, v: String) {
        self.table[usize::from(c)] = v;
    }

    fn get(&self, c: u8) -> &str {
        &self.table[usize::from(c)]
    }

    /// Point the file variables at `spec` (`path[:section]`), as `config_magic_table_fill`
    /// does; `upper` also sets the upper-case copies the first time (the first config file).
    pub fn fill(&mut self, spec: &str, upper: bool) {
        self.set(b'o', spec.to_owned());
        let (path, section) = split_section(spec);
        if !path.is_empty() {
            let p = Path::new(path);
            let full = if p.is_symlink() {
                // uWSGI keeps a symlink's own name (joined to the cwd), not its target.
                std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
            } else {
                std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
            };
            let full = full.display().to_string();
            let slash = full.rfind('/').map_or(0, |i| i + 1);
            let (dir, base) = full.split_at(slash);
            self.set(b'p', full.clone());
            self.set(
                b'j',
                format!("{:08X}", djb33x(full.as_bytes()).swap_bytes()),
            );
            let ino = std::fs::symlink_metadata(&full).map_or(String::new(), |m| {
                std::os::unix::fs::MetadataExt::ino(&m).to_string()
            });
            self.set(b'i', ino);
            self.set(b's', base.to_owned());
            self.set(b'd', dir.to_owned());
            let trimmed = dir.trim_end_matches('/');
            self.set(b'c', trimmed.rsplit('/').next().unwrap_or("").to_owned());
            let parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
            for (i, c) in (b'0'..=b'9').enumerate() {
                self.set(c, parts.get(i).map_or("", |s| s).to_owned());
            }
            let (n, e) = base.rsplit_once('.').unwrap_or((base, ""));
            self.set(b'n', n.to_owned());
            self.set(b'e', e.to_owned());
        }
        self.set(b'x', section.unwrap_or("").to_owned());
        if upper && !self.first_round_done {
            for c in *b"odspcenxij" {
                let v = self.get(c).to_owned();
                self.set(c.to_ascii_uppercase(), v);
            }
            self.first_round_done = true;
        }
    }

    /// Substitute `%X` in a file's text (uWSGI's `magic_sub`).
    #[must_use]
    pub fn apply(&self, text: &[u8]) -> String {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            if text[i] == b'%' && i + 1 < text.len() {
                out.extend_from_slice(self.get(text[i + 1]).as_bytes());
                i += 2;
            } else {
                out.push(text[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Magic {
    fn default() -> Self {
        Self::new()
    }
}

/// uWSGI's djb33x hash (over C's signed chars).
fn djb33x(bytes: &[u8]) -> u32 {
    bytes.iter().fold(5381u32, |h, &b| {
        #[allow(
            clippy::cast_possible_wrap,
            clippy::cast_sign_loss,
            reason = "C char is signed"
        )]
        let c = i32::from(b as i8) as u32;
        (h << 5).wrapping_add(h) ^ c
    })
}

/// The machine's hostname (uWSGI's `%h` and `if-hostname`).
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Real uid and gid, from /proc (no libc call outside src/sys).
fn ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("Uid:"), field("Gid:"))
}

fn name_of(db: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(db).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == id).then(|| name.to_owned())
    })
}

/// Split `path[:section]` at the last `:` (uWSGI's rule); an empty section means the default.
#[must_use]
pub fn split_section(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((p, "")) => (p, None),
        Some((p, s)) => (p, Some(s)),
        None => (spec, None),
    }
}

const BLANK: &[char] = &[' ', '\t', '\r'];

/// The `key = value` lines of `section` in ini text (uWSGI's `uwsgi_ini_config`): comments
/// only where a line starts with `;` or `#`, so the rest of a line is always the value; quotes
/// are kept; a key without `=` has the empty value; a section may appear several times.
/// Returns the lines and whether the section was found.
#[must_use]
pub fn parse_ini(text: &str, section: &str) -> (Vec<Line>, bool) {
    let mut out = Vec::new();
    let mut current = "";
    let mut found = false;
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.trim_matches(BLANK);
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            // uWSGI drops the last character, whatever it is.
            let mut chars = name.chars();
            chars.next_back();
            current = chars.as_str();
            continue;
        }
        if current != section {
            continue;
        }
        found = true;
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        out.push((
            k.trim_end_matches(BLANK).to_owned(),
            v.trim_matches(BLANK).to_owned(),
            n + 1,
        ));
    }
    (out, found)
}

fn depth(line: &str) -> usize {
    let mut d = 0;
    for c in line.chars() {
        match c {
            ' ' => d += 1,
            '\t' | '\r' => d += 8,
            _ => break,
        }
    }
    d
}

/// The flat `key: value` pairs under the top-level `section:` key of yaml text (uWSGI's own
/// line parser in core/yaml.c: `#` starts a comment anywhere, lists and flow mappings end the
/// section, values are taken as written).
#[must_use]
pub fn parse_yaml(text: &str, section: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut in_section = false;
    let mut current_depth = 0;
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        if line.is_empty() {
            continue;
        }
        let d = depth(line);
        if d <= current_depth {
            current_depth = d;
            if in_section {
                break;
            }
        } else if !in_section {
            continue;
        }
        let key = line.trim_start_matches(BLANK);
        if key.is_empty() {
            continue;
        }
        if key.starts_with(['-', '[', '{']) {
            if in_section {
                break;
            }
            continue;
        }
        if in_section {
            let Some(at) = key.find(": ").or_else(|| key.find(":\t")) else {
                break;
            };
            let k = key[..at].trim_end_matches([' ', '\t']);
            let v = key[at + 2..]
                .trim_start_matches(BLANK)
                .trim_end_matches([' ', '\t']);
            out.push((k.to_owned(), v.to_owned(), n + 1));
        } else if let Some((k, _)) = key.split_once(':') {
            in_section = k == section;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[Line]) -> Vec<(&str, &str)> {
        v.iter().map(|(k, v, _)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn ini_rules() {
        // Cases checked against uWSGI 2.0.30 --show-config.
        let text = "# c\n[other]\nprocesses = 9\n[uwsgi]\n  ; c\nfoo = bar ; not a comment\n\
                    bare\nq = \"quoted\"\n\tk\t=\tv \r\n[other]\nx=1\n[uwsgi]\nfoo = second";
        let (got, found) = parse_ini(text, "uwsgi");
        assert!(found);
        assert_eq!(
            pairs(&got),
            [
                ("foo", "bar ; not a comment"),
                ("bare", ""),
                ("q", "\"quoted\""),
                ("k", "v"),
                ("foo", "second")
            ]
        );
        assert_eq!(got[0].2, 6);
        assert_eq!(
            pairs(&parse_ini(text, "other").0),
            [("processes", "9"), ("x", "1")]
        );
        assert!(!parse_ini("[x]\na=1\n", "uwsgi").1);
        assert!(parse_ini("", "uwsgi").0.is_empty());
    }

    #[test]
    fn yaml_rules() {
        let text = "other:\n  a: 1\nuwsgi:\n  socket: :3031 # c\n  master: true\n  \
                    env: A=1\n\nnext:\n  b: 2\n";
        assert_eq!(
            pairs(&parse_yaml(text, "uwsgi")),
            [("socket", ":3031"), ("master", "true"), ("env", "A=1")]
        );
        assert!(parse_yaml("uwsgi:\n  - a\n", "uwsgi").is_empty());
    }

    #[test]
    fn magic_variables() {
        let mut m = Magic::new();
        m.fill("/srv/app/site.ini", true);
        let got = m.apply(b"%d|%p|%s|%n|%e|%c|%x|%o|%0|%1|%%|%Z|%(x)|%D|end%");
        assert_eq!(
            got,
            "/srv/app/|/srv/app/site.ini|site.ini|site|ini|app||/srv/app/site.ini|srv|app|%||%(x)|/srv/app/|end%"
        );
        // The hash uWSGI 2.0.30 printed for %j of /tmp/uw/a.ini.
        m.fill("/tmp/uw/a.ini", false);
        assert_eq!(m.apply(b"%j"), "409558E2");
        assert_eq!(
            m.apply(b"%D"),
            "/srv/app/",
            "upper case stays the first file's"
        );
        m.fill("/tmp/uw/a.ini:other", false);
        assert_eq!(m.apply(b"%x %n"), "other a");
        assert_eq!(
            m.apply(b"%k"),
            std::thread::available_parallelism().unwrap().to_string()
        );
    }

    #[test]
    fn sections() {
        assert_eq!(split_section("a.ini:prod"), ("a.ini", Some("prod")));
        assert_eq!(split_section(":prod"), ("", Some("prod")));
        assert_eq!(split_section("a.ini"), ("a.ini", None));
        assert_eq!(split_section("a.ini:"), ("a.ini", None));
    }
}
