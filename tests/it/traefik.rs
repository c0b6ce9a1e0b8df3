//! What hoist relies on in Traefik, checked against the real Traefik 3.x binary and the real
//! Docker engine: routing by `Host`, the health filter, one pool for identical labels, a
//! dropped router for differing ones, the retry middleware, the API, the throttle. Each test
//! gets its own compose project name, bridge network, Traefik and demo containers, removed
//! again even on failure.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{CreateContainerOptionsBuilder, KillContainerOptionsBuilder};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper::header::HOST;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::support::load::{Load, LoadConfig};
use crate::support::traefik::{self, Traefik, TraefikConfig};

/// Long enough for a container start, a healthcheck and two throttle periods on a busy machine.
const WAIT: Duration = Duration::from_secs(30);
const HOST_NAME: &str = "app.test";

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Several tests share the process; only the first one installs the subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The demo image, built once per test process from the freshly built `hoist-demo`.
fn demo_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_demo_image().expect("building the demo image"))
}

fn build_demo_image() -> anyhow::Result<String> {
    let tag = "hoist-demo:proxykit-test";
    let dir = std::env::temp_dir().join(format!("hoist-demo-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(env!("CARGO_BIN_EXE_hoist-demo"), dir.join("hoist-demo"))?;
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY hoist-demo /demo\nENV DEMO_VERSION=v1\nENTRYPOINT [\"/demo\"]\n",
    )?;
    let output = Command::new("docker")
        .args(["build", "--quiet", "--tag", tag, "."])
        .env("DOCKER_BUILDKIT", "0")
        .current_dir(&dir)
        .output()
        .context("running docker build")?;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        output.status.success(),
        "docker build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(tag.to_owned())
}

/// One test's Docker world: a compose project name, a network and the containers made in it.
struct World {
    docker: Docker,
    project: String,
    network: String,
    containers: Mutex<Vec<String>>,
}

impl World {
    async fn new(test: &str) -> World {
        init_tracing();
        let image = demo_image();
        let docker = Docker::connect_with_local_defaults()
            .expect("Docker client")
            .negotiate_version()
            .await
            .expect("Docker API version");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let project = format!("pk-{test}-{:x}{nanos:x}", std::process::id());
        docker
            .create_network(NetworkCreateRequest {
                name: project.clone(),
                driver: Some("bridge".to_owned()),
                labels: Some(HashMap::from([(
                    "com.docker.compose.project".to_owned(),
                    project.clone(),
                )])),
                ..Default::default()
            })
            .await
            .expect("creating the test network");
        tracing::info!(project, image, "test world ready");
        World {
            docker,
            network: project.clone(),
            project,
            containers: Mutex::new(Vec::new()),
        }
    }

    async fn traefik(&self, throttle: Duration) -> Traefik {
        let cfg = TraefikConfig {
            throttle,
            ..TraefikConfig::new(self.project.clone(), self.network.clone())
        };
        Traefik::start(cfg).await.expect("starting Traefik")
    }

    /// The labels every app container gets: compose's and a Traefik router `app` for
    /// `app.test` with its service `app` on port 8000.
    fn labels(&self, number: usize, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let rule = format!("Host(`{HOST_NAME}`)");
        let number = number.to_string();
        let base = [
            ("com.docker.compose.project", self.project.as_str()),
            ("com.docker.compose.service", "app"),
            ("com.docker.compose.container-number", number.as_str()),
            ("com.docker.compose.oneoff", "False"),
            ("traefik.enable", "true"),
            ("traefik.docker.network", self.network.as_str()),
            ("traefik.http.routers.app.rule", rule.as_str()),
            ("traefik.http.routers.app.entrypoints", "websecure"),
            ("traefik.http.services.app.loadbalancer.server.port", "8000"),
        ];
        base.iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Creates and starts a demo container; returns its id.
    async fn run(
        &self,
        labels: HashMap<String, String>,
        env: &[&str],
        healthcheck: bool,
    ) -> anyhow::Result<String> {
        let number = {
            let containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
            containers.len() + 1
        };
        let name = format!("{}-app-{number}", self.project);
        let body = ContainerCreateBody {
            image: Some(demo_image().to_owned()),
            env: Some(env.iter().map(|e| (*e).to_owned()).collect()),
            labels: Some(labels),
            healthcheck: healthcheck.then(|| HealthConfig {
                test: Some(vec!["CMD".into(), "/demo".into(), "check".into()]),
                interval: Some(1_000_000_000),
                timeout: Some(2_000_000_000),
                retries: Some(3),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = self.docker.create_container(Some(options), body).await?.id;
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.clone());
        self.docker.start_container(&id, None).await?;
        Ok(id)
    }

    async fn ip(&self, id: &str) -> anyhow::Result<String> {
        let inspected = self.docker.inspect_container(id, None).await?;
        inspected
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|mut n| n.remove(&self.network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .with_context(|| format!("container {id} has no address on {}", self.network))
    }

    async fn health(&self, id: &str) -> anyhow::Result<String> {
        let inspected = self.docker.inspect_container(id, None).await?;
        Ok(inspected
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .unwrap_or_default())
    }

    async fn signal(&self, id: &str, signal: &str) -> anyhow::Result<()> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        Ok(self.docker.kill_container(id, Some(options)).await?)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Drop cannot await: the CLI does the cleanup synchronously, also after a panic.
        let containers =
            std::mem::take(self.containers.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "--force", "--volumes"])
                .args(&containers)
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

/// A plain keep-alive HTTP client for the tests' own requests.
struct Http(Client<HttpConnector, Empty<Bytes>>);

impl Http {
    fn new() -> Http {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    /// GET `url` with `host` as the `Host` header; returns the status and the trimmed body.
    async fn get(&self, url: &str, host: &str) -> anyhow::Result<(u16, String)> {
        let request = Request::get(url).header(HOST, host).body(Empty::new())?;
        let exchange = async {
            let response = self.0.request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&body).trim().to_owned()))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .with_context(|| format!("GET {url} timed out"))?
    }

    async fn app(&self, traefik: &Traefik, host: &str) -> anyhow::Result<(u16, String)> {
        self.get(&format!("http://{}/", traefik.addr()), host).await
    }
}

/// Waits until nothing listens on `addr` any more (the app closed its socket).
async fn wait_until_refused(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            _ if tokio::time::Instant::now() > deadline => {
                anyhow::bail!("{addr} still accepts connections")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn load(traefik: &Traefik, rate: u32, slow_every: Option<(u32, u64)>) -> Load {
    Load::start(LoadConfig {
        via: traefik::describe(),
        target: traefik.addr(),
        host: HOST_NAME.to_owned(),
        rate,
        slow_every,
        timeout: Duration::from_secs(5),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_a_running_container_by_host() -> anyhow::Result<()> {
    let world = World::new("route").await;
    let traefik = world.traefik(Duration::from_secs(2)).await;
    let http = Http::new();

    let id = world
        .run(world.labels(1, &[]), &["DEMO_VERSION=v1"], false)
        .await?;
    let ip = world.ip(&id).await?;
    let servers = traefik.wait_for_servers("app", 1, WAIT).await?;
    assert_eq!(servers, [format!("http://{ip}:8000")]);

    assert_eq!(http.app(&traefik, HOST_NAME).await?, (200, "v1".to_owned()));
    assert_eq!(
        http.app(&traefik, "APP.test:443").await?,
        (200, "v1".to_owned())
    );
    assert_eq!(http.app(&traefik, "other.test").await?.0, 404);
    let (status, router) = traefik.api("http/routers/app@docker").await?;
    assert_eq!(status, 200);
    assert_eq!(router["rule"], format!("Host(`{HOST_NAME}`)"));
    assert_eq!(traefik.api("http/services/nope@docker").await?.0, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_routed_only_once_healthy() -> anyhow::Result<()> {
    let world = World::new("health").await;
    let traefik = world.traefik(Duration::from_secs(2)).await;
    let http = Http::new();

    let id = world
        .run(world.labels(1, &[]), &["DEMO_VERSION=v1"], true)
        .await?;
    // Health only moves on from `starting`, so a request answered before an inspection that
    // still says `starting` was answered while the container was starting.
    let mut while_starting = Vec::new();
    loop {
        let answer = http.app(&traefik, HOST_NAME).await?;
        if world.health(&id).await? != "starting" {
            break;
        }
        while_starting.push(answer);
    }
    assert!(
        !while_starting.is_empty(),
        "the container was never seen starting"
    );
    assert!(
        while_starting.iter().all(|(status, _)| *status == 404),
        "routed while starting: {while_starting:?}"
    );

    traefik.wait_for_servers("app", 1, WAIT).await?;
    assert_eq!(world.health(&id).await?, "healthy");
    assert_eq!(http.app(&traefik, HOST_NAME).await?, (200, "v1".to_owned()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_labels_share_one_pool() -> anyhow::Result<()> {
    let world = World::new("pool").await;
    let traefik = world.traefik(Duration::from_secs(2)).await;

    // With health checks, so that a server joins the pool only once it answers (a
    // container without one is routed as soon as it runs, before its app listens).
    world
        .run(world.labels(1, &[]), &["DEMO_VERSION=v1"], true)
        .await?;
    world
        .run(world.labels(2, &[]), &["DEMO_VERSION=v2"], true)
        .await?;
    traefik.wait_for_servers("app", 2, WAIT).await?;

    let load = load(&traefik, 100, Some((10, 200)));
    let deadline = tokio::time::Instant::now() + WAIT;
    while load.report().ok < 150 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "load too slow: {}",
            load.report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = load.stop().await;
    println!("load through a two-server pool: {report}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.ok, report.sent, "{report}");
    let v1 = report.versions.get("v1").copied().unwrap_or(0);
    let v2 = report.versions.get("v2").copied().unwrap_or(0);
    // Round robin: the two halves differ only by requests still in flight at any moment.
    assert!(v1 > report.ok / 3 && v2 > report.ok / 3, "{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_differing_traefik_label_drops_the_router() -> anyhow::Result<()> {
    let world = World::new("conflict").await;
    let traefik = world.traefik(Duration::from_secs(2)).await;
    let http = Http::new();

    world
        .run(world.labels(1, &[]), &["DEMO_VERSION=v1"], false)
        .await?;
    traefik.wait_for_servers("app", 1, WAIT).await?;
    assert_eq!(http.app(&traefik, HOST_NAME).await?, (200, "v1".to_owned()));

    // The service definitions still agree (their servers merge), the routers do not.
    let changed = world.labels(2, &[("traefik.http.routers.app.priority", "7")]);
    world.run(changed, &["DEMO_VERSION=v2"], false).await?;
    traefik.wait_for_servers("app", 2, WAIT).await?;
    let (status, router) = traefik.api("http/routers/app@docker").await?;
    assert_eq!(status, 404, "the router should be dropped: {router}");
    assert_eq!(http.app(&traefik, HOST_NAME).await?.0, 404);
    assert!(
        traefik
            .log()
            .contains("defined multiple times with different configurations"),
        "Traefik says why:\n{}",
        traefik.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_covers_a_closed_listener_and_without_it_the_client_sees_502() -> anyhow::Result<()> {
    let world = World::new("retry").await;
    let traefik = world.traefik(Duration::from_secs(2)).await;
    let http = Http::new();

    // Router `app` (app.test) retries, router `plain` (plain.test) does not; same service.
    let extra = [
        ("traefik.http.routers.app.middlewares", "retry@docker"),
        ("traefik.http.middlewares.retry.retry.attempts", "2"),
        ("traefik.http.routers.plain.rule", "Host(`plain.test`)"),
        ("traefik.http.routers.plain.entrypoints", "websecure"),
        ("traefik.http.routers.plain.service", "app"),
    ];
    let old = world
        .run(
            world.labels(1, &extra),
            &["DEMO_VERSION=v1", "DEMO_SHUTDOWN_DELAY_MS=120000"],
            false,
        )
        .await?;
    world
        .run(world.labels(2, &extra), &["DEMO_VERSION=v2"], false)
        .await?;
    let before = traefik.wait_for_servers("app", 2, WAIT).await?;

    // SIGTERM: the old app closes its socket but keeps running, so no `die` event comes and
    // Traefik keeps sending it traffic. No request went through Traefik yet, so it holds no
    // pooled connection to the old app that could race with the close.
    world.signal(&old, "SIGTERM").await?;
    wait_until_refused(format!("{}:8000", world.ip(&old).await?).parse()?).await?;

    for _ in 0..10 {
        assert_eq!(http.app(&traefik, HOST_NAME).await?, (200, "v2".to_owned()));
    }
    let mut plain = BTreeMap::new();
    for _ in 0..10 {
        *plain
            .entry(http.app(&traefik, "plain.test").await?)
            .or_insert(0) += 1;
    }
    let refused = plain.get(&(502, "Bad Gateway".to_owned())).copied();
    let served = plain.get(&(200, "v2".to_owned())).copied();
    assert!(
        refused.is_some() && served.is_some() && plain.len() == 2,
        "without retry, the closed listener's turns are 502s: {plain:?}"
    );

    // A SIGTERM (`kill`) is not one of the events the provider re-lists on.
    assert_eq!(traefik.servers("app").await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_applied_no_faster_than_the_throttle() -> anyhow::Result<()> {
    let world = World::new("throttle").await;
    let throttle = Duration::from_secs(3);
    let traefik = world.traefik(throttle).await;
    let http = Http::new();

    world
        .run(world.labels(1, &[]), &["DEMO_VERSION=v1"], false)
        .await?;
    traefik.wait_for_servers("app", 1, WAIT).await?;
    // Seen through the API at most one poll (100 ms) after it was applied.
    let first = Instant::now();
    let load = load(&traefik, 50, None);
    load.wait_until_serving("v1", WAIT).await?;
    world
        .run(world.labels(2, &[]), &["DEMO_VERSION=v2"], false)
        .await?;
    traefik.wait_for_servers("app", 2, WAIT).await?;
    let apart = first.elapsed();
    assert!(
        apart + Duration::from_millis(150) >= throttle,
        "applied {apart:?} apart"
    );
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(http.app(&traefik, HOST_NAME).await?.0, 200);
    Ok(())
}
