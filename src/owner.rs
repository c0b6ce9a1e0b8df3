//! Files hoist creates in its state directory belong to the directory's owner.
//!
//! Under systemd the daemon runs as a dynamic user that owns `state.dir`. An operator who
//! runs the CLI as root while the daemon is stopped would otherwise leave root-owned
//! lock files and SQLite side files behind, which the daemon then cannot open. So when a
//! file comes out owned by someone else than its directory, it is handed over (which only
//! root can do; for anyone else the files already match).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Gives `path` the owner and group of `dir`, if they differ. Errors are ignored: at
/// worst the file keeps the creator as owner, as it would without this.
pub(crate) fn like_dir(dir: &Path, path: &Path) {
    let (Ok(d), Ok(f)) = (std::fs::metadata(dir), std::fs::symlink_metadata(path)) else {
        return;
    };
    if (d.uid(), d.gid()) != (f.uid(), f.gid()) {
        let _ = std::os::unix::fs::lchown(path, Some(d.uid()), Some(d.gid()));
    }
}

/// Gives the open `file` the owner and group `old` (before it is renamed over the file it
/// replaces, so no path is followed). Errors are ignored as in [`like_dir`].
pub(crate) fn give(file: &std::fs::File, old: (u32, u32)) {
    if let Ok(now) = file.metadata()
        && (now.uid(), now.gid()) != old
    {
        let _ = std::os::unix::fs::fchown(file, Some(old.0), Some(old.1));
    }
}

/// The owner and group of `path`.
#[cfg(test)]
pub(crate) fn of(path: &Path) -> Option<(u32, u32)> {
    std::fs::metadata(path).ok().map(|m| (m.uid(), m.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_take_the_directory_owner_and_replaced_files_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        // Only root can give files away; elsewhere there is nothing to check.
        if std::os::unix::fs::chown(dir.path(), Some(54321), Some(54321)).is_err() {
            return;
        }
        let file = dir.path().join("x.lock");
        std::fs::write(&file, "").unwrap();
        like_dir(dir.path(), &file);
        assert_eq!(of(&file), Some((54321, 54321)));

        let env = dir.path().join(".env");
        std::fs::write(&env, "A=1\n").unwrap();
        std::os::unix::fs::chown(&env, Some(1000), Some(1000)).unwrap();
        crate::envfile::set(&env, "B", "2").unwrap();
        assert_eq!(
            of(&env),
            Some((1000, 1000)),
            "rewriting kept the operator's ownership"
        );
    }
}
