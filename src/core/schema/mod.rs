//! Payload schemas bound to topic filters, checked on publish before a
//! message is routed or stored (`Router::publish_checked`).
//!
//! - this file: [`Schemas`], the bindings in force and the check of one message;
//! - `settings.rs`: `[[schema]]` tables, [`OnInvalid`], [`SchemaKind`];
//! - `validator.rs`: one compiled schema (JSON Schema, Avro) and its violations;
//! - `managed.rs`: schemas added through the admin API, their versions, and
//!   their records in the store.
//!
//! Bindings are tried in order, configured ones first (in file order), then
//! those of the admin API (by name); the first whose filters match the topic
//! decides, the others are not consulted. A topic no binding matches is not
//! checked and costs one scan of the bindings (none: one atomic load).

mod managed;
pub mod settings;
mod validator;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::core::message::Message;
use crate::core::topic::Filter;
use crate::store::Store;

pub use managed::{ManagedSchemaError, NewVersion, SchemaVersion};
pub use settings::{OnInvalid, SchemaKind, SchemaSettings, SchemaSettingsError};
pub use validator::{Validator, Violation};

/// The user property (MQTT) / header (STOMP) a dead-lettered message carries
/// the reason in.
pub const SCHEMA_ERROR_PROPERTY: &str = "tern-schema-error";

/// Where a message that failed a `dead-letter` schema goes: `$dlq/<topic>`.
pub const DEAD_LETTER_PREFIX: &str = "$dlq/";

/// Where a schema comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaSource {
    /// A `[[schema]]` table (reloaded on SIGHUP).
    Config,
    /// The admin API (kept in the store, in versions).
    Api,
}

impl SchemaSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaSource::Config => "config",
            SchemaSource::Api => "api",
        }
    }
}

/// Messages checked against one schema, by outcome; kept across reloads.
#[derive(Debug, Default)]
pub struct SchemaCounters {
    pub valid: AtomicU64,
    pub rejected: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub logged: AtomicU64,
}

impl SchemaCounters {
    fn invalid(&self, action: OnInvalid) -> &AtomicU64 {
        match action {
            OnInvalid::Reject => &self.rejected,
            OnInvalid::DeadLetter => &self.dead_lettered,
            OnInvalid::Log => &self.logged,
        }
    }
}

/// One schema in force: compiled, bound to its filters.
#[derive(Debug)]
pub struct BoundSchema {
    pub name: String,
    pub source: SchemaSource,
    /// The version in force (admin API schemas; 0 for configured ones).
    pub version: u32,
    pub kind: SchemaKind,
    pub on_invalid: OnInvalid,
    pub filters: Vec<Filter>,
    validator: Validator,
    counters: Arc<SchemaCounters>,
}

impl BoundSchema {
    fn matches(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| f.matches(topic))
    }
}

/// A `[[schema]]` table compiled, not yet in force.
#[derive(Debug)]
pub struct CompiledSchema {
    settings: SchemaSettings,
    filters: Vec<Filter>,
    validator: Validator,
}

/// Reads and compiles every `[[schema]]` table (files already resolved by the
/// config loader); names must be unique. The error names the schema and key.
pub fn compile_configured(
    tables: &[SchemaSettings],
) -> Result<Vec<CompiledSchema>, SchemaSettingsError> {
    let mut names = std::collections::HashSet::new();
    let mut compiled = Vec::with_capacity(tables.len());
    for table in tables {
        let filters = table.check()?;
        if !names.insert(table.name.as_str()) {
            return Err(table.error("name", "is declared twice"));
        }
        let text = std::fs::read_to_string(&table.file).map_err(|e| {
            table.error("file", format!("cannot read {}: {e}", table.file.display()))
        })?;
        let validator = Validator::compile(table.kind, &text)
            .map_err(|reason| table.error("file", format!("{}: {reason}", table.file.display())))?;
        compiled.push(CompiledSchema {
            settings: table.clone(),
            filters,
            validator,
        });
    }
    Ok(compiled)
}

/// A message that failed its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub schema: String,
    pub on_invalid: OnInvalid,
    pub violations: Vec<Violation>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "payload does not match schema {}", self.schema)?;
        if let Some(first) = self.violations.first() {
            write!(f, ": {first}")?;
        }
        if self.violations.len() > 1 {
            write!(f, " (and {} more)", self.violations.len() - 1)?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// The outcome of [`Schemas::check`].
#[derive(Debug)]
pub enum Checked {
    /// No schema is bound to the topic.
    Unchecked,
    /// Valid; the JSON value the payload was parsed into when the schema is
    /// JSON Schema, so whoever reads the payload next need not parse it again.
    Valid(Option<serde_json::Value>),
    Invalid(Invalid),
}

/// A counts-only gate for logging invalid messages: at most one line per
/// interval, saying how many were not logged.
#[derive(Debug, Default)]
struct LogGate {
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

const LOG_INTERVAL_MS: u64 = 10_000;

impl LogGate {
    /// Some(suppressed since the last line) when a line may be written now.
    fn admit(&self) -> Option<u64> {
        let now = crate::store::record::unix_ms_now();
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + LOG_INTERVAL_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The schemas in force and the payload checks of a publish.
#[derive(Debug)]
pub struct Schemas {
    /// Every binding in the order tried; replaced whole on a change, read
    /// without a lock on every publish.
    bound: ArcSwap<Vec<Arc<BoundSchema>>>,
    configured: Mutex<Vec<Arc<BoundSchema>>>,
    /// Admin API schemas, every version kept (the last in force).
    managed: Mutex<BTreeMap<String, Vec<SchemaVersion>>>,
    /// By schema name, so a reload or a new version keeps the counts.
    counters: Mutex<HashMap<String, Arc<SchemaCounters>>>,
    /// `limits.check_utf8_payloads`: a payload declared UTF-8 must be.
    check_utf8: AtomicBool,
    /// Payloads refused because they were declared UTF-8 and were not.
    pub utf8_refused: AtomicU64,
    store: Option<Arc<Store>>,
    log_gate: LogGate,
}

impl Schemas {
    pub fn new(store: Option<Arc<Store>>) -> Schemas {
        Schemas {
            bound: ArcSwap::from_pointee(Vec::new()),
            configured: Mutex::new(Vec::new()),
            managed: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(HashMap::new()),
            check_utf8: AtomicBool::new(true),
            utf8_refused: AtomicU64::new(0),
            store,
            log_gate: LogGate::default(),
        }
    }

    /// Whether a payload declared UTF-8 is checked (config and its reload).
    pub fn set_check_utf8(&self, on: bool) {
        self.check_utf8.store(on, Ordering::Relaxed);
    }

    /// True when `message` says its payload is UTF-8 text, it is not, and
    /// `limits.check_utf8_payloads` is on.
    /// Counted.
    pub fn payload_not_utf8(&self, message: &Message) -> bool {
        let refused = message.properties().payload_is_utf8
            && self.check_utf8.load(Ordering::Relaxed)
            && std::str::from_utf8(&message.payload).is_err();
        if refused {
            self.utf8_refused.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Puts the `[[schema]]` tables in force (at start and on reload),
    /// replacing the configured ones; admin API schemas stay.
    pub fn set_configured(&self, compiled: Vec<CompiledSchema>) {
        let bound = compiled
            .into_iter()
            .map(|c| {
                Arc::new(BoundSchema {
                    counters: self.counters_of(&c.settings.name),
                    name: c.settings.name,
                    source: SchemaSource::Config,
                    version: 0,
                    kind: c.settings.kind,
                    on_invalid: c.settings.on_invalid,
                    filters: c.filters,
                    validator: c.validator,
                })
            })
            .collect();
        *self.configured.lock() = bound;
        self.publish_bindings();
    }

    fn counters_of(&self, name: &str) -> Arc<SchemaCounters> {
        Arc::clone(self.counters.lock().entry(name.to_string()).or_default())
    }

    /// Rebuilds the list the publish path reads: configured first, then managed.
    fn publish_bindings(&self) {
        let mut all: Vec<Arc<BoundSchema>> = self.configured.lock().clone();
        let configured: std::collections::HashSet<String> =
            all.iter().map(|b| b.name.clone()).collect();
        for (name, versions) in self.managed.lock().iter() {
            if configured.contains(name) {
                continue;
            }
            let Some(latest) = versions.last() else {
                continue;
            };
            match latest.bind(name, self.counters_of(name)) {
                Ok(bound) => all.push(Arc::new(bound)),
                Err(e) => {
                    tracing::error!(schema = %name, error = %e, "stored schema does not compile; not in force")
                }
            }
        }
        self.bound.store(Arc::new(all));
    }

    /// The schemas in force, in the order they are tried.
    pub fn bound(&self) -> Arc<Vec<Arc<BoundSchema>>> {
        self.bound.load_full()
    }

    /// The counts of schema `name` (zero if it never checked a message).
    pub fn counters(&self, name: &str) -> Arc<SchemaCounters> {
        self.counters_of(name)
    }

    /// Every schema name with its counts, for the metrics.
    pub fn all_counters(&self) -> Vec<(String, Arc<SchemaCounters>)> {
        let mut all: Vec<_> = self
            .counters
            .lock()
            .iter()
            .map(|(name, c)| (name.clone(), Arc::clone(c)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Checks `message` against the first schema bound to its topic, counts
    /// the outcome and logs invalid ones (rate-limited).
    pub fn check(&self, message: &Message) -> Checked {
        let bound = self.bound.load();
        if bound.is_empty() {
            return Checked::Unchecked;
        }
        let Some(schema) = bound.iter().find(|b| b.matches(&message.topic)) else {
            return Checked::Unchecked;
        };
        match schema.validator.check(&message.payload) {
            Ok(parsed) => {
                schema.counters.valid.fetch_add(1, Ordering::Relaxed);
                Checked::Valid(parsed)
            }
            Err(violations) => {
                let action = schema.on_invalid;
                schema
                    .counters
                    .invalid(action)
                    .fetch_add(1, Ordering::Relaxed);
                let invalid = Invalid {
                    schema: schema.name.clone(),
                    on_invalid: action,
                    violations,
                };
                if let Some(suppressed) = self.log_gate.admit() {
                    tracing::warn!(topic = %message.topic, schema = %schema.name, action = action.as_str(), error = %invalid, suppressed, "message failed its schema");
                }
                Checked::Invalid(invalid)
            }
        }
    }
}

/// `message` on its way to `$dlq/<topic>`: payload and flags unchanged, the
/// reason added as user property [`SCHEMA_ERROR_PROPERTY`].
pub fn dead_letter(message: &Message, invalid: &Invalid) -> Message {
    let mut letter = message.clone();
    letter.topic = Arc::from(format!("{DEAD_LETTER_PREFIX}{}", message.topic));
    let mut properties = message.properties().clone();
    properties
        .user_properties
        .push((SCHEMA_ERROR_PROPERTY.to_string(), invalid.to_string()));
    letter.properties = properties.shared();
    letter
}

#[cfg(test)]
mod tests;
