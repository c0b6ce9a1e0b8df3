//! Traefik: the labels hoist recommends for a service, where a container's labels route it,
//! and how hoist knows that Traefik has applied a routing change.
//!
//! Traefik merges containers that declare the same router/service only when their
//! definitions are identical, and drops the router otherwise (404 for everyone). The labels
//! belong to the compose file, so old and new containers come from one definition; a
//! rollout whose new containers would carry other labels stops before it starts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{ServiceConfig, TraefikConfig};

/// Retries on connection errors only (Traefik's rule), which covers the moment a container
/// closes its listener while Traefik still lists it.
const RETRY_ATTEMPTS: u32 = 3;
/// Added to Traefik's throttle when hoist cannot ask Traefik whether a change is applied.
pub(crate) const THROTTLE_MARGIN: Duration = Duration::from_secs(1);

/// The router, service and middleware names hoist recommends for a service:
/// `<compose project>-<name>`. Traefik's names are global per provider, so two compose
/// projects each with a hoist service `web` would otherwise define router `web` twice, and
/// Traefik drops a router defined differently twice, for both ("defined multiple times
/// with different configurations").
pub(crate) fn name(service: &ServiceConfig) -> String {
    format!("{}-{}", service.compose_project, service.name)
}

/// The recommended `traefik.*` labels for a service (what `hoist labels` prints),
/// identical for every container of it.
pub(crate) fn labels(service: &ServiceConfig, traefik: &TraefikConfig) -> BTreeMap<String, String> {
    let n = &name(service);
    let router = format!("traefik.http.routers.{n}");
    let mut l = BTreeMap::new();
    l.insert("traefik.enable".into(), "true".into());
    l.insert("traefik.docker.network".into(), traefik.network.clone());
    l.insert(
        format!("{router}.rule"),
        format!("Host(`{}`)", service.host),
    );
    l.insert(
        format!("{router}.entrypoints"),
        traefik.entrypoints.join(","),
    );
    l.insert(format!("{router}.service"), n.clone());
    l.insert(format!("{router}.middlewares"), format!("{n}-retry"));
    if let Some(resolver) = &traefik.cert_resolver {
        l.insert(format!("{router}.tls.certresolver"), resolver.clone());
    }
    l.insert(
        format!("traefik.http.middlewares.{n}-retry.retry.attempts"),
        RETRY_ATTEMPTS.to_string(),
    );
    l.insert(
        format!("traefik.http.services.{n}.loadbalancer.server.port"),
        service.port.to_string(),
    );
    l
}

/// Where Traefik routes a container, as its labels say: the HTTP service it is a server
/// of (the name to ask Traefik's API about) and the port. Learned from the labels, since
/// they belong to the compose file: the operator's own router and service names work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// `None` when the labels do not name exactly one HTTP service: hoist then waits out
    /// Traefik's throttle instead of asking its API.
    pub service: Option<String>,
    pub port: u16,
}

/// Reads [`Route`] from a container's labels; `port` when no label sets the server port.
pub(crate) fn route<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    port: u16,
) -> Route {
    let labels: BTreeMap<&String, &String> = labels.into_iter().collect();
    let mut services: Vec<&str> = labels
        .keys()
        .filter_map(|k| k.strip_prefix("traefik.http.services.")?.split('.').next())
        .collect();
    services.dedup();
    if services.is_empty() {
        services = labels
            .iter()
            .filter(|(k, _)| k.starts_with("traefik.http.routers.") && k.ends_with(".service"))
            .map(|(_, v)| v.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
    }
    let service = match services.as_slice() {
        [one] => Some((*one).to_string()),
        _ => None,
    };
    let port = service
        .as_ref()
        .and_then(|s| {
            labels.get(&format!(
                "traefik.http.services.{s}.loadbalancer.server.port"
            ))
        })
        .and_then(|p| p.parse().ok())
        .unwrap_or(port);
    Route { service, port }
}

/// One difference between the `traefik.*` labels a running container carries and the ones
/// a new container would carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LabelDiff {
    Missing {
        key: String,
        want: String,
    },
    Different {
        key: String,
        have: String,
        want: String,
    },
    Extra {
        key: String,
        have: String,
    },
}

impl std::fmt::Display for LabelDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelDiff::Missing { key, want } => write!(f, "+ {key}={want}   (only in the new)"),
            LabelDiff::Different { key, have, want } => {
                write!(f, "- {key}={have}\n+ {key}={want}")
            }
            LabelDiff::Extra { key, have } => {
                write!(f, "- {key}={have}   (only in the running)")
            }
        }
    }
}

/// Compares the `traefik.*` labels of a running container with a new container's.
pub(crate) fn diff<'a>(
    have: impl IntoIterator<Item = (&'a String, &'a String)>,
    want: &BTreeMap<String, String>,
) -> Vec<LabelDiff> {
    let have: BTreeMap<&String, &String> = have
        .into_iter()
        .filter(|(k, _)| k.starts_with("traefik."))
        .collect();
    let mut out = Vec::new();
    for (key, want_value) in want {
        match have.get(key) {
            None => out.push(LabelDiff::Missing {
                key: key.clone(),
                want: want_value.clone(),
            }),
            Some(v) if *v != want_value => out.push(LabelDiff::Different {
                key: key.clone(),
                have: (*v).clone(),
                want: want_value.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, v) in have {
        if !want.contains_key(key) {
            out.push(LabelDiff::Extra {
                key: key.clone(),
                have: v.clone(),
            });
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("Traefik did not {what} within {}s (asked {url}){}", waited.as_secs(), last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
pub(crate) struct RoutingTimeout {
    pub what: String,
    pub url: String,
    pub waited: Duration,
    pub last_error: Option<String>,
}

/// How hoist learns that Traefik has picked up a change: by asking its API when
/// `traefik.api_url` is set, otherwise by waiting out its throttle plus a margin.
#[derive(Clone)]
pub(crate) struct Routing {
    api_url: Option<String>,
    throttle: Duration,
    /// `Err`: why there is no client; asking the API then fails with it.
    http: Result<reqwest::Client, String>,
}

/// Whether a change was seen in Traefik's API or only waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmation {
    Api,
    Waited,
}

impl Routing {
    pub(crate) fn new(traefik: &TraefikConfig) -> Self {
        Routing {
            api_url: traefik.api_url.clone(),
            throttle: traefik.throttle,
            http: crate::util::http_client(
                reqwest::Client::builder().timeout(Duration::from_secs(5)),
            ),
        }
    }

    /// How long to wait for Traefik when its API cannot be asked.
    pub(crate) fn settle_time(&self) -> Duration {
        self.throttle + THROTTLE_MARGIN
    }

    /// The server URL Traefik uses for a container.
    pub(crate) fn server_url(ip: &str, port: u16) -> String {
        format!("http://{ip}:{port}")
    }

    /// Waits until Traefik routes `service` to `server` (`present`) or no longer does;
    /// without the API or a service name, waits out the throttle.
    pub(crate) async fn await_server(
        &self,
        service: Option<&str>,
        server: &str,
        present: bool,
    ) -> Result<Confirmation, RoutingTimeout> {
        let (Some(api), Some(service)) = (&self.api_url, service) else {
            tokio::time::sleep(self.settle_time()).await;
            return Ok(Confirmation::Waited);
        };
        let url = format!("{api}/api/http/services/{service}@docker");
        // Several throttle periods: Traefik may be busy with other providers' changes.
        let patience = self.throttle * 5 + Duration::from_secs(10);
        let started = Instant::now();
        let mut last_error;
        loop {
            match self.servers(&url).await {
                Ok(servers) if servers.iter().any(|s| s == server) == present => {
                    return Ok(Confirmation::Api);
                }
                Ok(_) => last_error = None,
                Err(e) => last_error = Some(e),
            }
            if started.elapsed() >= patience {
                return Err(RoutingTimeout {
                    what: if present {
                        format!("add {server} to {service}")
                    } else {
                        format!("remove {server} from {service}")
                    },
                    url,
                    waited: started.elapsed(),
                    last_error,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server URLs Traefik lists for a service; an unknown service has none.
    async fn servers(&self, url: &str) -> Result<Vec<String>, String> {
        #[derive(serde::Deserialize)]
        struct Service {
            #[serde(rename = "loadBalancer")]
            load_balancer: Option<LoadBalancer>,
        }
        #[derive(serde::Deserialize)]
        struct LoadBalancer {
            #[serde(default)]
            servers: Vec<Server>,
        }
        #[derive(serde::Deserialize)]
        struct Server {
            url: String,
        }
        let http = self.http.as_ref().map_err(Clone::clone)?;
        let response = http.get(url).send().await.map_err(|e| e.to_string())?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let service: Service = response.json().await.map_err(|e| e.to_string())?;
        Ok(service
            .load_balancer
            .map(|lb| lb.servers.into_iter().map(|s| s.url).collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            r#"
[traefik]
network = "web"
entrypoints = ["web", "websecure"]
cert_resolver = "le"
[[services]]
name = "web-stage"
environment = "stage"
compose_project = "shop"
image = "ghcr.io/acme/web"
track = "main"
host = "stage.example.com"
port = 8000
"#,
            Path::new("t.toml"),
            crate::config::Secrets::Load,
        )
        .unwrap()
    }

    #[test]
    fn generates_complete_identical_labels() {
        let c = config();
        let l = labels(&c.services[0], &c.traefik);
        assert_eq!(
            l["traefik.http.routers.shop-web-stage.rule"],
            "Host(`stage.example.com`)"
        );
        assert_eq!(
            l["traefik.http.routers.shop-web-stage.entrypoints"],
            "web,websecure"
        );
        assert_eq!(
            l["traefik.http.routers.shop-web-stage.tls.certresolver"],
            "le"
        );
        assert_eq!(
            l["traefik.http.services.shop-web-stage.loadbalancer.server.port"],
            "8000"
        );
        assert_eq!(
            l["traefik.http.middlewares.shop-web-stage-retry.retry.attempts"],
            "3"
        );
        assert_eq!(l["traefik.docker.network"], "web");
        assert_eq!(l, labels(&c.services[0], &c.traefik));
    }

    #[test]
    fn diffs_only_traefik_labels() {
        let c = config();
        let want = labels(&c.services[0], &c.traefik);
        let mut have: BTreeMap<String, String> = want.clone();
        have.insert("com.docker.compose.service".into(), "x".into());
        assert!(diff(&have, &want).is_empty());
        have.insert(
            "traefik.http.routers.web-stage.rule".into(),
            "Host(`old.example.com`)".into(),
        );
        have.remove("traefik.docker.network");
        have.insert("traefik.http.routers.web-stage.priority".into(), "5".into());
        let d = diff(&have, &want);
        assert_eq!(d.len(), 3, "{d:?}");
        let text: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(
                |t| t.contains("- traefik.http.routers.web-stage.rule=Host(`old.example.com`)")
            )
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("+ traefik.docker.network=web"))
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("- traefik.http.routers.web-stage.priority=5"))
        );
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn the_service_and_port_come_from_the_labels() {
        let l = labels(&[
            ("traefik.http.routers.shop-web.rule", "Host(`a`)"),
            ("traefik.http.routers.shop-web.service", "shop-web"),
            (
                "traefik.http.services.shop-web.loadbalancer.server.port",
                "9000",
            ),
        ]);
        assert_eq!(
            route(&l, 8000),
            Route {
                service: Some("shop-web".into()),
                port: 9000
            }
        );
        let l = labels(&[("traefik.http.routers.r.service", "own")]);
        assert_eq!(route(&l, 8000).service.as_deref(), Some("own"));
        assert_eq!(route(&l, 8000).port, 8000);
        let l = labels(&[("traefik.http.routers.r.rule", "Host(`a`)")]);
        assert_eq!(
            route(&l, 8000).service,
            None,
            "Traefik names it: not guessed"
        );
        let l = labels(&[
            ("traefik.http.services.a.loadbalancer.server.port", "1"),
            ("traefik.http.services.b.loadbalancer.server.port", "2"),
        ]);
        assert_eq!(route(&l, 8000).service, None, "two services: not guessed");
    }
}

#[cfg(test)]
mod name_tests {
    use std::path::Path;

    use crate::config::{Config, Secrets};

    #[test]
    fn two_projects_with_a_service_web_get_different_traefik_names() {
        let config = |project: &str| {
            let text = format!(
                "[[services]]\nname = \"web\"\nenvironment = \"stage\"\ncompose_project = \"{project}\"\nimage = \"ghcr.io/acme/web\"\ntrack = \"main\"\nhost = \"{project}.test\"\nport = 8000\n"
            );
            Config::parse(&text, Path::new("t"), Secrets::Skip).unwrap()
        };
        let (a, b) = (config("shop"), config("blog"));
        let names = |c: &Config| -> Vec<String> {
            super::labels(&c.services[0], &c.traefik)
                .keys()
                .filter_map(|k| {
                    let rest = k.strip_prefix("traefik.http.")?;
                    let (kind, rest) = rest.split_once('.')?;
                    Some(format!("{kind}.{}", rest.split('.').next()?))
                })
                .collect()
        };
        let (na, nb) = (names(&a), names(&b));
        assert!(na.contains(&"routers.shop-web".to_string()), "{na:?}");
        assert!(na.iter().all(|n| !nb.contains(n)), "{na:?} vs {nb:?}");
    }
}
