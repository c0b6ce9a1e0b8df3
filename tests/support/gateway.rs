//! A token-auth front for a test registry, the way GHCR and Docker Hub authenticate:
//! requests without a bearer token get a `WWW-Authenticate: Bearer realm=...` challenge, the
//! realm issues tokens for Basic credentials, and requests with a valid token are passed on
//! to the real registry behind it. It can also answer 429 on demand and shrink tag-list
//! pages so that pagination is exercised.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

pub struct Gateway {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    upstream: String,
    user: String,
    password: String,
    tokens_issued: AtomicU32,
    /// Retry-After seconds while rate limiting; 0: not limiting.
    rate_limited: AtomicU64,
    log: Mutex<Vec<(Instant, String, u16)>>,
    page_size: Option<u32>,
    http: reqwest::Client,
}

impl Gateway {
    /// Fronts the registry at `upstream` (`127.0.0.1:PORT`); tokens are issued for
    /// `user`/`password`. `page_size` rewrites `n=` of tag listings.
    pub async fn start(
        upstream: &str,
        user: &str,
        password: &str,
        page_size: Option<u32>,
    ) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("gateway addr");
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            tokens_issued: AtomicU32::new(0),
            rate_limited: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            page_size,
            http: reqwest::Client::new(),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, addr, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Gateway { addr, state, task }
    }

    pub fn tokens_issued(&self) -> u32 {
        self.state.tokens_issued.load(Ordering::SeqCst)
    }

    /// While set, every registry request is answered `429 Retry-After: <secs>`.
    pub fn set_rate_limited(&self, retry_after: Option<u64>) {
        self.state
            .rate_limited
            .store(retry_after.unwrap_or(0), Ordering::SeqCst);
    }

    /// (arrival, path, status) of every registry API request except the `/v2/` ping.
    pub fn requests(&self) -> Vec<(Instant, String, u16)> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(
    status: StatusCode,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(body.into())).expect("response")
}

async fn handle(state: &State, me: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let arrived = Instant::now();
    let path = req.uri().path().to_string();
    let response = answer(state, me, req).await;
    if path.starts_with("/v2/") && path != "/v2/" {
        state.log.lock().unwrap_or_else(|e| e.into_inner()).push((
            arrived,
            path,
            response.status().as_u16(),
        ));
    }
    response
}

async fn answer(state: &State, me: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if req.uri().path() == "/token" {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", state.user, state.password))
        );
        if auth != expected {
            return reply(
                StatusCode::UNAUTHORIZED,
                &[],
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
        }
        let n = state.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
        return reply(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            format!(r#"{{"token":"tok-{n}","expires_in":300}}"#),
        );
    }
    let retry_after = state.rate_limited.load(Ordering::SeqCst);
    if retry_after > 0 && req.uri().path() != "/v2/" {
        return reply(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after", retry_after.to_string())],
            "slow down",
        );
    }
    if !auth.starts_with("Bearer tok-") {
        let challenge = format!(
            r#"Bearer realm="http://{me}/token",service="test-registry",scope="repository:x:pull""#
        );
        return reply(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", challenge)],
            "",
        );
    }
    let mut path_and_query = req
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    if let Some(n) = state.page_size {
        path_and_query = path_and_query.replace("n=1000", &format!("n={n}"));
    }
    let url = format!("http://{}{path_and_query}", state.upstream);
    let mut upstream = state.http.request(req.method().clone(), &url);
    // Every value: Docker sends one Accept header per manifest type it takes, and a
    // registry asked with the first alone may answer another form of the manifest, under
    // another digest.
    for name in ["accept", "range"] {
        for v in req.headers().get_all(name) {
            upstream = upstream.header(name, v.clone());
        }
    }
    let Ok(response) = upstream.send().await else {
        return reply(
            StatusCode::BAD_GATEWAY,
            &[],
            "upstream registry unreachable",
        );
    };
    let status = response.status();
    // Enough of the registry's headers for Docker to pull through the gateway.
    let headers: Vec<(&str, String)> = [
        "docker-content-digest",
        "docker-distribution-api-version",
        "content-type",
        "content-length",
        "link",
        "etag",
    ]
    .into_iter()
    .filter_map(|name| {
        Some((
            name,
            response.headers().get(name)?.to_str().ok()?.to_string(),
        ))
    })
    .collect();
    let body = response.bytes().await.unwrap_or_default();
    reply(status, &headers, body)
}
