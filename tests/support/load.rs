//! Load generator for rollout tests: sends requests to Traefik at a fixed rate over keep-alive
//! connections and tallies outcomes and the demo app's versions seen.

use super::error_chain;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::task::TaskTracker;

/// How many of the latest completed requests [`Load::wait_until_serving`] looks at.
const RECENT: usize = 10;
/// Failures kept with their details; the rest are only counted by kind.
const KEPT_FAILURES: usize = 20;

#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// What the requests go through, e.g. "Traefik 3.7.15": every report names it.
    pub via: String,
    pub target: SocketAddr,
    /// Sent as the `Host` header, to select Traefik's router.
    pub host: String,
    /// Requests per second.
    pub rate: u32,
    /// `(n, ms)`: every n-th request asks the demo app to wait `ms` (`?delay_ms=ms`), keeping
    /// requests in flight across a switch.
    pub slow_every: Option<(u32, u64)>,
    /// Per request, connection and body included.
    pub timeout: Duration,
}

/// One failed request.
#[derive(Clone, Debug)]
pub struct Failure {
    /// When the request was sent, counted from [`Load::start`].
    pub at: Duration,
    /// `status 502`, `timeout`, `connect error`, `request error` or `empty body`.
    pub kind: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// [`LoadConfig::via`].
    pub via: String,
    pub elapsed: Duration,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// The first failures, in completion order.
    pub failures: Vec<Failure>,
    pub failure_kinds: BTreeMap<String, u64>,
    /// Successful responses per version (the demo app's body).
    pub versions: BTreeMap<String, u64>,
}

impl LoadReport {
    fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.ok + self.failed)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "through {}: sent {}, ok {}, failed {}",
            self.via, self.sent, self.ok, self.failed
        )?;
        if self.in_flight() > 0 {
            write!(f, ", in flight {}", self.in_flight())?;
        }
        write!(f, ", versions")?;
        for (version, count) in &self.versions {
            write!(f, " {version}={count}")?;
        }
        if !self.failure_kinds.is_empty() {
            write!(f, "\nfailures:")?;
            for (kind, count) in &self.failure_kinds {
                write!(f, " {kind}={count}")?;
            }
            if let Some(first) = self.failures.first() {
                write!(
                    f,
                    "; first at +{:.3}s: {} ({})",
                    first.at.as_secs_f64(),
                    first.kind,
                    first.detail
                )?;
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    report: LoadReport,
    /// Latest completed requests: the version for a success, `None` for a failure.
    recent: VecDeque<Option<String>>,
}

struct Shared {
    started: Instant,
    tally: Mutex<Tally>,
    completed: watch::Sender<u64>,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, outcome: Result<String, Failure>) {
        {
            let mut tally = self.tally();
            let version = match outcome {
                Ok(version) => {
                    tally.report.ok += 1;
                    *tally.report.versions.entry(version.clone()).or_default() += 1;
                    Some(version)
                }
                Err(failure) => {
                    tally.report.failed += 1;
                    *tally
                        .report
                        .failure_kinds
                        .entry(failure.kind.clone())
                        .or_default() += 1;
                    if tally.report.failures.len() < KEPT_FAILURES {
                        tally.report.failures.push(failure);
                    }
                    None
                }
            };
            if tally.recent.len() == RECENT {
                tally.recent.pop_front();
            }
            tally.recent.push_back(version);
        }
        self.completed.send_modify(|n| *n += 1);
    }
}

/// A running load. Dropping it stops sending; requests in flight end by their timeout.
pub struct Load {
    shared: Arc<Shared>,
    ticker: JoinHandle<()>,
    requests: TaskTracker,
    timeout: Duration,
}

impl Load {
    /// Starts sending at once; must be called inside a Tokio runtime.
    pub fn start(cfg: LoadConfig) -> Load {
        let (completed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            started: Instant::now(),
            tally: Mutex::new(Tally {
                report: LoadReport {
                    via: cfg.via.clone(),
                    ..LoadReport::default()
                },
                ..Tally::default()
            }),
            completed,
        });
        let requests = TaskTracker::new();
        let ticker = tokio::spawn(send_on_schedule(
            cfg.clone(),
            shared.clone(),
            requests.clone(),
        ));
        Load {
            shared,
            ticker,
            requests,
            timeout: cfg.timeout,
        }
    }

    /// Counts so far; requests in flight are `sent - ok - failed`.
    pub fn report(&self) -> LoadReport {
        let mut report = self.shared.tally().report.clone();
        report.elapsed = self.shared.started.elapsed();
        report
    }

    /// Stops sending and waits for the requests in flight (each bounded by the timeout).
    pub async fn stop(self) -> LoadReport {
        self.ticker.abort();
        self.requests.close();
        // Every request has its own timeout, so this only guards against a stuck runtime.
        let _ =
            tokio::time::timeout(self.timeout + Duration::from_secs(1), self.requests.wait()).await;
        self.report()
    }

    /// Waits until the last few completed requests all succeeded with `version`.
    pub async fn wait_until_serving(&self, version: &str, timeout: Duration) -> anyhow::Result<()> {
        let mut completed = self.shared.completed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let tally = self.shared.tally();
                if tally.recent.len() == RECENT
                    && tally.recent.iter().all(|v| v.as_deref() == Some(version))
                {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, completed.changed())
                .await
                .is_err()
            {
                let recent: Vec<String> = self
                    .shared
                    .tally()
                    .recent
                    .iter()
                    .map(|v| v.clone().unwrap_or_else(|| "failed".to_owned()))
                    .collect();
                anyhow::bail!(
                    "not serving only {version} within {timeout:?}; last requests {recent:?}; {}",
                    self.report()
                );
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

async fn send_on_schedule(cfg: LoadConfig, shared: Arc<Shared>, requests: TaskTracker) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector);
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(cfg.rate.max(1))));
    // Burst: after a stall (2 cores, Docker busy) the missed requests are sent at once, so the
    // number sent stays rate x elapsed and a stall cannot hide a failure window.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    loop {
        ticks.tick().await;
        n += 1;
        let slow = cfg
            .slow_every
            .filter(|(every, _)| *every > 0 && n.is_multiple_of(u64::from(*every)))
            .map(|(_, ms)| ms);
        let uri = match slow {
            Some(ms) => format!("http://{}/?delay_ms={ms}", cfg.target),
            None => format!("http://{}/", cfg.target),
        };
        shared.tally().report.sent += 1;
        let at = shared.started.elapsed();
        let outcome = one_request(client.clone(), uri, cfg.host.clone(), cfg.timeout, at);
        let shared = shared.clone();
        requests.spawn(async move { shared.record(outcome.await) });
    }
}

async fn one_request(
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: String,
    host: String,
    timeout: Duration,
    at: Duration,
) -> Result<String, Failure> {
    let fail = |kind: &str, detail: String| Failure {
        at,
        kind: kind.to_owned(),
        detail,
    };
    let request = Request::get(uri)
        .header(HOST, host)
        .body(Empty::new())
        .map_err(|e| fail("request error", e.to_string()))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            let kind = if e.is_connect() {
                "connect error"
            } else {
                "request error"
            };
            fail(kind, error_chain(&e))
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail("request error", error_chain(&e)))?
            .to_bytes();
        Ok::<_, Failure>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            fail(
                "timeout",
                format!("no complete response within {timeout:?}"),
            )
        })??;
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if status != StatusCode::OK {
        let detail: String = text.chars().take(100).collect();
        return Err(fail(&format!("status {}", status.as_u16()), detail));
    }
    if text.is_empty() {
        return Err(fail("empty body", "200 without a version".to_owned()));
    }
    Ok(text)
}
