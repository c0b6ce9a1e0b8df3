//! SIGHUP (`systemctl reload hoist`) against a real `hoist serve` in the middle of a
//! rollout: a valid config is applied (a service it adds is polled and deployed), an
//! invalid one is logged and the running one stays, and the rollout is not interrupted.

use std::time::Duration;

use crate::support::daemon::{self, Daemon, package_event};
use crate::support::hoist::{Fixture, Options, PROD};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_applies_a_valid_config_keeps_an_invalid_one_out_and_interrupts_nothing() {
    let mut f = Fixture::start(Options {
        drain: "10s",
        service_extra: "github_repository = \"acme/web\"\n",
        // Compose runs web-prod too, but hoist starts without it in its config.
        prod: true,
        prod_extra: "poll_interval = \"1s\"\n",
        ..Options::default()
    })
    .await;
    f.options.prod = false;
    f.options.config_extra = daemon::config(f.state.path(), "");
    f.write_config("");
    let mut d = Daemon::start(&f.config, &[]).await;
    let body = package_event("acme/web", &f.repo, "v2", &f.digests["v2"]);
    assert_eq!(d.deliver("package", "hup-1", &body).await.status, 202);
    f.wait_history("the rollout to reach drain", WAIT, |h| {
        h.len() == 1 && h[0]["step"] == "drain"
    })
    .await;

    // An invalid config: every problem is logged, on lines of their own, and the
    // daemon goes on with the one it has.
    let good = std::fs::read_to_string(&f.config).unwrap();
    std::fs::write(&f.config, format!("{good}\n[bogus]\n[also_bogus]\n")).unwrap();
    d.hang_up();
    d.wait_for_log("the config has problems", Duration::from_secs(10))
        .await;
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

    // A valid one adding web-prod (polled every second, its track ahead of what runs), a
    // status token, and changing a setting only a restart can change.
    assert_eq!(d.get("/status").await.status, 200);
    let token = f.state.path().join("status-token");
    std::fs::write(&token, "reload-token\n").unwrap();
    f.options.prod = true;
    f.options.config_extra = daemon::config(
        f.state.path(),
        &format!(
            "max_parallel = 3\nstatus_token_file = \"{}\"\n",
            token.display()
        ),
    );
    f.write_config("");
    d.hang_up();
    d.wait_for_log("the new config is applied", Duration::from_secs(10))
        .await;
    assert_eq!(d.get("/status").await.status, 401, "the new token applies");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("key=server.max_parallel") && l.contains("until hoist restarts")),
        "{log}"
    );
    assert!(
        log.lines().any(
            |l| l.contains("the new config is applied") && l.contains(&format!("added={PROD}"))
        ),
        "{log}"
    );
    assert_eq!(
        f.history().await[0]["outcome"],
        "running",
        "both SIGHUPs came during the drain"
    );

    let history = f
        .wait_history("the rollout", WAIT, |h| h[0]["outcome"] != "running")
        .await;
    assert_eq!(history[0]["outcome"], "succeeded", "{:#?}", history[0]);
    assert_eq!(f.project.running_of("web").len(), 1, "{}", d.log());
    assert_eq!(f.running_image(), f.pinned("v2"));

    // The service the reload added was polled and rolled to its track.
    let prod = f
        .wait_history_of(PROD, "the added service's rollout", WAIT, |h| {
            h.first().is_some_and(|r| r["outcome"] != "running")
        })
        .await;
    assert_eq!(
        prod[0]["outcome"],
        "succeeded",
        "{:#?}\n{}",
        prod[0],
        d.log()
    );
    assert_eq!(prod[0]["trigger"], "poll", "{:#?}", prod[0]);
    assert_eq!(f.running_image_of(PROD), f.pinned("v2"));
    d.terminate();
    assert_eq!(d.wait(WAIT).await, 0, "{}", d.log());
}
