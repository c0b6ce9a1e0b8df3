//! A stand-in for GitHub's REST API (which cannot be reached here), for the deployments
//! hoist reports and for notification receivers: records every request, and can be told
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

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Recorded>>,
    next_id: Mutex<u64>,
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
