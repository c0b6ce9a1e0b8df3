//! Image references: a repository (registry host + path) and content digests.
//!
//! Parsing follows Docker's rules (distribution/reference): the first path component is a
//! registry host when it contains `.` or `:` or is `localhost`; otherwise the image lives on
//! Docker Hub, where one-component names get the `library/` prefix.

use std::fmt;

const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API is not served on the name users write.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("image reference is empty")]
    Empty,
    #[error("`{0}` names a tag or digest; give the repository only (e.g. ghcr.io/acme/web)")]
    HasTagOrDigest(String),
    #[error("`{0}` is not a valid repository name (lowercase letters, digits, and . _ - / only)")]
    InvalidPath(String),
    #[error("`{0}` is not a digest of the form sha256:<64 hex digits>")]
    InvalidDigest(String),
    #[error("`{0}` is not a valid tag (letters, digits, _ . -, at most 128 characters)")]
    InvalidTag(String),
}

/// A repository without tag or digest, e.g. `ghcr.io/acme/web`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    registry: String,
    path: String,
}

impl Repository {
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(ImageError::Empty);
        }
        if input.contains('@') {
            return Err(ImageError::HasTagOrDigest(input.to_string()));
        }
        let (registry, path) = match input.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), input.to_string()),
        };
        // A colon after the registry part can only be a tag.
        if path.contains(':') {
            return Err(ImageError::HasTagOrDigest(input.to_string()));
        }
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let valid_component = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
                })
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if !path.split('/').all(valid_component) {
            return Err(ImageError::InvalidPath(input.to_string()));
        }
        Ok(Repository { registry, path })
    }

    /// The registry as users name it (`ghcr.io`, `docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host the registry's HTTP API is served on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository path inside the registry (`acme/web`, `library/nginx`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `repository@digest`, the exact thing hoist pulls and runs.
    pub fn at(&self, digest: &Digest) -> String {
        format!("{self}@{digest}")
    }

    /// `repository:tag`.
    pub fn tagged(&self, tag: &str) -> String {
        format!("{self}:{tag}")
    }

    /// The registry is on this machine, where Docker allows plain HTTP without configuration.
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl fmt::Display for Repository {
    /// The familiar form Docker prints (`nginx`, `acme/web`, `ghcr.io/acme/web`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.registry == DOCKER_HUB {
            let short = self.path.strip_prefix("library/").unwrap_or(&self.path);
            f.write_str(short)
        } else {
            write!(f, "{}/{}", self.registry, self.path)
        }
    }
}

/// A content digest, `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let hex = input
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::InvalidDigest(input.to_string()))?;
        if hex.len() != 64
            || !hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(ImageError::InvalidDigest(input.to_string()));
        }
        Ok(Digest(input.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> &str {
        short_hex(&self.0)
    }
}

/// The first 12 hex digits of a digest as the journal and the status document carry it
/// (`sha256:…` text), for humans; what is too short to cut is shown without the prefix.
pub fn short_hex(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    hex.get(..12).unwrap_or(hex)
}

/// `sha256:` and the first 12 hex digits: the form recovery's notes in the journal have
/// always used, kept so that old and new notes read alike.
pub fn short_hex_prefixed(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a tag against the registry grammar `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), ImageError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidTag(tag.to_string()))
    }
}

/// Splits `repo@sha256:...` (as found in a container's `Config.Image` or an image's
/// `RepoDigests`) into its repository and digest.
pub fn split_pinned(reference: &str) -> Option<(Repository, Digest)> {
    let (repo, digest) = reference.split_once('@')?;
    Some((Repository::parse(repo).ok()?, Digest::parse(digest).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_hosts_like_docker() {
        let r = Repository::parse("ghcr.io/acme/web").unwrap();
        assert_eq!((r.registry(), r.path()), ("ghcr.io", "acme/web"));
        assert_eq!(r.to_string(), "ghcr.io/acme/web");

        let r = Repository::parse("nginx").unwrap();
        assert_eq!((r.registry(), r.path()), ("docker.io", "library/nginx"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.to_string(), "nginx");

        let r = Repository::parse("127.0.0.1:5000/t/web").unwrap();
        assert_eq!((r.registry(), r.path()), ("127.0.0.1:5000", "t/web"));
        assert!(r.is_loopback());
        assert!(Repository::parse("localhost/web").unwrap().is_loopback());
        assert!(!Repository::parse("ghcr.io/a/b").unwrap().is_loopback());
    }

    #[test]
    fn refuses_tags_digests_and_bad_names() {
        assert_eq!(
            Repository::parse("ghcr.io/acme/web:main"),
            Err(ImageError::HasTagOrDigest("ghcr.io/acme/web:main".into()))
        );
        assert!(matches!(
            Repository::parse("web@sha256:00"),
            Err(ImageError::HasTagOrDigest(_))
        ));
        assert!(matches!(
            Repository::parse("ghcr.io/Acme/web"),
            Err(ImageError::InvalidPath(_))
        ));
        assert!(matches!(
            Repository::parse("ghcr.io//web"),
            Err(ImageError::InvalidPath(_))
        ));
        assert_eq!(Repository::parse(" "), Err(ImageError::Empty));
    }

    #[test]
    fn digests_are_strict() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(Digest::parse(&d).unwrap().short(), "abababababab");
        assert_eq!(short_hex(&d), "abababababab");
        assert_eq!(short_hex_prefixed(&d), "sha256:abababababab");
        assert_eq!(short_hex("sha256:abc"), "abc");
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&d.to_uppercase()).is_err());
        assert!(Digest::parse(&format!("md5:{}", "ab".repeat(32))).is_err());
    }

    #[test]
    fn splits_pinned_references() {
        let d = format!("sha256:{}", "0".repeat(64));
        let (repo, digest) = split_pinned(&format!("ghcr.io/a/b@{d}")).unwrap();
        assert_eq!(repo.to_string(), "ghcr.io/a/b");
        assert_eq!(digest.as_str(), d);
        assert!(split_pinned("ghcr.io/a/b:main").is_none());
    }

    #[test]
    fn tags_follow_the_registry_grammar() {
        assert!(validate_tag("v1.2.3-rc.1").is_ok());
        assert!(validate_tag("-x").is_err());
        assert!(validate_tag("a/b").is_err());
        assert!(validate_tag(&"a".repeat(129)).is_err());
    }
}
