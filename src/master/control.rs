//! What the master does with a message on its control channel (`crate::offload::control`).

use super::Master;
use crate::offload::control::Control;
use pyo3::prelude::*;
use std::time::Instant;

impl Master<'_> {
    pub(super) fn on_control(&mut self, py: Python<'_>, msg: &Control) {
        match msg {
            Control::Reload => {
                crate::log!("uwsgi.reload() called: graceful reload");
                self.begin_reload(py, false);
            }
            Control::ChainReload => {
                crate::log!("chain reload requested");
                self.begin_reload(py, true);
            }
            Control::Stop if self.stopping.is_none() => {
                // The request that called stop() is still running: workers stop as on
                // SIGTERM (finish what they serve), but get only the short mercy of an
                // immediate stop, so a busy server still ends within seconds.
                crate::log!(
                    "uwsgi.stop() called: stopping, requests in flight get {}s",
                    super::KILL_MERCY.as_secs()
                );
                self.signal_all(libc::SIGTERM);
                self.stopping = Some((Instant::now() + super::KILL_MERCY, true));
            }
            Control::Stop => {}
            &Control::Signal(n) => self.raise_signal(py, n),
            Control::SignalSource(text) => self.add_signal_source(text),
        }
    }
}
