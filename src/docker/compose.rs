//! Docker Compose conventions: finding a compose service's containers, naming the next one
//! the way compose would, building it from the running one, and the YAML fragment operators
//! paste into their compose file.
//!
//! A container hoist creates carries the compose labels (with the next container-number),
//! so `docker compose ps/logs` see it as part of the service.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, EndpointSettings,
    HealthConfig, ImageConfig, NetworkingConfig,
};

use crate::config::ServiceConfig;
use crate::docker::drain;
use crate::docker::engine::short;
use crate::docker::inspect::{Container, LocalImage};

pub(crate) const PROJECT: &str = "com.docker.compose.project";
pub(crate) const SERVICE: &str = "com.docker.compose.service";
pub(crate) const NUMBER: &str = "com.docker.compose.container-number";
pub(crate) const ONEOFF: &str = "com.docker.compose.oneoff";
/// Set on every container hoist creates: the journal entry that created it, so recovery
/// finds a container even when hoist died before recording its id.
pub(crate) const DEPLOY_LABEL: &str = "dev.hoist.deploy";

/// How compose named the service's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// compose v1: `project_service_N`.
    Underscore,
    /// compose v2: `project-service-N`.
    Dash,
}

/// The containers of one compose service, as Docker reports them.
#[derive(Debug, Clone)]
pub(crate) struct ServiceContainers {
    pub running: Vec<ContainerSummary>,
    pub all: Vec<ContainerSummary>,
}

impl ServiceContainers {
    pub(crate) fn from_list(list: Vec<ContainerSummary>) -> Self {
        let all: Vec<_> = list
            .into_iter()
            .filter(|c| label(c.labels.as_ref(), ONEOFF) != Some("True"))
            .collect();
        let running = all
            .iter()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.to_string() == "running"))
            .cloned()
            .collect();
        ServiceContainers { running, all }
    }

    /// Containers hoist created (any state), with the journal entry that created each.
    pub(crate) fn created_by_hoist(&self) -> impl Iterator<Item = (&str, i64)> {
        self.all.iter().filter_map(|c| {
            let deploy_id = label(c.labels.as_ref(), DEPLOY_LABEL)?
                .parse::<i64>()
                .ok()?;
            Some((c.id.as_deref()?, deploy_id))
        })
    }

    /// Compose numbers containers from 1; the next one is one above the highest seen.
    pub(crate) fn next_number(&self) -> u32 {
        self.all
            .iter()
            .filter_map(|c| label(c.labels.as_ref(), NUMBER)?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1
    }
}

fn label<'a>(labels: Option<&'a HashMap<String, String>>, key: &str) -> Option<&'a str> {
    labels?.get(key).map(String::as_str)
}

/// Recognises compose's naming from a container's name; `None` means a custom
/// `container_name`, which cannot be duplicated.
pub(crate) fn naming(name: &str, project: &str, service: &str) -> Option<Naming> {
    let numbered = |sep: char| {
        name.strip_prefix(&format!("{project}{sep}{service}{sep}"))
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    if numbered('_') {
        Some(Naming::Underscore)
    } else if numbered('-') {
        Some(Naming::Dash)
    } else {
        None
    }
}

pub(crate) fn numbered_name(naming: Naming, project: &str, service: &str, number: u32) -> String {
    match naming {
        Naming::Underscore => format!("{project}_{service}_{number}"),
        Naming::Dash => format!("{project}-{service}-{number}"),
    }
}

/// Reasons two containers of this service cannot run side by side.
pub(crate) fn side_by_side_blockers(
    container: &Container,
    project: &str,
    service: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let name = container.name();
    let c = container.raw();
    if naming(&name, project, service).is_none() {
        out.push(format!(
            "it has a fixed name `{name}` (container_name in the compose file); remove container_name"
        ));
    }
    let host = c.host_config.as_ref();
    if let Some(bindings) = host.and_then(|h| h.port_bindings.as_ref()) {
        let fixed: Vec<String> = bindings
            .iter()
            .filter_map(|(port, b)| {
                let hosts: Vec<&str> = b
                    .iter()
                    .flatten()
                    .filter_map(|b| b.host_port.as_deref())
                    .filter(|p| !p.is_empty() && *p != "0")
                    .collect();
                (!hosts.is_empty()).then(|| format!("{}->{port}", hosts.join(",")))
            })
            .collect();
        if !fixed.is_empty() {
            out.push(format!(
                "it publishes fixed host ports ({}); let Traefik route to it instead of `ports:`",
                fixed.join(", ")
            ));
        }
    }
    if host.and_then(|h| h.network_mode.as_deref()) == Some("host") {
        out.push("it uses network_mode: host".into());
    }
    let networks = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref());
    for (net, endpoint) in networks.into_iter().flatten() {
        let fixed_ip = endpoint.ipam_config.as_ref().is_some_and(|ipam| {
            ipam.ipv4_address.as_deref().is_some_and(|a| !a.is_empty())
                || ipam.ipv6_address.as_deref().is_some_and(|a| !a.is_empty())
        });
        if fixed_ip {
            out.push(format!("it has a fixed IP address on network {net}"));
        }
    }
    out
}

/// Everything needed to create the next container of a service.
pub(crate) struct NewContainer {
    pub name: String,
    pub body: ContainerCreateBody,
    /// Networks to connect after creation (the engine takes one at create time before
    /// API 1.44).
    pub extra_networks: Vec<Endpoint>,
}

/// What the rollout knows when it builds the new container.
pub(crate) struct Template<'a> {
    pub old: &'a Container,
    /// The image the old container runs, if the engine still has it.
    pub old_image: Option<&'a LocalImage>,
    /// `repo@digest`.
    pub image: &'a str,
    pub traefik_labels: &'a BTreeMap<String, String>,
    pub healthcheck: HealthConfig,
    pub name: String,
    pub number: u32,
    pub deploy_id: i64,
}

/// Builds the new container from the running one: same env, mounts, networks and aliases,
/// restart policy, resources and labels, with the new image.
///
/// The old container's config is the image's config merged with the compose file's. Values
/// equal to the old image's defaults are dropped so that the new image's defaults (its CMD,
/// ENV, labels...) apply, as `docker compose up` would do.
pub(crate) fn build(t: Template<'_>) -> NewContainer {
    let old = t.old.raw();
    let old_config = old.config.clone().unwrap_or_default();
    let image = t
        .old_image
        .and_then(LocalImage::config)
        .cloned()
        .unwrap_or_default();

    let from_compose = |value: Option<Vec<String>>, image_value: &Option<Vec<String>>| {
        value.filter(|v| Some(v) != image_value.as_ref())
    };
    let not_in_image = |values: Option<Vec<String>>, image_values: &Option<Vec<String>>| {
        values.map(|v| {
            v.into_iter()
                .filter(|x| !image_values.iter().flatten().any(|i| i == x))
                .collect::<Vec<_>>()
        })
    };
    let old_id = old.id.as_deref().unwrap_or_default();
    // Docker fills Hostname with the short id when none was set; copying it would give the
    // new container the old one's name.
    let hostname = old_config
        .hostname
        .filter(|h| !old_id.starts_with(h.as_str()));

    let labels = new_labels(old_config.labels, &image, &t);

    let mut host_config = old.host_config.clone().unwrap_or_default();
    // Let the engine apply its defaults for the new container rather than pinning the old
    // container's resolved values.
    host_config.masked_paths = None;
    host_config.readonly_paths = None;

    let (primary, extra_networks) = networks(old, host_config.network_mode.as_deref(), old_id);

    let body = ContainerCreateBody {
        hostname,
        domainname: old_config.domainname.filter(|d| !d.is_empty()),
        user: old_config.user.filter(|u| Some(u) != image.user.as_ref()),
        exposed_ports: not_in_image(old_config.exposed_ports, &image.exposed_ports),
        tty: old_config.tty,
        open_stdin: old_config.open_stdin,
        stdin_once: old_config.stdin_once,
        attach_stdin: old_config.attach_stdin,
        attach_stdout: old_config.attach_stdout,
        attach_stderr: old_config.attach_stderr,
        env: not_in_image(old_config.env, &image.env),
        cmd: from_compose(old_config.cmd, &image.cmd),
        entrypoint: from_compose(old_config.entrypoint, &image.entrypoint),
        healthcheck: Some(t.healthcheck),
        image: Some(t.image.to_string()),
        volumes: not_in_image(old_config.volumes, &image.volumes),
        working_dir: old_config
            .working_dir
            .filter(|w| !w.is_empty() && Some(w) != image.working_dir.as_ref()),
        labels: Some(labels),
        stop_signal: old_config
            .stop_signal
            .filter(|s| Some(s) != image.stop_signal.as_ref()),
        stop_timeout: old_config.stop_timeout,
        network_disabled: old_config.network_disabled,
        host_config: Some(host_config),
        networking_config: primary.map(|(name, endpoint)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(name, endpoint)])),
        }),
        ..Default::default()
    };
    NewContainer {
        name: t.name,
        body,
        extra_networks,
    }
}

/// The old container's labels without Traefik's, hoist's and those equal to the old image's
/// (so the new image's apply), plus hoist's Traefik labels, the container-number and the
/// journal entry.
fn new_labels(
    old: Option<HashMap<String, String>>,
    image: &ImageConfig,
    t: &Template<'_>,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = old
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| {
            !k.starts_with("traefik.")
                && !k.starts_with("dev.hoist.")
                && image.labels.as_ref().and_then(|l| l.get(k)) != Some(v)
        })
        .collect();
    labels.extend(t.traefik_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.insert(NUMBER.into(), t.number.to_string());
    labels.insert(DEPLOY_LABEL.into(), t.deploy_id.to_string());
    labels
}

/// A network name and how to attach to it.
type Endpoint = (String, EndpointSettings);

/// The old container's network endpoints, reduced to what can be given to a new
/// container: aliases (without the old container's own id), links, driver options.
fn networks(
    old: &ContainerInspectResponse,
    network_mode: Option<&str>,
    old_id: &str,
) -> (Option<Endpoint>, Vec<Endpoint>) {
    let mut endpoints: Vec<Endpoint> = old
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, e)| {
            let aliases = e.aliases.map(|a| {
                a.into_iter()
                    .filter(|alias| alias != short(old_id) && !old_id.starts_with(alias.as_str()))
                    .collect::<Vec<_>>()
            });
            (
                name,
                EndpointSettings {
                    aliases,
                    links: e.links,
                    driver_opts: e.driver_opts,
                    ..Default::default()
                },
            )
        })
        .collect();
    endpoints.sort_by(|a, b| a.0.cmp(&b.0));
    let primary_index = endpoints
        .iter()
        .position(|(name, _)| Some(name.as_str()) == network_mode)
        .or(if endpoints.is_empty() { None } else { Some(0) });
    let primary = primary_index.map(|i| endpoints.remove(i));
    (primary, endpoints)
}

/// The YAML to paste under the service in docker-compose.yml so that the container compose
/// creates is one hoist can drain and that Traefik merges with hoist's containers.
pub(crate) fn fragment(
    service: &ServiceConfig,
    labels: &BTreeMap<String, String>,
    healthcheck: &HealthConfig,
    bind: &str,
) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let seconds = |nanos: Option<i64>| {
        let ms = nanos.unwrap_or(0) / 1_000_000;
        if ms % 1000 == 0 {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    };
    let mut out = format!(
        "# hoist: paste under `services: {}:` in your compose file (generated by `hoist labels {}`)\n",
        service.compose_service, service.name
    );
    out.push_str("labels:\n");
    for (k, v) in labels {
        out.push_str(&format!("  {k}: {}\n", quote(v)));
    }
    let test: Vec<String> = healthcheck
        .test
        .iter()
        .flatten()
        .map(|t| quote(t))
        .collect();
    out.push_str("healthcheck:\n");
    out.push_str(&format!("  test: [{}]\n", test.join(", ")));
    out.push_str(&format!("  interval: {}\n", seconds(healthcheck.interval)));
    out.push_str(&format!("  timeout: {}\n", seconds(healthcheck.timeout)));
    out.push_str(&format!(
        "  retries: {}\n",
        healthcheck.retries.unwrap_or(drain::RETRIES)
    ));
    out.push_str(&format!(
        "  start_period: {}\n",
        seconds(healthcheck.start_period)
    ));
    out.push_str("volumes:\n");
    out.push_str(&format!("  - {}\n", quote(bind)));
    out
}

#[cfg(test)]
mod tests;
