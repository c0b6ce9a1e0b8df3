//! Promotion between environments: a service with `promote_from = "web-stage"` only ever
//! runs digests that web-stage has run, healthily. With `promote_after` the daemon promotes
//! once stage has run its digest that long; otherwise only `hoist promote` does. Promotion
//! deploys the exact digest, never a tag that may have moved since.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::docker::engine::Health;
use crate::docker::service;
use crate::image::Digest;
use crate::rollout::Target;
use crate::serve::automation::Act;
use crate::serve::queue::{Job, Queue};
use crate::store::now_ms;

/// How often the daemon looks for automatic promotions.
const TICK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum PromotionError {
    #[error("{0} has no promote_from")]
    NotPromoted(String),
    #[error("{from} has no deployed digest recorded yet; deploy it with hoist first")]
    NothingDeployed { from: String },
    #[error(
        "{from} does not run its recorded digest {digest} healthily right now ({why}); not promoting"
    )]
    NotHealthy {
        from: String,
        digest: String,
        why: Unhealthy,
    },
}

/// Why a promotion's source does not count as running its digest healthily.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unhealthy {
    /// Its container could not be found or inspected.
    #[error(transparent)]
    Current(#[from] service::CurrentError),
    #[error("it runs another digest")]
    OtherDigest,
    #[error("health: {}", .0.as_str())]
    Health(Health),
}

/// What `service` would be promoted to: its source's current digest, provided the source
/// runs it now and is healthy. Also returns how long the source has run it.
pub(crate) async fn candidate(
    ctx: &Context,
    s: &ServiceConfig,
) -> Result<(Digest, Duration), PromotionError> {
    let from_name = s
        .promote_from
        .clone()
        .ok_or_else(|| PromotionError::NotPromoted(s.name.clone()))?;
    let nothing = || PromotionError::NothingDeployed {
        from: from_name.clone(),
    };
    let from = ctx.config.service(&from_name).map_err(|_| nothing())?;
    let state = ctx
        .store
        .service_state(&from_name)
        .ok()
        .flatten()
        .ok_or_else(nothing)?;
    let digest = Digest::parse(&state.digest).map_err(|_| nothing())?;
    let not_healthy = |why: Unhealthy| PromotionError::NotHealthy {
        from: from_name.clone(),
        digest: digest.short().to_string(),
        why,
    };
    let running = service::current(ctx.lookup(), from)
        .await
        .map_err(|e| not_healthy(e.into()))?;
    if running.digest.as_ref() != Some(&digest) {
        return Err(not_healthy(Unhealthy::OtherDigest));
    }
    let health = running.status().health;
    if !matches!(health, Health::Healthy) {
        return Err(not_healthy(Unhealthy::Health(health)));
    }
    let age = Duration::from_millis(u64::try_from(now_ms() - state.deployed_at).unwrap_or(0));
    Ok((digest, age))
}

/// The job that promotes `s`: `how` is "automatic", or who asked ("api", "manual").
pub(crate) fn job(s: &ServiceConfig, digest: Digest, how: &str) -> Job {
    let from = s.promote_from.as_deref().unwrap_or("?");
    let trigger = format!("promote from {from} ({how})");
    let target = Target::Digest(digest);
    if how == "automatic" {
        Job::new(target, trigger)
    } else {
        Job::operator(Act::Promote, target, trigger)
    }
}

/// Promotes services with `promote_after` once their source has run a digest long enough.
pub(crate) async fn run(ctx: Context, queue: Queue, stop: CancellationToken) {
    let automatic: Vec<ServiceConfig> = ctx
        .config
        .services
        .iter()
        .filter(|s| s.promote_from.is_some() && s.promote_after.is_some())
        .cloned()
        .collect();
    if automatic.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return,
        }
        for s in &automatic {
            if queue.is_busy(&s.name) {
                continue;
            }
            let Ok((digest, age)) = candidate(&ctx, s).await else {
                continue;
            };
            if s.promote_after.is_some_and(|after| age < after) {
                continue;
            }
            let job = job(s, digest.clone(), "automatic");
            let admitted = queue
                .automation()
                .admit(&ctx.store, s, &digest, &job.trigger);
            let current = service::current(ctx.lookup(), s)
                .await
                .ok()
                .and_then(|r| r.digest);
            if current.as_ref() == Some(&digest) {
                continue;
            }
            if let Err(skip) = admitted {
                tracing::debug!(service = %s.name, digest = %digest, "Not promoting: {skip}");
                continue;
            }
            tracing::info!(service = %s.name, digest = %digest, "Promoting");
            queue.submit(&s.name, job);
        }
    }
}
