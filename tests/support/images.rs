//! The demo app's test images, built `FROM scratch` from the statically linked
//! `hoist-demo` binary (no image can be pulled here), once per test process, and pushed
//! to a test's own registry repository.

use std::path::Path;
use std::process::Command;

use tokio::sync::OnceCell;

use super::registry::TestRegistry;

/// The behaviours tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    V1,
    V2,
    /// Never healthy: `/healthz` answers 500.
    Broken,
    /// Takes 3 s after SIGTERM to finish and exit.
    Slow,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::V1, Variant::V2, Variant::Broken, Variant::Slow];

    /// The version the app answers on `/`.
    pub fn version(self) -> &'static str {
        match self {
            Variant::V1 => "v1",
            Variant::V2 => "v2",
            Variant::Broken => "broken",
            Variant::Slow => "slow",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Variant::V1 => "ENV DEMO_VERSION=v1",
            Variant::V2 => "ENV DEMO_VERSION=v2",
            Variant::Broken => "ENV DEMO_VERSION=broken DEMO_BROKEN=1",
            Variant::Slow => "ENV DEMO_VERSION=slow DEMO_SHUTDOWN_DELAY_MS=3000",
        }
    }
}

static BUILT: OnceCell<String> = OnceCell::const_new();

/// Builds the four local images (tag prefix returned), reusing them when the demo binary
/// has not changed.
pub async fn build() -> &'static str {
    BUILT
        .get_or_init(|| async {
            tokio::task::spawn_blocking(build_blocking)
                .await
                .expect("image build task")
        })
        .await
}

pub fn local_tag(prefix: &str, v: Variant) -> String {
    format!("{prefix}:{}", v.version())
}

fn build_blocking() -> String {
    let binary = Path::new(env!("CARGO_BIN_EXE_hoist-demo"));
    let bytes = std::fs::read(binary).expect("read hoist-demo binary");
    let hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))[..12].to_string()
    };
    let prefix = format!("hoist-demo-{hash}");
    let dir = tempfile::tempdir().expect("build context");
    std::fs::copy(binary, dir.path().join("demo")).expect("copy demo binary");
    for v in Variant::ALL {
        let tag = local_tag(&prefix, v);
        if docker(&["image", "inspect", &tag]).status.success() {
            continue;
        }
        let dockerfile = format!(
            "FROM scratch\nCOPY demo /demo\n{}\nEXPOSE 8000\nHEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD [\"/demo\", \"check\"]\nENTRYPOINT [\"/demo\"]\n",
            v.env()
        );
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
        let out = docker(&["build", "-q", "-t", &tag, &dir.path().display().to_string()]);
        assert!(
            out.status.success(),
            "docker build {tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    prefix
}

/// Pushes `variant` as `<registry>/<repo>:<tag>` and returns its digest. The registry tag
/// is removed from the local engine afterwards, so that hoist really pulls.
pub async fn push(registry: &TestRegistry, repo: &str, variant: Variant, tag: &str) -> String {
    let prefix = build().await;
    let source = local_tag(prefix, variant);
    let target = format!("{}:{tag}", registry.repo(repo));
    let config = registry.docker_config_dir();
    tokio::task::spawn_blocking(move || {
        let out = docker(&["tag", &source, &target]);
        assert!(out.status.success(), "docker tag: {out:?}");
        let out = Command::new("docker")
            .env("DOCKER_CONFIG", &config)
            .args(["push", &target])
            .output()
            .expect("docker push");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "docker push {target} failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let digest = text
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap_or_else(|| panic!("no digest in push output: {text}"))
            .to_string();
        let _ = docker(&["rmi", &target]);
        digest
    })
    .await
    .expect("push task")
}

/// Removes every local image reference into `registry` (pulled by hoist during a test).
pub fn forget(registry_addr: &str) {
    let out = docker(&[
        "images",
        "--digests",
        "--format",
        "{{.Repository}}@{{.Digest}} {{.Repository}}:{{.Tag}}",
    ]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        for reference in line.split_whitespace() {
            if reference.starts_with(registry_addr)
                && !reference.ends_with("@<none>")
                && !reference.ends_with(":<none>")
            {
                let _ = docker(&["rmi", reference]);
            }
        }
    }
}

pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}
