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

use crate::context::Context;
use crate::docker::service::CurrentError;
use crate::image;
use crate::report::page;
use crate::report::status::{self, Document};
use crate::rollout::{Target, request};
use crate::secret::Secret;
use crate::serve::http::{ApiError, App, reply};
use crate::serve::promotion::{self, PromotionError, Unhealthy};
use crate::serve::queue::Job;
use crate::util::escaped;

pub(crate) fn routes() -> Router<Arc<App>> {
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

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        ApiError::unauthorized(match denied {
            Denied::NoToken => "a bearer token is required",
            Denied::WrongToken => "the bearer token is not valid",
        })
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
    let ctx = app.live.now();
    let server = &ctx.config.server;
    match &server.status_token {
        None => Ok(()),
        Some(status) => {
            let mut accepted = vec![status];
            accepted.extend(server.admin_token.as_ref());
            authorize(headers, &accepted)
        }
    }
}

async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize_read(&app, &headers)?;
    let doc: Document = status::document(&app.live.now(), Some(&app.status)).await;
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    Ok(if wants_html {
        Html(page::render(&doc)).into_response()
    } else {
        axum::Json(doc).into_response()
    })
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
) -> Result<Response, ApiError> {
    authorize_read(&app, &headers)?;
    let ctx = app.live.now();
    if let Some(s) = &q.service
        && let Err(e) = ctx.config.service(s)
    {
        return Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()));
    }
    let deploys = ctx
        .store
        .deploys(q.service.as_deref(), q.limit.unwrap_or(50).min(1000))
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state database is not available",
            )
            .caused_by("Cannot read the journal", e)
        })?;
    Ok(axum::Json(deploys).into_response())
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize_read(&app, &headers)?;
    let ctx = app.live.now();
    let states: Vec<(String, String, crate::store::ServiceState)> = ctx
        .config
        .services
        .iter()
        .filter_map(|s| {
            let st = ctx.store.service_state(&s.name).ok().flatten()?;
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
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
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
) -> Result<Response, ApiError> {
    let ctx = app.live.now();
    let Some(admin) = ctx.config.server.admin_token.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "admin routes are off: set server.admin_token_file to enable them",
        ));
    };
    if let Err(denied) = authorize(&headers, &[admin]) {
        if let Some(suppressed) = app.refusals.allow("admin token") {
            tracing::warn!(service = %escaped(&name), action = %escaped(&action), reason = ?denied,
                suppressed, "Refused an admin request");
        }
        return Err(denied.into());
    }
    let Ok(service) = ctx.config.service(&name).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no service named `{name}`"),
        ));
    };
    let job = match action.as_str() {
        "deploy" => deploy_job(&body)?,
        "rollback" => rollback_job(&ctx, &name)?,
        "promote" => match promotion::candidate(&ctx, &service).await {
            Ok((digest, _)) => promotion::job(&service, digest, "api"),
            Err(e) => return Err(promotion_refused(e)),
        },
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown action `{other}` (deploy, rollback, promote)"),
            ));
        }
    };
    let target = job.target.to_string();
    let trigger = job.trigger.clone();
    let submitted = app.queue.submit(&name, job);
    tracing::info!(service = %name, action, target, submitted = submitted.as_str(), "Admin request");
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({ "status": submitted.as_str(), "service": name, "target": target, "trigger": trigger }),
    ))
}

/// `deploy`: the track, or the tag or digest the body names.
fn deploy_job(body: &[u8]) -> Result<Job, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let body: DeployBody = if body.is_empty() {
        DeployBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| bad(format!("body: {e}")))?
    };
    let target =
        request::deploy_target(body.tag, body.digest.as_deref()).map_err(|e| bad(e.to_string()))?;
    // The API checks a tag's grammar before queueing; the CLI leaves it to the resolve step.
    if let Target::Tag(tag) = &target {
        image::validate_tag(tag).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Job::new(target, "api deploy"))
}

/// `rollback`: the digest the service ran before its current one.
fn rollback_job(ctx: &Context, name: &str) -> Result<Job, ApiError> {
    match request::rollback_target(&ctx.store, name).ok() {
        Some(target) => Ok(Job::new(target, "api rollback")),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{name} has no previous digest recorded"),
        )),
    }
}

/// Why a promotion is refused, told without the Docker engine's own words.
fn promotion_refused(e: PromotionError) -> ApiError {
    match e {
        PromotionError::NotHealthy {
            from,
            digest,
            why: Unhealthy::Current(CurrentError::Engine(cause)),
        } => ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{from} does not run its recorded digest {digest} healthily right now (its container cannot be inspected; see hoist's log); not promoting"
            ),
        )
        .caused_by("Cannot check the service a promotion is from", cause),
        other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
    }
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
