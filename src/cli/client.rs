//! The CLI's side of the operator API: when a `hoist serve` answers (at `--url`, or at
//! `server.listen`), `status`, `history`, `deploy`, `rollback` and `promote` go through it,
//! so the daemon's queue, metrics, GitHub reports and notifications see every rollout.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::Config;
use crate::report::status::Document;
use crate::secret::Secret;
use crate::store::Deploy;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach hoist serve at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("hoist serve answered HTTP {status} for {what}: {message}")]
    Refused {
        status: u16,
        what: String,
        message: String,
    },
    #[error("hoist serve sent something unreadable for {what}: {detail}")]
    Protocol { what: String, detail: String },
}

pub struct Client {
    base: String,
    http: reqwest::Client,
    admin: Option<Secret>,
    read: Option<Secret>,
}

impl Client {
    /// Fails only when no HTTP client can be built (the TLS backend cannot be set up).
    pub fn new(base: &str, config: &Config) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        let http =
            crate::util::http_client(builder).map_err(|detail| ClientError::Unreachable {
                url: base.clone(),
                detail,
            })?;
        Ok(Client {
            base,
            http,
            admin: config.server.admin_token.clone(),
            read: config
                .server
                .status_token
                .clone()
                .or_else(|| config.server.admin_token.clone()),
        })
    }

    /// `http://<server.listen>`, with an unspecified address (0.0.0.0) replaced by loopback.
    pub fn default_url(config: &Config) -> String {
        let mut addr = config.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether the admin routes can be used (a token is configured).
    pub fn can_act(&self) -> bool {
        self.admin.is_some()
    }

    /// Whether a daemon answers `/healthz`.
    pub async fn reachable(&self) -> bool {
        self.http
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_millis(800))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).map_err(|e| ClientError::Protocol {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(ClientError::Refused {
                status: status.as_u16(),
                what: what.to_string(),
                message: value["error"].as_str().unwrap_or(&text).to_string(),
            });
        }
        Ok(value)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(format!("{}{path}", self.base));
        match &self.read {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    pub async fn status(&self) -> Result<Document, ClientError> {
        let value = self.send("/status", self.get("/status")).await?;
        decode("/status", value)
    }

    pub async fn deploys(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Deploy>, ClientError> {
        let mut path = format!("/api/deploys?limit={limit}");
        if let Some(s) = service {
            path.push_str(&format!("&service={s}"));
        }
        let value = self.send("/api/deploys", self.get(&path)).await?;
        decode("/api/deploys", value)
    }

    /// `POST /api/services/<service>/<action>`.
    pub async fn act(
        &self,
        service: &str,
        action: &str,
        body: Value,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .http
            .post(format!("{}/api/services/{service}/{action}", self.base))
            .json(&body);
        if let Some(token) = &self.admin {
            request = request.bearer_auth(token.expose());
        }
        self.send(action, request).await
    }

    /// The id of the newest journal entry of `service` (0 when there is none).
    pub async fn last_deploy_id(&self, service: &str) -> Result<i64, ClientError> {
        Ok(self
            .deploys(Some(service), 1)
            .await?
            .first()
            .map_or(0, |d| d.id))
    }

    /// Waits for the first rollout of `service` newer than `after` to finish, reporting
    /// its steps to `progress` as they start.
    pub async fn follow(
        &self,
        service: &str,
        after: i64,
        mut progress: impl FnMut(&str),
    ) -> Result<Deploy, ClientError> {
        let clock = Instant::now();
        let mut seen_step = None;
        loop {
            let newer = self
                .deploys(Some(service), 5)
                .await?
                .into_iter()
                // Journal notes that automation was paused or resumed are not the rollout.
                .filter(|d| d.id > after && d.outcome.is_rollout())
                .min_by_key(|d| d.id);
            if let Some(d) = newer {
                if d.outcome.is_finished() {
                    return Ok(d);
                }
                if d.step != seen_step {
                    if let Some(step) = &d.step {
                        progress(step);
                    }
                    seen_step = d.step.clone();
                }
            }
            if clock.elapsed() > Duration::from_secs(3600) {
                return Err(ClientError::Protocol {
                    what: "following the rollout".into(),
                    detail: "no result after an hour".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The typed form of what the daemon answered at `what`.
fn decode<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Protocol {
        what: what.to_string(),
        detail: e.to_string(),
    })
}
