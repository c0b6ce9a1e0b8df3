//! A managed service as it runs now: the containers of its compose service, the one that
//! serves, which digest that is and whether it is healthy. Read from Docker every time:
//! the engine, not hoist's journal, is the truth about what runs.

use crate::config::ServiceConfig;
use crate::docker::compose::{self, ServiceContainers};
use crate::docker::engine::{ContainerStatus, Engine, EngineError};
use crate::docker::inspect::Container;
use crate::image::{self, Digest, Repository};

/// The container serving a service.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub id: String,
    pub container: Container,
    /// Its address on the Traefik network.
    pub ip: Option<String>,
    /// `Config.Image` as created (a tag or `repo@digest`).
    pub image: String,
    pub digest: Option<Digest>,
}

impl Running {
    pub(crate) fn status(&self) -> ContainerStatus {
        self.container.status()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CurrentError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "compose service {project}/{service} has no running container; run `docker compose up -d` first"
    )]
    NotRunning { project: String, service: String },
}

/// Where a service's containers are looked up: the engine, and the network Traefik reaches
/// them on (their address there is the one routed).
#[derive(Clone, Copy)]
pub(crate) struct Lookup<'a> {
    pub engine: &'a Engine,
    pub network: &'a str,
}

/// Every container of the service's compose service (any state, one-off runs excluded).
pub(crate) async fn containers(
    at: Lookup<'_>,
    s: &ServiceConfig,
) -> Result<ServiceContainers, EngineError> {
    Ok(ServiceContainers::from_list(
        at.engine
            .containers_with_labels(&[
                (compose::PROJECT, &s.compose_project),
                (compose::SERVICE, &s.compose_service),
            ])
            .await?,
    ))
}

/// The running container that stands for the service (see [`single`]).
pub(crate) async fn current(at: Lookup<'_>, s: &ServiceConfig) -> Result<Running, CurrentError> {
    let all = containers(at, s).await?;
    single(at, s, &all).await
}

/// The running container among `all` that stands for the service: the lowest-numbered
/// one (a service at scale N runs N of the same version after a rollout).
pub(crate) async fn single(
    at: Lookup<'_>,
    s: &ServiceConfig,
    all: &ServiceContainers,
) -> Result<Running, CurrentError> {
    let first = all.running.iter().min_by_key(|c| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(compose::NUMBER))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    match first {
        Some(one) => Ok(inspect(at, s, one.id.as_deref().unwrap_or_default()).await?),
        None => Err(CurrentError::NotRunning {
            project: s.compose_project.clone(),
            service: s.compose_service.clone(),
        }),
    }
}

/// Every running container among `all`, lowest container-number first: a service at scale
/// N runs N of them.
pub(crate) async fn all_running(
    at: Lookup<'_>,
    s: &ServiceConfig,
    all: &ServiceContainers,
) -> Result<Vec<Running>, CurrentError> {
    if all.running.is_empty() {
        return Err(CurrentError::NotRunning {
            project: s.compose_project.clone(),
            service: s.compose_service.clone(),
        });
    }
    let mut out = Vec::new();
    for c in &all.running {
        out.push(inspect(at, s, c.id.as_deref().unwrap_or_default()).await?);
    }
    out.sort_by_key(|r| {
        r.container
            .label(compose::NUMBER)
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    Ok(out)
}

pub(crate) async fn inspect(
    at: Lookup<'_>,
    s: &ServiceConfig,
    id: &str,
) -> Result<Running, EngineError> {
    let container = at.engine.inspect(id).await?;
    let image = container.configured_image().to_string();
    let digest = match image::split_pinned(&image) {
        Some((_, digest)) => Some(digest),
        None => repo_digest(at, &s.image, container.image_id()).await,
    };
    Ok(Running {
        id: id.to_string(),
        ip: container.ip_on(at.network),
        container,
        image,
        digest,
    })
}

/// The digest of an image under `repo`, from the image's `RepoDigests`.
async fn repo_digest(at: Lookup<'_>, repo: &Repository, image_id: Option<&str>) -> Option<Digest> {
    let image = at.engine.inspect_image(image_id?).await.ok()?;
    image.digests_of(repo).next()
}
