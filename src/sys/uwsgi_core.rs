//! The shared table of the `uwsgi` module's core (`offload::core::IdSlot`).

// SAFETY: atomics only (pid, slot, times, counters); all-zero is "this worker id never started".
unsafe impl super::shm::Shareable for crate::offload::core::IdSlot {}
