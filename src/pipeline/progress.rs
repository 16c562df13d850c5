//! Where the stream stands: the positions the reader, the checkpoint writer and the status
//! task share, read by the control plane.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::Lsn;

/// Positions shared between the reader, the checkpoint writer and the status task.
#[derive(Debug, Default)]
pub struct Progress {
    /// Highest WAL position received from the server (`write` in status updates).
    pub received: AtomicU64,
    /// Highest LSN persisted in `dbmazz_checkpoints` and safe to confirm (`flush`).
    pub confirmed: AtomicU64,
    /// Wakes the status task: PostgreSQL asked for a reply, or `confirmed` moved.
    pub status_now: Notify,
}

impl Progress {
    /// Records a received WAL position (it only moves forward).
    pub fn note_received(&self, lsn: Lsn) {
        self.received.fetch_max(lsn.0, Ordering::Relaxed);
    }
}
