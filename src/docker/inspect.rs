//! What the engine reports about a container or an image, read through typed accessors:
//! bollard's `Option` fields are folded here, so the rollout never walks them.

use bollard::models::{ContainerInspectResponse, HealthConfig, ImageConfig, ImageInspect};

use crate::docker::engine::ContainerStatus;
use crate::image::{self, Digest, Repository};

/// A container as the engine inspected it.
#[derive(Debug, Clone)]
pub(crate) struct Container(ContainerInspectResponse);

impl From<ContainerInspectResponse> for Container {
    fn from(inspect: ContainerInspectResponse) -> Self {
        Container(inspect)
    }
}

impl Container {
    /// The whole answer, for building a twin of the container (compose).
    pub(super) fn raw(&self) -> &ContainerInspectResponse {
        &self.0
    }

    /// The container's id.
    pub(crate) fn id(&self) -> &str {
        self.0.id.as_deref().unwrap_or_default()
    }

    /// The container's name without Docker's leading slash.
    pub(crate) fn name(&self) -> String {
        self.0
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string()
    }

    pub(crate) fn status(&self) -> ContainerStatus {
        ContainerStatus::from_inspect(&self.0)
    }

    /// How often the engine restarted it (0 when it does not say).
    pub(crate) fn restart_count(&self) -> i64 {
        self.0.restart_count.unwrap_or(0)
    }

    /// `Config.Image` as created (a tag or `repo@digest`); empty when the engine omits it.
    pub(crate) fn configured_image(&self) -> &str {
        self.config_field(|c| c.image.as_deref())
            .unwrap_or_default()
    }

    /// The id of the image it runs.
    pub(crate) fn image_id(&self) -> Option<&str> {
        self.0.image.as_deref()
    }

    pub(crate) fn labels(&self) -> impl Iterator<Item = (&String, &String)> {
        self.config_field(|c| c.labels.as_ref())
            .into_iter()
            .flatten()
    }

    /// The value of one label.
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.config_field(|c| c.labels.as_ref())?
            .get(key)
            .map(String::as_str)
    }

    /// Its anonymous volumes (an image `VOLUME`, a compose `- /path`), as (name, path
    /// inside): Docker names them with 64 hex digits, and a second container of the
    /// service would get fresh empty ones.
    pub(crate) fn anonymous_volumes(&self) -> Vec<(String, String)> {
        self.0
            .mounts
            .iter()
            .flatten()
            .filter(|m| m.typ.as_deref() == Some("volume"))
            .filter_map(|m| {
                let name = m.name.clone()?;
                let anonymous = name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit());
                anonymous.then(|| (name, m.destination.clone().unwrap_or_default()))
            })
            .collect()
    }

    /// Its bind mounts, `source:target[:options]`.
    pub(crate) fn binds(&self) -> &[String] {
        self.0
            .host_config
            .as_ref()
            .and_then(|h| h.binds.as_deref())
            .unwrap_or_default()
    }

    pub(crate) fn healthcheck(&self) -> Option<&HealthConfig> {
        self.config_field(|c| c.healthcheck.as_ref())
    }

    /// Whether it is attached to `network` (with or without an address).
    pub(crate) fn on_network(&self, network: &str) -> bool {
        self.0
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .is_some_and(|n| n.contains_key(network))
    }

    /// Its IP address on `network`.
    pub(crate) fn ip_on(&self, network: &str) -> Option<String> {
        self.0
            .network_settings
            .as_ref()?
            .networks
            .as_ref()?
            .get(network)?
            .ip_address
            .clone()
            .filter(|ip| !ip.is_empty())
    }

    fn config_field<'a, T: ?Sized>(
        &'a self,
        field: impl FnOnce(&'a bollard::models::ContainerConfig) -> Option<&'a T>,
    ) -> Option<&'a T> {
        self.0.config.as_ref().and_then(field)
    }
}

/// An image present on the engine.
#[derive(Debug, Clone)]
pub(crate) struct LocalImage(ImageInspect);

impl From<ImageInspect> for LocalImage {
    fn from(inspect: ImageInspect) -> Self {
        LocalImage(inspect)
    }
}

impl LocalImage {
    /// Its `RepoDigests`: `repo@digest` for each repository it was pulled from.
    pub(crate) fn repo_digests(&self) -> &[String] {
        self.0.repo_digests.as_deref().unwrap_or_default()
    }

    /// The digests it has under `repo`.
    pub(crate) fn digests_of<'a>(
        &'a self,
        repo: &'a Repository,
    ) -> impl Iterator<Item = Digest> + 'a {
        self.repo_digests()
            .iter()
            .filter_map(|d| image::split_pinned(d))
            .filter(move |(r, _)| r == repo)
            .map(|(_, d)| d)
    }

    pub(crate) fn has_digest(&self, repo: &Repository, digest: &Digest) -> bool {
        self.digests_of(repo).any(|d| &d == digest)
    }

    /// The image's own config (its CMD, ENV, labels, healthcheck...).
    pub(crate) fn config(&self) -> Option<&ImageConfig> {
        self.0.config.as_ref()
    }

    pub(crate) fn healthcheck(&self) -> Option<&HealthConfig> {
        self.config().and_then(|c| c.healthcheck.as_ref())
    }
}
