//! SIGHUP: the config file is read and checked again, and what it says is logged. A valid
//! config is not applied (that needs a restart, which lets a running rollout finish
//! first); SIGHUP never stops the daemon nor touches a rollout. Without this handler the
//! signal's default action killed the daemon mid-rollout.

use std::path::PathBuf;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, Secrets};

/// Takes over SIGHUP from its default action (exit). Call before announcing readiness, so
/// that a SIGHUP sent from then on is never fatal.
pub(crate) fn listen() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(e) => {
            tracing::error!(error = %e, "Cannot listen for SIGHUP; a SIGHUP would stop hoist");
            None
        }
    }
}

/// Checks the config at `path` on each SIGHUP, until `stop`.
pub(crate) async fn run(mut hangups: Signal, path: PathBuf, stop: CancellationToken) {
    loop {
        tokio::select! {
            received = hangups.recv() => {
                if received.is_none() {
                    return;
                }
            }
            () = stop.cancelled() => return,
        }
        let checked = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Config::load(&path, Secrets::Load)).await
        };
        match checked {
            Ok(Ok(config)) => tracing::info!(
                config = %path.display(),
                services = config.services.len(),
                "SIGHUP received: the config is valid; applying it needs a restart (systemctl restart hoist), which lets a running rollout finish first"
            ),
            Ok(Err(e)) => log_problems(&e),
            Err(e) => tracing::error!(error = %e, "SIGHUP received: checking the config failed"),
        }
    }
}

/// One line per problem, so that every problem is seen and none spans lines.
fn log_problems(e: &ConfigError) {
    match e {
        ConfigError::Invalid { path, problems, .. } => {
            tracing::warn!(
                config = %path.display(),
                problems = problems.len(),
                "SIGHUP received: the config has problems; the running config stays"
            );
            for p in problems {
                tracing::warn!(problem = ?p.to_string(), "Config problem");
            }
        }
        other => tracing::warn!(
            error = ?other.to_string(),
            "SIGHUP received: the config cannot be read; the running config stays"
        ),
    }
}
