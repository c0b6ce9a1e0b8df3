//! Docker: the engine API ([`engine`]) and what it reports about containers and images
//! ([`inspect`]), what a managed service runs ([`service`]), compose's labels and naming
//! ([`compose`]), and the health cord with `hoist probe` ([`drain`]).

pub(crate) mod compose;
pub mod drain;
pub(crate) mod engine;
pub(crate) mod inspect;
pub(crate) mod service;
