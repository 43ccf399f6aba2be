//! Configuration reload on SIGHUP: what can change while clients stay
//! connected (ACL rules, the log level) is re-read from the same sources as at
//! start (file, then TERN_* variables). A file that does not load keeps the
//! running configuration and says why. Certificates and the password file are
//! reloaded by their own owners (transport::tls, auth).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Acl;
use crate::config::Settings;

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
    /// subscriptions too, through `revoke`) and the log level. Changes to anything
    /// else are logged as needing a restart.
    pub fn reload(&self, acl: &Arc<ArcSwap<Acl>>, revoke: impl Fn()) {
        let new = match Settings::load(self.config_file.as_deref()) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(%error, "config reload failed; keeping the running configuration");
                return;
            }
        };
        let mut applied = self.applied.lock();
        if new.acl != applied.acl {
            match Acl::new(&new.acl) {
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
        let mut rest_new = new;
        rest_new.acl = applied.acl.clone();
        rest_new.log = applied.log.clone();
        if rest_new != *applied {
            tracing::warn!("config file changes other than [[acl]] and log.level take effect at the next restart");
        }
    }
}
