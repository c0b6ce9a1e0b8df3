//! A compose project of its own per test: a temp directory with docker-compose.yml and
//! .env, driven with the real `docker-compose`, torn down on drop (also when the test
//! fails): containers (including those hoist created), networks and the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

use super::images::docker;

pub struct Project {
    pub name: String,
    pub dir: TempDir,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}x{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 10_000
    )
}

impl Project {
    pub fn new(prefix: &str) -> Project {
        Project {
            name: unique(prefix),
            dir: tempfile::Builder::new()
                .prefix("hoist-project-")
                .tempdir()
                .expect("project dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn compose_file(&self) -> PathBuf {
        self.path().join("docker-compose.yml")
    }

    pub fn env_file(&self) -> PathBuf {
        self.path().join(".env")
    }

    /// The Docker network Traefik (the test proxy) reaches services on.
    pub fn network(&self) -> String {
        format!("{}-web", self.name)
    }

    pub fn write_compose(&self, yaml: &str) {
        std::fs::write(self.compose_file(), yaml).expect("write compose file");
    }

    /// Runs `docker-compose -p <project> -f <file> <args>` in the project directory, so it
    /// reads the project's `.env`.
    pub fn compose(&self, args: &[&str]) -> Output {
        let file = self.compose_file().display().to_string();
        Command::new("docker-compose")
            .current_dir(self.path())
            .args(["--no-ansi", "-p", &self.name, "-f", &file])
            .args(args)
            .output()
            .expect("docker-compose must be installed")
    }

    pub fn compose_ok(&self, args: &[&str]) -> Output {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Ids of the project's containers (any state).
    pub fn containers(&self) -> Vec<String> {
        self.ids(true)
    }

    /// Ids of the project's running containers.
    pub fn running(&self) -> Vec<String> {
        self.ids(false)
    }

    /// Ids of the running containers of one compose service.
    pub fn running_of(&self, service: &str) -> Vec<String> {
        let filter = format!("label=com.docker.compose.service={service}");
        self.ids_with(false, &filter)
    }

    fn ids(&self, all: bool) -> Vec<String> {
        self.ids_with(all, "")
    }

    fn ids_with(&self, all: bool, extra_filter: &str) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
        if !extra_filter.is_empty() {
            args.extend(["--filter", extra_filter]);
        }
        if all {
            args.push("-a");
        }
        let out = docker(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Ignore failures: the point is to leave nothing behind, whatever state we are in.
        let ids = self.containers();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
        if self.compose_file().exists() {
            let _ = self.compose(&["down", "-v", "--remove-orphans"]);
        }
        let _ = docker(&["network", "rm", &self.network()]);
    }
}
