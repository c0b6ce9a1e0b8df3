//! The steps after resolve: pull the image, start the new containers beside the old ones
//! (with the project's compose), wait until they are healthy, switch Traefik to them, drain
//! the old ones, record the result.

use std::time::{Duration, Instant};

use crate::docker::engine::{Health, short};
use crate::fault;
use crate::traefik::{Confirmation, Route, Routing};

use super::definition::labels_match;
use super::withdraw::{created_beside, join_ids, record_current, take_out};
use super::{Plan, Rollout, Scope, Started, Step, StepError};

impl Rollout<'_> {
    pub(super) async fn pull(&self, plan: &Plan) -> Result<((), String), StepError> {
        let ctx = self.ctx;
        let repo = &self.service.image;
        let reference = repo.at(&plan.resolved.digest);
        if let Ok(image) = ctx.engine.inspect_image(&reference).await
            && image.has_digest(repo, &plan.resolved.digest)
        {
            return Ok(((), format!("{reference} already present")));
        }
        let credentials = ctx.registry.credentials_for(repo);
        let mut last = Instant::now();
        ctx.engine
            .pull(&reference, credentials.as_ref(), repo.registry(), |line| {
                if last.elapsed() >= Duration::from_millis(200) {
                    last = Instant::now();
                    self.scope(Step::Pull).progress(line);
                }
            })
            .await?;
        let image = ctx.engine.inspect_image(&reference).await?;
        if !image.has_digest(repo, &plan.resolved.digest) {
            return Err(StepError::Refused(format!(
                "the engine pulled {reference} but reports digests {:?}",
                image.repo_digests()
            )));
        }
        Ok(((), format!("pulled {reference}")))
    }

    /// The project's own compose creates as many new containers as run now, from the
    /// compose definition with the new image (in `env_var`, in compose's environment
    /// only), beside the old ones, which it leaves untouched.
    pub(super) async fn start(&self, plan: &Plan) -> Result<(Vec<Started>, String), StepError> {
        let ctx = self.ctx;
        let s = self.service;
        let d = &plan.definition;
        let reference = s.image.at(&plan.resolved.digest);
        let scope = self.scope(Step::Start);
        let scale = plan.old.len() * 2;
        let up = scope
            .engine(d.cli.up_scaled(
                &d.project,
                &s.compose_service,
                scale,
                &[(&d.var, &reference)],
            ))
            .await;
        let old_ids = plan.old_ids();
        let created = created_beside(ctx, s, &old_ids).await?;
        ctx.store.set_new_container(self.id, &join_ids(&created))?;
        fault::point("start:created");
        if let Err(e) = up {
            tracing::warn!(service = %s.name, deploy = self.id, error = %e, "Compose could not create the new containers");
            return Err(e.into());
        }
        let mut started = Vec::new();
        for id in &created {
            let container = ctx.engine.inspect(id).await?;
            if container.configured_image() != reference {
                return Err(StepError::Refused(format!(
                    "compose created {} with image `{}`, not {reference}: the service's image \
                     in the compose file must be `${{{}}}`",
                    container.name(),
                    container.configured_image(),
                    d.var
                )));
            }
            // docker-compose v1 cannot show its definition before creating: compare now,
            // before the new container can be healthy (and so seen by Traefik).
            let labels = container
                .labels()
                .filter(|(k, _)| k.starts_with("traefik."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels_match(&plan.old[0], &labels)?;
            started.push(Started {
                id: id.clone(),
                name: container.name(),
                ip: container.ip_on(&ctx.config.traefik.network),
            });
        }
        if started.len() != plan.old.len() {
            return Err(StepError::Refused(format!(
                "compose created {} new container(s) for {} running; expected as many",
                started.len(),
                plan.old.len()
            )));
        }
        let names: Vec<String> = started
            .iter()
            .map(|n| {
                format!(
                    "{} ({}) at {}",
                    n.name,
                    short(&n.id),
                    n.ip.as_deref().unwrap_or("no address")
                )
            })
            .collect();
        Ok((
            started,
            format!("{} created {}", d.cli.display(), names.join(", ")),
        ))
    }

    /// Compose may have created containers before it failed: every container of the
    /// service that is not an old one goes.
    pub(super) async fn discard_created(&self, plan: &Plan) -> Result<(), StepError> {
        for id in created_beside(self.ctx, self.service, &plan.old_ids()).await? {
            self.ctx.engine.remove(&id, true).await?;
            self.ctx.cord.restore(&id)?;
        }
        Ok(())
    }

    pub(super) async fn health(&self, new: &[Started]) -> Result<((), String), StepError> {
        let scope = self.scope(Step::Health);
        let clock = Instant::now();
        for n in new {
            scope.wait(self.await_healthy(n, clock, scope)).await?;
        }
        Ok((
            (),
            format!(
                "{} healthy after {:.1}s",
                if new.len() == 1 {
                    "new container".to_string()
                } else {
                    format!("all {} new containers", new.len())
                },
                clock.elapsed().as_secs_f64()
            ),
        ))
    }

    async fn await_healthy(
        &self,
        new: &Started,
        clock: Instant,
        scope: Scope<'_>,
    ) -> Result<(), StepError> {
        let ctx = self.ctx;
        let timeout = self.service.health_timeout;
        let mut last_report = Instant::now();
        loop {
            let container = match ctx.engine.inspect(&new.id).await {
                Ok(i) => i,
                Err(e) if e.is_not_found() => {
                    return Err(StepError::Unhealthy(format!(
                        "the new container {} disappeared",
                        new.name
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let status = container.status();
            if status.health == Health::Healthy {
                return Ok(());
            }
            if !status.running || status.restarting || container.restart_count() > 0 {
                let logs = ctx.engine.logs_tail(&new.id, 20).await;
                return Err(StepError::Unhealthy(format!(
                    "the new container {} exited (code {}) before becoming healthy; last output:\n{}",
                    new.name,
                    status.exit_code.unwrap_or(-1),
                    indent(&logs)
                )));
            }
            if clock.elapsed() >= timeout {
                return Err(StepError::Unhealthy(format!(
                    "{} not healthy after {}s (health: {}); last probe: {}",
                    new.name,
                    timeout.as_secs(),
                    status.health.as_str(),
                    status.last_probe.as_deref().unwrap_or("none yet")
                )));
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                scope.progress(&format!(
                    "{} {} {:.0}s/{}s{}",
                    new.name,
                    status.health.as_str(),
                    clock.elapsed().as_secs_f64(),
                    timeout.as_secs(),
                    status
                        .last_probe
                        .map(|p| format!(" (last probe: {p})"))
                        .unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(super) async fn switch(
        &self,
        new: &[Started],
        route: &Route,
    ) -> Result<((), String), StepError> {
        let mut urls = Vec::new();
        let mut how = Confirmation::Api;
        for n in new {
            let Some(ip) = &n.ip else {
                return Err(StepError::Refused(format!(
                    "the new container {} has no address on the Traefik network `{}`",
                    n.name, self.ctx.config.traefik.network
                )));
            };
            let url = Routing::server_url(ip, route.port);
            let seen = self
                .scope(Step::Switch)
                .wait(
                    self.ctx
                        .routing
                        .await_server(route.service.as_deref(), &url, true),
                )
                .await?;
            if seen == Confirmation::Waited {
                how = Confirmation::Waited;
            }
            urls.push(url);
        }
        let urls = urls.join(", ");
        Ok((
            (),
            match how {
                Confirmation::Api => format!("Traefik routes to {urls}"),
                Confirmation::Waited => format!(
                    "waited for Traefik to route to {urls} ({:.1}s each, no api_url)",
                    self.ctx.routing.settle_time().as_secs_f64()
                ),
            },
        ))
    }

    pub(super) async fn drain(&self, plan: &Plan) -> Result<((), String), StepError> {
        let serving: Vec<_> = plan
            .old
            .iter()
            .map(|o| (o.id.clone(), o.ip.clone()))
            .collect();
        let detail = take_out(
            self.ctx,
            self.service,
            &serving,
            &plan.route,
            self.scope(Step::Drain),
        )
        .await?;
        Ok(((), detail))
    }

    pub(super) async fn record(&self, plan: &Plan) -> Result<((), String), StepError> {
        let detail = record_current(
            self.ctx,
            self.service,
            plan.resolved.tag.as_deref(),
            &plan.resolved.digest,
            self.id,
        )?;
        Ok(((), detail))
    }
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (no output)".into();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
