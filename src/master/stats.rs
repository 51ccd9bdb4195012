//! The master's side of the stats: its books per worker id (what outlives a worker process),
//! the view it hands `crate::stats`, and serving the stats listeners from its poll loop.

use super::{Master, ROUTER_ID};
use crate::stats::{Document, History, Live, Snapshot, View, WorkerView};
use crate::sys::proc::PollFd;

impl Master<'_> {
    /// The books of worker `id` (grown on demand: a reload may raise --processes).
    pub(super) fn history(&mut self, id: usize) -> &mut History {
        if self.history.len() <= id {
            self.history.resize_with(id + 1, History::default);
        }
        &mut self.history[id]
    }

    /// A worker process is about to leave its slot: its counters join its id's books.
    pub(super) fn retire_counters(&mut self, id: usize, slot: Option<usize>) {
        if id == ROUTER_ID {
            return;
        }
        if let Some(c) = slot
            .and_then(|s| self.scoreboard.get(s))
            .map(crate::scoreboard::Slot::counters)
        {
            self.history(id).retired.add(&c);
        }
    }

    fn stats_view(&self) -> View<'_> {
        let now = std::time::Instant::now();
        let unix_now = u64::try_from(super::unix_now_secs()).unwrap_or(0);
        let last = self
            .procs
            .iter()
            .map(|p| p.id)
            .chain([self.config.processes])
            .max()
            .unwrap_or(0);
        let workers = (1..=last)
            .filter(|&id| id <= self.config.processes || self.procs.iter().any(|p| p.id == id))
            .map(|id| WorkerView {
                id,
                cheap: self.cheaped(id),
                history: self.history.get(id).cloned().unwrap_or_default(),
                live: self
                    .procs
                    .iter()
                    .filter(|p| p.id == id)
                    .map(|p| Live {
                        pid: p.pid,
                        slot: p.slot,
                        spawned: unix_now
                            .saturating_sub(now.saturating_duration_since(p.spawned_at).as_secs()),
                        old: p.old,
                    })
                    .collect(),
            })
            .collect();
        View {
            config: self.config,
            scoreboard: &self.scoreboard,
            listeners: &self.listeners,
            workers,
            app_startup: self.app_startup,
        }
    }

    /// Serve the stats clients `poll` found ready (the entries after the signalfd's).
    pub(super) fn serve_stats(&mut self, ready: &[PollFd]) {
        let mut server = std::mem::take(&mut self.stats);
        let minified = server.minified();
        server.serve(ready, &mut |doc| {
            let snap = Snapshot::read(&self.stats_view());
            match doc {
                Document::Json => snap.json(minified).into_bytes(),
                Document::Metrics => snap.prometheus().into_bytes(),
            }
        });
        self.stats = server;
    }
}
