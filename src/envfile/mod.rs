//! The compose env file: hoist records `VAR=image@digest` there after each rollout, so that
//! an operator's later `docker compose up -d` runs what hoist deployed instead of rolling
//! the service back to the image the file named before.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot update {} ({var}): {action}: {source}", path.display())]
pub(crate) struct EnvFileError {
    path: PathBuf,
    var: String,
    action: &'static str,
    source: std::io::Error,
}

/// Sets `var=value` in the file, keeping every other line (comments, order, other
/// variables) as it was. The new content is written to a temporary file in the same
/// directory, synced and renamed over the old one: a crash leaves the old or the new file,
/// never a torn one. The file's owner and permissions are kept.
///
/// The file must be a regular file (not a symlink, whose target hoist would otherwise
/// read and replace with a copy) that reads as an env file (so a mistyped `env_file`
/// such as `/etc/passwd` is refused, not appended to). The temporary file has a name no
/// one can guess and is created exclusively: a symlink or file planted beside the env
/// file is never followed or overwritten.
pub(crate) fn set(path: &Path, var: &str, value: &str) -> Result<(), EnvFileError> {
    let err = |action, source| EnvFileError {
        path: path.to_path_buf(),
        var: var.to_string(),
        action,
        source,
    };
    let (old, meta) = read_regular(path).map_err(|e| err("read", e))?;
    check_syntax(&old).map_err(|e| err("not an env file", e))?;
    let new = with_var(&old, var, value);
    if new == old {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "env".into());
    let (tmp, mut file) =
        create_temporary(dir, &name).map_err(|e| err("create temporary file", e))?;
    let mut write = || -> std::io::Result<()> {
        match &meta {
            Some(m) => {
                file.set_permissions(m.permissions())?;
                // Root rewriting the operator's file must not take it over.
                crate::owner::give(&file, (m.uid(), m.gid()));
            }
            // What a plain create gave under the usual umask: it holds image references.
            None => file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?,
        }
        file.write_all(new.as_bytes())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("write temporary file", e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err("rename into place", e)
    })?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checks, without writing, that [`set`] would accept the file: a regular env file, or
/// none yet. A rollout checks this before it changes anything.
pub(crate) fn check(path: &Path, var: &str) -> Result<(), EnvFileError> {
    let err = |action, source| EnvFileError {
        path: path.to_path_buf(),
        var: var.to_string(),
        action,
        source,
    };
    let (text, _) = read_regular(path).map_err(|e| err("read", e))?;
    check_syntax(&text).map_err(|e| err("not an env file", e))
}

/// The file's text and metadata (none when it does not exist yet), refusing anything but
/// a regular file, also when it is swapped for a symlink while being opened.
fn read_regular(path: &Path) -> std::io::Result<(String, Option<std::fs::Metadata>)> {
    let refuse = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file; hoist only rewrites a regular env file"),
        )
    };
    let link = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), None)),
        Err(e) => return Err(e),
    };
    let kind = link.file_type();
    if kind.is_symlink() {
        return Err(refuse("a symlink"));
    }
    if !kind.is_file() {
        return Err(refuse(if kind.is_dir() {
            "a directory"
        } else {
            "a special file"
        }));
    }
    let mut file = File::open(path)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (link.dev(), link.ino()) {
        return Err(refuse("replaced while hoist opened it"));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok((text, Some(opened)))
}

/// Checks that every line is blank, a comment, or `[export ]NAME[=value]`, where a
/// quoted value may go on over several lines, as compose reads it.
fn check_syntax(text: &str) -> std::io::Result<()> {
    let mut open_quote: Option<char> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(q) = open_quote {
            if line.contains(q) {
                open_quote = None;
            }
            continue;
        }
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let body = body.strip_prefix("export ").unwrap_or(body);
        let (name, value) = body.split_once('=').unwrap_or((body, ""));
        let name = name.trim_end();
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !valid {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "line {} is not NAME=value ({}); is env_file really the compose env file?",
                    i + 1,
                    crate::util::escape(line, 60)
                ),
            ));
        }
        let value = value.trim_start();
        if let Some(q) = value.chars().next().filter(|c| *c == '"' || *c == '\'')
            && !value[1..].contains(q)
        {
            open_quote = Some(q);
        }
    }
    Ok(())
}

/// Creates a new file beside the env file under a name no one can guess; never opens an
/// existing file or follows a symlink (`O_CREAT | O_EXCL`).
fn create_temporary(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..8 {
        let tmp = dir.join(format!(".{name}.hoist-{:016x}", unguessable()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

/// 64 bits no one outside the process can predict: std's `RandomState` keys come from
/// the operating system's random source; the time and a counter make each call differ.
fn unguessable() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map(|d| d.as_nanos()).unwrap_or_default());
    h.finish()
}

fn with_var(text: &str, var: &str, value: &str) -> String {
    let mut found = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            let body = line.trim_start();
            let body = body.strip_prefix("export ").unwrap_or(body);
            match body.split_once('=') {
                Some((k, _)) if k.trim() == var => {
                    found = true;
                    format!("{var}={value}")
                }
                _ => line.to_string(),
            }
        })
        .collect();
    if !found {
        lines.push(format!("{var}={value}"));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
