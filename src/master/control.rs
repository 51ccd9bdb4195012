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
                crate::log!("uwsgi.stop() called: stopping now");
                self.signal_all(libc::SIGINT);
                self.stopping = Some((Instant::now() + super::KILL_MERCY, false));
            }
            Control::Stop => {}
            &Control::Signal(n) => self.raise_signal(py, n),
            Control::SignalSource(text) => self.add_signal_source(text),
        }
    }
}
