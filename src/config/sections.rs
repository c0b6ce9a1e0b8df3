//! The readers of the config's sections other than `[[services]]`: `[state]`, `[docker]`,
//! `[traefik]`, `[compose]`, `[server]`, `[github]`, `[environments.*]` and `[[registries]]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::checks::{check_registry_hosts, is_docker_name, is_http_url, is_label_name};
use super::walker::{Problems, SecretReader, Section};
use super::{
    ComposeConfig, Credentials, DockerConfig, EnvironmentConfig, GithubConfig, RegistryConfig,
    ServerConfig, StateConfig, TraefikConfig,
};

pub(super) fn read_state(table: &Table, p: &mut Problems) -> StateConfig {
    let mut s = Section::new("state", table);
    let state_dir = s
        .opt_str(p, "dir")
        .unwrap_or_else(|| "/var/lib/hoist".into());
    if state_dir.is_empty() || !Path::new(&state_dir).is_absolute() {
        p.add(
            "state.dir",
            format!("`{state_dir}` must be an absolute path"),
        );
    }
    s.finish(p);
    StateConfig {
        dir: PathBuf::from(state_dir),
    }
}

pub(super) fn read_compose(table: &Table, p: &mut Problems) -> ComposeConfig {
    let mut c = Section::new("compose", table);
    let command = c.opt_str_list(p, "command");
    if command
        .as_ref()
        .is_some_and(|c| c.first().is_none_or(|program| program.trim().is_empty()))
    {
        p.add(
            "compose.command",
            "must name the program first, e.g. [\"docker\", \"compose\"] or [\"/usr/local/bin/docker-compose\"]",
        );
    }
    c.finish(p);
    ComposeConfig { command }
}

pub(super) fn read_docker(table: &Table, p: &mut Problems) -> DockerConfig {
    let mut d = Section::new("docker", table);
    let docker_host = d.opt_str(p, "host");
    if let Some(h) = &docker_host
        && !["unix://", "tcp://", "http://", "https://"]
            .iter()
            .any(|scheme| h.starts_with(scheme))
    {
        p.add(
            "docker.host",
            format!("`{h}` must start with unix://, tcp://, http:// or https://"),
        );
    }
    d.finish(p);
    DockerConfig { host: docker_host }
}

/// How often the sweep lists each hook's recent deliveries: one or two API requests a
/// hook, far below GitHub's 5000 an hour.
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(300);
const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

pub(super) fn read_github(
    table: &Table,
    p: &mut Problems,
    secrets: &mut SecretReader,
) -> GithubConfig {
    let mut g = Section::new("github", table);
    let webhook_secret = secrets.optional(p, &mut g, "webhook_secret_file", "webhook_secret_env");
    let token = secrets.optional(p, &mut g, "token_file", "token_env");
    let api_url = g
        .opt_str(p, "api_url")
        .unwrap_or_else(|| "https://api.github.com".into())
        .trim_end_matches('/')
        .to_string();
    if !is_http_url(&api_url) {
        p.add(
            "github.api_url",
            format!("`{api_url}` is not an http(s) URL"),
        );
    }
    let sweep_interval = g
        .duration(p, "sweep_interval", DEFAULT_SWEEP_INTERVAL)
        .unwrap_or(DEFAULT_SWEEP_INTERVAL);
    if sweep_interval < MIN_SWEEP_INTERVAL && !sweep_interval.is_zero() {
        p.add(
            "github.sweep_interval",
            format!(
                "`{}` is shorter than {} (GitHub allows 5000 API requests an hour); write \"0s\" to turn the sweep off",
                humantime::format_duration(sweep_interval),
                humantime::format_duration(MIN_SWEEP_INTERVAL)
            ),
        );
    }
    let mut hook_ids = BTreeMap::new();
    if let Some(table) = g.opt_table(p, "hook_ids") {
        for (repository, id) in table {
            let key = format!("github.hook_ids.\"{repository}\"");
            if repository
                .split('/')
                .filter(|part| !part.is_empty())
                .count()
                != 2
            {
                p.add(
                    &key,
                    format!("`{repository}` is not an owner/name repository"),
                );
            }
            match id.as_integer().and_then(|id| u64::try_from(id).ok()) {
                Some(id) if id > 0 => {
                    hook_ids.insert(repository.clone(), id);
                }
                _ => p.add(&key, "must be the webhook's id, a positive integer (Settings > Webhooks, or X-GitHub-Hook-ID)"),
            }
        }
    }
    g.finish(p);
    GithubConfig {
        webhook_secret,
        token,
        api_url,
        sweep_interval,
        hook_ids,
    }
}

pub(super) fn read_traefik(table: &Table, p: &mut Problems) -> Option<TraefikConfig> {
    let mut t = Section::new("traefik", table);
    let network = t.opt_str(p, "network").unwrap_or_else(|| "web".into());
    if !is_docker_name(&network) {
        p.add(
            "traefik.network",
            format!("`{network}` is not a valid Docker network name"),
        );
    }
    let entrypoints = t
        .opt_str_list(p, "entrypoints")
        .unwrap_or_else(|| vec!["websecure".into()]);
    if entrypoints.is_empty() {
        p.add("traefik.entrypoints", "must name at least one entrypoint");
    }
    for (i, e) in entrypoints.iter().enumerate() {
        if !is_label_name(e) {
            p.add(
                format!("traefik.entrypoints[{i}]"),
                format!("`{e}` is not a valid entrypoint name (letters, digits, - and _)"),
            );
        }
    }
    let cert_resolver = t.opt_str(p, "cert_resolver");
    if let Some(c) = &cert_resolver
        && !is_label_name(c)
    {
        p.add(
            "traefik.cert_resolver",
            format!("`{c}` is not a valid resolver name (letters, digits, - and _)"),
        );
    }
    let throttle = t.duration(p, "throttle", Duration::from_secs(2));
    let api_url = t
        .opt_str(p, "api_url")
        .map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &api_url
        && !is_http_url(u)
    {
        p.add("traefik.api_url", format!("`{u}` is not an http(s) URL"));
    }
    t.finish(p);
    Some(TraefikConfig {
        network,
        entrypoints,
        cert_resolver,
        throttle: throttle?,
        api_url,
    })
}

pub(super) fn read_server(
    table: &Table,
    p: &mut Problems,
    secrets: &mut SecretReader,
) -> Option<ServerConfig> {
    let mut s = Section::new("server", table);
    let listen = s
        .opt_str(p, "listen")
        .unwrap_or_else(|| "127.0.0.1:9480".into());
    let listen = match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.add(
                "server.listen",
                format!("`{listen}` is not an address like 127.0.0.1:9480"),
            );
            None
        }
    };
    let shutdown_grace = s.duration(p, "shutdown_grace", Duration::from_secs(60));
    let max_parallel = match s.opt_int(p, "max_parallel") {
        None => Some(2),
        Some(n) if (1..=64).contains(&n) => usize::try_from(n).ok(),
        Some(n) => {
            p.add("server.max_parallel", format!("{n} is out of range (1-64)"));
            None
        }
    };
    let connections = read_connection_limits(&mut s, p);
    let admin_token = secrets.optional(p, &mut s, "admin_token_file", "admin_token_env");
    let status_token = secrets.optional(p, &mut s, "status_token_file", "status_token_env");
    let public_url = s
        .opt_str(p, "public_url")
        .map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &public_url
        && !is_http_url(u)
    {
        p.add("server.public_url", format!("`{u}` is not an http(s) URL"));
    }
    s.finish(p);
    Some(ServerConfig {
        listen: listen?,
        shutdown_grace: shutdown_grace?,
        max_parallel: max_parallel?,
        max_connections: connections.0?,
        header_timeout: connections.1?,
        idle_timeout: connections.2?,
        admin_token,
        status_token,
        public_url,
    })
}

/// `max_connections`, `header_timeout` and `idle_timeout` of `[server]`; each `None` only
/// after recording a problem.
fn read_connection_limits(
    s: &mut Section<'_>,
    p: &mut Problems,
) -> (Option<usize>, Option<Duration>, Option<Duration>) {
    let max_connections = match s.opt_int(p, "max_connections") {
        None => Some(512),
        Some(n) if (16..=65_536).contains(&n) => usize::try_from(n).ok(),
        Some(n) => {
            p.add(
                "server.max_connections",
                format!("{n} is out of range (16-65536)"),
            );
            None
        }
    };
    let header_timeout = s.duration(p, "header_timeout", Duration::from_secs(10));
    let idle_timeout = s.duration(p, "idle_timeout", Duration::from_secs(5));
    let within = |key: &str, d: Option<Duration>, p: &mut Problems| match d {
        Some(d) if d < Duration::from_millis(100) || d > Duration::from_secs(600) => {
            p.add(
                format!("server.{key}"),
                format!(
                    "{} is out of range (100ms-10m)",
                    humantime::format_duration(d)
                ),
            );
            None
        }
        d => d,
    };
    let header_timeout = within("header_timeout", header_timeout, p);
    let idle_timeout = within("idle_timeout", idle_timeout, p);
    if let (Some(h), Some(i)) = (header_timeout, idle_timeout)
        && i > h
    {
        // The header timer also runs while a connection waits for its next request, so a
        // longer idle timeout would never be reached.
        p.add(
            "server.idle_timeout",
            format!(
                "{} is longer than server.header_timeout ({}), which already closes a connection waiting that long",
                humantime::format_duration(i),
                humantime::format_duration(h)
            ),
        );
        return (max_connections, header_timeout, None);
    }
    (max_connections, header_timeout, idle_timeout)
}

pub(super) fn read_environments(
    table: &Table,
    p: &mut Problems,
) -> BTreeMap<String, EnvironmentConfig> {
    let mut out = BTreeMap::new();
    for (name, value) in table {
        let key = format!("environments.{name}");
        let Value::Table(t) = value else {
            p.add(key, format!("expected a table, found {}", value.type_str()));
            continue;
        };
        let mut e = Section::new(key.clone(), t);
        let notify_url = e.opt_str(p, "notify_url");
        if let Some(u) = &notify_url
            && !is_http_url(u)
        {
            p.add(
                format!("{key}.notify_url"),
                format!("`{u}` is not an http(s) URL"),
            );
        }
        e.finish(p);
        out.insert(name.clone(), EnvironmentConfig { notify_url });
    }
    out
}

/// Every `[[registries]]` entry that could be read, each host at most once.
pub(super) fn read_registries(
    top: &mut Section<'_>,
    p: &mut Problems,
    secrets: &mut SecretReader,
) -> Vec<RegistryConfig> {
    let mut registries = Vec::new();
    for (path, table) in top.opt_table_list(p, "registries") {
        if let Some(r) = read_registry(Section::new(path, table), p, secrets) {
            registries.push(r);
        }
    }
    check_registry_hosts(&registries, p);
    registries
}

fn read_registry(
    mut r: Section<'_>,
    p: &mut Problems,
    secrets: &mut SecretReader,
) -> Option<RegistryConfig> {
    let host = r.str(p, "host");
    let username = r.opt_str(p, "username");
    let insecure = r.opt_bool(p, "insecure").unwrap_or(false);
    let password = r.secret(p, "password_file", "password_env");
    let credentials = match (username, password) {
        (Some(username), Ok(Some(source))) => secrets
            .read(p, source)
            .map(|password| Credentials { username, password }),
        (Some(_), Ok(None)) => {
            p.add(
                r.key("username"),
                "a username needs password_file or password_env",
            );
            None
        }
        (None, Ok(Some(_))) => {
            p.add(r.key("username"), "missing (a password was given)");
            None
        }
        _ => None,
    };
    r.finish(p);
    Some(RegistryConfig {
        host: host?,
        credentials,
        insecure,
    })
}
