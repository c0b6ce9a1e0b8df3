//! `hoist-demo`: the app that test images run, a tiny HTTP server that reports its version
//! and drains like a well-behaved service on SIGTERM; `hoist-demo check` is its healthcheck.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Settings {
    version: String,
    port: u16,
    broken: bool,
    shutdown_delay: Duration,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let port = match var("DEMO_PORT") {
            Some(v) => v.parse().map_err(|e| format!("DEMO_PORT={v:?}: {e}"))?,
            None => 8000,
        };
        let delay_ms: u64 = match var("DEMO_SHUTDOWN_DELAY_MS") {
            Some(v) => v
                .parse()
                .map_err(|e| format!("DEMO_SHUTDOWN_DELAY_MS={v:?}: {e}"))?,
            None => 0,
        };
        Ok(Settings {
            version: var("DEMO_VERSION").unwrap_or_else(|| "dev".to_owned()),
            port,
            broken: var("DEMO_BROKEN").as_deref() == Some("1"),
            shutdown_delay: Duration::from_millis(delay_ms),
        })
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hoist-demo: bad configuration: {e}");
            return ExitCode::from(64);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("check") {
        return check(settings.port);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoist-demo: cannot start runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("hoist-demo: {e}");
            ExitCode::from(1)
        }
    }
}

/// The image's HEALTHCHECK: plain std and one request, so it starts fast and needs no shell.
fn check(port: u16) -> ExitCode {
    match probe(port, Duration::from_secs(2)) {
        Ok(200) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("unhealthy: status {status}");
            ExitCode::from(1)
        }
        Err(e) => {
            println!("unhealthy: {e}");
            ExitCode::from(1)
        }
    }
}

fn probe(port: u16, budget: Duration) -> std::io::Result<u16> {
    let deadline = Instant::now() + budget;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, left()?)?;
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    // The status line is all we need; stop reading as soon as it is complete.
    while !head.contains(&b'\n') {
        stream.set_read_timeout(Some(left()?))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line {:?}", line.lines().next().unwrap_or("")),
            )
        })
}

async fn serve(settings: Settings) -> Result<(), String> {
    let addr = SocketAddr::from(([0, 0, 0, 0], settings.port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    println!(
        "listening on {addr} version={} broken={} shutdown_delay_ms={}",
        settings.version,
        settings.broken,
        settings.shutdown_delay.as_millis()
    );

    let version = Bytes::from(format!("{}\n", settings.version));
    let broken = settings.broken;
    // `/hiccup?ms=N`: `/healthz` fails for the next N ms (an app's short hiccup).
    let hiccup: Hiccup = Arc::default();
    let draining = CancellationToken::new();
    let connections = TaskTracker::new();
    let signal_name = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Accept errors (e.g. out of file descriptors) are transient.
                        println!("accept failed: {e}");
                        continue;
                    }
                };
                let version = version.clone();
                let draining = draining.clone();
                let hiccup = hiccup.clone();
                connections.spawn(async move {
                    let svc = service_fn(move |req| answer(req, version.clone(), broken, hiccup.clone()));
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = draining.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        }
    };
    let signalled = Instant::now();
    // New connections must be refused from now on, exactly as a real app closing its socket.
    drop(listener);
    println!(
        "{signal_name} received, draining {} connections",
        connections.len()
    );
    draining.cancel();
    connections.close();
    tokio::join!(
        connections.wait(),
        tokio::time::sleep(settings.shutdown_delay)
    );
    println!("exiting after {} ms", signalled.elapsed().as_millis());
    Ok(())
}

/// Until when `/healthz` fails.
type Hiccup = Arc<Mutex<Option<Instant>>>;

async fn answer(
    req: Request<Incoming>,
    version: Bytes,
    broken: bool,
    hiccup: Hiccup,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(resp)
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"));
    }
    match req.uri().path() {
        "/" => {
            if let Some(ms) = param(req.uri().query(), "delay_ms") {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            reply(StatusCode::OK, version)
        }
        "/hiccup" => {
            let ms = param(req.uri().query(), "ms").unwrap_or(1000);
            *hiccup
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(Instant::now() + Duration::from_millis(ms));
            println!("health fails for the next {ms} ms");
            reply(StatusCode::OK, Bytes::from_static(b"hiccup\n"))
        }
        "/healthz" if broken => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"broken\n"),
        ),
        "/healthz"
            if hiccup
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|until| Instant::now() < until) =>
        {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"hiccup\n"),
            )
        }
        "/healthz" => reply(StatusCode::OK, Bytes::from_static(b"ok\n")),
        _ => reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    }
}

/// A number in the query string, e.g. `delay_ms=300`.
fn param(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}
