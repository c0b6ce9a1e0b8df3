//! The HTTP server's accept loop: HTTP/1.1 connections served by the router, with a
//! header timeout, an idle timeout and a cap on the connections held at once.
//!
//! At the cap a new connection is still accepted, and the connection that has been silent
//! the longest with no request in flight is closed for it (as nginx reuses idle keep-alive
//! connections when it runs short). Refusing or queueing instead would let anyone holding
//! enough idle sockets lock out `/healthz`, GitHub's deliveries and the admin API until the
//! idle timeout; evicting costs an attacker's socket, never a request in progress. Only when
//! every connection has a request in flight is the new one closed at once. The cap keeps
//! file descriptors free for Docker, SQLite and compose, whose failure mid-rollout is worse
//! than a refused connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

use crate::util::lock;

/// `[server]`'s connection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Serves `router` on `listener` until `stop`; then closes the connections with no request
/// in flight at once and lets the others finish their request.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) -> io::Result<()> {
    check_file_limit(limits.max_connections);
    let table = Arc::new(Table::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let Some(slot) = table.admit() else {
            table.refused(peer);
            continue;
        };
        // Answers are small and written at once: send them without waiting for an ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Cannot set TCP_NODELAY on a connection");
        }
        let connection = Connection {
            tcp: Tracked {
                tcp,
                slot: slot.clone(),
            },
            peer,
            slot,
            table: table.clone(),
        };
        connections.spawn(connection.serve(http.clone(), router.clone(), limits, stop.clone()));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Warns when the soft limit on open files (`LimitNOFILE=`, `ulimit -n`) leaves fewer
/// than 256 beside `max` connections: Docker, SQLite and compose need them mid-rollout.
fn check_file_limit(max: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    // "Max open files            1024                 524288               files"
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < max.saturating_add(256)
    {
        tracing::warn!(
            open_files = soft,
            max_connections = max,
            "The open-file limit leaves fewer than 256 descriptors beside server.max_connections; raise LimitNOFILE= or lower max_connections"
        );
    }
}

/// Accept errors are about one connection (reset before accept) or a resource that may
/// come back (out of file descriptors): wait a moment rather than spin.
async fn accept_failed(e: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "Cannot accept a connection; trying again in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The connections being served, each with what eviction and the idle timeout look at.
struct Table {
    max: usize,
    start: Instant,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    refused: AtomicU64,
    last_refusal_logged: Mutex<Option<Instant>>,
}

struct Slot {
    id: u64,
    /// Milliseconds since [`Table::start`] when a byte last came or went.
    active_ms: AtomicU64,
    in_flight: AtomicUsize,
    start: Instant,
    evict: CancellationToken,
}

impl Slot {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.active_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has been silent with no request in flight, if it has none.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.active_ms.load(Ordering::Relaxed));
        Some(self.start.elapsed().saturating_sub(since))
    }
}

impl Table {
    fn new(max: usize) -> Table {
        Table {
            max,
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            last_refusal_logged: Mutex::new(None),
        }
    }

    /// A slot for a new connection: a free one, or that of the connection silent the
    /// longest with no request in flight, which is told to close. `None` when every
    /// connection has a request in flight.
    fn admit(&self) -> Option<Arc<Slot>> {
        let mut slots = lock(&self.slots);
        if slots.len() >= self.max {
            let victim = slots
                .values()
                .filter_map(|s| s.idle_for().map(|idle| (idle, s.id)))
                .max()
                .map(|(_, id)| id)?;
            if let Some(victim) = slots.remove(&victim) {
                victim.evict.cancel();
            }
        }
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            active_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            start: self.start,
            evict: CancellationToken::new(),
        });
        slot.touch();
        slots.insert(slot.id, slot.clone());
        Some(slot)
    }

    fn release(&self, slot: &Slot) {
        lock(&self.slots).remove(&slot.id);
    }

    /// Logs refusals at most every 10 s, with how many there were.
    fn refused(&self, peer: SocketAddr) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = lock(&self.last_refusal_logged);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                %peer,
                max_connections = self.max,
                refused_so_far = refused,
                "Connection closed at once: every connection has a request in flight (server.max_connections)"
            );
        }
    }
}

struct Connection {
    tcp: Tracked,
    peer: SocketAddr,
    slot: Arc<Slot>,
    table: Arc<Table>,
}

impl Connection {
    /// Serves requests until the client or HTTP ends the connection, it is evicted or idle
    /// too long (dropped: it has no request in flight), or `stop` (idle: dropped; otherwise
    /// its request finishes first).
    async fn serve(
        self,
        http: http1::Builder,
        router: Router,
        limits: Limits,
        stop: CancellationToken,
    ) {
        let Connection {
            tcp,
            peer,
            slot,
            table,
        } = self;
        let service = Requests {
            router,
            peer,
            slot: slot.clone(),
        };
        let conn = http.serve_connection(TokioIo::new(tcp), service);
        let mut conn = pin!(conn);
        let mut stopping = false;
        loop {
            let idle = slot.idle_for().unwrap_or_default();
            let check = limits.idle_timeout.saturating_sub(idle);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "Connection ended with an error");
                    }
                    break;
                }
                () = slot.evict.cancelled() => break,
                () = stop.cancelled(), if !stopping => {
                    if slot.idle_for().is_some() {
                        break;
                    }
                    conn.as_mut().graceful_shutdown();
                    stopping = true;
                }
                () = tokio::time::sleep(check) => {
                    if slot.idle_for().is_some_and(|idle| idle >= limits.idle_timeout) {
                        break;
                    }
                }
            }
        }
        table.release(&slot);
    }
}

/// The router as the connection's service: each request gets the peer's address (as
/// `axum::serve` gives it) and counts as in flight until its response is made.
#[derive(Clone)]
struct Requests {
    router: Router,
    peer: SocketAddr,
    slot: Arc<Slot>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Requests {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let mut router = self.router.clone();
        let in_flight = InFlight::enter(self.slot.clone());
        Box::pin(async move {
            let response = router.call(request).await;
            drop(in_flight);
            response
        })
    }
}

/// A request in flight on a slot, until dropped.
struct InFlight(Arc<Slot>);

impl InFlight {
    fn enter(slot: Arc<Slot>) -> InFlight {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TCP stream, noting when bytes come or go.
struct Tracked {
    tcp: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.slot.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.slot.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.slot.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
