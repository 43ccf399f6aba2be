//! The auth concern's own settings: `[auth]` and the `[[acl]]` rules
//! (the broker's settings assemble and re-export them; auth reads no config).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `user:$argon2id$…` lines made with `tern passwd`. Unset: nobody can log in with
    /// a password, and a username sent without one is not trusted (the client is anonymous).
    pub password_file: Option<PathBuf>,
    /// A TOML file of more `[[acl]]` rules, appended to those in the config file.
    pub acl_file: Option<PathBuf>,
    /// A session belongs to the user that created it: another user (or anonymous)
    /// may not resume it, take over its connection or discard it. Off only for
    /// deployments where every client is anonymous or client ids are trusted.
    pub session_owner_check: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            password_file: None,
            acl_file: None,
            session_owner_check: true,
        }
    }
}

/// One `[[acl]]` rule: who (exactly one of `user`, `client_id`, `anonymous`, `all`),
/// `allow` or `deny`, what (`publish`, `subscribe`, `both`) and on which topic filter
/// (`%u` is the username, `%c` the client id: `devices/%c/#`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclRule {
    pub user: Option<String>,
    pub client_id: Option<String>,
    /// Applies to clients that did not log in.
    pub anonymous: bool,
    /// Applies to every client.
    pub all: bool,
    pub allow: Option<AclAccess>,
    pub deny: Option<AclAccess>,
    pub topic: String,
}

/// What an ACL rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAccess {
    Publish,
    Subscribe,
    Both,
}
