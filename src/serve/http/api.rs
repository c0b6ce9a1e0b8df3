//! The operator API of `hoist serve`: `/status` (JSON, or HTML for browsers),
//! `/api/deploys`, `/metrics`, and the admin actions deploy, rollback and promote.
//!
//! Read routes are public unless `server.status_token_file` is set. Admin routes need
//! `server.admin_token_file`'s token as a bearer token, compared in constant time; without
//! a configured token they do not exist (404), so they are never open by accident.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::image;
use crate::report::page;
use crate::report::status::{self, Document};
use crate::rollout::{Target, request};
use crate::secret::Secret;
use crate::serve::http::{App, error, reply};
use crate::serve::promotion;
use crate::serve::queue::Job;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/status", get(status))
        .route("/api/deploys", get(deploys))
        .route("/metrics", get(metrics))
        .route("/api/services/{name}/{action}", post(action))
}

/// Constant-time equality: the time taken does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    NoToken,
    WrongToken,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let message = match self {
            Denied::NoToken => "a bearer token is required",
            Denied::WrongToken => "the bearer token is not valid",
        };
        let mut r = error(StatusCode::UNAUTHORIZED, message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"hoist\""),
        );
        r
    }
}

/// Checks a bearer token against any of `accepted`.
fn authorize(headers: &HeaderMap, accepted: &[&Secret]) -> Result<(), Denied> {
    let given = bearer(headers).ok_or(Denied::NoToken)?;
    if accepted
        .iter()
        .any(|t| same(t.expose().as_bytes(), given.as_bytes()))
    {
        Ok(())
    } else {
        Err(Denied::WrongToken)
    }
}

/// Read routes: open unless a status token is configured (the admin token works too).
fn authorize_read(app: &App, headers: &HeaderMap) -> Result<(), Denied> {
    let server = &app.ctx.config.server;
    match &server.status_token {
        None => Ok(()),
        Some(status) => {
            let mut accepted = vec![status];
            accepted.extend(server.admin_token.as_ref());
            authorize(headers, &accepted)
        }
    }
}

async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize_read(&app, &headers) {
        return denied.into_response();
    }
    let doc: Document = status::document(&app.ctx, Some(&app.status)).await;
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        Html(page::render(&doc)).into_response()
    } else {
        axum::Json(doc).into_response()
    }
}

#[derive(Deserialize)]
struct DeploysQuery {
    service: Option<String>,
    limit: Option<usize>,
}

async fn deploys(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<DeploysQuery>,
) -> Response {
    if let Err(denied) = authorize_read(&app, &headers) {
        return denied.into_response();
    }
    if let Some(s) = &q.service
        && let Err(e) = app.ctx.config.service(s)
    {
        return error(StatusCode::NOT_FOUND, e.to_string());
    }
    match app
        .ctx
        .store
        .deploys(q.service.as_deref(), q.limit.unwrap_or(50).min(1000))
    {
        Ok(d) => axum::Json(d).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Cannot read the journal");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state database is not available",
            )
        }
    }
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize_read(&app, &headers) {
        return denied.into_response();
    }
    let states: Vec<(String, String, crate::store::ServiceState)> = app
        .ctx
        .config
        .services
        .iter()
        .filter_map(|s| {
            let st = app.ctx.store.service_state(&s.name).ok().flatten()?;
            Some((s.name.clone(), s.environment.clone(), st))
        })
        .collect();
    let deployed: Vec<[&str; 5]> = states
        .iter()
        .map(|(name, env, st)| {
            [
                name.as_str(),
                env.as_str(),
                st.image.as_str(),
                st.tag.as_deref().unwrap_or(""),
                st.digest.as_str(),
            ]
        })
        .collect();
    let text = app
        .metrics
        .render(env!("CARGO_PKG_VERSION"), app.status.uptime(), &deployed);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    tag: Option<String>,
    digest: Option<String>,
}

async fn action(
    State(app): State<Arc<App>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let Some(admin) = app.ctx.config.server.admin_token.as_ref() else {
        return error(
            StatusCode::NOT_FOUND,
            "admin routes are off: set server.admin_token_file to enable them",
        );
    };
    if let Err(denied) = authorize(&headers, &[admin]) {
        tracing::warn!(service = %name, action, reason = ?denied, "Refused an admin request");
        return denied.into_response();
    }
    let Ok(service) = app.ctx.config.service(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("no service named `{name}`"));
    };
    let job = match action.as_str() {
        "deploy" => {
            let body: DeployBody = if body.is_empty() {
                DeployBody::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
                }
            };
            let target = match request::deploy_target(body.tag, body.digest.as_deref()) {
                Ok(Target::Tag(tag)) => match image::validate_tag(&tag) {
                    Ok(()) => Target::Tag(tag),
                    Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
                },
                Ok(target) => target,
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            Job::new(target, "api deploy")
        }
        "rollback" => {
            let previous = request::rollback_target(&app.ctx.store, &name).ok();
            match previous {
                Some(target) => Job::new(target, "api rollback"),
                None => {
                    return error(
                        StatusCode::CONFLICT,
                        format!("{name} has no previous digest recorded"),
                    );
                }
            }
        }
        "promote" => match promotion::candidate(&app.ctx, &service).await {
            Ok((digest, _)) => promotion::job(&service, digest, "api"),
            Err(e) => return error(StatusCode::CONFLICT, e.to_string()),
        },
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action `{other}` (deploy, rollback, promote)"),
            );
        }
    };
    let target = job.target.to_string();
    let trigger = job.trigger.clone();
    let submitted = app.queue.submit(&name, job);
    tracing::info!(service = %name, action, target, submitted = submitted.as_str(), "Admin request");
    reply(
        StatusCode::ACCEPTED,
        json!({ "status": submitted.as_str(), "service": name, "target": target, "trigger": trigger }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorize(&h, &[&Secret::new("s3cret")]).is_ok());
        assert!(authorize(&h, &[&Secret::new("other")]).is_err());
        assert!(authorize(&HeaderMap::new(), &[&Secret::new("s3cret")]).is_err());
    }
}
