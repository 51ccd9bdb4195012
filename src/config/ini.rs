//! uWSGI-style ini files: one section (`[uwsgi]` unless `FILE:SECTION` names another),
//! `key = value` lines, `#` and `;` comments, and uWSGI's magic variables `%d` (the file's
//! directory, with a trailing slash), `%n` (its name without extension), `%p` (its full path),
//! `%%` and `%(option)` (an option set earlier in the file).

use super::ConfigError;
use std::path::Path;

/// Read `spec` (`path` or `path:section`) into (key, value) pairs in file order.
pub fn read(spec: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let (path, section) = match spec.rsplit_once(':') {
        Some((p, s)) if !s.contains('/') && !p.is_empty() => (p, s),
        _ => (spec, "uwsgi"),
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Ini {
        file: path.to_owned(),
        reason: e.to_string(),
    })?;
    parse(&text, Path::new(path), section)
}

/// Parse ini text; `path` feeds the magic variables.
pub fn parse(text: &str, path: &Path, section: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs
        .parent()
        .map(|d| format!("{}/", d.display()))
        .unwrap_or_default();
    let stem = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let full = abs.display().to_string();
    let file = path.display().to_string();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_section = false;
    let mut found = false;
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim() == section;
            found |= in_section;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            // uWSGI allows a bare key for a flag.
            out.push((line.to_owned(), "true".to_owned()));
            continue;
        };
        let key = k.trim().to_owned();
        let value =
            expand(v.trim(), &dir, &stem, &full, &out).map_err(|reason| ConfigError::Ini {
                file: format!("{file} line {}", lineno + 1),
                reason,
            })?;
        out.push((key, value));
    }
    if !found {
        return Err(ConfigError::Ini {
            file,
            reason: format!("no [{section}] section"),
        });
    }
    Ok(out)
}

fn expand(
    value: &str,
    dir: &str,
    stem: &str,
    full: &str,
    earlier: &[(String, String)],
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(dir),
            Some('n') => out.push_str(stem),
            Some('p') => out.push_str(full),
            Some('%') | None => out.push('%'),
            Some('(') => {
                let name: String = chars.by_ref().take_while(|&c| c != ')').collect();
                let v = earlier
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_str())
                    .ok_or_else(|| format!("%({name}) refers to an option not set above"))?;
                out.push_str(v);
            }
            Some(other) => {
                out.push('%');
                out.push(other);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_comments_and_magic() {
        let text = "# c\n[other]\nprocesses = 9\n[uwsgi]\n; c\nprocesses = 4\nmaster\nchdir = %d\nlogto = %(chdir)x.log\nname = %n%%\n";
        let got = parse(text, Path::new("/srv/app/site.ini"), "uwsgi").unwrap();
        let want = vec![
            ("processes", "4"),
            ("master", "true"),
            ("chdir", "/srv/app/"),
            ("logto", "/srv/app/x.log"),
            ("name", "site%"),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn missing_section_and_bad_reference() {
        assert!(parse("[x]\na=1\n", Path::new("f.ini"), "uwsgi").is_err());
        assert!(parse("[uwsgi]\na=%(zz)\n", Path::new("f.ini"), "uwsgi").is_err());
    }
}
