//! The container operations a rollout and recovery share: taking a container out of
//! Traefik's pool and removing it, withdrawing a new one, recording what now runs.

use std::time::{Duration, Instant};

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::docker::drain;
use crate::docker::engine::{EngineError, Health, short};
use crate::envfile;
use crate::fault;
use crate::image::Digest;
use crate::traefik::{self, Confirmation, Route, Routing};

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

/// A serving container to take out: its id and its address on the Traefik network.
pub(super) type Serving = (String, Option<String>);

/// Takes serving containers out of Traefik's pool, lets in-flight requests finish, then
/// stops and removes them: cut their cords, wait until Docker reports each unhealthy, wait
/// until Traefik dropped each, wait the service's `drain`, stop them (with their own stop
/// signal and grace period, as compose does, unless `stop_timeout` says otherwise),
/// remove. All of them at once: a service at scale N loses N old containers in the time
/// of one.
pub(super) async fn take_out(
    ctx: &Context,
    service: &ServiceConfig,
    containers: &[Serving],
    route: &Route,
    scope: Scope<'_>,
) -> Result<String, StepError> {
    for (id, _) in containers {
        ctx.cord.cut(id)?;
    }
    fault::point("drain:cut");
    let clock = Instant::now();
    // One cord interval for the next probe, which may be running the app's check when the
    // cord is cut (then the one after fails), each up to the probe's timeout, plus
    // scheduling slack. Containers made with an older fragment (3 retries) get longer.
    let patience = (service.cord_interval + drain::TIMEOUT) * 3 + Duration::from_secs(5);
    for (id, _) in containers {
        scope.wait(left_pool(ctx, id, clock, patience)).await?;
    }
    let unhealthy_after = clock.elapsed();
    let ids: Vec<&str> = containers.iter().map(|(id, _)| short(id)).collect();
    let ids = ids.join(", ");
    scope.progress(&format!("{ids} left the pool; waiting for Traefik"));
    let mut how = Confirmation::Api;
    for (_, ip) in containers {
        let seen = match ip {
            Some(ip) => {
                let url = Routing::server_url(ip, route.port);
                scope
                    .wait(
                        ctx.routing
                            .await_server(route.service.as_deref(), &url, false),
                    )
                    .await?
            }
            None => {
                scope
                    .wait(tokio::time::sleep(ctx.routing.settle_time()))
                    .await;
                Confirmation::Waited
            }
        };
        if seen == Confirmation::Waited {
            how = Confirmation::Waited;
        }
    }
    scope.progress(&format!(
        "letting in-flight requests finish ({}s)",
        service.drain.as_secs()
    ));
    scope.wait(tokio::time::sleep(service.drain)).await;
    let stops = containers
        .iter()
        .map(|(id, _)| ctx.engine.stop(id, service.stop_timeout));
    for stopped in scope.wait(futures_util::future::join_all(stops)).await {
        stopped?;
    }
    fault::point("drain:stopped");
    for (id, _) in containers {
        // With fresh_anonymous_volumes the new containers got empty ones: the old ones'
        // would be orphans.
        let volumes = service.fresh_anonymous_volumes;
        scope.engine(ctx.engine.remove(id, volumes)).await?;
        ctx.cord.restore(id)?;
    }
    Ok(format!(
        "{ids} unhealthy after {:.1}s, {} Traefik, drained {}s, stopped{} and removed",
        unhealthy_after.as_secs_f64(),
        match how {
            Confirmation::Api => "confirmed gone from",
            Confirmation::Waited => "waited out",
        },
        service.drain.as_secs(),
        match service.stop_timeout {
            Some(t) => format!(" (stop_timeout {}s)", t.as_secs()),
            None => String::new(),
        }
    ))
}

/// Waits until a container whose cord was cut is no longer healthy (or gone).
async fn left_pool(
    ctx: &Context,
    id: &str,
    clock: Instant,
    patience: Duration,
) -> Result<(), StepError> {
    loop {
        match ctx.engine.status(id).await? {
            None => return Ok(()),
            Some(s) if !s.running || s.health != Health::Healthy => return Ok(()),
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
        let route = traefik::route(container.labels(), service.port);
        take_out(ctx, service, &[(id.to_string(), ip)], &route, scope).await?;
    } else {
        // A new container's anonymous volumes were created empty for it.
        scope.engine(ctx.engine.remove(id, true)).await?;
        ctx.cord.restore(id)?;
    }
    tracing::info!(service = %service.name, container = short(id), "Removed the new container; the old one keeps serving");
    Ok(())
}

/// The containers of `service` (any state) that are not among `old`: those compose created
/// for a rollout whose old containers were `old`. The service's lock keeps other rollouts
/// from creating any meanwhile.
pub(super) async fn created_beside(
    ctx: &Context,
    service: &ServiceConfig,
    old: &[String],
) -> Result<Vec<String>, EngineError> {
    let all = crate::docker::service::containers(ctx.lookup(), service).await?;
    Ok(all
        .all
        .into_iter()
        .filter_map(|c| c.id)
        .filter(|id| !old.contains(id))
        .collect())
}

/// The journal keeps a rollout's old and new containers as one text each, ids separated
/// by spaces (a service at scale N has N of each).
pub(super) fn join_ids<S: AsRef<str>>(ids: &[S]) -> String {
    ids.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
}

pub(super) fn split_ids(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
