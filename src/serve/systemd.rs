//! systemd integration (`Type=notify`): READY, STATUS, WATCHDOG and STOPPING messages.
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing. Also the unit file's
//! credentials (`LoadCredential=`), which `check-config` resolves secrets through.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::report::status::Status;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "Cannot notify systemd");
    }
}

pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(crate) fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Pets the watchdog at half its period (and refreshes STATUS) while the runtime is alive.
pub(crate) async fn watchdog(status: Arc<Status>, stop: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[NotifyState::Watchdog, NotifyState::Status(&status.summary())]),
            () = stop.cancelled() => return,
        }
    }
}

/// Where the installed unit lives.
pub(crate) const UNIT_PATH: &str = "/etc/systemd/system/hoist.service";

/// Where systemd looks up a credential given by name rather than by absolute path.
const CREDENTIAL_STORES: [&str; 3] = ["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];
const ENCRYPTED_CREDENTIAL_STORES: [&str; 3] = [
    "/run/credstore.encrypted",
    "/etc/credstore.encrypted",
    "/usr/lib/credstore.encrypted",
];

/// What a unit file and its drop-ins (`<file>.d/*.conf`) tell systemd to load into the
/// unit's credentials directory: the `LoadCredential=` and `LoadCredentialEncrypted=` lines
/// of `[Service]`.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The unit file, for messages.
    pub path: PathBuf,
    /// The unit's name, `hoist.service`: the file's name.
    pub name: String,
    pub credentials: Vec<Credential>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    /// `LoadCredentialEncrypted=`: the source holds ciphertext systemd decrypts.
    pub encrypted: bool,
    pub source: CredentialSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `ID:/absolute/path`: that file.
    File(PathBuf),
    /// `ID` or `ID:name`: a file of that name in the first credential store that has one.
    Store(String),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read unit file {}: {source}", path.display())]
pub struct UnitError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl Unit {
    /// `explicit` (which must be readable), else the installed unit if there is one.
    pub fn find(explicit: Option<&Path>) -> Result<Option<Unit>, UnitError> {
        match explicit {
            Some(path) => Unit::read(path).map(Some),
            None => match Unit::read(Path::new(UNIT_PATH)) {
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(None),
                other => other.map(Some),
            },
        }
    }

    /// Reads the unit file at `path`, then its drop-ins in name order, as systemd does.
    pub fn read(path: &Path) -> Result<Unit, UnitError> {
        let error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| UnitError { path, source }
        };
        let mut texts = vec![std::fs::read_to_string(path).map_err(error(path))?];
        let mut drop_ins = PathBuf::from(path).into_os_string();
        drop_ins.push(".d");
        if let Ok(entries) = std::fs::read_dir(&drop_ins) {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            files.sort();
            for file in files {
                texts.push(std::fs::read_to_string(&file).map_err(error(&file))?);
            }
        }
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Ok(Unit::parse(path, name, &texts))
    }

    fn parse(path: &Path, name: String, texts: &[String]) -> Unit {
        let mut credentials: Vec<Credential> = Vec::new();
        for text in texts {
            let mut section = String::new();
            for line in logical_lines(text) {
                if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    section = name.to_string();
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let encrypted = match key.trim() {
                    "LoadCredential" => false,
                    "LoadCredentialEncrypted" => true,
                    _ => continue,
                };
                if section != "Service" {
                    continue;
                }
                let value = value.trim();
                if value.is_empty() {
                    // An empty assignment resets the list (e.g. in a drop-in).
                    credentials.clear();
                    continue;
                }
                let (id, source) = match value.split_once(':') {
                    Some((id, source)) if source.trim().starts_with('/') => {
                        (id.trim(), CredentialSource::File(source.trim().into()))
                    }
                    Some((id, name)) => (id.trim(), CredentialSource::Store(name.trim().into())),
                    None => (value, CredentialSource::Store(value.into())),
                };
                credentials.retain(|c| c.id != id);
                credentials.push(Credential {
                    id: id.to_string(),
                    encrypted,
                    source,
                });
            }
        }
        Unit {
            path: path.to_path_buf(),
            name,
            credentials,
        }
    }

    /// `/run/credentials/<unit>`, where the credentials are while the unit runs.
    pub fn credentials_dir(&self) -> PathBuf {
        Path::new("/run/credentials").join(&self.name)
    }

    /// The credential a path in the credentials directory stands for, by its id (the
    /// file's name), if the path is in that directory at all.
    pub fn credential_id<'p>(&self, path: &'p Path) -> Option<&'p str> {
        (path.parent() == Some(self.credentials_dir().as_path()))
            .then(|| path.file_name().and_then(|n| n.to_str()))
            .flatten()
    }

    pub fn credential(&self, id: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.id == id)
    }
}

impl Credential {
    /// The file systemd will read: the configured one, or the first store that has it.
    /// `Err` lists the stores searched.
    pub fn file(&self) -> Result<PathBuf, Vec<PathBuf>> {
        match &self.source {
            CredentialSource::File(path) => Ok(path.clone()),
            CredentialSource::Store(name) => {
                let stores = CREDENTIAL_STORES.iter().chain(if self.encrypted {
                    ENCRYPTED_CREDENTIAL_STORES.iter()
                } else {
                    [].iter()
                });
                let candidates: Vec<PathBuf> = stores.map(|s| Path::new(s).join(name)).collect();
                candidates
                    .iter()
                    .find(|p| p.exists())
                    .cloned()
                    .ok_or(candidates)
            }
        }
    }

    /// How the unit file says it: `LoadCredential=ghcr:/etc/hoist/credentials/ghcr`.
    pub fn directive(&self) -> String {
        let key = if self.encrypted {
            "LoadCredentialEncrypted"
        } else {
            "LoadCredential"
        };
        match &self.source {
            CredentialSource::File(path) => format!("{key}={}:{}", self.id, path.display()),
            CredentialSource::Store(name) if name == &self.id => format!("{key}={}", self.id),
            CredentialSource::Store(name) => format!("{key}={}:{name}", self.id),
        }
    }
}

/// The unit file's lines with comments and blank lines dropped and `\`-continued lines
/// joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    if !pending.is_empty() {
        out.push(pending);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(texts: &[&str]) -> Unit {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        Unit::parse(
            Path::new("/x/hoist.service"),
            "hoist.service".into(),
            &texts,
        )
    }

    #[test]
    fn reads_the_shipped_units_credentials() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/hoist.service");
        let unit = Unit::read(&path).unwrap();
        assert_eq!(unit.name, "hoist.service");
        assert_eq!(
            unit.credentials_dir(),
            Path::new("/run/credentials/hoist.service")
        );
        let ids: Vec<&str> = unit.credentials.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["ghcr", "webhook-secret", "admin-token", "github-token"]
        );
        assert_eq!(
            unit.credential("webhook-secret").unwrap().source,
            CredentialSource::File("/etc/hoist/credentials/webhook-secret".into())
        );
    }

    #[test]
    fn credential_lines_as_systemd_reads_them() {
        let u = unit(&[
            "[Unit]\nLoadCredential=not-service:/a\n[Service]\n# LoadCredential=commented:/b\n\
             LoadCredential = spaced : /c\nLoadCredential=named\nLoadCredential=relative:other\n\
             LoadCredentialEncrypted=enc:/d\nLoadCredential=long:\\\n/e\n",
            "[Service]\nLoadCredential=named:/f\n",
        ]);
        let got: Vec<String> = u.credentials.iter().map(Credential::directive).collect();
        assert_eq!(
            got,
            [
                "LoadCredential=spaced:/c",
                "LoadCredential=relative:other",
                "LoadCredentialEncrypted=enc:/d",
                "LoadCredential=long:/e",
                "LoadCredential=named:/f",
            ]
        );
        let reset = unit(&[
            "[Service]\nLoadCredential=a:/a\n",
            "[Service]\nLoadCredential=\n",
        ]);
        assert!(reset.credentials.is_empty());
        let p = Path::new("/run/credentials/hoist.service/ghcr");
        assert_eq!(u.credential_id(p), Some("ghcr"));
        assert_eq!(
            u.credential_id(Path::new("/run/credentials/other.service/ghcr")),
            None
        );
    }
}
