//! SIGKILL at every step of a rollout (the `fault-injection` feature's kill points), under
//! load: recovery leaves exactly one healthy version serving, the journal shows the
//! interrupted rollout, and the next deploys work — without a failed request.

use std::time::Duration;

use crate::support::hoist::{Fixture, Options, SERVICE};

async fn crash_at(point: &str, survivor: &str) {
    assert!(
        hoist::fault::POINTS.contains(&point),
        "unknown fault point {point}"
    );
    let (f, load) = Fixture::start_serving(Options::default()).await;

    let run = f
        .hoist_env(
            &["deploy", SERVICE, "--tag", "v2"],
            &[("HOIST_FAULT", point)],
        )
        .await;
    assert_eq!(
        run.code,
        -1,
        "hoist must die by SIGKILL at {point}:\n{}",
        run.text()
    );
    run.assert_stderr(&format!("SIGKILL at {point}"));
    assert_eq!(
        f.history().await[0]["outcome"],
        "running",
        "the journal still shows the rollout"
    );

    // The next start recovers.
    let run = f.hoist(&["recover"]).await;
    run.assert_code(0);
    assert_eq!(
        f.project.containers().len(),
        1,
        "exactly one container is left:\n{}",
        run.text()
    );
    let running = f.running_image();
    assert!(
        running.ends_with(&f.digests[survivor]) || running.ends_with(&format!(":{survivor}")),
        "after a crash at {point}, {survivor} serves (running {running})"
    );
    load.wait_until_serving(survivor, Duration::from_secs(30))
        .await
        .expect("one version serves");
    let entry = &f.history().await[0];
    assert_eq!(entry["outcome"], "interrupted", "{entry:#}");
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .starts_with("hoist stopped during"),
        "{entry:#}"
    );
    if survivor == "v2" {
        let env = std::fs::read_to_string(f.project.env_file()).unwrap();
        assert_eq!(
            env,
            format!("WEB_IMAGE={}\n", f.pinned("v2")),
            "recovery recorded the adopted digest"
        );
    }

    // And the next rollouts work.
    let other = if survivor == "v1" { "v2" } else { "v1" };
    f.deploy(other).await.assert_code(0);
    f.deploy(survivor).await.assert_code(0);
    load.wait_until_serving(survivor, Duration::from_secs(30))
        .await
        .expect("serves");
    let report = load.stop().await;
    println!("crash at {point}: {report}");
    assert_eq!(report.failed, 0, "crash at {point}: {report}");
}

macro_rules! crash_tests {
    ($($name:ident: $point:literal => $survivor:literal,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            crash_at($point, $survivor).await;
        }
    )*
    #[test]
    fn every_fault_point_is_tested() {
        let tested = [$($point),*];
        for p in hoist::fault::POINTS {
            assert!(tested.contains(p), "fault point {p} has no crash test");
        }
    }
    };
}

crash_tests! {
    crash_at_resolve: "resolve" => "v1",
    crash_at_pull: "pull" => "v1",
    crash_at_start: "start" => "v1",
    crash_after_create: "start:created" => "v1",
    crash_during_health: "health" => "v1",
    crash_at_switch: "switch" => "v2",
    crash_at_drain: "drain" => "v2",
    crash_after_cord_cut: "drain:cut" => "v2",
    crash_after_old_stopped: "drain:stopped" => "v2",
    crash_at_record: "record" => "v2",
    crash_after_env_written: "record:env-written" => "v2",
}
