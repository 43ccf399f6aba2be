//! Who a client is, and what it may do. Adapters call this; it knows no protocol.
//!
//! - `password.rs`: the password file (argon2 PHC hashes) and `tern passwd`'s edits.
//! - `acl.rs`: `[[acl]]` rules deciding publish / subscribe / read per identity,
//!   and the exceptions a granted subscription gets from the deny rules it
//!   overlaps (tested in `acl_tests.rs` and `acl_subscribe_tests.rs`).
//! - `settings.rs`: the `[auth]` section and the `[[acl]]` rule types (the
//!   config assembles them; auth never reads the config).
//! - this file: [`Authenticator`], one decision per login from the password file,
//!   the listener's `allow_anonymous` and a TLS client certificate's name.
//!
//! How adapters answer an [`AuthError`] (in their one error-to-reply place):
//!
//! | error            | MQTT 5.0 CONNACK                 | MQTT 3.x CONNACK            | STOMP        |
//! |------------------|----------------------------------|-----------------------------|--------------|
//! | `BadCredentials` | 0x86 bad user name or password   | 0x04 bad user name/password | ERROR frame  |
//! | `NotAuthorized`  | 0x87 not authorized              | 0x05 not authorized         | ERROR frame  |

pub mod acl;
#[cfg(test)]
mod acl_subscribe_tests;
#[cfg(test)]
mod acl_tests;
pub mod password;
pub mod settings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

pub use acl::{Acl, AclError, Action, Identity};
pub use password::{PasswordFile, PasswordFileError};
pub use settings::{AclAccess, AclRule, AuthSettings};

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, a password without a username, or a
    /// username that contradicts the client certificate.
    #[error("bad username or password")]
    BadCredentials,
    /// No credentials, and this listener does not allow anonymous clients.
    #[error("not authorized: anonymous clients are not allowed on this listener")]
    NotAuthorized,
}

/// What a client presented when it connected.
#[derive(Debug, Clone, Default)]
pub struct Login {
    /// MQTT username / STOMP `login`.
    pub username: Option<String>,
    /// MQTT password / STOMP `passcode`; never logged.
    pub password: Option<Vec<u8>>,
    /// The name taken from a verified TLS client certificate (`cert_username`);
    /// such a client needs no password.
    pub cert_username: Option<String>,
    /// The listener's policy ([`crate::adapter::Peer::anonymous_allowed`]).
    pub anonymous_allowed: bool,
    /// For the log only.
    pub peer: Option<SocketAddr>,
}

/// How a client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Anonymous,
    Password,
    Certificate,
}

/// An accepted login; `username` is None for anonymous clients (ACL `anonymous = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: Option<Arc<str>>,
    pub method: AuthMethod,
}

impl Principal {
    /// The ACL identity of this principal connected with `client_id`.
    pub fn identity<'a>(&'a self, client_id: &'a str) -> Identity<'a> {
        Identity {
            username: self.username.as_deref(),
            client_id,
        }
    }
}

/// Decides logins. Shared by every listener; the password file can be re-read
/// (SIGHUP) while the broker runs.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// Where `reload` re-reads the users from; None when built from memory.
    password_path: Option<PathBuf>,
    /// None: no password file, so nobody logs in with a password.
    passwords: ArcSwapOption<PasswordFile>,
}

impl Authenticator {
    /// An authenticator over `passwords` (None: no password logins); `reload` does nothing.
    pub fn new(passwords: Option<PasswordFile>) -> Authenticator {
        Authenticator {
            password_path: None,
            passwords: ArcSwapOption::from(passwords.map(Arc::new)),
        }
    }

    /// Loads `auth.password_file` if set; a missing or bad file is an error naming it.
    pub fn from_settings(auth: &AuthSettings) -> Result<Authenticator, PasswordFileError> {
        let passwords = match &auth.password_file {
            Some(path) => Some(Arc::new(PasswordFile::load(path)?)),
            None => None,
        };
        Ok(Authenticator {
            password_path: auth.password_file.clone(),
            passwords: ArcSwapOption::from(passwords),
        })
    }

    /// Re-reads the password file; on error the users loaded before stay in force.
    pub fn reload(&self) -> Result<(), PasswordFileError> {
        let Some(path) = &self.password_path else {
            return Ok(());
        };
        match PasswordFile::load(path) {
            Ok(file) => {
                tracing::info!(path = %path.display(), users = file.len(), "password file reloaded");
                self.passwords.store(Some(Arc::new(file)));
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "password file reload failed; keeping the users loaded before");
                Err(error)
            }
        }
    }

    pub fn has_password_file(&self) -> bool {
        self.passwords.load().is_some()
    }

    /// Decides a login. May spend an Argon2 hash (tens of milliseconds): call it
    /// from a blocking context, or use [`Authenticator::authenticate_async`].
    ///
    /// 1. A certificate name: that is the user (no password needed); a different
    ///    username is refused.
    /// 2. A username with a password file: the password must verify.
    /// 3. A username without a password file: nothing can verify it, so the client
    ///    is treated as anonymous (and refused where anonymous clients are).
    /// 4. No username: anonymous, if the listener allows it. A password without a
    ///    username is refused.
    pub fn authenticate(&self, login: &Login) -> Result<Principal, AuthError> {
        let result = self.decide(login);
        if let Err(error) = &result {
            tracing::warn!(
                username = login.username.as_deref().unwrap_or(""),
                cert_username = login.cert_username.as_deref().unwrap_or(""),
                peer = ?login.peer,
                %error,
                "login refused"
            );
        }
        result
    }

    /// [`Authenticator::authenticate`] on the blocking thread pool when a password
    /// hash must be verified, so the hash does not stall other connections. Other
    /// logins (anonymous, certificate, no password file) are decided in place: a
    /// burst of them would otherwise start a blocking thread each.
    pub async fn authenticate_async(
        self: &Arc<Self>,
        login: Login,
    ) -> Result<Principal, AuthError> {
        if !self.needs_hash(&login) {
            return self.authenticate(&login);
        }
        let this = Arc::clone(self);
        match tokio::task::spawn_blocking(move || this.authenticate(&login)).await {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(%error, "authentication task failed");
                Err(AuthError::NotAuthorized)
            }
        }
    }

    /// True when deciding `login` verifies a password hash (see `decide`).
    fn needs_hash(&self, login: &Login) -> bool {
        login.cert_username.is_none() && login.username.is_some() && self.has_password_file()
    }

    fn decide(&self, login: &Login) -> Result<Principal, AuthError> {
        if let Some(cert_name) = &login.cert_username {
            if login
                .username
                .as_deref()
                .is_some_and(|user| user != cert_name)
            {
                tracing::debug!(
                    username = login.username.as_deref().unwrap_or(""),
                    cert_username = %cert_name,
                    "username does not match the client certificate"
                );
                return Err(AuthError::BadCredentials);
            }
            return Ok(Principal {
                username: Some(Arc::from(cert_name.as_str())),
                method: AuthMethod::Certificate,
            });
        }
        let anonymous = || {
            if login.anonymous_allowed {
                Ok(Principal {
                    username: None,
                    method: AuthMethod::Anonymous,
                })
            } else {
                Err(AuthError::NotAuthorized)
            }
        };
        let Some(username) = &login.username else {
            if login.password.is_some() {
                return Err(AuthError::BadCredentials);
            }
            return anonymous();
        };
        let passwords = self.passwords.load();
        let Some(passwords) = passwords.as_deref() else {
            tracing::debug!(%username, "no password file: the username is not trusted");
            return anonymous().map_err(|_| AuthError::BadCredentials);
        };
        let password = login.password.as_deref().unwrap_or_default();
        if passwords.verify(username, password) {
            Ok(Principal {
                username: Some(Arc::from(username.as_str())),
                method: AuthMethod::Password,
            })
        } else {
            Err(AuthError::BadCredentials)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        let mut file = PasswordFile::new();
        assert!(file.set("alice", b"wonderland").is_ok());
        Authenticator::new(Some(file))
    }

    fn login(user: Option<&str>, password: Option<&str>, anonymous_allowed: bool) -> Login {
        Login {
            username: user.map(str::to_owned),
            password: password.map(|p| p.as_bytes().to_vec()),
            cert_username: None,
            anonymous_allowed,
            peer: None,
        }
    }

    #[test]
    fn right_password_logs_in_as_the_user() {
        let auth = authenticator();
        let principal = auth
            .authenticate(&login(Some("alice"), Some("wonderland"), false))
            .unwrap();
        assert_eq!(principal.username.as_deref(), Some("alice"));
        assert_eq!(principal.method, AuthMethod::Password);
        assert_eq!(
            principal.identity("c1"),
            Identity {
                username: Some("alice"),
                client_id: "c1"
            }
        );
    }

    #[test]
    fn wrong_or_missing_password_and_unknown_users_are_bad_credentials() {
        let auth = authenticator();
        for l in [
            login(Some("alice"), Some("nope"), true),
            login(Some("alice"), None, true),
            login(Some("mallory"), Some("wonderland"), true),
            login(None, Some("wonderland"), true),
        ] {
            assert_eq!(
                auth.authenticate(&l),
                Err(AuthError::BadCredentials),
                "{l:?}"
            );
        }
    }

    #[test]
    fn anonymous_depends_on_the_listener() {
        let auth = authenticator();
        let principal = auth.authenticate(&login(None, None, true)).unwrap();
        assert_eq!(principal.username, None);
        assert_eq!(principal.method, AuthMethod::Anonymous);
        assert_eq!(
            auth.authenticate(&login(None, None, false)),
            Err(AuthError::NotAuthorized)
        );
    }

    #[test]
    fn without_a_password_file_usernames_are_not_trusted() {
        let auth = Authenticator::new(None);
        assert!(!auth.has_password_file());
        let principal = auth
            .authenticate(&login(Some("alice"), Some("x"), true))
            .unwrap();
        assert_eq!(principal.username, None);
        assert_eq!(
            auth.authenticate(&login(Some("alice"), Some("x"), false)),
            Err(AuthError::BadCredentials)
        );
    }

    #[test]
    fn a_certificate_name_is_the_username() {
        let auth = authenticator();
        let mut l = login(None, None, false);
        l.cert_username = Some("device-1".into());
        let principal = auth.authenticate(&l).unwrap();
        assert_eq!(principal.username.as_deref(), Some("device-1"));
        assert_eq!(principal.method, AuthMethod::Certificate);
        l.username = Some("device-1".into());
        assert!(auth.authenticate(&l).is_ok());
        l.username = Some("alice".into());
        l.password = Some(b"wonderland".to_vec());
        assert_eq!(auth.authenticate(&l), Err(AuthError::BadCredentials));
    }

    #[test]
    fn reload_picks_up_changes_and_keeps_users_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let mut file = PasswordFile::new();
        file.set("alice", b"one").unwrap();
        file.save(&path).unwrap();
        let auth = Authenticator::from_settings(&AuthSettings {
            password_file: Some(path.clone()),
            acl_file: None,
            ..AuthSettings::default()
        })
        .unwrap();
        assert!(auth
            .authenticate(&login(Some("alice"), Some("one"), false))
            .is_ok());

        file.set("alice", b"two").unwrap();
        file.save(&path).unwrap();
        auth.reload().unwrap();
        assert!(auth
            .authenticate(&login(Some("alice"), Some("two"), false))
            .is_ok());

        std::fs::write(&path, "garbage line\n").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth
            .authenticate(&login(Some("alice"), Some("two"), false))
            .is_ok());
    }

    #[test]
    fn a_missing_password_file_is_an_error_naming_it() {
        let err = Authenticator::from_settings(&AuthSettings {
            password_file: Some(PathBuf::from("/nonexistent/passwd")),
            acl_file: None,
            ..AuthSettings::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/passwd"), "{err}");
    }

    #[tokio::test]
    async fn authenticate_async_gives_the_same_answer() {
        let auth = Arc::new(authenticator());
        let ok = auth
            .authenticate_async(login(Some("alice"), Some("wonderland"), false))
            .await;
        assert!(ok.is_ok());
        let bad = auth
            .authenticate_async(login(Some("alice"), Some("x"), false))
            .await;
        assert_eq!(bad, Err(AuthError::BadCredentials));
    }

    #[test]
    fn only_a_username_against_a_password_file_spends_a_hash() {
        let with_file = authenticator();
        assert!(with_file.needs_hash(&login(Some("alice"), Some("wonderland"), false)));
        assert!(!with_file.needs_hash(&login(None, None, true)));
        let mut by_cert = login(Some("alice"), None, false);
        by_cert.cert_username = Some("alice".into());
        assert!(!with_file.needs_hash(&by_cert));
        let without_file = Authenticator::new(None);
        assert!(!without_file.needs_hash(&login(Some("alice"), Some("x"), true)));
    }

    #[tokio::test]
    async fn authenticate_async_decides_anonymous_logins_in_place() {
        let auth = Arc::new(Authenticator::new(None));
        let anonymous = auth.authenticate_async(login(None, None, true)).await;
        assert_eq!(anonymous.map(|p| p.method), Ok(AuthMethod::Anonymous));
        let refused = auth.authenticate_async(login(None, None, false)).await;
        assert_eq!(refused, Err(AuthError::NotAuthorized));
    }
}
