//! SIGHUP (`systemctl reload hoist`) against a real `hoist serve` in the middle of a
//! rollout: the config is checked and the result logged, and nothing is interrupted.

use std::time::Duration;

use crate::support::daemon::{self, Daemon, package_event};
use crate::support::hoist::{Fixture, Options};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_during_a_rollout_checks_the_config_and_interrupts_nothing() {
    let mut f = Fixture::start(Options {
        drain: "10s",
        service_extra: "github_repository = \"acme/web\"\n",
        ..Options::default()
    })
    .await;
    f.options.config_extra = daemon::config(f.state.path(), "");
    f.write_config("");
    let mut d = Daemon::start(&f.config, &[]).await;
    let body = package_event("acme/web", &f.repo, "v2", &f.digests["v2"]);
    assert_eq!(d.deliver("package", "hup-1", &body).await.status, 202);
    f.wait_history("the rollout to reach drain", WAIT, |h| {
        h.len() == 1 && h[0]["step"] == "drain"
    })
    .await;

    d.hang_up();
    d.wait_for_log(
        "SIGHUP received: the config is valid; applying it needs a restart",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(d.get("/healthz").await.status, 200);

    // An invalid config: every problem is logged, on lines of their own, and the
    // daemon goes on with the one it has.
    let good = std::fs::read_to_string(&f.config).unwrap();
    std::fs::write(&f.config, format!("{good}\n[bogus]\n[also_bogus]\n")).unwrap();
    d.hang_up();
    d.wait_for_log("the config has problems", Duration::from_secs(10))
        .await;
    std::fs::write(&f.config, &good).unwrap();
    let log = d.log();
    assert!(log.contains("problems=2"), "{log}");
    for key in ["bogus", "also_bogus"] {
        assert!(
            log.lines()
                .any(|l| l.contains("Config problem") && l.contains(key)),
            "{key} not logged:\n{log}"
        );
    }
    assert_eq!(d.get("/healthz").await.status, 200);
    assert_eq!(
        f.history().await[0]["outcome"],
        "running",
        "both SIGHUPs came during the drain"
    );

    let history = f
        .wait_history("the rollout", WAIT, |h| h[0]["outcome"] != "running")
        .await;
    assert_eq!(history[0]["outcome"], "succeeded", "{:#?}", history[0]);
    assert_eq!(f.project.containers().len(), 1, "{}", d.log());
    assert_eq!(f.running_image(), f.pinned("v2"));
    d.terminate();
    assert_eq!(d.wait(WAIT).await, 0, "{}", d.log());
}
