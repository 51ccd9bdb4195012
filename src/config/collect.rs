//! The list of (key, value) options in the order uWSGI builds it (core/config.c
//! `add_exported_option`): environment, command line, and config files spliced in where they
//! are met; logic blocks (`if-*`, `for*`) and `set`/`declare-option` applied as they come.

use super::ini::{self, Magic};
use super::logic::{self, Logic};
use super::{json, ConfigError};

/// Where an option came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built-in default.
    Default,
    /// An environment variable.
    Env(String),
    /// The command line.
    Cli,
    /// A config file and line.
    File {
        /// The file as named.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
    },
}

impl Origin {
    /// "in uwsgi.ini line 7", "in $UWSGI_PROCESSES", "on the command line".
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Default => "(default)".to_owned(),
            Self::Env(v) => format!("in ${v}"),
            Self::Cli => "on the command line".to_owned(),
            Self::File { file, line: 0 } => format!("in {file}"),
            Self::File { file, line } => format!("in {file} line {line}"),
        }
    }
}

/// One option as given.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key as written.
    pub key: String,
    /// Its value (expanded in place by `expand`).
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
    /// uWSGI's `configured`: options applied as they were met (ini, set-ph, if-*, ...), whose
    /// values the `$(...)`/`@(...)`/`%(...)` passes leave alone.
    pub configured: bool,
}

/// What kind of file a load reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[section]` ini.
    Ini,
    /// uWSGI's flat yaml.
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// The format a file name's extension says (`include`, a bare FILE argument).
    #[must_use]
    pub fn of(path: &str) -> Option<Self> {
        let (p, _) = ini::split_section(path);
        let p = if p.is_empty() { path } else { p };
        [
            (".ini", Self::Ini),
            (".yaml", Self::Yaml),
            (".yml", Self::Yaml),
        ]
        .into_iter()
        .chain([(".json", Self::Json), (".js", Self::Json)])
        .find(|(ext, _)| p.ends_with(ext) || path.ends_with(ext))
        .map(|(_, f)| f)
    }
}

/// How deeply files may include each other.
const MAX_DEPTH: usize = 32;

const END_KEYS: &[&str] = &["end", "endfor", "endif", "end-if", "end-for"];

/// Builds the option list.
#[derive(Debug, Default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent states of uWSGI's reader"
)]
pub struct Collector {
    /// Every option, in uWSGI's order.
    pub entries: Vec<Entry>,
    /// `strict` was set.
    pub strict: bool,
    /// Warnings met while reading (a missing section, an unreadable for-readline file).
    pub warnings: Vec<String>,
    /// Names declared with `declare-option`, and their templates.
    pub customs: Vec<(String, String)>,
    /// This start is a reload (for `if-reload`).
    pub is_reload: bool,
    magic: Magic,
    last_ini: Option<String>,
    logic: Option<(Logic, String)>,
    logic_running: bool,
    in_load: bool,
    depth: usize,
    inherit: Vec<usize>,
}

impl Collector {
    /// An empty list.
    #[must_use]
    pub fn new(is_reload: bool) -> Self {
        Self {
            is_reload,
            ..Self::default()
        }
    }

    /// Add an option as uWSGI's `add_exported_option` does: an end key closes the logic block;
    /// inside a block the logic decides what is added.
    pub fn add(&mut self, key: &str, value: &str, origin: &Origin) -> Result<(), ConfigError> {
        if !self.logic_running {
            if END_KEYS.contains(&key) {
                self.logic = None;
            }
            if let Some((l, arg)) = self.logic.clone() {
                self.logic_running = true;
                let r = logic::run(self, l, &arg, key, value, origin);
                self.logic_running = false;
                return r;
            }
        }
        self.add_entry(key, value, origin, false)
    }

    /// Store the option, then apply it at once if it is an immediate one.
    pub fn add_entry(
        &mut self,
        key: &str,
        value: &str,
        origin: &Origin,
        placeholder_only: bool,
    ) -> Result<(), ConfigError> {
        let err = |reason: String| ConfigError::Lang {
            key: key.to_owned(),
            source_desc: origin.describe(),
            reason,
        };
        self.entries.push(Entry {
            key: key.to_owned(),
            value: value.to_owned(),
            origin: origin.clone(),
            configured: true,
        });
        let idx = self.entries.len() - 1;
        if placeholder_only {
            if super::table::lookup(key).is_some() {
                return Err(err("cannot be a placeholder: it is an option".to_owned()));
            }
            return Ok(());
        }
        let split = |v: &str, what: &str| {
            v.split_once('=')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| err(format!("expected {what}=VALUE, got \"{v}\"")))
        };
        match key {
            "ini" => self.load(value, Format::Ini, origin, false)?,
            "yaml" | "yml" => self.load(value, Format::Yaml, origin, false)?,
            "json" | "js" => self.load(value, Format::Json, origin, false)?,
            "include" | "config" => self.load_by_ext(value, origin)?,
            "inherit" => {
                // Not immediate in uWSGI: loaded after everything else, so its values come last.
                self.entries[idx].configured = false;
                self.inherit.push(idx);
            }
            "set" => {
                let (k, v) = split(value, "NAME")?;
                self.add_entry(&k, &v, origin, false)?;
            }
            "set-placeholder" | "set-ph" => {
                let (k, v) = split(value, "NAME")?;
                self.add_entry(&k, &v, origin, true)?;
            }
            "declare-option" | "declare-option2" => {
                let (k, v) = split(value, "NAME")?;
                self.customs.push((k, v));
            }
            "strict" => self.strict = super::typed::is_true(value),
            k if END_KEYS.contains(&k) => {}
            k => {
                if let Some(l) = logic::kind(k) {
                    if self.logic.is_some() || self.logic_running {
                        return Err(err("logic blocks cannot be nested".to_owned()));
                    }
                    self.logic = Some((l, value.to_owned()));
                } else if let Some((_, template)) =
                    self.customs.iter().rev().find(|(n, _)| n == k).cloned()
                {
                    self.apply_custom(&template, value, origin)?;
                } else {
                    self.entries[idx].configured = false;
                }
            }
        }
        Ok(())
    }

    /// A `declare-option` template: `name=a=$1;b=$2` turns `name = x y` into `a = x`, `b = y`.
    fn apply_custom(
        &mut self,
        template: &str,
        value: &str,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        let args: Vec<&str> = value.split(' ').filter(|s| !s.is_empty()).collect();
        for part in template.split(';').filter(|s| !s.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                break;
            };
            let (mut k, mut v) = (k.to_owned(), v.to_owned());
            for (i, a) in args.iter().enumerate() {
                let ph = format!("${}", i + 1);
                k = k.replace(&ph, a);
                v = v.replace(&ph, a);
            }
            self.add_entry(&k, &v, origin, false)?;
        }
        Ok(())
    }

    /// Load a file by its extension (`include`, `config`, a bare FILE argument).
    pub fn load_by_ext(&mut self, spec: &str, origin: &Origin) -> Result<(), ConfigError> {
        let Some(format) = Format::of(spec) else {
            return Err(ConfigError::Ini {
                file: spec.to_owned(),
                reason: format!(
                    "unknown config file type {}: expected .ini, .yaml, .yml or .json",
                    origin.describe()
                ),
            });
        };
        let was = std::mem::replace(&mut self.in_load, true);
        let r = self.load(spec, format, origin, true);
        self.in_load = was;
        r
    }

    /// Read a config file and add its options where the load was met.
    pub fn load(
        &mut self,
        spec: &str,
        format: Format,
        origin: &Origin,
        nested: bool,
    ) -> Result<(), ConfigError> {
        if self.depth >= MAX_DEPTH {
            return Err(ConfigError::Ini {
                file: spec.to_owned(),
                reason: format!("files include each other more than {MAX_DEPTH} deep"),
            });
        }
        let (mut path, section) = ini::split_section(spec);
        if path.is_empty() && format == Format::Ini {
            path = self.last_ini.as_deref().unwrap_or("");
        }
        let path = path.to_owned();
        let section = section.unwrap_or("uwsgi").to_owned();
        let file_err = |reason: String| ConfigError::Ini {
            file: if path.is_empty() {
                spec.to_owned()
            } else {
                path.clone()
            },
            reason,
        };
        if path.is_empty() {
            return Err(file_err(format!(
                "no file loaded before {}",
                origin.describe()
            )));
        }
        self.magic.fill(spec, !self.in_load && !nested);
        let bytes = if path == "-" {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map(|_| b)
        } else {
            std::fs::read(&path)
        }
        .map_err(|e| file_err(e.to_string()))?;
        let text = self.magic.apply(&bytes);
        let lines = match format {
            Format::Ini => {
                let (lines, found) = ini::parse_ini(&text, &section);
                if !found {
                    self.warnings
                        .push(format!("cannot find section [{section}] in {path}"));
                }
                self.last_ini = Some(path.clone());
                lines
            }
            Format::Yaml => ini::parse_yaml(&text, &section),
            Format::Json => json::parse_json(&text, &section).map_err(file_err)?,
        };
        self.depth += 1;
        let r = lines.into_iter().try_for_each(|(k, v, line)| {
            let o = Origin::File {
                file: path.clone(),
                line,
            };
            self.add(&k, &v, &o)
        });
        self.depth -= 1;
        r
    }

    /// Load the `inherit` files (after the expansion passes, as uWSGI's configure step does);
    /// returns whether any was loaded.
    pub fn load_inherited(&mut self) -> Result<bool, ConfigError> {
        let pending = std::mem::take(&mut self.inherit);
        for &idx in &pending {
            let Entry { value, origin, .. } = self.entries[idx].clone();
            self.entries[idx].configured = true;
            self.load_by_ext(&value, &origin)?;
        }
        Ok(!pending.is_empty())
    }

    /// The first value of `key` (uWSGI's `uwsgi_get_exported_opt`).
    #[must_use]
    pub fn first(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &Collector) -> Vec<(&str, &str)> {
        c.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    fn tmp(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("hr-collect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    #[test]
    fn files_are_spliced_where_met() {
        let inc = tmp("inc.ini", "[uwsgi]\nb = 2\n[other]\no = 1\n");
        let main = tmp(
            "main.ini",
            &format!("[uwsgi]\na = 1\ninclude = {inc}\nini = :other\nc = 3\ninherit = {inc}\n"),
        );
        let mut c = Collector::new(false);
        c.add("first", "0", &Origin::Cli).unwrap();
        c.load(&main, Format::Ini, &Origin::Cli, false).unwrap();
        assert!(c.load_inherited().unwrap());
        let inc_line = inc.clone();
        assert_eq!(
            keys(&c),
            [
                ("first", "0"),
                ("a", "1"),
                ("include", inc_line.as_str()),
                ("b", "2"),
                ("ini", ":other"),
                ("o", "1"),
                ("c", "3"),
                ("inherit", inc_line.as_str()),
                ("b", "2")
            ]
        );
        assert_eq!(c.entries[3].origin.describe(), format!("in {inc} line 2"));
    }

    #[test]
    fn set_and_custom_options() {
        let mut c = Collector::new(false);
        for (k, v) in [
            ("set", "zz=1"),
            ("set-ph", "ph=2"),
            ("declare-option", "myopt=processes=$1;threads=$2"),
            ("myopt", "7 3"),
        ] {
            c.add(k, v, &Origin::Cli).unwrap();
        }
        let got = keys(&c);
        assert_eq!(
            &got[..],
            [
                ("set", "zz=1"),
                ("zz", "1"),
                ("set-ph", "ph=2"),
                ("ph", "2"),
                ("declare-option", "myopt=processes=$1;threads=$2"),
                ("myopt", "7 3"),
                ("processes", "7"),
                ("threads", "3")
            ]
        );
        assert!(c.add("set-ph", "processes=1", &Origin::Cli).is_err());
        assert!(c.add("set", "novalue", &Origin::Cli).is_err());
    }

    #[test]
    fn include_loops_and_missing_files_are_errors() {
        let me = tmp("loop.ini", "");
        std::fs::write(&me, format!("[uwsgi]\ninclude = {me}\n")).unwrap();
        let mut c = Collector::new(false);
        let e = c.load(&me, Format::Ini, &Origin::Cli, false).unwrap_err();
        assert!(e.to_string().contains("more than 32 deep"), "{e}");
        let mut c = Collector::new(false);
        assert!(c.add("ini", "/no/such/file.ini", &Origin::Cli).is_err());
        assert!(c.add("include", "/x/file.txt", &Origin::Cli).is_err());
        let mut c = Collector::new(false);
        c.add("ini", &tmp("nosec.ini", "[x]\na=1\n"), &Origin::Cli)
            .unwrap();
        assert_eq!(c.warnings.len(), 1);
    }
}
