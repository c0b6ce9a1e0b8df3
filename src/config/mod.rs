//! Configuration: the TOML file read into typed, validated values.
//!
//! The file is parsed into a generic TOML tree and walked by hand rather than deserialized
//! with serde, so that every problem (unknown key, wrong type, bad duration, duplicate
//! service, unreadable secret...) is collected and reported at once, each with its key path.
//! Secrets are read here, once, and wrapped in [`Secret`] so they never print; commands that
//! use none read the config with [`Secrets::Skip`], so that they work where the secret files
//! cannot be read (on a server before the unit runs: systemd's credentials exist only then).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::image::{self, Repository};
use crate::secret::{Origin, Secret, SecretSource};

pub const DEFAULT_PATH: &str = "/etc/hoist/hoist.toml";

/// Whether reading the config also reads the secrets it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read each secret; one that cannot be read is a problem with its key path.
    Load,
    /// Leave them unread: every secret field is `None`, and only
    /// [`Config::secret_sources`] says what is configured. For commands that use no secret.
    Skip,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub state: StateConfig,
    pub docker: DockerConfig,
    pub traefik: TraefikConfig,
    pub server: ServerConfig,
    pub github: GithubConfig,
    /// Per-environment settings (`[environments.prod]`), by environment name.
    pub environments: std::collections::BTreeMap<String, EnvironmentConfig>,
    pub registries: Vec<RegistryConfig>,
    pub services: Vec<ServiceConfig>,
    /// Every secret the config names, read or not ([`Secrets`]).
    pub secret_sources: Vec<SecretSource>,
}

#[derive(Debug, Clone, Default)]
pub struct EnvironmentConfig {
    /// Slack-compatible incoming webhook told about rollouts of this environment.
    pub notify_url: Option<String>,
}

/// `hoist serve`: the HTTP listener and the deploy queue.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// How long a running rollout may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Rollouts of different services that may run at once.
    pub max_parallel: usize,
    /// Bearer token for the admin routes (deploy, rollback, promote); without it they are
    /// off.
    pub admin_token: Option<Secret>,
    /// Bearer token for the read routes (/status, /api/deploys, /metrics); without it they
    /// are public.
    pub status_token: Option<Secret>,
    /// Where operators reach hoist (`https://hoist.example.com`), for links to the status
    /// page (GitHub deployment log_url, notifications).
    pub public_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// Verifies `X-Hub-Signature-256`; without it the webhook endpoint is off.
    pub webhook_secret: Option<Secret>,
    /// A token allowed to create deployments; without it hoist reports no deployments.
    pub token: Option<Secret>,
    /// The REST API (`https://api.github.com`, or a GitHub Enterprise server's).
    pub api_url: String,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// SQLite database, lock files and the drain directory mounted into containers.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// `unix://...` or `tcp://...`; `None` means `DOCKER_HOST`, then the standard socket.
    pub host: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TraefikConfig {
    pub network: String,
    pub entrypoints: Vec<String>,
    pub cert_resolver: Option<String>,
    /// Traefik's `providersThrottleDuration`: how long a change can take to be applied.
    pub throttle: Duration,
    /// Traefik's API, to confirm routing changes instead of waiting `throttle`.
    pub api_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub host: String,
    pub credentials: Option<Credentials>,
    /// Speak plain HTTP to this registry (loopback registries always do).
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub environment: String,
    pub compose_project: String,
    pub compose_service: String,
    pub image: Repository,
    pub track: Track,
    pub host: String,
    pub port: u16,
    pub health_path: Option<String>,
    pub health_timeout: Duration,
    pub drain: Duration,
    pub stop_timeout: Duration,
    pub env_file: Option<EnvFileTarget>,
    /// `owner/name` of the GitHub repository whose webhooks concern this service.
    pub github_repository: Option<String>,
    /// Poll the registry this often (with jitter); `None`: webhooks and manual only.
    pub poll_interval: Option<Duration>,
    /// After a push or workflow_run, how long to keep re-checking the registry for the
    /// image CI is still building.
    pub watch_window: Duration,
    /// Deploy only digests this other service has run healthily (`hoist promote`).
    pub promote_from: Option<String>,
    /// ... for at least this long, then automatically; `None`: only `hoist promote`.
    pub promote_after: Option<Duration>,
}

/// Where hoist records the deployed image for `docker compose` to pick up.
#[derive(Debug, Clone)]
pub struct EnvFileTarget {
    pub path: PathBuf,
    pub var: String,
}

/// What a service follows in its registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Track {
    /// A tag that moves (`main`, `latest`, `stable`).
    Tag(String),
    /// The newest tag whose version satisfies the requirement (`semver:^1.4`).
    Semver(semver::VersionReq),
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Track::Tag(t) => f.write_str(t),
            Track::Semver(req) => write!(f, "semver:{req}"),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, secrets)
    }

    /// Validates `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut problems = Problems::default();
        let mut reader = SecretReader {
            mode: secrets,
            sources: Vec::new(),
        };
        let config = read_config(&table, &mut problems, &mut reader);
        match (config, problems.0.is_empty()) {
            (Some(config), true) => Ok(config),
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: problems.0,
                secret_sources: reader.sources,
            }),
        }
    }

    pub fn service(&self, name: &str) -> Result<&ServiceConfig, UnknownService> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| UnknownService {
                name: name.to_string(),
                known: self.services.iter().map(|s| s.name.clone()).collect(),
            })
    }

    /// The configured registry entry for a repository's registry host, if any.
    pub fn registry_for(&self, repo: &Repository) -> Option<&RegistryConfig> {
        self.registries
            .iter()
            .find(|r| r.host == repo.registry() || r.host == repo.api_host())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no service named `{name}` in the config (known: {})", known.join(", "))]
pub struct UnknownService {
    pub name: String,
    pub known: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {} has {} problem(s):\n{}", path.display(), problems.len(),
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
        /// The secrets the config names, as far as it could be read: `check-config` checks
        /// them beside the problems.
        secret_sources: Vec<SecretSource>,
    },
}

/// One thing wrong with the config, at a key path such as `services[1].port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// A TOML table being read: remembers which keys were consumed so that the rest can be
/// reported as unknown, and prefixes every problem with the table's key path.
struct Section<'a> {
    path: String,
    table: &'a Table,
    seen: HashSet<&'a str>,
}

impl<'a> Section<'a> {
    fn new(path: impl Into<String>, table: &'a Table) -> Self {
        Section {
            path: path.into(),
            table,
            seen: HashSet::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        self.seen.insert(key);
        self.table.get(key)
    }

    fn opt_str(&mut self, p: &mut Problems, key: &'a str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                p.add(
                    self.key(key),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn str(&mut self, p: &mut Problems, key: &'a str) -> Option<String> {
        let present = self.table.contains_key(key);
        let value = self.opt_str(p, key);
        if !present {
            p.add(self.key(key), "missing (required)");
        }
        value
    }

    /// Where a secret is, given as a file (`file_key`) or an environment variable
    /// (`env_key`); [`SecretReader::read`] reads it. `Err(())` means a problem was recorded;
    /// `Ok(None)` that neither key is set.
    fn secret(
        &mut self,
        p: &mut Problems,
        file_key: &'a str,
        env_key: &'a str,
    ) -> Result<Option<SecretSource>, ()> {
        let file = self.opt_str(p, file_key);
        let var = self.opt_str(p, env_key);
        match (file, var) {
            (Some(_), Some(_)) => {
                p.add(
                    self.key(file_key),
                    format!("set either {file_key} or {env_key}, not both"),
                );
                Err(())
            }
            (Some(file), None) => Ok(Some(SecretSource {
                key: self.key(file_key),
                origin: Origin::File(PathBuf::from(file)),
            })),
            (None, Some(var)) => Ok(Some(SecretSource {
                key: self.key(env_key),
                origin: Origin::Env(var),
            })),
            (None, None) => Ok(None),
        }
    }

    fn opt_bool(&mut self, p: &mut Problems, key: &'a str) -> Option<bool> {
        match self.get(key)? {
            Value::Boolean(b) => Some(*b),
            other => {
                p.add(
                    self.key(key),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn opt_int(&mut self, p: &mut Problems, key: &'a str) -> Option<i64> {
        match self.get(key)? {
            Value::Integer(i) => Some(*i),
            other => {
                p.add(
                    self.key(key),
                    format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A duration such as `"2s"`, `"500ms"`, `"1m30s"`, defaulting when absent. Returns `None`
    /// only after recording a problem.
    fn duration(&mut self, p: &mut Problems, key: &'a str, default: Duration) -> Option<Duration> {
        let Some(text) = self.opt_str(p, key) else {
            return (!self.table.contains_key(key)).then_some(default);
        };
        match humantime::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                p.add(
                    self.key(key),
                    format!(
                        "`{text}` is not a duration ({e}); write e.g. \"30s\", \"500ms\", \"2m\""
                    ),
                );
                None
            }
        }
    }

    fn opt_str_list(&mut self, p: &mut Problems, key: &'a str) -> Option<Vec<String>> {
        match self.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => p.add(
                            format!("{}[{i}]", self.key(key)),
                            format!("expected a string, found {}", other.type_str()),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                p.add(
                    self.key(key),
                    format!("expected a list of strings, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn opt_table(&mut self, p: &mut Problems, key: &'a str) -> Option<&'a Table> {
        match self.get(key)? {
            Value::Table(t) => Some(t),
            other => {
                p.add(
                    self.key(key),
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn opt_table_list(&mut self, p: &mut Problems, key: &'a str) -> Vec<(String, &'a Table)> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            p.add(
                self.key(key),
                format!(
                    "expected a list of tables ([[{key}]]), found {}",
                    value.type_str()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.key(key));
            match item {
                Value::Table(t) => out.push((path, t)),
                other => p.add(
                    path,
                    format!("expected a table, found {}", other.type_str()),
                ),
            }
        }
        out
    }

    /// Reports every key that no reader asked for.
    fn finish(self, p: &mut Problems) {
        for key in self.table.keys() {
            if !self.seen.contains(key.as_str()) {
                p.add(self.key(key), "unknown key");
            }
        }
    }
}

/// Reads secrets as the config names them ([`Secrets::Load`]) or only lists them.
struct SecretReader {
    mode: Secrets,
    sources: Vec<SecretSource>,
}

impl SecretReader {
    /// The secret, or `None` when skipped or unreadable (a problem then names it).
    fn read(&mut self, p: &mut Problems, source: SecretSource) -> Option<Secret> {
        let secret = match self.mode {
            Secrets::Skip => None,
            Secrets::Load => match source.read() {
                Ok(secret) => Some(secret),
                Err(e) => {
                    p.add(source.key.clone(), e.to_string());
                    None
                }
            },
        };
        self.sources.push(source);
        secret
    }

    /// A secret given by `file_key` or `env_key` of `section`, if either is set.
    fn optional(
        &mut self,
        p: &mut Problems,
        section: &mut Section<'_>,
        file_key: &'static str,
        env_key: &'static str,
    ) -> Option<Secret> {
        let source = section.secret(p, file_key, env_key).ok().flatten()?;
        self.read(p, source)
    }
}

fn read_config(root: &Table, p: &mut Problems, secrets: &mut SecretReader) -> Option<Config> {
    let mut top = Section::new("", root);
    let empty = Table::new();

    let state_table = top.opt_table(p, "state").unwrap_or(&empty);
    let mut s = Section::new("state", state_table);
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

    let docker_table = top.opt_table(p, "docker").unwrap_or(&empty);
    let mut d = Section::new("docker", docker_table);
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

    let traefik = read_traefik(top.opt_table(p, "traefik").unwrap_or(&empty), p);
    let server = read_server(top.opt_table(p, "server").unwrap_or(&empty), p, secrets);
    let mut g = Section::new("github", top.opt_table(p, "github").unwrap_or(&empty));
    let webhook_secret = secrets.optional(p, &mut g, "webhook_secret_file", "webhook_secret_env");
    let github_token = secrets.optional(p, &mut g, "token_file", "token_env");
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
    g.finish(p);
    let environments = read_environments(top.opt_table(p, "environments").unwrap_or(&empty), p);

    let mut registries = Vec::new();
    for (path, table) in top.opt_table_list(p, "registries") {
        if let Some(r) = read_registry(Section::new(path, table), p, secrets) {
            registries.push(r);
        }
    }
    let mut hosts = HashSet::new();
    for (i, r) in registries.iter().enumerate() {
        if !hosts.insert(r.host.clone()) {
            p.add(
                format!("registries[{i}].host"),
                format!("`{}` is configured twice", r.host),
            );
        }
    }

    let service_tables = top.opt_table_list(p, "services");
    if service_tables.is_empty() && !root.contains_key("services") {
        p.add(
            "services",
            "no [[services]] configured; hoist has nothing to deploy",
        );
    }
    // Names are checked on the raw tables so that a duplicate is reported even when one of
    // the two services has other problems.
    let mut names = HashSet::new();
    for (path, table) in &service_tables {
        if let Some(Value::String(name)) = table.get("name")
            && !names.insert(name.clone())
        {
            p.add(
                format!("{path}.name"),
                format!("`{name}` is used by another service"),
            );
        }
    }
    let mut services = Vec::new();
    for (path, table) in service_tables {
        if let Some(s) = read_service(Section::new(path, table), p) {
            services.push(s);
        }
    }
    check_service_uniqueness(&services, p);
    check_promotions(&services, p);
    for name in environments.keys() {
        if !services.iter().any(|s| &s.environment == name) {
            p.add(
                format!("environments.{name}"),
                format!("no service has environment `{name}`"),
            );
        }
    }
    top.finish(p);

    Some(Config {
        state: StateConfig {
            dir: PathBuf::from(state_dir),
        },
        docker: DockerConfig { host: docker_host },
        traefik: traefik?,
        server: server?,
        github: GithubConfig {
            webhook_secret,
            token: github_token,
            api_url,
        },
        environments,
        registries,
        services,
        secret_sources: secrets.sources.clone(),
    })
}

fn read_traefik(table: &Table, p: &mut Problems) -> Option<TraefikConfig> {
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

fn read_server(
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
        admin_token,
        status_token,
        public_url,
    })
}

fn read_environments(
    table: &Table,
    p: &mut Problems,
) -> std::collections::BTreeMap<String, EnvironmentConfig> {
    let mut out = std::collections::BTreeMap::new();
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

fn is_http_url(u: &str) -> bool {
    reqwest::Url::parse(u).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
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

fn read_service(mut s: Section<'_>, p: &mut Problems) -> Option<ServiceConfig> {
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
    let drain = s.duration(p, "drain", Duration::from_secs(10));
    let stop_timeout = s.duration(p, "stop_timeout", Duration::from_secs(30));
    if health_timeout.is_some_and(|d| d < Duration::from_secs(1)) {
        p.add(s.key("health_timeout"), "must be at least 1s");
    }
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
    let env_file = s.opt_str(p, "env_file");
    let env_var = s.opt_str(p, "env_var");
    let env_target = match (env_file, env_var) {
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
    };
    s.finish(p);
    Some(ServiceConfig {
        name: name?,
        environment: environment?,
        compose_project: compose_project?,
        compose_service: compose_service?,
        image: image?,
        track: track?,
        host: host?,
        port: port?,
        health_path,
        health_timeout: health_timeout?,
        drain: drain?,
        stop_timeout: stop_timeout?,
        env_file: env_target,
        github_repository,
        poll_interval: poll_interval?,
        watch_window: watch_window?,
        promote_from,
        promote_after: promote_after?,
    })
}

/// `promote_from` must name another service, and promotions must not form a cycle.
fn check_promotions(services: &[ServiceConfig], p: &mut Problems) {
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

fn check_service_uniqueness(services: &[ServiceConfig], p: &mut Problems) {
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
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_docker_name(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_hostname(s: &str) -> bool {
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

fn is_env_var(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[state]
dir = "/tmp/hoist-test"

[traefik]
network = "web"
entrypoints = ["websecure"]
cert_resolver = "letsencrypt"
throttle = "2s"

[[services]]
name = "web-stage"
environment = "stage"
compose_project = "shop"
compose_service = "web-stage"
image = "ghcr.io/acme/web"
track = "main"
host = "stage.example.com"
port = 8000
health_path = "/healthz"
health_timeout = "60s"
drain = "10s"
stop_timeout = "30s"
env_file = "/srv/shop/.env"
env_var = "WEB_STAGE_IMAGE"

[[services]]
name = "web-prod"
environment = "prod"
compose_project = "shop"
image = "ghcr.io/acme/web"
track = "semver:^1.4"
host = "example.com"
port = 8000
"#;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("test.toml"), Secrets::Load) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_complete_config() {
        let c = Config::parse(GOOD, Path::new("test.toml"), Secrets::Load).unwrap();
        assert_eq!(c.services.len(), 2);
        let prod = c.service("web-prod").unwrap();
        assert_eq!(prod.compose_service, "web-prod", "defaults to the name");
        assert_eq!(prod.drain, Duration::from_secs(10));
        assert!(matches!(prod.track, Track::Semver(_)));
        assert_eq!(c.traefik.throttle, Duration::from_secs(2));
        assert!(
            c.service("nope")
                .unwrap_err()
                .to_string()
                .contains("web-stage, web-prod")
        );
    }

    #[test]
    fn reports_every_problem_at_once_with_its_key_path() {
        let text = GOOD
            .replace("port = 8000\nhealth_path", "port = 0\nhealth_path")
            .replace("drain = \"10s\"", "drain = \"ten seconds\"")
            .replace("name = \"web-prod\"", "name = \"web-stage\"")
            .replace("[traefik]", "[traefik]\ncolour = \"blue\"")
            .replace(
                "image = \"ghcr.io/acme/web\"\ntrack = \"main\"",
                "image = \"ghcr.io/acme/web:v1\"\ntrack = \"main\"",
            );
        let got = problems(&text);
        let expect = [
            "traefik.colour: unknown key",
            "services[0].image: `ghcr.io/acme/web:v1` names a tag or digest",
            "services[0].port: 0 is not a valid port",
            "services[0].drain: `ten seconds` is not a duration",
            "services[1].name: `web-stage` is used by another service",
        ];
        for e in expect {
            assert!(
                got.iter().any(|g| g.starts_with(e)),
                "missing {e:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), expect.len(), "{got:#?}");
    }

    #[test]
    fn unreadable_secret_files_are_named_and_secrets_never_printed() {
        let text = format!(
            "{GOOD}\n[[registries]]\nhost = \"ghcr.io\"\nusername = \"bot\"\npassword_file = \"/nonexistent/ghcr\"\n"
        );
        let got = problems(&text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("registries[0].password_file: cannot read `/nonexistent/ghcr`"));

        let dir = std::env::temp_dir().join(format!("hoist-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cr3t-value\n").unwrap();
        let text = text.replace("/nonexistent/ghcr", &file.display().to_string());
        let c = Config::parse(&text, Path::new("t.toml"), Secrets::Load).unwrap();
        let creds = c.registries[0].credentials.as_ref().unwrap();
        assert_eq!(creds.password.expose(), "s3cr3t-value");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn skipping_secrets_reads_none_but_lists_every_one_and_checks_their_keys() {
        let run = "/run/credentials/hoist.service";
        let text = GOOD.replace(
            "[traefik]",
            &format!(
                "[server]\nadmin_token_file = \"{run}/admin-token\"\nstatus_token_env = \"HOIST_TEST_NO_SUCH_VAR\"\n\
                 [github]\nwebhook_secret_file = \"{run}/webhook-secret\"\ntoken_file = \"{run}/github-token\"\n\
                 [[registries]]\nhost = \"ghcr.io\"\nusername = \"bot\"\npassword_file = \"{run}/ghcr\"\n[traefik]"
            ),
        );
        assert_eq!(problems(&text).len(), 5, "all unreadable when loaded");

        let c = Config::parse(&text, Path::new("t.toml"), Secrets::Skip).unwrap();
        assert!(c.server.admin_token.is_none() && c.server.status_token.is_none());
        assert!(c.github.webhook_secret.is_none() && c.github.token.is_none());
        assert!(c.registries[0].credentials.is_none());
        let listed: Vec<(&str, &Origin)> = c
            .secret_sources
            .iter()
            .map(|s| (s.key.as_str(), &s.origin))
            .collect();
        let file = |name: &str| Origin::File(PathBuf::from(format!("{run}/{name}")));
        assert_eq!(
            listed,
            [
                ("server.admin_token_file", &file("admin-token")),
                (
                    "server.status_token_env",
                    &Origin::Env("HOIST_TEST_NO_SUCH_VAR".into())
                ),
                ("github.webhook_secret_file", &file("webhook-secret")),
                ("github.token_file", &file("github-token")),
                ("registries[0].password_file", &file("ghcr")),
            ]
        );

        // What is wrong with the keys themselves is still wrong without reading them.
        let both = text.replace("[github]", "[github]\nwebhook_secret_env = \"X\"");
        let no_user = text.replace("username = \"bot\"\n", "");
        for (text, expect) in [
            (
                both,
                "github.webhook_secret_file: set either webhook_secret_file or webhook_secret_env, not both",
            ),
            (
                no_user,
                "registries[0].username: missing (a password was given)",
            ),
        ] {
            match Config::parse(&text, Path::new("t.toml"), Secrets::Skip) {
                Err(ConfigError::Invalid { problems, .. }) => {
                    let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    assert_eq!(got, [expect]);
                }
                other => panic!("expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_and_mistyped_keys() {
        let got = problems("[[services]]\nname = 5\nport = \"80\"\n[traefik]\nthrottle = 3\n");
        for e in [
            "traefik.throttle: expected a string, found integer",
            "services[0].name: expected a string, found integer",
            "services[0].port: expected an integer, found string",
            "services[0].environment: missing (required)",
            "services[0].image: missing (required)",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(e)),
                "missing {e:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err =
            Config::parse("[state\n", Path::new("/etc/hoist/x.toml"), Secrets::Load).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config file /etc/hoist/x.toml is not valid TOML")
        );
    }

    #[test]
    fn daemon_keys_and_promotion_rules() {
        let c = Config::parse(GOOD, Path::new("t.toml"), Secrets::Load).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9480");
        assert_eq!(c.server.max_parallel, 2);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(60));
        assert!(c.github.webhook_secret.is_none());
        assert_eq!(c.services[0].watch_window, Duration::from_secs(900));
        assert_eq!(c.services[0].poll_interval, None);

        let text = GOOD
            .replace("[traefik]", "[server]\nlisten = \"0.0.0.0:http\"\nmax_parallel = 0\n[github]\nwebhook_secret_env = \"HOIST_TEST_NO_SUCH_VAR\"\n[traefik]")
            .replace("port = 8000\nhealth_path", "port = 8000\npoll_interval = \"100ms\"\npromote_after = \"1h\"\ngithub_repository = \"acme\"\nhealth_path")
            .replace("track = \"semver:^1.4\"", "track = \"semver:^1.4\"\npromote_from = \"web-prod\"");
        let got = problems(&text);
        for e in [
            "server.listen: `0.0.0.0:http` is not an address",
            "server.max_parallel: 0 is out of range",
            "github.webhook_secret_env: environment variable `HOIST_TEST_NO_SUCH_VAR` is not set",
            "services[0].poll_interval: must be at least 1s",
            "services[0].promote_after: needs promote_from",
            "services[0].github_repository: `acme` must be owner/name",
            "services[1].promote_from: a service cannot promote from itself",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(e)),
                "missing {e:?} in {got:#?}"
            );
        }
        let cycle = GOOD
            .replace(
                "track = \"main\"",
                "track = \"main\"\npromote_from = \"web-prod\"",
            )
            .replace(
                "track = \"semver:^1.4\"",
                "track = \"semver:^1.4\"\npromote_from = \"web-stage\"",
            );
        assert!(
            problems(&cycle)
                .iter()
                .any(|g| g.contains("promotions form a cycle"))
        );
    }

    #[test]
    fn tracks() {
        assert_eq!(parse_track("main"), Ok(Track::Tag("main".into())));
        assert!(matches!(parse_track("semver:^1.4"), Ok(Track::Semver(_))));
        assert!(
            parse_track("semver:banana")
                .unwrap_err()
                .contains("not a semver requirement")
        );
        assert!(parse_track("a b").is_err());
    }
}
