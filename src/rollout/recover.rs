//! Recovery after a crash: a rollout that is still `running` in the journal while nobody
//! holds its service's lock was interrupted (SIGKILL, power loss, reboot). Recovery runs
//! before the next rollout of that service and at daemon start, and leaves exactly one
//! version serving:
//!
//! - interrupted before `switch`: the new container is withdrawn (drained first if it was
//!   already healthy, since Traefik may route to it) and the old one keeps serving;
//! - interrupted during `switch`, `drain` or `record`, with the new container running and
//!   healthy: the rollout is completed (the old container drained and removed, the new
//!   digest recorded). It passed the health gate and may already carry traffic, and
//!   completing it honours what was asked for;
//! - otherwise (new container missing or unhealthy): the old container gets its cord back
//!   (and is started again if it had been stopped) and the new one is withdrawn.
//!
//! The journal entry ends as `interrupted`, with what recovery did in its error text.

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::docker::engine::{Health, short};
use crate::image::Digest;
use crate::rollout::lock::{LockError, ServiceLock};
use crate::rollout::withdraw::{created_beside, record_current, retire, split_ids, take_out};
use crate::rollout::{Clocks, Quiet, Scope, Step, StepError};
use crate::store::{Deploy, Outcome, StoreError};
use crate::traefik;

#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("deploy #{id} of {service}: {source}")]
    Step {
        id: i64,
        service: String,
        source: StepError,
    },
}

/// Why [`locked`] could not hand back a recovered service.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockedError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Recover(#[from] RecoverError),
}

/// Takes `service`'s lock as `holder`, then finishes or undoes whatever rollout of it a crash
/// interrupted: what a rollout, `hoist recover` and the daemon's start all do first. The
/// service stays locked while the returned guard lives.
pub(crate) async fn locked(
    ctx: &Context,
    service: &ServiceConfig,
    holder: &str,
) -> Result<ServiceLock, LockedError> {
    let lock = ServiceLock::acquire(&ctx.config.state.dir, &service.name, holder)?;
    self::service(ctx, service).await?;
    Ok(lock)
}

/// Recovers every interrupted rollout of `service`. The caller holds the service's lock.
pub(crate) async fn service(ctx: &Context, service: &ServiceConfig) -> Result<(), RecoverError> {
    for deploy in ctx.store.running_deploys(&service.name)? {
        tracing::warn!(service = %service.name, deploy = deploy.id, step = deploy.step.as_deref().unwrap_or("-"),
            "Found a rollout interrupted by a crash; recovering");
        let note = recover(ctx, service, &deploy)
            .await
            .map_err(|source| RecoverError::Step {
                id: deploy.id,
                service: service.name.clone(),
                source,
            })?;
        tracing::warn!(service = %service.name, deploy = deploy.id, "Recovered: {note}");
        ctx.store
            .finish_deploy(deploy.id, Outcome::Interrupted, Some(&note))?;
    }
    withdraw_leftovers(ctx, service).await?;
    sweep_markers(ctx).await;
    Ok(())
}

/// How many of a service's latest journal entries are searched for leftovers.
const LEFTOVER_LOOKBACK: usize = 20;

/// New containers of rollouts that failed or were rolled back, but whose cleanup failed
/// too (say, the Docker engine went away mid-way), are withdrawn now: otherwise the
/// service would have two containers and every later rollout would refuse to start.
async fn withdraw_leftovers(ctx: &Context, service: &ServiceConfig) -> Result<(), RecoverError> {
    let all = crate::docker::service::containers(ctx.lookup(), service)
        .await
        .map_err(|e| RecoverError::Step {
            id: 0,
            service: service.name.clone(),
            source: e.into(),
        })?;
    let present: Vec<String> = all.all.iter().filter_map(|c| c.id.clone()).collect();
    for deploy in ctx.store.deploys(Some(&service.name), LEFTOVER_LOOKBACK)? {
        // A rollout that failed at `record` left its new containers serving on purpose.
        let failed = deploy.outcome.is_failure() && deploy.step.as_deref() != Some("record");
        if !failed {
            continue;
        }
        for id in split_ids(deploy.new_container.as_deref()) {
            if !present.contains(&id) {
                continue;
            }
            tracing::warn!(service = %service.name, deploy = deploy.id, container = short(&id),
                "Withdrawing a container left over by a failed rollout");
            let clocks = Clocks::default();
            retire(ctx, service, &id, Scope::new(&Quiet, Step::Drain, &clocks))
                .await
                .map_err(|source| RecoverError::Step {
                    id: deploy.id,
                    service: service.name.clone(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// The interrupted rollout's old containers (journaled) and new ones. The old containers
/// are journaled before compose runs, so every other container of the service was created
/// by this rollout; none exist before the start step.
async fn containers_of(
    ctx: &Context,
    service: &ServiceConfig,
    d: &Deploy,
    step: Step,
) -> Result<(Vec<String>, Vec<String>), StepError> {
    let old_ids = split_ids(d.old_container.as_deref());
    let mut new_ids = if step >= Step::Start && !old_ids.is_empty() {
        created_beside(ctx, service, &old_ids).await?
    } else {
        Vec::new()
    };
    for id in split_ids(d.new_container.as_deref()) {
        if !new_ids.contains(&id) && !old_ids.contains(&id) {
            new_ids.push(id);
        }
    }
    Ok((old_ids, new_ids))
}

async fn recover(ctx: &Context, service: &ServiceConfig, d: &Deploy) -> Result<String, StepError> {
    let step = d
        .step
        .as_deref()
        .and_then(Step::parse)
        .unwrap_or(Step::Resolve);
    let (old_ids, new_ids) = containers_of(ctx, service, d, step).await?;
    let mut old = Vec::new();
    for id in &old_ids {
        if let Ok(container) = ctx.engine.inspect(id).await {
            old.push((id.clone(), container));
        }
    }
    let prefix = format!("hoist stopped during {step}");
    let clocks = Clocks::default();
    let scope = Scope::new(&Quiet, step, &clocks);

    let mut healthy_new = Vec::new();
    for id in &new_ids {
        if let Some(s) = ctx.engine.status(id).await?
            && s.running
            && s.health == Health::Healthy
        {
            healthy_new.push(id.clone());
        }
    }
    let digest = d.to_digest.as_deref().and_then(|t| Digest::parse(t).ok());
    if step >= Step::Switch
        && !healthy_new.is_empty()
        && let Some(digest) = digest
    {
        let serving: Vec<_> = old
            .iter()
            .map(|(id, c)| (id.clone(), c.ip_on(&ctx.config.traefik.network)))
            .collect();
        if let Some((_, first)) = old.first() {
            let route = traefik::route(first.labels(), service.port);
            take_out(ctx, service, &serving, &route, scope).await?;
        }
        for other in new_ids.iter().filter(|id| !healthy_new.contains(id)) {
            retire(ctx, service, other, scope).await?;
        }
        record_current(ctx, service, d.to_tag.as_deref(), &digest, d.id)?;
        let shorts: Vec<&str> = healthy_new.iter().map(|id| short(id)).collect();
        return Ok(format!(
            "{prefix}; recovery completed the rollout: {} serve(s) {}",
            shorts.join(", "),
            digest.short()
        ));
    }

    for id in &new_ids {
        retire(ctx, service, id, scope).await?;
    }
    if old.is_empty() {
        return Ok(if old_ids.is_empty() {
            format!("{prefix}; nothing had been changed yet")
        } else {
            format!(
                "{prefix}; the old containers are gone and the new ones were not healthy: \
                 no container serves {}; run `docker compose up -d`",
                service.name
            )
        });
    }
    for (id, container) in &old {
        ctx.cord.restore(id)?;
        if !container.status().running {
            ctx.engine.start(id).await?;
        }
    }
    let shorts: Vec<&str> = old.iter().map(|(id, _)| short(id)).collect();
    Ok(format!(
        "{prefix}; recovery withdrew the new container(s); {} keep(s) serving {}",
        shorts.join(", "),
        d.from_digest
            .as_deref()
            .map_or("the old version", crate::image::short_hex_prefixed)
    ))
}

/// Removes cut markers of containers that no longer exist.
async fn sweep_markers(ctx: &Context) {
    for id in ctx.cord.markers() {
        if matches!(ctx.engine.status(&id).await, Ok(None)) {
            let _ = ctx.cord.restore(&id);
        }
    }
}
