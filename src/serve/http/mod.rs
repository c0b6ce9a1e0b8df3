//! hoist's HTTP API (axum): GitHub webhooks and health routes.
//!
//! Handlers only verify, record and enqueue: every registry and Docker call happens in the
//! deploy queue or a watch, so GitHub gets its answer within milliseconds. Errors are
//! [`ApiError`]s: short JSON bodies (`{"error": "..."}`) that name the problem and never
//! echo secrets or internal error text (the crate's error policy is in [`error`]).

pub(crate) mod api;
pub(crate) mod connections;
pub(crate) mod error;
pub(crate) mod intake;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::github::webhook::{self, Event};
use crate::report::status::Status;
use crate::rollout::Target;
use crate::serve::live::Live;
use crate::serve::poller::Watches;
use crate::serve::queue::{Expected, Job, Queue, Submitted};
use crate::serve::sweep::Hooks;
use crate::store::deliveries::{Claim, Deliveries, DeliveryId};
use crate::util::{Throttle, escape, escaped};

pub(crate) use error::ApiError;
use intake::{Claimed, Intake};

/// Everything the handlers share.
#[derive(Clone)]
pub(crate) struct App {
    /// The running config and context; each handler takes a snapshot.
    pub live: Live,
    pub deliveries: Arc<Deliveries>,
    /// The webhooks seen delivering each repository, for the sweep.
    pub hooks: Arc<Hooks>,
    /// `/readyz`'s last check that the state can be written.
    pub write_check: Arc<WriteCheck>,
    pub queue: Queue,
    pub watches: Watches,
    pub status: Arc<Status>,
    pub metrics: Arc<crate::report::metrics::Metrics>,
    /// The budget of webhook body bytes in flight.
    pub intake: Intake,
    pub stop: CancellationToken,
    /// Keeps log lines about refused requests to a few a second per kind.
    pub refusals: Arc<Throttle>,
}

/// Log lines a second, per kind, about refused requests.
pub(crate) const REFUSALS_LOGGED_PER_SECOND: u32 = 5;

/// The longest delivery id or event name shown in a log line, the journal or `/status`
/// (GitHub's are a 36-byte GUID and a short word).
const SHOWN_HEADER: usize = 64;

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route(
            "/webhooks/github",
            // No body limit layer: the handler reads the body itself, headers first.
            post(github_webhook),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::serve::http::api::routes())
        // Shared, not cloned per request.
        .with_state(Arc::new(app))
}

pub(crate) fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn healthz() -> Response {
    reply(StatusCode::OK, json!({ "status": "ok" }))
}

/// Ready when the Docker engine answers and the state can be written (a rollout writes
/// its journal and lock files there; reads alone pass on a read-only or full disk). The
/// body says which one is not, naming the state directory; the log says why.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let ctx = app.live.now();
    let docker = ctx.engine.ping().await;
    if let Err(e) = &docker {
        tracing::warn!(error = %e, "Not ready: the Docker engine does not answer");
    }
    let state = app.write_check.check(&ctx.store).await;
    let answer = |ok: bool| if ok { "ok" } else { "unavailable" };
    let mut body = json!({
        "docker": answer(docker.is_ok()),
        "state": if state.is_ok() { "ok" } else { "not writable" },
    });
    if state.is_err() {
        body["state_dir"] = json!(ctx.store.dir().display().to_string());
    }
    let code = if docker.is_ok() && state.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(code, body)
}

/// How long one check that the state can be written answers `/readyz`: the check writes,
/// and `/readyz` is public, so a flood of requests costs one write a second.
const WRITE_CHECK_FOR: Duration = Duration::from_secs(1);

/// The last check that the state can be written, shared by concurrent `/readyz` callers.
#[derive(Default)]
pub(crate) struct WriteCheck(tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>);

impl WriteCheck {
    async fn check(&self, store: &crate::store::Store) -> Result<(), String> {
        let mut last = self.0.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < WRITE_CHECK_FOR
        {
            return result.clone();
        }
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || store.check_writable())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = &result {
            tracing::warn!(error = %e, "Not ready: the state cannot be written");
        }
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

/// A header's value as a log line, the journal or `/status` may show it.
fn shown(value: &str) -> String {
    escape(value, SHOWN_HEADER)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn github_webhook(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = handle_delivery(&app, remote, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    // GitHub's event names only: a made-up name must not become a series of its own.
    let event = header(&headers, "x-github-event").map_or("unknown", webhook::event_label);
    let result = match response.status() {
        StatusCode::UNAUTHORIZED => "refused",
        StatusCode::NOT_FOUND => "off",
        StatusCode::SERVICE_UNAVAILABLE => "busy",
        s if s.is_client_error() => "bad_request",
        _ => response
            .extensions()
            .get::<DeliveryResult>()
            .map_or("ok", |r| r.0),
    };
    app.metrics.delivery(event, result);
    response
}

/// What a delivery came to, for the metrics (set on successful responses).
#[derive(Clone, Copy)]
struct DeliveryResult(&'static str);

/// A delivery whose signature and payload were checked.
struct Delivery<'a> {
    event: &'a str,
    id: &'a str,
    hook: &'a str,
    parsed: Event,
}

/// Checks a delivery's headers, then reads its body (bounded) and checks its signature and
/// payload.
async fn read_delivery<'a>(
    app: &App,
    remote: SocketAddr,
    headers: &'a HeaderMap,
    body: Body,
) -> Result<Delivery<'a>, ApiError> {
    let ctx = app.live.now();
    let checked = match ctx.config.github.webhook_secret.as_ref() {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "webhooks are not configured (set github.webhook_secret_file)",
        )),
        Some(secret) => intake::check_headers(headers, remote, &app.refusals).map(|c| (secret, c)),
    };
    let (
        secret,
        Claimed {
            event,
            delivery,
            hook,
            signature,
            length,
        },
    ) = match checked {
        Ok(checked) => checked,
        Err(refused) => {
            app.intake.linger(body);
            return Err(refused);
        }
    };
    let body = app.intake.read(body, length).await?;
    webhook::verify_claimed(secret.expose().as_bytes(), &body.bytes, &signature)
        .map_err(|e| intake::refused(&app.refusals, delivery, event, remote, &e))?;
    let parsed = webhook::parse(event, &body.bytes).map_err(|e| {
        if let Some(suppressed) = app.refusals.allow("webhook payload") {
            tracing::warn!(delivery = %shown(delivery), event = webhook::event_label(event), %remote,
                error = %escaped(&e.to_string()), suppressed, "Refused an unreadable webhook payload");
        }
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    Ok(Delivery {
        event,
        id: delivery,
        hook,
        parsed,
    })
}

async fn handle_delivery(
    app: &App,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Delivery {
        event,
        id: delivery,
        hook,
        parsed,
    } = read_delivery(app, remote, headers, body).await?;
    app.hooks.learn(&parsed, hook);
    match app.deliveries.claim(hook, delivery, event) {
        Claim::New => {}
        Claim::Retry => {
            tracing::info!(delivery = %shown(delivery), hook, event = %shown(event), "Processing again a redelivery of a delivery whose work failed");
        }
        Claim::Duplicate => {
            tracing::info!(delivery = %shown(delivery), hook, event = %shown(event), "Ignoring a redelivery");
            return Ok(with_result(
                reply(StatusCode::OK, json!({ "status": "duplicate" })),
                "duplicate",
            ));
        }
    }
    let id = DeliveryId {
        hook: hook.to_string(),
        id: delivery.to_string(),
    };
    let Acted {
        code,
        answer,
        changed,
    } = act(app, event, &id, &parsed);
    // A delivery that changed what hoist will do is worth a line; the rest of a storm of
    // deliveries (each replacing the waiting check, or ignored) is detail.
    if changed {
        tracing::info!(delivery = %shown(delivery), event = %shown(event), %remote, outcome = %answer, "Webhook delivery");
    } else {
        tracing::debug!(delivery = %shown(delivery), event = %shown(event), %remote, outcome = %answer, "Webhook delivery");
    }
    let result = match answer["status"].as_str() {
        Some("queued") => "queued",
        Some("pong") => "pong",
        _ => "ignored",
    };
    Ok(with_result(reply(code, answer), result))
}

fn with_result(mut response: Response, result: &'static str) -> Response {
    response.extensions_mut().insert(DeliveryResult(result));
    response
}

/// What a delivery led to.
pub(crate) struct Acted {
    pub code: StatusCode,
    pub answer: serde_json::Value,
    /// A rollout was started or newly queued, or a watch opened.
    pub changed: bool,
}

/// Decides what a verified, new (or retried) delivery leads to: a webhook, or one the
/// sweep found. A delivery that queues a rollout is settled by the queue when it has run;
/// the rest need no record (a redelivery of them is a duplicate).
pub(crate) fn act(app: &App, event: &str, delivery: &DeliveryId, parsed: &Event) -> Acted {
    let ignored = |reason: &str| Acted {
        code: StatusCode::ACCEPTED,
        answer: json!({ "status": "ignored", "reason": reason }),
        changed: false,
    };
    match parsed {
        Event::Ping => {
            return Acted {
                code: StatusCode::OK,
                answer: json!({ "status": "pong" }),
                changed: false,
            };
        }
        Event::Ignored(reason) => return ignored(reason),
        _ => {}
    }
    let mut changed = false;
    let mut reasons = Vec::new();
    let mut actions = Vec::new();
    let trigger = format!(
        "webhook {} (delivery {})",
        shown(event),
        shown(&delivery.id)
    );
    let ctx = app.live.now();
    for s in &ctx.config.services {
        if let Err(reason) = webhook::concerns(s, parsed) {
            reasons.push(reason);
            continue;
        }
        let action = match parsed {
            Event::Package { tag, digest, .. } => {
                let job = Job {
                    target: Target::Track,
                    trigger: trigger.clone(),
                    expect: digest.clone().map(|digest| Expected {
                        tag: tag.clone(),
                        digest,
                    }),
                    delivery: Some(delivery.clone()),
                    git_ref: webhook::git_ref(parsed),
                };
                let submitted = app.queue.submit(&s.name, job);
                changed |= matches!(submitted, Submitted::Started | Submitted::Queued);
                format!("deploy {}", submitted.as_str())
            }
            _ => {
                let job = Job {
                    git_ref: webhook::git_ref(parsed),
                    ..Job::new(Target::Track, trigger.clone())
                };
                app.watches
                    .start(&ctx, &app.queue, &app.status, s, job, &app.stop);
                changed = true;
                format!(
                    "watching the registry for up to {}",
                    humantime::format_duration(s.watch_window)
                )
            }
        };
        actions.push(json!({ "service": s.name, "action": action }));
    }
    if actions.is_empty() {
        let reason = if reasons.is_empty() {
            "no services configured".to_string()
        } else {
            reasons.join("; ")
        };
        return ignored(&reason);
    }
    Acted {
        code: StatusCode::ACCEPTED,
        answer: json!({ "status": "queued", "services": actions }),
        changed,
    }
}
