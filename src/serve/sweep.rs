//! The sweep of missed webhook deliveries: GitHub never redelivers by itself, so with
//! `github.token_file` set the daemon lists each repository hook's recent deliveries every
//! `github.sweep_interval` and acts on any it never received (hoist was down, busy or
//! unreachable) or whose work failed, exactly as if it had just arrived. Registry polling
//! stays the backstop for services that poll.
//!
//! The hooks come from `github.hook_ids` and from the `X-GitHub-Hook-ID` of deliveries
//! received ([`Hooks`], remembered in the state database). Each sweep costs one list
//! request a hook (at most [`hooks::MAX_PAGES`]) plus one request per delivery acted on.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;
use crate::context::Context;
use crate::github::hooks::{self, HookApi};
use crate::github::webhook::{self, Event};
use crate::serve::http::{self, App};
use crate::store::Store;
use crate::store::deliveries::{Claim, DeliveryId};
use crate::util::{escaped, lock};

/// The events that can start a rollout: the sweep fetches the payloads of no others.
const ACTIONABLE: &[&str] = &[
    "package",
    "registry_package",
    "push",
    "workflow_run",
    "release",
];

/// The repository webhooks known to deliver to this daemon: `(repository, hook id)`.
pub(crate) struct Hooks {
    store: Store,
    known: Mutex<BTreeSet<(String, u64)>>,
}

impl Hooks {
    /// The configured hooks and those seen before (a store error only costs the latter).
    pub(crate) fn open(config: &Config, store: Store) -> Hooks {
        let mut known: BTreeSet<(String, u64)> = config
            .github
            .hook_ids
            .iter()
            .map(|(repo, id)| (repo.clone(), *id))
            .collect();
        match store.hooks() {
            Ok(seen) => known.extend(seen),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the webhooks seen before; the sweep starts with the configured ones")
            }
        }
        Hooks {
            store,
            known: Mutex::new(known),
        }
    }

    /// Remembers that `hook` delivered an event of the repository `event` names. Only a
    /// verified delivery gets here, so nobody without the secret can add hooks.
    pub(crate) fn learn(&self, event: &Event, hook: &str) {
        let repository = match event {
            Event::Source { repository, .. } | Event::Package { repository, .. } => repository,
            Event::Ping | Event::Ignored(_) => return,
        };
        let Ok(hook) = hook.parse::<u64>() else {
            return;
        };
        let new = lock(&self.known).insert((repository.clone(), hook));
        if new {
            tracing::info!(repository = %escaped(repository), hook, "Learnt a webhook that delivers this repository; the sweep lists its deliveries");
            if let Err(e) = self.store.remember_hook(repository, hook) {
                tracing::warn!(error = %e, "Cannot remember a webhook; it is swept until the daemon stops");
            }
        }
    }

    fn all(&self) -> Vec<(String, u64)> {
        lock(&self.known).iter().cloned().collect()
    }
}

/// What one sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Swept {
    pub hooks: usize,
    pub listed: usize,
    /// Deliveries acted on: never received, or whose work had failed.
    pub acted: usize,
    pub errors: usize,
}

/// Sweeps every `github.sweep_interval` of the config in `ctx` until the daemon stops (or
/// a reload replaces it); nothing without a token or with the interval at zero.
pub(crate) async fn run(app: App, ctx: Context) {
    let github = &ctx.config.github;
    let interval = github.sweep_interval;
    let Some(token) = github.token.clone() else {
        return;
    };
    if interval.is_zero() {
        return;
    }
    let mut sweeper = match HookApi::new(&github.api_url, token) {
        Ok(api) => Sweeper {
            api,
            retried: HashSet::new(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "Cannot set up the GitHub client; missed webhook deliveries will not be swept");
            return;
        }
    };
    // The first sweep soon after the start: deliveries sent while the daemon was down are
    // the ones most likely missed.
    let mut next = tokio::time::Instant::now() + FIRST_SWEEP.min(interval);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = app.stop.cancelled() => return,
        }
        let swept = sweeper.tick(&app, &app.live.now()).await;
        if swept.acted > 0 || swept.errors > 0 {
            tracing::info!(
                hooks = swept.hooks,
                listed = swept.listed,
                acted = swept.acted,
                errors = swept.errors,
                "Swept the webhooks' recent deliveries"
            );
        } else {
            tracing::debug!(
                hooks = swept.hooks,
                listed = swept.listed,
                "Swept the webhooks' recent deliveries"
            );
        }
        next = tokio::time::Instant::now() + interval;
    }
}

/// How soon after the start the first sweep runs.
const FIRST_SWEEP: Duration = Duration::from_secs(5);

/// The sweep's client, and the failed deliveries it has already retried.
pub(crate) struct Sweeper {
    api: HookApi,
    /// (hook, delivery id): a delivery whose work failed is retried by the sweep once,
    /// not every interval (an image that never becomes healthy would fail again each
    /// time); after that only an operator's redelivery retries it.
    retried: HashSet<(u64, String)>,
}

impl Sweeper {
    /// One sweep over every known hook of a repository some service follows.
    pub(crate) async fn tick(&mut self, app: &App, ctx: &Context) -> Swept {
        let api = &self.api;
        let followed: HashSet<&str> = ctx
            .config
            .services
            .iter()
            .filter_map(|s| s.github_repository.as_deref())
            .collect();
        let mut swept = Swept::default();
        // The configured hooks too: a reload may have added some.
        let mut hooks: BTreeSet<(String, u64)> = app.hooks.all().into_iter().collect();
        hooks.extend(
            ctx.config
                .github
                .hook_ids
                .iter()
                .map(|(repo, id)| (repo.clone(), *id)),
        );
        for (repository, hook) in hooks {
            if !followed.contains(repository.as_str()) || app.stop.is_cancelled() {
                continue;
            }
            swept.hooks += 1;
            let listed = match api.deliveries(&repository, hook).await {
                Ok(listed) => listed,
                Err(e) => {
                    swept.errors += 1;
                    tracing::warn!(repository = %escaped(&repository), hook, error = %e, "Cannot list a webhook's deliveries");
                    continue;
                }
            };
            swept.listed += listed.len();
            let hook_id = hook.to_string();
            // A redelivery is listed beside the original with the same guid: act once.
            let mut seen = HashSet::new();
            for delivery in listed {
                if !ACTIONABLE.contains(&delivery.event.as_str())
                || !webhook::is_delivery_id(&delivery.guid)
                || !seen.insert(delivery.guid.clone())
                || app.deliveries.settled(&hook_id, &delivery.guid)
                // Received through something that dropped X-GitHub-Hook-ID.
                || app.deliveries.settled("", &delivery.guid)
                || self.retried.contains(&(hook, delivery.guid.clone()))
                {
                    continue;
                }
                match sweep_one(app, api, &repository, hook, &delivery).await {
                    Ok(Some(claim)) => {
                        swept.acted += 1;
                        if claim == Claim::Retry {
                            self.retried.insert((hook, delivery.guid.clone()));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        swept.errors += 1;
                        tracing::warn!(repository = %escaped(&repository), hook, delivery = %delivery.guid, error = %escaped(&e), "Cannot act on a missed webhook delivery");
                    }
                }
            }
        }
        swept
    }
}

/// Fetches a missed delivery's payload and acts on it as the webhook would have. `None`
/// when it arrived meanwhile, else whether it was new or a retry.
async fn sweep_one(
    app: &App,
    api: &HookApi,
    repository: &str,
    hook: u64,
    delivery: &hooks::Listed,
) -> Result<Option<Claim>, String> {
    let body = api
        .payload(repository, hook, delivery.id)
        .await
        .map_err(|e| e.to_string())?;
    let hook_id = hook.to_string();
    let claim = app
        .deliveries
        .claim(&hook_id, &delivery.guid, &delivery.event);
    if claim == Claim::Duplicate {
        return Ok(None);
    }
    // Claimed first: a payload that cannot be read is reported once, not every sweep.
    let parsed = webhook::parse(&delivery.event, &body).map_err(|e| e.to_string())?;
    let id = DeliveryId {
        hook: hook_id,
        id: delivery.guid.clone(),
    };
    let acted = http::act(app, &delivery.event, &id, &parsed);
    tracing::info!(repository = %escaped(repository), hook, delivery = %delivery.guid, event = %delivery.event,
        earlier = if claim == Claim::Retry { "its work had failed" } else { "never received" },
        outcome = %acted.answer, "Acting on a missed webhook delivery");
    Ok(Some(claim))
}
