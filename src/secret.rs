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
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                _ => Err(SecretError::Unset { var: var.clone() }),
            },
        }
    }
}

/// Reads a secret file. Files written by `echo` end in a newline that is not part of the
/// secret.
pub fn read_file(path: &Path) -> Result<Secret, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Secret::new(text.trim_end_matches(['\n', '\r']))),
        Ok(_) => Err(SecretError::Empty {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(SecretError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
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
}
