//! The project's own Docker Compose: which CLI runs it (the v2 plugin `docker compose`, a
//! standalone v2, or docker-compose v1), where the project's files are, and the commands a
//! rollout runs with it. Commands are argument vectors, never a shell string. The new
//! image reaches compose through a variable in the process environment (which beats the
//! env file in compose's interpolation), so no file changes until a rollout has succeeded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::config::ComposeOverrides;
use crate::docker::inspect::Container;

pub(crate) const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub(crate) const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub(crate) const ENVIRONMENT_FILE: &str = "com.docker.compose.project.environment_file";
pub(crate) const VERSION: &str = "com.docker.compose.version";
pub(crate) const CONFIG_HASH: &str = "com.docker.compose.config-hash";

/// How long one compose command may take: `up -d` creates and starts containers, it does
/// not wait for their health.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How much of compose's output a journal entry keeps.
const OUTPUT_CAP: usize = 3000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ComposeError {
    #[error(
        "no Docker Compose CLI found (tried {tried}); install the compose plugin or \
         docker-compose, or name it in hoist.toml: [compose] command = [\"/path/to/docker-compose\"]"
    )]
    NotFound { tried: String },
    #[error("`{command}` could not run: {detail}")]
    Spawn { command: String, detail: String },
    #[error("`{command}` failed (exit {code}); compose said:\n{output}")]
    Failed {
        command: String,
        code: i32,
        output: String,
    },
    #[error("`{command}` did not finish within {}s", TIMEOUT.as_secs())]
    TimedOut { command: String },
    /// The project's files cannot be found or read.
    #[error("{0}")]
    Project(String),
}

/// A Docker Compose CLI that answered `version`.
#[derive(Debug, Clone)]
pub(crate) struct Cli {
    /// The program and its leading arguments (`docker compose`).
    command: Vec<String>,
    /// What `version --short` printed, without a leading `v` (`2.40.3`, `1.29.2`).
    pub version: String,
    /// Passed on as `DOCKER_HOST`, so compose talks to the engine hoist talks to.
    docker_host: Option<String>,
}

impl Cli {
    /// The configured command, else the first of the v2 plugin and `docker-compose` that
    /// answers `version --short`.
    pub(crate) async fn detect(
        configured: Option<&[String]>,
        docker_host: Option<&str>,
    ) -> Result<Cli, ComposeError> {
        let candidates: Vec<Vec<String>> = match configured {
            Some(c) => vec![c.to_vec()],
            None => vec![
                vec!["docker".into(), "compose".into()],
                vec!["docker-compose".into()],
            ],
        };
        let mut tried = Vec::new();
        for command in candidates {
            let mut cli = Cli {
                command,
                version: String::new(),
                docker_host: docker_host.map(str::to_string),
            };
            match cli.run_plain(&["version", "--short"], &[]).await {
                Ok(out) => {
                    let version = out.stdout.trim().trim_start_matches('v').to_string();
                    if version
                        .split('.')
                        .next()
                        .is_some_and(|m| m.parse::<u32>().is_ok())
                    {
                        cli.version = version;
                        return Ok(cli);
                    }
                    tried.push(format!(
                        "`{}` (answered {:?})",
                        cli.display(),
                        out.stdout.trim()
                    ));
                }
                Err(e) => tried.push(format!("`{}` ({})", cli.display(), first_line(&e))),
            }
        }
        Err(ComposeError::NotFound {
            tried: tried.join(", "),
        })
    }

    /// 1 for docker-compose 1.x, 2 for Compose v2.
    pub(crate) fn major(&self) -> u32 {
        major(&self.version).unwrap_or(0)
    }

    pub(crate) fn display(&self) -> String {
        self.command.join(" ")
    }

    /// `config --hash SERVICE`: the hash compose compares with a container's config-hash
    /// label, with `env` added to hoist's environment. Interpolation warnings (an unset
    /// variable) are errors: compose would run the service with a blank value.
    pub(crate) async fn config_hash(
        &self,
        project: &Project,
        service: &str,
        env: &[(&str, &str)],
    ) -> Result<String, ComposeError> {
        let out = self
            .run(project, &["config", "--hash", service], env)
            .await?;
        unset_variables(&out.stderr)?;
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(service)?.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| {
                ComposeError::Project(format!(
                    "`{} config --hash {service}` printed no hash: {}",
                    self.display(),
                    crate::util::escape(out.stdout.trim(), 300)
                ))
            })
    }

    /// The service's definition as compose resolves it (v2's `config --format json`);
    /// `None` from docker-compose v1, which prints only YAML.
    pub(crate) async fn config_json(
        &self,
        project: &Project,
        service: &str,
        env: &[(&str, &str)],
    ) -> Result<Option<serde_json::Value>, ComposeError> {
        if self.major() < 2 {
            return Ok(None);
        }
        let out = self
            .run(project, &["config", "--format", "json", service], env)
            .await?;
        let json: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| {
            ComposeError::Project(format!(
                "`{} config --format json` printed no JSON ({e})",
                self.display()
            ))
        })?;
        Ok(json.pointer(&format!("/services/{service}")).cloned())
    }

    /// `up -d --no-deps --no-recreate --scale SERVICE=N SERVICE`: compose creates the
    /// containers missing to reach `scale` from the compose definition, and leaves the
    /// running ones untouched. Returns what compose printed.
    pub(crate) async fn up_scaled(
        &self,
        project: &Project,
        service: &str,
        scale: usize,
        env: &[(&str, &str)],
    ) -> Result<String, ComposeError> {
        let scale = format!("{service}={scale}");
        let out = self
            .run(
                project,
                &[
                    "up",
                    "-d",
                    "--no-deps",
                    "--no-recreate",
                    "--scale",
                    &scale,
                    service,
                ],
                env,
            )
            .await?;
        Ok(out.combined())
    }

    async fn run(
        &self,
        project: &Project,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Output, ComposeError> {
        let mut all: Vec<String> = vec!["--ansi".into(), "never".into()];
        all.extend(["-p".into(), project.name.clone()]);
        for file in &project.files {
            all.extend(["-f".into(), file.display().to_string()]);
        }
        all.extend([
            "--project-directory".into(),
            project.working_dir.display().to_string(),
        ]);
        if let Some(env_file) = &project.env_file {
            all.extend(["--env-file".into(), env_file.display().to_string()]);
        }
        all.extend(args.iter().map(|a| (*a).to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.run_plain(&refs, env).await
    }

    async fn run_plain(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output, ComposeError> {
        let shown = format!("{} {}", self.display(), args.join(" "));
        let Some((program, leading)) = self.command.split_first() else {
            return Err(ComposeError::Spawn {
                command: shown,
                detail: "no program named".into(),
            });
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(leading)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(host) = &self.docker_host {
            command.env("DOCKER_HOST", host);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().map_err(|e| ComposeError::Spawn {
            command: shown.clone(),
            detail: e.to_string(),
        })?;
        let out = match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(ComposeError::Spawn {
                    command: shown,
                    detail: e.to_string(),
                });
            }
            Err(_) => return Err(ComposeError::TimedOut { command: shown }),
        };
        let output = Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if !out.status.success() {
            return Err(ComposeError::Failed {
                command: shown,
                code: out.status.code().unwrap_or(-1),
                output: output.capped(),
            });
        }
        Ok(output)
    }
}

struct Output {
    stdout: String,
    stderr: String,
}

impl Output {
    fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Compose's words, escaped and cut to what a journal entry keeps (the end, where the
    /// error is).
    fn capped(&self) -> String {
        let text = self.combined();
        let text = text.trim();
        let tail = match text.char_indices().rev().nth(OUTPUT_CAP) {
            Some((i, _)) => &text[i..],
            None => text,
        };
        tail.lines()
            .map(|l| format!("    {}", crate::util::escape(l, 400)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn first_line(e: &ComposeError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

fn major(version: &str) -> Option<u32> {
    version
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Compose's warnings about variables the file interpolates but nobody set (v2:
/// `level=warning msg="The \"X\" variable is not set. ..."`, v1: `The X variable is not
/// set. ...`), as an error that quotes them.
fn unset_variables(stderr: &str) -> Result<(), ComposeError> {
    let warnings: BTreeSet<String> = stderr
        .lines()
        .filter(|l| l.contains("variable is not set"))
        .map(|l| {
            let text = l.split_once("msg=").map_or(l, |(_, m)| m);
            text.trim().trim_matches('"').replace("\\\"", "\"")
        })
        .collect();
    if warnings.is_empty() {
        return Ok(());
    }
    Err(ComposeError::Project(format!(
        "the compose file uses variables that are set neither in hoist's environment nor in \
         the project's env file; compose said:\n{}",
        warnings
            .iter()
            .map(|w| format!("    {}", crate::util::escape(w, 300)))
            .collect::<Vec<_>>()
            .join("\n")
    )))
}

/// Where a compose project's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Project {
    pub name: String,
    pub working_dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub env_file: Option<PathBuf>,
}

impl Project {
    /// From the labels compose put on a running container (`project.working_dir`,
    /// `project.config_files`, v2's `project.environment_file`), each overridable in
    /// hoist.toml. Every file must exist: a project that moved is refused before anything
    /// starts.
    pub(crate) fn locate(
        name: &str,
        container: &Container,
        overrides: &ComposeOverrides,
    ) -> Result<Project, ComposeError> {
        let working_dir = match (&overrides.working_dir, container.label(WORKING_DIR)) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dir)) if !dir.is_empty() => PathBuf::from(dir),
            (None, _) => {
                return Err(ComposeError::Project(format!(
                    "the running container {} has no {WORKING_DIR} label, so hoist cannot tell \
                     where its compose project is; set compose_working_dir and compose_files \
                     for the service in hoist.toml",
                    container.name()
                )));
            }
        };
        let files: Vec<PathBuf> = match &overrides.files {
            Some(files) => files.clone(),
            None => container
                .label(CONFIG_FILES)
                .unwrap_or_default()
                .split(',')
                .filter(|f| !f.is_empty())
                // docker-compose v1 records the files relative to the working directory.
                .map(|f| working_dir.join(f))
                .collect(),
        };
        if files.is_empty() {
            return Err(ComposeError::Project(format!(
                "the running container {} does not say which compose files created it \
                 ({CONFIG_FILES}); set compose_files for the service in hoist.toml",
                container.name()
            )));
        }
        let env_file = match &overrides.env_file {
            Some(f) => Some(f.clone()),
            None => container
                .label(ENVIRONMENT_FILE)
                .filter(|f| !f.is_empty())
                .map(|f| working_dir.join(f)),
        };
        let project = Project {
            name: name.to_string(),
            working_dir,
            files,
            env_file,
        };
        project.check_files()?;
        Ok(project)
    }

    fn check_files(&self) -> Result<(), ComposeError> {
        let missing = |p: &Path| !p.exists();
        if missing(&self.working_dir) {
            return Err(ComposeError::Project(format!(
                "the compose project's directory {} does not exist (moved?); set \
                 compose_working_dir for the service in hoist.toml",
                self.working_dir.display()
            )));
        }
        for file in self.files.iter().chain(&self.env_file) {
            if missing(file) {
                return Err(ComposeError::Project(format!(
                    "the compose project's file {} does not exist (moved?); the running \
                     containers were created from it. Set compose_files (or \
                     compose_env_file) for the service in hoist.toml",
                    file.display()
                )));
            }
        }
        Ok(())
    }
}

/// Whether the compose definition of a service changed since `running` was created: its
/// config hash, with `var` (the service's env_var) set to the image the container runs,
/// differs from the container's config-hash label. What `docker compose up -d` would
/// recreate, and what `hoist deploy` rolls out even at the same digest.
pub(crate) async fn definition_changed(
    compose: &crate::config::ComposeConfig,
    docker_host: Option<&str>,
    s: &crate::config::ServiceConfig,
    running: &Container,
) -> Result<bool, ComposeError> {
    let cli = Cli::detect(compose.command.as_deref(), docker_host).await?;
    if created_by_major(running).is_some_and(|m| m != cli.major()) {
        // Another compose's hashes say nothing; the rollout refuses this case anyway.
        return Ok(false);
    }
    let project = Project::locate(&s.compose_project, running, &s.compose)?;
    let image = running.configured_image();
    let env: Vec<(&str, &str)> = s.env_file.iter().map(|t| (t.var.as_str(), image)).collect();
    let hash = cli.config_hash(&project, &s.compose_service, &env).await?;
    Ok(running.label(CONFIG_HASH) != Some(hash.as_str()))
}

/// The compose major version that created a container (its `com.docker.compose.version`).
pub(crate) fn created_by_major(container: &Container) -> Option<u32> {
    major(container.label(VERSION)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variable_warnings_of_both_versions_are_quoted() {
        let v2 = "time=\"2026-12-06T16:52:17Z\" level=warning msg=\"The \\\"UNSET_ONE\\\" variable is not set. Defaulting to a blank string.\"\n";
        let e = unset_variables(v2).unwrap_err().to_string();
        assert!(
            e.contains("The \"UNSET_ONE\" variable is not set. Defaulting to a blank string."),
            "{e}"
        );
        let v1 = "The UNSET_ONE variable is not set. Defaulting to a blank string.\nThe UNSET_ONE variable is not set. Defaulting to a blank string.\n";
        let e = unset_variables(v1).unwrap_err().to_string();
        assert_eq!(e.matches("UNSET_ONE").count(), 1, "deduplicated: {e}");
        assert!(unset_variables("Container x Running\n").is_ok());
    }

    #[test]
    fn versions() {
        assert_eq!(major("2.40.3"), Some(2));
        assert_eq!(major("v2.1.0"), Some(2));
        assert_eq!(major("1.29.2"), Some(1));
        assert_eq!(major("dev"), None);
    }
}
