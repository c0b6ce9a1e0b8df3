//! What the daemon is doing right now, per service: queued or rolling (and at which step),
//! what the pollers last saw, which watch window is open. Kept in memory, written by the
//! queue, pollers and watches, read by systemd's STATUS line and, with the store and
//! Docker, by the `/status` [`Document`] that the page, the JSON and `hoist status` show.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::docker::engine::Health;
use crate::docker::service::CurrentError;
use crate::store::{Deploy, Hold, Outcome, Pause, now_ms};

/// Serialised by its [`State::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum State {
    #[default]
    Idle,
    Queued,
    Rolling,
    Failed,
    /// Serving, with automation paused by an operator.
    Paused,
}

impl State {
    const ALL: [State; 5] = [
        State::Idle,
        State::Queued,
        State::Rolling,
        State::Failed,
        State::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Queued => "queued",
            State::Rolling => "rolling",
            State::Failed => "failed",
            State::Paused => "paused",
        }
    }
}

impl From<State> for &'static str {
    fn from(state: State) -> Self {
        state.as_str()
    }
}

impl TryFrom<String> for State {
    type Error = String;

    fn try_from(name: String) -> Result<State, String> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
            .ok_or_else(|| format!("`{name}` is not a service state"))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ServiceStatus {
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

pub(crate) struct Status {
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
    /// A status that knows every configured service (all idle).
    pub(crate) fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let status = Status::default();
        for name in services {
            status.update(name, |_| {});
        }
        status
    }

    pub(crate) fn update(&self, service: &str, change: impl FnOnce(&mut ServiceStatus)) {
        let mut map = crate::util::lock(&self.services);
        change(map.entry(service.to_string()).or_default());
    }

    /// After a reload: knows exactly `services`, except that a service still rolling or
    /// queued stays until its rollout is over.
    pub(crate) fn keep_only<'a>(&self, services: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::BTreeSet<&str> = services.into_iter().collect();
        let mut map = crate::util::lock(&self.services);
        map.retain(|name, s| {
            keep.contains(name.as_str()) || matches!(s.state, State::Rolling | State::Queued)
        });
        for name in keep {
            map.entry(name.to_string()).or_default();
        }
    }

    pub(crate) fn get(&self, service: &str) -> ServiceStatus {
        let map = crate::util::lock(&self.services);
        map.get(service).cloned().unwrap_or_default()
    }

    pub(crate) fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub(crate) fn started_at(&self) -> i64 {
        self.started_at
    }

    /// One line for systemd's STATUS=: what is rolling, else idle.
    pub(crate) fn summary(&self) -> String {
        let map = crate::util::lock(&self.services);
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

/// The `/status` document: per service, what runs, how healthy it is, what hoist is doing
/// with it and what it did last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub version: String,
    /// Milliseconds since the Unix epoch; `None` when built by the CLI without a daemon.
    pub started_at: Option<i64>,
    pub uptime_s: Option<u64>,
    pub generated_at: i64,
    pub services: Vec<ServiceView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub environment: String,
    pub image: String,
    pub track: String,
    pub host: String,
    /// What hoist last deployed (from its state).
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub deployed_at: Option<i64>,
    /// The trigger of the rollout that deployed it.
    pub deployed_by: Option<String>,
    pub previous_digest: Option<String>,
    /// What Docker runs right now.
    pub container: Option<String>,
    pub running_digest: Option<String>,
    /// healthy, starting, unhealthy, running (no healthcheck), down, or what went wrong.
    pub health: String,
    /// The compose definition changed since the running container was created (its
    /// config hash): `hoist deploy` would roll the change out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compose_changed: bool,
    pub state: State,
    pub step: Option<String>,
    pub trigger: Option<String>,
    pub last_rollout: Option<LastRollout>,
    pub promote_from: Option<String>,
    pub poll_interval_s: Option<u64>,
    pub last_poll: Option<i64>,
    pub next_poll: Option<i64>,
    pub last_poll_error: Option<String>,
    pub watching_until: Option<i64>,
    /// A digest automation does not deploy, because its rollout failed by its own fault.
    #[serde(default)]
    pub held_back: Option<Hold>,
    /// Automation paused by an operator: by whom, why, since when.
    #[serde(default)]
    pub paused: Option<Pause>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastRollout {
    pub id: i64,
    pub outcome: Outcome,
    pub step: Option<String>,
    pub error: Option<String>,
    pub trigger: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

impl From<Deploy> for LastRollout {
    fn from(d: Deploy) -> Self {
        LastRollout {
            id: d.id,
            outcome: d.outcome,
            step: d.step,
            error: d.error,
            trigger: d.trigger,
            started_at: d.started_at,
            finished_at: d.finished_at,
        }
    }
}

/// Builds the document. `live` is the daemon's in-memory status (absent in the CLI).
pub(crate) async fn document(ctx: &Context, live: Option<&Status>) -> Document {
    let mut services = Vec::new();
    for s in &ctx.config.services {
        services.push(service_view(ctx, s, live).await);
    }
    Document {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: live.map(Status::started_at),
        uptime_s: live.map(|l| l.uptime().as_secs()),
        generated_at: now_ms(),
        services,
    }
}

async fn service_view(ctx: &Context, s: &ServiceConfig, live: Option<&Status>) -> ServiceView {
    let state = ctx.store.service_state(&s.name).ok().flatten();
    let last = ctx.store.last_rollout(&s.name).ok().flatten();
    let held_back = ctx.store.hold(&s.name).ok().flatten();
    let paused = ctx.store.pause(&s.name).ok().flatten();
    let deployed_by = state
        .as_ref()
        .and_then(|st| st.deploy_id)
        .and_then(|id| ctx.store.deploy(id).ok().flatten())
        .map(|d| d.trigger);
    let (container, running_digest, health, compose_changed) = running(ctx, s).await;
    let live = live.map(|l| l.get(&s.name)).unwrap_or_default();
    ServiceView {
        name: s.name.clone(),
        environment: s.environment.clone(),
        image: s.image.to_string(),
        track: s.track.to_string(),
        host: s.host.clone(),
        tag: state.as_ref().and_then(|st| st.tag.clone()),
        digest: state.as_ref().map(|st| st.digest.clone()),
        deployed_at: state.as_ref().map(|st| st.deployed_at),
        deployed_by,
        previous_digest: state.as_ref().and_then(|st| st.previous_digest.clone()),
        compose_changed,
        container,
        running_digest,
        health,
        state: state_now(
            live.state,
            last.as_ref(),
            held_back.as_ref(),
            paused.is_some(),
        ),
        step: live.step.clone().or_else(|| {
            last.as_ref()
                .filter(|d| d.outcome == Outcome::Running)
                .and_then(|d| d.step.clone())
        }),
        trigger: live.trigger.clone(),
        last_rollout: last.map(LastRollout::from),
        promote_from: s.promote_from.clone(),
        poll_interval_s: s.poll_interval.map(|d| d.as_secs()),
        last_poll: live.last_poll,
        next_poll: live.next_poll,
        last_poll_error: live.last_poll_error.clone(),
        watching_until: live.watching_until,
        held_back,
        paused,
    }
}

/// What Docker runs for `s` now: the container's name, its digest, its health, and whether
/// the compose definition changed since it was created.
async fn running(
    ctx: &Context,
    s: &ServiceConfig,
) -> (Option<String>, Option<String>, String, bool) {
    match crate::docker::service::current(ctx.lookup(), s).await {
        Ok(r) => {
            let config = &ctx.config;
            let changed = ctx
                .drift
                .changed(
                &config.compose,
                config.docker.host.as_deref(),
                s,
                &r.container,
            )
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(service = %s.name, error = %e, "Could not compare the compose definition with the running container");
                false
            });
            let status = r.status();
            let health = match (status.running, status.health) {
                (false, _) => "down".to_string(),
                (true, Health::None) => "running".to_string(),
                (true, h) => h.as_str().to_string(),
            };
            (
                Some(r.container.name()),
                r.digest.map(|d| d.to_string()),
                health,
                changed,
            )
        }
        Err(CurrentError::NotRunning { .. }) => (None, None, "down".to_string(), false),
        Err(e) => (None, None, format!("unknown: {e}"), false),
    }
}

/// What the queue is doing, else: a failed last rollout shows as failed until the next
/// one, unless its digest is held back (the image's fault: the old version serves on, and
/// the held-back digest shows beside it); paused automation shows as paused.
fn state_now(live: State, last: Option<&Deploy>, held: Option<&Hold>, paused: bool) -> State {
    let held_failure =
        |d: &Deploy| held.is_some_and(|h| d.to_digest.as_deref() == Some(h.digest.as_str()));
    let quiet = match (live, last) {
        (State::Queued | State::Rolling, _) => return live,
        (_, Some(d)) if d.outcome == Outcome::Running => return State::Rolling,
        (_, Some(d)) if d.outcome.is_failure() && !held_failure(d) => State::Failed,
        (State::Failed, Some(d)) if held_failure(d) => State::Idle,
        (state, _) => state,
    };
    match quiet {
        State::Idle if paused => State::Paused,
        state => state,
    }
}
