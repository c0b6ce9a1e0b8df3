//! The OCI distribution API: turning a tag or a `semver:` track into a digest.
//!
//! Only metadata is read here (HEAD manifest, tag lists); the Docker engine pulls the layers.
//! Authentication follows the registry's challenge: a `Bearer` challenge is answered by
//! fetching a token from its realm (with Basic credentials for private images), a `Basic`
//! challenge by sending the credentials directly. Tokens are cached until they expire.

mod auth;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::{StatusCode, header};
use sha2::Digest as _;

use crate::config::{Config, Credentials, RegistryConfig, Track};
use crate::image::{Digest, Repository};
use crate::util::http_client;
use auth::{AuthCache, Challenge, docker_config_path, read_docker_config};

/// Every manifest type Docker can run; without these a registry may answer with an old
/// schema or, for a multi-arch image, a manifest whose digest differs from the index.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {host}: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("{reference} not found in {repo}")]
    NotFound { repo: String, reference: String },
    #[error("registry {host} refused access to {repo}: {detail}")]
    Unauthorized {
        host: String,
        repo: String,
        detail: String,
    },
    #[error("registry {host} is rate limiting hoist (HTTP 429){}", retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        host: String,
        retry_after: Option<Duration>,
    },
    #[error("registry {host} answered HTTP {status} for {what}: {body}")]
    Status {
        host: String,
        status: u16,
        what: String,
        body: String,
    },
    #[error("registry {host} sent an invalid response for {what}: {detail}")]
    Protocol {
        host: String,
        what: String,
        detail: String,
    },
    #[error("no tag of {repo} satisfies {requirement} ({seen} tags looked at)")]
    NoMatchingTag {
        repo: String,
        requirement: String,
        seen: usize,
    },
}

impl RegistryError {
    /// Worth trying again later (outage, rate limit) rather than a configuration mistake.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } | RegistryError::RateLimited { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// The outcome of resolving a target: which tag (if any) and the digest it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub tag: Option<String>,
    pub digest: Digest,
}

pub struct Registry {
    /// `Err` holds why the client could not be built; every request then fails with it.
    http: Result<reqwest::Client, String>,
    configured: Vec<RegistryConfig>,
    docker_config: HashMap<String, Credentials>,
    auth_cache: Mutex<AuthCache>,
}

impl Registry {
    pub fn new(config: &Config) -> Self {
        Registry::with_docker_config(config, docker_config_path())
    }

    /// Like [`Registry::new`] with an explicit `config.json` (tests use their own).
    pub fn with_docker_config(config: &Config, docker_config: Option<PathBuf>) -> Self {
        let http = http_client(
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(30))
                .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION"))),
        );
        Registry {
            http,
            configured: config.registries.clone(),
            docker_config: docker_config
                .map(|p| read_docker_config(&p))
                .unwrap_or_default(),
            auth_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves what a service tracks to a digest: a tag by HEAD, a `semver:` track by listing
    /// tags and taking the newest match.
    pub async fn resolve_track(
        &self,
        repo: &Repository,
        track: &Track,
    ) -> Result<Resolved, RegistryError> {
        let tag = match track {
            Track::Tag(tag) => tag.clone(),
            Track::Semver(req) => {
                let tags = self.list_tags(repo).await?;
                newest_matching(&tags, req).ok_or_else(|| RegistryError::NoMatchingTag {
                    repo: repo.to_string(),
                    requirement: track.to_string(),
                    seen: tags.len(),
                })?
            }
        };
        let digest = self.resolve(repo, &tag).await?;
        Ok(Resolved {
            tag: Some(tag),
            digest,
        })
    }

    /// The digest a tag (or digest) currently points at, by `HEAD /v2/<name>/manifests/<ref>`.
    pub async fn resolve(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Digest, RegistryError> {
        let url = format!("{}/manifests/{reference}", self.base(repo));
        let what = format!("{}:{reference}", repo);
        let response = self
            .send(repo, &what, |http| {
                http.head(&url).header(header::ACCEPT, MANIFEST_TYPES)
            })
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                repo: repo.to_string(),
                reference: reference.to_string(),
            });
        }
        if !status.is_success() {
            return Err(self.status_error(repo, &what, response).await);
        }
        if let Some(value) = response.headers().get("docker-content-digest") {
            let text = value.to_str().unwrap_or_default();
            return Digest::parse(text).map_err(|e| self.protocol(repo, &what, e.to_string()));
        }
        // Some registries leave the header off HEAD answers; the digest is then the hash of
        // the manifest bytes exactly as served.
        let response = self
            .send(repo, &what, |http| {
                http.get(&url).header(header::ACCEPT, MANIFEST_TYPES)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(repo, &what, response).await);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.protocol(repo, &what, e.to_string()))?;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        Digest::parse(&digest).map_err(|e| self.protocol(repo, &what, e.to_string()))
    }

    /// Every tag of the repository, following `Link: <...>; rel="next"` pagination.
    pub async fn list_tags(&self, repo: &Repository) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let what = format!("the tags of {repo}");
        let mut url = format!("{}/tags/list?n=1000", self.base(repo));
        let mut tags = Vec::new();
        // A misbehaving registry must not keep us paging forever.
        for _ in 0..1000 {
            let response = self.send(repo, &what, |http| http.get(&url)).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    repo: repo.to_string(),
                    reference: "(any tag)".into(),
                });
            }
            if !response.status().is_success() {
                return Err(self.status_error(repo, &what, response).await);
            }
            let next = crate::util::next_link(response.headers());
            let page: TagList = response
                .json()
                .await
                .map_err(|e| self.protocol(repo, &what, e.to_string()))?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) if next.starts_with("http") => url = next,
                Some(next) => url = format!("{}{next}", self.origin(repo)),
                None => return Ok(tags),
            }
        }
        Err(self.protocol(repo, &what, "more than 1000 pages of tags".into()))
    }

    fn origin(&self, repo: &Repository) -> String {
        let insecure =
            repo.is_loopback() || self.configured.iter().any(|r| r.insecure && r.serves(repo));
        let scheme = if insecure { "http" } else { "https" };
        format!("{scheme}://{}", repo.api_host())
    }

    fn base(&self, repo: &Repository) -> String {
        format!("{}/v2/{}", self.origin(repo), repo.path())
    }

    /// The HTTP client, or why there is none as the error of a request to `repo`.
    fn http(&self, repo: &Repository) -> Result<&reqwest::Client, RegistryError> {
        self.http
            .as_ref()
            .map_err(|detail| RegistryError::Unreachable {
                host: repo.api_host().to_string(),
                detail: detail.clone(),
            })
    }

    /// Sends a request, answering one authentication challenge if the registry poses it.
    async fn send(
        &self,
        repo: &Repository,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let http = self.http(repo)?;
        let scope = format!("repository:{}:pull", repo.path());
        let key = (repo.api_host().to_string(), scope.clone());
        let cached = self.cached_auth(&key);
        let mut request = build(http);
        if let Some(auth) = &cached {
            request = request.header(header::AUTHORIZATION, auth.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unreachable(repo, e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return self.check_rate_limit(repo, response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(Challenge::parse)
            .ok_or_else(|| RegistryError::Unauthorized {
                host: repo.api_host().to_string(),
                repo: repo.to_string(),
                detail: "HTTP 401 without an authentication challenge".into(),
            })?;
        let basic_challenge = challenge == Challenge::Basic;
        let auth = self
            .answer(repo, challenge, &scope, cached.is_some())
            .await?;
        self.remember_auth(key.clone(), auth.clone());
        let response = build(http)
            .header(header::AUTHORIZATION, auth.header.expose())
            .send()
            .await
            .map_err(|e| self.unreachable(repo, e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.forget_auth(&key);
            let why = if basic_challenge {
                "the registry rejected the configured credentials"
            } else {
                "the registry refused the token it issued"
            };
            return Err(self.unauthorized(repo, &format!("{what}: {why}")));
        }
        self.check_rate_limit(repo, response)
    }

    fn check_rate_limit(
        &self,
        repo: &Repository,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, RegistryError> {
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(RegistryError::RateLimited {
                host: repo.api_host().to_string(),
                retry_after,
            });
        }
        Ok(response)
    }

    async fn status_error(
        &self,
        repo: &Repository,
        what: &str,
        response: reqwest::Response,
    ) -> RegistryError {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        RegistryError::Status {
            host: repo.api_host().to_string(),
            status,
            what: what.to_string(),
            // A registry's words reach the log, the journal and `/status`.
            body: crate::util::escape(body.trim(), 300),
        }
    }

    fn unreachable(&self, repo: &Repository, error: reqwest::Error) -> RegistryError {
        // reqwest's Display is terse ("error sending request"); the source chain says why.
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        RegistryError::Unreachable {
            host: repo.api_host().to_string(),
            detail,
        }
    }

    fn unauthorized(&self, repo: &Repository, detail: &str) -> RegistryError {
        RegistryError::Unauthorized {
            host: repo.api_host().to_string(),
            repo: repo.to_string(),
            detail: detail.to_string(),
        }
    }

    fn protocol(&self, repo: &Repository, what: &str, detail: String) -> RegistryError {
        RegistryError::Protocol {
            host: repo.api_host().to_string(),
            what: what.to_string(),
            // A decoder's message can quote what the registry sent.
            detail: crate::util::escape(&detail, 300),
        }
    }
}

/// The newest version among `tags` that satisfies `req`; tags may carry a leading `v`.
/// Pre-releases only match when the requirement names one (semver's own rule).
pub fn newest_matching(tags: &[String], req: &semver::VersionReq) -> Option<String> {
    tags.iter()
        .filter_map(|tag| {
            let version = semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()?;
            req.matches(&version).then_some((version, tag))
        })
        .max_by(|(a, ta), (b, tb)| a.cmp(b).then_with(|| tb.cmp(ta)))
        .map(|(_, tag)| tag.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_next_links() {
        let link = |value: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(header::LINK, value.parse().unwrap());
            crate::util::next_link(&h)
        };
        assert_eq!(
            link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn picks_the_newest_matching_version() {
        let tags: Vec<String> = [
            "v1.2.9",
            "v1.3.0",
            "v2.0.0",
            "v1.4.0-rc.1",
            "latest",
            "1.1.0",
        ]
        .map(String::from)
        .to_vec();
        let req = semver::VersionReq::parse("^1").unwrap();
        assert_eq!(newest_matching(&tags, &req).as_deref(), Some("v1.3.0"));
        let pre = semver::VersionReq::parse(">=1.4.0-rc.1, <2").unwrap();
        assert_eq!(newest_matching(&tags, &pre).as_deref(), Some("v1.4.0-rc.1"));
        let none = semver::VersionReq::parse("^3").unwrap();
        assert_eq!(newest_matching(&tags, &none), None);
    }
}
