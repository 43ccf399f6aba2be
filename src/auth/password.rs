//! The password file: one `user:$argon2id$v=19$m=…,t=…,p=…$salt$hash` line per
//! user (PHC strings, as `tern passwd` writes them); `#` comments and blank
//! lines are ignored. Verification spends one Argon2 hash whether or not the
//! user exists, so response times do not tell which usernames are real.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHashString, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read password file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write password file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("password file {path}, line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("invalid username {name:?}: {reason}")]
    Username { name: String, reason: &'static str },
    #[error("invalid password: {0}")]
    Password(&'static str),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Users and their password hashes, in name order.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: BTreeMap<String, PasswordHashString>,
}

/// The header `save` writes; the rest of the file is rewritten from the entries.
const HEADER: &str =
    "# Tern password file: user:argon2-hash per line. Edit with `tern passwd FILE USER`.\n";

impl PasswordFile {
    /// An empty file (no users).
    pub fn new() -> PasswordFile {
        PasswordFile::default()
    }

    /// Reads and checks `path`; a bad line is an error naming its number.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = PasswordFile::parse(&text, path)?;
        // Pay for the stand-in hash now rather than on the first unknown login.
        let _ = dummy_hash();
        Ok(file)
    }

    /// Parses the text of a password file; `origin` is only for error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<PasswordFile, PasswordFileError> {
        let mut users = BTreeMap::new();
        let mut first_seen = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let bad = |reason: String| PasswordFileError::Line {
                path: origin.to_path_buf(),
                line,
                reason,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = raw.split_once(':') else {
                return Err(bad("expected `user:hash`".into()));
            };
            if let Err(reason) = check_username(user) {
                return Err(bad(format!("username {user:?}: {reason}")));
            }
            let hash = PasswordHashString::new(hash.trim())
                .map_err(|e| bad(format!("not a PHC password hash ({e})")))?;
            let algorithm = hash.algorithm();
            if !matches!(algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") {
                return Err(bad(format!(
                    "unsupported hash algorithm {algorithm} (use `tern passwd` to make argon2id hashes)"
                )));
            }
            if let Some(first) = first_seen.insert(user.to_owned(), line) {
                return Err(bad(format!(
                    "user {user:?} is already defined on line {first}"
                )));
            }
            users.insert(user.to_owned(), hash);
        }
        Ok(PasswordFile { users })
    }

    /// Does `password` belong to `user`? Takes one hash's time either way (constant-time compare).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let argon2 = Argon2::default();
        match self.users.get(user) {
            Some(hash) => argon2
                .verify_password(password, &hash.password_hash())
                .is_ok(),
            None => {
                if let Some(dummy) = dummy_hash() {
                    let _ = argon2.verify_password(password, &dummy.password_hash());
                }
                false
            }
        }
    }

    /// Adds `user` or changes their password (a new random salt each time).
    pub fn set(&mut self, user: &str, password: &[u8]) -> Result<(), PasswordFileError> {
        check_username(user).map_err(|reason| PasswordFileError::Username {
            name: user.to_owned(),
            reason,
        })?;
        if password.is_empty() {
            return Err(PasswordFileError::Password("must not be empty"));
        }
        let hash = hash_password(password)?;
        self.users.insert(user.to_owned(), hash);
        Ok(())
    }

    /// Removes `user`; false when there was no such user.
    pub fn delete(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Usernames in order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The file's text: a header comment, then `user:hash` lines.
    pub fn to_text(&self) -> String {
        let mut out = String::from(HEADER);
        for (user, hash) in &self.users {
            out.push_str(user);
            out.push(':');
            out.push_str(hash.as_str());
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically: a temporary file (mode 0600) in the same
    /// directory, synced, then renamed over `path`. Comments are not kept.
    pub fn save(&self, path: &Path) -> Result<(), PasswordFileError> {
        let write_err = |source| PasswordFileError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| write_err(std::io::Error::other("not a file name")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let result = write_private(&tmp, self.to_text().as_bytes())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(write_err(e));
        }
        Ok(())
    }
}

/// What `tern passwd` does to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    Set(&'a [u8]),
    Delete,
}

/// What [`update_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Added,
    Changed,
    Deleted,
    /// `Delete` of a user that was not there; the file is left alone.
    NotFound,
}

/// Loads `path` (an absent file is an empty one), applies the change and saves.
pub fn update_file(
    path: &Path,
    user: &str,
    change: Change<'_>,
) -> Result<Outcome, PasswordFileError> {
    let mut file = if path.exists() {
        PasswordFile::load(path)?
    } else {
        PasswordFile::new()
    };
    let outcome = match change {
        Change::Set(password) => {
            let existed = file.contains(user);
            file.set(user, password)?;
            if existed {
                Outcome::Changed
            } else {
                Outcome::Added
            }
        }
        Change::Delete if file.delete(user) => Outcome::Deleted,
        Change::Delete => return Ok(Outcome::NotFound),
    };
    file.save(path)?;
    Ok(outcome)
}

/// One password line from a non-interactive input (the line ending is dropped).
pub fn read_password_line(input: &mut impl BufRead) -> Result<Vec<u8>, PasswordFileError> {
    let mut line = Vec::new();
    input
        .read_until(b'\n', &mut line)
        .map_err(|source| PasswordFileError::Read {
            path: PathBuf::from("<stdin>"),
            source,
        })?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.is_empty() {
        return Err(PasswordFileError::Password("must not be empty"));
    }
    Ok(line)
}

/// Why a username cannot be stored, if it cannot.
pub fn check_username(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        return Err("must not be empty");
    }
    if user.contains([':', '\n', '\r', '\0']) {
        return Err("must not contain ':', a line break or NUL");
    }
    if user.starts_with('#') || user.trim() != user {
        return Err("must not start with '#' or with or end in whitespace");
    }
    Ok(())
}

fn hash_password(password: &[u8]) -> Result<PasswordHashString, PasswordFileError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.serialize())
        .map_err(|e| PasswordFileError::Hash(e.to_string()))
}

/// A hash to verify against when the user is unknown, with the default parameters.
fn dummy_hash() -> Option<&'static PasswordHashString> {
    static DUMMY: OnceLock<Option<PasswordHashString>> = OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password(b"tern: no such user").ok())
        .as_ref()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> &'static Path {
        Path::new("passwd")
    }

    fn with_users(users: &[(&str, &str)]) -> PasswordFile {
        let mut file = PasswordFile::new();
        for (user, password) in users {
            if let Err(e) = file.set(user, password.as_bytes()) {
                panic!("set {user}: {e}");
            }
        }
        file
    }

    #[test]
    fn set_then_verify_accepts_only_the_right_password() {
        let file = with_users(&[("alice", "s3cret")]);
        assert!(file.verify("alice", b"s3cret"));
        assert!(!file.verify("alice", b"S3cret"));
        assert!(!file.verify("alice", b""));
        assert!(!file.verify("bob", b"s3cret"));
    }

    #[test]
    fn hashes_are_argon2id_with_a_fresh_salt() {
        let mut file = with_users(&[("a", "pw"), ("b", "pw")]);
        let text = file.to_text();
        assert!(text.contains("a:$argon2id$v=19$"), "{text}");
        let line = |text: &str, user: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{user}:")))
                .map(str::to_owned)
        };
        assert_ne!(
            line(&text, "a").map(|l| l[2..].to_owned()),
            line(&text, "b").map(|l| l[2..].to_owned())
        );
        let before = line(&text, "a");
        assert!(file.set("a", b"pw").is_ok());
        assert_ne!(before, line(&file.to_text(), "a"));
    }

    #[test]
    fn text_round_trips_through_parse() {
        let file = with_users(&[("alice", "one"), ("bob", "two")]);
        let parsed = PasswordFile::parse(&file.to_text(), origin()).unwrap();
        assert_eq!(parsed.users().collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(parsed.verify("bob", b"two"));
    }

    #[test]
    fn comments_blank_lines_and_crlf_are_accepted() {
        let file = with_users(&[("alice", "pw")]);
        let body = file.to_text().replace('\n', "\r\n");
        let text = format!("# users\n\n   \n{body}\n   # indented comment\n");
        let parsed = PasswordFile::parse(&text, origin()).unwrap();
        assert!(parsed.verify("alice", b"pw"));
        assert_eq!(parsed.len(), 1);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let good = with_users(&[("alice", "pw")]).to_text();
        let good_line = good.lines().nth(1).unwrap_or_default().to_owned();
        let cases = [
            ("# c\nno colon here\n".to_owned(), 2, "user:hash"),
            ("bob:plaintext\n".to_owned(), 1, "PHC"),
            (
                "bob:$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA\n"
                    .to_owned(),
                1,
                "unsupported",
            ),
            (
                ":$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n".to_owned(),
                1,
                "empty",
            ),
            (format!("{good_line}\n\n{good_line}\n"), 3, "line 1"),
        ];
        for (text, line, needle) in cases {
            match PasswordFile::parse(&text, origin()) {
                Err(PasswordFileError::Line {
                    line: l, reason, ..
                }) => {
                    assert_eq!(l, line, "{text:?}: {reason}");
                    assert!(reason.contains(needle), "{reason}");
                }
                other => panic!("{text:?} should fail on line {line}: {other:?}"),
            }
        }
        let err = PasswordFile::parse("x\n", Path::new("/etc/tern/passwd")).unwrap_err();
        assert!(
            err.to_string().contains("/etc/tern/passwd, line 1"),
            "{err}"
        );
    }

    #[test]
    fn usernames_that_would_break_the_format_are_refused() {
        let mut file = PasswordFile::new();
        for name in ["", "a:b", "a\nb", "a\rb", "#a", " a", "a ", "a\0"] {
            assert!(
                matches!(
                    file.set(name, b"pw"),
                    Err(PasswordFileError::Username { .. })
                ),
                "{name:?}"
            );
        }
        assert!(file.set("ok", b"").is_err());
        assert!(file.is_empty());
        assert!(file.set("dev-1@site.example", b"pw").is_ok());
    }

    #[test]
    fn delete_removes_a_user() {
        let mut file = with_users(&[("alice", "pw"), ("bob", "pw")]);
        assert!(file.delete("alice"));
        assert!(!file.delete("alice"));
        assert!(!file.verify("alice", b"pw"));
        assert!(file.verify("bob", b"pw"));
    }

    #[test]
    fn save_is_atomic_private_and_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "old contents that are not a password file\n").unwrap();
        let file = with_users(&[("alice", "pw")]);
        file.save(&path).unwrap();
        let loaded = PasswordFile::load(&path).unwrap();
        assert!(loaded.verify("alice", b"pw"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from("passwd")]);
    }

    #[test]
    fn save_into_a_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("passwd");
        let err = with_users(&[("a", "pw")]).save(&path).unwrap_err();
        assert!(matches!(err, PasswordFileError::Write { .. }), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn load_of_a_missing_file_names_it() {
        let err = PasswordFile::load(Path::new("/nonexistent/tern-passwd")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tern-passwd"),
            "{err}"
        );
    }

    #[test]
    fn update_file_adds_changes_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        assert_eq!(
            update_file(&path, "alice", Change::Set(b"one")).unwrap(),
            Outcome::Added
        );
        assert_eq!(
            update_file(&path, "bob", Change::Set(b"two")).unwrap(),
            Outcome::Added
        );
        assert_eq!(
            update_file(&path, "alice", Change::Set(b"three")).unwrap(),
            Outcome::Changed
        );
        let file = PasswordFile::load(&path).unwrap();
        assert!(file.verify("alice", b"three"));
        assert!(!file.verify("alice", b"one"));
        assert_eq!(
            update_file(&path, "alice", Change::Delete).unwrap(),
            Outcome::Deleted
        );
        assert_eq!(
            update_file(&path, "alice", Change::Delete).unwrap(),
            Outcome::NotFound
        );
        let file = PasswordFile::load(&path).unwrap();
        assert_eq!(file.users().collect::<Vec<_>>(), ["bob"]);
    }

    #[test]
    fn password_lines_lose_only_their_line_ending() {
        let read = |bytes: &[u8]| read_password_line(&mut &bytes[..]);
        assert_eq!(read(b"secret\n").unwrap(), b"secret");
        assert_eq!(read(b"secret\r\n").unwrap(), b"secret");
        assert_eq!(read(b" spaced \n").unwrap(), b" spaced ");
        assert_eq!(read(b"no newline").unwrap(), b"no newline");
        assert_eq!(read(b"first\nsecond\n").unwrap(), b"first");
        assert!(read(b"\n").is_err());
        assert!(read(b"").is_err());
    }
}
