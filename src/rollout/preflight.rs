//! The resolve step: what to deploy, which container serves now, and the checks that
//! refuse a rollout that would cause an outage.

use crate::config::Track;
use crate::docker::compose;
use crate::docker::compose::ServiceContainers;
use crate::docker::drain;
use crate::docker::service::{self, Running};
use crate::image::{self, Digest};
use crate::registry::Resolved;
use crate::store::Resolution;
use crate::traefik;

use super::withdraw::join_ids;
use super::{Plan, Rollout, StepError, Target};

impl Rollout<'_> {
    pub(super) async fn resolve(&self, target: &Target) -> Result<(Plan, String), StepError> {
        let ctx = self.ctx;
        let s = self.service;
        let resolved = self.resolve_target(target).await?;
        let containers = service::containers(ctx.lookup(), s).await?;
        let old = service::all_running(ctx.lookup(), s, &containers)
            .await
            .map_err(|e| match e {
                service::CurrentError::Engine(e) => StepError::Engine(e),
                refusal => StepError::Refused(refusal.to_string()),
            })?;
        self.check_stopped(&containers, &old)?;
        for o in &old {
            self.check_old(o)?;
        }
        let definition = self.definition(&old, &s.image.at(&resolved.digest)).await?;
        // Refused now, not at the record step after the switch.
        if let Some(t) = &s.env_file {
            crate::envfile::check(&t.path, &t.var)?;
        }

        let first = &old[0];
        if let Some(digest) = &first.digest {
            ctx.store
                .seed_current(&s.name, &s.image.to_string(), digest.as_str())?;
        }
        // Recorded before compose runs: after a crash, every other container of the
        // service is one this rollout created.
        let old_ids: Vec<&str> = old.iter().map(|o| o.id.as_str()).collect();
        ctx.store.set_resolution(
            self.id,
            &Resolution {
                from_image: Some(&first.image),
                from_digest: first.digest.as_ref().map(Digest::as_str),
                to_image: &s.image.to_string(),
                to_tag: resolved.tag.as_deref(),
                to_digest: resolved.digest.as_str(),
                old_container: Some(&join_ids(&old_ids)),
            },
        )?;
        let what = match (&resolved.tag, target) {
            (Some(tag), Target::Track) if matches!(s.track, Track::Semver(_)) => {
                format!("{} picked tag {tag}", s.track)
            }
            (Some(tag), _) => format!("tag {tag}"),
            (None, _) => "digest".to_string(),
        };
        let names: Vec<String> = old.iter().map(|o| o.container.name()).collect();
        let detail = format!(
            "{what} -> {}; running: {} ({}){}; compose: {} {}",
            resolved.digest.short(),
            first
                .digest
                .as_ref()
                .map_or("unknown digest", Digest::short),
            names.join(", "),
            if definition.drift {
                "; the compose definition changed since they were created"
            } else {
                ""
            },
            definition.cli.display(),
            definition.cli.version,
        );
        Ok((
            Plan {
                route: traefik::route(first.container.labels(), s.port),
                resolved,
                old,
                definition,
            },
            detail,
        ))
    }

    /// The digest to deploy: the track's, a tag's, or the one asked for.
    async fn resolve_target(&self, target: &Target) -> Result<Resolved, StepError> {
        let ctx = self.ctx;
        let s = self.service;
        let resolved = match target {
            Target::Track => ctx.registry.resolve_track(&s.image, &s.track).await?,
            Target::Tag(tag) => {
                image::validate_tag(tag).map_err(|e| StepError::Refused(e.to_string()))?;
                Resolved {
                    tag: Some(tag.clone()),
                    digest: ctx.registry.resolve(&s.image, tag).await?,
                }
            }
            Target::Digest(digest) => {
                // A digest already on this machine needs no registry: a rollback must work
                // while the registry is down.
                let local = ctx.engine.inspect_image(&s.image.at(digest)).await.is_ok();
                if !local {
                    ctx.registry.resolve(&s.image, digest.as_str()).await?;
                }
                Resolved {
                    tag: None,
                    digest: digest.clone(),
                }
            }
        };
        Ok(resolved)
    }

    /// Stopped containers of the service beside the running ones would be started again
    /// by compose's `--scale`, with whatever they ran.
    fn check_stopped(
        &self,
        containers: &ServiceContainers,
        old: &[Running],
    ) -> Result<(), StepError> {
        let stopped: Vec<String> = containers
            .all
            .iter()
            .filter(|c| !old.iter().any(|o| Some(&o.id) == c.id.as_ref()))
            .map(|c| {
                c.names.iter().flatten().next().map_or_else(
                    || c.id.clone().unwrap_or_default(),
                    |n| n.trim_start_matches('/').to_string(),
                )
            })
            .collect();
        if stopped.is_empty() {
            return Ok(());
        }
        Err(StepError::Refused(format!(
            "compose service {}/{} has stopped containers beside the running ones ({}); \
             compose would start them again while scaling. Remove them (`docker rm`) first",
            self.service.compose_project,
            self.service.compose_service,
            stopped.join(", ")
        )))
    }

    /// Refuses what would cause an outage: a container that cannot have a twin, or no cord
    /// to drain it by.
    fn check_old(&self, old: &Running) -> Result<(), StepError> {
        let s = self.service;
        let ctx = self.ctx;
        let name = old.container.name();
        let blockers =
            compose::side_by_side_blockers(&old.container, &s.compose_project, &s.compose_service);
        if !blockers.is_empty() {
            return Err(StepError::Refused(format!(
                "cannot run a second container of {} next to {name}: {}",
                s.name,
                blockers.join("; ")
            )));
        }
        if ip_missing(old, &ctx.config.traefik.network) {
            return Err(StepError::Refused(format!(
                "the running container {name} is not attached to the Traefik network `{}`",
                ctx.config.traefik.network
            )));
        }
        let fitted = drain::is_fitted(
            old.container.healthcheck(),
            old.container.binds(),
            &ctx.cord,
        );
        if !fitted {
            return Err(StepError::Refused(format!(
                "the running container {name} lacks hoist's drain healthcheck or the `{}` mount, so it \
                 could not leave Traefik's pool before stopping. Paste the output of `hoist labels {}` \
                 into the compose file and run `docker compose up -d`",
                ctx.cord.bind(),
                s.name
            )));
        }
        // With compose creating the new containers, the compose file's probe is the
        // health gate: one that checks only the cord would let any image through.
        let checks_app = old
            .container
            .healthcheck()
            .and_then(|h| h.test.as_ref())
            .is_some_and(|t| t.len() > 3);
        if !checks_app {
            return Err(StepError::Refused(format!(
                "the drain healthcheck of {name} checks only hoist's cord, not the app, so any \
                 new image would pass the health gate. Set health_path for {}, or run `hoist \
                 labels {}` where Docker has the image (it then wraps the image's HEALTHCHECK), \
                 paste it into the compose file and run `docker compose up -d`",
                s.name, s.name
            )));
        }
        Ok(())
    }
}

fn ip_missing(old: &Running, network: &str) -> bool {
    old.ip.is_none() && !old.container.on_network(network)
}
