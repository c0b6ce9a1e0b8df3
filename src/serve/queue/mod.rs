//! The deploy queue of `hoist serve`: at most one rollout per service at a time; triggers
//! arriving meanwhile collapse into one pending check (the latest wins); rollouts of
//! different services run in parallel up to `server.max_parallel`.
//!
//! No accepted trigger is lost: it is written to the state database when it is submitted
//! and removed only once a rollout for its service has run, so one that was waiting or
//! running when the daemon stopped runs after the next start. A rollout that cannot start
//! (the state cannot be written, Docker does not answer) is tried again with backoff until
//! it starts or the daemon stops; a trigger the database refused is written again on
//! each try.

mod job;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::github::{self, Deployments};
use crate::image::Digest;
use crate::report::metrics::Metrics;
use crate::report::notify::Notifier;
use crate::report::status::{State, Status};
use crate::rollout::lock::LockError;
use crate::rollout::{self, Request, RolloutError};
use crate::rollout::{Observer, Step};
use crate::serve::live::Live;
use crate::store::PendingRow;
use crate::store::deliveries::Deliveries;

pub(crate) use job::{Expected, Job, Submitted};

/// Who holds a service's lock while the daemon rolls it out.
pub(crate) const HOLDER: &str = "hoist serve";
/// How often to try again while another process (a CLI deploy) holds a service's lock.
const LOCK_RETRY: Duration = Duration::from_secs(2);
/// How long a waiting trigger gathers later ones before its check runs.
const DEBOUNCE: Duration = Duration::from_secs(2);
/// The first wait before trying again a rollout that could not start; it doubles up to
/// [`START_RETRY_MAX`].
const START_RETRY: Duration = Duration::from_secs(1);
const START_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    live: Live,
    /// The state, fixed for the process's life (a reload keeps `state.dir`).
    store: crate::store::Store,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    /// Rebuilt from the config on a reload (their tokens and URLs may have changed).
    reporters: Mutex<Reporters>,
    /// Told what the work of each webhook delivery came to.
    deliveries: Arc<Deliveries>,
    slots: Mutex<HashMap<String, Slot>>,
    permits: Semaphore,
    tracker: TaskTracker,
    /// GitHub reports and notifications, waited for after the rollouts at shutdown.
    reports: TaskTracker,
    /// Cancelled when the shutdown grace ran out during a rollout.
    abandoned: CancellationToken,
    stop: CancellationToken,
}

/// Who hears about a rollout: GitHub Deployments and the chat.
#[derive(Clone)]
struct Reporters {
    deployments: Deployments,
    notifier: Notifier,
}

impl Reporters {
    fn new(ctx: &Context, reports: &TaskTracker, abandoned: &CancellationToken) -> Reporters {
        Reporters {
            deployments: Deployments::new(
                &ctx.config,
                ctx.store.clone(),
                reports.clone(),
                abandoned.clone(),
            ),
            notifier: Notifier::new(ctx.config.clone(), reports.clone()),
        }
    }
}

#[derive(Default)]
struct Slot {
    busy: bool,
    pending: Option<Job>,
    /// The state database refused the latest trigger's row: write it again before the
    /// next try, so that a stop meanwhile does not lose it.
    unsaved: Option<PendingRow>,
}

impl Queue {
    pub(crate) fn new(
        live: Live,
        status: Arc<Status>,
        metrics: Arc<Metrics>,
        deliveries: Arc<Deliveries>,
        stop: CancellationToken,
    ) -> Queue {
        let ctx = live.now();
        // Fixed for the process's life: a reload keeps `server.max_parallel`.
        let permits = Semaphore::new(ctx.config.server.max_parallel);
        let reports = TaskTracker::new();
        let abandoned = CancellationToken::new();
        Queue {
            inner: Arc::new(Inner {
                reporters: Mutex::new(Reporters::new(&ctx, &reports, &abandoned)),
                reports,
                abandoned,
                store: ctx.store.clone(),
                deliveries,
                live,
                status,
                metrics,
                slots: Mutex::new(HashMap::new()),
                permits,
                tracker: TaskTracker::new(),
                stop,
            }),
        }
    }

    pub(crate) fn submit(&self, service: &str, job: Job) -> Submitted {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return Submitted::Closed;
        }
        let row = job.to_row(service);
        let mut slots = crate::util::lock(&inner.slots);
        let slot = slots.entry(service.to_string()).or_default();
        if slot.busy {
            let trigger = job.trigger.clone();
            // A burst of deliveries asks for the same check again and again: persist only
            // a change of what is to be checked, not every new trigger name.
            let same = slot
                .pending
                .as_ref()
                .is_some_and(|p| p.target == job.target && p.expect == job.expect);
            let replaced = slot.pending.replace(job).is_some();
            drop(slots);
            if !same {
                self.persist(&row);
            }
            inner.status.update(service, |s| {
                if s.state != State::Rolling {
                    s.state = State::Queued;
                    s.trigger = Some(trigger);
                }
            });
            return if replaced {
                Submitted::Replaced
            } else {
                Submitted::Queued
            };
        }
        slot.busy = true;
        drop(slots);
        self.persist(&row);
        inner.status.update(service, |s| {
            s.state = State::Queued;
            s.trigger = Some(job.trigger.clone());
        });
        let this = self.clone();
        let service = service.to_string();
        inner
            .tracker
            .spawn(async move { this.work(service, job).await });
        Submitted::Started
    }

    /// After a reload: GitHub and chat reports of rollouts starting from now use the
    /// config in `ctx`; running ones keep what they began with.
    pub(crate) fn reconfigure(&self, ctx: &Context) {
        let inner = &self.inner;
        *crate::util::lock(&inner.reporters) =
            Reporters::new(ctx, &inner.reports, &inner.abandoned);
    }

    fn persist(&self, row: &PendingRow) {
        let saved = self.inner.store.save_pending(row);
        if let Err(e) = &saved {
            tracing::warn!(service = %row.service, error = %e, "Cannot persist a pending trigger; it is kept in memory and written again before each try");
        }
        let mut slots = crate::util::lock(&self.inner.slots);
        let slot = slots.entry(row.service.clone()).or_default();
        slot.unsaved = saved.is_err().then(|| row.clone());
    }

    /// Writes again a trigger the database refused, now that a try is due.
    fn persist_unsaved(&self, service: &str) {
        let unsaved = crate::util::lock(&self.inner.slots)
            .get_mut(service)
            .and_then(|s| s.unsaved.take());
        if let Some(row) = unsaved {
            self.persist(&row);
        }
    }

    /// Re-submits the triggers that were waiting when the daemon last stopped.
    pub(crate) fn restore(&self) {
        let ctx = self.inner.live.now();
        match ctx.store.pending() {
            Ok(rows) => {
                for row in rows {
                    match Job::from_row(&row) {
                        Some(job) if ctx.config.service(&row.service).is_ok() => {
                            tracing::info!(service = %row.service, trigger = %row.trigger, "Resuming a trigger that was waiting at the last stop");
                            self.submit(&row.service, job);
                        }
                        _ => {
                            let _ = ctx.store.clear_pending(&row.service);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot read pending triggers"),
        }
    }

    /// Stops taking jobs and waits up to `grace` for running rollouts. Returns false when
    /// the grace ran out (the rollouts are then left to recovery at the next start, and
    /// their GitHub reports stop waiting for them).
    pub(crate) async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        let finished = tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok();
        if !finished {
            self.inner.abandoned.cancel();
        }
        finished
    }

    /// After [`Queue::shutdown`]: waits up to `bound` for the GitHub reports and
    /// notifications of the rollouts. Returns false when the bound ran out.
    pub(crate) async fn finish_reports(&self, bound: Duration) -> bool {
        self.inner.reports.close();
        tokio::time::timeout(bound, self.inner.reports.wait())
            .await
            .is_ok()
    }

    /// Whether a service has a rollout running or waiting.
    pub(crate) fn is_busy(&self, service: &str) -> bool {
        let slots = crate::util::lock(&self.inner.slots);
        slots.get(service).is_some_and(|s| s.busy)
    }

    async fn work(self, service: String, mut job: Job) {
        loop {
            let Ok(permit) = self.inner.permits.acquire().await else {
                return;
            };
            // Each rollout runs with the config as it is when it starts.
            let ctx = self.inner.live.now();
            let ran = self.run(&ctx, &service, &job).await;
            drop(permit);
            if !ran {
                // Shutting down before the rollout could start: its row stays for the
                // next start.
                crate::util::lock(&self.inner.slots)
                    .entry(service.clone())
                    .or_default()
                    .busy = false;
                return;
            }
            // Let triggers that keep arriving (a storm of deliveries) gather for a moment:
            // then a flood costs one check per DEBOUNCE, not one per rollout's length.
            if self.has_pending(&service) {
                tokio::select! {
                    () = tokio::time::sleep(DEBOUNCE) => {}
                    () = self.inner.stop.cancelled() => {}
                }
            }
            let mut slots = crate::util::lock(&self.inner.slots);
            let slot = slots.entry(service.clone()).or_default();
            match slot.pending.take() {
                Some(next) if !self.inner.stop.is_cancelled() => job = next,
                Some(next) => {
                    // Its row stays for the next start.
                    slot.pending = Some(next);
                    slot.busy = false;
                    return;
                }
                None => {
                    // Under the slot's lock, so that a trigger submitted meanwhile (whose
                    // row is written after it takes the slot) is not cleared.
                    slot.unsaved = None;
                    if let Err(e) = self.inner.store.clear_pending(&service) {
                        tracing::warn!(service, error = %e, "Cannot clear a finished trigger; it runs once more (a check) after the next start");
                    }
                    slot.busy = false;
                    return;
                }
            }
        }
    }

    fn has_pending(&self, service: &str) -> bool {
        let slots = crate::util::lock(&self.inner.slots);
        slots.get(service).is_some_and(|s| s.pending.is_some())
    }

    /// One job: verify a package event's claim, roll out, announce the result. `false`
    /// when the daemon stopped before the rollout could start (the job is still owed).
    async fn run(&self, ctx: &Context, service: &str, job: &Job) -> bool {
        let Ok(config) = ctx.config.service(service) else {
            tracing::info!(service, trigger = %job.trigger, "Not deploying: the service is no longer in the config");
            self.delivery_outcome(
                job,
                true,
                "not deployed: the service is no longer in the config",
            );
            self.inner.status.update(service, |s| s.state = State::Idle);
            return true;
        };
        if let Some(expect) = &job.expect {
            match verify_claim(ctx, config, expect).await {
                Ok(()) => {}
                Err(Claimed::Wrong(why)) => {
                    tracing::warn!(service, trigger = %job.trigger, "Not deploying: {why}");
                    self.delivery_outcome(job, true, &format!("not deployed: {why}"));
                    self.inner.status.update(service, |s| s.state = State::Idle);
                    return true;
                }
                Err(Claimed::Unknown(why)) => {
                    // The registry is the backstop: its poller (or a redelivery, or the
                    // sweep) catches up; this delivery counts as failed meanwhile.
                    tracing::warn!(service, trigger = %job.trigger, "Not deploying: {why}");
                    self.delivery_outcome(job, false, &format!("not deployed: {why}"));
                    self.inner.status.update(service, |s| s.state = State::Idle);
                    return true;
                }
            }
        }
        let reporters = crate::util::lock(&self.inner.reporters).clone();
        let clock = std::time::Instant::now();
        let Some((outcome, github)) = self.roll(ctx, &reporters, config, job).await else {
            self.inner
                .status
                .update(service, |s| s.state = State::Queued);
            return false;
        };
        self.announce(&reporters, config, job, &outcome, github, clock.elapsed());
        true
    }

    /// Runs the rollout, waiting while another process (a CLI deploy) holds the lock, and
    /// trying again with backoff while it cannot start (state or Docker errors). Returns
    /// its report and its GitHub report if one began; `None` when the daemon stopped
    /// before it could start.
    async fn roll(
        &self,
        ctx: &Context,
        reporters: &Reporters,
        config: &ServiceConfig,
        job: &Job,
    ) -> Option<(Result<rollout::Report, String>, Option<github::Report>)> {
        let service = config.name.as_str();
        let request = Request {
            target: job.target.clone(),
            trigger: job.trigger.clone(),
            holder: HOLDER.to_string(),
        };
        let observer = Follow {
            inner: &self.inner,
            ctx,
            deployments: &reporters.deployments,
            service: config,
            git_ref: job.git_ref.as_deref(),
            github: Mutex::new(None),
        };
        self.inner.metrics.rollout_started(service);
        self.inner.status.update(service, |s| {
            s.state = State::Rolling;
            s.step = None;
            s.trigger = Some(job.trigger.clone());
        });
        let mut retry = START_RETRY;
        let mut failing: Option<String> = None;
        let outcome = loop {
            self.persist_unsaved(service);
            let wait = match rollout::run(ctx, config, &request, &observer).await {
                Err(RolloutError::Lock(LockError::Held { holder, .. })) => {
                    tracing::info!(service, %holder, "Waiting for another hoist process to finish");
                    LOCK_RETRY
                }
                Ok(report) => break Ok(report),
                Err(e) => {
                    let error = e.to_string();
                    if failing.as_deref() != Some(error.as_str()) {
                        tracing::warn!(service, trigger = %job.trigger, %error, retry_s = retry.as_secs(),
                            "The rollout could not start; the trigger is kept and tried again");
                    }
                    self.inner.status.update(service, |s| {
                        s.state = State::Queued;
                        s.step = None;
                    });
                    failing = Some(error);
                    let wait = retry;
                    retry = (retry * 2).min(START_RETRY_MAX);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.stop.cancelled() => {
                    tracing::info!(service, trigger = %job.trigger, "Stopping before the rollout could start; the trigger runs after the next start");
                    return None;
                }
            }
        };
        if failing.is_some() {
            tracing::info!(service, trigger = %job.trigger, "The rollout started after earlier tries failed");
        }
        let github = crate::util::lock(&observer.github).take();
        Some((outcome, github))
    }

    /// Tells GitHub, the chat, the metrics, the delivery log and the live status how the
    /// rollout ended.
    fn announce(
        &self,
        reporters: &Reporters,
        config: &ServiceConfig,
        job: &Job,
        outcome: &Result<rollout::Report, String>,
        github: Option<github::Report>,
        elapsed: Duration,
    ) {
        let service = config.name.as_str();
        let metrics = &self.inner.metrics;
        match outcome {
            Ok(report) => {
                if let Some(github) = github {
                    github.finish(report.outcome, report.error.clone());
                }
                reporters.notifier.rollout(config, report);
                metrics.rollout_finished(
                    service,
                    &config.environment,
                    report.outcome.as_str(),
                    elapsed,
                );
            }
            Err(_) => {
                metrics.rollout_finished(service, &config.environment, "not_started", elapsed);
            }
        }
        let (state, text) = match outcome {
            Ok(r) if r.succeeded() => (
                State::Idle,
                format!("deploy #{} {}", r.deploy_id, r.outcome.as_str()),
            ),
            Ok(r) => (
                State::Failed,
                format!("deploy #{} {}", r.deploy_id, r.outcome.as_str()),
            ),
            Err(e) => {
                tracing::error!(service, error = %e, "Rollout could not start");
                (State::Failed, format!("not started: {e}"))
            }
        };
        self.delivery_outcome(job, state == State::Idle, &text);
        self.inner.status.update(service, |s| {
            s.state = state;
            s.step = None;
        });
    }

    /// Tells the delivery log what the job's delivery came to; `ok` false lets a
    /// redelivery (or the sweep) process it again.
    fn delivery_outcome(&self, job: &Job, ok: bool, outcome: &str) {
        if let Some(delivery) = &job.delivery {
            self.inner.deliveries.settle(delivery, ok, outcome);
        }
    }
}

/// Why a package event's claim was not taken.
enum Claimed {
    /// The registry says otherwise.
    Wrong(String),
    /// The registry could not be asked.
    Unknown(String),
}

/// A package event names a tag and a digest; deploy only if the registry agrees.
async fn verify_claim(
    ctx: &Context,
    config: &ServiceConfig,
    expect: &Expected,
) -> Result<(), Claimed> {
    match ctx.registry.resolve(&config.image, &expect.tag).await {
        Ok(d) if d == expect.digest => Ok(()),
        Ok(d) => Err(Claimed::Wrong(format!(
            "the delivery says {}:{} is {}, the registry says {}",
            config.image,
            expect.tag,
            expect.digest.short(),
            d.short()
        ))),
        Err(e) => Err(Claimed::Unknown(format!(
            "cannot check the delivery's digest: {e}"
        ))),
    }
}

/// Follows a daemon rollout into the live status, the metrics and GitHub.
struct Follow<'a> {
    inner: &'a Inner,
    ctx: &'a Context,
    deployments: &'a Deployments,
    service: &'a ServiceConfig,
    git_ref: Option<&'a str>,
    github: Mutex<Option<github::Report>>,
}

impl Observer for Follow<'_> {
    fn planned(&self, tag: Option<&str>, digest: &Digest) {
        let git_ref = self.git_ref.or(tag);
        if let Some(rollout) =
            Deployments::describe(&self.ctx.config, self.service, git_ref, digest.as_str())
        {
            let report = self.deployments.begin(rollout);
            *crate::util::lock(&self.github) = Some(report);
        }
    }

    fn started(&self, step: Step) {
        self.inner.status.update(&self.service.name, |s| {
            s.state = State::Rolling;
            s.step = Some(step.as_str().to_string());
        });
    }

    fn finished(&self, step: Step, elapsed: Duration, _result: Result<&str, &str>) {
        self.inner
            .metrics
            .step(&self.service.name, step.as_str(), elapsed);
    }
}
