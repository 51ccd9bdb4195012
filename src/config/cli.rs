//! The command line, read like uWSGI's getopt: every uWSGI option is known (so a switch never
//! swallows the next word), `--name=value` and `--name value`, short letters (`-M`, `-p 4`,
//! `-p4`, grouped `-ML`), and bare config files (`FILE.ini`, `.yaml`, `.yml`, `.json`), which
//! uWSGI reads after the options.

use super::spec::{self, Ty};
use super::table::{self, Arg, Known};
use super::ConfigError;

/// What argv asks for.
#[derive(Debug)]
pub enum Parsed {
    /// `--help` / `--version` text.
    Print(String),
    /// Options in command-line order, then the bare config files.
    Args {
        /// (key, value) in order.
        options: Vec<(String, String)>,
        /// Bare FILE arguments.
        files: Vec<String>,
    },
}

fn help() -> String {
    let mut out = format!(
        "headrace {}: a Python application server with uWSGI's command line and config files\n\n\
         Usage: headrace [OPTIONS] [FILE.ini|FILE.yaml|FILE.json]...\n\n\
         Every uWSGI option is known; these are implemented:\n",
        env!("CARGO_PKG_VERSION")
    );
    for o in spec::OPTIONS {
        let short = o.short.map_or("    ".to_owned(), |c| format!("-{c}, "));
        let value = if o.ty == Ty::Flag { "" } else { " VALUE" };
        let mut line = format!("  {short}--{}{value}", o.name);
        let pad = 36usize.saturating_sub(line.len()).max(1);
        line.push_str(&" ".repeat(pad));
        line.push_str(o.help);
        for a in o.aliases {
            line.push_str(" (also --");
            line.push_str(a);
            line.push(')');
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("  -h, --help                        print this help\n      --version                     print the version\n");
    out
}

fn is_config_file(s: &str) -> bool {
    super::collect::Format::of(s).is_some()
}

/// Parse argv (argv[0] is the program name).
pub fn parse(argv: &[String]) -> Result<Parsed, ConfigError> {
    let mut options = Vec::new();
    let mut files = Vec::new();
    let mut it = argv.iter().skip(1).peekable();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--help" | "-h" | "--usage" => return Ok(Parsed::Print(help())),
            "--version" => {
                return Ok(Parsed::Print(format!(
                    "headrace {}\n",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            "--" => {
                files.extend(it.by_ref().cloned());
                break;
            }
            _ => {}
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let known = table::lookup(name).ok_or_else(|| {
                ConfigError::Cli(format!("unknown option --{name} on the command line"))
            })?;
            let value = match (known.arg(), inline) {
                (_, Some(v)) => v.to_owned(),
                (Arg::No, None) => "true".to_owned(),
                (Arg::Required, None) => it
                    .next()
                    .cloned()
                    .ok_or_else(|| ConfigError::Cli(format!("option --{name} needs a value")))?,
                (Arg::Optional, None) => match it.peek() {
                    Some(n) if !n.starts_with('-') && !is_config_file(n) => {
                        it.next().cloned().unwrap_or_default()
                    }
                    _ => bare(known),
                },
            };
            options.push((name.to_owned(), value));
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (i, c) in shorts.char_indices() {
                let known = table::lookup_short(c).ok_or_else(|| {
                    ConfigError::Cli(format!("unknown option -{c} on the command line"))
                })?;
                let rest = &shorts[i + c.len_utf8()..];
                match known.arg() {
                    Arg::No => options.push((known.name().to_owned(), "true".to_owned())),
                    Arg::Optional => {
                        let v = if rest.is_empty() {
                            bare(known)
                        } else {
                            rest.to_owned()
                        };
                        options.push((known.name().to_owned(), v));
                        break;
                    }
                    Arg::Required => {
                        let v = if rest.is_empty() {
                            it.next().cloned().ok_or_else(|| {
                                ConfigError::Cli(format!(
                                    "option -{c} (--{}) needs a value",
                                    known.name()
                                ))
                            })?
                        } else {
                            rest.to_owned()
                        };
                        options.push((known.name().to_owned(), v));
                        break;
                    }
                }
            }
        } else if !arg.starts_with('[') {
            if !is_config_file(arg) {
                return Err(ConfigError::Cli(format!(
                    "unexpected argument '{arg}': only FILE.ini, FILE.yaml, FILE.yml or FILE.json may be given without an option"
                )));
            }
            files.push(arg.clone());
        }
    }
    Ok(Parsed::Args { options, files })
}

fn bare(known: Known) -> String {
    match known {
        Known::Spec(s) => s.bare.unwrap_or("").to_owned(),
        Known::Uwsgi(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Got = (Vec<(String, String)>, Vec<String>);

    fn args(a: &[&str]) -> Result<Got, String> {
        let argv: Vec<String> = std::iter::once("headrace")
            .chain(a.iter().copied())
            .map(str::to_owned)
            .collect();
        match parse(&argv).map_err(|e| e.to_string())? {
            Parsed::Args { options, files } => Ok((options, files)),
            Parsed::Print(t) => Err(format!("print: {t}")),
        }
    }

    fn opts(a: &[&str]) -> Vec<(String, String)> {
        args(a).unwrap().0
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn forms() {
        assert_eq!(
            opts(&[
                "-ML",
                "-p3",
                "-w",
                "m:app",
                "--stats",
                ":1717",
                "--vacuum",
                "--chmod-socket",
                "--uid",
                "1"
            ]),
            pairs(&[
                ("master", "true"),
                ("disable-logging", "true"),
                ("processes", "3"),
                ("module", "m:app"),
                ("stats", ":1717"),
                ("vacuum", "true"),
                ("chmod-socket", "666"),
                ("uid", "1")
            ])
        );
        assert_eq!(
            opts(&["--chmod-socket", "660"]),
            pairs(&[("chmod-socket", "660")])
        );
        let (o, f) = args(&["a.ini", "--thunder-lock", "b.yaml", "[x]", "--", "c.json"]).unwrap();
        assert_eq!(o, pairs(&[("thunder-lock", "true")]));
        assert_eq!(f, ["a.ini", "b.yaml", "c.json"]);
    }

    #[test]
    fn errors_name_the_option() {
        for (a, want) in [
            (&["--bogus"][..], "--bogus"),
            (&["--wsgi-file"][..], "--wsgi-file needs a value"),
            (&["-p"][..], "--processes"),
            (&["-Z"][..], "-Z"),
            (&["app.py"][..], "app.py"),
        ] {
            let e = args(a).unwrap_err();
            assert!(e.contains(want), "{a:?}: {e}");
        }
        assert!(args(&["--help"]).unwrap_err().contains("--http-socket"));
        assert!(args(&["--version"]).unwrap_err().contains("headrace "));
    }
}
