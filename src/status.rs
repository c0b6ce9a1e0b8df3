//! What the daemon is doing right now, per service: queued or rolling (and at which step),
//! what the pollers last saw, which watch window is open. Kept in memory, written by the
//! queue, pollers and watches, read by `/status` and systemd's STATUS line.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::rollout::{Observer, Step};
use crate::store::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Idle,
    Queued,
    Rolling,
    Failed,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStatus {
    pub state: State,
    /// The step of the rollout running now.
    pub step: Option<String>,
    /// The trigger of the rollout running now, or of the one waiting.
    pub trigger: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub last_poll: Option<i64>,
    pub next_poll: Option<i64>,
    pub last_poll_error: Option<String>,
    /// Set while a push/workflow_run watch waits for the new image.
    pub watching_until: Option<i64>,
}

pub struct Status {
    started: Instant,
    started_at: i64,
    services: Mutex<BTreeMap<String, ServiceStatus>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            started: Instant::now(),
            started_at: now_ms(),
            services: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Status {
    pub fn update(&self, service: &str, change: impl FnOnce(&mut ServiceStatus)) {
        let mut map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        change(map.entry(service.to_string()).or_default());
    }

    pub fn get(&self, service: &str) -> ServiceStatus {
        let map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        map.get(service).cloned().unwrap_or_default()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// One line for systemd's STATUS=: what is rolling, else idle.
    pub fn summary(&self) -> String {
        let map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let busy: Vec<String> = map
            .iter()
            .filter_map(|(name, s)| match s.state {
                State::Rolling => Some(format!(
                    "{name}: {}",
                    s.step.as_deref().unwrap_or("starting")
                )),
                State::Queued => Some(format!("{name}: queued")),
                _ => None,
            })
            .collect();
        if busy.is_empty() {
            format!("idle; {} service(s)", map.len())
        } else {
            format!("rolling {}", busy.join(", "))
        }
    }
}

/// Follows a rollout's steps into the status.
pub struct StatusObserver<'a> {
    pub status: &'a Status,
    pub service: &'a str,
}

impl Observer for StatusObserver<'_> {
    fn started(&self, step: Step) {
        self.status.update(self.service, |s| {
            s.state = State::Rolling;
            s.step = Some(step.as_str().to_string());
        });
    }
}
