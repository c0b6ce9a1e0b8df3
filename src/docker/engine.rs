//! The Docker engine, through its API (bollard): the only place hoist talks to Docker.
//!
//! Thin, typed wrappers: each call names what it was doing in its error, and `Option` fields
//! from the API are turned into explicit values or errors here, not deeper in the rollout.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerInspectResponse, ContainerSummary, HealthStatusEnum};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::config::{Credentials, DockerConfig};
use crate::docker::inspect::{Container, LocalImage};

#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("cannot reach the Docker engine at {host}: {detail}")]
    Unreachable { host: String, detail: String },
    /// The engine did not answer a ping; in the engine client's own words.
    #[error("{0}")]
    NoAnswer(String),
    #[error("Docker engine: {action}: {detail}")]
    Call {
        action: String,
        detail: String,
        not_found: bool,
    },
}

impl EngineError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(
            self,
            EngineError::Call {
                not_found: true,
                ..
            }
        )
    }
}

fn call_error(action: impl Into<String>, e: bollard::errors::Error) -> EngineError {
    let (detail, not_found) = match &e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => (message.trim().to_string(), *status_code == 404),
        bollard::errors::Error::DockerStreamError { error } => (error.clone(), false),
        other => (other.to_string(), false),
    };
    EngineError::Call {
        action: action.into(),
        detail,
        not_found,
    }
}

/// How a container is doing, as far as routing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerStatus {
    pub running: bool,
    pub restarting: bool,
    pub exit_code: Option<i64>,
    pub health: Health,
    /// Output of the most recent health check, for error messages.
    pub last_probe: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// The container has no healthcheck.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Health::None => "none",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl ContainerStatus {
    pub(crate) fn from_inspect(c: &ContainerInspectResponse) -> Self {
        let state = c.state.clone().unwrap_or_default();
        let health = state.health.as_ref();
        let status = match health.and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING) => Health::Starting,
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            _ => Health::None,
        };
        let last_probe = health
            .and_then(|h| h.log.as_ref())
            .and_then(|log| log.last())
            .map(|r| {
                // The app's words (its healthcheck's output) reach the journal and the log.
                let output = crate::util::escape(r.output.as_deref().unwrap_or("").trim(), 300);
                format!(
                    "exit {}{}{}",
                    r.exit_code.unwrap_or(-1),
                    if output.is_empty() { "" } else { ": " },
                    output
                )
            });
        ContainerStatus {
            running: state.running.unwrap_or(false),
            restarting: state.restarting.unwrap_or(false),
            exit_code: state.exit_code,
            health: status,
            last_probe,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects and agrees on an API version (the engine may be older than bollard's default).
    pub(crate) async fn connect(config: &DockerConfig) -> Result<Engine, EngineError> {
        let host = config
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let unreachable = |detail: String| EngineError::Unreachable {
            host: host.clone(),
            detail,
        };
        let docker = Docker::connect_with_host(&host).map_err(|e| unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine { docker })
    }

    /// Whether the engine answers now (readiness).
    pub(crate) async fn ping(&self) -> Result<(), EngineError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| EngineError::NoAnswer(e.to_string()))
    }

    /// Pulls `reference` (normally `repo@digest`), reporting progress lines to `progress`.
    pub(crate) async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
        registry: &str,
        mut progress: impl FnMut(&str),
    ) -> Result<(), EngineError> {
        let options = CreateImageOptionsBuilder::new()
            .from_image(reference)
            .build();
        let credentials = credentials.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.expose().to_string()),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| call_error(format!("pull {reference}"), e))?;
            if let Some(status) = info.status {
                let bytes = info
                    .progress_detail
                    .and_then(|p| Some((p.current?, p.total?)))
                    .map(|(c, t)| format!(" {}/{} kB", c / 1000, t / 1000))
                    .unwrap_or_default();
                let line = match info.id {
                    Some(id) => format!("{id}: {status}{bytes}"),
                    None => status,
                };
                progress(&line);
            }
        }
        Ok(())
    }

    pub(crate) async fn inspect_image(&self, reference: &str) -> Result<LocalImage, EngineError> {
        self.docker
            .inspect_image(reference)
            .await
            .map(LocalImage::from)
            .map_err(|e| call_error(format!("inspect image {reference}"), e))
    }

    /// All containers (running or not) carrying every one of `labels`.
    pub(crate) async fn containers_with_labels(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters: HashMap<&str, Vec<String>> = HashMap::from([(
            "label",
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| call_error("list containers", e))
    }

    pub(crate) async fn inspect(&self, id: &str) -> Result<Container, EngineError> {
        self.docker
            .inspect_container(id, None)
            .await
            .map(Container::from)
            .map_err(|e| call_error(format!("inspect container {}", short(id)), e))
    }

    /// `None` when the container no longer exists.
    pub(crate) async fn status(&self, id: &str) -> Result<Option<ContainerStatus>, EngineError> {
        match self.inspect(id).await {
            Ok(c) => Ok(Some(c.status())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| call_error(format!("start container {}", short(id)), e))
    }

    /// The container's stop signal (compose's `stop_signal`, else the image's, else
    /// SIGTERM), then SIGKILL after `grace`, or when `None` after the container's own stop
    /// timeout (compose's `stop_grace_period`, else 10 s), as `docker stop` does. A
    /// container that is already stopped or gone is fine.
    pub(crate) async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<(), EngineError> {
        let options = grace.map(|grace| {
            let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
            StopContainerOptionsBuilder::new().t(seconds).build()
        });
        match self.docker.stop_container(id, options).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(call_error(format!("stop container {}", short(id)), e)),
        }
    }

    /// Removes a container (forcefully: it may still be running); gone already is fine.
    /// Its anonymous volumes go with it only when `volumes` says so: an old container's may
    /// hold data the operator wants back, a new container's were created empty for it.
    pub(crate) async fn remove(&self, id: &str, volumes: bool) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(volumes)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // "removal already in progress" when two cleanups race.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(call_error(format!("remove container {}", short(id)), e)),
        }
    }

    /// The last `lines` lines of a container's output, for failure reports.
    pub(crate) async fn logs_tail(&self, id: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
        }
        out.trim_end().to_string()
    }
}

/// The 12-character form of a container id that Docker's CLI shows.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
