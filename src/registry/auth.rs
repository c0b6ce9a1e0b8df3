//! Registry authentication: the credentials for a registry (the config, then Docker's
//! `config.json`), the challenge a registry poses, the token a `Bearer` challenge asks for,
//! and the cache that keeps each header until it expires.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{StatusCode, header};

use super::{Registry, RegistryError};
use crate::config::Credentials;
use crate::image::Repository;
use crate::secret::Secret;
use crate::util::lock;

/// An Authorization header and when it stops being good (`None`: never, for Basic).
#[derive(Clone)]
pub(super) struct CachedAuth {
    pub(super) header: Secret,
    expires: Option<Instant>,
}

/// Authorization headers per (registry host, scope).
pub(super) type AuthCache = HashMap<(String, String), CachedAuth>;

impl Registry {
    /// Credentials for `repo`'s registry: the config first, then `~/.docker/config.json`.
    pub fn credentials_for(&self, repo: &Repository) -> Option<Credentials> {
        self.configured
            .iter()
            .find(|r| r.serves(repo))
            .and_then(|r| r.credentials.clone())
            .or_else(|| {
                let key = if repo.registry() == "docker.io" {
                    "https://index.docker.io/v1/"
                } else {
                    repo.registry()
                };
                self.docker_config.get(key).cloned()
            })
    }

    /// The cached header for `key`, dropping it once expired.
    pub(super) fn cached_auth(&self, key: &(String, String)) -> Option<Secret> {
        let mut cache = lock(&self.auth_cache);
        match cache.get(key) {
            Some(a) if a.expires.is_none_or(|t| t > Instant::now()) => Some(a.header.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    pub(super) fn remember_auth(&self, key: (String, String), auth: CachedAuth) {
        lock(&self.auth_cache).insert(key, auth);
    }

    pub(super) fn forget_auth(&self, key: &(String, String)) {
        lock(&self.auth_cache).remove(key);
    }

    /// The header that answers `challenge` for `repo`; `sent_cached` says whether the
    /// refused request already carried a cached one.
    pub(super) async fn answer(
        &self,
        repo: &Repository,
        challenge: Challenge,
        scope: &str,
        sent_cached: bool,
    ) -> Result<CachedAuth, RegistryError> {
        let credentials = self.credentials_for(repo);
        match challenge {
            Challenge::Basic => {
                let Some(c) = credentials else {
                    return Err(self.unauthorized(repo, "credentials required, none configured"));
                };
                if sent_cached {
                    return Err(self.unauthorized(repo, "the configured credentials were rejected"));
                }
                Ok(CachedAuth {
                    header: Secret::new(format!("Basic {}", basic(&c))),
                    expires: None,
                })
            }
            Challenge::Bearer { realm, service } => {
                self.fetch_token(
                    repo,
                    &realm,
                    service.as_deref(),
                    scope,
                    credentials.as_ref(),
                )
                .await
            }
        }
    }

    async fn fetch_token(
        &self,
        repo: &Repository,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<CachedAuth, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let mut query = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut request = self.http(repo)?.get(realm).query(&query);
        if let Some(c) = credentials {
            request = request.header(header::AUTHORIZATION, format!("Basic {}", basic(c)));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unreachable(repo, e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(
                repo,
                if credentials.is_some() {
                    "the token service rejected the configured credentials"
                } else {
                    "the token service wants credentials; configure [[registries]]"
                },
            ));
        }
        if !status.is_success() {
            return Err(self.status_error(repo, "a registry token", response).await);
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| self.protocol(repo, "a registry token", e.to_string()))?;
        let token = body.token.or(body.access_token).ok_or_else(|| {
            self.protocol(repo, "a registry token", "no token in the answer".into())
        })?;
        // The spec's default lifetime is 60 s; renew a little early.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(20));
        Ok(CachedAuth {
            header: Secret::new(format!("Bearer {token}")),
            expires: Some(Instant::now() + lifetime - Duration::from_secs(10)),
        })
    }
}

fn basic(c: &Credentials) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        c.username,
        c.password.expose()
    ))
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses `Bearer realm="..",service="..",scope=".."` or `Basic realm=".."`. Quoted values
    /// may contain commas (scopes do), so this is a small tokenizer rather than a split.
    pub(super) fn parse(header: &str) -> Challenge {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Challenge::Basic;
        }
        let params = parse_params(rest);
        match params.get("realm") {
            Some(realm) => Challenge::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
            },
            None => Challenge::Basic,
        }
    }
}

fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

pub(super) fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|dir| dir.join("config.json"))
}

/// Reads the `auths` of a Docker client config; credential helpers are not supported (hoist
/// runs unattended) and are skipped.
pub(super) fn read_docker_config(path: &Path) -> HashMap<String, Credentials> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        auths: HashMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let file: File = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable Docker client config");
            return HashMap::new();
        }
    };
    file.auths
        .into_iter()
        .filter_map(|(host, entry)| {
            let (username, password) = match (entry.username, entry.password, entry.auth) {
                (Some(u), Some(p), _) => (u, p),
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth)
                        .ok()?;
                    let text = String::from_utf8(decoded).ok()?;
                    let (u, p) = text.split_once(':')?;
                    (u.to_string(), p.to_string())
                }
                _ => return None,
            };
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            let host = if host == "index.docker.io/v1" {
                "https://index.docker.io/v1/".to_string()
            } else {
                host
            };
            Some((
                host,
                Credentials {
                    username,
                    password: Secret::new(password),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into())
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="basic-realm""#),
            Challenge::Basic
        );
        assert_eq!(
            parse_params(r#"realm="a,b", scope="x""#)
                .get("scope")
                .map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn reads_docker_client_config() {
        let dir = std::env::temp_dir().join(format!("hoist-dcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("bot:tok:en");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"username":"u","password":"p"}}}},"credsStore":"desktop"}}"#),
        )
        .unwrap();
        let creds = read_docker_config(&path);
        assert_eq!(creds["ghcr.io"].username, "bot");
        assert_eq!(creds["ghcr.io"].password.expose(), "tok:en");
        assert_eq!(creds["https://index.docker.io/v1/"].username, "u");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
