//! The webhook endpoint's edge: whatever a delivery's headers can settle (webhooks on, size,
//! event, delivery id, content type, the signature's form) is settled before a byte of its
//! body is read, and the bodies being read are bounded in size, in time, and in total
//! across all connections, so a stranger cannot make hoist hold gigabytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::github::webhook;
use crate::serve::http::ApiError;
use crate::util::{Throttle, escaped};

/// The bytes of webhook bodies held at once, across all connections. Two deliveries of
/// GitHub's largest size fit; beyond it deliveries are answered 503 with `Retry-After`
/// (GitHub does not retry by itself, but an operator can redeliver).
pub(crate) const IN_FLIGHT: usize = 64 << 20;

/// How long a delivery's body may take to arrive once its headers are in.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a refused body is read and thrown away before the connection closes.
const LINGER: Duration = Duration::from_secs(5);

/// What a busy hoist asks a client to wait, in seconds.
const RETRY_AFTER: u64 = 5;

/// The headers of a delivery that may be worth reading.
pub(crate) struct Claimed<'a> {
    pub event: &'a str,
    pub delivery: &'a str,
    /// `X-GitHub-Hook-ID`, empty when absent (GitHub always sends it).
    pub hook: &'a str,
    pub signature: [u8; 32],
    /// The `Content-Length`, when the client sent one.
    pub length: Option<usize>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("payload larger than {} MiB", webhook::MAX_BODY >> 20),
    )
}

/// Checks everything about a delivery that its headers tell, in the order that needs the
/// least trust: size, the GitHub headers, the delivery id's shape, the content type, and
/// the signature's form. A refused signature is logged (the id is a GUID by then).
pub(crate) fn check_headers<'a>(
    headers: &'a HeaderMap,
    remote: SocketAddr,
    refusals: &Throttle,
) -> Result<Claimed<'a>, ApiError> {
    let length = header(headers, header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if length.is_some_and(|n| n > webhook::MAX_BODY) {
        return Err(too_large());
    }
    let (Some(event), Some(delivery)) = (
        header(headers, "x-github-event"),
        header(headers, "x-github-delivery"),
    ) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing X-GitHub-Event or X-GitHub-Delivery header",
        ));
    };
    if !webhook::is_delivery_id(delivery) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "X-GitHub-Delivery is not a GUID (8-4-4-4-12 hex digits)",
        ));
    }
    let hook = header(headers, "x-github-hook-id").unwrap_or_default();
    if !hook.is_empty() && (hook.len() > 20 || !hook.bytes().all(|b| b.is_ascii_digit())) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "X-GitHub-Hook-ID is not a number",
        ));
    }
    if let Some(kind) = header(headers, header::CONTENT_TYPE.as_str())
        && !kind.starts_with("application/json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "configure the webhook with content type application/json",
        ));
    }
    let signature = webhook::claimed_signature(
        header(headers, "x-hub-signature-256"),
        header(headers, "x-hub-signature"),
    )
    .map_err(|e| refused(refusals, delivery, event, remote, &e))?;
    Ok(Claimed {
        event,
        delivery,
        hook,
        signature,
        length,
    })
}

/// The 401 for a signature that is missing, malformed or wrong, and its log line.
pub(crate) fn refused(
    refusals: &Throttle,
    delivery: &str,
    event: &str,
    remote: SocketAddr,
    e: &webhook::SignatureError,
) -> ApiError {
    if let Some(suppressed) = refusals.allow("webhook signature") {
        let event = webhook::event_label(event);
        tracing::warn!(delivery = %escaped(delivery), event, %remote, reason = %e, suppressed,
            "Refused a webhook delivery with a bad signature");
    }
    ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
}

/// The budget of body bytes in flight, shared by all connections.
#[derive(Clone)]
pub(crate) struct Intake {
    budget: Arc<Semaphore>,
    timeout: Duration,
    /// Refused bodies being read and discarded; ended at shutdown.
    lingering: TaskTracker,
    stop: CancellationToken,
}

impl Default for Intake {
    fn default() -> Intake {
        Intake::new(IN_FLIGHT, BODY_TIMEOUT)
    }
}

/// A body read whole; its bytes count against the budget until it is dropped.
pub(crate) struct Read {
    pub bytes: Vec<u8>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Intake {
    /// A budget of `bytes` in flight; each body must arrive within `timeout`.
    pub(crate) fn new(bytes: usize, timeout: Duration) -> Intake {
        Intake {
            budget: Arc::new(Semaphore::new(bytes)),
            timeout,
            lingering: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Reads and discards what is left of a refused body, for at most [`LINGER`], so that
    /// a client still sending it can read the answer (nginx's lingering close): closing a
    /// connection with unread input resets it, and the answer is lost. Costs no memory.
    pub(crate) fn linger(&self, body: Body) {
        let stop = self.stop.clone();
        self.lingering.spawn(async move {
            let mut stream = body.into_data_stream();
            let drain = async { while let Some(Ok(_)) = stream.next().await {} };
            let _ = stop
                .run_until_cancelled(tokio::time::timeout(LINGER, drain))
                .await;
        });
    }

    /// At shutdown: stops discarding refused bodies and waits for those tasks to end.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.lingering.close();
        self.lingering.wait().await;
    }

    /// Reserves `n` bytes of the budget, or says hoist is busy.
    fn reserve(&self, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let busy = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many webhook bodies are being read; try again later",
            )
            .retry_after(RETRY_AFTER)
        };
        let n = u32::try_from(n).map_err(|_| busy())?;
        self.budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| busy())
    }

    /// Reads a body of at most [`webhook::MAX_BODY`] bytes within the timeout. With a
    /// `Content-Length` the whole size is reserved up front (and allocated once); without,
    /// as it arrives.
    pub(crate) async fn read(&self, body: Body, length: Option<usize>) -> Result<Read, ApiError> {
        let mut permit = match length.map(|n| self.reserve(n)).transpose() {
            Ok(permit) => permit,
            Err(busy) => {
                self.linger(body);
                return Err(busy);
            }
        };
        let mut bytes = Vec::with_capacity(length.unwrap_or(0));
        let mut stream = body.into_data_stream();
        let read = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "the body ended before it was whole",
                    )
                })?;
                if bytes.len() + chunk.len() > webhook::MAX_BODY {
                    return Err(too_large());
                }
                if length.is_none() {
                    let more = self.reserve(chunk.len())?;
                    match permit.as_mut() {
                        Some(p) => p.merge(more),
                        None => permit = Some(more),
                    }
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(())
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {}",
                        humantime::format_duration(self.timeout)
                    ),
                )
            })??;
        Ok(Read {
            bytes,
            _permit: permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;
    use bytes::Bytes;

    use super::*;

    fn chunks(n: usize, size: usize) -> Body {
        let chunks = (0..n).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; size])));
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    fn status(e: ApiError) -> (StatusCode, Option<String>) {
        let response = e.into_response();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (response.status(), retry)
    }

    #[tokio::test]
    async fn bodies_in_flight_are_bounded_and_released_when_dropped() {
        let intake = Intake::new(100, BODY_TIMEOUT);
        let first = intake.read(chunks(6, 10), Some(60)).await.ok().unwrap();
        assert_eq!(first.bytes.len(), 60);
        let refused = intake.read(chunks(5, 10), Some(50)).await.err().unwrap();
        assert_eq!(
            status(refused),
            (StatusCode::SERVICE_UNAVAILABLE, Some("5".to_string()))
        );
        // Without a Content-Length, counted as it arrives: 40 fit beside the 60, 50 do not.
        assert!(intake.read(chunks(4, 10), None).await.is_ok());
        let refused = intake.read(chunks(5, 10), None).await.err().unwrap();
        assert_eq!(status(refused).0, StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        assert_eq!(
            intake
                .read(chunks(10, 10), None)
                .await
                .ok()
                .unwrap()
                .bytes
                .len(),
            100
        );
    }

    #[tokio::test]
    async fn a_body_larger_than_githubs_limit_or_too_slow_is_refused() {
        let intake = Intake::new(IN_FLIGHT, BODY_TIMEOUT);
        let over = webhook::MAX_BODY / (1 << 20) + 1;
        let refused = intake
            .read(chunks(over, 1 << 20), None)
            .await
            .err()
            .unwrap();
        assert_eq!(status(refused).0, StatusCode::PAYLOAD_TOO_LARGE);

        let slow = Intake::new(IN_FLIGHT, Duration::from_millis(50));
        let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let refused = slow
            .read(Body::from_stream(never), Some(10))
            .await
            .err()
            .unwrap();
        assert_eq!(status(refused).0, StatusCode::REQUEST_TIMEOUT);
        // The slow body's reservation went with it.
        assert_eq!(slow.budget.available_permits(), IN_FLIGHT);
    }

    #[test]
    fn headers_are_settled_before_the_body() {
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let check = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            check_headers(&h, remote, &crate::util::Throttle::new(5))
                .err()
                .map(|e| status(e).0)
        };
        let id = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        let sig = format!("sha256={}", "0f".repeat(32));
        let good = [
            ("x-github-event", "push"),
            ("x-github-delivery", id),
            ("x-hub-signature-256", sig.as_str()),
        ];
        assert_eq!(check(&good), None);
        let mut big = good.to_vec();
        big.push(("content-length", "31457280"));
        assert_eq!(check(&big), Some(StatusCode::PAYLOAD_TOO_LARGE));
        assert_eq!(check(&big[3..]), Some(StatusCode::PAYLOAD_TOO_LARGE));
        assert_eq!(check(&good[1..]), Some(StatusCode::BAD_REQUEST));
        let mut bad_id = good.to_vec();
        bad_id[1].1 = "delivery-1";
        assert_eq!(check(&bad_id), Some(StatusCode::BAD_REQUEST));
        assert_eq!(check(&good[..2]), Some(StatusCode::UNAUTHORIZED));
        let mut hook = good.to_vec();
        hook.push(("x-github-hook-id", "123456789"));
        assert_eq!(check(&hook), None);
        hook[3].1 = "12; drop";
        assert_eq!(check(&hook), Some(StatusCode::BAD_REQUEST));
        let mut form = good.to_vec();
        form.push(("content-type", "application/x-www-form-urlencoded"));
        assert_eq!(check(&form), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
}
