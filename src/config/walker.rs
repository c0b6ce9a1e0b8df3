//! The TOML walker: reads a table key by key, collecting every problem with its key path
//! and reporting the keys no reader asked for.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use super::Secrets;
use crate::secret::{Origin, Secret, SecretSource};

/// One thing wrong with the config, at a key path such as `services[1].port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// A TOML table being read: remembers which keys were consumed so that the rest can be
/// reported as unknown, and prefixes every problem with the table's key path.
pub(super) struct Section<'a> {
    path: String,
    pub(super) table: &'a Table,
    seen: HashSet<&'a str>,
}

impl<'a> Section<'a> {
    pub(super) fn new(path: impl Into<String>, table: &'a Table) -> Self {
        Section {
            path: path.into(),
            table,
            seen: HashSet::new(),
        }
    }

    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        self.seen.insert(key);
        self.table.get(key)
    }

    pub(super) fn opt_str(&mut self, p: &mut Problems, key: &'a str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                p.add(
                    self.key(key),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn str(&mut self, p: &mut Problems, key: &'a str) -> Option<String> {
        let present = self.table.contains_key(key);
        let value = self.opt_str(p, key);
        if !present {
            p.add(self.key(key), "missing (required)");
        }
        value
    }

    /// Where a secret is, given as a file (`file_key`) or an environment variable
    /// (`env_key`); [`SecretReader::read`] reads it. `Err(())` means a problem was recorded;
    /// `Ok(None)` that neither key is set.
    pub(super) fn secret(
        &mut self,
        p: &mut Problems,
        file_key: &'a str,
        env_key: &'a str,
    ) -> Result<Option<SecretSource>, ()> {
        let file = self.opt_str(p, file_key);
        let var = self.opt_str(p, env_key);
        match (file, var) {
            (Some(_), Some(_)) => {
                p.add(
                    self.key(file_key),
                    format!("set either {file_key} or {env_key}, not both"),
                );
                Err(())
            }
            (Some(file), None) => Ok(Some(SecretSource {
                key: self.key(file_key),
                origin: Origin::File(PathBuf::from(file)),
            })),
            (None, Some(var)) => Ok(Some(SecretSource {
                key: self.key(env_key),
                origin: Origin::Env(var),
            })),
            (None, None) => Ok(None),
        }
    }

    pub(super) fn opt_bool(&mut self, p: &mut Problems, key: &'a str) -> Option<bool> {
        match self.get(key)? {
            Value::Boolean(b) => Some(*b),
            other => {
                p.add(
                    self.key(key),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn opt_int(&mut self, p: &mut Problems, key: &'a str) -> Option<i64> {
        match self.get(key)? {
            Value::Integer(i) => Some(*i),
            other => {
                p.add(
                    self.key(key),
                    format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A duration such as `"2s"`, `"500ms"`, `"1m30s"`, defaulting when absent. Returns `None`
    /// only after recording a problem.
    pub(super) fn duration(
        &mut self,
        p: &mut Problems,
        key: &'a str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(text) = self.opt_str(p, key) else {
            return (!self.table.contains_key(key)).then_some(default);
        };
        match humantime::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                p.add(
                    self.key(key),
                    format!(
                        "`{text}` is not a duration ({e}); write e.g. \"30s\", \"500ms\", \"2m\""
                    ),
                );
                None
            }
        }
    }

    pub(super) fn opt_str_list(&mut self, p: &mut Problems, key: &'a str) -> Option<Vec<String>> {
        match self.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => p.add(
                            format!("{}[{i}]", self.key(key)),
                            format!("expected a string, found {}", other.type_str()),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                p.add(
                    self.key(key),
                    format!("expected a list of strings, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn opt_table(&mut self, p: &mut Problems, key: &'a str) -> Option<&'a Table> {
        match self.get(key)? {
            Value::Table(t) => Some(t),
            other => {
                p.add(
                    self.key(key),
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn opt_table_list(
        &mut self,
        p: &mut Problems,
        key: &'a str,
    ) -> Vec<(String, &'a Table)> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            p.add(
                self.key(key),
                format!(
                    "expected a list of tables ([[{key}]]), found {}",
                    value.type_str()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.key(key));
            match item {
                Value::Table(t) => out.push((path, t)),
                other => p.add(
                    path,
                    format!("expected a table, found {}", other.type_str()),
                ),
            }
        }
        out
    }

    /// Reports every key that no reader asked for.
    pub(super) fn finish(self, p: &mut Problems) {
        for key in self.table.keys() {
            if !self.seen.contains(key.as_str()) {
                p.add(self.key(key), "unknown key");
            }
        }
    }
}

/// Reads secrets as the config names them ([`Secrets::Load`]) or only lists them.
pub(super) struct SecretReader {
    mode: Secrets,
    /// Every secret asked for so far, in the order the config names them.
    pub(super) sources: Vec<SecretSource>,
}

impl SecretReader {
    pub(super) fn new(mode: Secrets) -> Self {
        SecretReader {
            mode,
            sources: Vec::new(),
        }
    }

    /// The secret, or `None` when skipped or unreadable (a problem then names it).
    pub(super) fn read(&mut self, p: &mut Problems, source: SecretSource) -> Option<Secret> {
        let secret = match self.mode {
            Secrets::Skip => None,
            Secrets::Load => match source.read() {
                Ok(secret) => Some(secret),
                Err(e) => {
                    p.add(source.key.clone(), e.to_string());
                    None
                }
            },
        };
        self.sources.push(source);
        secret
    }

    /// A secret given by `file_key` or `env_key` of `section`, if either is set.
    pub(super) fn optional(
        &mut self,
        p: &mut Problems,
        section: &mut Section<'_>,
        file_key: &'static str,
        env_key: &'static str,
    ) -> Option<Secret> {
        let source = section.secret(p, file_key, env_key).ok().flatten()?;
        self.read(p, source)
    }
}
