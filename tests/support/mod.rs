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
pub mod registry;
pub mod traefik;

use std::path::PathBuf;

/// A tool `scripts/setup` installs: `$ENV` when set, else `$HOIST_TOOLS/bin/<name>` (default
/// `${XDG_CACHE_HOME:-$HOME/.cache}/hoist-tools/bin/<name>`).
pub fn tool(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("HOIST_TOOLS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("hoist-tools")
        });
    let path = tools.join("bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed at {}: run scripts/setup (or set {env} to the binary)",
        path.display()
    );
    path
}

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
