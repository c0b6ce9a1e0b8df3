//! GitHub's record of a repository webhook's deliveries (REST: "List deliveries for a
//! repository webhook" and "Get a delivery for a repository webhook"), read by the daemon's
//! sweep to find deliveries that never reached hoist.
//!
//! Bounded: at most [`MAX_PAGES`] pages of [`PER_PAGE`] deliveries a sweep (newest first),
//! every request with a timeout.

use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::util::escaped;

/// Per request; GitHub answers in well under a second when it is well.
const TIMEOUT: Duration = Duration::from_secs(10);
/// GitHub's largest page.
pub const PER_PAGE: usize = 100;
/// Pages listed a sweep: the newest 300 deliveries of a hook cover far more than a sweep
/// interval of any repository hoist deploys from.
pub const MAX_PAGES: usize = 3;

/// One delivery as the list shows it (GitHub's `hook-delivery-item`; fields hoist uses).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Listed {
    /// GitHub's id of this delivery attempt (a redelivery gets a new one).
    pub id: u64,
    /// `X-GitHub-Delivery`: shared by the attempts of one event at one hook.
    pub guid: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The answer hoist gave (0 or 5xx when it never got there).
    #[serde(default)]
    pub status_code: u16,
}

#[derive(Deserialize)]
struct Detail {
    request: Request,
}

#[derive(Deserialize)]
struct Request {
    payload: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    #[error("GitHub API {route}: {detail}")]
    Api { route: String, detail: String },
}

/// A client for one GitHub API (github.com or an Enterprise server) with one token.
#[derive(Clone)]
pub struct HookApi {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl HookApi {
    pub fn new(base: &str, token: Secret) -> Result<HookApi, HooksError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HooksError::Api {
                route: base.to_string(),
                detail: e.to_string(),
            })?;
        Ok(HookApi {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn get(&self, url: &str, route: &str) -> Result<reqwest::Response, HooksError> {
        let fail = |detail: String| HooksError::Api {
            route: route.to_string(),
            detail,
        };
        let response = self
            .http
            .get(url)
            .bearer_auth(self.token.expose())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(fail(format!("HTTP {status}: {}", escaped(&body))));
        }
        Ok(response)
    }

    /// The hook's recent deliveries, newest first, at most [`MAX_PAGES`] pages.
    pub async fn deliveries(&self, repository: &str, hook: u64) -> Result<Vec<Listed>, HooksError> {
        let route = format!("/repos/{repository}/hooks/{hook}/deliveries");
        let mut url = format!("{}{route}?per_page={PER_PAGE}", self.base);
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let response = self.get(&url, &route).await?;
            let next = crate::util::next_link(response.headers());
            let page: Vec<Listed> = response.json().await.map_err(|e| HooksError::Api {
                route: route.clone(),
                detail: format!("unreadable list of deliveries: {e}"),
            })?;
            let full = page.len() >= PER_PAGE;
            all.extend(page);
            match next {
                Some(next) if full => url = next,
                _ => break,
            }
        }
        Ok(all)
    }

    /// The payload hoist would have received for delivery `id` (GitHub's id, not the guid).
    pub async fn payload(
        &self,
        repository: &str,
        hook: u64,
        id: u64,
    ) -> Result<Vec<u8>, HooksError> {
        let route = format!("/repos/{repository}/hooks/{hook}/deliveries/{id}");
        let url = format!("{}{route}", self.base);
        let detail: Detail =
            self.get(&url, &route)
                .await?
                .json()
                .await
                .map_err(|e| HooksError::Api {
                    route: route.clone(),
                    detail: format!("unreadable delivery: {e}"),
                })?;
        let payload = detail.request.payload.ok_or_else(|| HooksError::Api {
            route: route.clone(),
            detail: "the delivery has no request payload".into(),
        })?;
        serde_json::to_vec(&payload).map_err(|e| HooksError::Api {
            route,
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "link",
            "<https://api.github.com/repos/a/b/hooks/1/deliveries?per_page=100&cursor=v1_2>; rel=\"next\", <https://api.github.com/repos/a/b/hooks/1/deliveries?per_page=100>; rel=\"first\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            crate::util::next_link(&h).as_deref(),
            Some("https://api.github.com/repos/a/b/hooks/1/deliveries?per_page=100&cursor=v1_2")
        );
        h.insert("link", "<https://x/first>; rel=\"first\"".parse().unwrap());
        assert_eq!(crate::util::next_link(&h), None);
    }

    #[test]
    fn a_listed_delivery_reads_githubs_fields() {
        let listed: Vec<Listed> = serde_json::from_str(
            r#"[{"id": 12345678, "guid": "0b989ba4-242f-11e5-81e1-c7b6966d2516",
                "delivered_at": "2019-06-03T00:57:16Z", "redelivery": false, "duration": 0.27,
                "status": "failed to connect", "status_code": 502, "event": "package",
                "action": "published", "installation_id": null, "repository_id": 123}]"#,
        )
        .unwrap();
        assert_eq!(
            listed,
            [Listed {
                id: 12_345_678,
                guid: "0b989ba4-242f-11e5-81e1-c7b6966d2516".into(),
                event: "package".into(),
                status_code: 502,
            }]
        );
    }
}
