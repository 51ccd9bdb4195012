//! Attached daemons (`--attach-daemon`, `--smart-attach-daemon`, `--smart-attach-daemon2`,
//! `--attach-daemon2`, `--attach-control-daemon`): the commands the master runs beside the
//! server and keeps running (uWSGI's core/daemons.c). This module reads the options into
//! [`DaemonSpec`]s and refuses a bad one at startup; the master runs them
//! (`src/master/daemons.rs`): they are not Python processes, so not auxiliary processes.

use crate::config::offload::{DaemonConfig, Given, OffloadConfig};
use crate::config::ConfigError;
use std::path::PathBuf;

/// uWSGI's default number of one-second checks for a smart daemon's pidfile after a spawn.
const DEFAULT_FREQ: u32 = 10;

/// One attached daemon, as configured.
#[allow(
    clippy::struct_excessive_bools,
    reason = "uWSGI's independent daemon switches, one field each"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    /// The shell command (run as `/bin/sh -c COMMAND`).
    pub command: String,
    /// Smart daemons: the pidfile that names the daemon's pid.
    pub pidfile: Option<PathBuf>,
    /// The master daemonizes the command and writes its pidfile (`--smart-attach-daemon2`,
    /// `daemonize=`).
    pub daemonize: bool,
    /// Smart daemons: one-second checks to wait for the pidfile after a spawn.
    pub freq: u32,
    /// The server stops when it dies (`--attach-control-daemon`, `control=`).
    pub control: bool,
    /// Signal that stops it (uWSGI's default SIGTERM), sent to its process group.
    pub stop_signal: i32,
    /// Signal sent on a reload instead of `stop_signal` (0: none; smart daemons with
    /// `notifypid` then get SIGHUP, as in uWSGI).
    pub reload_signal: i32,
    /// Files whose change (mtime) makes the master send `stop_signal` (it is then respawned).
    pub touch: Vec<PathBuf>,
    /// Keep the server's stdin instead of /dev/null (`stdin=`, `--daemons-honour-stdin`).
    pub honour_stdin: bool,
    /// Run as this user id.
    pub uid: Option<u32>,
    /// Run with this group id.
    pub gid: Option<u32>,
    /// Directory the command starts in.
    pub chdir: Option<PathBuf>,
    /// Longest throttle between quick respawns, seconds (0: uWSGI's 300).
    pub max_throttle: u32,
    /// Smart daemons: signalled on reload (`reload_signal`, default SIGHUP) and on stop.
    pub notify_pid: bool,
}

impl DaemonSpec {
    fn new(command: String) -> Self {
        Self {
            command,
            pidfile: None,
            daemonize: false,
            freq: DEFAULT_FREQ,
            control: false,
            stop_signal: libc::SIGTERM,
            reload_signal: 0,
            touch: Vec::new(),
            honour_stdin: false,
            uid: None,
            gid: None,
            chdir: None,
            max_throttle: 0,
            notify_pid: false,
        }
    }

    /// Followed through a pidfile (it may outlive our child).
    #[must_use]
    pub fn is_smart(&self) -> bool {
        self.pidfile.is_some()
    }
}

/// Check the daemon options when the configuration is read.
pub fn validate(o: &OffloadConfig) -> Result<(), ConfigError> {
    specs(&o.daemons).map(|_| ())
}

/// Every daemon of the configuration, in the order uWSGI's option kinds are listed.
pub fn specs(d: &DaemonConfig) -> Result<Vec<DaemonSpec>, ConfigError> {
    let mut out = Vec::new();
    for g in &d.attach {
        out.push(plain(g, "attach-daemon", false)?);
    }
    for g in &d.control {
        out.push(plain(g, "attach-control-daemon", true)?);
    }
    for g in &d.smart {
        out.push(smart(g, "smart-attach-daemon", false)?);
    }
    for g in &d.smart2 {
        out.push(smart(g, "smart-attach-daemon2", true)?);
    }
    for g in &d.attach2 {
        out.push(keyval(g).map_err(|why| g.invalid("attach-daemon2", &why))?);
    }
    if d.honour_stdin {
        for s in &mut out {
            s.honour_stdin = true;
        }
    }
    Ok(out)
}

fn plain(g: &Given, option: &'static str, control: bool) -> Result<DaemonSpec, ConfigError> {
    let command = g.value.trim();
    if command.is_empty() {
        return Err(g.invalid(option, "expected a command"));
    }
    let mut s = DaemonSpec::new(command.to_owned());
    s.control = control;
    Ok(s)
}

/// `PIDFILE[,FREQ] COMMAND`.
fn smart(g: &Given, option: &'static str, daemonize: bool) -> Result<DaemonSpec, ConfigError> {
    let value = g.value.trim();
    let Some((pidfile, command)) = value.split_once(char::is_whitespace) else {
        return Err(g.invalid(option, "expected PIDFILE COMMAND"));
    };
    let command = command.trim();
    if command.is_empty() {
        return Err(g.invalid(option, "expected PIDFILE COMMAND"));
    }
    let mut s = DaemonSpec::new(command.to_owned());
    let pidfile = match pidfile.split_once(',') {
        Some((p, freq)) => {
            s.freq = positive(freq).map_err(|why| g.invalid(option, &format!("freq {why}")))?;
            p
        }
        None => pidfile,
    };
    if pidfile.is_empty() {
        return Err(g.invalid(option, "expected PIDFILE COMMAND"));
    }
    s.pidfile = Some(PathBuf::from(pidfile));
    s.daemonize = daemonize;
    Ok(s)
}

fn positive(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{:?} is not a positive number of seconds",
            s.trim()
        )),
    }
}

/// uWSGI's key=value list: items split at `,`, a backslash escapes the next character.
fn kvlist(s: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            items.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items
}

/// A truthy flag value as uWSGI reads `control=1` (any value sets it; we refuse the obvious
/// "off" spellings rather than read them as on).
fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("{key}={other:?}: expected 1 or 0")),
    }
}

/// `--attach-daemon2 key=value,...`.
fn keyval(g: &Given) -> Result<DaemonSpec, String> {
    let mut s = DaemonSpec::new(String::new());
    let mut command = None;
    for item in kvlist(g.value.trim()) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("{item:?} is not key=value"));
        };
        let key = key.trim();
        match key {
            "command" | "cmd" | "exec" => command = Some(value.trim().to_owned()),
            "pidfile" => s.pidfile = Some(PathBuf::from(value.trim())),
            "freq" => s.freq = positive(value).map_err(|why| format!("freq {why}"))?,
            "control" => s.control = flag(key, value)?,
            "daemonize" | "daemon" => s.daemonize = flag(key, value)?,
            "touch" => s.touch.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
            ),
            "stopsignal" | "stop_signal" => s.stop_signal = signal(key, value, false)?,
            "reloadsignal" | "reload_signal" => s.reload_signal = signal(key, value, true)?,
            "stdin" => s.honour_stdin = flag(key, value)?,
            "uid" => s.uid = Some(id(key, value, false)?),
            "gid" => s.gid = Some(id(key, value, true)?),
            "chdir" => s.chdir = Some(PathBuf::from(value.trim())),
            "max_throttle" => {
                s.max_throttle = positive(value).map_err(|why| format!("max_throttle {why}"))?;
            }
            "notifypid" => s.notify_pid = flag(key, value)?,
            "ns_pid" => {
                return Err(
                    "ns_pid (a PID namespace per daemon) is not supported: run the daemon in a \
                     container or under systemd"
                        .to_owned(),
                )
            }
            "legion" => {
                return Err("legion is not supported (headrace has no legions)".to_owned());
            }
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    s.command = command
        .filter(|c| !c.is_empty())
        .ok_or("a command is needed: cmd=COMMAND")?;
    if s.daemonize && s.pidfile.is_none() {
        return Err(
            "daemonize needs pidfile= (the master writes the daemon's pid there)".to_owned(),
        );
    }
    if s.control && s.pidfile.is_some() {
        return Err("control is for daemons without a pidfile".to_owned());
    }
    Ok(s)
}

fn id(key: &str, value: &str, group: bool) -> Result<u32, String> {
    let value = value.trim();
    crate::sys::daemon::lookup_id(value, group).map_err(|e| format!("{key}={value:?}: {e}"))
}

/// A signal number or name (`15`, `SIGTERM`, `TERM`, `term`); `allow_zero`: 0 means none.
fn signal(key: &str, value: &str, allow_zero: bool) -> Result<i32, String> {
    let v = value.trim();
    if let Ok(n) = v.parse::<i32>() {
        if (n == 0 && allow_zero) || (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("{key}={v}: not a signal number"));
    }
    let upper = v.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "ABRT" => libc::SIGABRT,
        _ => {
            return Err(format!(
                "{key}={v:?}: not a signal (a number or a name like SIGTERM)"
            ))
        }
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(v: &str) -> Given {
        Given {
            value: v.to_owned(),
            source_desc: "on the command line".to_owned(),
        }
    }

    fn one(cfg: &DaemonConfig) -> Result<DaemonSpec, String> {
        specs(cfg)
            .map(|mut v| v.remove(0))
            .map_err(|e| e.to_string())
    }

    fn attach2(v: &str) -> Result<DaemonSpec, String> {
        one(&DaemonConfig {
            attach2: vec![given(v)],
            ..DaemonConfig::default()
        })
    }

    fn smart1(v: &str) -> Result<DaemonSpec, String> {
        one(&DaemonConfig {
            smart: vec![given(v)],
            ..DaemonConfig::default()
        })
    }

    #[test]
    fn plain_and_control() {
        let cfg = DaemonConfig {
            attach: vec![given("  sleep 100 ")],
            control: vec![given("true")],
            honour_stdin: true,
            ..DaemonConfig::default()
        };
        let v = specs(&cfg).unwrap();
        assert_eq!(v[0].command, "sleep 100");
        assert!(!v[0].control && v[1].control);
        assert!(v.iter().all(|s| s.honour_stdin && s.pidfile.is_none()));
        assert!(specs(&DaemonConfig {
            attach: vec![given("  ")],
            ..DaemonConfig::default()
        })
        .is_err());
    }

    #[test]
    fn smart_forms() {
        let s = smart1("/tmp/x.pid memcached -d -P /tmp/x.pid").unwrap();
        assert_eq!(s.pidfile, Some(PathBuf::from("/tmp/x.pid")));
        assert_eq!(s.command, "memcached -d -P /tmp/x.pid");
        assert_eq!(s.freq, 10);
        assert!(!s.daemonize);
        let s = smart1("/tmp/x.pid,3 run").unwrap();
        assert_eq!((s.freq, s.command.as_str()), (3, "run"));
        for bad in [
            "/tmp/x.pid",
            "/tmp/x.pid,0 run",
            "/tmp/x.pid,x run",
            ",3 run",
        ] {
            let e = smart1(bad).unwrap_err();
            assert!(e.contains("invalid smart-attach-daemon "), "{bad}: {e}");
        }
        let s = one(&DaemonConfig {
            smart2: vec![given("/tmp/y.pid sleep 9")],
            ..DaemonConfig::default()
        })
        .unwrap();
        assert!(s.daemonize);
    }

    #[test]
    fn attach2_keys() {
        let s = attach2(
            "cmd=echo a\\,b,pidfile=/tmp/p,daemonize=1,freq=2,touch=/tmp/t1;/tmp/t2,\
             stopsignal=SIGINT,reloadsignal=10,stdin=1,uid=0,gid=root,chdir=/tmp,\
             max_throttle=5,notifypid=1",
        )
        .unwrap();
        assert_eq!(s.command, "echo a,b");
        assert_eq!(s.pidfile, Some(PathBuf::from("/tmp/p")));
        assert!(s.daemonize && s.honour_stdin && s.notify_pid && !s.control);
        assert_eq!(s.freq, 2);
        assert_eq!(
            s.touch,
            vec![PathBuf::from("/tmp/t1"), PathBuf::from("/tmp/t2")]
        );
        assert_eq!((s.stop_signal, s.reload_signal), (libc::SIGINT, 10));
        assert_eq!((s.uid, s.gid), (Some(0), Some(0)));
        assert_eq!(s.chdir, Some(PathBuf::from("/tmp")));
        assert_eq!(s.max_throttle, 5);
        let s = attach2("exec=x,control=1,stop_signal=term").unwrap();
        assert!(s.control);
        assert_eq!(s.stop_signal, libc::SIGTERM);
    }

    #[test]
    fn attach2_refusals() {
        for (bad, why) in [
            ("pidfile=/tmp/p", "a command is needed"),
            ("cmd=", "a command is needed"),
            ("cmd=x,bogus=1", "unknown key \"bogus\""),
            ("cmd=x,ns_pid=1", "ns_pid"),
            ("cmd=x,legion=a", "legion"),
            ("cmd=x,stopsignal=NOPE", "not a signal"),
            ("cmd=x,stopsignal=0", "not a signal"),
            ("cmd=x,freq=0", "freq"),
            ("cmd=x,daemonize=1", "daemonize needs pidfile"),
            (
                "cmd=x,control=1,pidfile=/p",
                "control is for daemons without",
            ),
            ("cmd=x,control=maybe", "expected 1 or 0"),
            ("cmd=x,uid=no-such-user-here", "no such user"),
            ("cmd=x,oops", "not key=value"),
        ] {
            let e = attach2(bad).unwrap_err();
            assert!(
                e.contains("invalid attach-daemon2 ") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn kvlist_escapes() {
        assert_eq!(kvlist("a=1,b=x\\,y,"), vec!["a=1", "b=x,y"]);
        assert_eq!(kvlist("a=\\\\"), vec!["a=\\"]);
    }
}
