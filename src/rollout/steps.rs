//! The steps after resolve: pull the image, start the new container beside the old one,
//! wait until it is healthy, switch Traefik to it, drain the old one, record the result.

use std::time::{Duration, Instant};

use crate::docker::compose::{self, Template};
use crate::docker::drain;
use crate::docker::engine::{Health, short};
use crate::docker::service::Running;
use crate::fault;
use crate::traefik::{self, Confirmation, Routing};

use super::withdraw::{created_by, record_current, take_out};
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

    pub(super) async fn start(&self, plan: &Plan) -> Result<(Started, String), StepError> {
        let ctx = self.ctx;
        let s = self.service;
        let reference = s.image.at(&plan.resolved.digest);
        let old_image = match plan.old.container.image_id() {
            Some(id) => ctx.engine.inspect_image(id).await.ok(),
            None => None,
        };
        let new_image = ctx.engine.inspect_image(&reference).await?;
        let naming = compose::naming(
            &plan.old.container.name(),
            &s.compose_project,
            &s.compose_service,
        )
        .ok_or_else(|| StepError::Refused("the running container has a custom name".into()))?;
        let number = plan.containers.next_number();
        let name = compose::numbered_name(naming, &s.compose_project, &s.compose_service, number);
        let labels = traefik::labels(s, &ctx.config.traefik);
        let new = compose::build(Template {
            old: &plan.old.container,
            old_image: old_image.as_ref(),
            image: &reference,
            traefik_labels: &labels,
            healthcheck: drain::healthcheck(s, new_image.healthcheck()),
            name: name.clone(),
            number,
            deploy_id: self.id,
        });
        let scope = self.scope(Step::Start);
        let id = scope.engine(ctx.engine.create(&new.name, new.body)).await?;
        ctx.store.set_new_container(self.id, &id)?;
        fault::point("start:created");
        for (network, endpoint) in new.extra_networks {
            scope
                .engine(ctx.engine.connect_network(&network, &id, endpoint))
                .await?;
        }
        scope.engine(ctx.engine.start(&id)).await?;
        let ip = ctx
            .engine
            .inspect(&id)
            .await?
            .ip_on(&ctx.config.traefik.network);
        Ok((
            Started {
                id: id.clone(),
                ip: ip.clone(),
            },
            format!(
                "started {name} ({}) at {}",
                short(&id),
                ip.as_deref().unwrap_or("no address")
            ),
        ))
    }

    /// Creation may have failed after the container existed: find it by its journal label.
    pub(super) async fn discard_created(&self) -> Result<(), StepError> {
        for id in created_by(self.ctx, self.service, self.id).await? {
            self.ctx.engine.remove(&id).await?;
        }
        Ok(())
    }

    pub(super) async fn health(&self, new: &Started) -> Result<((), String), StepError> {
        let scope = self.scope(Step::Health);
        scope.wait(self.await_healthy(new, scope)).await
    }

    async fn await_healthy(
        &self,
        new: &Started,
        scope: Scope<'_>,
    ) -> Result<((), String), StepError> {
        let ctx = self.ctx;
        let timeout = self.service.health_timeout;
        let clock = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let container = match ctx.engine.inspect(&new.id).await {
                Ok(i) => i,
                Err(e) if e.is_not_found() => {
                    return Err(StepError::Unhealthy("the new container disappeared".into()));
                }
                Err(e) => return Err(e.into()),
            };
            let status = container.status();
            if status.health == Health::Healthy {
                return Ok((
                    (),
                    format!("healthy after {:.1}s", clock.elapsed().as_secs_f64()),
                ));
            }
            if !status.running || status.restarting || container.restart_count() > 0 {
                let logs = ctx.engine.logs_tail(&new.id, 20).await;
                return Err(StepError::Unhealthy(format!(
                    "the new container exited (code {}) before becoming healthy; last output:\n{}",
                    status.exit_code.unwrap_or(-1),
                    indent(&logs)
                )));
            }
            if clock.elapsed() >= timeout {
                return Err(StepError::Unhealthy(format!(
                    "not healthy after {}s (health: {}); last probe: {}",
                    timeout.as_secs(),
                    status.health.as_str(),
                    status.last_probe.as_deref().unwrap_or("none yet")
                )));
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                scope.progress(&format!(
                    "{} {:.0}s/{}s{}",
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

    pub(super) async fn switch(&self, new: &Started) -> Result<((), String), StepError> {
        let Some(ip) = &new.ip else {
            return Err(StepError::Refused(format!(
                "the new container has no address on the Traefik network `{}`",
                self.ctx.config.traefik.network
            )));
        };
        let url = Routing::server_url(ip, self.service.port);
        let how = self
            .scope(Step::Switch)
            .wait(
                self.ctx
                    .routing
                    .await_server(&self.service.name, &url, true),
            )
            .await?;
        Ok((
            (),
            match how {
                Confirmation::Api => format!("Traefik routes to {url}"),
                Confirmation::Waited => format!(
                    "waited {:.1}s for Traefik to route to {url} (no api_url)",
                    self.ctx.routing.settle_time().as_secs_f64()
                ),
            },
        ))
    }

    pub(super) async fn drain(&self, old: &Running) -> Result<((), String), StepError> {
        let detail = take_out(
            self.ctx,
            self.service,
            &old.id,
            old.ip.as_deref(),
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
