//! The drain cord's files and the probe's parsing.

use super::*;

#[test]
fn finds_the_container_id_in_mountinfo() {
    let id = "be64b9e9a50b47a85e2c2533b218223d2a782850205e8e9d8e1bc89dfdc6a34e";
    let line = format!(
        "87 69 254:0 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw"
    );
    let text = format!("1 0 0:1 / / rw - overlay overlay rw\n{line}\n");
    assert_eq!(id_from_mountinfo(&text).as_deref(), Some(id));
    assert_eq!(
        id_from_mountinfo("1 0 0:1 / / rw - overlay overlay rw"),
        None
    );
}

#[test]
fn markers_match_full_and_short_ids() {
    let dir = std::env::temp_dir().join(format!("hoist-cord-{}", std::process::id()));
    let cord = Cord { dir: dir.clone() };
    std::fs::create_dir_all(dir.join("cut")).unwrap();
    let id = "a".repeat(64);
    assert!(!marker_present(&dir, &id));
    cord.cut(&id).unwrap();
    assert!(marker_present(&dir, &id));
    assert!(marker_present(&dir, &id[..12]));
    assert!(!marker_present(&dir, &"b".repeat(64)));
    cord.restore(&id).unwrap();
    cord.restore(&id).unwrap();
    assert!(!cord.is_cut(&id));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_symlinked_drain_directory_is_refused_and_its_target_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let cord = Cord::new(state.path());
    std::os::unix::fs::symlink(outside.path(), cord.dir()).unwrap();
    let e = cord.prepare().unwrap_err().to_string();
    assert!(e.contains("is a symlink, not a directory"), "{e}");
    assert!(e.contains(&cord.dir().display().to_string()), "{e}");
    assert!(cord.cut(&"a".repeat(64)).is_err());
    let mode = std::fs::metadata(outside.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the link's target keeps its mode");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    // The same for `cut` inside a real drain directory, and for a marker's name.
    std::fs::remove_file(cord.dir()).unwrap();
    std::fs::create_dir(cord.dir()).unwrap();
    std::os::unix::fs::symlink(outside.path(), cord.dir().join("cut")).unwrap();
    assert!(cord.prepare().is_err());
    std::fs::remove_file(cord.dir().join("cut")).unwrap();
    cord.prepare().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, cord.marker("b")).unwrap();
    cord.cut("b").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn parses_http_targets() {
    assert_eq!(
        parse_http_target("8000/healthz"),
        Some((8000, "/healthz".into()))
    );
    assert_eq!(parse_http_target("8000"), None);
    assert_eq!(parse_http_target("x/y"), None);
}
