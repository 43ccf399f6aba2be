//! The store front's calls for durable streams, passed to the backend.

use tokio::sync::mpsc::Receiver;

use super::record::{StreamChange, StreamRecord, StreamState};
use super::{Store, StoreError, StreamLimits};

impl Store {
    /// See [`Backend::read_stream`].
    pub fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, StreamRecord)>, StoreError> {
        self.backend.read_stream(stream, from, max)
    }

    /// See [`Backend::find_stream_time`].
    pub fn find_stream_time(&self, stream: &str, time_ms: u64) -> Result<Option<u64>, StoreError> {
        self.backend.find_stream_time(stream, time_ms)
    }

    /// See [`Backend::stream_state`] (blocks: call it off the async runtime).
    pub fn stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        self.backend.stream_state(stream)
    }

    /// See [`Backend::configure_stream`].
    pub fn configure_stream(&self, stream: &str, limits: StreamLimits) {
        self.backend.configure_stream(stream, limits);
    }

    /// See [`Backend::stream_changes`].
    pub fn stream_changes(&self) -> Option<Receiver<StreamChange>> {
        self.backend.stream_changes()
    }
}
