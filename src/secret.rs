//! Secrets: values that never print (registry passwords, webhook secrets, tokens), where the
//! config says each comes from, and reading them from there.

use std::fmt;
use std::path::{Path, PathBuf};

/// Holds a secret value. `Debug` and `Display` print a placeholder, so a secret that ends up
/// in a log line, an error or a `{:?}` of a config struct stays hidden.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it (an HTTP header, the Docker API).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret as the config names it: the key that names it and where its value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    /// The key path, e.g. `github.webhook_secret_file` or `registries[0].password_env`.
    pub key: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    pub fn read(&self) -> Result<Secret, SecretError> {
        match &self.origin {
            Origin::File(path) => read_file(path),
            Origin::Env(var) => match std::env::var(var) {
                Ok(value) if value.trim() != value => Err(SecretError::Padded {
                    place: format!("environment variable `{var}`"),
                }),
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                _ => Err(SecretError::Unset { var: var.clone() }),
            },
        }
    }
}

/// Reads a secret file. Files written by `echo` end in a newline that is not part of the
/// secret. Any other whitespace at either end is refused, not trimmed: a bearer token
/// with it can never match (HTTP drops it from the header), and for a webhook secret or
/// a registry password hoist cannot know whether the other side has it too, so guessing
/// would only move the failure to a signature or login that no longer says why.
pub fn read_file(path: &Path) -> Result<Secret, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if value.trim() != value {
                return Err(SecretError::Padded {
                    place: format!("`{}`", path.display()),
                });
            }
            Ok(Secret::new(value))
        }
        Ok(_) => Err(SecretError::Empty {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(SecretError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Why a secret file is open to other users (group or world may read or write it), or
/// `None` when only its owner can. A file that cannot be inspected is left to the read.
pub fn loose_mode(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    let mut who = Vec::new();
    for (bit, what) in [
        (0o004, "every user can read it"),
        (0o002, "every user can write it"),
        (0o040, "its group can read it"),
        (0o020, "its group can write it"),
    ] {
        // "every user" covers the group.
        let covered = bit >= 0o020 && mode & (bit >> 3) != 0;
        if mode & bit != 0 && !covered {
            who.push(what);
        }
    }
    (!who.is_empty()).then(|| {
        format!(
            "{} has mode {mode:04o}: {}; `chmod 600` it",
            path.display(),
            who.join(", ")
        )
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read `{}`: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is empty", path.display())]
    Empty { path: PathBuf },
    #[error(
        "{place} has whitespace at its start or end (besides one final newline): remove it; hoist does not guess whether it belongs to the secret"
    )]
    Padded { place: String },
    #[error("environment variable `{var}` is not set or empty")]
    Unset { var: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_final_newline_is_dropped_and_other_padding_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        for (text, read) in [
            ("t0ken", Some("t0ken")),
            ("t0ken\n", Some("t0ken")),
            ("t0ken\r\n", Some("t0ken")),
            ("in side\n", Some("in side")),
            ("t0ken \n", None),
            ("t0ken\n\n", None),
            (" t0ken\n", None),
            ("\tt0ken", None),
        ] {
            std::fs::write(&file, text).unwrap();
            match (read_file(&file), read) {
                (Ok(s), Some(want)) => assert_eq!(s.expose(), want, "{text:?}"),
                (Err(e), None) => {
                    let e = e.to_string();
                    assert!(e.contains(&file.display().to_string()), "{e}");
                    assert!(e.contains("whitespace at its start or end"), "{e}");
                }
                (got, _) => panic!("{text:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn secret_files_open_to_other_users_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t0ken\n").unwrap();
        let with = |mode| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            loose_mode(&file)
        };
        assert_eq!(with(0o600), None);
        assert_eq!(with(0o400), None);
        let shown = with(0o644).unwrap();
        assert!(
            shown.ends_with("has mode 0644: every user can read it; `chmod 600` it"),
            "{shown}"
        );
        assert!(with(0o640).unwrap().contains(": its group can read it;"));
        assert!(
            with(0o662)
                .unwrap()
                .contains(": every user can write it, its group can read it;")
        );
        assert!(
            with(0o666)
                .unwrap()
                .contains(": every user can read it, every user can write it;")
        );
    }
}
