//! The compose env file: hoist records `VAR=image@digest` there after each rollout, so that
//! an operator's later `docker compose up -d` runs what hoist deployed instead of rolling
//! the service back to the image the file named before.

use std::io::Write;
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
/// never a torn one. The file's permissions are kept.
pub(crate) fn set(path: &Path, var: &str, value: &str) -> Result<(), EnvFileError> {
    let err = |action, source| EnvFileError {
        path: path.to_path_buf(),
        var: var.to_string(),
        action,
        source,
    };
    let owner = crate::owner::of(path);
    let (old, permissions) = match std::fs::read_to_string(path) {
        Ok(text) => (text, std::fs::metadata(path).ok().map(|m| m.permissions())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(err("read", e)),
    };
    let new = with_var(&old, var, value);
    if new == old {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "env".into());
    let tmp = dir.join(format!(".{name}.hoist-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        if let Some(p) = &permissions {
            file.set_permissions(p.clone())?;
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
    // Root rewriting the operator's file must not take it over.
    crate::owner::restore(path, owner);
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
mod tests {
    use super::*;

    /// Reads `var` from an env file, if present.
    fn get(path: &Path, var: &str) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|line| {
            let (k, v) = line
                .trim_start()
                .strip_prefix("export ")
                .unwrap_or(line.trim_start())
                .split_once('=')?;
            (k.trim() == var).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
        })
    }

    #[test]
    fn replaces_or_appends_and_keeps_the_rest() {
        let text = "# images\nWEB_STAGE_IMAGE=r/web@sha256:old\nexport OTHER=1\n";
        assert_eq!(
            with_var(text, "WEB_STAGE_IMAGE", "r/web@sha256:new"),
            "# images\nWEB_STAGE_IMAGE=r/web@sha256:new\nexport OTHER=1\n"
        );
        assert_eq!(with_var("A=1", "B", "2"), "A=1\nB=2\n");
        assert_eq!(with_var("", "B", "2"), "B=2\n");
    }

    #[test]
    fn writes_atomically_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hoist-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(&path, "A=1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        set(&path, "IMG", "r@sha256:1").unwrap();
        assert_eq!(get(&path, "IMG").as_deref(), Some("r@sha256:1"));
        assert_eq!(get(&path, "A").as_deref(), Some("1"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
