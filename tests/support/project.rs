//! A compose project of its own per test: a temp directory with docker-compose.yml and
//! .env, driven with real Compose (v2, or Debian's docker-compose v1 where a test asks),
//! torn down on drop (also when the test fails): containers (including those hoist
//! created), networks and the directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

use super::images::docker;

/// Which Compose drives a project. Both are in use in the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compose {
    /// Debian's `docker-compose` 1.29 (Python): containers are named `project_service_N`.
    V1,
    /// Docker Compose v2 (the official binary `scripts/setup` installs, run standalone):
    /// containers are named `project-service-N`.
    V2,
}

impl Compose {
    /// The program (what hoist.toml's `[compose] command` names).
    pub fn program(self) -> Vec<String> {
        match self {
            Compose::V1 => vec!["docker-compose".into()],
            Compose::V2 => vec![
                super::tool("HOIST_COMPOSE_V2", "docker-compose-v2")
                    .display()
                    .to_string(),
            ],
        }
    }

    /// The command with its global flags (no colours), before `-p` and `-f`.
    pub fn command(self) -> Command {
        let mut command = Command::new(&self.program()[0]);
        command.args(["--ansi", "never"]);
        command
    }

    /// The name this Compose gives container `n` of a service.
    pub fn container_name(self, project: &str, service: &str, n: u32) -> String {
        match self {
            Compose::V1 => format!("{project}_{service}_{n}"),
            Compose::V2 => format!("{project}-{service}-{n}"),
        }
    }
}

impl fmt::Display for Compose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compose::V1 => "docker-compose v1",
            Compose::V2 => "docker compose v2",
        })
    }
}

pub struct Project {
    pub name: String,
    pub dir: TempDir,
    pub compose: Compose,
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
    /// A project driven by Compose v2.
    pub fn new(prefix: &str) -> Project {
        Project::with(prefix, Compose::V2)
    }

    pub fn with(prefix: &str, compose: Compose) -> Project {
        Project {
            compose,
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

    /// The Docker network Traefik reaches services on.
    pub fn network(&self) -> String {
        format!("{}-web", self.name)
    }

    pub fn write_compose(&self, yaml: &str) {
        std::fs::write(self.compose_file(), yaml).expect("write compose file");
    }

    /// `compose -p <project> -f <file> <args>` in the project directory, so that it reads
    /// the project's `.env`.
    pub fn compose_command(&self, args: &[&str]) -> Command {
        let file = self.compose_file().display().to_string();
        let mut command = self.compose.command();
        command
            .current_dir(self.path())
            .args(["-p", &self.name, "-f", &file])
            .args(args);
        command
    }

    pub fn compose(&self, args: &[&str]) -> Output {
        self.compose_command(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.compose))
    }

    pub fn compose_ok(&self, args: &[&str]) -> Output {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{}{}",
            self.compose,
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
