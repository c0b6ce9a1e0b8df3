//! No trigger is lost: deliveries keyed by (hook, delivery id), a redelivery of failed work
//! processed again, a trigger kept through a state directory that cannot be written, and
//! the sweep of deliveries the daemon never received (fake GitHub API; real daemon,
//! registry, Docker and Traefik).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::daemon::{self, Daemon, package_event};
use crate::support::github::{Behaviour, FakeGithub, HookDelivery};
use crate::support::hoist::{Fixture, Options, SERVICE};

use crate::support::images::{self, Variant};

const REPO: &str = "acme/web";
const WAIT: Duration = Duration::from_secs(90);

/// A fixture whose service follows `acme/web`, and its daemon; `github` is more TOML for
/// the `[github]` table.
async fn serve(mut options: Options, github: &str) -> (Fixture, Daemon) {
    options.service_extra = "github_repository = \"acme/web\"\n";
    let mut f = Fixture::start(options).await;
    f.options.config_extra = format!("{}{github}", daemon::config(f.state.path(), ""));
    f.write_config("");
    let d = Daemon::start(&f.config, &[]).await;
    (f, d)
}

fn finished(history: &[serde_json::Value], n: usize) -> bool {
    history.len() == n && history.iter().all(|d| d["outcome"] != "running")
}

/// Waits until the daemon's live status shows the service in `state`.
async fn wait_state(d: &Daemon, state: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = d.get("/status").await;
        if status.body["services"][0]["state"] == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the service never became {state}: {}\n{}",
            status.body,
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `/readyz` answers `status` (its write check is cached for a second).
async fn wait_readyz(d: &Daemon, status: u16) -> daemon::Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = d.get("/readyz").await;
        if ready.status == status {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}: {:?}",
            ready.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivery_retries_failed_work_only_and_each_hook_counts() {
    let options = Options {
        tags: vec![("v1", Variant::V1), ("next", Variant::Broken)],
        track: "next",
        health_timeout: "5s",
        ..Options::default()
    };
    let (mut f, d) = serve(options, "").await;
    let broken = package_event(REPO, &f.repo, "next", &f.digests["next"]);

    let first = d.deliver_from("11", "package", "d-1", &broken).await;
    assert_eq!(
        (first.status, &first.body["status"]),
        (202, &"queued".into())
    );
    let history = f
        .wait_history("the failed rollout", WAIT, |h| finished(h, 1))
        .await;
    assert_ne!(history[0]["outcome"], "succeeded", "{history:?}");

    // GitHub's "Redeliver": the same hook and delivery ids. The work failed, so it is
    // processed again (not a duplicate); but the image failed by its own fault, and
    // automation holds that digest back: nothing is rolled out again.
    let again = d.deliver_from("11", "package", "d-1", &broken).await;
    assert_eq!(
        (again.status, &again.body["status"]),
        (202, &"queued".into()),
        "{:?}",
        again.body
    );
    d.wait_for_log("is held back", WAIT).await;
    wait_state(&d, "idle").await;
    assert_eq!(f.history().await.len(), 1, "{}", d.log());

    // The tag moves to a good image, but the registry is down when its delivery arrives:
    // the claim cannot be checked, the work fails, and GitHub's "Redeliver" retries it.
    let repo_path = format!("{}/web", f.project.name);
    let good = images::push(&f.registry, &repo_path, Variant::V2, "next").await;
    let fixed = package_event(REPO, &f.repo, "next", &good);
    f.registry.stop();
    let reply = d.deliver_from("11", "package", "d-2", &fixed).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    d.wait_for_log("cannot check the delivery's digest", WAIT)
        .await;
    wait_state(&d, "idle").await;
    f.registry.restart().await;
    let again = d.deliver_from("11", "package", "d-2", &fixed).await;
    assert_eq!(
        (again.status, &again.body["status"]),
        (202, &"queued".into()),
        "{:?}",
        again.body
    );
    let history = f
        .wait_history("the good rollout", WAIT, |h| finished(h, 2))
        .await;
    assert_eq!(history[0]["outcome"], "succeeded", "{history:?}");
    wait_state(&d, "idle").await;
    // Its work succeeded: now a redelivery is a duplicate.
    let duplicate = d.deliver_from("11", "package", "d-2", &fixed).await;
    assert_eq!(
        (duplicate.status, &duplicate.body["status"]),
        (200, &"duplicate".into())
    );

    // The same delivery id through a second hook of the repository is that hook's own.
    let other_hook = d.deliver_from("12", "package", "d-2", &fixed).await;
    assert_eq!(
        (other_hook.status, &other_hook.body["status"]),
        (202, &"queued".into()),
        "{:?}",
        other_hook.body
    );
    let history = f
        .wait_history("the second hook's check", WAIT, |h| finished(h, 3))
        .await;
    assert_eq!(history[0]["outcome"], "noop", "{history:?}");
    assert_eq!(
        d.deliver_from("12", "package", "d-2", &fixed).await.status,
        200,
        "and a duplicate after it"
    );
    wait_state(&d, "idle").await;
    assert_eq!(f.history().await.len(), 3);
    assert_eq!(f.running_image(), format!("{}@{good}", f.repo));
}

/// Makes a state directory unwritable even for root (who ignores file modes): the
/// immutable attribute on the directory (no new files: lock files, the write probe) and on
/// the database and its write-ahead log (no writes through the open connection). Not on
/// `hoist.db-shm`: SQLite maps it, and a write to an immutable mapping is a SIGBUS.
/// Undone on drop, also when the test fails, so the directory can be removed.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        let paths: Vec<PathBuf> = [
            dir.to_path_buf(),
            dir.join("hoist.db"),
            dir.join("hoist.db-wal"),
        ]
        .into_iter()
        .filter(|p| p.exists())
        .collect();
        let guard = Immutable(paths.clone());
        for p in &paths {
            chattr("+i", p);
        }
        guard
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            chattr("-i", p);
        }
    }
}

fn chattr(flag: &str, path: &Path) {
    let out = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .expect("run chattr");
    assert!(
        out.status.success(),
        "chattr {flag} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_accepted_while_the_state_is_read_only_runs_once_it_is_writable() {
    let (f, d) = serve(Options::default(), "").await;
    let state = &f.state.path().join("state");
    assert_eq!(d.get("/readyz").await.status, 200);

    let frozen = Immutable::set(state);
    // It really is read-only for root.
    assert!(std::fs::write(state.join("probe-by-root"), "x").is_err());
    // `/readyz` checks by writing, at most once a second.
    let ready = wait_readyz(&d, 503).await;
    assert_eq!(ready.body["state"], "not writable");
    assert_eq!(ready.body["state_dir"], state.display().to_string());
    assert_eq!(ready.body["docker"], "ok");

    let body = package_event(REPO, &f.repo, "v2", &f.digests["v2"]);
    let reply = d.deliver_from("11", "package", "while-frozen", &body).await;
    assert_eq!(
        (reply.status, &reply.body["status"]),
        (202, &"queued".into()),
        "{:?}",
        reply.body
    );
    d.wait_for_log("The rollout could not start; the trigger is kept", WAIT)
        .await;
    // Tried again (each try first writes the refused trigger again), and still owed.
    let deadline = Instant::now() + WAIT;
    while d.log().matches("Cannot persist a pending trigger").count() < 3 {
        assert!(Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(d.get("/readyz").await.status, 503);
    assert_eq!(f.project.running_of(SERVICE).len(), 1, "no rollout ran");
    assert_eq!(f.running_image(), format!("{}:v1", f.repo));

    drop(frozen);
    let thawed = Instant::now();
    let history = f
        .wait_history("the kept trigger's rollout", WAIT, |h| finished(h, 1))
        .await;
    assert_eq!(history[0]["outcome"], "succeeded", "{history:?}");
    assert_eq!(
        history[0]["trigger"],
        format!(
            "webhook package (delivery {})",
            daemon::guid("while-frozen")
        )
    );
    assert_eq!(f.running_image(), f.pinned("v2"));
    wait_readyz(&d, 200).await;
    d.wait_for_log("The rollout started after earlier tries failed", WAIT)
        .await;
    let log = d.log();
    println!(
        "state read-only: readyz 503 naming {}; {} tries refused; rollout finished {:?} after the state became writable; first refusal: {}",
        state.display(),
        log.matches("Cannot persist a pending trigger").count(),
        thawed.elapsed(),
        log.lines()
            .find(|l| l.contains("could not start"))
            .unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_deploys_a_delivery_the_daemon_never_received_once() {
    let fake = FakeGithub::start(Behaviour::Normal).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("github-token"), "gh-t0ken\n").unwrap();
    let github = format!(
        "token_file = \"{}\"\napi_url = \"{}\"\nsweep_interval = \"10s\"\nhook_ids = {{ \"acme/web\" = 77 }}\n",
        dir.path().join("github-token").display(),
        fake.url
    );
    let mut f = Fixture::start(Options {
        service_extra: "github_repository = \"acme/web\"\n",
        ..Options::default()
    })
    .await;
    // GitHub tried to deliver it while hoist was unreachable, and never tries again.
    let payload: serde_json::Value =
        serde_json::from_slice(&package_event(REPO, &f.repo, "v2", &f.digests["v2"])).unwrap();
    fake.add_delivery(HookDelivery {
        repository: REPO.into(),
        hook: 77,
        id: 9001,
        guid: daemon::guid("missed-1"),
        event: "package".into(),
        status_code: 502,
        payload: payload.clone(),
    });
    // An event hoist does not act on is never fetched.
    fake.add_delivery(HookDelivery {
        repository: REPO.into(),
        hook: 77,
        id: 9002,
        guid: daemon::guid("an-issue"),
        event: "issues".into(),
        status_code: 502,
        payload: serde_json::json!({ "action": "opened", "repository": { "full_name": REPO } }),
    });
    f.options.config_extra = format!("{}{github}", daemon::config(f.state.path(), ""));
    f.write_config("");
    let d = Daemon::start(&f.config, &[]).await;

    let history = f
        .wait_history("the swept rollout", WAIT, |h| finished(h, 1))
        .await;
    assert_eq!(history[0]["outcome"], "succeeded", "{history:?}");
    assert_eq!(
        history[0]["trigger"],
        format!("webhook package (delivery {})", daemon::guid("missed-1"))
    );
    assert_eq!(f.running_image(), f.pinned("v2"));
    d.wait_for_log("Acting on a missed webhook delivery", WAIT)
        .await;

    // Two more sweeps list it again and act on nothing.
    let list = "/repos/acme/web/hooks/77/deliveries";
    let requests = fake
        .wait_for("three sweeps", Duration::from_secs(60), |r| {
            r.iter()
                .filter(|r| r.method == "GET" && r.path == list)
                .count()
                >= 3
        })
        .await;
    let fetched: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with(&format!("{list}/")))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        fetched,
        [format!("{list}/9001")],
        "one payload fetched, once"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.path == list)
            .all(|r| r.authorization.as_deref() == Some("Bearer gh-t0ken")),
        "{requests:#?}"
    );
    assert_eq!(f.history().await.len(), 1, "deployed once");
    // Now GitHub's own redelivery of it reaches hoist: a duplicate.
    let late = d
        .deliver_from("77", "package", "missed-1", payload.to_string().as_bytes())
        .await;
    assert_eq!(
        (late.status, &late.body["status"]),
        (200, &"duplicate".into())
    );
}
