//! A stand-in for GitHub's REST API (which cannot be reached here), for the deployments
//! hoist reports, the webhook deliveries hoist sweeps (`GET /repos/{o}/{r}/hooks/{h}/
//! deliveries` and `.../deliveries/{id}`, shaped as GitHub's `hook-delivery-item` and
//! `hook-delivery`) and for notification receivers: records every request, and can be told
//! to fail (HTTP 500) or to hang.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use bytes::Bytes;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// HTTP 500 to everything.
    Fail,
    /// Never answers.
    Hang,
    /// HTTP 500 to the first N requests, then normal.
    FailFirst(usize),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

/// A delivery GitHub made (or tried to make) to a repository hook.
#[derive(Debug, Clone)]
pub struct HookDelivery {
    pub repository: String,
    pub hook: u64,
    /// GitHub's id of the attempt.
    pub id: u64,
    /// `X-GitHub-Delivery`.
    pub guid: String,
    pub event: String,
    /// What the receiver answered (502: never reached it).
    pub status_code: u16,
    pub payload: serde_json::Value,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Recorded>>,
    next_id: Mutex<u64>,
    deliveries: Mutex<Vec<HookDelivery>>,
}

pub struct FakeGithub {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGithub {
    pub async fn start(behaviour: Behaviour) -> FakeGithub {
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            requests: Mutex::new(Vec::new()),
            next_id: Mutex::new(1000),
            deliveries: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake GitHub");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGithub {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Adds a delivery to its hook's list (listed newest first, as GitHub does).
    pub fn add_delivery(&self, delivery: HookDelivery) {
        self.shared.deliveries.lock().unwrap().push(delivery);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the recorded requests.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; requests so far: {:#?}",
                requests
                    .iter()
                    .map(|r| format!("{} {} {}", r.method, r.path, r.body))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    shared.requests.lock().unwrap().push(Recorded {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    let behaviour = {
        let mut b = shared.behaviour.lock().unwrap();
        let now = *b;
        if let Behaviour::FailFirst(n) = now {
            *b = if n <= 1 {
                Behaviour::Normal
            } else {
                Behaviour::FailFirst(n - 1)
            };
        }
        now
    };
    if behaviour == Behaviour::Normal
        && method == Method::GET
        && let Some(answer) = hook_deliveries(&shared, uri.path())
    {
        return answer;
    }
    match behaviour {
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behaviour::Fail | Behaviour::FailFirst(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"message":"Server Error"}"#,
        )
            .into_response(),
        Behaviour::Normal => {
            let id = {
                let mut next = shared.next_id.lock().unwrap();
                *next += 1;
                *next
            };
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                serde_json::json!({ "id": id, "url": format!("{}", uri.path()) }).to_string(),
            )
                .into_response()
        }
    }
}

/// `GET /repos/{o}/{r}/hooks/{h}/deliveries[/{id}]`, from the deliveries added.
fn hook_deliveries(shared: &Shared, path: &str) -> Option<axum::response::Response> {
    let rest = path.strip_prefix("/repos/")?;
    let (repo_and_hook, tail) = rest.split_once("/deliveries")?;
    let (repository, hook) = repo_and_hook.split_once("/hooks/")?;
    let hook: u64 = hook.parse().ok()?;
    let deliveries = shared.deliveries.lock().unwrap();
    let of_hook = deliveries
        .iter()
        .filter(|d| d.repository == repository && d.hook == hook);
    let json = |v: serde_json::Value| {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    let item = |d: &HookDelivery| {
        serde_json::json!({
            "id": d.id, "guid": d.guid, "delivered_at": "2026-12-06T12:00:00Z",
            "redelivery": false, "duration": 0.05, "status": if d.status_code < 300 { "OK" } else { "failed to connect" },
            "status_code": d.status_code, "event": d.event,
            "action": d.payload["action"], "installation_id": null, "repository_id": 185_882_436u64,
            "throttled_at": null
        })
    };
    match tail.strip_prefix('/') {
        None if tail.is_empty() => {
            let items: Vec<_> = of_hook.rev().map(item).collect();
            Some(json(serde_json::Value::Array(items)))
        }
        Some(id) => {
            let id: u64 = id.parse().ok()?;
            let Some(d) = of_hook.into_iter().find(|d| d.id == id) else {
                return Some((StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#).into_response());
            };
            let mut detail = item(d);
            detail["url"] = serde_json::json!(format!("https://api.github.com{path}"));
            detail["request"] = serde_json::json!({
                "headers": {
                    "X-GitHub-Delivery": d.guid, "X-GitHub-Event": d.event,
                    "X-GitHub-Hook-ID": d.hook.to_string(), "Content-Type": "application/json"
                },
                "payload": d.payload
            });
            detail["response"] = serde_json::json!({ "headers": {}, "payload": null });
            Some(json(detail))
        }
        None => None,
    }
}
