//! What hoist tells people: the status document and page ([`status`], [`page`]), the
//! command line's text ([`text`]), Prometheus metrics ([`metrics`]) and chat notifications
//! ([`notify`]).

#[cfg(test)]
pub(crate) mod example;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod status;
pub mod text;
