//! hoist: pull-based, zero-downtime deploys of Docker Compose services behind Traefik.
//!
//! Map of the crate:
//! - [`config`]: the TOML config, validated into typed values (every problem at once).
//! - [`rollout`]: the named steps of a rollout (resolve, pull, start, health, switch, drain,
//!   record) and what happens when one fails.
//! - [`recover`]: finishing or undoing rollouts interrupted by a crash.
//! - [`registry`]: tags and `semver:` tracks to digests, over the OCI distribution API.
//! - [`engine`]: the Docker engine API (bollard).
//! - [`compose`]: compose labels and naming; building the next container of a service.
//! - [`traefik`]: the labels Traefik routes by, and confirming Traefik applied a change.
//! - [`drain`]: the health "cord" that takes a container out of Traefik's pool, and the
//!   `hoist probe` that runs inside containers.
//! - [`store`]: the SQLite journal and per-service state; [`lock`]: one rollout per service.
//! - [`envfile`]: keeping compose's env file in step with what runs.
//! - [`context`]: the handles a rollout needs, built once; [`cli`]: the command line.

pub mod api;
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
