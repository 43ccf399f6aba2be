//! Streams created and deleted through the admin API. A created stream's
//! settings are kept in the store (as JSON) and declared again at start; a
//! stream of the config file with the same name wins (the stored declaration
//! is dropped, with a warning). Only created streams can be deleted: the
//! config file's are the operator's to remove there.

use std::sync::Arc;

use super::{StreamError, StreamSettings, Streams};
use crate::store::{StoreOp, StreamChange, Ticket};

impl Streams {
    /// Creates a stream and keeps its declaration; the ticket to wait for
    /// before saying it is kept.
    pub fn create(&self, settings: &StreamSettings) -> Result<Ticket, StreamError> {
        let json = serde_json::to_vec(settings).map_err(|e| StreamError::Invalid(e.to_string()))?;
        self.declare(settings)?;
        self.created.lock().insert(settings.name.clone());
        let Some(store) = &self.store else {
            return Ok(0);
        };
        Ok(store.submit([StoreOp::PutStreamDeclaration {
            stream: settings.name.clone(),
            settings: json,
        }]))
    }

    /// Deletes a created stream: its readers end, its messages, offsets and
    /// consumers are removed from the store. The ticket of the removal.
    pub fn delete(self: &Arc<Self>, name: &str) -> Result<Ticket, StreamError> {
        if self.log(name).is_none() {
            return Err(StreamError::UnknownStream(name.to_string()));
        }
        if !self.created.lock().remove(name) {
            return Err(StreamError::Declared(name.to_string()));
        }
        self.forget(name);
        let Some(store) = &self.store else {
            return Ok(0);
        };
        Ok(store.submit([StoreOp::DeleteStream {
            stream: name.to_string(),
        }]))
    }

    /// Removes stream `name` from this node (its readers end); the store is
    /// not told (see [`Streams::delete`]).
    fn forget(&self, name: &str) {
        let Some(log) = ({
            let mut logs = self.logs.write();
            let at = logs.iter().position(|l| &*l.name == name);
            at.map(|at| logs.remove(at))
        }) else {
            return;
        };
        let mut gone = Vec::new();
        self.readers.lock().retain(|_, (l, reader)| {
            let keep = !Arc::ptr_eq(l, &log);
            if !keep {
                gone.push(Arc::clone(reader));
            }
            keep
        });
        for reader in gone {
            reader.cancel();
        }
        log.state.lock().live.clear();
        self.groups
            .lock()
            .retain(|(stream, _), _| **stream != *name);
        self.consumers
            .lock()
            .retain(|(stream, _), _| **stream != *name);
        self.restored.lock().remove(name);
    }

    /// Applies a stream another node created or deleted through its admin
    /// API (`Store::stream_changes`): declared or removed here too. A stream
    /// of this node's config file stays as declared there.
    pub(super) fn apply_change(&self, change: StreamChange) {
        match change {
            StreamChange::Created { stream, settings } => {
                if self.log(&stream).is_some() {
                    tracing::debug!(stream = %stream, "a stream another node created is declared here already");
                    return;
                }
                let declared = serde_json::from_slice::<StreamSettings>(&settings)
                    .map_err(|e| StreamError::Invalid(e.to_string()))
                    .and_then(|settings| self.declare(&settings));
                match declared {
                    Ok(()) => {
                        tracing::info!(stream = %stream, "stream created by another node declared here");
                        self.created.lock().insert(stream);
                    }
                    Err(e) => {
                        tracing::warn!(stream = %stream, error = %e, "stream created by another node refused here")
                    }
                }
            }
            StreamChange::Deleted { stream } => {
                if self.created.lock().remove(&stream) {
                    tracing::info!(stream = %stream, "stream deleted by another node removed here");
                    self.forget(&stream);
                }
            }
        }
    }

    /// Declares again the streams created through the admin API (at start,
    /// after the config file's).
    pub fn restore_declarations(&self, declarations: Vec<(String, Vec<u8>)>) {
        for (name, json) in declarations {
            let settings = match serde_json::from_slice::<StreamSettings>(&json) {
                Ok(settings) => settings,
                Err(e) => {
                    tracing::warn!(stream = %name, error = %e, "stored stream declaration unreadable; skipped");
                    continue;
                }
            };
            if self.log(&name).is_some() {
                tracing::warn!(stream = %name, "a stream created through the admin API is also in the config file: the config file's wins, the stored declaration is dropped");
                if let Some(store) = &self.store {
                    store.submit([StoreOp::DeleteStreamDeclaration { stream: name }]);
                }
                continue;
            }
            match self.declare(&settings) {
                Ok(()) => {
                    self.created.lock().insert(name);
                }
                Err(e) => {
                    tracing::warn!(stream = %name, error = %e, "stored stream declaration refused; skipped")
                }
            }
        }
    }
}
