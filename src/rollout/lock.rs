//! One rollout per service at a time, across processes: an advisory file lock per service
//! in `state.dir/locks`. The kernel drops the lock when its holder dies, so a killed hoist
//! never leaves a stale lock behind; the file's text says who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("{service} is busy: {holder}")]
    Held { service: String, holder: String },
    #[error("cannot open lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub(crate) struct ServiceLock {
    _file: File,
}

impl ServiceLock {
    /// Takes the lock for `service` without waiting; `holder` describes this process for
    /// whoever finds the lock taken (e.g. "hoist deploy web-stage").
    pub(crate) fn acquire(
        state_dir: &Path,
        service: &str,
        holder: &str,
    ) -> Result<ServiceLock, LockError> {
        let dir = state_dir.join("locks");
        let path = dir.join(format!("{service}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        crate::owner::like_dir(state_dir, &dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        crate::owner::like_dir(&dir, &path);
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = if text.trim().is_empty() {
                    "another hoist process holds its lock".to_string()
                } else {
                    text.trim().to_string()
                };
                return Err(LockError::Held {
                    service: service.to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let text = format!("{holder} (pid {}, since {since})\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(io)?;
        Ok(ServiceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_learns_the_holder_and_release_frees_it() {
        let dir = std::env::temp_dir().join(format!("hoist-lock-{}", std::process::id()));
        let first = ServiceLock::acquire(&dir, "web", "hoist deploy web").unwrap();
        let err = ServiceLock::acquire(&dir, "web", "hoist serve").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("web is busy: hoist deploy web (pid "),
            "{text}"
        );
        ServiceLock::acquire(&dir, "other", "x").unwrap();
        drop(first);
        ServiceLock::acquire(&dir, "web", "hoist serve").unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
