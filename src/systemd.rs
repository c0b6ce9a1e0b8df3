//! systemd integration (`Type=notify`): READY, STATUS, WATCHDOG and STOPPING messages.
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::sync::Arc;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::status::Status;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "Cannot notify systemd");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Pets the watchdog at half its period (and refreshes STATUS) while the runtime is alive.
pub async fn watchdog(status: Arc<Status>, stop: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[NotifyState::Watchdog, NotifyState::Status(&status.summary())]),
            () = stop.cancelled() => return,
        }
    }
}
