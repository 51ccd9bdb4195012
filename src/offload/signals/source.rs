//! What raises a signal besides `uwsgi.signal`: timers, rb timers, cron entries and file
//! monitors added with `uwsgi.add_timer` and friends (or `--timer`, `--rbtimer`). After fork
//! they reach the master as one control message each (`Control::SignalSource`), in the text
//! form here.

use super::cron::Fields;

/// A signal source for the master to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `add_timer`/`add_ms_timer`/`--timer`: every `period_ms`, the first after one period.
    Timer {
        /// The signal.
        signal: u8,
        /// Period, milliseconds.
        period_ms: u64,
    },
    /// `add_rb_timer`/`--rbtimer`: every `secs` seconds, `iterations` times (0: forever).
    RbTimer {
        /// The signal.
        signal: u8,
        /// Period, seconds.
        secs: u64,
        /// How many times (0: forever).
        iterations: u64,
    },
    /// `add_cron`: at the minutes `fields` match.
    Cron {
        /// The signal.
        signal: u8,
        /// When.
        fields: Fields,
    },
    /// `add_file_monitor`: when the file (or an entry of the directory) changes.
    FileMonitor {
        /// The signal.
        signal: u8,
        /// The path.
        path: String,
    },
}

/// uWSGI's limit per kind of source.
pub const MAX_PER_KIND: u32 = 64;

impl Source {
    /// Which counter of `table::Header::sources` counts it, and uWSGI's name for the kind in
    /// its "you can register max 64 ..." line.
    #[must_use]
    pub fn kind(&self) -> (usize, &'static str) {
        match self {
            Self::Timer { .. } => (0, "timers"),
            Self::RbTimer { .. } => (1, "rb_timers"),
            Self::Cron { .. } => (2, "cron"),
            Self::FileMonitor { .. } => (3, "file monitors"),
        }
    }

    /// The text form (also the key two identical registrations share).
    #[must_use]
    pub fn encode(&self) -> String {
        match self {
            Self::Timer { signal, period_ms } => format!("timer {signal} {period_ms}"),
            Self::RbTimer {
                signal,
                secs,
                iterations,
            } => format!("rbtimer {signal} {secs} {iterations}"),
            Self::Cron { signal, fields: f } => format!(
                "cron {signal} {} {} {} {} {}",
                f.minute, f.hour, f.day, f.month, f.weekday
            ),
            Self::FileMonitor { signal, path } => format!("filemon {signal} {path}"),
        }
    }

    /// Parse the text form.
    #[must_use]
    pub fn decode(s: &str) -> Option<Self> {
        let (kind, rest) = s.split_once(' ')?;
        let (signal, rest) = rest.split_once(' ')?;
        let signal: u8 = signal.parse().ok()?;
        let nums = |n: usize| -> Option<Vec<i64>> {
            let v: Vec<i64> = rest
                .split(' ')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (v.len() == n).then_some(v)
        };
        Some(match kind {
            "timer" => Self::Timer {
                signal,
                period_ms: u64::try_from(nums(1)?[0]).ok().filter(|&p| p > 0)?,
            },
            "rbtimer" => {
                let v = nums(2)?;
                Self::RbTimer {
                    signal,
                    secs: u64::try_from(v[0]).ok().filter(|&p| p > 0)?,
                    iterations: u64::try_from(v[1]).ok()?,
                }
            }
            "cron" => {
                let v: Vec<i32> = nums(5)?
                    .into_iter()
                    .map(i32::try_from)
                    .collect::<Result<_, _>>()
                    .ok()?;
                let fields = Fields {
                    minute: v[0],
                    hour: v[1],
                    day: v[2],
                    month: v[3],
                    weekday: v[4],
                };
                fields.check().ok()?;
                Self::Cron { signal, fields }
            }
            "filemon" if !rest.is_empty() => Self::FileMonitor {
                signal,
                path: rest.to_owned(),
            },
            _ => return None,
        })
    }
}

/// `SIGNUM SECONDS` (`--timer`, `--rbtimer`).
pub fn parse_signal_secs(s: &str) -> Result<(u8, u64), String> {
    let mut it = s.split_whitespace();
    let (Some(sig), Some(secs), None) = (it.next(), it.next(), it.next()) else {
        return Err("expected SIGNUM SECONDS".to_owned());
    };
    let sig = parse_signum(sig)?;
    let secs = secs
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{secs:?} is not a number of seconds (1 or more)"))?;
    Ok((sig, secs))
}

/// `FILE SIGNUM` (`--touch-signal`).
pub fn parse_touch_signal(s: &str) -> Result<(String, u8), String> {
    let s = s.trim();
    let (file, sig) = s
        .rsplit_once(char::is_whitespace)
        .ok_or("expected FILE SIGNUM")?;
    let file = file.trim_end();
    if file.is_empty() {
        return Err("expected FILE SIGNUM".to_owned());
    }
    Ok((file.to_owned(), parse_signum(sig)?))
}

/// A signal number, 0 to 255.
pub fn parse_signum(s: &str) -> Result<u8, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a signal number (0 to 255)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip() {
        for s in [
            Source::Timer {
                signal: 0,
                period_ms: 1500,
            },
            Source::RbTimer {
                signal: 255,
                secs: 3,
                iterations: 0,
            },
            Source::Cron {
                signal: 9,
                fields: Fields {
                    minute: -5,
                    hour: 3,
                    day: -1,
                    month: 12,
                    weekday: 7,
                },
            },
            Source::FileMonitor {
                signal: 4,
                path: "/tmp/a dir/with spaces".to_owned(),
            },
        ] {
            assert_eq!(Source::decode(&s.encode()), Some(s));
        }
        for bad in [
            "timer 1 0",
            "timer 256 5",
            "timer 1",
            "rbtimer 1 2",
            "cron 1 0 0 0 0 0",
            "filemon 1 ",
            "nope 1 2",
            "",
        ] {
            assert_eq!(Source::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn option_values() {
        assert_eq!(parse_signal_secs(" 17  5 "), Ok((17, 5)));
        assert!(parse_signal_secs("17").is_err());
        assert!(parse_signal_secs("17 0").is_err());
        assert!(parse_signal_secs("256 5").is_err());
        assert!(parse_signal_secs("x 5").is_err());
        assert!(parse_signal_secs("1 5 6").is_err());
        assert_eq!(
            parse_touch_signal("/tmp/my file 30"),
            Ok(("/tmp/my file".to_owned(), 30))
        );
        assert!(parse_touch_signal("/tmp/x").is_err());
        assert!(parse_touch_signal("/tmp/x 300").is_err());
        assert!(parse_touch_signal(" 3").is_err());
    }
}
