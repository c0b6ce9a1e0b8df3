//! Notifications: a Slack-compatible incoming webhook per environment
//! (`[environments.<name>] notify_url`) is told when a rollout succeeds, fails or is
//! rolled back. Sent from a task of its own, retried with backoff: a chat service that is
//! down never blocks or fails a rollout. The tasks run on a tracker the daemon waits for at
//! shutdown (for a bounded time), so a rollout that ends during shutdown is still announced.

use std::time::Duration;

use serde_json::json;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ServiceConfig};
use crate::rollout::Report;
use crate::store::Outcome;

const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct Notifier {
    /// `Err`: why there is no client; each notification is then logged as not delivered.
    http: Result<reqwest::Client, String>,
    config: std::sync::Arc<Config>,
    tasks: TaskTracker,
}

impl Notifier {
    /// Notifications are sent from tasks on `tasks`.
    pub(crate) fn new(config: std::sync::Arc<Config>, tasks: TaskTracker) -> Self {
        Notifier {
            http: crate::util::http_client(reqwest::Client::builder().timeout(TIMEOUT)),
            config,
            tasks,
        }
    }

    /// Tells the service's environment about a finished rollout (not about no-ops).
    pub(crate) fn rollout(&self, service: &ServiceConfig, report: &Report) {
        let Some(url) = self
            .config
            .environments
            .get(&service.environment)
            .and_then(|e| e.notify_url.clone())
        else {
            return;
        };
        let Some(text) = message(service, report, self.config.server.public_url.as_deref()) else {
            return;
        };
        let http = match &self.http {
            Ok(http) => http.clone(),
            Err(e) => {
                tracing::warn!(service = %service.name, error = %e, "Notification not delivered");
                return;
            }
        };
        self.tasks
            .spawn(send(http, url, text, service.name.clone()));
    }
}

/// Posts `text` to `url`, retrying with backoff.
async fn send(http: reqwest::Client, url: String, text: String, name: String) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let sent = http.post(&url).json(&json!({ "text": text })).send().await;
        match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                tracing::warn!(service = %name, status = r.status().as_u16(), attempt, "Notification refused")
            }
            Err(e) => {
                tracing::warn!(service = %name, error = %e, attempt, "Notification not delivered")
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 4;
        }
    }
    tracing::warn!(service = %name, "Gave up on a notification");
}

/// The chat line for a rollout; `None` for outcomes nobody needs to hear about.
pub(crate) fn message(
    service: &ServiceConfig,
    report: &Report,
    public_url: Option<&str>,
) -> Option<String> {
    let to = report.to.as_ref().map_or("?", |d| d.short());
    let link = public_url
        .map(|u| format!(" <{u}/status|status>"))
        .unwrap_or_default();
    let why = report
        .error
        .as_deref()
        .and_then(|e| e.lines().next())
        .unwrap_or("no details");
    let step = report.failed_step.map_or("-", |s| s.as_str());
    let text = match report.outcome {
        Outcome::Succeeded => format!(
            ":white_check_mark: {} ({}) now runs {} @ {to} (deploy #{}){link}",
            service.name, service.environment, service.image, report.deploy_id
        ),
        Outcome::RolledBack => format!(
            ":leftwards_arrow_with_hook: {} ({}): {to} was rolled back at {step}; the previous version keeps serving. {why} (deploy #{}){link}",
            service.name, service.environment, report.deploy_id
        ),
        Outcome::Failed => format!(
            ":x: {} ({}): rollout to {to} failed at {step}: {why} (deploy #{}){link}",
            service.name, service.environment, report.deploy_id
        ),
        Outcome::Noop
        | Outcome::Running
        | Outcome::Interrupted
        | Outcome::Paused
        | Outcome::Resumed => return None,
    };
    Some(text)
}
