//! [`ApiError`], the one error type of hoist's HTTP handlers, and the crate's error policy.
//!
//! # Error policy
//!
//! - **`thiserror` where a caller branches on the cause.** Each such enum sits beside the
//!   code that raises it and names what failed (the service, the path, the action):
//!   `LockError::Held` makes the queue wait, `RegistryError::is_transient` drives the
//!   poller's backoff, `CurrentError` tells a missing container from an engine failure.
//!   Its `Display` is a sentence for the operator (CLI output, the journal, the log).
//! - **`anyhow` only at the top**: in `cli` (mapped to an exit code) and in
//!   [`Daemon::build`](crate::serve::Daemon::build)/[`run`](crate::serve::Daemon::run).
//!   Background tasks (pollers, watch windows, GitHub reports, notifications) have no
//!   caller to return to: they log their errors as warnings with the service and go on;
//!   they never fail a rollout.
//! - **HTTP: a short, safe message and one log line.** A handler returns
//!   `Result<_, ApiError>`. The client gets the status and `{"error": "..."}` saying what
//!   was wrong with its request or which part of hoist is unavailable: never the text of
//!   a Docker engine, registry, store or I/O error, never a secret. When there is such a
//!   cause, it is logged once, when the error becomes the response.

use std::error::Error;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::serve::http::reply;

type Cause = Box<dyn Error + Send + Sync>;

/// An HTTP error: a status and a message safe to show, and what to log, if anything.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// The log line and the error behind it, logged when the response is made.
    cause: Option<(&'static str, Cause)>,
    /// Answer with `WWW-Authenticate: Bearer` (a missing or wrong bearer token).
    bearer_challenge: bool,
    /// Answer with `Retry-After: <seconds>` (hoist is busy, not broken).
    retry_after: Option<u64>,
}

impl ApiError {
    /// `message` goes to the client as is: only what the request said, or config names.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            cause: None,
            bearer_challenge: false,
            retry_after: None,
        }
    }

    /// A 401 that asks for a bearer token.
    pub(crate) fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            bearer_challenge: true,
            ..ApiError::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    /// Asks the client to try again in `seconds`.
    pub(crate) fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// Logs `cause` (an error) with the sentence `log` when the response is made; the
    /// client sees only the message.
    pub(crate) fn caused_by(mut self, log: &'static str, cause: impl Into<Cause>) -> ApiError {
        self.cause = Some((log, cause.into()));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some((log, cause)) = &self.cause {
            tracing::error!(error = %cause, "{log}");
        }
        let mut response = reply(self.status, json!({ "error": self.message }));
        if self.bearer_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hoist\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    async fn body(response: Response) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_client_sees_the_message_not_the_cause() {
        let cause = std::io::Error::other("disk /var/lib/hoist/state.db is on fire");
        let response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state database is not available",
        )
        .caused_by("Cannot read the journal", cause)
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(
            body(response).await,
            r#"{"error":"the state database is not available"}"#
        );
        let challenge = ApiError::unauthorized("a bearer token is required").into_response();
        assert_eq!(challenge.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"hoist\""
        );
    }
}
