//! The service's compose definition, checked in the resolve step before anything starts:
//! the compose CLI and project files that will create the new containers, whether the
//! definition drifted from what runs (its config hash), and what it would create that
//! cannot run beside the old containers (other `traefik.*` labels, another image, a fixed
//! MAC address, anonymous volumes).

use std::collections::BTreeMap;

use crate::docker::compose::cli::{self, Cli, ComposeError, Project};
use crate::docker::service::Running;
use crate::traefik;

use super::{Rollout, StepError};

/// What creates the new containers.
pub(super) struct Definition {
    pub cli: Cli,
    pub project: Project,
    /// The variable the compose file takes the image from (the service's `env_var`).
    pub var: String,
    /// The compose definition changed since the running containers were created.
    pub drift: bool,
}

impl From<ComposeError> for StepError {
    fn from(e: ComposeError) -> Self {
        StepError::Compose(e.to_string())
    }
}

impl Rollout<'_> {
    /// Finds the compose CLI and project of the running containers and refuses what compose
    /// would create that could not serve beside them. `reference` is the new `image@digest`.
    pub(super) async fn definition(
        &self,
        old: &[Running],
        reference: &str,
    ) -> Result<Definition, StepError> {
        let s = self.service;
        let ctx = self.ctx;
        let Some(first) = old.first() else {
            return Err(StepError::Refused("no running container".into()));
        };
        let Some(target) = &s.env_file else {
            return Err(StepError::Refused(format!(
                "{} has no env_file and env_var: compose takes the new image from a variable \
                 (`image: ${{WEB_IMAGE}}` in the compose file, env_var = \"WEB_IMAGE\" and the \
                 project's env file in hoist.toml)",
                s.name
            )));
        };
        // Compose's own time (a process per question) is waiting on the outside world, not
        // hoist's work.
        let scope = self.scope(super::Step::Resolve);
        let cli = scope
            .wait(Cli::detect(
                ctx.config.compose.command.as_deref(),
                ctx.config.docker.host.as_deref(),
            ))
            .await?;
        if let Some(created) = cli::created_by_major(&first.container)
            && created != cli.major()
        {
            return Err(StepError::Refused(format!(
                "{} was created by compose {} but hoist would use `{}` {}: the two compute \
                 different config hashes, so the next `docker compose up -d` would recreate \
                 every container. Name the compose that created it in hoist.toml ([compose] \
                 command), or recreate the service once with the other (`up -d --force-recreate`)",
                first.container.name(),
                first.container.label(cli::VERSION).unwrap_or("?"),
                cli.display(),
                cli.version
            )));
        }
        let project = Project::locate(&s.compose_project, &first.container, &s.compose)?;

        // The hash of the definition with the image the old containers run: it equals their
        // label unless the compose file (or an interpolated variable) changed since.
        // Both questions at once: two compose processes side by side.
        let running_image = first.container.configured_image();
        let running_env = [(target.var.as_str(), running_image)];
        let new_env = [(target.var.as_str(), reference)];
        let (current, new) = scope
            .wait(async {
                tokio::join!(
                    cli.config_hash(&project, &s.compose_service, &running_env),
                    cli.config_json(&project, &s.compose_service, &new_env)
                )
            })
            .await;
        let current = current?;
        let drift = old
            .iter()
            .any(|o| o.container.label(cli::CONFIG_HASH) != Some(current.as_str()));

        if let Some(new) = new? {
            check_new(&new, first, reference, &target.var)?;
        }
        if !s.fresh_anonymous_volumes {
            check_anonymous_volumes(old)?;
        }
        Ok(Definition {
            cli,
            project,
            var: target.var.clone(),
            drift,
        })
    }
}

/// What compose v2 resolved for the new containers, against the running ones.
fn check_new(
    new: &serde_json::Value,
    old: &Running,
    reference: &str,
    var: &str,
) -> Result<(), StepError> {
    let image = new
        .get("image")
        .and_then(|i| i.as_str())
        .unwrap_or_default();
    if image != reference {
        return Err(StepError::Refused(format!(
            "compose would create the new containers with image `{image}`, not {reference}: \
             the service's image in the compose file must be `${{{var}}}`"
        )));
    }
    let twin_blockers = cannot_run_twice(new);
    if !twin_blockers.is_empty() {
        return Err(StepError::Refused(format!(
            "the compose file now gives the service {}, so the new containers could not run \
             beside {}",
            twin_blockers.join(" and "),
            old.container.name()
        )));
    }
    if let Some(mac) = new.get("mac_address").and_then(|m| m.as_str()) {
        return Err(StepError::Refused(format!(
            "the service has a fixed MAC address ({mac}, mac_address in the compose file), \
             so a second container cannot run beside {}; remove mac_address",
            old.container.name()
        )));
    }
    let labels: BTreeMap<String, String> = new
        .get("labels")
        .and_then(|l| l.as_object())
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("traefik."))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    labels_match(old, &labels)
}

/// What in a service definition (compose v2's JSON) allows only one container: a fixed
/// name, published host ports, the host's network.
fn cannot_run_twice(new: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(name) = new.get("container_name").and_then(|n| n.as_str()) {
        out.push(format!("a container_name ({name})"));
    }
    let published: Vec<&str> = new
        .get("ports")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("published").and_then(|v| v.as_str()))
        .filter(|p| !p.is_empty() && *p != "0")
        .collect();
    if !published.is_empty() {
        out.push(format!("fixed host ports ({})", published.join(", ")));
    }
    if new.get("network_mode").and_then(|m| m.as_str()) == Some("host") {
        out.push("network_mode: host".into());
    }
    out
}

/// Refuses new containers whose `traefik.*` labels differ from a running one's: Traefik
/// drops a router whose containers disagree, for everyone, while both run.
pub(super) fn labels_match(old: &Running, new: &BTreeMap<String, String>) -> Result<(), StepError> {
    let diff = traefik::diff(old.container.labels(), new);
    if diff.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = diff.iter().map(ToString::to_string).collect();
    Err(StepError::Refused(format!(
        "the compose file gives the new containers other Traefik labels than the running {} \
         carries; Traefik would drop the router while both run (404 for everyone). Deploy a \
         label change with `docker compose up -d`, or put the old labels back \
         (- running, + compose file):\n{}",
        old.container.name(),
        lines.join("\n")
    )))
}

/// Anonymous volumes cannot be shared by two containers side by side: the new ones would
/// start empty and the data would stay behind in an orphaned volume.
fn check_anonymous_volumes(old: &[Running]) -> Result<(), StepError> {
    let volumes: Vec<String> = old
        .iter()
        .flat_map(|o| {
            o.container
                .anonymous_volumes()
                .into_iter()
                .map(move |(name, path)| {
                    format!(
                        "{path} (volume {}… of {})",
                        name.get(..12).unwrap_or(&name),
                        o.container.name()
                    )
                })
        })
        .collect();
    if volumes.is_empty() {
        return Ok(());
    }
    Err(StepError::Refused(format!(
        "the running containers keep data in anonymous volumes: {}. A new container would \
         get empty ones and the data would be left behind. Name each volume in the compose \
         file (`- data:/path` and `volumes: {{data: {{}}}}`), or set \
         fresh_anonymous_volumes = true for the service if the data may go",
        volumes.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::cannot_run_twice;

    #[test]
    fn names_what_allows_only_one_container() {
        let ok = serde_json::json!({"image": "x", "ports": [{"target": 8000, "protocol": "tcp"}]});
        assert!(cannot_run_twice(&ok).is_empty());
        let fixed = serde_json::json!({
            "container_name": "web",
            "ports": [{"target": 8000, "published": "8080"}],
            "network_mode": "host",
        });
        assert_eq!(
            cannot_run_twice(&fixed),
            [
                "a container_name (web)",
                "fixed host ports (8080)",
                "network_mode: host"
            ]
        );
    }
}
