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
    run.assert_stderr("refused access");
    run.assert_stderr("rejected");
    assert!(!run.text().contains("not-the-password"));

    // No credentials in hoist.toml: ~/.docker/config.json (DOCKER_CONFIG) is used.
    f.write_config("\n");
    let run = f.deploy("v1").await;
    run.assert_code(1);
    run.assert_stderr("credentials required");
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
    run.assert_stderr("not found");
    let run = f
        .hoist(&["deploy", SERVICE, "--digest", "sha256:xyz"])
        .await;
    run.assert_code(2);
}

/// The registry client against a bearer-token registry (GHCR's and Docker Hub's scheme):
/// the token is fetched once with Basic credentials and reused, tag pages are followed,
/// wrong credentials and rate limits give clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_pagination_and_rate_limits() {
    use crate::support::gateway::Gateway;
    use crate::support::registry::TestRegistry;
    use hoist::config::{Config, Secrets, Track};
    use hoist::image::Repository;
    use hoist::registry::{Registry, RegistryError};

    let registry = TestRegistry::start().await;
    let mut digests = std::collections::HashMap::new();
    for (tag, variant) in [
        ("v1.2.9", Variant::V1),
        ("v1.3.0", Variant::V2),
        ("v2.0.0", Variant::Slow),
        ("v1.4.0-rc.1", Variant::Broken),
        ("main", Variant::V1),
    ] {
        digests.insert(tag, images::push(&registry, "acme/web", variant, tag).await);
    }
    let gateway = Gateway::start(&registry.addr, "bot", "tok3n", Some(2)).await;
    let config_for = |password: &str| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, password).unwrap();
        let text = format!(
            "[state]\ndir = \"/tmp/unused\"\n[[registries]]\nhost = \"{}\"\nusername = \"bot\"\npassword_file = \"{}\"\n[[services]]\nname = \"web\"\nenvironment = \"stage\"\ncompose_project = \"p\"\nimage = \"{}/acme/web\"\ntrack = \"main\"\nhost = \"a.test\"\nport = 80\n",
            gateway.addr,
            file.display(),
            gateway.addr
        );
        Config::parse(&text, std::path::Path::new("t.toml"), Secrets::Load).unwrap()
    };
    let config = config_for("tok3n");
    let client = Registry::with_docker_config(&config, None);
    let repo = Repository::parse(&format!("{}/acme/web", gateway.addr)).unwrap();

    let d = client.resolve(&repo, "main").await.unwrap();
    assert_eq!(d.as_str(), digests["main"]);
    let tags = client.list_tags(&repo).await.unwrap();
    assert_eq!(tags.len(), 5, "all pages of 2 were followed: {tags:?}");
    let picked = client
        .resolve_track(
            &repo,
            &Track::Semver(semver::VersionReq::parse("^1").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(picked.tag.as_deref(), Some("v1.3.0"));
    assert_eq!(picked.digest.as_str(), digests["v1.3.0"]);
    assert_eq!(
        gateway.tokens_issued(),
        1,
        "the token is cached until it expires"
    );

    gateway.set_rate_limited(Some(7));
    let err = client.resolve(&repo, "main").await.unwrap_err();
    assert!(
        matches!(err, RegistryError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 7),
        "{err}"
    );
    assert!(err.is_transient());
    gateway.set_rate_limited(None);

    let wrong = Registry::with_docker_config(&config_for("wrong"), None);
    let err = wrong.resolve(&repo, "main").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("rejected the configured credentials"),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong"));
}
