//! uWSGI's stats JSON (core/master_utils.c `uwsgi_master_generate_stats`): the same keys, in
//! the same order, with the same meanings, written the way uWSGI writes it (tabs and a newline
//! after every `{`, `[` and `,`; nothing of that with `--stats-minified`). headrace's own
//! figures follow under a `headrace` key.

use super::{Snapshot, WorkerStats};
use std::fmt::Write as _;

/// A JSON value, built before it is written.
enum J {
    Obj(Vec<(&'static str, J)>),
    Arr(Vec<J>),
    Str(String),
    Num(u64),
    Bool(bool),
}

fn s(v: impl Into<String>) -> J {
    J::Str(v.into())
}

fn n(v: impl TryInto<u64>) -> J {
    J::Num(v.try_into().unwrap_or(0))
}

/// Write `v` with uWSGI's layout.
fn write(out: &mut String, v: &J, tabs: usize, minified: bool) {
    let nl = |out: &mut String, tabs: usize| {
        if !minified {
            out.push('\n');
            out.extend(std::iter::repeat_n('\t', tabs));
        }
    };
    match v {
        J::Obj(fields) => {
            out.push('{');
            for (i, (k, val)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, tabs + 1);
                escape(out, k);
                out.push(':');
                write(out, val, tabs + 1, minified);
            }
            if !fields.is_empty() {
                nl(out, tabs);
            }
            out.push('}');
        }
        J::Arr(items) => {
            out.push('[');
            for (i, val) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, tabs + 1);
                write(out, val, tabs + 1, minified);
            }
            if !items.is_empty() {
                nl(out, tabs);
            }
            out.push(']');
        }
        J::Str(text) => escape(out, text),
        J::Num(v) => {
            let _ = write!(out, "{v}");
        }
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
    }
}

/// A JSON string literal (RFC 8259 section 7).
fn escape(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The stats JSON for a snapshot.
pub fn render(snap: &Snapshot, minified: bool) -> String {
    let mut out = String::with_capacity(4096);
    write(&mut out, &document(snap), 0, minified);
    if !minified {
        out.push('\n');
    }
    out
}

/// One spooler process, with uWSGI's keys.
fn spooler((dir, pid, tasks, respawns, running): (String, u64, u64, u64, u64)) -> J {
    J::Obj(vec![
        ("dir", s(dir)),
        ("pid", n(pid)),
        ("tasks", n(tasks)),
        ("respawns", n(respawns)),
        ("running", n(running)),
    ])
}

fn document(snap: &Snapshot) -> J {
    let sockets = snap
        .sockets
        .iter()
        .map(|sock| {
            J::Obj(vec![
                ("name", s(sock.name.clone())),
                ("proto", s(sock.proto)),
                ("queue", n(sock.queue)),
                ("max_queue", n(sock.max_queue)),
                ("shared", n(0u64)),
                ("can_offload", n(0u64)),
            ])
        })
        .collect();
    let workers = snap.workers.iter().map(|w| worker(snap, w)).collect();
    let mut doc = vec![
        ("version", s(env!("CARGO_PKG_VERSION"))),
        ("listen_queue", n(snap.listen_queue)),
        // headrace has no socket whose overflow it counts: the kernel drops silently.
        ("listen_queue_errors", n(0u64)),
        // No uWSGI signals: their queue is always empty.
        ("signal_queue", n(0u64)),
        ("load", n(snap.listen_queue)),
        ("pid", n(snap.pid)),
        ("uid", n(snap.uid)),
        ("gid", n(snap.gid)),
        ("cwd", s(snap.cwd.clone())),
        // uWSGI lists its shared-memory locks; headrace's scoreboard has none.
        ("locks", J::Arr(Vec::new())),
    ];
    // uWSGI lists its caches after the locks, and only when there are some.
    let caches = crate::offload::cache::stats();
    if !caches.is_empty() {
        doc.push(("caches", J::Arr(caches.iter().map(cache).collect())));
    }
    doc.extend([("sockets", J::Arr(sockets)), ("workers", J::Arr(workers))]);
    // uWSGI lists its spoolers after the workers, only when there are some.
    let spoolers = crate::offload::spooler::stats();
    if !spoolers.is_empty() {
        doc.push((
            "spoolers",
            J::Arr(spoolers.into_iter().map(spooler).collect()),
        ));
    }
    doc.push(("headrace", headrace(snap)));
    J::Obj(doc)
}

fn cache(c: &crate::offload::cache::CacheStats) -> J {
    J::Obj(vec![
        ("name", s(c.name.clone())),
        ("hash", s(c.hash)),
        ("hashsize", n(c.hashsize)),
        ("keysize", n(c.keysize)),
        ("max_items", n(c.max_items)),
        ("blocks", n(c.blocks)),
        ("blocksize", n(c.blocksize)),
        ("items", n(c.figures.items)),
        ("hits", n(c.figures.hits)),
        ("miss", n(c.figures.miss)),
        ("full", n(c.figures.full)),
        ("last_modified_at", n(c.figures.last_modified_at)),
    ])
}

fn worker(snap: &Snapshot, w: &WorkerStats) -> J {
    let c = &w.counters;
    let apps = if w.pid == 0 {
        Vec::new()
    } else {
        vec![J::Obj(vec![
            ("id", n(0u64)),
            ("modifier1", n(0u64)),
            ("mountpoint", s("")),
            ("startup_time", n(snap.app_startup)),
            ("requests", n(c.requests)),
            ("exceptions", n(c.exceptions)),
            ("chdir", s(snap.chdir.clone())),
        ])]
    };
    let cores = w
        .cores
        .iter()
        .map(|core| {
            // uWSGI dumps the running request's CGI variables, then an empty string; the
            // scoreboard keeps its method and URI.
            let (vars, req_info) = match &core.current {
                Some((start_ms, line)) => {
                    let (method, uri) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    (
                        vec![
                            s(format!("REQUEST_METHOD={method}")),
                            s(format!("REQUEST_URI={uri}")),
                            s(""),
                        ],
                        vec![("request_start", n(start_ms / 1000))],
                    )
                }
                None => (Vec::new(), Vec::new()),
            };
            J::Obj(vec![
                ("id", n(core.id)),
                ("requests", n(core.requests)),
                ("static_requests", n(0u64)),
                ("routed_requests", n(0u64)),
                ("offloaded_requests", n(0u64)),
                ("write_errors", n(core.write_errors)),
                ("read_errors", n(core.read_errors)),
                ("in_request", n(u64::from(core.current.is_some()))),
                ("vars", J::Arr(vars)),
                ("req_info", J::Obj(req_info)),
            ])
        })
        .collect();
    J::Obj(vec![
        ("id", n(w.id)),
        ("pid", n(w.pid)),
        ("accepting", n(u64::from(w.accepting))),
        ("requests", n(c.requests)),
        ("delta_requests", n(w.delta_requests)),
        ("exceptions", n(c.exceptions)),
        ("harakiri_count", n(w.harakiri_count)),
        ("signals", n(0u64)),
        ("signal_queue", n(0u64)),
        (
            "status",
            s(if w.cheap {
                "cheap"
            } else if w.busy() {
                "busy"
            } else {
                "idle"
            }),
        ),
        ("rss", n(w.rss)),
        ("vsz", n(w.vsz)),
        ("running_time", n(c.running_us)),
        ("last_spawn", n(w.last_spawn)),
        ("respawn_count", n(w.respawn_count)),
        ("tx", n(c.tx)),
        ("avg_rt", n(w.avg_rt)),
        ("apps", J::Arr(apps)),
        ("cores", J::Arr(cores)),
    ])
}

/// headrace's own figures: the wait for a worker and every running request.
fn headrace(snap: &Snapshot) -> J {
    let q = &snap.queue;
    let running = snap
        .workers
        .iter()
        .flat_map(|w| {
            w.cores.iter().filter_map(move |c| {
                c.current.as_ref().map(|(start, line)| {
                    J::Obj(vec![
                        ("worker", n(w.id)),
                        ("core", n(c.id)),
                        ("pid", n(w.pid)),
                        ("request", s(line.clone())),
                        ("running_ms", n(snap.now_ms.saturating_sub(*start))),
                    ])
                })
            })
        })
        .collect();
    J::Obj(vec![
        ("version", s(env!("CARGO_PKG_VERSION"))),
        (
            "queue",
            J::Obj(vec![
                ("source", s(if q.router { "router" } else { "listen" })),
                ("depth", n(q.depth)),
                ("oldest_wait_ms", n(q.oldest_wait_ms)),
                ("shed", n(q.shed)),
                ("saturated", J::Bool(q.saturated)),
            ]),
        ),
        ("running", J::Arr(running)),
        (
            "in_flight",
            J::Arr(
                snap.workers
                    .iter()
                    .map(|w| {
                        J::Obj(vec![
                            ("worker", n(w.id)),
                            ("pid", n(w.pid)),
                            ("requests", n(w.in_flight)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let cases: &[(&str, &str)] = &[
            ("plain", "\"plain\""),
            ("a\"b\\c", "\"a\\\"b\\\\c\""),
            ("\n\t\u{1}", "\"\\n\\t\\u0001\""),
            ("é", "\"é\""),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            escape(&mut out, input);
            assert_eq!(&out, want, "{input:?}");
        }
    }

    #[test]
    fn layouts() {
        let v = J::Obj(vec![
            ("a", n(1u64)),
            ("b", J::Arr(vec![n(2u64), J::Obj(Vec::new())])),
            ("c", J::Arr(Vec::new())),
        ]);
        let mut min = String::new();
        write(&mut min, &v, 0, true);
        assert_eq!(min, r#"{"a":1,"b":[2,{}],"c":[]}"#);
        let mut pretty = String::new();
        write(&mut pretty, &v, 0, false);
        assert_eq!(
            pretty,
            "{\n\t\"a\":1,\n\t\"b\":[\n\t\t2,\n\t\t{}\n\t],\n\t\"c\":[]\n}"
        );
    }

    #[test]
    fn document_keys_in_uwsgi_order() {
        let text = render(&super::super::tests::sample(), true);
        let keys = [
            "{\"version\":",
            ",\"listen_queue\":0,\"listen_queue_errors\":0,\"signal_queue\":0,\"load\":0,\"pid\":100,\"uid\":0,\"gid\":0,\"cwd\":\"/srv/\\\"app\\\"\",\"locks\":[],\"sockets\":[{\"name\":\"127.0.0.1:8000\",\"proto\":\"http\",\"queue\":0,\"max_queue\":1024,\"shared\":0,\"can_offload\":0}]",
            ",\"workers\":[{\"id\":1,\"pid\":101,\"accepting\":1,\"requests\":7,\"delta_requests\":7,\"exceptions\":1,\"harakiri_count\":0,\"signals\":0,\"signal_queue\":0,\"status\":\"busy\",\"rss\":10485760,\"vsz\":104857600,\"running_time\":21000,\"last_spawn\":1700000000,\"respawn_count\":1,\"tx\":700,\"avg_rt\":3000,\"apps\":[{\"id\":0,\"modifier1\":0,\"mountpoint\":\"\",\"startup_time\":0,\"requests\":7,\"exceptions\":1,\"chdir\":\"\"}]",
            ",\"cores\":[{\"id\":0,\"requests\":3,\"static_requests\":0,\"routed_requests\":0,\"offloaded_requests\":0,\"write_errors\":0,\"read_errors\":0,\"in_request\":1,\"vars\":[\"REQUEST_METHOD=GET\",\"REQUEST_URI=/slow?x=1\",\"\"],\"req_info\":{\"request_start\":1700000009}},{\"id\":1,\"requests\":3,\"static_requests\":0,\"routed_requests\":0,\"offloaded_requests\":0,\"write_errors\":0,\"read_errors\":0,\"in_request\":0,\"vars\":[],\"req_info\":{}}]}",
            "\"status\":\"idle\"",
            ",\"headrace\":{\"version\":",
            ",\"queue\":{\"source\":\"router\",\"depth\":2,\"oldest_wait_ms\":1500,\"shed\":3,\"saturated\":true},\"running\":[{\"worker\":1,\"core\":0,\"pid\":101,\"request\":\"GET /slow?x=1\",\"running_ms\":500}]",
            ",\"in_flight\":[{\"worker\":1,\"pid\":101,\"requests\":1},{\"worker\":2,\"pid\":102,\"requests\":0}]}}",
        ];
        let mut at = 0;
        for k in keys {
            let found = text[at..]
                .find(k)
                .unwrap_or_else(|| panic!("{k} not found after {at} in {text}"));
            at += found + k.len();
        }
        assert_eq!(at, text.len());
    }
}
