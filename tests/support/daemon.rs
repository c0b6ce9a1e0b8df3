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
        Daemon::spawn(Command::new(HOIST), config, env).await
    }

    /// [`Daemon::start`] with `RLIMIT_NOFILE` at `nofile` (soft and hard), through
    /// util-linux's `prlimit`, which sets it and then executes hoist in its place.
    pub async fn start_with_nofile(config: &Path, env: &[(&str, &str)], nofile: u32) -> Daemon {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg(HOIST);
        Daemon::spawn(command, config, env).await
    }

    async fn spawn(mut command: Command, config: &Path, env: &[(&str, &str)]) -> Daemon {
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

    /// POSTs a webhook delivery signed with [`SECRET`], its id the GUID [`guid`] derives
    /// from `name` (hoist refuses ids of any other shape, as GitHub sends none).
    pub async fn deliver(&self, event: &str, name: &str, body: &[u8]) -> Reply {
        let signature = hoist::github::webhook::sign(SECRET.as_bytes(), body);
        self.post_webhook(
            &[
                ("x-github-event", event),
                ("x-github-delivery", &guid(name)),
                ("x-hub-signature-256", &signature),
                ("content-type", "application/json"),
            ],
            body.to_vec(),
        )
        .await
    }

    /// [`Daemon::deliver`] as GitHub's hook `hook` sends it (`X-GitHub-Hook-ID`).
    pub async fn deliver_from(&self, hook: &str, event: &str, name: &str, body: &[u8]) -> Reply {
        let signature = hoist::github::webhook::sign(SECRET.as_bytes(), body);
        self.post_webhook(
            &[
                ("x-github-event", event),
                ("x-github-delivery", &guid(name)),
                ("x-github-hook-id", hook),
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
        self.signal("-TERM");
    }

    /// Sends SIGHUP (`systemctl reload`).
    pub fn hang_up(&self) {
        self.signal("-HUP");
    }

    fn signal(&self, flag: &str) {
        let pid = self.pid();
        let out = std::process::Command::new("kill")
            .args([flag, &pid.to_string()])
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

/// A delivery id shaped like GitHub's (a random GUID), derived from `name`: sequential
/// ids would hide what remembering ids in random order costs. Names need only differ
/// within one test: each starts a daemon with a new state directory.
/// POSTs `body` as JSON to the daemon's `path`, with `token` as the bearer; the status and
/// the JSON answer (null when there is none).
pub async fn post_json(
    d: &Daemon,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", d.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

pub fn guid(name: &str) -> String {
    use sha2::Digest as _;
    let h = hex::encode(sha2::Sha256::digest(name));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A `package` (GHCR) delivery saying `image:tag` now is `digest`, shaped like GitHub's:
/// compact JSON of about 25 KB in some 370 fields (a repository of some 80 fields, users,
/// the organization, the image's labels, manifest layers and README), not one long string,
/// so that parsing costs what it costs on a real delivery.
pub fn package_event(repository: &str, image: &str, tag: &str, digest: &str) -> Vec<u8> {
    use serde_json::{Value, json};
    let (owner, _) = repository.split_once('/').unwrap_or((repository, ""));
    let api = "https://api.github.com";
    let user = |login: &str, id: u64| {
        let u = format!("{api}/users/{login}");
        json!({
            "login": login, "id": id, "node_id": format!("MDQ6VXNlcj{id}"),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
            "gravatar_id": "", "url": u, "html_url": format!("https://github.com/{login}"),
            "followers_url": format!("{u}/followers"),
            "following_url": format!("{u}/following{{/other_user}}"),
            "gists_url": format!("{u}/gists{{/gist_id}}"),
            "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{u}/subscriptions"),
            "organizations_url": format!("{u}/orgs"), "repos_url": format!("{u}/repos"),
            "events_url": format!("{u}/events{{/privacy}}"),
            "received_events_url": format!("{u}/received_events"),
            "type": "User", "user_view_type": "public", "site_admin": false
        })
    };
    let repo_url = format!("{api}/repos/{repository}");
    let mut repo = json!({
        "id": 185_882_436u64, "node_id": "MDEwOlJlcG9zaXRvcnkxODU4ODI0MzY=",
        "name": repository.rsplit('/').next().unwrap_or(repository),
        "full_name": repository, "private": true, "owner": user(owner, 38_302_899),
        "html_url": format!("https://github.com/{repository}"),
        "description": "The web service", "fork": false, "url": repo_url,
        "created_at": "2024-05-09T22:53:26Z", "updated_at": "2026-11-30T23:24:42Z",
        "pushed_at": "2026-11-30T23:27:00Z",
        "git_url": format!("git://github.com/{repository}.git"),
        "ssh_url": format!("git@github.com:{repository}.git"),
        "clone_url": format!("https://github.com/{repository}.git"),
        "svn_url": format!("https://github.com/{repository}"), "homepage": null
    });
    // In two parts: one json! of the whole repository exceeds the macro recursion limit.
    let counts = json!({
        "size": 5210, "stargazers_count": 12, "watchers_count": 12, "language": "Rust",
        "has_issues": true, "has_projects": true, "has_downloads": true, "has_wiki": false,
        "has_pages": false, "has_discussions": false, "forks_count": 3, "mirror_url": null,
        "archived": false, "disabled": false, "open_issues_count": 4, "license": null,
        "allow_forking": true, "is_template": false, "web_commit_signoff_required": false,
        "topics": ["deploy", "docker", "rust"], "visibility": "private", "forks": 3,
        "open_issues": 4, "watchers": 12, "default_branch": "main"
    });
    if let (Some(repo), Value::Object(counts)) = (repo.as_object_mut(), counts) {
        repo.extend(counts);
    }
    // Each `<key>_url` is the repository's API URL plus a path (GitHub's URI templates).
    for (key, path) in [
        ("forks", "forks"),
        ("keys", "keys{/key_id}"),
        ("collaborators", "collaborators{/collaborator}"),
        ("teams", "teams"),
        ("hooks", "hooks"),
        ("issue_events", "issues/events{/number}"),
        ("events", "events"),
        ("assignees", "assignees{/user}"),
        ("branches", "branches{/branch}"),
        ("tags", "tags"),
        ("blobs", "git/blobs{/sha}"),
        ("git_tags", "git/tags{/sha}"),
        ("git_refs", "git/refs{/sha}"),
        ("trees", "git/trees{/sha}"),
        ("statuses", "statuses/{sha}"),
        ("languages", "languages"),
        ("stargazers", "stargazers"),
        ("contributors", "contributors"),
        ("subscribers", "subscribers"),
        ("subscription", "subscription"),
        ("commits", "commits{/sha}"),
        ("git_commits", "git/commits{/sha}"),
        ("comments", "comments{/number}"),
        ("issue_comment", "issues/comments{/number}"),
        ("contents", "contents/{+path}"),
        ("compare", "compare/{base}...{head}"),
        ("merges", "merges"),
        ("archive", "{archive_format}{/ref}"),
        ("downloads", "downloads"),
        ("issues", "issues{/number}"),
        ("pulls", "pulls{/number}"),
        ("milestones", "milestones{/number}"),
        ("notifications", "notifications{?since,all,participating}"),
        ("labels", "labels{/name}"),
        ("releases", "releases{/id}"),
        ("deployments", "deployments"),
    ] {
        repo[format!("{key}_url")] = Value::from(format!("{repo_url}/{path}"));
    }
    let layers: Vec<Value> = (0u64..44)
        .map(|i| {
            json!({
                "digest": format!("sha256:{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
                "size": 1000 + i * 7919
            })
        })
        .collect();
    let readme =
        "## web\n\nThe service behind web.example.com: build with `cargo build --release`, \
                  configure with `WEB_*` variables, see docs/ for the API.\n"
            .repeat(56);
    let source = format!("https://github.com/{repository}");
    let revision = "6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b";
    let labels = json!({
        "description": "The web service", "source": source, "revision": revision,
        "image_url": source, "licenses": "MIT",
        "all_labels": {
            "org.opencontainers.image.created": "2026-11-30T23:28:29Z",
            "org.opencontainers.image.description": "The web service",
            "org.opencontainers.image.licenses": "MIT",
            "org.opencontainers.image.revision": revision,
            "org.opencontainers.image.source": source,
            "org.opencontainers.image.title": "web",
            "org.opencontainers.image.url": source,
            "org.opencontainers.image.version": tag
        }
    });
    let manifest = json!({
        "digest": digest,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "uri": format!("repositories/{repository}/manifests/{digest}"),
        "size": 4_381,
        "config": {
            "digest": format!("sha256:{:064x}", 7u64),
            "media_type": "application/vnd.oci.image.config.v1+json",
            "size": 7_205
        },
        "layers": layers
    });
    let packages = format!("https://github.com/orgs/{owner}/packages/container");
    let version = json!({
        "id": 57_755_790, "version": digest, "name": digest,
        "description": "The web service", "summary": "The web service", "body": readme,
        "body_html": "", "manifest": "", "html_url": format!("{packages}/web/57755790"),
        "target_commitish": "main", "target_oid": revision,
        "created_at": "2026-11-30T23:28:29Z", "updated_at": "2026-11-30T23:28:29Z",
        "metadata": [],
        "container_metadata": {
            "tag": { "name": tag, "digest": digest }, "labels": labels, "manifest": manifest
        },
        "package_files": [],
        "author": user("github-actions[bot]", 41_898_282),
        "installation_command": format!("docker pull {image}:{tag}"),
        "package_url": format!("{image}:{tag}")
    });
    let package = json!({
        "id": 10_696, "name": "web", "namespace": owner, "description": "The web service",
        "ecosystem": "CONTAINER", "package_type": "CONTAINER",
        "html_url": format!("{packages}/package/web"),
        "created_at": "2024-05-09T23:28:29Z", "updated_at": "2026-11-30T23:28:29Z",
        "owner": user(owner, 38_302_899),
        "package_version": version,
        "registry": {
            "about_url": "https://docs.github.com/packages/learn-github-packages/introduction-to-github-packages",
            "name": "GitHub CONTAINER registry", "type": "CONTAINER",
            "url": "https://ghcr.io", "vendor": "GitHub Inc"
        }
    });
    let org_url = format!("{api}/orgs/{owner}");
    let organization = json!({
        "login": owner, "id": 38_302_899, "node_id": "MDEyOk9yZ2FuaXphdGlvbjM4MzAyODk5",
        "url": org_url, "repos_url": format!("{org_url}/repos"),
        "events_url": format!("{org_url}/events"), "hooks_url": format!("{org_url}/hooks"),
        "issues_url": format!("{org_url}/issues"),
        "members_url": format!("{org_url}/members{{/member}}"),
        "public_members_url": format!("{org_url}/public_members{{/member}}"),
        "avatar_url": "https://avatars.githubusercontent.com/u/38302899?v=4",
        "description": ""
    });
    json!({
        "action": "published",
        "package": package,
        "repository": repo,
        "organization": organization,
        "sender": user("ci-bot", 21_031_067)
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
