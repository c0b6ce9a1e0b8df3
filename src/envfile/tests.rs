//! The env file rewrite: lines kept, atomic, never through a symlink.

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

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// An env file `A=1` with mode 0640 (and owner 1000:1000 when the test runs as root),
/// and a file outside its directory that a symlink could point at.
fn env_and_victim() -> (tempfile::TempDir, PathBuf, tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    std::fs::write(&env, "A=1\n").unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o640)).unwrap();
    let _ = std::os::unix::fs::chown(&env, Some(1000), Some(1000));
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "B=precious\n").unwrap();
    (dir, env, outside, victim)
}

#[test]
fn symlinks_planted_beside_the_env_file_are_never_followed() {
    let (dir, env, _outside, victim) = env_and_victim();
    let owner = crate::owner::of(&env);
    let pid = std::process::id();
    // Every name beside `.env` one could predict: the old `.{name}.hoist-{pid}`, its
    // neighbours, and the usual editor and tool names.
    let mut planted: Vec<String> = (pid.saturating_sub(50)..pid + 50)
        .map(|p| format!(".env.hoist-{p}"))
        .collect();
    planted.extend(
        [
            ".env.hoist-0000000000000000",
            ".env.tmp",
            ".env.new",
            ".env~",
            ".env.swp",
        ]
        .map(String::from),
    );
    for name in &planted {
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
    }
    // And a dangling one, which a plain create would follow to make a new file.
    let dangling = _outside.path().join("created-through-a-link");
    std::os::unix::fs::symlink(&dangling, dir.path().join(".env.hoist")).unwrap();

    set(&env, "IMG", "r@sha256:1").unwrap();
    set(&env, "IMG", "r@sha256:2").unwrap();

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "B=precious\n");
    assert!(
        !dangling.exists(),
        "nothing created through a dangling link"
    );
    let meta = std::fs::symlink_metadata(&env).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the env file stays a regular file"
    );
    assert_eq!(mode(&env), 0o640);
    assert_eq!(crate::owner::of(&env), owner);
    assert_eq!(get(&env, "IMG").as_deref(), Some("r@sha256:2"));
    assert_eq!(get(&env, "A").as_deref(), Some("1"));
    for name in &planted {
        let link = dir.path().join(name);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_link(&link).unwrap(), victim);
    }
    let left = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(left, 1 + planted.len() + 1, "no temporary file left");
}

#[test]
fn a_symlinked_env_file_is_refused_and_its_target_untouched() {
    let (dir, _env, _outside, victim) = env_and_victim();
    let link = dir.path().join("link.env");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let before = (mode(&victim), crate::owner::of(&victim));
    let e = set(&link, "IMG", "r@sha256:1").unwrap_err().to_string();
    assert!(e.contains(&link.display().to_string()), "{e}");
    assert!(e.contains("a symlink, not a regular file"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "B=precious\n");
    assert_eq!((mode(&victim), crate::owner::of(&victim)), before);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    let e = set(&sub, "IMG", "x").unwrap_err().to_string();
    assert!(e.contains("a directory, not a regular file"), "{e}");
}

#[test]
fn a_file_that_is_not_an_env_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let text = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n";
    std::fs::write(&passwd, text).unwrap();
    let e = set(&passwd, "IMG", "x").unwrap_err().to_string();
    assert!(e.contains(&passwd.display().to_string()), "{e}");
    assert!(e.contains("line 1 is not NAME=value"), "{e}");
    assert_eq!(check(&passwd, "IMG").unwrap_err().to_string(), e);
    assert!(check(&dir.path().join("not-yet"), "IMG").is_ok());
    assert_eq!(std::fs::read_to_string(&passwd).unwrap(), text);
    // Binary content is refused too, and a control character in it is shown escaped.
    std::fs::write(&passwd, "A=1\n\x1b[2J\n").unwrap();
    let e = set(&passwd, "IMG", "x").unwrap_err().to_string();
    assert!(e.contains(r"line 2 is not NAME=value (\u{1b}[2J)"), "{e}");
}

#[test]
fn env_files_compose_reads_are_accepted() {
    for text in [
        "",
        "\n# a comment\n\n",
        "export A=1\nB = 2\nC\nD=\"two\nlines\"\nE='x'\nweb.port-x=1\n",
        "  INDENTED=1\r\n",
    ] {
        assert!(check_syntax(text).is_ok(), "{text:?}");
    }
    for text in [
        "=1\n",
        "1A=x\n",
        "A B=1\n",
        "D=\"open\n=still open\"\n-x=1\n",
    ] {
        assert!(check_syntax(text).is_err(), "{text:?}");
    }
}

#[test]
fn temporary_names_differ_and_an_existing_name_is_never_opened() {
    let a = unguessable();
    assert_ne!(a, unguessable());
    let dir = tempfile::tempdir().unwrap();
    let (tmp, _file) = create_temporary(dir.path(), ".env").unwrap();
    assert!(
        tmp.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("..env.hoist-")
    );
    assert_eq!(mode(&tmp), 0o600, "private until it is complete");
}

#[test]
fn a_missing_env_file_is_created_readable() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    set(&env, "IMG", "r@sha256:1").unwrap();
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "IMG=r@sha256:1\n");
    assert_eq!(mode(&env), 0o644);
}
