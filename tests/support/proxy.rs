//! Stand-in for Traefik and its Docker provider (Traefik cannot be had on this machine): routes
//! by `Host` to the containers of one compose project, following Traefik's provider, merge,
//! throttle, load-balancing and retry rules (facts.md section 1), plus a slice of its API.
//!
//! Where the rules come from (traefik/traefik):
//! - `pkg/provider/docker/pdocker.go`: list + inspect at start, then re-list only on the event
//!   actions `start`, `die` and `health_status*`.
//! - `pkg/provider/docker/config.go`, `shared.go`: `traefik.enable`, the health filter, the
//!   default service/router names, IP and port selection.
//! - `pkg/provider/configuration.go` (`Merge`) and `dynamic.ServersLoadBalancer.Mergeable`:
//!   same-named routers and middlewares must be deeply equal; services must be equal except
//!   for their server lists, which are concatenated. Anything else drops the name entirely.
//! - `pkg/provider/aggregator`: every snapshot goes through a one-slot ring; after forwarding
//!   one, the provider sleeps `providersThrottleDuration`; unchanged ones are then skipped.
//! - `pkg/middlewares/retry/retry.go`: a retry happens only while the request has not been
//!   written to a backend connection, i.e. when no connection could be had at all. Go's HTTP
//!   transport adds its own replay of idempotent requests whose reused keep-alive connection
//!   died; `Transport` below reproduces both.
//!
//! Not emulated: TLS (the entrypoint speaks plain HTTP/1.1; `tls*` labels only take part in
//! the merge comparison), matchers other than `Host`, middlewares other than `retry` (they
//! pass requests through unchanged), the retry back-off interval, Traefik's active health
//! checks, `allowEmptyServices`, and events of containers outside the project (real Traefik
//! re-lists on those too, and each re-list costs a throttle period).

use super::error_chain;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
/// Traefik's default `serversTransport` values.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_CONN_TIMEOUT: Duration = Duration::from_secs(90);
const MAX_IDLE_CONNS_PER_HOST: usize = 200;

/// What a test configures; everything else is Traefik's default with `exposedByDefault=false`.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Only containers labelled `com.docker.compose.project=<project>` are seen: this stands in
    /// for Traefik's `constraints` so that tests running in parallel never see each other.
    pub project: String,
    /// The one entrypoint the proxy listens on; routers naming other entrypoints are ignored.
    pub entrypoint: String,
    /// `providers.providersThrottleDuration`.
    pub throttle: Duration,
}

impl ProxyConfig {
    pub fn new(project: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            project: project.into(),
            entrypoint: "websecure".to_owned(),
            throttle: Duration::from_secs(2),
        }
    }
}

/// The Docker provider's dynamic configuration (HTTP part): what one listing produced, or
/// what is applied. Names are without the `@docker` suffix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DynamicConfig {
    pub routers: BTreeMap<String, Router>,
    pub services: BTreeMap<String, Service>,
    pub middlewares: BTreeMap<String, Middleware>,
}

impl DynamicConfig {
    /// Server URLs of a service (`name` or `name@docker`); none when the service is absent.
    pub fn servers(&self, service: &str) -> Vec<String> {
        let name = service.strip_suffix("@docker").unwrap_or(service);
        self.services
            .get(name)
            .map(|s| s.servers.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Router {
    pub rule: String,
    /// Empty means every entrypoint, as in Traefik.
    pub entrypoints: Vec<String>,
    pub service: String,
    pub middlewares: Vec<String>,
    pub priority: Option<i64>,
    /// Every other router attribute (`tls.certresolver`, ...), lowercased key without the
    /// `traefik.http.routers.<name>.` prefix. Only compared, never acted on.
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Service {
    pub servers: Vec<String>,
    /// Load-balancer attributes other than `loadbalancer.server.*`, which Traefik keeps per
    /// server and ignores when deciding whether two definitions merge.
    pub options: BTreeMap<String, String>,
}

impl Service {
    fn pass_host_header(&self) -> bool {
        self.options
            .get("loadbalancer.passhostheader")
            .and_then(|v| parse_bool(v))
            .unwrap_or(true)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Middleware {
    /// Attributes without the `traefik.http.middlewares.<name>.` prefix, e.g. `retry.attempts`.
    pub options: BTreeMap<String, String>,
}

/// The configuration the entrypoint and the API currently serve.
#[derive(Debug)]
pub struct Applied {
    /// 0 before the first configuration; +1 on every change applied.
    pub generation: u64,
    pub at: Instant,
    pub config: DynamicConfig,
    routes: Routes,
}

impl Applied {
    fn new(generation: u64, config: DynamicConfig, entrypoint: &str) -> Applied {
        let routes = Routes::build(&config, entrypoint);
        Applied {
            generation,
            at: Instant::now(),
            config,
            routes,
        }
    }
}

/// A running stand-in. Dropping it stops every task it started.
pub struct Proxy {
    addr: SocketAddr,
    api_addr: SocketAddr,
    applied: watch::Receiver<Arc<Applied>>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds the entrypoint and the API on loopback ports and starts the provider. Returns at
    /// once: wait for a configuration with [`Proxy::wait_for_servers`] or [`Proxy::wait_until`].
    pub async fn start(docker: Docker, cfg: ProxyConfig) -> anyhow::Result<Proxy> {
        let entry = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the entrypoint")?;
        let api = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the API")?;
        let addr = entry.local_addr()?;
        let api_addr = api.local_addr()?;

        let (snapshot_tx, snapshot_rx) = watch::channel(None);
        let (applied_tx, applied_rx) = watch::channel(Arc::new(Applied::new(
            0,
            DynamicConfig::default(),
            &cfg.entrypoint,
        )));
        let cancel = CancellationToken::new();
        let transport = Arc::new(Transport::default());

        let entry_state = Arc::new(EntryState {
            applied: applied_rx.clone(),
            transport,
            port: addr.port(),
        });
        let api_applied = applied_rx.clone();
        let tasks = vec![
            tokio::spawn(provide(docker, cfg.project.clone(), snapshot_tx)),
            tokio::spawn(apply(
                snapshot_rx,
                applied_tx,
                cfg.entrypoint.clone(),
                cfg.throttle,
            )),
            tokio::spawn(serve(entry, cancel.clone(), move |peer, req| {
                entry_state.clone().handle(peer, req)
            })),
            tokio::spawn(serve(api, cancel.clone(), move |_, req| {
                api_response(api_applied.borrow().clone(), req)
            })),
        ];
        tracing::info!(
            entrypoint = %addr,
            api = %api_addr,
            project = %cfg.project,
            throttle = ?cfg.throttle,
            "Traefik stand-in started"
        );
        Ok(Proxy {
            addr,
            api_addr,
            applied: applied_rx,
            cancel,
            tasks,
        })
    }

    /// The entrypoint: send requests here with the router's `Host`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API emulation, e.g. `http://127.0.0.1:40123`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn applied(&self) -> Arc<Applied> {
        self.applied.borrow().clone()
    }

    /// Waits until the applied configuration gives `service` exactly `count` servers (an
    /// absent service counts as none) and returns their URLs.
    pub async fn wait_for_servers(
        &self,
        service: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let what = format!("{count} server(s) in service {service}");
        let applied = self
            .wait_until(&what, timeout, |a| a.config.servers(service).len() == count)
            .await?;
        Ok(applied.config.servers(service))
    }

    /// Waits until `done` holds for the applied configuration.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Applied) -> bool,
    ) -> anyhow::Result<Arc<Applied>> {
        let mut rx = self.applied.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = rx.borrow_and_update().clone();
            if done(&current) {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => anyhow::bail!("proxy stopped while waiting for {what}"),
                Err(_) => anyhow::bail!(
                    "no {what} within {timeout:?}; applied generation {}: {:?}",
                    current.generation,
                    current.config
                ),
            }
        }
    }

    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            // A task aborted or ended on its own: either way it is gone.
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Provider: Docker -> snapshots

/// Traefik's provider loop: (re)connect with a growing back-off, list, then follow events.
async fn provide(docker: Docker, project: String, snapshots: watch::Sender<Option<DynamicConfig>>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        match watch_docker(&docker, &project, &snapshots).await {
            Ok(()) => tracing::warn!(project, "Provider event stream closed"),
            Err(e) => tracing::error!(project, error = %format!("{e:#}"), "Provider error"),
        }
        // Like Traefik's job back-off: a connection that lived a while starts over.
        if started.elapsed() > Duration::from_secs(30) {
            backoff = FIRST_BACKOFF;
        }
        tracing::info!(?backoff, "Provider reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 3 / 2).min(Duration::from_secs(10));
    }
}

async fn watch_docker(
    docker: &Docker,
    project: &str,
    snapshots: &watch::Sender<Option<DynamicConfig>>,
) -> anyhow::Result<()> {
    // Traefik lists and then subscribes, losing events in between; asking the engine to replay
    // events from just before the listing closes that gap without changing what is seen.
    let since = unix_now();
    let config = snapshot(docker, project)
        .await
        .context("Failed to list containers for docker")?;
    snapshots.send_replace(Some(config));

    let label = format!("{PROJECT_LABEL}={project}");
    let filters = HashMap::from([("type", vec!["container"]), ("label", vec![label.as_str()])]);
    let options = EventsOptionsBuilder::default()
        .since(&since)
        .filters(&filters)
        .build();
    let mut events = docker.events(Some(options));
    while let Some(event) = events.next().await {
        let event = event.context("reading Docker events")?;
        let action = event.action.as_deref().unwrap_or_default();
        if action == "start" || action == "die" || action.starts_with("health_status") {
            let container = event
                .actor
                .as_ref()
                .and_then(|a| a.id.as_deref())
                .unwrap_or_default();
            tracing::debug!(action, container, "Provider event received");
            match snapshot(docker, project).await {
                Ok(config) => {
                    snapshots.send_replace(Some(config));
                }
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "Failed to list containers for docker"
                ),
            }
        }
    }
    Ok(())
}

fn unix_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// One listing: running containers of the project, each inspected, turned into a config.
async fn snapshot(docker: &Docker, project: &str) -> anyhow::Result<DynamicConfig> {
    let label = format!("{PROJECT_LABEL}={project}");
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(false)
        .filters(&filters)
        .build();
    let mut containers = Vec::new();
    for summary in docker.list_containers(Some(options)).await? {
        let Some(id) = summary.id else { continue };
        match docker.inspect_container(&id, None).await {
            Ok(inspected) => containers.extend(Container::from_inspect(inspected)),
            // Gone between list and inspect: Traefik skips it the same way.
            Err(e) => tracing::warn!(container = id, error = %e, "Failed to inspect container"),
        }
    }
    Ok(build_config(&containers))
}

/// What the provider needs to know about one container.
#[derive(Clone, Debug, Default)]
struct Container {
    id: String,
    name: String,
    labels: HashMap<String, String>,
    /// Docker's health status; empty without a healthcheck.
    health: String,
    /// Network name -> address (may be empty, as Docker reports it).
    networks: BTreeMap<String, String>,
    /// Exposed ports.
    ports: Vec<u16>,
}

impl Container {
    fn from_inspect(inspected: ContainerInspectResponse) -> Option<Container> {
        let state = inspected.state?;
        if !state.running.unwrap_or(false) {
            return None;
        }
        let health = state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
        let (networks, ports) = match inspected.network_settings {
            Some(settings) => {
                let networks = settings
                    .networks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, endpoint)| {
                        let v4 = endpoint.ip_address.unwrap_or_default();
                        let addr = if v4.is_empty() {
                            endpoint.global_ipv6_address.unwrap_or_default()
                        } else {
                            v4
                        };
                        (name, addr)
                    })
                    .collect();
                let ports = settings
                    .ports
                    .unwrap_or_default()
                    .keys()
                    .filter_map(|k| k.split('/').next()?.parse().ok())
                    .collect();
                (networks, ports)
            }
            None => Default::default(),
        };
        Some(Container {
            id: inspected.id?,
            name: inspected.name.unwrap_or_default(),
            labels,
            health,
            networks,
            ports,
        })
    }

    /// Traefik's `getServiceName`: `<service>_<project>` for compose containers, else the
    /// container name, normalized.
    fn service_name(&self) -> String {
        match (
            self.labels.get(SERVICE_LABEL),
            self.labels.get(PROJECT_LABEL),
        ) {
            (Some(service), Some(project)) => normalize(&format!("{service}_{project}")),
            _ => normalize(&self.name),
        }
    }

    fn ip(&self, network: Option<&str>) -> String {
        if let Some(network) = network {
            if let Some(addr) = self.networks.get(network) {
                return addr.clone();
            }
            tracing::warn!(
                container = self.name,
                network,
                "Could not find network named '{network}' for container '{}'! Defaulting to first available network.",
                self.name
            );
        }
        // Traefik takes the first entry of a Go map, i.e. any of them.
        self.networks.values().next().cloned().unwrap_or_default()
    }
}

/// Traefik's `provider.Normalize`.
fn normalize(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

fn parse_bool(value: &str) -> Option<bool> {
    // Go's strconv.ParseBool.
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

type Attributes = BTreeMap<String, String>;

/// The `traefik.*` labels of one container, grouped by object name.
#[derive(Default)]
struct Labels {
    enable: bool,
    network: Option<String>,
    routers: BTreeMap<String, Attributes>,
    services: BTreeMap<String, Attributes>,
    middlewares: BTreeMap<String, Attributes>,
    tcp_or_udp: bool,
}

impl Labels {
    fn parse(labels: &HashMap<String, String>) -> Result<Labels, String> {
        let mut parsed = Labels::default();
        for (key, value) in labels {
            // Traefik matches label keys case-insensitively, but object names keep their case.
            let lower = key.to_ascii_lowercase();
            if lower == "traefik.enable" {
                parsed.enable = parse_bool(value)
                    .ok_or_else(|| format!("label {key}: invalid boolean {value:?}"))?;
            } else if lower == "traefik.docker.network" {
                parsed.network = Some(value.clone());
            } else if lower.starts_with("traefik.tcp.") || lower.starts_with("traefik.udp.") {
                parsed.tcp_or_udp = true;
            } else if let Some(rest) = lower.strip_prefix("traefik.http.") {
                let (kind, group) = if rest.starts_with("routers.") {
                    ("routers.", &mut parsed.routers)
                } else if rest.starts_with("services.") {
                    ("services.", &mut parsed.services)
                } else if rest.starts_with("middlewares.") {
                    ("middlewares.", &mut parsed.middlewares)
                } else {
                    // serversTransports and the like: nothing the stand-in acts on.
                    tracing::debug!(label = key, "ignored label");
                    continue;
                };
                let original = &key["traefik.http.".len() + kind.len()..];
                let (name, attribute) = original
                    .split_once('.')
                    .filter(|(name, attribute)| !name.is_empty() && !attribute.is_empty())
                    .ok_or_else(|| format!("label {key}: missing object name or attribute"))?;
                if name.contains('@') {
                    return Err(format!("label {key}: names must not contain '@'"));
                }
                group
                    .entry(name.to_owned())
                    .or_default()
                    .insert(attribute.to_ascii_lowercase(), value.clone());
            }
        }
        Ok(parsed)
    }
}

fn parse_router(attributes: &Attributes) -> Result<Router, String> {
    let mut router = Router::default();
    for (key, value) in attributes {
        match key.as_str() {
            "rule" => router.rule = value.clone(),
            "entrypoints" => router.entrypoints = split_list(value),
            "middlewares" => router.middlewares = split_list(value),
            "service" => router.service = value.clone(),
            "priority" => {
                router.priority = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|e| format!("priority {value:?}: {e}"))?,
                )
            }
            _ => {
                router.options.insert(key.clone(), value.clone());
            }
        }
    }
    // `tls=true` only makes the TLS section exist; a `tls.*` key does the same by itself.
    if let Some(tls) = router.options.get("tls") {
        let tls = parse_bool(tls).ok_or_else(|| format!("tls {tls:?}: invalid boolean"))?;
        let has_section = router.options.keys().any(|k| k.starts_with("tls."));
        if !tls || has_section {
            router.options.remove("tls");
        }
    }
    Ok(router)
}

fn parse_middleware(attributes: &Attributes) -> Result<Middleware, String> {
    if let Some(attempts) = attributes.get("retry.attempts") {
        attempts
            .trim()
            .parse::<i64>()
            .map_err(|e| format!("retry.attempts {attempts:?}: {e}"))?;
    }
    Ok(Middleware {
        options: attributes.clone(),
    })
}

/// One container's configuration (before merging), or `None` when the provider ignores it.
fn container_config(container: &Container) -> Result<Option<DynamicConfig>, String> {
    let labels = Labels::parse(&container.labels)?;
    if !labels.enable {
        tracing::trace!(container = container.name, "Filtering disabled container");
        return Ok(None);
    }
    if !container.health.is_empty() && container.health != "healthy" {
        tracing::debug!(
            container = container.name,
            health = container.health,
            "Filtering unhealthy or starting container"
        );
        return Ok(None);
    }

    let mut config = DynamicConfig::default();
    for (name, attributes) in &labels.middlewares {
        config
            .middlewares
            .insert(name.clone(), parse_middleware(attributes)?);
    }
    let mut routers = BTreeMap::new();
    for (name, attributes) in &labels.routers {
        routers.insert(
            name.clone(),
            parse_router(attributes).map_err(|e| format!("router {name}: {e}"))?,
        );
    }
    if labels.tcp_or_udp
        && labels.routers.is_empty()
        && labels.services.is_empty()
        && labels.middlewares.is_empty()
    {
        return Ok(Some(config));
    }

    let default_name = container.service_name();
    let mut services = labels.services.clone();
    if services.is_empty() {
        services.insert(default_name.clone(), Attributes::new());
    }
    for (name, attributes) in services {
        let service = build_service(container, labels.network.as_deref(), &attributes)
            .map_err(|e| format!("service {name:?} error: {e}"))?;
        config.services.insert(name, service);
    }

    if routers.is_empty() {
        if config.services.len() > 1 {
            tracing::info!(
                container = container.name,
                "Could not create a router for the container: too many services"
            );
        } else {
            routers.insert(default_name.clone(), Router::default());
        }
    }
    for (name, mut router) in routers {
        if router.rule.is_empty() {
            router.rule = format!("Host(`{default_name}`)");
        }
        if router.service.is_empty() {
            let mut names = config.services.keys();
            match (names.next(), names.next()) {
                (Some(only), None) => router.service = only.clone(),
                _ => {
                    tracing::error!(
                        router = name,
                        "Could not define the service name for the router: too many services"
                    );
                    continue;
                }
            }
        }
        config.routers.insert(name, router);
    }
    Ok(Some(config))
}

fn build_service(
    container: &Container,
    network: Option<&str>,
    attributes: &Attributes,
) -> Result<Service, String> {
    let port = match attributes.get("loadbalancer.server.port") {
        Some(port) => port.trim().to_owned(),
        None => container
            .ports
            .iter()
            .min()
            .map(u16::to_string)
            .unwrap_or_default(),
    };
    let scheme = attributes
        .get("loadbalancer.server.scheme")
        .map_or("http", String::as_str);
    let ip = container.ip(network);
    if ip.is_empty() {
        return Err(format!(
            "unable to find the IP address for the container {:?}: the server is ignored",
            container.name
        ));
    }
    if port.is_empty() {
        return Err("port is missing".to_owned());
    }
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    Ok(Service {
        servers: vec![format!("{scheme}://{host}:{port}")],
        options: attributes
            .iter()
            .filter(|(k, _)| !k.starts_with("loadbalancer.server."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

fn build_config(containers: &[Container]) -> DynamicConfig {
    let mut configs = Vec::new();
    for container in containers {
        let key = format!("{}-{}", container.service_name(), container.id);
        match container_config(container) {
            Ok(Some(config)) => configs.push((key, config)),
            Ok(None) => {}
            Err(e) => tracing::error!(container = key, error = e, "Skip container"),
        }
    }
    merge(configs)
}

/// Traefik's `provider.Merge` for the HTTP objects the stand-in knows.
fn merge(mut configs: Vec<(String, DynamicConfig)>) -> DynamicConfig {
    configs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged = DynamicConfig::default();
    let mut sources: BTreeMap<(&str, String), Vec<String>> = BTreeMap::new();
    let mut conflicts: BTreeSet<(&str, String)> = BTreeSet::new();

    for (key, config) in configs {
        for (name, service) in config.services {
            sources
                .entry(("Service", name.clone()))
                .or_default()
                .push(key.clone());
            match merged.services.get_mut(&name) {
                None => {
                    merged.services.insert(name, service);
                }
                Some(existing) if existing.options == service.options => {
                    for url in service.servers {
                        if !existing.servers.contains(&url) {
                            existing.servers.push(url);
                        }
                    }
                }
                Some(_) => {
                    conflicts.insert(("Service", name));
                }
            }
        }
        for (name, router) in config.routers {
            sources
                .entry(("Router", name.clone()))
                .or_default()
                .push(key.clone());
            match merged.routers.get(&name) {
                None => {
                    merged.routers.insert(name, router);
                }
                Some(existing) if *existing == router => {}
                Some(_) => {
                    conflicts.insert(("Router", name));
                }
            }
        }
        for (name, middleware) in config.middlewares {
            sources
                .entry(("Middleware", name.clone()))
                .or_default()
                .push(key.clone());
            match merged.middlewares.get(&name) {
                None => {
                    merged.middlewares.insert(name, middleware);
                }
                Some(existing) if *existing == middleware => {}
                Some(_) => {
                    conflicts.insert(("Middleware", name));
                }
            }
        }
    }

    for (kind, name) in conflicts {
        let from = sources.remove(&(kind, name.clone())).unwrap_or_default();
        tracing::error!(
            name,
            configuration = ?from,
            "{kind} defined multiple times with different configurations"
        );
        match kind {
            "Service" => {
                merged.services.remove(&name);
            }
            "Router" => {
                merged.routers.remove(&name);
            }
            _ => {
                merged.middlewares.remove(&name);
            }
        }
    }
    merged
}

// ---------------------------------------------------------------------------------------------
// Throttle: snapshots -> applied configuration

/// The aggregator's throttle: the newest snapshot wins the one-slot ring; after taking one,
/// wait `throttle` before looking again. Unchanged snapshots still cost a throttle period but
/// are not applied (the configuration watcher skips them).
async fn apply(
    mut snapshots: watch::Receiver<Option<DynamicConfig>>,
    applied: watch::Sender<Arc<Applied>>,
    entrypoint: String,
    throttle: Duration,
) {
    loop {
        if snapshots.changed().await.is_err() {
            return;
        }
        let Some(config) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let current = applied.borrow().clone();
        if current.generation > 0 && current.config == config {
            tracing::debug!("Skipping unchanged configuration");
        } else {
            let next = Applied::new(current.generation + 1, config, &entrypoint);
            tracing::info!(
                generation = next.generation,
                routers = ?next.config.routers.keys().collect::<Vec<_>>(),
                servers = ?next
                    .config
                    .services
                    .iter()
                    .map(|(name, s)| (name.as_str(), s.servers.len()))
                    .collect::<Vec<_>>(),
                "Configuration applied"
            );
            applied.send_replace(Arc::new(next));
        }
        tokio::time::sleep(throttle).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Routing table built from an applied configuration

#[derive(Debug, Default)]
struct Routes {
    /// Highest priority first.
    routes: Vec<Route>,
    balancers: BTreeMap<String, Arc<Balancer>>,
    /// Why a router or service is not served, as Traefik's API reports it.
    router_errors: BTreeMap<String, String>,
    service_errors: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Route {
    router: String,
    hosts: Vec<String>,
    priority: i64,
    balancer: Arc<Balancer>,
    /// Total tries, as Traefik's `retry.attempts`; 1 without the retry middleware.
    attempts: u32,
}

/// Round robin over a service's servers. Built afresh on every applied configuration, like
/// Traefik's load balancers.
#[derive(Debug)]
struct Balancer {
    servers: Vec<Backend>,
    next: AtomicUsize,
    pass_host_header: bool,
}

#[derive(Debug)]
struct Backend {
    url: String,
    addr: SocketAddr,
}

impl Balancer {
    fn next(&self) -> Option<&Backend> {
        if self.servers.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.servers.len();
        self.servers.get(i)
    }
}

impl Routes {
    fn build(config: &DynamicConfig, entrypoint: &str) -> Routes {
        let mut routes = Routes::default();
        for (name, service) in &config.services {
            let servers: Result<Vec<Backend>, String> = service
                .servers
                .iter()
                .map(|url| {
                    url.strip_prefix("http://")
                        .and_then(|a| a.parse().ok())
                        .map(|addr| Backend {
                            url: url.clone(),
                            addr,
                        })
                        .ok_or_else(|| {
                            format!("server {url}: the stand-in only forwards to http://IP:PORT")
                        })
                })
                .collect();
            match servers {
                Ok(servers) => {
                    routes.balancers.insert(
                        name.clone(),
                        Arc::new(Balancer {
                            servers,
                            next: AtomicUsize::new(0),
                            pass_host_header: service.pass_host_header(),
                        }),
                    );
                }
                Err(e) => {
                    tracing::error!(service = name, error = e, "Cannot build the service");
                    routes.service_errors.insert(name.clone(), e);
                }
            }
        }
        for (name, router) in &config.routers {
            if !router.entrypoints.is_empty() && !router.entrypoints.iter().any(|e| e == entrypoint)
            {
                continue;
            }
            match routes.route(name, router, config) {
                Ok(route) => routes.routes.push(route),
                Err(e) => {
                    tracing::error!(router = name, error = e, "Router not served");
                    routes.router_errors.insert(name.clone(), e);
                }
            }
        }
        routes.routes.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.router.cmp(&b.router))
        });
        routes
    }

    fn route(&self, name: &str, router: &Router, config: &DynamicConfig) -> Result<Route, String> {
        let hosts = parse_rule(&router.rule)?;
        let service = local_name(&router.service)
            .filter(|s| config.services.contains_key(*s))
            .ok_or_else(|| format!("the service \"{}\" does not exist", router.service))?;
        let balancer = self
            .balancers
            .get(service)
            .cloned()
            .ok_or_else(|| format!("the service \"{service}@docker\" is in error"))?;
        let mut attempts = 1;
        for reference in &router.middlewares {
            let middleware = local_name(reference)
                .and_then(|m| config.middlewares.get(m))
                .ok_or_else(|| format!("middleware \"{reference}\" does not exist"))?;
            if let Some(value) = middleware.options.get("retry.attempts") {
                let n: i64 = value.trim().parse().unwrap_or(0);
                attempts = u32::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("incorrect (or empty) value for attempt ({n})"))?;
            }
        }
        Ok(Route {
            router: name.to_owned(),
            hosts,
            priority: router
                .priority
                .unwrap_or_else(|| i64::try_from(router.rule.len()).unwrap_or(i64::MAX)),
            balancer,
            attempts,
        })
    }

    fn find(&self, host: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
    }
}

/// `name` and `name@docker` refer to this provider's object; other providers do not exist here.
fn local_name(reference: &str) -> Option<&str> {
    match reference.split_once('@') {
        None => Some(reference),
        Some((name, "docker")) => Some(name),
        Some(_) => None,
    }
}

/// Hosts of a rule made of `Host(...)` matchers joined by `||`; other matchers are refused
/// rather than silently mis-routed.
fn parse_rule(rule: &str) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for term in rule.split("||") {
        let mut term = term.trim();
        while let Some(inner) = term.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
            term = inner.trim();
        }
        let args = term
            .get(..5)
            .filter(|head| head.eq_ignore_ascii_case("host("))
            .and_then(|_| term[5..].strip_suffix(')'))
            .ok_or_else(|| {
                format!("unsupported rule {rule:?}: the stand-in knows Host() and ||")
            })?;
        for arg in args.split(',') {
            let arg = arg.trim();
            let host = arg
                .strip_prefix('`')
                .and_then(|a| a.strip_suffix('`'))
                .or_else(|| arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')))
                .filter(|h| !h.is_empty())
                .ok_or_else(|| format!("error parsing rule {rule:?}: bad host {arg:?}"))?;
            hosts.push(host.to_ascii_lowercase());
        }
    }
    Ok(hosts)
}

// ---------------------------------------------------------------------------------------------
// Entrypoint: requests -> backends

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Accepts HTTP/1.1 connections until cancelled; cancelling drops open connections too.
async fn serve<H, F>(listener: TcpListener, cancel: CancellationToken, handler: H)
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let response = handler(peer, req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
    connections.close();
}

struct EntryState {
    applied: watch::Receiver<Arc<Applied>>,
    transport: Arc<Transport>,
    port: u16,
}

/// Headers that belong to one hop (Go's `httputil.ReverseProxy` list).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request's host as Traefik matches it: `Host` header (or authority), port stripped.
fn request_host<B>(req: &Request<B>) -> String {
    let raw = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    raw.split(':').next().unwrap_or_default().to_owned()
}

impl EntryState {
    async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let applied = self.applied.borrow().clone();
        let host = request_host(&req);
        let Some(route) = applied.routes.find(&host) else {
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        };
        let (mut parts, body) = req.into_parts();
        // Buffered so that the request can be sent again, as the retry middleware does.
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                tracing::debug!(error = %e, "client request body failed");
                return text(StatusCode::BAD_REQUEST, "Bad Request");
            }
        };
        let original_host = parts.headers.get(HOST).cloned();
        strip_hop_by_hop(&mut parts.headers);
        let client_ip = peer.ip().to_string();
        let forwarded_for = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) => format!("{prior}, {client_ip}"),
            None => client_ip.clone(),
        };
        let headers = &mut parts.headers;
        for (name, value) in [
            ("x-forwarded-for", forwarded_for),
            ("x-forwarded-port", self.port.to_string()),
            ("x-forwarded-proto", "http".to_owned()),
            ("x-real-ip", client_ip),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        if let Some(host) = original_host.clone() {
            headers.insert("x-forwarded-host", host);
        }

        let replayable = body.is_empty()
            && (matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            ) || parts.headers.contains_key("idempotency-key")
                || parts.headers.contains_key("x-idempotency-key"));
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();

        let mut attempt = 1;
        loop {
            let Some(backend) = route.balancer.next() else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "no available server\n");
            };
            let host_header = match (&original_host, route.balancer.pass_host_header) {
                (Some(host), true) => host.clone(),
                _ => HeaderValue::from_str(&backend.addr.to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            };
            let make_request = || {
                let mut upstream = Request::new(Full::new(body.clone()));
                *upstream.method_mut() = parts.method.clone();
                *upstream.version_mut() = Version::HTTP_11;
                *upstream.headers_mut() = parts.headers.clone();
                upstream.headers_mut().insert(HOST, host_header.clone());
                if let Ok(uri) = path.parse() {
                    *upstream.uri_mut() = uri;
                }
                upstream
            };
            match self
                .transport
                .round_trip(backend.addr, make_request, replayable)
                .await
            {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Response::from_parts(parts, body.boxed());
                }
                Err(e) if !e.request_sent && attempt < route.attempts => {
                    tracing::debug!(
                        router = route.router,
                        server = backend.url,
                        attempt,
                        error = e.cause,
                        "Retrying on the next server"
                    );
                    attempt += 1;
                }
                Err(e) => {
                    tracing::debug!(
                        router = route.router,
                        server = backend.url,
                        error = e.cause,
                        "502 Bad Gateway"
                    );
                    return text(StatusCode::BAD_GATEWAY, "Bad Gateway");
                }
            }
        }
    }
}

/// Why forwarding failed, and whether the retry middleware may still try another server.
#[derive(Debug)]
struct ForwardError {
    /// Traefik disables retries once the request headers went to a backend connection, which
    /// happens as soon as one was obtained.
    request_sent: bool,
    cause: String,
}

/// Keep-alive connections to backends, with the semantics of Go's `http.Transport` that
/// Traefik uses: LIFO idle pool per server, dial timeout, idle timeout, and replay of an
/// idempotent request when a reused connection turns out to be dead.
#[derive(Default)]
struct Transport {
    idle: Mutex<HashMap<SocketAddr, Vec<IdleConn>>>,
}

type Sender = SendRequest<Full<Bytes>>;
type IdleConn = (Sender, Instant);

impl Transport {
    fn take_idle(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some((sender, since)) = list.pop() {
            if since.elapsed() < IDLE_CONN_TIMEOUT && !sender.is_closed() && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    async fn dial(addr: SocketAddr) -> Result<Sender, String> {
        let stream = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
            .map_err(|e| format!("dial tcp {addr}: {e}"))?;
        // Only a latency tweak; the connection works without it.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(server = %addr, error = %e, "backend connection ended");
            }
        });
        Ok(sender)
    }

    /// Puts the connection back once its response body has been read.
    fn release(self: &Arc<Self>, addr: SocketAddr, mut sender: Sender) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.entry(addr).or_default();
            if list.len() < MAX_IDLE_CONNS_PER_HOST {
                list.push((sender, Instant::now()));
            }
        });
    }

    async fn round_trip(
        self: &Arc<Self>,
        addr: SocketAddr,
        request: impl Fn() -> Request<Full<Bytes>>,
        replayable: bool,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut request_sent = false;
        loop {
            let (mut sender, reused) = match self.take_idle(addr) {
                Some(sender) => (sender, true),
                None => match Self::dial(addr).await {
                    Ok(sender) => (sender, false),
                    Err(cause) => {
                        return Err(ForwardError {
                            request_sent,
                            cause,
                        });
                    }
                },
            };
            request_sent = true;
            match sender.send_request(request()).await {
                Ok(response) => {
                    self.release(addr, sender);
                    return Ok(response);
                }
                // Go retries on another connection only when the dead one was reused, so
                // the server may simply have closed it while idle.
                Err(e) if reused && replayable => {
                    tracing::trace!(server = %addr, error = %e, "reused connection failed, replaying");
                }
                Err(e) => {
                    return Err(ForwardError {
                        request_sent,
                        cause: error_chain(&e),
                    });
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// API emulation

async fn api_response(applied: Arc<Applied>, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let path = req.uri().path().replace("%40", "@");
    let config = &applied.config;
    let routes = &applied.routes;
    let body = match path.as_str() {
        "/api/http/services" => Value::Array(
            config
                .services
                .iter()
                .map(|(name, s)| service_json(name, s, config, routes))
                .collect(),
        ),
        "/api/http/routers" => Value::Array(
            config
                .routers
                .iter()
                .map(|(name, r)| router_json(name, r, routes))
                .collect(),
        ),
        "/api/http/middlewares" => Value::Array(
            config
                .middlewares
                .iter()
                .map(|(name, m)| middleware_json(name, m))
                .collect(),
        ),
        _ => {
            let found = if let Some(id) = path.strip_prefix("/api/http/services/") {
                qualified(id)
                    .and_then(|n| config.services.get_key_value(n))
                    .map(|(name, s)| service_json(name, s, config, routes))
                    .ok_or("service")
            } else if let Some(id) = path.strip_prefix("/api/http/routers/") {
                qualified(id)
                    .and_then(|n| config.routers.get_key_value(n))
                    .map(|(name, r)| router_json(name, r, routes))
                    .ok_or("router")
            } else if let Some(id) = path.strip_prefix("/api/http/middlewares/") {
                qualified(id)
                    .and_then(|n| config.middlewares.get_key_value(n))
                    .map(|(name, m)| middleware_json(name, m))
                    .ok_or("middleware")
            } else {
                return text(StatusCode::NOT_FOUND, "404 page not found\n");
            };
            match found {
                Ok(value) => value,
                Err(kind) => {
                    let id = path.rsplit('/').next().unwrap_or_default();
                    let message = json!({ "message": format!("{kind} not found: {id}") });
                    return json_response(StatusCode::NOT_FOUND, &message);
                }
            }
        }
    };
    json_response(StatusCode::OK, &body)
}

/// The API addresses objects as `name@provider`; only `@docker` exists here.
fn qualified(id: &str) -> Option<&str> {
    id.strip_suffix("@docker")
}

fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn service_json(name: &str, service: &Service, config: &DynamicConfig, routes: &Routes) -> Value {
    let used_by: Vec<String> = config
        .routers
        .iter()
        .filter(|(_, r)| local_name(&r.service) == Some(name))
        .map(|(r, _)| format!("{r}@docker"))
        .collect();
    let server_status: serde_json::Map<String, Value> = service
        .servers
        .iter()
        .map(|url| (url.clone(), Value::from("UP")))
        .collect();
    let mut value = json!({
        "loadBalancer": {
            "servers": service.servers.iter().map(|url| json!({ "url": url })).collect::<Vec<_>>(),
            "passHostHeader": service.pass_host_header(),
            "responseForwarding": { "flushInterval": "100ms" },
        },
        "status": "enabled",
        "usedBy": used_by,
        "serverStatus": server_status,
        "name": format!("{name}@docker"),
        "provider": "docker",
        "type": "loadbalancer",
    });
    if let Some(error) = routes.service_errors.get(name) {
        value["status"] = Value::from("disabled");
        value["error"] = json!([error]);
    }
    value
}

fn router_json(name: &str, router: &Router, routes: &Routes) -> Value {
    let served = routes.routes.iter().find(|r| r.router == name);
    let mut value = json!({
        "entryPoints": router.entrypoints,
        "service": router.service,
        "rule": router.rule,
        "status": if served.is_some() { "enabled" } else { "disabled" },
        "name": format!("{name}@docker"),
        "provider": "docker",
    });
    if !router.middlewares.is_empty() {
        value["middlewares"] = json!(
            router
                .middlewares
                .iter()
                .map(|m| if m.contains('@') {
                    m.clone()
                } else {
                    format!("{m}@docker")
                })
                .collect::<Vec<_>>()
        );
    }
    if let Some(priority) = router.priority {
        value["priority"] = json!(priority);
    }
    if let Some(error) = routes.router_errors.get(name) {
        value["error"] = json!([error]);
    }
    value
}

fn middleware_json(name: &str, middleware: &Middleware) -> Value {
    let mut value = json!({
        "status": "enabled",
        "name": format!("{name}@docker"),
        "provider": "docker",
    });
    if let Some(attempts) = middleware.options.get("retry.attempts") {
        value["type"] = Value::from("retry");
        value["retry"] = json!({ "attempts": attempts.trim().parse::<i64>().unwrap_or(0) });
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, ip: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            id: id.to_owned(),
            name: format!("/{id}"),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            health: String::new(),
            networks: BTreeMap::from([("net".to_owned(), ip.to_owned())]),
            ports: vec![8000],
        }
    }

    const APP: [(&str, &str); 5] = [
        ("traefik.enable", "true"),
        ("traefik.http.routers.app.rule", "Host(`app.test`)"),
        ("traefik.http.routers.app.entrypoints", "websecure"),
        ("traefik.http.routers.app.tls.certresolver", "le"),
        ("traefik.http.services.app.loadbalancer.server.port", "8000"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut labels = APP.to_vec();
        labels.extend_from_slice(extra);
        labels
    }

    #[test]
    fn identical_definitions_merge_into_one_pool() {
        let config = build_config(&[
            container("a", "10.0.0.2", &APP),
            container("b", "10.0.0.3", &APP),
        ]);
        assert_eq!(
            config.servers("app@docker"),
            ["http://10.0.0.2:8000", "http://10.0.0.3:8000"]
        );
        assert_eq!(config.routers["app"].service, "app");
    }

    #[test]
    fn a_differing_router_attribute_drops_only_the_router() {
        let other = with(&[("traefik.http.routers.app.priority", "5")]);
        let config = build_config(&[
            container("a", "10.0.0.2", &APP),
            container("b", "10.0.0.3", &other),
        ]);
        assert!(config.routers.is_empty());
        assert_eq!(config.servers("app").len(), 2);
        assert!(
            Routes::build(&config, "websecure")
                .find("app.test")
                .is_none()
        );
    }

    #[test]
    fn a_differing_service_attribute_drops_the_service_and_its_router_is_not_served() {
        let other = with(&[(
            "traefik.http.services.app.loadbalancer.passhostheader",
            "false",
        )]);
        let config = build_config(&[
            container("a", "10.0.0.2", &APP),
            container("b", "10.0.0.3", &other),
        ]);
        assert!(config.services.is_empty());
        let routes = Routes::build(&config, "websecure");
        assert!(routes.find("app.test").is_none());
        assert!(routes.router_errors["app"].contains("does not exist"));
    }

    #[test]
    fn server_ports_are_per_server_and_do_not_prevent_merging() {
        let mut other = APP.to_vec();
        other.retain(|(k, _)| !k.ends_with("server.port"));
        other.push(("traefik.http.services.app.loadbalancer.server.port", "9000"));
        let config = build_config(&[
            container("a", "10.0.0.2", &APP),
            container("b", "10.0.0.3", &other),
        ]);
        assert_eq!(
            config.servers("app"),
            ["http://10.0.0.2:8000", "http://10.0.0.3:9000"]
        );
    }

    #[test]
    fn starting_unhealthy_and_disabled_containers_are_left_out() {
        let mut starting = container("a", "10.0.0.2", &APP);
        starting.health = "starting".to_owned();
        let mut unhealthy = container("b", "10.0.0.3", &APP);
        unhealthy.health = "unhealthy".to_owned();
        let mut healthy = container("c", "10.0.0.4", &APP);
        healthy.health = "healthy".to_owned();
        let disabled = container("d", "10.0.0.5", &with(&[("traefik.enable", "false")]));
        let config = build_config(&[starting, unhealthy, healthy, disabled]);
        assert_eq!(config.servers("app"), ["http://10.0.0.4:8000"]);
    }

    #[test]
    fn defaults_follow_compose_names_and_the_lowest_exposed_port() {
        let mut c = container(
            "a",
            "10.0.0.2",
            &[
                ("traefik.enable", "true"),
                ("com.docker.compose.project", "shop"),
                ("com.docker.compose.service", "web"),
            ],
        );
        c.ports = vec![9090, 8080];
        let config = build_config(&[c]);
        assert_eq!(config.servers("web-shop"), ["http://10.0.0.2:8080"]);
        assert_eq!(config.routers["web-shop"].rule, "Host(`web-shop`)");
    }

    #[test]
    fn the_network_label_picks_the_address() {
        let mut c = container(
            "a",
            "10.0.0.2",
            &with(&[("traefik.docker.network", "back")]),
        );
        c.networks.insert("back".to_owned(), "10.9.0.7".to_owned());
        assert_eq!(build_config(&[c]).servers("app"), ["http://10.9.0.7:8000"]);
    }

    #[test]
    fn a_router_without_service_needs_exactly_one_service() {
        let labels = [
            ("traefik.enable", "true"),
            ("traefik.http.routers.app.rule", "Host(`app.test`)"),
            ("traefik.http.services.one.loadbalancer.server.port", "8000"),
            ("traefik.http.services.two.loadbalancer.server.port", "8001"),
        ];
        let config = build_config(&[container("a", "10.0.0.2", &labels)]);
        assert!(config.routers.is_empty());
        assert_eq!(config.services.len(), 2);
    }

    #[test]
    fn rules_hosts_and_priorities() {
        assert_eq!(
            parse_rule("Host(`a.test`) || Host(`B.test`)"),
            Ok(vec!["a.test".to_owned(), "b.test".to_owned()])
        );
        assert_eq!(
            parse_rule("Host(`a.test`, `b.test`)"),
            Ok(vec!["a.test".to_owned(), "b.test".to_owned()])
        );
        assert!(parse_rule("PathPrefix(`/x`)").is_err());

        let short = [
            ("traefik.enable", "true"),
            ("traefik.http.routers.short.rule", "Host(`a.test`)"),
            ("traefik.http.services.s1.loadbalancer.server.port", "8000"),
        ];
        let long = [
            ("traefik.enable", "true"),
            (
                "traefik.http.routers.long.rule",
                "Host(`a.test`) || Host(`b.test`)",
            ),
            ("traefik.http.services.s2.loadbalancer.server.port", "8000"),
        ];
        let config = build_config(&[
            container("a", "10.0.0.2", &short),
            container("b", "10.0.0.3", &long),
        ]);
        let routes = Routes::build(&config, "websecure");
        assert_eq!(
            routes.find("a.test").map(|r| r.router.as_str()),
            Some("long")
        );
        assert_eq!(
            request_host(
                &Request::builder()
                    .header(HOST, "A.test:443")
                    .body(())
                    .expect("request")
            ),
            "A.test"
        );
    }

    #[test]
    fn middlewares_must_exist_and_retry_counts_total_tries() {
        let retry = with(&[
            ("traefik.http.routers.app.middlewares", "retry@docker"),
            ("traefik.http.middlewares.retry.retry.attempts", "3"),
        ]);
        let config = build_config(&[container("a", "10.0.0.2", &retry)]);
        let routes = Routes::build(&config, "websecure");
        assert_eq!(routes.find("app.test").map(|r| r.attempts), Some(3));

        let missing = with(&[("traefik.http.routers.app.middlewares", "nope")]);
        let config = build_config(&[container("a", "10.0.0.2", &missing)]);
        assert!(
            Routes::build(&config, "websecure")
                .find("app.test")
                .is_none()
        );
    }

    #[test]
    fn routers_on_other_entrypoints_are_not_served() {
        let web = with(&[("traefik.http.routers.app.entrypoints", "web")]);
        let config = build_config(&[container("a", "10.0.0.2", &web)]);
        assert!(
            Routes::build(&config, "websecure")
                .find("app.test")
                .is_none()
        );
        assert!(Routes::build(&config, "web").find("app.test").is_some());
    }

    #[test]
    fn bad_labels_skip_the_container() {
        let bad = with(&[("traefik.http.middlewares.retry.retry.attempts", "many")]);
        let config = build_config(&[
            container("a", "10.0.0.2", &bad),
            container("b", "10.0.0.3", &APP),
        ]);
        assert_eq!(config.servers("app"), ["http://10.0.0.3:8000"]);
    }
}
