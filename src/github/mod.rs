//! GitHub Deployments: each rollout the daemon runs is reported as a deployment of the
//! service's `github_repository` (environment = the service's environment), with an
//! `in_progress` status, then `success` or `failure`; the deployment it replaced is marked
//! `inactive`.
//!
//! Reporting runs in its own task, fed by the rollout through a channel, every request
//! with a timeout: a slow or failing GitHub never delays or fails a rollout, it only costs
//! a warning in the log. The tasks run on a tracker the daemon waits for at shutdown, so a
//! rollout that ends during the shutdown grace still gets its `success` or `failure`.

pub mod hooks;
pub mod webhook;

use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ServiceConfig};
use crate::store::{Outcome, Store};
use crate::util::escaped;

/// Per request; GitHub answers in well under a second when it is well.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Everything GitHub is told about one rollout.
pub struct Rollout {
    pub repository: String,
    pub environment: String,
    pub service: String,
    /// The commit sha or tag the image was built from.
    pub git_ref: String,
    pub description: String,
    pub environment_url: String,
    pub log_url: Option<String>,
}

#[derive(Clone)]
pub struct Deployments {
    client: Option<octocrab::Octocrab>,
    store: Store,
    tasks: TaskTracker,
    /// Cancelled when the daemon stops waiting for its running rollouts (the shutdown grace
    /// ran out): their reports then stop waiting for an outcome that will not come.
    abandoned: CancellationToken,
}

/// The end of a reported rollout; dropping it without [`Report::finish`] reports nothing
/// more (the deployment stays `in_progress`, as GitHub shows an interrupted one).
pub struct Report {
    done: Option<oneshot::Sender<(Outcome, Option<String>)>>,
}

impl Report {
    pub fn finish(mut self, outcome: Outcome, error: Option<String>) {
        if let Some(done) = self.done.take() {
            let _ = done.send((outcome, error));
        }
    }
}

impl Deployments {
    /// Off (reports nothing) without `github.token_file`. Reports run on `tasks`.
    pub fn new(
        config: &Config,
        store: Store,
        tasks: TaskTracker,
        abandoned: CancellationToken,
    ) -> Self {
        let client = config.github.token.as_ref().and_then(|token| {
            let built = octocrab::Octocrab::builder()
                .personal_token(token.expose().to_string())
                .base_uri(config.github.api_url.as_str())
                .map(|b| {
                    b.set_connect_timeout(Some(TIMEOUT))
                        .set_read_timeout(Some(TIMEOUT))
                        .set_write_timeout(Some(TIMEOUT))
                        .build()
                });
            match built {
                Ok(Ok(client)) => Some(client),
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(error = %escaped(&e.to_string()), "Cannot set up the GitHub client; deployments will not be reported");
                    None
                }
            }
        });
        Deployments {
            client,
            store,
            tasks,
            abandoned,
        }
    }

    /// The GitHub facts for a rollout of `service`, when it has a repository.
    pub fn describe(
        config: &Config,
        service: &ServiceConfig,
        git_ref: Option<&str>,
        digest: &str,
    ) -> Option<Rollout> {
        let repository = service.github_repository.clone()?;
        let git_ref = git_ref?.to_string();
        let short = crate::image::short_hex(digest);
        let description: String = format!("hoist: {} {} @ {short}", service.name, git_ref)
            .chars()
            .take(140)
            .collect();
        Some(Rollout {
            repository,
            environment: service.environment.clone(),
            service: service.name.clone(),
            git_ref,
            description,
            environment_url: format!("https://{}", service.host),
            log_url: config
                .server
                .public_url
                .as_ref()
                .map(|u| format!("{u}/status")),
        })
    }

    /// Starts reporting a rollout; returns the handle to report its end with.
    pub fn begin(&self, rollout: Rollout) -> Report {
        let Some(client) = self.client.clone() else {
            return Report { done: None };
        };
        let (done, outcome) = oneshot::channel();
        let store = self.store.clone();
        let abandoned = self.abandoned.clone();
        self.tasks.spawn(async move {
            let outcome = async move {
                tokio::select! {
                    // A rollout that finished has its outcome waiting: take it first.
                    biased;
                    finished = outcome => finished.ok(),
                    () = abandoned.cancelled() => None,
                }
            };
            report(client, store, rollout, outcome).await;
        });
        Report { done: Some(done) }
    }
}

async fn post(
    client: &octocrab::Octocrab,
    route: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    match tokio::time::timeout(
        TIMEOUT,
        client.post::<_, serde_json::Value>(route, Some(&body)),
    )
    .await
    {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
    }
}

/// Creates the deployment; `None` (after a warning) when GitHub did not.
async fn create(client: &octocrab::Octocrab, deployments: &str, r: &Rollout) -> Option<u64> {
    let created = post(
        client,
        deployments,
        json!({
            "ref": r.git_ref,
            "environment": r.environment,
            "description": r.description,
            "auto_merge": false,
            "required_contexts": [],
            "transient_environment": false,
            "production_environment": r.environment == "prod" || r.environment == "production",
        }),
    )
    .await;
    match created.map(|v| v["id"].as_u64()) {
        Ok(Some(id)) => Some(id),
        Ok(None) => {
            tracing::warn!(service = %r.service, "GitHub created no deployment (no id in the answer)");
            None
        }
        Err(e) => {
            tracing::warn!(service = %r.service, repository = %r.repository, error = %escaped(&e.to_string()), "Cannot create a GitHub deployment");
            None
        }
    }
}

impl Rollout {
    /// The body of a deployment status.
    fn status(&self, state: &str, description: &str) -> serde_json::Value {
        let mut body = json!({
            "state": state,
            "environment_url": self.environment_url,
            "description": description.chars().take(140).collect::<String>(),
            "auto_inactive": false,
        });
        if let Some(log) = &self.log_url {
            body["log_url"] = json!(log);
        }
        body
    }
}

async fn report(
    client: octocrab::Octocrab,
    store: Store,
    r: Rollout,
    outcome: impl Future<Output = Option<(Outcome, Option<String>)>>,
) {
    let deployments = format!("/repos/{}/deployments", r.repository);
    let Some(id) = create(&client, &deployments, &r).await else {
        return;
    };
    let statuses = format!("{deployments}/{id}/statuses");
    if let Err(e) = post(&client, &statuses, r.status("in_progress", "rolling out")).await {
        tracing::warn!(service = %r.service, error = %escaped(&e.to_string()), "Cannot report a GitHub deployment in progress");
    }
    let Some((outcome, error)) = outcome.await else {
        return;
    };
    let (state, text) = match outcome {
        o if o.is_success() => ("success", "deployed".to_string()),
        other => (
            "failure",
            error.unwrap_or_else(|| other.as_str().to_string()),
        ),
    };
    if let Err(e) = post(&client, &statuses, r.status(state, &text)).await {
        tracing::warn!(service = %r.service, error = %escaped(&e.to_string()), "Cannot report a GitHub deployment's result");
        return;
    }
    if !outcome.is_success() {
        return;
    }
    match store.github_deployment(&r.service) {
        Ok(Some(previous)) if previous != id => {
            let route = format!("{deployments}/{previous}/statuses");
            if let Err(e) = post(&client, &route, r.status("inactive", "replaced")).await {
                tracing::warn!(service = %r.service, error = %escaped(&e.to_string()), "Cannot mark the replaced GitHub deployment inactive");
            }
        }
        _ => {}
    }
    if let Err(e) = store.set_github_deployment(&r.service, id) {
        tracing::warn!(service = %r.service, error = %escaped(&e.to_string()), "Cannot remember the GitHub deployment");
    }
}
