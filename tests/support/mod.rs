//! Test support shared by the integration tests and the benchmark: real Docker, a real
//! registry, real Compose (v2 and v1), the real Traefik and a load generator.
#![allow(dead_code)]

pub mod daemon;
pub mod gateway;
pub mod github;
pub mod hoist;
pub mod images;
pub mod load;
pub mod project;
pub mod traefik;
pub mod registry;

/// Fails with a clear message when there is no Docker engine: these tests need a real one.
pub fn require_docker() {
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the Docker engine is not reachable (`docker info` failed): {}. \
             hoist's tests run against a real engine; start dockerd.",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("the docker CLI is not installed ({e}); hoist's tests need Docker"),
    }
}

/// An error with its causes, `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
