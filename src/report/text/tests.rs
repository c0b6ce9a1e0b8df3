//! The command line's text, byte for byte: the table, the JSON, history lines, a
//! rollout's end.

use super::*;
use crate::report::example::example;
use crate::store::StepRecord;

#[test]
fn history_lines_show_outcome_steps_and_errors() {
    let step = |name: &str, ms: i64, ok: bool| StepRecord {
        step: name.into(),
        started_at: 0,
        duration_ms: ms,
        waited_ms: 0,
        engine_ms: 0,
        ok,
        detail: None,
    };
    let d = Deploy {
        id: 7,
        service: "web-stage".into(),
        environment: "stage".into(),
        trigger: "poll".into(),
        target: "main".into(),
        from_image: None,
        from_digest: Some(format!("sha256:{}", "a".repeat(64))),
        to_image: None,
        to_tag: Some("main".into()),
        to_digest: Some(format!("sha256:{}", "b".repeat(64))),
        outcome: Outcome::RolledBack,
        step: Some("health".into()),
        error: Some("not healthy after 60s\nlast probe: exit 1".into()),
        note: None,
        old_container: None,
        new_container: None,
        pid: None,
        started_at: 1_700_000_000_000,
        finished_at: Some(1_700_000_065_400),
        steps: vec![step("resolve", 12, true), step("health", 60_001, false)],
    };
    let text = format_deploy(&d);
    assert_eq!(
        text,
        "#7     web-stage      stage    rolled_back  2023-11-14T22:13:20Z  poll       \
         target main  aaaaaaaaaaaa -> bbbbbbbbbbbb  65.4s\n       \
         resolve 12ms · ✗health 60.0s\n       \
         error: not healthy after 60s\n         \
         last probe: exit 1\n"
    );
    let d = Deploy {
        outcome: Outcome::Running,
        from_digest: None,
        to_digest: None,
        finished_at: None,
        error: None,
        steps: vec![],
        ..d.clone()
    };
    assert_eq!(
        format_deploy(&d),
        "#7     web-stage      stage    running      2023-11-14T22:13:20Z  poll       \
         target main  ? -> ?  -\n"
    );
}

#[test]
fn status_table_lists_services_and_problems() {
    let text = format_status(&example());
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with("SERVICE    ENV    STATE"),
        "{text}"
    );
    let row = lines.next().unwrap();
    for cell in [
        "web-stage",
        "rolling:drain",
        "main@cccccccccccc",
        "3 min ago",
        "poll",
        "#3 rolled_back",
    ] {
        assert!(row.contains(cell), "{cell} missing in {row}");
    }
    assert!(text.contains("! web-stage: boom\n"), "{text}");
    assert!(
        text.contains("! web-stage: poll: registry ghcr.io is rate limiting"),
        "{text}"
    );
}

#[test]
fn status_table_and_json_are_byte_identical_to_the_pinned_ones() {
    let doc = example();
    assert_eq!(format_status(&doc), include_str!("../testdata/status.txt"));
    assert_eq!(
        status_json(&doc).unwrap(),
        include_str!("../testdata/status.json")
    );
}

#[test]
fn the_document_reads_back_from_its_json_unchanged() {
    let json = status_json(&example()).unwrap();
    let doc: Document = serde_json::from_str(&json).unwrap();
    assert_eq!(status_json(&doc).unwrap(), json);
    assert_eq!(format_status(&doc), include_str!("../testdata/status.txt"));
    let renamed = json.replace("\"health\"", "\"healthy\"");
    assert!(serde_json::from_str::<Document>(&renamed).is_err());
}

#[test]
fn how_a_rollout_ended() {
    let ended = |outcome, step| {
        Ended {
            service: "web",
            outcome,
            to: "cccccccccccc",
            step,
            deploy_id: 4,
        }
        .to_string()
    };
    assert_eq!(
        ended(Outcome::Succeeded, "-"),
        "web deployed cccccccccccc (deploy #4)"
    );
    assert_eq!(
        ended(Outcome::Noop, "-"),
        "web already runs cccccccccccc; nothing to do (deploy #4)"
    );
    assert_eq!(
        ended(Outcome::RolledBack, "health"),
        "web rolled back: health step failed (deploy #4)"
    );
    assert_eq!(
        ended(Outcome::Failed, "-"),
        "web failed: - step failed (deploy #4)"
    );
}

#[test]
fn a_changed_compose_definition_is_listed_under_the_table() {
    let mut doc = example();
    doc.services[0].compose_changed = true;
    let name = doc.services[0].name.clone();
    let table = format_status(&doc);
    assert!(
        table.contains(&format!(
            "! {name}: the compose definition changed since its containers were created; \
             `hoist deploy {name}` rolls it out"
        )),
        "{table}"
    );
    assert!(
        status_json(&doc)
            .unwrap()
            .contains("\"compose_changed\": true")
    );
}
