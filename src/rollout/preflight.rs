//! The resolve step: what to deploy, which container serves now, and the checks that
//! refuse a rollout that would cause an outage.

use crate::config::Track;
use crate::docker::compose;
use crate::docker::drain;
use crate::docker::service::{self, Running};
use crate::image::{self, Digest};
use crate::registry::Resolved;
use crate::store::Resolution;
use crate::traefik;

use super::{Plan, Rollout, StepError, Target};

impl Rollout<'_> {
    pub(super) async fn resolve(&self, target: &Target) -> Result<(Plan, String), StepError> {
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

        let containers = service::containers(ctx.lookup(), s).await?;
        let old = service::single(ctx.lookup(), s, &containers)
            .await
            .map_err(|e| match e {
                service::CurrentError::Engine(e) => StepError::Engine(e),
                refusal => StepError::Refused(refusal.to_string()),
            })?;
        self.check_old(&old)?;
        // Refused now, not at the record step after the switch.
        if let Some(t) = &s.env_file {
            crate::envfile::check(&t.path, &t.var)?;
        }

        if let Some(digest) = &old.digest {
            ctx.store
                .seed_current(&s.name, &s.image.to_string(), digest.as_str())?;
        }
        ctx.store.set_resolution(
            self.id,
            &Resolution {
                from_image: Some(&old.image),
                from_digest: old.digest.as_ref().map(Digest::as_str),
                to_image: &s.image.to_string(),
                to_tag: resolved.tag.as_deref(),
                to_digest: resolved.digest.as_str(),
                old_container: Some(&old.id),
            },
        )?;
        let what = match (&resolved.tag, target) {
            (Some(tag), Target::Track) if matches!(s.track, Track::Semver(_)) => {
                format!("{} picked tag {tag}", s.track)
            }
            (Some(tag), _) => format!("tag {tag}"),
            (None, _) => "digest".to_string(),
        };
        let detail = format!(
            "{what} -> {}; running: {} ({})",
            resolved.digest.short(),
            old.digest.as_ref().map_or("unknown digest", Digest::short),
            old.container.name(),
        );
        Ok((
            Plan {
                resolved,
                old,
                containers,
            },
            detail,
        ))
    }

    /// Refuses what would cause an outage: a container that cannot have a twin, labels
    /// Traefik would not merge, or no cord to drain it by.
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
        let want = traefik::labels(s, &ctx.config.traefik);
        let diff = traefik::diff(old.container.labels(), &want);
        if !diff.is_empty() {
            let lines: Vec<String> = diff.iter().map(ToString::to_string).collect();
            return Err(StepError::Refused(format!(
                "the running container {name} has different Traefik labels than hoist generates; \
                 Traefik would drop the router while both run (404 for everyone). \
                 Update the compose file with `hoist labels {}` and run `docker compose up -d`:\n{}",
                s.name,
                lines.join("\n")
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
        Ok(())
    }
}

fn ip_missing(old: &Running, network: &str) -> bool {
    old.ip.is_none() && !old.container.on_network(network)
}
