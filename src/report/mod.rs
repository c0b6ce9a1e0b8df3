//! What hoist tells people: the status document and page ([`status`], [`page`]), the
//! command line's text ([`text`]), Prometheus metrics ([`metrics`]) and chat notifications
//! ([`notify`]).

#[cfg(test)]
pub(crate) mod example;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod page;
pub(crate) mod status;
pub(crate) mod text;
