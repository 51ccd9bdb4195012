//! uWSGI's internal routing (core/routing.c, plugins/router_redirect): `route = REGEXP
//! ACTION` (PATH_INFO), `route-uri` (REQUEST_URI), `route-host` (HTTP_HOST), `route-if =
//! COND:ARGS ACTION` and `route-if-not`, applied in the worker before the app is called, in
//! the order given. So they hold on every front: `--http-socket`, `--socket` and the `--http`
//! router, which hands each request to a worker.
//!
//! Actions: `redirect`/`redirect-302` and `redirect-permanent`/`redirect-301` (answer with
//! Location, end the chain), `return:STATUS` / `break-with-status:STATUS` (answer STATUS
//! with its reason as text/plain), `break:STATUS` (answer STATUS with no body), `addheader`
//! and `delheader`/`remheader` (change the app's response headers, go on), `addvar:K=V` (set
//! a request variable, go on), `log:TEXT` (log a line, go on), `continue`/`last` (stop
//! routing, call the app) and `donotlog` (no request line; applied with the request log).
//! `${VAR}` in an argument is a request variable, `$N` a capture of the rule's regexp.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use regex::Regex;

/// What a rule looks at.
#[derive(Debug, Clone)]
pub enum Subject {
    /// `route`: PATH_INFO, or another request variable (`route-uri`: REQUEST_URI,
    /// `route-host`: HTTP_HOST), matched by a regexp.
    Var(&'static str, Regex),
    /// `route-if[-not] = COND:ARGS`.
    If {
        /// The condition.
        cond: Cond,
        /// Its arguments, translated per request.
        arg: String,
        /// `route-if-not`.
        negate: bool,
    },
}

/// uWSGI's route conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// `equal`/`isequal`/`eq`/`==`: `A;B`.
    Equal,
    /// `startswith`: `A;B`.
    StartsWith,
    /// `endswith`: `A;B`.
    EndsWith,
    /// `contains`/`contain`: `A;B`.
    Contains,
    /// `regexp`/`re`: `A;REGEXP`.
    Regexp,
    /// `empty`: the translated argument is empty.
    Empty,
    /// `isfile`, `isdir`, `exists`, `islink`.
    IsFile,
    /// See `IsFile`.
    IsDir,
    /// See `IsFile`.
    Exists,
    /// See `IsFile`.
    IsLink,
    /// `ishigher`/`>`, `islower`/`<`, `ishigherequal`/`>=`, `islowerequal`/`<=`: numbers.
    Higher,
    /// See `Higher`.
    Lower,
    /// See `Higher`.
    HigherEqual,
    /// See `Higher`.
    LowerEqual,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `donotlog:` (the request log reads these rules itself).
    DoNotLog,
    /// `redirect:URL` (302) or `redirect-permanent:URL` (301).
    Redirect {
        /// 301 or 302.
        status: u16,
        /// The Location, translated.
        url: String,
    },
    /// `return:STATUS`: STATUS with its reason phrase as the body.
    Return(u16),
    /// `break:STATUS TEXT`: that status line, no body.
    BreakStatus(String),
    /// `addheader:Name: value`.
    AddHeader(String),
    /// `delheader:Name` / `remheader:Name`.
    DelHeader(String),
    /// `addvar:KEY=VALUE`.
    AddVar(String, String),
    /// `log:TEXT`.
    Log(String),
    /// `continue:` / `last:`: stop routing, call the app.
    Continue,
}

/// One `route*` line.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What it matches.
    pub subject: Subject,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// Parse `SUBJECT ACTION` (split at the first space, as uWSGI does) for the option
    /// `kind`: "route", "route-uri", "route-host", "route-if" or "route-if-not".
    ///
    /// # Errors
    /// The reason, for the option's one-line message.
    pub fn parse(kind: &str, value: &str) -> Result<Self, String> {
        let value = value.trim();
        let Some((subject, action)) = value.split_once(' ') else {
            return Err("invalid route syntax: expected `SUBJECT ACTION`".to_owned());
        };
        let subject = match kind {
            "route-if" | "route-if-not" => {
                let Some((name, arg)) = subject.split_once(':') else {
                    return Err("invalid route condition syntax: expected COND:ARGS".to_owned());
                };
                Subject::If {
                    cond: cond(name)?,
                    arg: arg.to_owned(),
                    negate: kind == "route-if-not",
                }
            }
            _ => {
                let var = match kind {
                    "route-uri" => "REQUEST_URI",
                    "route-host" => "HTTP_HOST",
                    _ => "PATH_INFO",
                };
                let re = Regex::new(subject).map_err(|e| bad_regex(&e))?;
                Subject::Var(var, re)
            }
        };
        Ok(Self {
            subject,
            action: action_of(action.trim())?,
        })
    }
}

/// The regex crate's error is several lines (the pattern, a caret); the last one says why.
fn bad_regex(e: &regex::Error) -> String {
    let text = e.to_string();
    let why = text
        .lines()
        .last()
        .unwrap_or("")
        .trim_start_matches("error: ");
    format!("bad regular expression: {why}")
}

fn cond(name: &str) -> Result<Cond, String> {
    Ok(match name {
        "equal" | "isequal" | "eq" | "==" => Cond::Equal,
        "startswith" => Cond::StartsWith,
        "endswith" => Cond::EndsWith,
        "contains" | "contain" => Cond::Contains,
        "regexp" | "re" => Cond::Regexp,
        "empty" => Cond::Empty,
        "isfile" => Cond::IsFile,
        "isdir" => Cond::IsDir,
        "exists" => Cond::Exists,
        "islink" => Cond::IsLink,
        "ishigher" | ">" => Cond::Higher,
        "islower" | "<" => Cond::Lower,
        "ishigherequal" | ">=" => Cond::HigherEqual,
        "islowerequal" | "<=" => Cond::LowerEqual,
        other => return Err(format!("unable to find \"{other}\" route condition")),
    })
}

fn status_of(s: &str) -> Result<u16, String> {
    s.trim()
        .get(..3)
        .and_then(|d| d.parse::<u16>().ok())
        .filter(|n| (100..=999).contains(n))
        .ok_or_else(|| format!("expected an HTTP status, not `{s}`"))
}

fn action_of(text: &str) -> Result<Action, String> {
    let (name, arg) = text.split_once(':').unwrap_or((text, ""));
    Ok(match name {
        "donotlog" => Action::DoNotLog,
        "redirect" | "redirect-302" | "redirect-permanent" | "redirect-301" => {
            if arg.is_empty() {
                return Err(format!("expected {name}:URL"));
            }
            Action::Redirect {
                status: if name.ends_with("302") || name == "redirect" {
                    302
                } else {
                    301
                },
                url: arg.to_owned(),
            }
        }
        "return" | "break-with-status" => Action::Return(status_of(arg)?),
        "break" if arg.len() >= 3 => {
            status_of(arg)?;
            Action::BreakStatus(arg.to_owned())
        }
        "addheader" => {
            let ok = arg
                .split_once(':')
                .is_some_and(|(n, _)| !n.trim().is_empty() && !n.contains(' '));
            if !ok {
                return Err("expected addheader:Name: value".to_owned());
            }
            Action::AddHeader(arg.to_owned())
        }
        "delheader" | "remheader" if !arg.is_empty() => Action::DelHeader(arg.to_owned()),
        "addvar" => match arg.split_once('=') {
            Some((k, v)) if !k.is_empty() => Action::AddVar(k.to_owned(), v.to_owned()),
            _ => return Err("expected addvar:KEY=VALUE".to_owned()),
        },
        "log" => Action::Log(arg.to_owned()),
        "continue" | "last" => Action::Continue,
        other => {
            return Err(format!(
                "route action `{other}` is not supported: headrace has redirect, redirect-permanent, return, break:STATUS, addheader, delheader, addvar, log, continue, last and donotlog"
            ))
        }
    })
}

/// A whole answer: status line, headers, body.
pub type Answer = (String, Vec<(String, String)>, Vec<u8>);

/// What the rules decided for one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Answer this instead of calling the app: status line, headers, body.
    pub respond: Option<Answer>,
    /// Headers added to the response.
    pub add: Vec<(String, String)>,
    /// Header names (lower case) removed from the app's response.
    pub remove: Vec<String>,
}

/// `${VAR}` (a request variable, empty when unset) and `$N` (a capture) in `text`.
fn translate(text: &str, var: &dyn Fn(&str) -> Option<String>, caps: &[Option<String>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            if let Some(end) = inner.find('}') {
                out.push_str(&var(&inner[..end]).unwrap_or_default());
                rest = &inner[end + 1..];
                continue;
            }
        }
        match after.bytes().next() {
            Some(d) if d.is_ascii_digit() => {
                let n = usize::from(d - b'0');
                out.push_str(caps.get(n).and_then(Option::as_deref).unwrap_or(""));
                rest = &after[1..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn captures(re: &Regex, s: &str) -> Option<Vec<Option<String>>> {
    re.captures(s)
        .map(|c| c.iter().map(|m| m.map(|m| m.as_str().to_owned())).collect())
}

/// Evaluate a condition; `Some(captures)` when it holds.
fn holds(
    cond: Cond,
    arg: &str,
    var: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<Option<String>>> {
    let two = || {
        let (a, b) = arg.split_once(';')?;
        Some((translate(a, var, &[]), b))
    };
    let yes = Some(Vec::new());
    let path = || translate(arg, var, &[]);
    let num = |s: &str| s.trim().parse::<i64>().unwrap_or(0);
    let ok = match cond {
        Cond::Regexp => {
            let (a, b) = two()?;
            return Regex::new(b).ok().and_then(|re| captures(&re, &a));
        }
        Cond::Equal => two().is_some_and(|(a, b)| a == translate(b, var, &[])),
        Cond::StartsWith => two().is_some_and(|(a, b)| a.starts_with(&translate(b, var, &[]))),
        Cond::EndsWith => two().is_some_and(|(a, b)| a.ends_with(&translate(b, var, &[]))),
        Cond::Contains => two().is_some_and(|(a, b)| a.contains(&translate(b, var, &[]))),
        Cond::Higher => two().is_some_and(|(a, b)| num(&a) > num(&translate(b, var, &[]))),
        Cond::Lower => two().is_some_and(|(a, b)| num(&a) < num(&translate(b, var, &[]))),
        Cond::HigherEqual => two().is_some_and(|(a, b)| num(&a) >= num(&translate(b, var, &[]))),
        Cond::LowerEqual => two().is_some_and(|(a, b)| num(&a) <= num(&translate(b, var, &[]))),
        Cond::Empty => path().is_empty(),
        Cond::IsFile => std::fs::metadata(path()).is_ok_and(|m| m.is_file()),
        Cond::IsDir => std::fs::metadata(path()).is_ok_and(|m| m.is_dir()),
        Cond::Exists => std::fs::metadata(path()).is_ok(),
        Cond::IsLink => std::fs::symlink_metadata(path()).is_ok_and(|m| m.file_type().is_symlink()),
    };
    ok.then_some(yes).flatten()
}

/// Run the rules over a request whose variables `var` reads; `set` sets one (addvar).
pub fn plan(
    rules: &[Rule],
    var: &dyn Fn(&str) -> Option<String>,
    set: &mut dyn FnMut(&str, &str),
) -> Plan {
    let mut p = Plan::default();
    for rule in rules {
        let caps = match &rule.subject {
            Subject::Var(name, re) => captures(re, &var(name).unwrap_or_default()),
            Subject::If { cond, arg, negate } => {
                let r = holds(*cond, arg, var);
                match (r, negate) {
                    (Some(c), false) => Some(c),
                    (None, true) => Some(Vec::new()),
                    _ => None,
                }
            }
        };
        let Some(caps) = caps else { continue };
        let t = |s: &str| translate(s, var, &caps);
        match &rule.action {
            Action::DoNotLog => {}
            Action::Redirect { status, url } => {
                let (line, body) = if *status == 301 {
                    ("301 Moved Permanently", "Moved Permanently")
                } else {
                    ("302 Found", "Moved")
                };
                p.respond = Some((
                    line.to_owned(),
                    vec![("Location".to_owned(), t(url))],
                    body.as_bytes().to_vec(),
                ));
                return p;
            }
            Action::Return(status) => {
                let reason = reason(*status);
                p.respond = Some((
                    format!("{status} {reason}"),
                    vec![("Content-Type".to_owned(), "text/plain".to_owned())],
                    reason.as_bytes().to_vec(),
                ));
                return p;
            }
            Action::BreakStatus(line) => {
                p.respond = Some((
                    t(line),
                    // uWSGI also says `Connection: close`; a WSGI answer may not carry
                    // hop-by-hop headers, and the server frames it with Content-Length: 0.
                    vec![("Content-Type".to_owned(), "text/plain".to_owned())],
                    Vec::new(),
                ));
                return p;
            }
            Action::AddHeader(h) => {
                let h = t(h);
                if let Some((n, v)) = h.split_once(':') {
                    p.add.push((n.trim().to_owned(), v.trim().to_owned()));
                }
            }
            Action::DelHeader(n) => p.remove.push(t(n).trim().to_ascii_lowercase()),
            Action::AddVar(k, v) => set(k, &t(v)),
            Action::Log(text) => crate::log!("{}", t(text)),
            Action::Continue => return p,
        }
    }
    p
}

/// The reason phrase `return:` answers with (uWSGI's `uwsgi_http_status_msg` table).
fn reason(status: u16) -> &'static str {
    match status {
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        451 => "Unavailable For Legal Reasons",
        other => crate::http::response::reason(other),
    }
}

static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
static HELPERS: std::sync::OnceLock<Py<PyModule>> = std::sync::OnceLock::new();

const HELPERS_PY: &std::ffi::CStr = cr#"
def respond(status, headers, body):
    def routed(environ, start_response):
        start_response(status, headers + [("Content-Length", str(len(body)))])
        return [body]
    return routed


def wrap(app, add, remove):
    def routed(environ, start_response):
        def sr(status, headers, exc_info=None):
            headers = [h for h in headers if h[0].lower() not in remove] + add
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)
        return app(environ, sr)
    return routed
"#;

/// Set this worker's rules (checked when the config was read).
pub fn set_rules(py: Python<'_>, rules: &[Rule]) {
    let worth = rules.iter().any(|r| r.action != Action::DoNotLog);
    if !worth {
        return;
    }
    let _ = RULES.set(rules.to_vec());
    match PyModule::from_code(py, HELPERS_PY, c"headrace_routing.py", c"headrace_routing") {
        Ok(m) => {
            let _ = HELPERS.set(m.unbind());
        }
        Err(e) => crate::log!("headrace: routing helpers failed to load: {e}"),
    }
}

/// The callable to run for this request: the app, or what the rules put in its place (a
/// redirect or status answer, or the app with its headers changed). `None`: the app as is.
pub fn route<'py>(
    environ: &Bound<'py, PyDict>,
    app: &Bound<'py, PyAny>,
) -> Option<Bound<'py, PyAny>> {
    let rules = RULES.get()?;
    let py = environ.py();
    let helpers = HELPERS.get()?.bind(py);
    let var = |k: &str| -> Option<String> {
        environ
            .get_item(k)
            .ok()
            .flatten()
            .and_then(|v| v.extract::<String>().ok())
    };
    let mut set = |k: &str, v: &str| {
        let _ = environ.set_item(k, v);
    };
    let p = plan(rules, &var, &mut set);
    if p == Plan::default() {
        return None;
    }
    let target = match p.respond {
        Some((status, headers, body)) => helpers
            .getattr("respond")
            .and_then(|f| f.call1((status, headers, pyo3::types::PyBytes::new(py, &body))))
            .ok()?,
        None => app.clone(),
    };
    if p.add.is_empty() && p.remove.is_empty() {
        return Some(target);
    }
    helpers
        .getattr("wrap")
        .and_then(|f| f.call1((target, p.add, p.remove)))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(lines: &[(&str, &str)], vars: &[(&str, &str)]) -> Plan {
        let rules: Vec<Rule> = lines
            .iter()
            .map(|(k, v)| Rule::parse(k, v).unwrap())
            .collect();
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        plan(&rules, &|k| vars.get(k).cloned(), &mut |_, _| {})
    }

    #[test]
    fn redirect_with_request_vars_like_localshop() {
        let line = "equal:${HTTP_X_FORWARDED_PROTO};http redirect-permanent:https://${HTTP_HOST}${REQUEST_URI}";
        let vars = [
            ("HTTP_X_FORWARDED_PROTO", "http"),
            ("HTTP_HOST", "shop.example"),
            ("REQUEST_URI", "/a?b=1"),
        ];
        let p = run(&[("route-if", line)], &vars);
        let (status, headers, _) = p.respond.unwrap();
        assert_eq!(status, "301 Moved Permanently");
        assert_eq!(
            headers,
            [("Location".into(), "https://shop.example/a?b=1".into())]
        );
        let p = run(
            &[("route-if", line)],
            &[("HTTP_X_FORWARDED_PROTO", "https")],
        );
        assert_eq!(p, Plan::default());
        assert!(run(&[("route-if-not", line)], &[]).respond.is_some());
    }

    #[test]
    fn addheader_keeps_the_rest_of_the_line_like_linkding() {
        let p = run(
            &[(
                "route",
                "^/static/ addheader:Content-Security-Policy: sandbox",
            )],
            &[("PATH_INFO", "/static/x.css")],
        );
        assert_eq!(
            p.add,
            [("Content-Security-Policy".into(), "sandbox".into())]
        );
        assert_eq!(
            run(
                &[("route", "^/static/ addheader:A: b")],
                &[("PATH_INFO", "/x")]
            ),
            Plan::default()
        );
    }

    #[test]
    fn captures_conditions_and_chain_control() {
        let p = run(
            &[("route", "^/old/(.*)$ redirect:/new/$1")],
            &[("PATH_INFO", "/old/a/b")],
        );
        assert_eq!(p.respond.unwrap().1[0].1, "/new/a/b");
        let p = run(
            &[("route", "^/ continue:"), ("route", "^/ return:403")],
            &[("PATH_INFO", "/x")],
        );
        assert_eq!(p, Plan::default());
        let p = run(
            &[("route-host", "^admin\\. return:403")],
            &[("HTTP_HOST", "admin.example")],
        );
        assert_eq!(p.respond.unwrap().0, "403 Forbidden");
        for (cond, want) in [
            ("startswith:${PATH_INFO};/ap", true),
            ("endswith:${PATH_INFO};.py", false),
            ("contains:${PATH_INFO};pi", true),
            ("regexp:${PATH_INFO};^/a(p)i$", true),
            ("empty:${HTTP_NOPE}", true),
            ("isdir:/", true),
            ("isfile:/", false),
            ("ishigher:${N};3", true),
        ] {
            let p = run(
                &[("route-if", &format!("{cond} return:404"))],
                &[("PATH_INFO", "/api"), ("N", "4")],
            );
            assert_eq!(p.respond.is_some(), want, "{cond}");
        }
        let p = run(
            &[(
                "route-if",
                "regexp:${PATH_INFO};^/(a)pi$ addheader:X-Cap: $1",
            )],
            &[("PATH_INFO", "/api")],
        );
        assert_eq!(p.add, [("X-Cap".into(), "a".into())]);
    }

    #[test]
    fn bad_lines_are_refused() {
        for (k, v) in [
            ("route", "^/x"),
            ("route", "^/x rewrite:/y"),
            ("route", "( redirect:/"),
            ("route-if", "nocolon redirect:/"),
            ("route-if", "sameas:a;b redirect:/"),
            ("route", "^/ return:abc"),
            ("route", "^/ addheader:novalue"),
            ("route", "^/ redirect:"),
        ] {
            assert!(Rule::parse(k, v).is_err(), "{k} = {v}");
        }
    }
}
