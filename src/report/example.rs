//! A status document with one service per case the renderings tell apart, for their
//! tests (the pinned outputs in `testdata/` are its renderings).

use crate::report::status::{Document, LastRollout, ServiceView, State};
use crate::store::{Hold, Outcome, Pause};

pub(crate) fn example() -> Document {
    Document {
        version: "0.1.0".into(),
        started_at: Some(100_000),
        uptime_s: Some(900),
        generated_at: 1_000_000,
        services: vec![
            rolling_with_a_poll_error(),
            running_what_hoist_did_not_record(),
            failed_and_interrupted(),
            queued(),
            rolling_without_a_step(),
            idle_after_a_failure(),
            idle_after_a_noop(),
            serving_with_a_digest_held_back(),
            paused_after_a_rollback(),
        ],
    }
}

fn digest(hex: &str) -> Option<String> {
    Some(format!("sha256:{}", hex.repeat(64)))
}

fn last(
    id: i64,
    outcome: Outcome,
    error: Option<&str>,
    finished_at: Option<i64>,
) -> Option<LastRollout> {
    Some(LastRollout {
        id,
        outcome,
        step: Some("health".into()),
        error: error.map(str::to_string),
        trigger: "manual <x>".into(),
        started_at: 800_000,
        finished_at,
    })
}

fn blank(name: &str) -> ServiceView {
    ServiceView {
        name: name.into(),
        environment: "stage".into(),
        image: "ghcr.io/acme/web".into(),
        track: "main".into(),
        host: "stage.example.com".into(),
        tag: None,
        digest: None,
        deployed_at: None,
        deployed_by: None,
        previous_digest: None,
        container: None,
        running_digest: None,
        health: "healthy".into(),
        compose_changed: false,
        state: State::Idle,
        step: None,
        trigger: None,
        last_rollout: None,
        promote_from: None,
        poll_interval_s: None,
        last_poll: None,
        next_poll: None,
        last_poll_error: None,
        watching_until: None,
        held_back: None,
        paused: None,
    }
}

fn rolling_with_a_poll_error() -> ServiceView {
    ServiceView {
        state: State::Rolling,
        step: Some("drain".into()),
        trigger: Some("poll".into()),
        tag: Some("main".into()),
        digest: digest("c"),
        running_digest: digest("c"),
        previous_digest: digest("a"),
        container: Some("shop-web-stage-1".into()),
        deployed_at: Some(820_000),
        deployed_by: Some("poll".into()),
        last_rollout: last(3, Outcome::RolledBack, Some("boom\nmore"), Some(810_000)),
        poll_interval_s: Some(60),
        last_poll: Some(990_000),
        next_poll: Some(1_050_000),
        last_poll_error: Some("registry ghcr.io is rate limiting hoist (HTTP 429)".into()),
        ..blank("web-stage")
    }
}

fn running_what_hoist_did_not_record() -> ServiceView {
    ServiceView {
        environment: "prod".into(),
        host: "www.example.com".into(),
        track: "semver:^1".into(),
        health: "down".into(),
        running_digest: digest("d"),
        promote_from: Some("web-stage".into()),
        watching_until: Some(1_120_000),
        ..blank("web-prod")
    }
}

fn failed_and_interrupted() -> ServiceView {
    ServiceView {
        state: State::Failed,
        health: "unknown: <boom> & 'x'".into(),
        digest: digest("e"),
        running_digest: digest("f"),
        deployed_at: Some(0),
        last_rollout: last(12, Outcome::Interrupted, Some("killed"), None),
        ..blank("api")
    }
}

fn queued() -> ServiceView {
    ServiceView {
        environment: "prod".into(),
        state: State::Queued,
        trigger: Some("api deploy".into()),
        health: "starting".into(),
        tag: Some("v1.2.3".into()),
        digest: digest("1"),
        deployed_at: Some(999_000),
        deployed_by: Some("api deploy".into()),
        last_rollout: last(14, Outcome::Succeeded, Some("ignored"), Some(999_000)),
        ..blank("worker")
    }
}

fn rolling_without_a_step() -> ServiceView {
    ServiceView {
        state: State::Rolling,
        health: "running".into(),
        tag: Some("nightly".into()),
        last_rollout: last(20, Outcome::Running, Some("partial"), None),
        ..blank("cron")
    }
}

fn idle_after_a_failure() -> ServiceView {
    ServiceView {
        health: "unhealthy".into(),
        last_rollout: last(21, Outcome::Failed, Some("registry down"), Some(900_000)),
        ..blank("batch")
    }
}

fn idle_after_a_noop() -> ServiceView {
    ServiceView {
        last_rollout: last(22, Outcome::Noop, None, Some(950_000)),
        ..blank("idle-one")
    }
}

fn serving_with_a_digest_held_back() -> ServiceView {
    ServiceView {
        tag: Some("main".into()),
        digest: digest("7"),
        running_digest: digest("7"),
        deployed_at: Some(500_000),
        last_rollout: last(
            30,
            Outcome::RolledBack,
            Some("not healthy after 60s\nlast probe"),
            Some(970_000),
        ),
        held_back: Some(Hold {
            digest: digest("8").unwrap_or_default(),
            step: Some("health".into()),
            reason: "not healthy after 60s <x>".into(),
            since: 970_000,
            deploy_id: Some(30),
        }),
        ..blank("held")
    }
}

fn paused_after_a_rollback() -> ServiceView {
    ServiceView {
        environment: "prod".into(),
        state: State::Paused,
        digest: digest("9"),
        running_digest: digest("9"),
        previous_digest: digest("8"),
        deployed_at: Some(940_000),
        deployed_by: Some("rollback".into()),
        last_rollout: last(31, Outcome::Succeeded, None, Some(940_000)),
        paused: Some(Pause {
            by: "rollback".into(),
            reason: "rolled back by an operator".into(),
            since: 930_000,
            track_digest: digest("8"),
            until_resumed: false,
        }),
        ..blank("paused")
    }
}
