//! Docker: the engine API ([`engine`]) and what it reports about containers and images
//! ([`inspect`]), what a managed service runs ([`service`]), compose's labels and naming
//! ([`compose`]), and the health cord with `hoist probe` ([`drain`]).

pub mod compose;
pub mod drain;
pub mod engine;
pub mod inspect;
pub mod service;
