//! Resolving against a real registry: credentials (config and Docker client config),
//! refusals, and `semver:` tracks.

use crate::support::hoist::{Fixture, Options, SERVICE};
use crate::support::images::{self, Variant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn htpasswd_registry_with_configured_credentials() {
    let mut f = Fixture::start(Options {
        auth: true,
        ..Options::default()
    })
    .await;
    let run = f.deploy("v2").await;
    run.assert_code(0);
    assert_eq!(f.running_image(), f.pinned("v2"));
    assert!(!run.stderr.contains("s3cret-pw") && !run.stdout.contains("s3cret-pw"));

    // A wrong password: a clear refusal that never prints the password.
    let wrong = f.state.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    f.write_config(&format!(
        "[[registries]]\nhost = \"{}\"\nusername = \"deploy-bot\"\npassword_file = \"{}\"\n\n",
        f.registry.addr,
        wrong.display()
    ));
    let run = f.deploy("v1").await;
    run.assert_code(1);
    assert!(run.stderr.contains("refused access"), "{}", run.text());
    assert!(run.stderr.contains("rejected"), "{}", run.text());
    assert!(!run.text().contains("not-the-password"));

    // No credentials in hoist.toml: ~/.docker/config.json (DOCKER_CONFIG) is used.
    f.write_config("\n");
    let run = f.deploy("v1").await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("credentials required"),
        "{}",
        run.text()
    );
    let client_config = f.config.with_file_name("docker-client");
    std::fs::create_dir_all(&client_config).unwrap();
    std::fs::copy(
        f.registry.docker_config_dir().join("config.json"),
        client_config.join("config.json"),
    )
    .unwrap();
    f.deploy("v1").await.assert_code(0);
    assert_eq!(f.running_image(), f.pinned("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semver_track_takes_the_newest_match_and_skips_prereleases() {
    let f = Fixture::start(Options {
        tags: vec![
            ("v1", Variant::V1),
            ("v1.2.9", Variant::V1),
            ("v1.3.0", Variant::V2),
            ("v2.0.0", Variant::Slow),
            ("v1.4.0-rc.1", Variant::Broken),
        ],
        track: "semver:^1",
        ..Options::default()
    })
    .await;
    let run = f.hoist(&["deploy", SERVICE]).await;
    run.assert_code(0);
    assert_eq!(f.running_image(), f.pinned("v1.3.0"));
    let history = f.history().await;
    assert_eq!(history[0]["to_tag"], "v1.3.0");
    assert_eq!(history[0]["target"], "semver:^1");
    // A tag pushed later is picked up by the next deploy.
    let digest = images::push(
        &f.registry,
        &format!("{}/web", f.project.name),
        Variant::V1,
        "1.3.1",
    )
    .await;
    f.hoist(&["deploy", SERVICE]).await.assert_code(0);
    assert_eq!(f.running_image(), format!("{}@{digest}", f.repo));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explicit_digest_deploys_exactly_that_digest() {
    let f = Fixture::start(Options::default()).await;
    let digest = f.digests["v2"].clone();
    f.hoist(&["deploy", SERVICE, "--digest", &digest])
        .await
        .assert_code(0);
    assert_eq!(f.running_image(), f.pinned("v2"));
    let run = f
        .hoist(&[
            "deploy",
            SERVICE,
            "--digest",
            &format!("sha256:{}", "0".repeat(64)),
        ])
        .await;
    run.assert_code(1);
    assert!(run.stderr.contains("not found"), "{}", run.text());
    let run = f
        .hoist(&["deploy", SERVICE, "--digest", "sha256:xyz"])
        .await;
    run.assert_code(2);
}
