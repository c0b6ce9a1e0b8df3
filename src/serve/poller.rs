//! Noticing new images without being told: the registry poller (per service with a
//! `poll_interval`) and watch windows (after a push or workflow_run, CI may still be
//! building: re-check with backoff until the digest changes or `watch_window` ends).
//!
//! Both compare the registry's answer for the service's track with the digest the
//! service's container runs, and queue a rollout only when they differ. A registry that
//! is down or rate limiting is backed off (honouring `Retry-After`); the error is kept for
//! the status page and the daemon goes on.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::docker::service;
use crate::registry::{RegistryError, Resolved};
use crate::report::metrics::Metrics;
use crate::report::status::Status;
use crate::rollout::Target;
use crate::serve::automation::Skip;
use crate::serve::queue::{Job, Queue};
use crate::store::{millis, now_ms};

/// The longest a failing registry is left alone.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Watch windows re-check after 0, 2, 4, 8, 16, 30, 30... seconds.
const WATCH_FIRST: Duration = Duration::from_secs(2);
const WATCH_MAX: Duration = Duration::from_secs(30);

/// What one look at the registry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// The service runs what its track points at.
    UpToDate,
    /// The track points elsewhere; a rollout was queued.
    Queued(Resolved),
    /// The track points elsewhere, but automation leaves the service alone now.
    Skipped(Skip),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Service(#[from] service::CurrentError),
}

impl CheckError {
    /// How long the registry asked us to wait, if it did.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            CheckError::Registry(RegistryError::RateLimited { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, CheckError::Registry(e) if e.is_transient())
    }
}

/// Resolves the service's track and queues a rollout when it differs from what runs and
/// automation may deploy it ([`crate::serve::automation`]).
pub(crate) async fn check(
    ctx: &Context,
    queue: &Queue,
    s: &ServiceConfig,
    job: &Job,
) -> Result<Check, CheckError> {
    let resolved = ctx.registry.resolve_track(&s.image, &s.track).await?;
    // A rollout in progress or waiting will resolve the track itself.
    if queue.is_busy(&s.name) {
        return Ok(Check::UpToDate);
    }
    // Asked even when nothing is to be done: looking ends a hold or a pause the track has
    // moved on from.
    let admitted = queue
        .automation()
        .admit(&ctx.store, s, &resolved.digest, &job.trigger);
    let running = service::current(ctx.lookup(), s).await?;
    if running.digest.as_ref() == Some(&resolved.digest) {
        return Ok(Check::UpToDate);
    }
    if let Err(skip) = admitted {
        return Ok(Check::Skipped(skip));
    }
    tracing::info!(service = %s.name, trigger = %job.trigger, digest = %resolved.digest, tag = resolved.tag.as_deref().unwrap_or("-"),
        "The registry has a new image; queueing a rollout");
    queue.submit(&s.name, job.clone());
    Ok(Check::Queued(resolved))
}

/// Polls one service until `stop`. Each tick is [`check`].
pub(crate) async fn poll(
    ctx: Context,
    queue: Queue,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    name: String,
    stop: CancellationToken,
) {
    let Ok(s) = ctx.config.service(&name).cloned() else {
        return;
    };
    let Some(interval) = s.poll_interval else {
        return;
    };
    let mut failures = 0u32;
    // Why the last poll left the service alone: logged when it changes, not every poll.
    let mut skipped: Option<String> = None;
    // Start at a random point of the interval so that many services do not poll at once.
    let mut delay = jitter(interval).min(interval) / 2;
    loop {
        status.update(&name, |st| st.next_poll = Some(now_ms() + millis(delay)));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        let result = check(&ctx, &queue, &s, &Job::new(Target::Track, "poll")).await;
        if result.is_err() {
            metrics.poll_error(&name);
        }
        status.update(&name, |st| {
            st.last_poll = Some(now_ms());
            st.last_poll_error = result.as_ref().err().map(ToString::to_string);
        });
        let skip = match &result {
            Ok(Check::Skipped(skip)) => Some(skip.to_string()),
            _ => None,
        };
        if let Some(why) = &skip
            && skipped.as_deref().map(first_words) != Some(first_words(why))
        {
            tracing::info!(service = %name, "The registry has a new image; not deploying: {why}");
        }
        skipped = skip;
        delay = match &result {
            Ok(_) => {
                failures = 0;
                jitter(interval)
            }
            Err(e) if e.is_transient() => {
                failures += 1;
                let backoff = interval
                    .saturating_mul(2u32.saturating_pow(failures.min(16)))
                    .min(MAX_BACKOFF);
                let wait = e.retry_after().map_or(backoff, |r| r.max(interval));
                tracing::warn!(service = %name, error = %e, retry_in_s = wait.as_secs(), "Registry poll failed; backing off");
                wait
            }
            Err(e) => {
                tracing::warn!(service = %name, error = %e, "Registry poll failed");
                jitter(interval)
            }
        };
    }
}

/// The gist of a skip's reason: a backoff's countdown does not make it a new one.
fn first_words(why: &str) -> &str {
    why.split(';').next().unwrap_or(why)
}

/// `d` give or take 10%.
fn jitter(d: Duration) -> Duration {
    // A fresh RandomState is randomly seeded: enough randomness for spreading polls.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let spread = millis(d) / 5;
    if spread == 0 {
        return d;
    }
    let offset =
        i64::try_from(random % u64::try_from(spread).unwrap_or(1)).unwrap_or(0) - spread / 2;
    Duration::from_millis(u64::try_from(millis(d) + offset).unwrap_or(0))
}

/// Open watch windows, one per service; a later trigger replaces the earlier window.
/// Each runs on a task of `tasks` under a child of the daemon's stop token, so shutdown
/// cancels them and [`Watches::shutdown`] sees them gone.
#[derive(Clone, Default)]
pub(crate) struct Watches {
    open: Arc<Mutex<HashMap<String, (u64, CancellationToken)>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    tasks: TaskTracker,
}

impl Watches {
    /// Watches the registry for `service` until its track's digest differs from what runs
    /// (then queues a rollout) or `watch_window` has passed.
    pub(crate) fn start(
        &self,
        ctx: &Context,
        queue: &Queue,
        status: &Arc<Status>,
        s: &ServiceConfig,
        job: Job,
        stop: &CancellationToken,
    ) {
        let token = stop.child_token();
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((_, previous)) =
            crate::util::lock(&self.open).insert(s.name.clone(), (generation, token.clone()))
        {
            previous.cancel();
        }
        let (ctx, queue, status, s, open) = (
            ctx.clone(),
            queue.clone(),
            status.clone(),
            s.clone(),
            self.open.clone(),
        );
        self.tasks.spawn(async move {
            // Cancelled (replaced, or the daemon stops): the window just ends; a replacing
            // window owns the status now.
            if token
                .run_until_cancelled(watch(&ctx, &queue, &status, &s, &job))
                .await
                .is_none()
            {
                return;
            }
            let mut open = crate::util::lock(&open);
            if open.get(&s.name).is_some_and(|(g, _)| *g == generation) {
                open.remove(&s.name);
                status.update(&s.name, |st| st.watching_until = None);
            }
        });
    }

    /// Waits for the watch windows to end; they are cancelled by the daemon's stop token.
    pub(crate) async fn shutdown(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// One watch window: [`check`] with backoff until a rollout is queued or the window ends.
async fn watch(ctx: &Context, queue: &Queue, status: &Status, s: &ServiceConfig, job: &Job) {
    let until = tokio::time::Instant::now() + s.watch_window;
    status.update(&s.name, |st| {
        st.watching_until = Some(now_ms() + millis(s.watch_window))
    });
    let mut delay = Duration::ZERO;
    loop {
        tokio::time::sleep(delay).await;
        match check(ctx, queue, s, job).await {
            Ok(Check::Queued(_)) => break,
            // A watch never overrides a hold or a pause; a new image still ends either.
            Ok(Check::UpToDate | Check::Skipped(_)) => {}
            Err(e) => tracing::warn!(service = %s.name, error = %e, "Watch check failed"),
        }
        if tokio::time::Instant::now() + delay >= until {
            tracing::info!(service = %s.name, trigger = %job.trigger, "Watch window ended without a new image");
            break;
        }
        delay = (delay * 2).clamp(WATCH_FIRST, WATCH_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..200 {
            let d = jitter(Duration::from_secs(60));
            assert!((54_000..=66_000).contains(&d.as_millis()), "{d:?}");
        }
        assert_eq!(jitter(Duration::from_millis(3)), Duration::from_millis(3));
    }
}
