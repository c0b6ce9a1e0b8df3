//! `hoist check-config`'s look at the secrets: can each one the config names be read, seen
//! through the systemd unit where it points into the unit's credentials directory (which
//! exists only while the unit runs), and can every credential the unit loads be read
//! (systemd does not start the unit otherwise).

use std::fmt;
use std::path::Path;

use crate::secret::{self, Origin, SecretError, SecretSource};
use crate::serve::systemd::{Credential, UNIT_PATH, Unit};

/// One secret or credential checked: what it is, whether it can be read, and how hoist
/// knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A key path (`github.webhook_secret_file`) or a unit line (`LoadCredential=ghcr`).
    pub subject: String,
    pub ok: bool,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { '✓' } else { '✗' };
        write!(f, "{mark} {}: {}", self.subject, self.text)
    }
}

/// Checks every secret in `sources`, then the unit's credentials no secret uses.
pub fn secrets(sources: &[SecretSource], unit: Option<&Unit>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = sources.iter().map(|s| source(s, unit)).collect();
    if let Some(unit) = unit {
        let used = |c: &&Credential| {
            sources.iter().any(|s| match &s.origin {
                Origin::File(path) => unit.credential_id(path) == Some(c.id.as_str()),
                Origin::Env(_) => false,
            })
        };
        for c in unit.credentials.iter().filter(|c| !used(c)) {
            findings.push(unused_credential(unit, c));
        }
    }
    findings
}

/// Secret files other users may read or write, each as "key: why". Where the unit loads
/// a secret as a credential, the file it loads it from is what counts.
pub fn loose_modes(sources: &[SecretSource], unit: Option<&Unit>) -> Vec<String> {
    sources
        .iter()
        .filter_map(|s| {
            let Origin::File(path) = &s.origin else {
                return None;
            };
            let credential = unit.and_then(|u| u.credential(u.credential_id(path)?));
            let file = match credential.map(Credential::file) {
                Some(Ok(file)) => file,
                Some(Err(_)) => return None,
                None => path.clone(),
            };
            Some(format!("{}: {}", s.key, secret::loose_mode(&file)?))
        })
        .collect()
}

/// Without a unit, a secret in a credentials directory cannot be followed to its source:
/// say so once, when one of them is not readable.
pub fn missing_unit_note(findings: &[Finding], sources: &[SecretSource]) -> Option<String> {
    let in_credentials = |f: &Finding| {
        sources.iter().any(|s| {
            s.key == f.subject
                && matches!(&s.origin, Origin::File(p) if p.starts_with("/run/credentials"))
        })
    };
    findings.iter().any(|f| !f.ok && in_credentials(f)).then(|| {
        format!(
            "/run/credentials/<unit>/ exists only while the unit runs, and with no unit at {UNIT_PATH} hoist cannot tell where systemd will load those credentials from: install the unit first, or name it with --unit PATH"
        )
    })
}

fn source(source: &SecretSource, unit: Option<&Unit>) -> Finding {
    let (ok, text) = match &source.origin {
        Origin::Env(var) => match source.read() {
            Ok(_) => (true, format!("environment variable `{var}` is set")),
            Err(_) => (
                false,
                format!("environment variable `{var}` is not set or empty here"),
            ),
        },
        Origin::File(path) => match unit.and_then(|u| Some((u, u.credential_id(path)?))) {
            Some((unit, id)) => unit_credential(unit, path, id),
            None => plain_file(path, unit),
        },
    };
    Finding {
        subject: source.key.clone(),
        ok,
        text,
    }
}

/// A secret file in the unit's credentials directory: what matters is the file systemd
/// copies there when the unit starts.
fn unit_credential(unit: &Unit, path: &Path, id: &str) -> (bool, String) {
    let Some(credential) = unit.credential(id) else {
        return (
            false,
            format!(
                "{} is in the credentials directory of {}, but {} has no LoadCredential={id}:…, so the daemon would not find it",
                path.display(),
                unit.name,
                unit.path.display()
            ),
        );
    };
    let (ok, from) = credential_file(credential);
    (
        ok,
        format!("{} is the unit's credential `{id}`, {from}", path.display()),
    )
}

/// A `LoadCredential=` line no secret refers to still has to be readable: systemd fails
/// the unit's start otherwise.
fn unused_credential(unit: &Unit, credential: &Credential) -> Finding {
    let (ok, from) = credential_file(credential);
    let text = if ok {
        format!("{from}; no config key uses it")
    } else {
        format!(
            "{from}; systemd will not start {} without it: create it, or drop the line from {}",
            unit.name,
            unit.path.display()
        )
    };
    Finding {
        subject: credential.directive(),
        ok,
        text,
    }
}

/// "loaded from <file>: readable", or why systemd could not load it. systemd reads the file
/// as root, so the check means most when check-config runs as root.
fn credential_file(credential: &Credential) -> (bool, String) {
    let file = match credential.file() {
        Ok(file) => file,
        Err(searched) => {
            let searched: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
            return (
                false,
                format!(
                    "looked up by name, but none of {} exists",
                    searched.join(", ")
                ),
            );
        }
    };
    let kind = if credential.encrypted {
        "loaded (encrypted) from"
    } else {
        "loaded from"
    };
    match read_credential(credential, &file) {
        Ok(()) => (true, format!("{kind} {}: readable", file.display())),
        Err(e) => {
            let root = matches!(&e, SecretError::Unreadable { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied);
            let hint = if root {
                " (systemd reads it as root)"
            } else {
                ""
            };
            (
                false,
                format!("{kind} {}: {}{hint}", file.display(), reason(&e)),
            )
        }
    }
}

fn read_credential(credential: &Credential, file: &Path) -> Result<(), SecretError> {
    if credential.encrypted {
        // Ciphertext: systemd decrypts it; hoist can only see that it is there.
        std::fs::File::open(file)
            .map(|_| ())
            .map_err(|source| SecretError::Unreadable {
                path: file.to_path_buf(),
                source,
            })
    } else {
        secret::read_file(file).map(|_| ())
    }
}

/// A secret file outside the unit's view: it is read where it is.
fn plain_file(path: &Path, unit: Option<&Unit>) -> (bool, String) {
    match secret::read_file(path) {
        Ok(_) => (true, format!("{}: readable", path.display())),
        Err(e) => {
            let mut text = format!("{}: {}", path.display(), reason(&e));
            // Without a unit, `missing_unit_note` explains these once.
            if let Some(unit) = unit
                && path.starts_with("/run/credentials")
            {
                text.push_str(&format!(
                    " (not in the credentials directory of {}, {})",
                    unit.name,
                    unit.credentials_dir().display()
                ));
            }
            (false, text)
        }
    }
}

fn reason(e: &SecretError) -> String {
    match e {
        SecretError::Unreadable { source, .. } => format!("not readable here: {source}"),
        SecretError::Empty { .. } => "empty".into(),
        SecretError::Unset { var } => format!("environment variable `{var}` is not set"),
        SecretError::Padded { .. } => {
            "has whitespace at its start or end (besides one final newline): remove it".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::systemd::CredentialSource;

    #[test]
    fn a_padded_token_fails_and_loose_modes_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let padded = dir.path().join("admin-token");
        std::fs::write(&padded, "t0ken \n").unwrap();
        std::fs::set_permissions(&padded, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = dir.path().join("webhook-secret");
        std::fs::write(&open, "s3cret\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let sources = [
            file_source("server.admin_token_file", &padded),
            file_source("github.webhook_secret_file", &open),
        ];
        let findings = secrets(&sources, None);
        assert!(!findings[0].ok);
        assert_eq!(
            findings[0].to_string(),
            format!(
                "✗ server.admin_token_file: {}: has whitespace at its start or end (besides one final newline): remove it",
                padded.display()
            )
        );
        assert!(findings[1].ok, "a loose mode is a warning, not a failure");
        assert_eq!(
            loose_modes(&sources, None),
            [format!(
                "github.webhook_secret_file: {} has mode 0644: every user can read it; `chmod 600` it",
                open.display()
            )]
        );
    }

    fn file_source(key: &str, path: &Path) -> SecretSource {
        SecretSource {
            key: key.into(),
            origin: Origin::File(path.to_path_buf()),
        }
    }

    fn unit(credentials: Vec<(&str, &Path)>) -> Unit {
        Unit {
            path: "/etc/systemd/system/hoist.service".into(),
            name: "hoist.service".into(),
            credentials: credentials
                .into_iter()
                .map(|(id, path)| Credential {
                    id: id.into(),
                    encrypted: false,
                    source: CredentialSource::File(path.to_path_buf()),
                })
                .collect(),
        }
    }

    #[test]
    fn credentials_are_checked_at_their_source_and_each_failure_named() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("webhook-secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let missing = dir.path().join("missing");
        let run = Path::new("/run/credentials/hoist.service");
        let unit = unit(vec![
            ("webhook-secret", &secret),
            ("admin-token", &empty),
            ("github-token", &missing),
        ]);
        let sources = [
            file_source("github.webhook_secret_file", &run.join("webhook-secret")),
            file_source("server.admin_token_file", &run.join("admin-token")),
            file_source("registries[0].password_file", &run.join("ghcr")),
            file_source("server.status_token_file", &secret),
        ];
        let got: Vec<String> = secrets(&sources, Some(&unit))
            .iter()
            .map(ToString::to_string)
            .collect();
        let expect = [
            format!(
                "✓ github.webhook_secret_file: /run/credentials/hoist.service/webhook-secret is the unit's credential `webhook-secret`, loaded from {}: readable",
                secret.display()
            ),
            format!(
                "✗ server.admin_token_file: /run/credentials/hoist.service/admin-token is the unit's credential `admin-token`, loaded from {}: empty",
                empty.display()
            ),
            "✗ registries[0].password_file: /run/credentials/hoist.service/ghcr is in the credentials directory of hoist.service, but /etc/systemd/system/hoist.service has no LoadCredential=ghcr:…, so the daemon would not find it".to_string(),
            format!(
                "✓ server.status_token_file: {}: readable",
                secret.display()
            ),
            format!(
                "✗ LoadCredential=github-token:{0}: loaded from {0}: not readable here: No such file or directory (os error 2); systemd will not start hoist.service without it: create it, or drop the line from /etc/systemd/system/hoist.service",
                missing.display()
            ),
        ];
        assert_eq!(got, expect);
        assert!(!got.concat().contains("s3cr3t"));
    }

    #[test]
    fn without_a_unit_credential_paths_are_read_as_they_are() {
        let sources = [
            file_source(
                "github.token_file",
                Path::new("/run/credentials/hoist.service/github-token"),
            ),
            SecretSource {
                key: "github.webhook_secret_env".into(),
                origin: Origin::Env("HOIST_TEST_CHECK_NO_SUCH_VAR".into()),
            },
        ];
        let got = secrets(&sources, None);
        let lines: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "✗ github.token_file: /run/credentials/hoist.service/github-token: not readable here: No such file or directory (os error 2)",
                "✗ github.webhook_secret_env: environment variable `HOIST_TEST_CHECK_NO_SUCH_VAR` is not set or empty here",
            ]
        );
        let note = missing_unit_note(&got, &sources).unwrap();
        assert!(
            note.contains("no unit at /etc/systemd/system/hoist.service"),
            "{note}"
        );
        assert_eq!(missing_unit_note(&got[1..], &sources[1..]), None);
    }
}
