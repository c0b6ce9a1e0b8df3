//! The store's unit tests: migrations, the journal, current state and the delivery log.

use super::*;

fn received(hook: &str, id: &str, at: i64) -> Received {
    Received {
        hook: hook.into(),
        id: id.into(),
        event: "push".into(),
        at,
    }
}

#[test]
fn the_write_check_fails_when_the_directory_cannot_be_written() {
    let (store, dir) = temp_store();
    store.check_writable().unwrap();
    // A file where the probe goes stands in for a read-only directory (root ignores modes).
    std::fs::create_dir(dir.path().join(".hoist-write-probe")).unwrap();
    let e = store.check_writable().unwrap_err().to_string();
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
}

fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::open(dir.path()).unwrap(), dir)
}

#[test]
fn concurrent_opens_of_a_new_database_migrate_once() {
    // Without `enable_wal`'s retry, one round in ten or so lost the race for WAL.
    for _ in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || Store::open(&path).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }
}

#[test]
fn journal_round_trip() {
    let (store, dir) = temp_store();
    let id = store
        .begin_deploy(&NewDeploy {
            service: "web",
            environment: "stage",
            trigger: "manual",
            target: "main",
        })
        .unwrap();
    store.enter_step(id, Step::Pull).unwrap();
    store
        .record_step(
            id,
            &StepRecord {
                step: "resolve".into(),
                started_at: now_ms(),
                duration_ms: 12,
                waited_ms: 5,
                engine_ms: 0,
                ok: true,
                detail: None,
            },
        )
        .unwrap();
    assert_eq!(store.running_deploys("web").unwrap().len(), 1);
    store.finish_deploy(id, Outcome::Succeeded, None).unwrap();
    let d = store.deploy(id).unwrap().unwrap();
    assert_eq!(d.outcome, Outcome::Succeeded);
    assert_eq!(d.step.as_deref(), Some("pull"));
    assert_eq!((d.steps[0].duration_ms, d.steps[0].waited_ms), (12, 5));
    assert!(store.running_deploys("web").unwrap().is_empty());
    drop(dir);
}

#[test]
fn deliveries_and_their_outcomes_are_kept_and_pruned_and_pending_triggers_kept() {
    let (store, _dir) = temp_store();
    let at = now_ms();
    let old = at - 7_200_000;
    store
        .record_deliveries(&[received("7", "d-old", old), received("7", "d-1", at)])
        .unwrap();
    assert_eq!(
        store.deliveries_since(at - 3_600_000).unwrap(),
        [("7".to_string(), "d-1".to_string(), at)]
    );
    store
        .set_delivery_result("7", "d-1", false, "deploy #1 failed")
        .unwrap();
    assert_eq!(
        store.failed_deliveries(0).unwrap(),
        [("7".to_string(), "d-1".to_string())]
    );
    store
        .set_delivery_result("7", "d-1", true, "deploy #2 succeeded")
        .unwrap();
    assert_eq!(
        store.delivery_result("7", "d-1").unwrap(),
        Some((true, "deploy #2 succeeded".to_string()))
    );
    assert!(store.failed_deliveries(0).unwrap().is_empty());
    assert_eq!(
        store.delivery_result("8", "d-1").unwrap(),
        None,
        "another hook"
    );
    assert_eq!(store.prune_deliveries(at - 3_600_000).unwrap(), 1);
    assert_eq!(store.deliveries_since(0).unwrap().len(), 1);
    assert_eq!(
        store.prune_deliveries(now_ms() + 1).unwrap(),
        1,
        "everything older than the cutoff goes"
    );
    assert_eq!(store.delivery_result("7", "d-1").unwrap(), None);
    let row = |trigger: &str| PendingRow {
        service: "web".into(),
        target: "track".into(),
        trigger: trigger.into(),
        expect_tag: None,
        expect_digest: None,
        delivery: Some(("7".into(), trigger.into())),
    };
    store.save_pending(&row("a")).unwrap();
    store.save_pending(&row("b")).unwrap();
    assert_eq!(store.pending().unwrap(), vec![row("b")]);
    store.clear_pending("web").unwrap();
    assert!(store.pending().unwrap().is_empty());
}

#[test]
fn a_version_4_database_keeps_its_deliveries_and_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(dir.path().join("hoist.db")).unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO deliveries (id, event, received_at, outcome) VALUES
                 ('a', 'push', 20, NULL), ('b', 'package', 10, 'deploy #3 noop');
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.deliveries_since(0).unwrap(),
        [
            (String::new(), "b".to_string(), 10),
            (String::new(), "a".to_string(), 20)
        ]
    );
    assert_eq!(
        store.delivery_result("", "b").unwrap(),
        Some((true, "deploy #3 noop".to_string())),
        "outcomes from before hook ids count as settled"
    );
    store.record_deliveries(&[received("", "c", 30)]).unwrap();
    assert_eq!(store.deliveries_since(25).unwrap().len(), 1);
}

#[test]
fn current_moves_to_previous_and_reopen_keeps_schema() {
    let (store, dir) = temp_store();
    store.seed_current("web", "r/web", "sha256:a").unwrap();
    store
        .set_current("web", "r/web", Some("v2"), "sha256:b", Some(1))
        .unwrap();
    store
        .set_current("web", "r/web", Some("v2"), "sha256:b", Some(1))
        .unwrap();
    let s = store.service_state("web").unwrap().unwrap();
    assert_eq!(
        (s.digest.as_str(), s.previous_digest.as_deref()),
        ("sha256:b", Some("sha256:a"))
    );
    drop(store);
    let again = Store::open(dir.path()).unwrap();
    assert!(again.service_state("web").unwrap().is_some());
}
