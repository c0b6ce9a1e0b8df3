//! GitHub webhooks: verifying a delivery's signature, reading the few payload fields hoist
//! needs, and deciding which services a delivery concerns.
//!
//! Pure functions over bytes, so the HTTP handler stays thin and the parsing can be fuzzed.
//! A delivery never says *what* to deploy: it only says "look now". hoist resolves the
//! service's track against the registry itself (see `queue`).

use hmac::{KeyInit, Mac};
use serde::Deserialize;

use crate::config::{ServiceConfig, Track};
use crate::image::{Digest, Repository};

mod headers;
pub use headers::{EVENTS, MAX_DELIVERY_ID, claimed_signature, event_label, is_delivery_id};

/// GitHub's own limit; larger deliveries are refused before reading them whole.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Hub-Signature-256 is missing")]
    Missing,
    #[error("only the SHA-1 X-Hub-Signature was sent; hoist requires X-Hub-Signature-256")]
    Sha1Only,
    #[error("X-Hub-Signature-256 is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
/// `sha1_header` is the legacy `X-Hub-Signature`, only used to explain a refusal.
pub fn verify(
    secret: &[u8],
    body: &[u8],
    sha256_header: Option<&str>,
    sha1_header: Option<&str>,
) -> Result<(), SignatureError> {
    verify_claimed(
        secret,
        body,
        &claimed_signature(sha256_header, sha1_header)?,
    )
}

/// Checks a signature already read by [`claimed_signature`] over the raw body, in constant
/// time.
pub fn verify_claimed(
    secret: &[u8],
    body: &[u8],
    claimed: &[u8; 32],
) -> Result<(), SignatureError> {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(claimed)
        .map_err(|_| SignatureError::Mismatch)
}

/// `sha256=<hex>` for a body, as GitHub computes it (tests and the benchmark sign with it).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a delivery tells hoist, reduced to what can start a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ping,
    /// A branch or tag moved (`push`, `workflow_run`, `release`): CI may still be building
    /// the image, so the registry is watched for a while.
    Source {
        repository: String,
        reference: Reference,
        /// The commit the branch or tag points at, when the event names it.
        sha: Option<String>,
    },
    /// An image tag was published: it exists now.
    Package {
        repository: String,
        image: Option<Repository>,
        tag: String,
        digest: Option<Digest>,
    },
    /// Valid, but nothing to do; the reason is answered to GitHub.
    Ignored(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Branch(String),
    Tag(String),
}

impl Reference {
    pub fn name(&self) -> &str {
        match self {
            Reference::Branch(n) | Reference::Tag(n) => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {event} payload is not valid: {detail}")]
pub struct PayloadError {
    pub event: String,
    pub detail: String,
}

#[derive(Deserialize)]
struct Repo {
    full_name: String,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    reference: String,
    after: Option<String>,
    #[serde(default)]
    deleted: bool,
    repository: Repo,
}

#[derive(Deserialize)]
struct WorkflowRunPayload {
    action: String,
    workflow_run: WorkflowRun,
    repository: Repo,
}

#[derive(Deserialize)]
struct WorkflowRun {
    conclusion: Option<String>,
    head_branch: Option<String>,
    head_sha: Option<String>,
}

#[derive(Deserialize)]
struct ReleasePayload {
    action: String,
    release: Release,
    repository: Repo,
}

#[derive(Deserialize)]
struct Release {
    tag_name: String,
    #[serde(default)]
    draft: bool,
}

#[derive(Deserialize)]
struct PackagePayload {
    action: String,
    #[serde(alias = "registry_package")]
    package: Package,
    repository: Repo,
}

#[derive(Deserialize)]
struct Package {
    package_type: Option<String>,
    package_version: Option<PackageVersion>,
}

#[derive(Deserialize)]
struct PackageVersion {
    package_url: Option<String>,
    container_metadata: Option<ContainerMetadata>,
}

#[derive(Deserialize)]
struct ContainerMetadata {
    tag: Option<ContainerTag>,
}

#[derive(Deserialize)]
struct ContainerTag {
    name: Option<String>,
    digest: Option<String>,
}

#[derive(Deserialize)]
struct Minimal {
    #[allow(dead_code)]
    repository: Option<Repo>,
}

/// Reads a delivery of type `event`. Only the fields hoist uses are decoded; the rest of
/// the (up to 25 MB) payload is skipped without building a tree.
pub fn parse(event: &str, body: &[u8]) -> Result<Event, PayloadError> {
    let decoded = match event {
        "ping" => ping(body),
        "push" => push(body),
        "workflow_run" => workflow_run(body),
        "release" => release(body),
        "package" | "registry_package" => package(body),
        other => unhandled(other, body),
    };
    decoded.map_err(|e| PayloadError {
        event: event.to_string(),
        detail: e.to_string(),
    })
}

fn ping(body: &[u8]) -> Result<Event, serde_json::Error> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
    Ok(Event::Ping)
}

fn push(body: &[u8]) -> Result<Event, serde_json::Error> {
    let p: PushPayload = serde_json::from_slice(body)?;
    if p.deleted {
        return Ok(Event::Ignored(format!("{} was deleted", p.reference)));
    }
    let reference = if let Some(b) = p.reference.strip_prefix("refs/heads/") {
        Reference::Branch(b.to_string())
    } else if let Some(t) = p.reference.strip_prefix("refs/tags/") {
        Reference::Tag(t.to_string())
    } else {
        return Ok(Event::Ignored(format!(
            "{} is neither a branch nor a tag",
            p.reference
        )));
    };
    Ok(Event::Source {
        repository: p.repository.full_name,
        reference,
        sha: p.after,
    })
}

fn workflow_run(body: &[u8]) -> Result<Event, serde_json::Error> {
    let p: WorkflowRunPayload = serde_json::from_slice(body)?;
    let conclusion = p.workflow_run.conclusion.unwrap_or_default();
    if p.action != "completed" || conclusion != "success" {
        return Ok(Event::Ignored(format!(
            "workflow_run {} with conclusion `{conclusion}` (only completed + success)",
            p.action
        )));
    }
    let Some(branch) = p.workflow_run.head_branch else {
        return Ok(Event::Ignored("workflow_run without head_branch".into()));
    };
    Ok(Event::Source {
        repository: p.repository.full_name,
        reference: Reference::Branch(branch),
        sha: p.workflow_run.head_sha,
    })
}

fn release(body: &[u8]) -> Result<Event, serde_json::Error> {
    let p: ReleasePayload = serde_json::from_slice(body)?;
    if p.action != "published" || p.release.draft {
        return Ok(Event::Ignored(format!(
            "release {} (only published, non-draft releases)",
            p.action
        )));
    }
    Ok(Event::Source {
        repository: p.repository.full_name,
        reference: Reference::Tag(p.release.tag_name),
        sha: None,
    })
}

/// `package` (and its older name `registry_package`).
fn package(body: &[u8]) -> Result<Event, serde_json::Error> {
    let p: PackagePayload = serde_json::from_slice(body)?;
    if !matches!(p.action.as_str(), "published" | "updated") {
        return Ok(Event::Ignored(format!(
            "package {} (only published/updated)",
            p.action
        )));
    }
    let kind = p.package.package_type.unwrap_or_default();
    if !kind.eq_ignore_ascii_case("container") {
        return Ok(Event::Ignored(format!(
            "package type `{kind}` is not a container image"
        )));
    }
    let version = p.package.package_version;
    let tag = version
        .as_ref()
        .and_then(|v| v.container_metadata.as_ref())
        .and_then(|m| m.tag.as_ref());
    let Some(tag_name) = tag.and_then(|t| t.name.clone()).filter(|t| !t.is_empty()) else {
        return Ok(Event::Ignored(
            "package version without a tag (untagged push)".into(),
        ));
    };
    let digest = tag
        .and_then(|t| t.digest.as_deref())
        .and_then(|d| Digest::parse(d).ok());
    let image = version
        .and_then(|v| v.package_url)
        .and_then(|url| image_of_package_url(&url));
    Ok(Event::Package {
        repository: p.repository.full_name,
        image,
        tag: tag_name,
        digest,
    })
}

/// Any other event: still has to be JSON, but triggers nothing.
fn unhandled(event: &str, body: &[u8]) -> Result<Event, serde_json::Error> {
    serde_json::from_slice::<Minimal>(body)?;
    Ok(Event::Ignored(format!(
        "event `{event}` does not trigger deploys"
    )))
}

/// `ghcr.io/acme/web:v2` (GitHub sometimes leaves a stray `:` at the end) -> the repository.
fn image_of_package_url(url: &str) -> Option<Repository> {
    let url = url.trim().trim_end_matches(':');
    let without_digest = url.split('@').next()?;
    // A colon after the last slash starts the tag.
    let repo = match without_digest.rfind(':') {
        Some(i) if i > without_digest.rfind('/').unwrap_or(0) => &without_digest[..i],
        _ => without_digest,
    };
    Repository::parse(repo).ok()
}

/// What GitHub should name as the deployed ref: the commit when the event says it,
/// else the tag or branch.
pub fn git_ref(event: &Event) -> Option<String> {
    match event {
        Event::Source { sha: Some(sha), .. } => Some(sha.clone()),
        Event::Source { reference, .. } => Some(reference.name().to_string()),
        Event::Package { tag, .. } => Some(tag.clone()),
        Event::Ping | Event::Ignored(_) => None,
    }
}

/// Whether `event` concerns `service`, and if not, why.
pub fn concerns(service: &ServiceConfig, event: &Event) -> Result<(), String> {
    let (repository, name) = match event {
        Event::Source {
            repository,
            reference,
            ..
        } => (repository, reference.name()),
        Event::Package {
            repository, tag, ..
        } => (repository, tag.as_str()),
        Event::Ping | Event::Ignored(_) => return Err("nothing to deploy".into()),
    };
    if service.github_repository.as_deref() != Some(repository.as_str()) {
        return Err(format!("{} follows another repository", service.name));
    }
    if let Event::Package {
        image: Some(image), ..
    } = event
        && image != &service.image
    {
        return Err(format!(
            "{} runs {}, not {image}",
            service.name, service.image
        ));
    }
    let fits = match &service.track {
        Track::Tag(tag) => tag == name,
        Track::Semver(req) => semver::Version::parse(name.strip_prefix('v').unwrap_or(name))
            .is_ok_and(|v| req.matches(&v)),
    };
    if !fits {
        return Err(format!(
            "{} tracks {}, not {name}",
            service.name, service.track
        ));
    }
    if let Some(from) = &service.promote_from {
        return Err(format!("{} is promoted from {from}", service.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
