//! hoist: pull-based, zero-downtime deploys of Docker Compose services behind Traefik.
//!
//! The folders are the layers, each using only those listed before it:
//! 1. [`util`], [`secret`] (secrets that never print), [`image`] (references and digests),
//!    [`fault`] (the crash tests' kill points), [`owner`] and [`envfile`] (files hoist
//!    writes for compose).
//! 2. [`config`]: the TOML config, validated into typed values (every problem at once).
//! 3. [`store`]: the SQLite journal and state, and the webhook delivery log.
//! 4. [`docker`] (the engine, what a service runs, compose's labels and naming, the health
//!    cord and `hoist probe`), [`registry`] (tags and `semver:` tracks to digests) and
//!    [`traefik`] (the labels Traefik routes by, confirming a routing change).
//! 5. [`context`]: the handles a rollout needs, built once.
//! 6. [`rollout`]: the named steps of a rollout (resolve, pull, start, health, switch,
//!    drain, record), what happens when one fails, one rollout per service at a time, and
//!    recovery of rollouts interrupted by a crash.
//! 7. [`github`] (webhook signatures and payloads, Deployments) and [`report`] (the status
//!    document and page, metrics, chat notifications).
//! 8. [`serve`]: the daemon: HTTP (webhooks, status, admin API), the queue, polling and
//!    watch windows, promotion, systemd.
//! 9. [`cli`]: the command line, on its own or through a running daemon.
//!
//! Errors: `thiserror` enums beside the code that raises them where a caller branches on the
//! cause, `anyhow` only at the top (the CLI, the daemon), and over HTTP a short safe message
//! with the cause logged once. The whole policy is the module doc of `serve::http::error`.

pub mod cli;
pub mod config;
pub(crate) mod context;
pub mod docker;
pub(crate) mod envfile;
pub mod fault;
pub mod github;
pub mod image;
pub(crate) mod owner;
pub mod registry;
pub(crate) mod report;
pub(crate) mod rollout;
pub mod secret;
pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod traefik;
pub(crate) mod util;
