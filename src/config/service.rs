//! The reader of `[[services]]`: one service's keys, read in groups (identity, image and
//! track, routing and health, triggers, env file) in the order the problems are reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Table;

use super::checks::{
    check_promotions, check_service_names, check_service_uniqueness, is_docker_name, is_env_var,
    is_hostname, is_label_name, parse_track,
};
use super::walker::{Problems, Section};
use super::{ComposeOverrides, EnvFileTarget, ServiceConfig, Track};
use crate::image::Repository;

/// Docker runs hoist's probe this often unless `cord_interval` says otherwise: each run is a
/// `docker exec` costing the engine about 38 ms of CPU on a small VM (1.3 % of a core per
/// container at 3 s, 3.8 % at 1 s), and a new container is healthy, or a cut cord takes an
/// old one out of the pool, within about one interval. The README's table has the figures.
pub(crate) const DEFAULT_CORD_INTERVAL: Duration = Duration::from_secs(3);

/// Every `[[services]]` entry that could be read, checked against each other.
pub(super) fn read_services(
    top: &mut Section<'_>,
    root: &Table,
    p: &mut Problems,
) -> Vec<ServiceConfig> {
    let service_tables = top.opt_table_list(p, "services");
    if service_tables.is_empty() && !root.contains_key("services") {
        p.add(
            "services",
            "no [[services]] configured; hoist has nothing to deploy",
        );
    }
    check_service_names(&service_tables, p);
    let mut services = Vec::new();
    for (path, table) in service_tables {
        if let Some(s) = read_service(Section::new(path, table), p) {
            services.push(s);
        }
    }
    check_service_uniqueness(&services, p);
    check_promotions(&services, p);
    services
}

fn read_service(mut s: Section<'_>, p: &mut Problems) -> Option<ServiceConfig> {
    // Every group is read before any is given up on, so that all problems are reported.
    let identity = read_identity(&mut s, p);
    let source = read_source(&mut s, p);
    let routing = read_routing(&mut s, p);
    let triggers = read_triggers(&mut s, p);
    let env_file = read_env_file(&mut s, p);
    let compose = read_compose_overrides(&mut s, p);
    let fresh_anonymous_volumes = s.opt_bool(p, "fresh_anonymous_volumes").unwrap_or(false);
    s.finish(p);
    let Identity {
        name,
        environment,
        compose_project,
        compose_service,
    } = identity?;
    let (image, track) = source?;
    let Routing {
        host,
        port,
        health_path,
        health_timeout,
        cord_interval,
        drain,
        stop_timeout,
    } = routing?;
    let Triggers {
        github_repository,
        poll_interval,
        watch_window,
        promote_from,
        promote_after,
    } = triggers?;
    Some(ServiceConfig {
        name,
        environment,
        compose_project,
        compose_service,
        image,
        track,
        host,
        port,
        health_path,
        health_timeout,
        cord_interval,
        drain,
        stop_timeout,
        env_file,
        compose,
        fresh_anonymous_volumes,
        github_repository,
        poll_interval,
        watch_window,
        promote_from,
        promote_after,
    })
}

/// What the service is called, in hoist and in compose.
struct Identity {
    name: String,
    environment: String,
    compose_project: String,
    compose_service: String,
}

fn read_identity(s: &mut Section<'_>, p: &mut Problems) -> Option<Identity> {
    let name = s.str(p, "name");
    if let Some(n) = &name
        && !is_label_name(n)
    {
        p.add(
            s.key("name"),
            format!(
                "`{n}` must be lowercase letters, digits, - and _ (it becomes a Traefik router name)"
            ),
        );
    }
    let environment = s.str(p, "environment");
    let compose_project = s.str(p, "compose_project");
    let compose_service = s.opt_str(p, "compose_service").or_else(|| name.clone());
    for (key, value) in [
        ("compose_project", &compose_project),
        ("compose_service", &compose_service),
    ] {
        if let Some(v) = value
            && !is_docker_name(v)
        {
            p.add(s.key(key), format!("`{v}` is not a valid compose name"));
        }
    }
    Some(Identity {
        name: name?,
        environment: environment?,
        compose_project: compose_project?,
        compose_service: compose_service?,
    })
}

/// The image repository and what the service follows in it.
fn read_source(s: &mut Section<'_>, p: &mut Problems) -> Option<(Repository, Track)> {
    let image = s
        .str(p, "image")
        .and_then(|text| match Repository::parse(&text) {
            Ok(repo) => Some(repo),
            Err(e) => {
                p.add(s.key("image"), e.to_string());
                None
            }
        });
    let track = s.str(p, "track").and_then(|text| match parse_track(&text) {
        Ok(track) => Some(track),
        Err(message) => {
            p.add(s.key("track"), message);
            None
        }
    });
    Some((image?, track?))
}

/// Where Traefik routes the service, and how its containers are checked and stopped.
struct Routing {
    host: String,
    port: u16,
    health_path: Option<String>,
    health_timeout: Duration,
    cord_interval: Duration,
    drain: Duration,
    stop_timeout: Option<Duration>,
}

fn read_routing(s: &mut Section<'_>, p: &mut Problems) -> Option<Routing> {
    let host = s.str(p, "host");
    if let Some(h) = &host
        && !is_hostname(h)
    {
        p.add(s.key("host"), format!("`{h}` is not a valid host name"));
    }
    let port = match s.opt_int(p, "port") {
        Some(n) if (1..=65535).contains(&n) => u16::try_from(n).ok(),
        Some(n) => {
            p.add(s.key("port"), format!("{n} is not a valid port (1-65535)"));
            None
        }
        None => {
            if !s.table.contains_key("port") {
                p.add(s.key("port"), "missing (required)");
            }
            None
        }
    };
    let health_path = s.opt_str(p, "health_path");
    if let Some(h) = &health_path
        && (!h.starts_with('/') || h.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        p.add(
            s.key("health_path"),
            format!("`{h}` must be a URL path starting with /"),
        );
    }
    let health_timeout = s.duration(p, "health_timeout", Duration::from_secs(60));
    let cord_interval = s.duration(p, "cord_interval", DEFAULT_CORD_INTERVAL);
    if cord_interval.is_some_and(|d| d < Duration::from_secs(1) || d > Duration::from_secs(60)) {
        p.add(s.key("cord_interval"), "must be between 1s and 60s");
    }
    let drain = s.duration(p, "drain", Duration::from_secs(10));
    let stop_timeout = match s.opt_str(p, "stop_timeout") {
        None => Some(None),
        Some(_) => s.duration(p, "stop_timeout", Duration::ZERO).map(Some),
    };
    if health_timeout.is_some_and(|d| d < Duration::from_secs(1)) {
        p.add(s.key("health_timeout"), "must be at least 1s");
    }
    Some(Routing {
        host: host?,
        port: port?,
        health_path,
        health_timeout: health_timeout?,
        cord_interval: cord_interval?,
        drain: drain?,
        stop_timeout: stop_timeout?,
    })
}

/// What starts a rollout besides a manual one: webhooks, polling, promotion.
struct Triggers {
    github_repository: Option<String>,
    poll_interval: Option<Duration>,
    watch_window: Duration,
    promote_from: Option<String>,
    promote_after: Option<Duration>,
}

fn read_triggers(s: &mut Section<'_>, p: &mut Problems) -> Option<Triggers> {
    let github_repository = s.opt_str(p, "github_repository");
    if let Some(r) = &github_repository
        && !r.split_once('/').is_some_and(|(owner, name)| {
            let ok = |x: &str| {
                !x.is_empty()
                    && x.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            };
            ok(owner) && ok(name)
        })
    {
        p.add(
            s.key("github_repository"),
            format!("`{r}` must be owner/name, e.g. acme/web"),
        );
    }
    let poll_interval = match s.opt_str(p, "poll_interval") {
        None => Some(None),
        Some(_) => s.duration(p, "poll_interval", Duration::ZERO).map(Some),
    };
    if poll_interval
        .flatten()
        .is_some_and(|d| d < Duration::from_secs(1))
    {
        p.add(s.key("poll_interval"), "must be at least 1s");
    }
    let watch_window = s.duration(p, "watch_window", Duration::from_secs(15 * 60));
    let promote_from = s.opt_str(p, "promote_from");
    let promote_after = match s.opt_str(p, "promote_after") {
        None => Some(None),
        Some(_) => s.duration(p, "promote_after", Duration::ZERO).map(Some),
    };
    if promote_after.flatten().is_some() && promote_from.is_none() {
        p.add(s.key("promote_after"), "needs promote_from");
    }
    Some(Triggers {
        github_repository,
        poll_interval: poll_interval?,
        watch_window: watch_window?,
        promote_from,
        promote_after: promote_after?,
    })
}

/// `env_file` and `env_var` go together: both or neither.
fn read_env_file(s: &mut Section<'_>, p: &mut Problems) -> Option<EnvFileTarget> {
    let env_file = s.opt_str(p, "env_file");
    let env_var = s.opt_str(p, "env_var");
    match (env_file, env_var) {
        (Some(path), Some(var)) => {
            if !is_env_var(&var) {
                p.add(
                    s.key("env_var"),
                    format!("`{var}` is not a valid variable name (A-Z, 0-9, _)"),
                );
            }
            if !Path::new(&path).is_absolute() {
                p.add(
                    s.key("env_file"),
                    format!("`{path}` must be an absolute path"),
                );
            }
            Some(EnvFileTarget {
                path: PathBuf::from(path),
                var,
            })
        }
        (Some(_), None) => {
            p.add(s.key("env_var"), "missing (env_file is set)");
            None
        }
        (None, Some(_)) => {
            p.add(s.key("env_file"), "missing (env_var is set)");
            None
        }
        (None, None) => None,
    }
}

/// `compose_files`, `compose_working_dir` and `compose_env_file`: absolute paths, for a
/// project whose containers' labels do not say where its files are (or say it wrongly).
fn read_compose_overrides(s: &mut Section<'_>, p: &mut Problems) -> ComposeOverrides {
    let files = s.opt_str_list(p, "compose_files");
    let working_dir = s.opt_str(p, "compose_working_dir");
    let env_file = s.opt_str(p, "compose_env_file");
    let mut absolute = |key: &str, path: String| {
        if !Path::new(&path).is_absolute() {
            p.add(s.key(key), format!("`{path}` must be an absolute path"));
        }
        PathBuf::from(path)
    };
    let files = files.map(|f| {
        f.into_iter()
            .map(|f| absolute("compose_files", f))
            .collect::<Vec<_>>()
    });
    let working_dir = working_dir.map(|d| absolute("compose_working_dir", d));
    let env_file = env_file.map(|f| absolute("compose_env_file", f));
    if files.as_ref().is_some_and(Vec::is_empty) {
        p.add(s.key("compose_files"), "must name at least one file");
    }
    ComposeOverrides {
        files,
        working_dir,
        env_file,
    }
}
