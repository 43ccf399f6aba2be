//! `[[schema]]`: a payload schema bound to topic filters, declared in the
//! config file, and what happens to a message that does not match it.
//!
//! `file` is read relative to the config file's directory (absolute paths are
//! taken as they are); a relative path may not climb out of that directory
//! with `..`.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::topic::Filter;

/// The language a schema is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaKind {
    /// JSON Schema, drafts 4 to 2020-12 (the schema's `$schema` picks; 2020-12 if none).
    JsonSchema,
    /// An Avro schema (JSON); payloads are binary Avro datums, with or without
    /// the Confluent 5-byte header.
    Avro,
}

impl SchemaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaKind::JsonSchema => "json-schema",
            SchemaKind::Avro => "avro",
        }
    }
}

/// What an invalid message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnInvalid {
    /// Refused; the publisher is told where its protocol can say so.
    Reject,
    /// Routed unchanged to `$dlq/<topic>` with the reason in a user property.
    DeadLetter,
    /// Let through, counted and logged (rate-limited).
    Log,
}

impl OnInvalid {
    /// The `result` label of `tern_schema_messages_total` for an invalid message.
    pub fn as_str(self) -> &'static str {
        match self {
            OnInvalid::Reject => "rejected",
            OnInvalid::DeadLetter => "dead_lettered",
            OnInvalid::Log => "logged",
        }
    }
}

/// One `[[schema]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSettings {
    /// Unique among the schemas; in metrics, logs and replies.
    pub name: String,
    /// Topic filters whose messages are checked (no shared subscriptions).
    pub topics: Vec<String>,
    pub kind: SchemaKind,
    /// The schema file, relative to the config file's directory.
    pub file: PathBuf,
    pub on_invalid: OnInvalid,
}

/// A `[[schema]]` table that cannot be used, naming the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("schema {schema:?}: `{key}` {reason}")]
pub struct SchemaSettingsError {
    pub schema: String,
    pub key: &'static str,
    pub reason: String,
}

/// Whether `name` can name a schema: not empty, at most 128 characters,
/// letters, digits, `-`, `_` and `.` only (it goes into metrics labels and URLs).
pub fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The topic filters of a schema binding, checked.
pub fn parse_filters(topics: &[String]) -> Result<Vec<Filter>, String> {
    if topics.is_empty() {
        return Err("must name at least one topic filter".into());
    }
    topics
        .iter()
        .map(|topic| {
            let filter =
                Filter::parse(topic).map_err(|e| format!("{topic:?} is not a filter: {e}"))?;
            if filter.share_group().is_some() {
                return Err(format!("{topic:?} is a shared subscription"));
            }
            Ok(filter)
        })
        .collect()
}

impl SchemaSettings {
    pub(crate) fn error(
        &self,
        key: &'static str,
        reason: impl Into<String>,
    ) -> SchemaSettingsError {
        SchemaSettingsError {
            schema: self.name.clone(),
            key,
            reason: reason.into(),
        }
    }

    /// Checks the name and the filters (the file is read and compiled by
    /// [`super::compile_configured`]).
    pub fn check(&self) -> Result<Vec<Filter>, SchemaSettingsError> {
        if !valid_schema_name(&self.name) {
            return Err(self.error("name", "must be 1 to 128 letters, digits, '-', '_' or '.'"));
        }
        parse_filters(&self.topics).map_err(|reason| self.error("topics", reason))
    }

    /// Where `file` is: relative to `base` (the config file's directory; the
    /// working directory without a config file) unless absolute.
    pub fn resolved_file(&self, base: Option<&Path>) -> Result<PathBuf, SchemaSettingsError> {
        if self.file.is_absolute() {
            return Ok(self.file.clone());
        }
        if self
            .file
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(self.error(
                "file",
                format!(
                    "{:?} climbs out of the config file's directory with '..' (give an absolute path)",
                    self.file
                ),
            ));
        }
        Ok(match base {
            Some(base) => base.join(&self.file),
            None => self.file.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(file: &str) -> SchemaSettings {
        SchemaSettings {
            name: "t".into(),
            topics: vec!["a/+".into()],
            kind: SchemaKind::JsonSchema,
            file: PathBuf::from(file),
            on_invalid: OnInvalid::Reject,
        }
    }

    #[test]
    fn a_relative_file_is_read_beside_the_config_file() {
        let path = schema("schemas/t.json").resolved_file(Some(Path::new("/etc/tern")));
        assert_eq!(path, Ok(PathBuf::from("/etc/tern/schemas/t.json")));
        let path = schema("/srv/t.json").resolved_file(Some(Path::new("/etc/tern")));
        assert_eq!(path, Ok(PathBuf::from("/srv/t.json")));
    }

    #[test]
    fn a_relative_file_that_climbs_out_is_refused_naming_the_key() {
        let error = schema("../t.json").resolved_file(Some(Path::new("/etc/tern")));
        assert!(error.is_err_and(|e| e.key == "file"));
    }

    #[test]
    fn names_and_filters_are_checked() {
        let mut bad = schema("t.json");
        bad.name = "a b".into();
        assert!(bad.check().is_err_and(|e| e.key == "name"));
        let mut bad = schema("t.json");
        bad.topics = vec!["a/#/b".into()];
        assert!(bad.check().is_err_and(|e| e.key == "topics"));
        let mut bad = schema("t.json");
        bad.topics = vec![];
        assert!(bad.check().is_err_and(|e| e.key == "topics"));
        assert!(schema("t.json").check().is_ok());
    }
}
