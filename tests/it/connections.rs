//! The HTTP server's connections against a real `hoist serve` with 1,024 file descriptors
//! (systemd's default soft limit): header and idle timeouts, and the connection cap that
//! keeps `/healthz` and webhooks answering while idle and slow-header connections pile up.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::support::daemon::{self, Daemon};

const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// At the cap: long enough that opening 1,400 connections (2.5 s here) times none out,
/// so each one closed sooner was evicted.
const CAP_HEADER_TIMEOUT: Duration = Duration::from_secs(6);
const CAP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// `server.max_connections`'s default.
const MAX_CONNECTIONS: usize = 512;
/// How late a close may come after its timeout on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);
const SERVICE: &str = "[[services]]\nname = \"web\"\nenvironment = \"test\"\n\
    compose_project = \"hoist-connections-none\"\ncompose_service = \"web\"\n\
    image = \"127.0.0.1:5999/none/web\"\ntrack = \"main\"\nhost = \"web.localhost\"\nport = 8000\n";

/// A daemon with these timeouts and `RLIMIT_NOFILE` at `nofile`, whose one service runs
/// nowhere (nothing here deploys).
async fn daemon(header: Duration, idle: Duration, nofile: u32) -> (tempfile::TempDir, Daemon) {
    crate::support::require_docker();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoist.toml");
    let server = format!(
        "header_timeout = \"{}s\"\nidle_timeout = \"{}s\"\n",
        header.as_secs(),
        idle.as_secs()
    );
    std::fs::write(
        &config,
        format!(
            "[state]\ndir = \"{}\"\n{}{SERVICE}",
            dir.path().join("state").display(),
            daemon::config(dir.path(), &server)
        ),
    )
    .unwrap();
    let d = Daemon::start_with_nofile(&config, &[], nofile).await;
    (dir, d)
}

/// Opens a connection, sends `first` at once and then `dribble` a byte every 500 ms, and
/// resolves to how long after opening the server closed it (`None`: not within 20 s).
async fn watch(
    addr: &str,
    first: &'static [u8],
    dribble: &'static [u8],
) -> JoinHandle<Option<Duration>> {
    let opened = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tokio::spawn(async move {
        if tcp.write_all(first).await.is_err() {
            return Some(opened.elapsed());
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.tick().await;
        let mut rest = dribble.iter();
        let mut buf = [0u8; 512];
        let deadline = opened + Duration::from_secs(20);
        loop {
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return Some(opened.elapsed()),
                    Ok(_) => {}
                },
                _ = tick.tick() => {
                    if let Some(byte) = rest.next()
                        && tcp.write_all(&[*byte]).await.is_err()
                    {
                        return Some(opened.elapsed());
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => return None,
            }
        }
    })
}

async fn closings(tasks: Vec<JoinHandle<Option<Duration>>>) -> Vec<Duration> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .unwrap()
                .expect("the server closed the connection within 20 s"),
        );
    }
    out
}

fn open_fds(d: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.pid())).map_or(0, Iterator::count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_slow_header_connections_are_closed_at_their_timeouts() {
    // 700 files leave fewer than 256 beside the 512 connections: said at start.
    let (_dir, d) = daemon(HEADER_TIMEOUT, IDLE_TIMEOUT, 700).await;
    d.wait_for_log(
        "The open-file limit leaves fewer than 256",
        Duration::from_secs(5),
    )
    .await;
    let addr = d.url.trim_start_matches("http://").to_string();
    let mut silent = Vec::new();
    let mut dribbling = Vec::new();
    for _ in 0..10 {
        silent.push(watch(&addr, b"", b"").await);
        dribbling.push(watch(&addr, b"G", b"ET /healthz HTTP/1.1\r\nHost: hoist\r\n").await);
    }
    for closed in closings(silent).await {
        assert!(
            closed >= IDLE_TIMEOUT - Duration::from_millis(100) && closed < IDLE_TIMEOUT + MARGIN,
            "a silent connection closed after {closed:?}, not at the idle timeout ({IDLE_TIMEOUT:?})"
        );
    }
    // Each byte keeps it from being idle: only the header timeout closes it.
    for closed in closings(dribbling).await {
        assert!(
            closed >= HEADER_TIMEOUT - Duration::from_millis(100)
                && closed < HEADER_TIMEOUT + MARGIN,
            "a slow header was closed after {closed:?}, not at the header timeout ({HEADER_TIMEOUT:?})"
        );
    }
    assert_eq!(d.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_connection_cap_healthz_and_webhooks_still_answer() {
    let (_dir, d) = daemon(CAP_HEADER_TIMEOUT, CAP_IDLE_TIMEOUT, 1024).await;
    let addr = d.url.trim_start_matches("http://").to_string();
    let before = open_fds(&d);
    let clock = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..1100 {
        tasks.push(watch(&addr, b"", b"").await);
    }
    for _ in 0..300 {
        tasks.push(watch(&addr, b"POST /webhooks/gi", b"").await);
    }
    let opening = clock.elapsed();
    let fds = open_fds(&d);
    println!(
        "1,400 connections opened in {opening:?}; the daemon holds {fds} fds ({before} before)"
    );
    // Evicted connections close a moment after the connection that took their slot.
    assert!(
        fds <= before + MAX_CONNECTIONS + 64,
        "the daemon holds {fds} file descriptors ({before} before the connections)"
    );

    let clock = Instant::now();
    let health = d.get("/healthz").await;
    let healthz = clock.elapsed();
    assert_eq!(health.status, 200, "{:?}", health.body);
    let clock = Instant::now();
    let ping = d
        .deliver(
            "ping",
            "9a3c0f1e-2b4d-11f0-8e1a-0242ac120002",
            br#"{"zen":"Keep it logically awesome."}"#,
        )
        .await;
    let delivery = clock.elapsed();
    assert_eq!(ping.status, 200, "{:?}", ping.body);
    println!("at the cap: /healthz answered in {healthz:?}, a signed delivery in {delivery:?}");
    assert!(
        healthz < Duration::from_secs(1),
        "/healthz took {healthz:?}"
    );
    assert!(
        delivery < Duration::from_secs(1),
        "the delivery took {delivery:?}"
    );

    let closed = closings(tasks).await;
    let latest = closed.iter().max().copied().unwrap_or_default();
    let evicted = closed
        .iter()
        .filter(|c| **c < CAP_IDLE_TIMEOUT - Duration::from_millis(500))
        .count();
    println!(
        "all closed by the server, the last after {latest:?}; {evicted} before any timeout (evicted at the cap)"
    );
    assert!(
        latest < CAP_HEADER_TIMEOUT + MARGIN,
        "a connection stayed {latest:?}"
    );
    assert!(
        evicted >= 1400 - MAX_CONNECTIONS - 100,
        "only {evicted} connections were closed for newer ones"
    );
    let log = d.log();
    assert!(
        !log.contains("Cannot accept") && !log.contains("open-file limit"),
        "{log}"
    );
    let (rss, peak) = d.memory_kb();
    println!("daemon memory after the cap: RSS {rss} kB, peak {peak} kB");
}
