//! Docker Compose conventions: finding a compose service's containers, recognising
//! compose's naming, what cannot run twice, and the YAML fragment operators paste into
//! their compose file. The project's own compose CLI, which creates the new containers of
//! a rollout, is [`cli`].

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerSummary, HealthConfig};

use crate::config::ServiceConfig;
use crate::docker::drain;
use crate::docker::inspect::Container;

pub(crate) const PROJECT: &str = "com.docker.compose.project";
pub(crate) const SERVICE: &str = "com.docker.compose.service";
pub(crate) const NUMBER: &str = "com.docker.compose.container-number";
pub(crate) const ONEOFF: &str = "com.docker.compose.oneoff";

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

pub(crate) mod cli;
pub(crate) mod drift;
#[cfg(test)]
mod tests;
