//! The webhook endpoint against strangers, on a real `hoist serve` with no services: sizes
//! refused from the headers, bodies bounded in total, and metrics that made-up event names
//! cannot grow.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::daemon::{self, Daemon, guid};

const MIB: usize = 1 << 20;

/// A daemon that only answers HTTP: webhooks on, nothing to deploy.
async fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::Builder::new()
        .prefix("hoist-edge-")
        .tempdir()
        .expect("state dir");
    let config = dir.path().join("hoist.toml");
    let text = format!(
        "services = []\n\n[state]\ndir = \"{}\"\n\n[traefik]\nnetwork = \"hoist-edge\"\n\n{}",
        dir.path().join("state").display(),
        daemon::config(dir.path(), "")
    );
    std::fs::write(&config, text).expect("config");
    let d = Daemon::start(&config, &[]).await;
    (dir, d)
}

/// The head of a `POST /webhooks/github` of `length` bytes with `headers`.
fn head(length: usize, headers: &[(&str, &str)]) -> String {
    let mut head = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: hoist\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head + "\r\n"
}

/// Sends `head`, then from `delay` on a body of `length` bytes in 1 MiB pieces while
/// reading the response; returns the response's head (empty if none came within 20 s).
/// The body stops as soon as the response is in.
async fn post_raw(d: &Daemon, head: String, length: usize, delay: Duration) -> String {
    let addr = d.url.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(head.as_bytes()).await.expect("send the head");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let piece = vec![b' '; MIB];
        let mut sent = 0;
        while sent < length {
            let n = piece.len().min(length - sent);
            if wr.write_all(&piece[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
        wr
    });
    let reader = async {
        let mut got = Vec::new();
        let mut piece = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut piece).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&piece[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    let response = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .unwrap_or_default();
    writer.abort();
    response
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Well-formed GitHub headers with a signature that matches nothing.
fn forged(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", guid(id)),
        ("x-hub-signature-256", format!("sha256={}", "ab".repeat(32))),
    ]
}

fn borrowed<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_content_length_is_refused_before_the_body() {
    let (_dir, d) = daemon().await;
    let headers = forged("too-big");
    let clock = Instant::now();
    // The body never comes: the answer must not wait for it.
    let response = post_raw(
        &d,
        head(30 * MIB, &borrowed(&headers)),
        30 * MIB,
        Duration::from_secs(60),
    )
    .await;
    let took = clock.elapsed();
    println!("Content-Length: {} answered in {took:?}", 30 * MIB);
    assert_eq!(status(&response), 413, "{response}");
    assert!(took < Duration::from_secs(1), "answered in {took:?}");

    // A client that sends the body anyway (as reqwest does) still reads the answer.
    let huge = d
        .post_webhook(&borrowed(&headers), vec![b' '; 30 * MIB])
        .await;
    assert_eq!(huge.status, 413, "{:?}", huge.body);

    let bad_id = [
        ("x-github-event", "push"),
        ("x-github-delivery", "delivery-1"),
    ];
    let huge_id = "a".repeat(300 * 1024);
    let long_id = [
        ("x-github-event", "push"),
        ("x-github-delivery", huge_id.as_str()),
    ];
    for h in [&bad_id[..], &long_id[..]] {
        let signature = hoist::github::webhook::sign(daemon::SECRET.as_bytes(), b"{}");
        let mut h = h.to_vec();
        h.push(("x-hub-signature-256", &signature));
        let r = d.post_webhook(&h, b"{}".to_vec()).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
    }
    assert!(!d.log().contains(&huge_id[..64]), "the long id was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_large_bodies_stay_bounded_and_a_signed_delivery_is_answered() {
    let (_dir, d) = daemon().await;
    let d = std::sync::Arc::new(d);
    let (rss_before, _) = d.memory_kb();
    let body = 24 * MIB;
    // Without GitHub headers: refused from the headers, the bodies never read.
    let strangers = futures_util::future::join_all((0..40).map(|_| {
        let d = d.clone();
        async move { post_raw(&d, head(body, &[]), body, Duration::from_millis(300)).await }
    }));
    let signed = async {
        let ping = br#"{"zen":"Design for failure.","hook_id":1}"#;
        let clock = Instant::now();
        let r = d.deliver("ping", "ping-during-the-flood", ping).await;
        (r.status, clock.elapsed())
    };
    let (refused, (ping, ping_took)) = tokio::join!(strangers, signed);
    let statuses: Vec<u16> = refused.iter().map(|r| status(r)).collect();
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    assert_eq!(ping, 200);
    assert!(
        ping_took < Duration::from_secs(1),
        "ping took {ping_took:?}"
    );
    let (_, strangers_peak) = d.memory_kb();
    println!(
        "40 x 24 MiB bodies without GitHub headers: all 400, VmRSS {rss_before} kB before, \
         VmHWM {strangers_peak} kB after; a signed ping meanwhile answered in {ping_took:?}"
    );
    assert!(strangers_peak < 100 * 1024, "peak RSS {strangers_peak} kB");

    // With well-formed forged headers the bodies are read, but only as many as the budget
    // of bytes in flight holds; the rest are told to come back later.
    let forgers = futures_util::future::join_all((0..40).map(|i| {
        let d = d.clone();
        async move {
            let h = forged(&format!("forged-{i}"));
            post_raw(
                &d,
                head(body, &borrowed(&h)),
                body,
                Duration::from_millis(300),
            )
            .await
        }
    }))
    .await;
    let statuses: Vec<u16> = forgers.iter().map(|r| status(r)).collect();
    let read = statuses.iter().filter(|s| **s == 401).count();
    let busy: Vec<&String> = forgers.iter().filter(|r| status(r) == 503).collect();
    assert!(
        read >= 1 && read + busy.len() == statuses.len(),
        "{statuses:?}"
    );
    assert!(busy.len() >= 30, "{statuses:?}");
    assert!(
        busy.iter()
            .all(|r| r.to_ascii_lowercase().contains("retry-after: 5")),
        "{busy:?}"
    );
    let (rss, peak) = d.memory_kb();
    println!(
        "40 x 24 MiB bodies with forged well-formed headers: {read} read, {} answered 503; \
         VmRSS {rss} kB, VmHWM {peak} kB",
        busy.len()
    );
    assert!(peak < 100 * 1024, "peak RSS {peak} kB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_event_names_are_one_metrics_label() {
    let (_dir, d) = daemon().await;
    let d = std::sync::Arc::new(d);
    let (rss_before, _) = d.memory_kb();
    const N: usize = 20_000;
    let mut statuses = Vec::with_capacity(N);
    for batch in 0..N / 50 {
        let replies = futures_util::future::join_all((0..50).map(|i| {
            let d = d.clone();
            async move {
                let event = format!("made-up-event-{batch}-{i}-{}", "x".repeat(200));
                let id = guid(&event);
                let h = [
                    ("x-github-event", event.as_str()),
                    ("x-github-delivery", id.as_str()),
                ];
                d.post_webhook(&h, b"{}".to_vec()).await.status
            }
        }))
        .await;
        statuses.extend(replies);
    }
    assert!(statuses.iter().all(|s| *s == 401), "unsigned: refused");
    let metrics = d.get("/metrics").await.body;
    let metrics = metrics.as_str().unwrap_or_default();
    let (rss, _) = d.memory_kb();
    println!(
        "{N} unsigned deliveries with made-up event names: /metrics {} bytes, VmRSS {rss_before} -> {rss} kB",
        metrics.len()
    );
    assert!(
        metrics.contains(&format!(
            "hoist_webhook_deliveries_total{{event=\"other\",result=\"refused\"}} {N}"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("made-up"), "{metrics}");
    assert!(metrics.len() < 50 * 1024, "{} bytes", metrics.len());
    assert!(
        rss < rss_before + 20 * 1024,
        "RSS grew from {rss_before} to {rss} kB"
    );
}
