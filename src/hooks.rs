//! uWSGI's hooks (`hook-asap`, `hook-pre-app`, `hook-post-app`, `hook-accepting`,
//! `hook-accepting1`, `hook-as-root`, `hook-as-user`, `hook-master-start` = `ACTION:ARGS`)
//! and the `exec-*` shortcuts (`exec-asap`, `exec-pre-app`, `exec-post-app`, `exec-as-root`,
//! `exec-as-user` = a shell command),
//! run where uWSGI runs them (core/hooks.c, core/uwsgi.c, core/master.c):
//!
//! * asap: in the master, first thing after the log is set up;
//! * as-root / as-user: in the master, before and after the privileges are dropped (also
//!   when none are);
//! * pre-app / post-app: around the app's loading: in the master, or with `--lazy-apps` in
//!   each worker;
//! * master-start: in the master, once the first workers are spawned;
//! * accepting (every worker) / accepting1 (worker 1): in the worker, before it accepts.
//!
//! Every phase here is fatal in uWSGI: a failing action logs `FATAL hook failed, destroying
//! instance` and the instance stops (exit code 1).

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `hook-asap` / `exec-asap`.
    Asap,
    /// `hook-as-root` / `exec-as-root`.
    AsRoot,
    /// `hook-as-user` / `exec-as-user`.
    AsUser,
    /// `hook-pre-app` / `exec-pre-app`.
    PreApp,
    /// `hook-post-app` / `exec-post-app`.
    PostApp,
    /// `hook-master-start`.
    MasterStart,
    /// `hook-accepting`.
    Accepting,
    /// `hook-accepting1`.
    Accepting1,
}

impl Phase {
    /// The phase as uWSGI names it in its `running "..." (PHASE)...` line.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Asap => "asap",
            Self::AsRoot => "as root",
            Self::AsUser => "as user",
            Self::PreApp => "pre app",
            Self::PostApp => "post app",
            Self::MasterStart => "master-start",
            Self::Accepting => "accepting",
            Self::Accepting1 => "accepting1",
        }
    }
}

/// One hook action (uWSGI's built-in hooks that mean something here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `exec:CMD`: run CMD with /bin/sh; a non-zero exit fails the hook.
    Exec(String),
    /// `safeexec:CMD`: as exec, but a failure is only logged.
    SafeExec(String),
    /// `print:TEXT` / `log:TEXT`: log TEXT.
    Print(String),
    /// `putenv:KEY=VALUE`.
    Putenv(String, String),
    /// `chdir:DIR`.
    Chdir(String),
    /// `mkdir:DIR` (mode 0777 before the umask).
    Mkdir(String),
    /// `exit[:CODE]`: exit the process now (uWSGI reads CODE only when it has 2+ characters).
    Exit(i32),
    /// `unix_signal:15 gracefully_kill_them_all`: SIGTERM already stops headrace gracefully.
    GracefulTerm,
}

/// One configured hook: where it runs, the line as written (for the log), the action, and
/// whether it came from an `exec-*` option (whose lines uWSGI writes without the `exec:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// When it runs.
    pub phase: Phase,
    /// The value as given.
    pub text: String,
    /// What it does.
    pub action: Action,
}

/// The configured hooks, in the order given.
#[derive(Debug, Clone, Default)]
pub struct Hooks(pub Vec<Hook>);

impl Hook {
    /// Parse `ACTION:ARGS` (a `hook-*` value) or, with `exec_only`, a shell command (an
    /// `exec-*` value). The error is the reason, for the option's one-line message.
    ///
    /// # Errors
    /// No colon, or an action headrace does not have.
    pub fn parse(phase: Phase, value: &str, exec_only: bool) -> Result<Self, String> {
        let text = value.trim().to_owned();
        if exec_only {
            if text.is_empty() {
                return Err("expected a shell command".to_owned());
            }
            return Ok(Self {
                phase,
                action: Action::Exec(text.clone()),
                text,
            });
        }
        let Some((name, arg)) = text.split_once(':') else {
            // uWSGI: "invalid hook syntax, must be hook:args".
            return Err(
                "invalid hook syntax, must be ACTION:ARGS (e.g. exec:./manage.py migrate)"
                    .to_owned(),
            );
        };
        let arg = arg.to_owned();
        let action = match name.trim_start_matches('!') {
            "exec" => Action::Exec(arg),
            "safeexec" => Action::SafeExec(arg),
            "print" | "log" => Action::Print(arg),
            "putenv" => match arg.split_once('=') {
                Some((k, v)) if !k.is_empty() => Action::Putenv(k.to_owned(), v.to_owned()),
                _ => return Err("expected putenv:KEY=VALUE".to_owned()),
            },
            "chdir" => Action::Chdir(arg),
            "mkdir" => Action::Mkdir(arg),
            "exit" => Action::Exit(if arg.len() > 1 { atoi(&arg) } else { 0 }),
            "unix_signal" if arg.split_whitespace().eq(["15", "gracefully_kill_them_all"]) => {
                Action::GracefulTerm
            }
            other => {
                return Err(format!(
                    "hook action `{other}` is not supported: headrace has exec, safeexec, print, log, putenv, chdir, mkdir and exit"
                ))
            }
        };
        Ok(Self {
            phase,
            text,
            action,
        })
    }

    /// Run it; `Err` is the exit status (or -1) of a failed action.
    fn run(&self) -> Result<(), i32> {
        match &self.action {
            Action::Exec(cmd) | Action::SafeExec(cmd) => {
                let code = run_command(cmd);
                if code != 0 {
                    crate::log!("command \"{cmd}\" exited with non-zero code: {code}");
                    if matches!(self.action, Action::Exec(_)) {
                        return Err(code);
                    }
                }
                Ok(())
            }
            Action::Print(text) => {
                crate::log!("{text}");
                Ok(())
            }
            Action::Putenv(k, v) => {
                // Hooks run before any thread of ours exists (master) or before the worker
                // starts its threads (accepting): uWSGI calls putenv at the same points.
                std::env::set_var(k, v);
                Ok(())
            }
            Action::Chdir(dir) => std::env::set_current_dir(dir).map_err(|e| {
                crate::log!("uwsgi_hook_chdir(): {e}");
                -1
            }),
            Action::Mkdir(dir) => std::fs::create_dir(dir).map_err(|e| {
                crate::log!("uwsgi_hook_mkdir(): {e}");
                -1
            }),
            Action::Exit(code) => crate::sys::proc::exit_now(*code),
            Action::GracefulTerm => Ok(()),
        }
    }
}

/// C's atoi, as uWSGI reads `exit:CODE`.
fn atoi(s: &str) -> i32 {
    let t = s.trim_start();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i32, |n, b| {
            n.saturating_mul(10).saturating_add(i32::from(b - b'0'))
        });
    if neg {
        -n
    } else {
        n
    }
}

/// `/bin/sh -c CMD`, waited for: its exit code (uWSGI's `uwsgi_run_command_and_wait`), or -1
/// when it cannot be started or is killed by a signal.
fn run_command(cmd: &str) -> i32 {
    match std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .status()
    {
        Ok(status) => status.code().unwrap_or(-1),
        Err(e) => {
            crate::log!("cannot run \"{cmd}\": {e}");
            -1
        }
    }
}

impl Hooks {
    /// Run the hooks of `phase`, in order. The first failure logs uWSGI's FATAL line and
    /// returns `Err` (the caller stops the instance: every phase here is fatal in uWSGI).
    ///
    /// # Errors
    /// A hook failed.
    pub fn run(&self, phase: Phase) -> Result<(), HookFailed> {
        for h in self.0.iter().filter(|h| h.phase == phase) {
            if h.text.starts_with('!') {
                crate::log!("running --- PRIVATE HOOK --- ({})...", phase.label());
            } else {
                crate::log!("running \"{}\" ({})...", h.text, phase.label());
            }
            if h.run().is_err() {
                crate::log!("FATAL hook failed, destroying instance");
                return Err(HookFailed);
            }
        }
        Ok(())
    }

    /// Run the hooks of `phase` in a worker: a failure stops the whole instance, as uWSGI's
    /// worker does (it sends SIGINT to the master), and this worker exits with code 1.
    pub fn run_in_worker(&self, phase: Phase) {
        if self.run(phase).is_err() {
            crate::sys::proc::kill(crate::sys::proc::getppid(), libc::SIGINT);
            crate::sys::proc::exit_now(1);
        }
    }

    /// Any hook of `phase`.
    #[must_use]
    pub fn has(&self, phase: Phase) -> bool {
        self.0.iter().any(|h| h.phase == phase)
    }
}

/// A fatal hook failed (already logged).
#[derive(Debug, Clone, Copy)]
pub struct HookFailed;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uwsgi_hook_values() {
        let p = |v: &str| Hook::parse(Phase::PreApp, v, false).map(|h| h.action);
        assert_eq!(
            p("exec:./manage.py migrate"),
            Ok(Action::Exec("./manage.py migrate".into()))
        );
        assert_eq!(p("safeexec:false"), Ok(Action::SafeExec("false".into())));
        assert_eq!(
            p("log:hello: world"),
            Ok(Action::Print("hello: world".into()))
        );
        assert_eq!(
            p("putenv:A=b=c"),
            Ok(Action::Putenv("A".into(), "b=c".into()))
        );
        // uWSGI reads the code only when it has two characters or more.
        assert_eq!(p("exit:13"), Ok(Action::Exit(13)));
        assert_eq!(p("exit:3"), Ok(Action::Exit(0)));
        assert_eq!(p("exit:"), Ok(Action::Exit(0)));
        assert_eq!(
            p("unix_signal:15 gracefully_kill_them_all"),
            Ok(Action::GracefulTerm)
        );
        assert!(p("exec ls").is_err());
        assert!(p("call:myfunc").is_err());
        assert!(p("putenv:novalue").is_err());
        assert_eq!(
            Hook::parse(Phase::Asap, "echo a:b", true).map(|h| h.action),
            Ok(Action::Exec("echo a:b".into()))
        );
    }

    #[test]
    fn exec_reports_the_exit_code() {
        assert_eq!(run_command("exit 0"), 0);
        assert_eq!(run_command("exit 3"), 3);
        assert_eq!(run_command("kill -9 $$"), -1);
    }
}
