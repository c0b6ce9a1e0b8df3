//! The container operations a rollout and recovery share: taking a container out of
//! Traefik's pool and removing it, withdrawing a new one, recording what now runs.

use std::time::{Duration, Instant};

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::docker::compose;
use crate::docker::drain;
use crate::docker::engine::{EngineError, Health, short};
use crate::envfile;
use crate::fault;
use crate::image::Digest;
use crate::traefik::{Confirmation, Routing};

use super::{Scope, StepError};

/// Writes the env file and the service's current digest. Idempotent: recovery repeats it.
pub(super) fn record_current(
    ctx: &Context,
    service: &ServiceConfig,
    tag: Option<&str>,
    digest: &Digest,
    deploy_id: i64,
) -> Result<String, StepError> {
    let reference = service.image.at(digest);
    let mut detail = format!("{} now runs {reference}", service.name);
    if let Some(target) = &service.env_file {
        envfile::set(&target.path, &target.var, &reference)?;
        detail.push_str(&format!(
            "; {}={} in {}",
            target.var,
            digest.short(),
            target.path.display()
        ));
    }
    fault::point("record:env-written");
    ctx.store.set_current(
        &service.name,
        &service.image.to_string(),
        tag,
        digest.as_str(),
        Some(deploy_id),
    )?;
    Ok(detail)
}

/// Takes a serving container out of Traefik's pool, lets in-flight requests finish, then
/// stops and removes it: cut its cord, wait until Docker reports it unhealthy, wait until
/// Traefik dropped it, wait the service's `drain`, stop with `stop_timeout`, remove.
pub(super) async fn take_out(
    ctx: &Context,
    service: &ServiceConfig,
    id: &str,
    ip: Option<&str>,
    scope: Scope<'_>,
) -> Result<String, StepError> {
    ctx.cord.cut(id)?;
    fault::point("drain:cut");
    let clock = Instant::now();
    // Enough for RETRIES failed probes even if each one times out, plus scheduling slack.
    let patience =
        (drain::INTERVAL + drain::TIMEOUT) * drain::RETRIES as u32 + Duration::from_secs(5);
    let left_pool = scope.wait(async {
        loop {
            match ctx.engine.status(id).await? {
                None => break,
                Some(s) if !s.running || s.health != Health::Healthy => break,
                Some(_) if clock.elapsed() > patience => {
                    return Err(StepError::Refused(format!(
                        "container {} still reports healthy {}s after its cord was cut; \
                         is {} mounted?",
                        short(id),
                        patience.as_secs(),
                        ctx.cord.bind()
                    )));
                }
                Some(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<(), StepError>(())
    });
    left_pool.await?;
    let unhealthy_after = clock.elapsed();
    scope.progress(&format!("{} left the pool; waiting for Traefik", short(id)));
    let how = match ip {
        Some(ip) => {
            let url = Routing::server_url(ip, service.port);
            scope
                .wait(ctx.routing.await_server(&service.name, &url, false))
                .await?
        }
        None => {
            scope
                .wait(tokio::time::sleep(ctx.routing.settle_time()))
                .await;
            Confirmation::Waited
        }
    };
    scope.progress(&format!(
        "letting in-flight requests finish ({}s)",
        service.drain.as_secs()
    ));
    scope.wait(tokio::time::sleep(service.drain)).await;
    scope
        .wait(ctx.engine.stop(id, service.stop_timeout))
        .await?;
    fault::point("drain:stopped");
    scope.engine(ctx.engine.remove(id)).await?;
    ctx.cord.restore(id)?;
    Ok(format!(
        "{} unhealthy after {:.1}s, {} Traefik, drained {}s, stopped and removed",
        short(id),
        unhealthy_after.as_secs_f64(),
        match how {
            Confirmation::Api => "confirmed gone from",
            Confirmation::Waited => "waited out",
        },
        service.drain.as_secs()
    ))
}

/// Withdraws a new container after a failed step. If it may be in Traefik's pool (healthy),
/// it is taken out like an old one; otherwise Traefik never routed it and it is removed.
pub(super) async fn retire(
    ctx: &Context,
    service: &ServiceConfig,
    id: &str,
    scope: Scope<'_>,
) -> Result<(), StepError> {
    let container = match ctx.engine.inspect(id).await {
        Ok(i) => i,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let status = container.status();
    if status.running && status.health == Health::Healthy {
        let ip = container.ip_on(&ctx.config.traefik.network);
        take_out(ctx, service, id, ip.as_deref(), scope).await?;
    } else {
        scope.engine(ctx.engine.remove(id)).await?;
        ctx.cord.restore(id)?;
    }
    tracing::info!(service = %service.name, container = short(id), "Removed the new container; the old one keeps serving");
    Ok(())
}

/// The ids of the containers of `service` created by journal entry `deploy_id`. Journal ids are only
/// unique within one state database, so the compose labels narrow the search to this
/// service (another hoist, e.g. a test, may use the same ids on the same engine).
pub(super) async fn created_by(
    ctx: &Context,
    service: &ServiceConfig,
    deploy_id: i64,
) -> Result<Vec<String>, EngineError> {
    ctx.engine
        .container_ids_with_labels(&[
            (compose::PROJECT, &service.compose_project),
            (compose::SERVICE, &service.compose_service),
            (compose::DEPLOY_LABEL, &deploy_id.to_string()),
        ])
        .await
}
