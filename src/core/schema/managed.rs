//! Schemas managed through the admin API: each add is a new version (the
//! last one is in force), every version is kept in the store as one record
//! per schema (the store holds its bytes; this file converts), restored at start.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::settings::{parse_filters, valid_schema_name, OnInvalid, SchemaKind};
use super::{BoundSchema, SchemaCounters, SchemaSource, Schemas, Validator};
use crate::core::commit::Commit;
use crate::store::StoreOp;

/// Versions one schema may keep; the oldest goes when a new one is added past it.
pub const MAX_VERSIONS: usize = 100;

/// One version of an admin API schema, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub version: u32,
    pub kind: SchemaKind,
    pub topics: Vec<String>,
    pub on_invalid: OnInvalid,
    /// The schema document as given.
    pub definition: String,
    /// When it was added (Unix ms).
    pub created_ms: u64,
}

/// What `POST /api/schemas/<name>/versions` gives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    pub kind: SchemaKind,
    pub topics: Vec<String>,
    pub on_invalid: OnInvalid,
    /// The schema document: a JSON object (or a string holding it).
    pub definition: serde_json::Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManagedSchemaError {
    #[error("no schema {0:?}")]
    Unknown(String),
    #[error("schema {0:?} is declared in the config file; change it there")]
    Configured(String),
    #[error("schema {0:?} has no version {1}")]
    UnknownVersion(String, u32),
    #[error("invalid schema: {0}")]
    Invalid(String),
}

impl SchemaVersion {
    pub(super) fn bind(
        &self,
        name: &str,
        counters: Arc<SchemaCounters>,
    ) -> Result<BoundSchema, String> {
        Ok(BoundSchema {
            name: name.to_string(),
            source: SchemaSource::Api,
            version: self.version,
            kind: self.kind,
            on_invalid: self.on_invalid,
            filters: parse_filters(&self.topics)?,
            validator: Validator::compile(self.kind, &self.definition)?,
            counters,
        })
    }
}

impl Schemas {
    /// Adds a version of admin API schema `name` (compiled first: a schema
    /// that does not compile is refused) and puts it in force. Returns its
    /// number and the commit of its record.
    pub fn add_version(
        &self,
        name: &str,
        new: NewVersion,
    ) -> Result<(u32, Commit), ManagedSchemaError> {
        if !valid_schema_name(name) {
            return Err(ManagedSchemaError::Invalid(
                "a name is 1 to 128 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if self.configured.lock().iter().any(|b| b.name == name) {
            return Err(ManagedSchemaError::Configured(name.to_string()));
        }
        let definition = match new.definition {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        };
        parse_filters(&new.topics)
            .map_err(|e| ManagedSchemaError::Invalid(format!("topics: {e}")))?;
        Validator::compile(new.kind, &definition)
            .map_err(|e| ManagedSchemaError::Invalid(format!("definition: {e}")))?;
        let (version, commit) = {
            let mut managed = self.managed.lock();
            let versions = managed.entry(name.to_string()).or_default();
            let version = versions.last().map_or(1, |v| v.version.saturating_add(1));
            versions.push(SchemaVersion {
                version,
                kind: new.kind,
                topics: new.topics,
                on_invalid: new.on_invalid,
                definition,
                created_ms: crate::store::record::unix_ms_now(),
            });
            if versions.len() > MAX_VERSIONS {
                versions.remove(0);
            }
            (version, self.save(name, versions))
        };
        self.publish_bindings();
        Ok((version, commit))
    }

    /// Removes admin API schema `name` with all its versions.
    pub fn delete(&self, name: &str) -> Result<Commit, ManagedSchemaError> {
        let removed = self.managed.lock().remove(name);
        if removed.is_none() {
            return Err(if self.configured.lock().iter().any(|b| b.name == name) {
                ManagedSchemaError::Configured(name.to_string())
            } else {
                ManagedSchemaError::Unknown(name.to_string())
            });
        }
        let commit = match &self.store {
            Some(store) => Commit::of_ticket(store.submit([StoreOp::DeleteSchema {
                name: name.to_string(),
            }])),
            None => Commit::NONE,
        };
        self.publish_bindings();
        Ok(commit)
    }

    /// Every version of admin API schema `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<SchemaVersion>, ManagedSchemaError> {
        self.managed
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| ManagedSchemaError::Unknown(name.to_string()))
    }

    /// One version of admin API schema `name`.
    pub fn version(&self, name: &str, version: u32) -> Result<SchemaVersion, ManagedSchemaError> {
        self.versions(name)?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| ManagedSchemaError::UnknownVersion(name.to_string(), version))
    }

    /// Brings back the admin API schemas from their stored records (at start,
    /// before serving); a record that cannot be read is skipped with an error.
    pub fn restore(&self, records: &[(String, Vec<u8>)]) -> usize {
        let mut managed = self.managed.lock();
        for (name, bytes) in records {
            match postcard::from_bytes::<Vec<SchemaVersion>>(bytes) {
                Ok(versions) if !versions.is_empty() => {
                    managed.insert(name.clone(), versions);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(schema = %name, error = %e, "stored schema cannot be read; skipped")
                }
            }
        }
        let restored = managed.len();
        drop(managed);
        self.publish_bindings();
        restored
    }

    fn save(&self, name: &str, versions: &[SchemaVersion]) -> Commit {
        let Some(store) = &self.store else {
            return Commit::NONE;
        };
        match postcard::to_allocvec(versions) {
            Ok(record) => Commit::of_ticket(store.submit([StoreOp::PutSchema {
                name: name.to_string(),
                record,
            }])),
            Err(e) => {
                tracing::error!(schema = %name, error = %e, "schema record cannot be encoded; not stored");
                Commit::NONE
            }
        }
    }
}
