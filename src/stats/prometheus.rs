//! Prometheus text exposition format (version 0.0.4): `# HELP`, `# TYPE`, then samples.
//! Names follow Prometheus conventions: a `headrace_` prefix, base units (`_seconds`,
//! `_bytes`), `_total` on counters.

use super::Snapshot;
use crate::scoreboard::{Counters, HistogramValues, BUCKETS_US, STATUS_CLASSES};
use std::fmt::Write as _;

/// Status class labels, by the scoreboard's class index.
const CLASS_LABELS: [&str; STATUS_CLASSES] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Seconds from microseconds, as Prometheus writes floats.
#[allow(
    clippy::cast_precision_loss,
    reason = "a float of seconds is the exposition format; microsecond precision survives"
)]
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramValues) {
    family(out, name, "histogram", help);
    let mut cumulative = 0;
    for (bound, count) in BUCKETS_US.iter().zip(h.buckets) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", secs(*bound));
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum {}", secs(h.sum_us));
    let _ = writeln!(out, "{name}_count {}", h.count());
}

/// The metrics for a snapshot.
#[allow(
    clippy::too_many_lines,
    reason = "one flat list of metric families, read top to bottom"
)]
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let mut all = Counters::default();
    for w in &snap.workers {
        all.add(&w.counters);
    }
    family(
        &mut out,
        "headrace_requests_total",
        "counter",
        "Requests served by the workers, by status class (none: the client left before a status was sent).",
    );
    for (label, count) in CLASS_LABELS.iter().zip(all.classes) {
        let _ = writeln!(out, "headrace_requests_total{{code=\"{label}\"}} {count}");
    }
    family(
        &mut out,
        "headrace_exceptions_total",
        "counter",
        "Requests whose app call raised an exception.",
    );
    let _ = writeln!(out, "headrace_exceptions_total {}", all.exceptions);
    family(
        &mut out,
        "headrace_response_bytes_total",
        "counter",
        "Response bytes sent by the workers, heads and bodies.",
    );
    let _ = writeln!(out, "headrace_response_bytes_total {}", all.tx);
    histogram(
        &mut out,
        "headrace_request_duration_seconds",
        "Time from a complete request head to the end of its response, in the worker.",
        &all.duration,
    );
    histogram(
        &mut out,
        "headrace_queue_wait_seconds",
        "Time a request waited in the router's queue for a worker (--http only).",
        &snap.queue.wait,
    );
    family(
        &mut out,
        "headrace_workers",
        "gauge",
        "Worker processes, by state (busy: running at least one request).",
    );
    let busy = snap
        .workers
        .iter()
        .filter(|w| w.pid != 0 && w.busy())
        .count();
    let idle = snap
        .workers
        .iter()
        .filter(|w| w.pid != 0 && !w.busy())
        .count();
    let _ = writeln!(out, "headrace_workers{{state=\"busy\"}} {busy}");
    let _ = writeln!(out, "headrace_workers{{state=\"idle\"}} {idle}");
    family(
        &mut out,
        "headrace_worker_in_flight",
        "gauge",
        "Requests a worker is running now (busy threads, or requests and WebSockets on an ASGI worker's loop).",
    );
    for w in snap.workers.iter().filter(|w| w.pid != 0) {
        let _ = writeln!(
            out,
            "headrace_worker_in_flight{{worker=\"{}\"}} {}",
            w.id, w.in_flight
        );
    }
    family(
        &mut out,
        "headrace_queue_depth",
        "gauge",
        "Requests waiting for a worker: the router's queue with --http, else the sockets' accept queues.",
    );
    let _ = writeln!(out, "headrace_queue_depth {}", snap.queue.depth);
    family(
        &mut out,
        "headrace_queue_oldest_wait_seconds",
        "gauge",
        "How long the oldest waiting request has waited.",
    );
    let _ = writeln!(
        out,
        "headrace_queue_oldest_wait_seconds {}",
        secs(snap.queue.oldest_wait_ms * 1000)
    );
    family(
        &mut out,
        "headrace_saturated",
        "gauge",
        "1 while every worker is busy and requests wait.",
    );
    let _ = writeln!(out, "headrace_saturated {}", u8::from(snap.queue.saturated));
    family(
        &mut out,
        "headrace_shed_requests_total",
        "counter",
        "Requests answered 503 because no worker was free in time (--max-queue, --queue-timeout).",
    );
    let _ = writeln!(out, "headrace_shed_requests_total {}", snap.queue.shed);
    family(
        &mut out,
        "headrace_listen_queue",
        "gauge",
        "Connections waiting in the fullest listening socket's accept queue.",
    );
    let _ = writeln!(out, "headrace_listen_queue {}", snap.listen_queue);
    family(
        &mut out,
        "headrace_worker_respawns_total",
        "counter",
        "Worker processes started to replace one that exited (recycled, crashed, killed or reloaded).",
    );
    let respawns: u64 = snap
        .workers
        .iter()
        .map(|w| w.respawn_count.saturating_sub(1))
        .sum();
    let _ = writeln!(out, "headrace_worker_respawns_total {respawns}");
    family(
        &mut out,
        "headrace_harakiri_total",
        "counter",
        "Workers killed by --harakiri.",
    );
    let harakiri: u64 = snap.workers.iter().map(|w| w.harakiri_count).sum();
    let _ = writeln!(out, "headrace_harakiri_total {harakiri}");
    family(
        &mut out,
        "headrace_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of each worker's current process.",
    );
    for w in snap.workers.iter().filter(|w| w.pid != 0) {
        let _ = writeln!(
            out,
            "headrace_worker_resident_memory_bytes{{worker=\"{}\"}} {}",
            w.id, w.rss
        );
    }
    family(
        &mut out,
        "headrace_worker_virtual_memory_bytes",
        "gauge",
        "Virtual memory size of each worker's current process.",
    );
    for w in snap.workers.iter().filter(|w| w.pid != 0) {
        let _ = writeln!(
            out,
            "headrace_worker_virtual_memory_bytes{{worker=\"{}\"}} {}",
            w.id, w.vsz
        );
    }
    family(
        &mut out,
        "headrace_worker_requests_total",
        "counter",
        "Requests served, by worker id.",
    );
    for w in &snap.workers {
        let _ = writeln!(
            out,
            "headrace_worker_requests_total{{worker=\"{}\"}} {}",
            w.id, w.counters.requests
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_histograms() {
        let text = render(&super::super::tests::sample());
        for line in [
            "# TYPE headrace_requests_total counter\n",
            "headrace_requests_total{code=\"2xx\"} 10\n",
            "headrace_requests_total{code=\"5xx\"} 2\n",
            "headrace_requests_total{code=\"none\"} 0\n",
            "headrace_request_duration_seconds_bucket{le=\"0.001\"} 0\n",
            "headrace_request_duration_seconds_bucket{le=\"0.005\"} 12\n",
            "headrace_request_duration_seconds_bucket{le=\"30\"} 12\n",
            "headrace_request_duration_seconds_bucket{le=\"+Inf\"} 14\n",
            "headrace_request_duration_seconds_sum 80.04\n",
            "headrace_request_duration_seconds_count 14\n",
            "headrace_queue_wait_seconds_bucket{le=\"0.001\"} 4\n",
            "headrace_queue_wait_seconds_sum 0.0012\n",
            "headrace_workers{state=\"busy\"} 1\n",
            "headrace_workers{state=\"idle\"} 1\n",
            "headrace_queue_depth 2\n",
            "headrace_queue_oldest_wait_seconds 1.5\n",
            "headrace_saturated 1\n",
            "headrace_shed_requests_total 3\n",
            "headrace_worker_respawns_total 0\n",
            "headrace_worker_resident_memory_bytes{worker=\"2\"} 10485760\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in:\n{text}");
        }
        assert!(text.ends_with('\n'));
    }
}
