//! hoist: pull-based, zero-downtime deploys of Docker Compose services behind Traefik.
//!
//! Map of the crate:
//! - [`config`]: the TOML config, validated into typed values (every problem at once);
//!   [`secret`]: secrets that never print; [`check`]: `check-config`'s look at whether
//!   each secret can be read, through the unit's credentials.
//! - [`rollout`]: the named steps of a rollout (resolve, pull, start, health, switch, drain,
//!   record) and what happens when one fails; [`recover`]: finishing or undoing rollouts
//!   interrupted by a crash.
//! - [`service`]: what a managed service runs now; [`compose`]: compose labels and naming,
//!   building the next container; [`traefik`]: the labels Traefik routes by and confirming
//!   a routing change; [`drain`]: the health "cord" and `hoist probe`.
//! - [`registry`]: tags and `semver:` tracks to digests; [`engine`]: the Docker API.
//! - [`store`]: the SQLite journal and state; [`lock`]: one rollout per service;
//!   [`envfile`]: compose's env file; [`owner`]: file ownership in the state directory.
//! - The daemon ([`daemon`]): [`server`] (HTTP, webhooks) with [`webhook`] (signatures,
//!   payloads) and [`deliveries`] (deduplication); [`queue`] (one rollout per service,
//!   coalescing); [`poller`] (registry polling, watch windows); [`promotion`]; [`api`]
//!   (status, history, metrics, admin) with [`status`], [`status_page`] and [`metrics`];
//!   [`github`] (Deployments) and [`notify`] (chat); [`systemd`] (sd_notify).
//! - [`context`]: the handles a rollout needs, built once; [`cli`] and [`client`]: the
//!   command line, on its own or through a running daemon.

pub mod api;
pub mod check;
pub mod cli;
pub mod client;
pub mod compose;
pub mod config;
pub mod context;
pub mod daemon;
pub mod deliveries;
pub mod drain;
pub mod engine;
pub mod envfile;
pub mod fault;
pub mod github;
pub mod image;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod owner;
pub mod poller;
pub mod promotion;
pub mod queue;
pub mod recover;
pub mod registry;
pub mod rollout;
pub mod secret;
pub mod server;
pub mod service;
pub mod status;
pub mod status_page;
pub mod store;
pub mod systemd;
pub mod traefik;
pub mod webhook;

/// Locks `m`, carrying on past a poisoned lock: the data behind hoist's mutexes (counters,
/// claimed ids, status) stays usable when a thread panicked while holding it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
