//! The automation decisions against a real state database: holds, pauses, their ends, and
//! the backoff after failures that were not the image's fault.

use std::path::Path;

use super::*;
use crate::config::{Config, Secrets};
use crate::store::Step;

const CONFIG: &str = r#"
[[services]]
name = "web"
environment = "stage"
compose_project = "shop"
image = "ghcr.io/acme/web"
track = "main"
host = "stage.example.com"
port = 8000
"#;

fn service() -> ServiceConfig {
    let config = Config::parse(CONFIG, Path::new("t.toml"), Secrets::Skip).unwrap();
    config.services[0].clone()
}

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::open(dir.path()).unwrap(), dir)
}

fn report(store: &Store, outcome: Outcome, to: &Digest, image_fault: bool) -> Report {
    let id = store
        .begin_deploy(&crate::store::NewDeploy {
            service: "web",
            environment: "stage",
            trigger: "poll",
            target: "main",
        })
        .unwrap();
    store.finish_deploy(id, outcome, None).unwrap();
    Report {
        deploy_id: id,
        outcome,
        failed_step: image_fault.then_some(Step::Health),
        error: image_fault.then(|| "not healthy after 5s (health: starting)\nmore".to_string()),
        to: Some(to.clone()),
        image_fault,
    }
}

#[test]
fn a_digest_that_failed_by_its_own_fault_is_held_back_until_the_track_moves_on() {
    let (store, _dir) = store();
    let s = service();
    let automation = Automation::default();
    let (bad, good) = (digest('b'), digest('c'));
    assert_eq!(automation.admit(&store, &s, &bad, "poll"), Ok(()));

    let failed = report(&store, Outcome::RolledBack, &bad, true);
    rollout_ended(&store, &s, &failed, None);
    automation.automatic_rollout_ended("web", Some(&failed));
    let hold = store.hold("web").unwrap().unwrap();
    assert_eq!(hold.digest, bad.as_str());
    assert_eq!(hold.step.as_deref(), Some("health"));
    assert_eq!(hold.reason, "not healthy after 5s (health: starting)");
    assert!(
        store
            .deploy(failed.deploy_id)
            .unwrap()
            .unwrap()
            .note
            .unwrap()
            .contains("held back"),
        "the failed rollout's journal entry says so"
    );
    for _ in 0..3 {
        assert!(matches!(
            automation.admit(&store, &s, &bad, "poll"),
            Err(Skip::Held(h)) if h.digest == bad.as_str()
        ));
    }
    // A restart (a new daemon's memory) still holds it back: it is in the store.
    assert!(matches!(
        Automation::default().admit(&store, &s, &bad, "poll"),
        Err(Skip::Held(_))
    ));
    // The track moves on: the new digest goes, and the hold is gone.
    assert_eq!(automation.admit(&store, &s, &good, "poll"), Ok(()));
    assert_eq!(store.hold("web").unwrap(), None);
}

#[test]
fn an_operators_successful_deploy_of_a_held_digest_releases_it() {
    let (store, _dir) = store();
    let s = service();
    let bad = digest('b');
    rollout_ended(
        &store,
        &s,
        &report(&store, Outcome::RolledBack, &bad, true),
        None,
    );
    assert!(store.hold("web").unwrap().is_some());
    let fixed = report(&store, Outcome::Succeeded, &bad, false);
    rollout_ended(&store, &s, &fixed, None);
    assert_eq!(store.hold("web").unwrap(), None);
    assert_eq!(
        Automation::default().admit(&store, &s, &bad, "poll"),
        Ok(())
    );
}

#[test]
fn failures_not_caused_by_the_image_back_off_and_hold_nothing() {
    let (store, _dir) = store();
    let s = service();
    let automation = Automation::default();
    let d = digest('d');
    let failed = Report {
        outcome: Outcome::Failed,
        ..report(&store, Outcome::Failed, &d, false)
    };
    rollout_ended(&store, &s, &failed, None);
    assert_eq!(store.hold("web").unwrap(), None, "not the image's fault");
    automation.automatic_rollout_ended("web", Some(&failed));
    let Err(Skip::BackingOff { until_ms, failures }) = automation.admit(&store, &s, &d, "poll")
    else {
        panic!("backs off");
    };
    assert_eq!(failures, 1);
    let wait = until_ms - now_ms();
    assert!((9_000..=10_000).contains(&wait), "{wait} ms");
    automation.automatic_rollout_ended("web", None);
    let Err(Skip::BackingOff { until_ms, failures }) = automation.admit(&store, &s, &d, "poll")
    else {
        panic!("backs off");
    };
    assert_eq!(failures, 2);
    assert!(until_ms - now_ms() > 19_000, "the wait doubles");
    let ok = report(&store, Outcome::Succeeded, &d, false);
    automation.automatic_rollout_ended("web", Some(&ok));
    assert_eq!(automation.admit(&store, &s, &d, "poll"), Ok(()));
}

#[test]
fn a_pause_after_an_operators_rollout_ends_when_the_track_moves() {
    let (store, _dir) = store();
    let s = service();
    let automation = Automation::default();
    let (at, next) = (digest('a'), digest('e'));
    store
        .set_pause(
            "web",
            &Pause {
                by: "rollback".into(),
                reason: "rolled back by an operator".into(),
                since: now_ms(),
                track_digest: Some(at.to_string()),
                until_resumed: false,
            },
        )
        .unwrap();
    assert!(matches!(
        automation.admit(&store, &s, &at, "poll"),
        Err(Skip::Paused(p)) if p.by == "rollback"
    ));
    assert_eq!(automation.admit(&store, &s, &next, "poll"), Ok(()));
    assert_eq!(store.pause("web").unwrap(), None);
    let journal = store.deploys(Some("web"), 5).unwrap();
    assert_eq!(journal[0].outcome, Outcome::Resumed);
    assert_eq!(journal[0].trigger, "poll");
    assert!(
        journal[0]
            .note
            .as_deref()
            .unwrap()
            .contains("the track moved")
    );
    assert_eq!(store.last_rollout("web").unwrap().map(|d| d.id), None);
}

#[test]
fn a_pause_whose_heading_was_unknown_takes_the_first_one_seen() {
    let (store, _dir) = store();
    let s = service();
    let automation = Automation::default();
    store
        .set_pause(
            "web",
            &Pause {
                by: "api rollback".into(),
                reason: "rolled back by an operator".into(),
                since: now_ms(),
                track_digest: None,
                until_resumed: false,
            },
        )
        .unwrap();
    let (first, second) = (digest('1'), digest('2'));
    assert!(automation.admit(&store, &s, &first, "poll").is_err());
    assert!(automation.admit(&store, &s, &first, "poll").is_err());
    assert_eq!(automation.admit(&store, &s, &second, "poll"), Ok(()));
}

#[test]
fn an_explicit_pause_lasts_until_resumed() {
    let (store, _dir) = store();
    let s = service();
    let automation = Automation::default();
    let p = pause(&store, &s, "pause by alice", Some("incident\n42")).unwrap();
    assert_eq!(p.reason, "incident\\n42", "escaped: one line");
    for c in ['1', '2', '3'] {
        assert!(matches!(
            automation.admit(&store, &s, &digest(c), "poll"),
            Err(Skip::Paused(p)) if p.until_resumed
        ));
    }
    let ended = resume(&store, &s, "api resume").unwrap();
    assert_eq!(ended.map(|p| p.by), Some("pause by alice".to_string()));
    assert_eq!(
        resume(&store, &s, "api resume").unwrap(),
        None,
        "not paused any more"
    );
    assert_eq!(automation.admit(&store, &s, &digest('3'), "poll"), Ok(()));
    let outcomes: Vec<Outcome> = store
        .deploys(Some("web"), 5)
        .unwrap()
        .iter()
        .map(|d| d.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::Resumed, Outcome::Paused]);
}
