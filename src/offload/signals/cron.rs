//! uWSGI's cron: the five fields (a negative value -N means "every N", -1 "any"), when they
//! match, and the `--cron`, `--unique-cron` and `--cron2` option values.

use crate::sys::signals::CronTime;

/// Minute, hour, day of month, month, day of week, as uWSGI keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// 0-59, or -N.
    pub minute: i32,
    /// 0-23, or -N.
    pub hour: i32,
    /// 1-31, or -N.
    pub day: i32,
    /// 1-12, or -N.
    pub month: i32,
    /// 0-7 (7 is Sunday, as crontab), or -N.
    pub weekday: i32,
}

impl Fields {
    /// Every minute.
    pub const ANY: Self = Self {
        minute: -1,
        hour: -1,
        day: -1,
        month: -1,
        weekday: -1,
    };

    /// Check each field's range (a value uWSGI would accept but that never matches is refused).
    pub fn check(&self) -> Result<(), String> {
        let field = |name: &str, v: i32, lo: i32, hi: i32| {
            if v < 0 && v >= -hi.max(1) || (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{name} {v} never matches: expected {lo} to {hi}, or -N for every N"
                ))
            }
        };
        field("minute", self.minute, 0, 59)?;
        field("hour", self.hour, 0, 23)?;
        field("day", self.day, 1, 31)?;
        field("month", self.month, 1, 12)?;
        field("weekday", self.weekday, 0, 7)?;
        Ok(())
    }

    /// uWSGI's `uwsgi_cron_task_needs_execution`, to the letter: -N matches values divisible
    /// by N; when both day and weekday are fixed either may match (as crontab), else all must.
    #[must_use]
    pub fn matches(&self, t: &CronTime) -> bool {
        let every = |field: i32, now: i32| {
            if field < 0 && now % field.abs() == 0 {
                now
            } else {
                field
            }
        };
        let minute = every(self.minute, t.minute);
        let hour = every(self.hour, t.hour);
        let month = every(self.month, t.month);
        let day = every(self.day, t.day);
        let weekday = if self.weekday < 0 {
            every(self.weekday, t.weekday)
        } else if self.weekday == 7 {
            0
        } else {
            self.weekday
        };
        let base = t.minute == minute && t.hour == hour && t.month == month;
        if self.day >= 0 && self.weekday >= 0 {
            base && (t.day == day || t.weekday == weekday)
        } else {
            base && t.day == day && t.weekday == weekday
        }
    }

    /// The first minute at or after Unix time `from` (local time) these fields match, within a
    /// year and a day; `None` if none does.
    #[must_use]
    pub fn next_match(&self, from: i64) -> Option<i64> {
        let mut t = from - from.rem_euclid(60);
        if t < from {
            t += 60;
        }
        for _ in 0..(367 * 24 * 60) {
            if self.matches(&crate::sys::signals::local_cron_time(t)?) {
                return Some(t);
            }
            t += 60;
        }
        None
    }
}

/// A command cron (`--cron`, `--unique-cron`, `--cron2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCron {
    /// When.
    pub fields: Fields,
    /// The shell command.
    pub command: String,
    /// Never two runs at once.
    pub unique: bool,
    /// `--cron2 harakiri=N`: `Some(0)` disables `--cron-harakiri` for it, `Some(N)` replaces it.
    pub harakiri: Option<u64>,
}

/// `MIN HOUR DAY MONTH WEEKDAY COMMAND` (`--cron`, `--unique-cron`).
pub fn parse_cron(s: &str, unique: bool) -> Result<CommandCron, String> {
    let mut rest = s.trim_start();
    let mut nums = [0i32; 5];
    for n in &mut nums {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        *n = rest[..end].parse().map_err(|_| {
            format!(
                "expected MINUTE HOUR DAY MONTH WEEKDAY COMMAND (numbers, -1 for any), got {:?}",
                &rest[..end]
            )
        })?;
        rest = rest[end..].trim_start();
    }
    let fields = Fields {
        minute: nums[0],
        hour: nums[1],
        day: nums[2],
        month: nums[3],
        weekday: nums[4],
    };
    fields.check()?;
    let command = rest.trim_end();
    if command.is_empty() {
        return Err("no command after the five time fields".to_owned());
    }
    Ok(CommandCron {
        fields,
        command: command.to_owned(),
        unique,
        harakiri: None,
    })
}

/// `--cron2 [minute=M,hour=H,day=D,month=MO,week=W,unique=1,harakiri=N ]COMMAND` (an absent
/// field is -1: any).
pub fn parse_cron2(s: &str) -> Result<CommandCron, String> {
    let s = s.trim();
    let (spec, command) = match s.split_once(' ') {
        Some((head, tail)) if head.contains('=') => (head, tail.trim()),
        _ if s.split_whitespace().next().is_some_and(|w| w.contains('=')) => {
            return Err("no command after the key=value list".to_owned())
        }
        _ => ("", s),
    };
    if command.is_empty() {
        return Err("no command".to_owned());
    }
    let mut c = CommandCron {
        fields: Fields::ANY,
        command: command.to_owned(),
        unique: false,
        harakiri: None,
    };
    for kv in spec.split(',').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?} is not key=value"))?;
        let int = || {
            v.parse::<i32>()
                .map_err(|_| format!("{k}={v:?} is not a number"))
        };
        match k {
            "minute" => c.fields.minute = int()?,
            "hour" => c.fields.hour = int()?,
            "day" => c.fields.day = int()?,
            "month" => c.fields.month = int()?,
            "week" => c.fields.weekday = int()?,
            "unique" => c.unique = int()? != 0,
            "harakiri" => {
                c.harakiri = Some(
                    v.parse()
                        .map_err(|_| format!("harakiri={v:?} is not seconds"))?,
                );
            }
            "legion" => return Err("legions are not supported".to_owned()),
            _ => {
                return Err(format!(
                    "unknown key {k:?} (minute, hour, day, month, week, unique, harakiri)"
                ))
            }
        }
    }
    c.fields.check()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i32, hour: i32, day: i32, month: i32, weekday: i32) -> CronTime {
        CronTime {
            minute,
            hour,
            day,
            month,
            weekday,
        }
    }

    fn f(minute: i32, hour: i32, day: i32, month: i32, weekday: i32) -> Fields {
        Fields {
            minute,
            hour,
            day,
            month,
            weekday,
        }
    }

    #[test]
    fn matcher_follows_uwsgi() {
        // (fields, time, matches)
        let table = [
            (Fields::ANY, at(17, 3, 9, 6, 2), true),
            (f(17, -1, -1, -1, -1), at(17, 3, 9, 6, 2), true),
            (f(17, -1, -1, -1, -1), at(18, 3, 9, 6, 2), false),
            (f(-5, -1, -1, -1, -1), at(35, 3, 9, 6, 2), true),
            (f(-5, -1, -1, -1, -1), at(36, 3, 9, 6, 2), false),
            (f(0, -2, -1, -1, -1), at(0, 4, 9, 6, 2), true),
            (f(0, -2, -1, -1, -1), at(0, 5, 9, 6, 2), false),
            (f(30, 2, -1, -1, -1), at(30, 2, 1, 1, 0), true),
            // day and weekday both fixed: either matches (crontab's rule).
            (f(0, 0, 1, -1, 1), at(0, 0, 1, 3, 4), true),
            (f(0, 0, 1, -1, 1), at(0, 0, 5, 3, 1), true),
            (f(0, 0, 1, -1, 1), at(0, 0, 5, 3, 2), false),
            // one of them "any": both must match.
            (f(0, 0, 13, -1, -1), at(0, 0, 13, 3, 5), true),
            (f(0, 0, -1, -1, 5), at(0, 0, 13, 3, 4), false),
            // 7 is Sunday.
            (f(0, 0, -1, -1, 7), at(0, 0, 3, 3, 0), true),
            (f(0, 0, -1, -1, 0), at(0, 0, 3, 3, 0), true),
            (f(0, 0, -1, 12, -1), at(0, 0, 3, 12, 0), true),
            (f(0, 0, -1, 12, -1), at(0, 0, 3, 11, 0), false),
            (f(0, 0, -1, -3, -1), at(0, 0, 3, 6, 0), true),
            (f(0, 0, -1, -3, -1), at(0, 0, 3, 7, 0), false),
        ];
        for (fields, t, want) in table {
            assert_eq!(fields.matches(&t), want, "{fields:?} at {t:?}");
        }
    }

    #[test]
    fn next_match_is_the_next_matching_minute() {
        let now = 1_780_000_000; // some Unix time
        let t0 = crate::sys::signals::local_cron_time(now).unwrap();
        // The current minute matches a cron of the current minute and hour.
        let here = f(t0.minute, t0.hour, -1, -1, -1);
        let m = here.next_match(now - now.rem_euclid(60)).unwrap();
        assert_eq!(m, now - now.rem_euclid(60));
        // From the next minute, the next match is a day later (give or take a DST hour).
        let next = here.next_match(m + 1).unwrap();
        assert!((next - m - 86_400).abs() <= 3600, "{}", next - m);
        // Every minute: the next whole minute.
        let any = Fields::ANY.next_match(now).unwrap();
        assert!(any >= now && any < now + 60 && any % 60 == 0);
        // Every 15 minutes: a minute divisible by 15, within the hour.
        let q = f(-15, -1, -1, -1, -1).next_match(now).unwrap();
        assert_eq!(
            crate::sys::signals::local_cron_time(q).unwrap().minute % 15,
            0
        );
        assert!(q - now < 15 * 60);
        // Never (February 31st is checked out by `check`, but the matcher just finds nothing).
        assert_eq!(f(0, 0, 31, 2, -1).next_match(now), None);
    }

    #[test]
    fn cron_values() {
        let c = parse_cron("  5 -1 -1 -1 -1   touch /tmp/x y ", false).unwrap();
        assert_eq!(c.fields, f(5, -1, -1, -1, -1));
        assert_eq!(c.command, "touch /tmp/x y");
        assert!(parse_cron("5 -1 -1 -1 -1", false).is_err());
        assert!(parse_cron("5 -1 -1 -1 cmd", false).is_err());
        assert!(parse_cron("x -1 -1 -1 -1 cmd", false).is_err());
        assert!(parse_cron("60 -1 -1 -1 -1 cmd", false).is_err());
        assert!(parse_cron("0 24 -1 -1 -1 cmd", false).is_err());
        assert!(parse_cron("0 0 0 -1 -1 cmd", false).is_err());
        assert!(parse_cron("0 0 -1 13 -1 cmd", false).is_err());
        assert!(parse_cron("0 0 -1 -1 8 cmd", false).is_err());
        assert!(parse_cron("-60 0 -1 -1 -1 cmd", false).is_err());
        assert!(parse_cron("", false).is_err());
        assert!(parse_cron("-59 -23 -31 -12 -7 cmd", true).unwrap().unique);
    }

    #[test]
    fn cron2_values() {
        let c = parse_cron2("minute=-2,hour=3,unique=1,harakiri=0 echo hi there").unwrap();
        assert_eq!(c.fields, f(-2, 3, -1, -1, -1));
        assert!(c.unique);
        assert_eq!(c.harakiri, Some(0));
        assert_eq!(c.command, "echo hi there");
        let c = parse_cron2("echo every minute").unwrap();
        assert_eq!(c.fields, Fields::ANY);
        assert_eq!(c.command, "echo every minute");
        assert!(parse_cron2("minute=1").is_err());
        assert!(parse_cron2("minute=x echo").is_err());
        assert!(parse_cron2("second=1 echo").is_err());
        assert!(parse_cron2("legion=a echo").is_err());
        assert!(parse_cron2("minute=61 echo").is_err());
        assert!(parse_cron2("").is_err());
    }
}
