//! hoist's integration tests: one binary, real Docker engine, real registry, real
//! Compose (v2 and v1), the real `hoist` binary, traffic through the real Traefik.
//! Run with `cargo test --features test-support` (see README).
// Test code: a panic is how a test fails; its helpers are `pub` inside a private module, and a
// scenario reads best in one piece.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::too_many_lines,
    unreachable_pub
)]

#[path = "../support/mod.rs"]
mod support;

mod automation;
mod cli;
mod compose;
mod connections;
mod cord;
mod crash;
mod deliveries;
mod edge;
mod logs;
mod ops;
mod refusals;
mod registry;
mod reload;
mod rollout;
mod serve;
mod stack;
mod traefik;
