//! Checks across values (uniqueness, promotions, environments in use) and the validators
//! of single values (names, hosts, URLs, tracks).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use toml::{Table, Value};

use super::walker::Problems;
use super::{EnvironmentConfig, RegistryConfig, ServiceConfig, Track};
use crate::image;

/// A registry host may be configured only once.
pub(super) fn check_registry_hosts(registries: &[RegistryConfig], p: &mut Problems) {
    let mut hosts = HashSet::new();
    for (i, r) in registries.iter().enumerate() {
        if !hosts.insert(r.host.clone()) {
            p.add(
                format!("registries[{i}].host"),
                format!("`{}` is configured twice", r.host),
            );
        }
    }
}

/// Names are checked on the raw tables so that a duplicate is reported even when one of
/// the two services has other problems.
pub(super) fn check_service_names(service_tables: &[(String, &Table)], p: &mut Problems) {
    let mut names = HashSet::new();
    for (path, table) in service_tables {
        if let Some(Value::String(name)) = table.get("name")
            && !names.insert(name.clone())
        {
            p.add(
                format!("{path}.name"),
                format!("`{name}` is used by another service"),
            );
        }
    }
}

/// Each `[environments.<name>]` must be some service's environment.
pub(super) fn check_environments_used(
    environments: &BTreeMap<String, EnvironmentConfig>,
    services: &[ServiceConfig],
    p: &mut Problems,
) {
    for name in environments.keys() {
        if !services.iter().any(|s| &s.environment == name) {
            p.add(
                format!("environments.{name}"),
                format!("no service has environment `{name}`"),
            );
        }
    }
}

/// `promote_from` must name another service, and promotions must not form a cycle.
pub(super) fn check_promotions(services: &[ServiceConfig], p: &mut Problems) {
    for (i, s) in services.iter().enumerate() {
        let Some(from) = &s.promote_from else {
            continue;
        };
        if from == &s.name {
            p.add(
                format!("services[{i}].promote_from"),
                "a service cannot promote from itself",
            );
            continue;
        }
        if !services.iter().any(|o| &o.name == from) {
            p.add(
                format!("services[{i}].promote_from"),
                format!("no service named `{from}`"),
            );
            continue;
        }
        let mut seen = vec![s.name.as_str()];
        let mut next = Some(from.as_str());
        while let Some(name) = next {
            if seen.contains(&name) {
                p.add(
                    format!("services[{i}].promote_from"),
                    format!("promotions form a cycle: {} -> {name}", seen.join(" -> ")),
                );
                break;
            }
            seen.push(name);
            next = services
                .iter()
                .find(|o| o.name == name)
                .and_then(|o| o.promote_from.as_deref());
        }
    }
}

pub(super) fn check_service_uniqueness(services: &[ServiceConfig], p: &mut Problems) {
    let mut compose = HashSet::new();
    let mut hosts = HashSet::new();
    let mut env_vars = BTreeSet::new();
    for (i, s) in services.iter().enumerate() {
        if !compose.insert((&s.compose_project, &s.compose_service)) {
            p.add(
                format!("services[{i}].compose_service"),
                format!(
                    "{}/{} is already managed by another service",
                    s.compose_project, s.compose_service
                ),
            );
        }
        if !hosts.insert(&s.host) {
            p.add(
                format!("services[{i}].host"),
                format!("`{}` is routed to another service already", s.host),
            );
        }
        if let Some(t) = &s.env_file
            && !env_vars.insert((t.path.clone(), t.var.clone()))
        {
            p.add(
                format!("services[{i}].env_var"),
                format!(
                    "{} in {} is written by another service",
                    t.var,
                    t.path.display()
                ),
            );
        }
    }
}

pub fn parse_track(text: &str) -> Result<Track, String> {
    if let Some(req) = text.strip_prefix("semver:") {
        semver::VersionReq::parse(req.trim())
            .map(Track::Semver)
            .map_err(|e| {
                format!("`{req}` is not a semver requirement ({e}); write e.g. \"semver:^1.4\"")
            })
    } else {
        image::validate_tag(text)
            .map(|()| Track::Tag(text.to_string()))
            .map_err(|e| e.to_string())
    }
}

/// Names that end up inside Traefik label keys: no dots (they separate label segments) and
/// no `@` (Traefik reserves it for provider suffixes).
pub(super) fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

pub(super) fn is_docker_name(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

pub(super) fn is_env_var(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn is_http_url(u: &str) -> bool {
    reqwest::Url::parse(u).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
}
