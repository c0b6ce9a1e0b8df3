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
    let Some(header) = sha256_header else {
        return Err(if sha1_header.is_some() {
            SignatureError::Sha1Only
        } else {
            SignatureError::Missing
        });
    };
    let hex_part = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex_part.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected)
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
    let err = |e: serde_json::Error| PayloadError {
        event: event.to_string(),
        detail: e.to_string(),
    };
    Ok(match event {
        "ping" => {
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(err)?;
            Event::Ping
        }
        "push" => {
            let p: PushPayload = serde_json::from_slice(body).map_err(err)?;
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
            Event::Source {
                repository: p.repository.full_name,
                reference,
                sha: p.after,
            }
        }
        "workflow_run" => {
            let p: WorkflowRunPayload = serde_json::from_slice(body).map_err(err)?;
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
            Event::Source {
                repository: p.repository.full_name,
                reference: Reference::Branch(branch),
                sha: p.workflow_run.head_sha,
            }
        }
        "release" => {
            let p: ReleasePayload = serde_json::from_slice(body).map_err(err)?;
            if p.action != "published" || p.release.draft {
                return Ok(Event::Ignored(format!(
                    "release {} (only published, non-draft releases)",
                    p.action
                )));
            }
            Event::Source {
                repository: p.repository.full_name,
                reference: Reference::Tag(p.release.tag_name),
                sha: None,
            }
        }
        "package" | "registry_package" => {
            let p: PackagePayload = serde_json::from_slice(body).map_err(err)?;
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
            Event::Package {
                repository: p.repository.full_name,
                image,
                tag: tag_name,
                digest,
            }
        }
        other => {
            serde_json::from_slice::<Minimal>(body).map_err(err)?;
            Event::Ignored(format!("event `{other}` does not trigger deploys"))
        }
    })
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
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_test_vector() {
        assert_eq!(sign(SECRET, BODY), VECTOR);
        assert_eq!(verify(SECRET, BODY, Some(VECTOR), None), Ok(()));
    }

    #[test]
    fn refuses_every_kind_of_bad_signature() {
        use SignatureError::*;
        let cases: [(Option<&str>, Option<&str>, SignatureError); 7] = [
            (None, None, Missing),
            (None, Some("sha1=0123"), Sha1Only),
            (Some(&VECTOR[..40]), None, Malformed),
            (Some(&VECTOR.replace("sha256=", "sha1=")), None, Malformed),
            (Some(&VECTOR.replace('e', "z")), None, Malformed),
            (Some(&VECTOR.replace("757107", "757108")), None, Mismatch),
            (Some(""), None, Malformed),
        ];
        for (sig256, sig1, want) in cases {
            assert_eq!(verify(SECRET, BODY, sig256, sig1), Err(want), "{sig256:?}");
        }
        assert_eq!(
            verify(SECRET, b"Hello, World?", Some(VECTOR), None),
            Err(Mismatch)
        );
        assert_eq!(
            verify(b"another secret", BODY, Some(VECTOR), None),
            Err(Mismatch)
        );
    }

    fn service(track: &str) -> ServiceConfig {
        let text = format!(
            "[[services]]\nname = \"web\"\nenvironment = \"stage\"\ncompose_project = \"p\"\nimage = \"ghcr.io/acme/web\"\ntrack = \"{track}\"\nhost = \"a.test\"\nport = 80\ngithub_repository = \"acme/web\"\n"
        );
        crate::config::Config::parse(
            &text,
            std::path::Path::new("t"),
            crate::config::Secrets::Load,
        )
        .unwrap()
        .services
        .remove(0)
    }

    #[test]
    fn reads_the_trigger_events() {
        let push = br#"{"ref":"refs/heads/main","after":"abc","deleted":false,"repository":{"full_name":"acme/web"}}"#;
        assert_eq!(
            parse("push", push).unwrap(),
            Event::Source {
                repository: "acme/web".into(),
                reference: Reference::Branch("main".into()),
                sha: Some("abc".into()),
            }
        );
        let deleted =
            br#"{"ref":"refs/heads/main","deleted":true,"repository":{"full_name":"acme/web"}}"#;
        assert!(matches!(parse("push", deleted).unwrap(), Event::Ignored(_)));
        let run = br#"{"action":"completed","workflow_run":{"conclusion":"failure","head_branch":"main"},"repository":{"full_name":"acme/web"}}"#;
        assert!(
            matches!(parse("workflow_run", run).unwrap(), Event::Ignored(r) if r.contains("failure"))
        );
        let release = br#"{"action":"published","release":{"tag_name":"v1.4.0","draft":false},"repository":{"full_name":"acme/web"}}"#;
        assert!(
            matches!(parse("release", release).unwrap(), Event::Source { reference: Reference::Tag(t), .. } if t == "v1.4.0")
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let package = format!(
            r#"{{"action":"published","registry_package":{{"package_type":"CONTAINER","package_version":{{"package_url":"ghcr.io/acme/web:v2:","container_metadata":{{"tag":{{"name":"v2","digest":"{digest}"}}}}}}}},"repository":{{"full_name":"acme/web"}}}}"#
        );
        assert_eq!(
            parse("registry_package", package.as_bytes()).unwrap(),
            Event::Package {
                repository: "acme/web".into(),
                image: Some(Repository::parse("ghcr.io/acme/web").unwrap()),
                tag: "v2".into(),
                digest: Some(Digest::parse(&digest).unwrap()),
            }
        );
        assert!(matches!(
            parse("issues", br#"{"action":"opened"}"#).unwrap(),
            Event::Ignored(_)
        ));
        assert!(parse("push", b"{not json").is_err());
        assert!(parse("push", br#"{"ref":5}"#).is_err());
    }

    #[test]
    fn matches_services_by_repository_and_track() {
        let main = service("main");
        let source = |repo: &str, r: Reference| Event::Source {
            repository: repo.into(),
            reference: r,
            sha: None,
        };
        assert!(concerns(&main, &source("acme/web", Reference::Branch("main".into()))).is_ok());
        assert!(concerns(&main, &source("acme/web", Reference::Branch("dev".into()))).is_err());
        assert!(
            concerns(
                &main,
                &source("acme/other", Reference::Branch("main".into()))
            )
            .is_err()
        );
        let semver = service("semver:^1.4");
        assert!(
            concerns(
                &semver,
                &source("acme/web", Reference::Tag("v1.5.0".into()))
            )
            .is_ok()
        );
        assert!(
            concerns(
                &semver,
                &source("acme/web", Reference::Tag("v2.0.0".into()))
            )
            .is_err()
        );
        assert!(
            concerns(
                &semver,
                &source("acme/web", Reference::Tag("v1.6.0-rc.1".into()))
            )
            .is_err()
        );
        let package = |image: &str| Event::Package {
            repository: "acme/web".into(),
            image: Repository::parse(image).ok(),
            tag: "main".into(),
            digest: None,
        };
        assert!(concerns(&main, &package("ghcr.io/acme/web")).is_ok());
        assert!(concerns(&main, &package("ghcr.io/acme/worker")).is_err());
    }

    mod fuzz {
        //! Property tests over the untrusted input: signatures and payloads of any shape
        //! never panic, and only the exact signature of the exact body is accepted.
        use super::super::*;
        use proptest::prelude::*;

        const EVENTS: [&str; 8] = [
            "ping",
            "push",
            "workflow_run",
            "release",
            "package",
            "registry_package",
            "issues",
            "",
        ];

        /// JSON values nested a few levels, with the keys hoist reads among random ones.
        fn json() -> impl Strategy<Value = serde_json::Value> {
            let key = prop_oneof![
                Just("ref".to_string()),
                Just("deleted".to_string()),
                Just("action".to_string()),
                Just("repository".to_string()),
                Just("full_name".to_string()),
                Just("workflow_run".to_string()),
                Just("conclusion".to_string()),
                Just("head_branch".to_string()),
                Just("release".to_string()),
                Just("tag_name".to_string()),
                Just("draft".to_string()),
                Just("package".to_string()),
                Just("registry_package".to_string()),
                Just("package_type".to_string()),
                Just("package_version".to_string()),
                Just("package_url".to_string()),
                Just("container_metadata".to_string()),
                Just("tag".to_string()),
                Just("name".to_string()),
                Just("digest".to_string()),
                "[a-z_]{1,8}",
            ];
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                any::<i64>().prop_map(|n| serde_json::json!(n)),
                prop_oneof![
                    Just("refs/heads/main".to_string()),
                    Just("refs/tags/v1.2.3".to_string()),
                    Just("published".to_string()),
                    Just("completed".to_string()),
                    Just("success".to_string()),
                    Just("CONTAINER".to_string()),
                    Just("ghcr.io/acme/web:v2:".to_string()),
                    Just(format!("sha256:{}", "a".repeat(64))),
                    ".{0,40}",
                ]
                .prop_map(serde_json::Value::String),
            ];
            leaf.prop_recursive(4, 64, 8, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(key.clone(), inner, 0..8)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(event in prop::sample::select(&EVENTS[..]), body in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse(event, &body);
            }

            #[test]
            fn structured_payloads_never_panic(event in prop::sample::select(&EVENTS[..]), value in json()) {
                let body = value.to_string();
                if let Ok(parsed) = parse(event, body.as_bytes()) {
                    let service = super::service("semver:^1");
                    let _ = concerns(&service, &parsed);
                }
            }

            #[test]
            fn any_signature_header_is_refused_unless_exact(
                secret in prop::collection::vec(any::<u8>(), 0..64),
                body in prop::collection::vec(any::<u8>(), 0..256),
                header in ".{0,80}",
            ) {
                let good = sign(&secret, &body);
                let verdict = verify(&secret, &body, Some(&header), None);
                prop_assert_eq!(verdict.is_ok(), header.trim() == good);
                prop_assert!(verify(&secret, &body, Some(&good), None).is_ok());
            }

            #[test]
            fn changing_any_byte_breaks_the_signature(
                body in prop::collection::vec(any::<u8>(), 1..256),
                index in any::<prop::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let good = sign(b"secret", &body);
                let mut changed = body.clone();
                let i = index.index(changed.len());
                changed[i] ^= flip;
                prop_assert_eq!(verify(b"secret", &changed, Some(&good), None), Err(SignatureError::Mismatch));
            }
        }
    }
}
