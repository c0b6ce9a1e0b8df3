//! What hoist tells people: the status document and page ([`status`], [`page`]),
//! Prometheus metrics ([`metrics`]) and chat notifications ([`notify`]).

pub mod metrics;
pub mod notify;
pub mod page;
pub mod status;
