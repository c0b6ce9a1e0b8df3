//! The drain cord's two promises, through the real Traefik: a short hiccup of the app's own
//! health check never takes a container out of the pool (the probe tries the app again
//! before failing), and a cut cord takes it out at the next probe, within the documented
//! bound of one `cord_interval` plus one probe's timeout.

use std::time::{Duration, Instant};

use crate::support::hoist::{Fixture, Options};
use crate::support::images;

/// A probe running when the cord is cut may still pass; the next one fails.
const CUT_BOUND: Duration = Duration::from_secs(1 + 4);

fn health(id: &str) -> serde_json::Value {
    let out = images::docker(&["inspect", "-f", "{{json .State.Health}}", id]);
    serde_json::from_slice(&out.stdout).expect("health JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_hiccup_keeps_the_container_in_the_pool_and_a_cut_cord_takes_it_out_in_time() {
    let (f, load) = Fixture::start_serving(Options {
        cord_interval: "1s",
        ..Options::default()
    })
    .await;
    let id = f.project.running_of("web")[0].clone();

    // Right after a probe ends, the app's /healthz fails for 1.5 s: Docker starts the next
    // probe one interval (1 s) after the last one ended, so it runs into the failure, which
    // ends well within the probe's 2 s tolerance.
    let last_end = |h: &serde_json::Value| {
        h["Log"]
            .as_array()
            .and_then(|log| log.last())
            .map(|p| p["End"].to_string())
    };
    let before = last_end(&health(&id));
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_end(&health(&id)) == before {
        assert!(Instant::now() < deadline, "no probe ran: {}", health(&id));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::new();
    let hiccup = http
        .get(format!("http://{}/hiccup?ms=1500", f.traefik.addr()))
        .header("host", &f.host)
        .send()
        .await
        .unwrap();
    assert_eq!(hiccup.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = health(&id);
        let saw_it = h["Log"].as_array().unwrap().iter().any(|probe| {
            probe["Output"]
                .as_str()
                .is_some_and(|o| o.contains("the app failed"))
        });
        if saw_it {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no probe ran into the hiccup: {h:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let h = health(&id);
    assert_eq!(h["Status"], "healthy", "{h:#}");
    assert_eq!(h["FailingStreak"], 0, "{h:#}");
    load.wait_until_serving("v1", Duration::from_secs(10))
        .await
        .unwrap();
    let report = load.stop().await;
    println!("during the app's hiccup: {report}");
    assert_eq!(report.failed, 0, "{report}");

    // A rollout cuts the old container's cord: the drain step says how soon it left.
    f.deploy("v2").await.assert_code(0);
    let history = f.history().await;
    let drain = history[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "drain")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    let after: f64 = drain
        .split("unhealthy after ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {drain:?}"));
    println!("cord cut -> unhealthy after {after:.1}s (bound {CUT_BOUND:?})");
    assert!(after <= CUT_BOUND.as_secs_f64(), "{drain}");
}
