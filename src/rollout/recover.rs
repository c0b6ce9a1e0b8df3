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
use crate::rollout::withdraw::{created_by, record_current, retire, take_out};
use crate::rollout::{Clocks, Quiet, Scope, Step, StepError};
use crate::store::{Deploy, Outcome, StoreError};

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
    for (id, deploy_id) in all.created_by_hoist() {
        let failed = ctx
            .store
            .deploy(deploy_id)?
            .is_some_and(|d| d.outcome.is_failure());
        if !failed {
            continue;
        }
        tracing::warn!(service = %service.name, deploy = deploy_id, container = short(id),
            "Withdrawing a container left over by a failed rollout");
        let clocks = Clocks::default();
        retire(ctx, service, id, Scope::new(&Quiet, Step::Drain, &clocks))
            .await
            .map_err(|source| RecoverError::Step {
                id: deploy_id,
                service: service.name.clone(),
                source,
            })?;
    }
    Ok(())
}

async fn recover(ctx: &Context, service: &ServiceConfig, d: &Deploy) -> Result<String, StepError> {
    let step = d
        .step
        .as_deref()
        .and_then(Step::parse)
        .unwrap_or(Step::Resolve);
    let mut new_ids = created_by(ctx, service, d.id).await?;
    if let Some(id) = &d.new_container
        && !new_ids.contains(id)
    {
        new_ids.push(id.clone());
    }
    let old = match &d.old_container {
        Some(id) => ctx.engine.inspect(id).await.ok().map(|i| (id.clone(), i)),
        None => None,
    };
    let prefix = format!("hoist stopped during {step}");
    let clocks = Clocks::default();
    let scope = Scope::new(&Quiet, step, &clocks);

    let mut healthy_new = None;
    for id in &new_ids {
        if let Some(s) = ctx.engine.status(id).await?
            && s.running
            && s.health == Health::Healthy
        {
            healthy_new = Some(id.clone());
        }
    }
    let digest = d.to_digest.as_deref().and_then(|t| Digest::parse(t).ok());
    if step >= Step::Switch
        && let (Some(new), Some(digest)) = (healthy_new, digest)
    {
        if let Some((old_id, container)) = &old {
            let ip = container.ip_on(&ctx.config.traefik.network);
            take_out(ctx, service, old_id, ip.as_deref(), scope).await?;
        }
        for other in new_ids.iter().filter(|id| **id != new) {
            retire(ctx, service, other, scope).await?;
        }
        record_current(ctx, service, d.to_tag.as_deref(), &digest, d.id)?;
        return Ok(format!(
            "{prefix}; recovery completed the rollout: {} serves {}",
            short(&new),
            digest.short()
        ));
    }

    for id in &new_ids {
        retire(ctx, service, id, scope).await?;
    }
    match &old {
        Some((old_id, container)) => {
            ctx.cord.restore(old_id)?;
            if !container.status().running {
                ctx.engine.start(old_id).await?;
            }
            Ok(format!(
                "{prefix}; recovery withdrew the new container; {} keeps serving {}",
                short(old_id),
                d.from_digest
                    .as_deref()
                    .map_or("the old version", crate::image::short_hex_prefixed)
            ))
        }
        None if d.old_container.is_none() => Ok(format!("{prefix}; nothing had been changed yet")),
        None => Ok(format!(
            "{prefix}; the old container is gone and the new one was not healthy: \
             no container serves {}; run `docker compose up -d`",
            service.name
        )),
    }
}

/// Removes cut markers of containers that no longer exist.
async fn sweep_markers(ctx: &Context) {
    for id in ctx.cord.markers() {
        if matches!(ctx.engine.status(&id).await, Ok(None)) {
            let _ = ctx.cord.restore(&id);
        }
    }
}
