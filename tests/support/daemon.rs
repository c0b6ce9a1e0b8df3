//! `hoist serve` as a real process on port 0: started with a fixture's config, its log
//! collected, its address read from the "Listening on" line; killed on drop.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::hoist::HOIST;

pub const SECRET: &str = "It's a Secret to Everybody";

/// The TOML that turns the daemon on: a port-0 listener and a webhook secret file in
/// `dir`. `extra_server` goes into `[server]`.
pub fn config(dir: &Path, extra_server: &str) -> String {
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret file");
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra_server}\n[github]\nwebhook_secret_file = \"{}\"\n",
        secret.display()
    )
}

pub struct Daemon {
    child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
    http: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Daemon {
    /// Starts `hoist serve --config <config>` with `env` and waits until it listens.
    pub async fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(HOIST);
        command
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env(
                "RUST_LOG",
                std::env::var("HOIST_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("DOCKER_CONFIG", config.with_file_name("docker-client"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start hoist serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::channel(1);
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("Listening on http://").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = addr_tx.send(addr).await;
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "hoist serve did not start listening:\n{}",
                    log.lock().unwrap()
                )
            });
        Daemon {
            child,
            url: format!("http://{addr}"),
            log,
            http: reqwest::Client::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("daemon pid")
    }

    /// The daemon's resident and peak memory in kB, from /proc.
    pub fn memory_kb(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time (user + system) the daemon has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may contain spaces) start after ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the file, 12 and 13 after ')'. Linux
        // reports them in USER_HZ, which is 100 on every architecture Docker runs on.
        Duration::from_millis((ticks(11) + ticks(12)) * 10)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the daemon never logged {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs a webhook delivery signed with [`SECRET`] (or with `signature` when given).
    pub async fn deliver(&self, event: &str, delivery: &str, body: &[u8]) -> Reply {
        let signature = hoist::webhook::sign(SECRET.as_bytes(), body);
        self.post_webhook(
            &[
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &signature),
                ("content-type", "application/json"),
            ],
            body.to_vec(),
        )
        .await
    }

    pub async fn post_webhook(&self, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut request = self
            .http
            .post(format!("{}/webhooks/github", self.url))
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("POST /webhooks/github");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.pid();
        let out = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .output()
            .expect("kill");
        assert!(out.status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(&mut self, timeout: Duration) -> i32 {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "hoist serve did not exit within {timeout:?}:\n{}",
                    self.log()
                )
            })
            .expect("wait");
        // Let the log reader drain the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status.code().unwrap_or(-1)
    }
}

/// A `package` (GHCR) delivery saying `image:tag` now is `digest`, about 25 KB like a
/// real one.
pub fn package_event(repository: &str, image: &str, tag: &str, digest: &str) -> Vec<u8> {
    serde_json::json!({
        "action": "published",
        "package": {
            "name": "web",
            "package_type": "CONTAINER",
            "package_version": {
                "package_url": format!("{image}:{tag}"),
                "container_metadata": { "tag": { "name": tag, "digest": digest } }
            }
        },
        "repository": { "full_name": repository },
        "sender": { "login": "ci" },
        // Real deliveries carry much more; pad to a realistic size.
        "padding": "x".repeat(24_500)
    })
    .to_string()
    .into_bytes()
}

pub fn push_event(repository: &str, branch: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "after": "0123456789abcdef0123456789abcdef01234567",
        "deleted": false,
        "repository": { "full_name": repository }
    })
    .to_string()
    .into_bytes()
}
