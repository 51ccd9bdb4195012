//! The command line, parsed with clap from the option table in `spec`.

use super::spec::{self, Kind, OptSpec};
use super::ConfigError;
use clap::{Arg, ArgAction, Command};

pub enum Parsed {
    /// `--help` / `--version` text.
    Print(String),
    /// Options in command-line order.
    Values(Vec<(&'static OptSpec, String)>),
}

fn command() -> Command {
    let mut cmd = Command::new("headrace")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A Python application server with uWSGI's command line")
        .args_override_self(true)
        .disable_help_subcommand(true)
        .arg(
            Arg::new("config-files")
                .num_args(0..)
                .value_name("FILE.ini")
                .help("ini files to read, like --ini"),
        );
    for o in spec::OPTIONS {
        let mut arg = Arg::new(o.name).long(o.name).help(o.help);
        for a in o.aliases {
            arg = arg.visible_alias(*a);
        }
        if let Some(c) = o.short {
            arg = arg.short(c);
        }
        arg = match o.kind {
            Kind::Flag => arg.action(ArgAction::SetTrue),
            Kind::Value => match o.bare {
                Some(v) => arg
                    .action(ArgAction::Set)
                    .num_args(0..=1)
                    .default_missing_value(v)
                    .value_name("VALUE"),
                None => arg.action(ArgAction::Set).value_name("VALUE"),
            },
            Kind::Multi => arg.action(ArgAction::Append).value_name("VALUE"),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Parse argv (argv[0] is the program name).
pub fn parse(argv: &[String]) -> Result<Parsed, ConfigError> {
    let matches = match command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                return Ok(Parsed::Print(e.render().to_string()));
            }
            // One line naming the option: clap's first line, without its "error: " prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            return Err(ConfigError::Cli(
                first.trim_start_matches("error: ").trim().to_owned(),
            ));
        }
    };
    let mut ordered: Vec<(usize, &'static OptSpec, String)> = Vec::new();
    for o in spec::OPTIONS {
        match o.kind {
            Kind::Flag => {
                if matches.get_flag(o.name) {
                    let idx = matches.index_of(o.name).unwrap_or(0);
                    ordered.push((idx, o, "true".to_owned()));
                }
            }
            Kind::Value | Kind::Multi => {
                if let (Some(vals), Some(idx)) = (
                    matches.get_many::<String>(o.name),
                    matches.indices_of(o.name),
                ) {
                    for (v, i) in vals.zip(idx) {
                        ordered.push((i, o, v.clone()));
                    }
                }
            }
        }
    }
    if let (Some(files), Some(idx)) = (
        matches.get_many::<String>("config-files"),
        matches.indices_of("config-files"),
    ) {
        let ini = spec::find("ini").expect("ini is declared");
        for (f, i) in files.zip(idx) {
            if !std::path::Path::new(f)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("ini"))
            {
                return Err(ConfigError::Cli(format!(
                    "unexpected argument '{f}': only FILE.ini may be given without an option"
                )));
            }
            ordered.push((i, ini, f.clone()));
        }
    }
    ordered.sort_by_key(|(i, _, _)| *i);
    Ok(Parsed::Values(
        ordered.into_iter().map(|(_, o, v)| (o, v)).collect(),
    ))
}
