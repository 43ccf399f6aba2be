//! Configuration reload on SIGHUP: what can change while clients stay
//! connected (ACL rules, the log level, `[limits]`, the listeners'
//! `max_connections` and the `[[schema]]` tables with their files) is re-read from the same sources as at start (file, then
//! TERN_* variables). A file that does not load keeps the running configuration
//! and says why. Certificates and the password file are reloaded by their own
//! owners (transport::tls, auth).
//!
//! New limits reach: session queues (messages, bytes, overflow policy),
//! connection caps and the buffer budget (`max_buffered_bytes`) at once;
//! everything a client is told or holds per connection (packet size, in-flight
//! window, aliases, rate, subscriptions cap, frame timeout) from its next
//! connection on.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Acl;
use crate::config::{Limits, Settings};
use crate::core::router::Router;
use crate::transport::cap::ListenerCaps;

/// The running broker's parts a reload changes.
#[derive(Debug)]
pub struct LiveConfig {
    pub acl: Arc<ArcSwap<Acl>>,
    pub limits: Arc<ArcSwap<Limits>>,
    pub caps: Arc<ListenerCaps>,
    pub router: Arc<Router>,
    pub buffer_budget: Arc<crate::adapter::budget::BufferBudget>,
}

/// Applies a new log filter (`info`, `tern=debug`); an error names what is wrong.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Re-reads the configuration and applies what may change live.
pub struct Reloader {
    config_file: Option<PathBuf>,
    set_log_level: SetLogLevel,
    /// What was applied last, to log only real changes.
    applied: parking_lot::Mutex<Settings>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// `running` is the configuration the broker started with.
    pub fn new(
        config_file: Option<PathBuf>,
        running: Settings,
        set_log_level: SetLogLevel,
    ) -> Reloader {
        Reloader {
            config_file,
            set_log_level,
            applied: parking_lot::Mutex::new(running),
        }
    }

    /// Loads the configuration again and applies the ACL rules (to existing
    /// subscriptions too, through `revoke`, which removes those a deny rule now
    /// covers and replaces the exceptions of the others), the log level and the limits.
    /// Changes to anything else are logged as needing a restart.
    pub fn reload(&self, live: &LiveConfig, revoke: impl Fn()) {
        let acl = &live.acl;
        let new = match Settings::load(self.config_file.as_deref()) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(%error, "config reload failed; keeping the running configuration");
                return;
            }
        };
        let mut applied = self.applied.lock();
        if new.acl != applied.acl {
            match new.compiled_acl() {
                Ok(rules) => {
                    tracing::info!(rules = rules.len(), "ACL rules reloaded");
                    acl.store(Arc::new(rules));
                    applied.acl = new.acl.clone();
                    revoke();
                }
                Err(error) => {
                    tracing::error!(%error, "ACL reload failed; keeping the running rules")
                }
            }
        }
        if new.log.level != applied.log.level {
            match (self.set_log_level)(&new.log.level) {
                Ok(()) => {
                    tracing::info!(level = %new.log.level, "log level changed");
                    applied.log.level = new.log.level.clone();
                }
                Err(error) => tracing::error!(%error, "log level not changed"),
            }
        }
        let mut with_old_limits = new.clone();
        with_old_limits.take_live_limits(&applied);
        if with_old_limits != new {
            apply_limits(&new, live);
            applied.take_live_limits(&new);
        }
        // Always: a schema file may have changed while its table did not.
        if apply_schemas(&new, live) {
            applied.schema = new.schema.clone();
        }
        let mut rest_new = new;
        rest_new.acl = applied.acl.clone();
        rest_new.log = applied.log.clone();
        rest_new.schema = applied.schema.clone();
        if rest_new != *applied {
            tracing::warn!("config file changes other than [[acl]], log.level, [limits], [[schema]] and listener max_connections take effect at the next restart");
        }
    }
}

/// Reads and compiles the `[[schema]]` tables and their files again and puts
/// them in force; false (the running schemas kept) when one does not compile.
fn apply_schemas(new: &Settings, live: &LiveConfig) -> bool {
    match crate::core::schema::compile_configured(&new.schema) {
        Ok(compiled) => {
            let count = compiled.len();
            live.router.schemas().set_configured(compiled);
            tracing::info!(schemas = count, "schemas reloaded");
            true
        }
        Err(error) => {
            tracing::error!(%error, "schema reload failed; keeping the running schemas");
            false
        }
    }
}

/// Puts `new`'s limits in place (they were validated when the file was loaded).
fn apply_limits(new: &Settings, live: &LiveConfig) {
    let limits = &new.limits;
    live.limits.store(Arc::new(limits.clone()));
    live.router.set_queue_limits(limits.queue_limits());
    live.router.set_retained_limits(limits.retained_limits());
    live.router
        .set_queue_max_messages(limits.queue_max_messages);
    live.router
        .schemas()
        .set_check_utf8(limits.check_utf8_payloads);
    live.buffer_budget.set_limit(limits.max_buffered_bytes);
    live.caps.set_limits(limits.max_connections, |name| {
        new.listener_max_connections(name)
    });
    tracing::info!(
        max_connections = limits.max_connections,
        max_queued_messages = limits.max_queued_messages,
        max_queued_bytes = limits.max_queued_bytes,
        queue_overflow = ?limits.queue_overflow,
        max_subscriptions_per_client = limits.max_subscriptions_per_client,
        max_publish_rate = limits.max_publish_rate,
        max_packet_size = limits.max_packet_size,
        max_buffered_bytes = limits.max_buffered_bytes,
        "limits reloaded (queues and connection caps now; per-connection limits for new connections)"
    );
}
