//! What outsiders send never forges a line of hoist's log: values from requests are
//! escaped and capped, and lines about refused requests are rate-limited.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::daemon::{self, Daemon};

const TOKEN: &str = "t0ken";

/// A daemon with one service it never deploys (nothing listens at its registry) and an
/// admin token: enough for the HTTP edge, no Docker project or registry needed.
async fn edge_daemon(dir: &Path) -> Daemon {
    std::fs::write(dir.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(dir.join(".env"), "").unwrap();
    let server = format!(
        "admin_token_file = \"{}\"",
        dir.join("admin-token").display()
    );
    let config = format!(
        r#"[state]
dir = "{state}"

[traefik]
network = "hoist-logs-test"
entrypoints = ["websecure"]

[[services]]
name = "web"
environment = "stage"
compose_project = "hoist-logs-test"
image = "127.0.0.1:9/acme/web"
track = "latest"
host = "web.test"
port = 8000
env_file = "{env}"
env_var = "WEB_IMAGE"

{daemon}"#,
        state = dir.join("state").display(),
        env = dir.join(".env").display(),
        daemon = daemon::config(dir, &server),
    );
    let path = dir.join("hoist.toml");
    std::fs::write(&path, config).unwrap();
    Daemon::start(&path, &[]).await
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_name_with_newlines_and_escapes_forges_no_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = edge_daemon(dir.path()).await;
    let http = reqwest::Client::new();
    let forged = "forged%20INFO%20hoist::rollout:%20Deployed";
    for token in [None, Some("wrong"), Some(TOKEN)] {
        let mut request = http.post(format!(
            "{}/api/services/web%0A{forged}%1B[31m/deploy",
            d.url
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, if token == Some(TOKEN) { 404 } else { 401 });
    }
    d.wait_for_log("reason=WrongToken", Duration::from_secs(10))
        .await;
    let log = d.log();
    assert!(
        !log.lines().any(|l| l.starts_with("forged")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\x1b'), "a raw ESC byte:\n{log:?}");
    assert!(
        log.contains(r"service=web\nforged INFO hoist::rollout: Deployed\u{1b}[31m"),
        "the name is shown escaped:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_logged_a_few_a_second_with_a_count_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = edge_daemon(dir.path()).await;
    let http = reqwest::Client::new();
    let refused = "Refused an admin request";
    let start = Instant::now();
    for _ in 0..200 {
        let r = http
            .post(format!("{}/api/services/web/deploy", d.url))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let burst = start.elapsed();
    // At most 5 a second: the burst spans ceil(burst) windows at most.
    let windows = usize::try_from(burst.as_secs()).unwrap() + 1;
    let logged = count(&d.log(), refused);
    assert!(
        (1..=5 * windows).contains(&logged),
        "{logged} lines for 200 refusals in {burst:?}"
    );
    // The first refusal in a new window says how many were left out.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 200;
    loop {
        sent += 1;
        let r = http
            .post(format!("{}/api/services/web/deploy", d.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let log = d.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(refused)).collect();
        let counted: usize = lines
            .iter()
            .map(|l| {
                l.split("suppressed=")
                    .nth(1)
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .sum();
        if counted > 0 {
            // Every refusal is either logged or counted, never both.
            assert!(lines.len() + counted <= sent, "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no count of left-out lines:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_state_database_and_loose_secret_files_are_logged_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state").join("hoist.db"), "").unwrap();
    // daemon::config writes the webhook secret with the default mode, 0644.
    let d = edge_daemon(dir.path()).await;
    let log = d.log();
    let empty = log
        .lines()
        .find(|l| l.contains("The state database exists but is empty (0 bytes)"))
        .unwrap_or_else(|| panic!("no word of the empty database:\n{log}"));
    assert!(empty.contains("hoist.db"), "{empty}");
    assert!(
        log.lines()
            .any(|l| l.contains("Secret file open to other users")
                && l.contains("key=github.webhook_secret_file")
                && l.contains("every user can read it")),
        "{log}"
    );
    // A database hoist has written is not empty: no such line at the next start.
    drop(d);
    let again = edge_daemon(dir.path()).await;
    assert!(
        !again.log().contains("is empty (0 bytes)"),
        "{}",
        again.log()
    );
}
