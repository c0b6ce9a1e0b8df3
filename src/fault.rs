//! Fault points for crash tests: with the `fault-injection` feature, a process whose
//! `HOIST_FAULT` names a point kills itself with SIGKILL there, so tests can prove that
//! recovery handles a death at every step. Without the feature this compiles to nothing.

/// Every point a test can name, in rollout order.
pub const POINTS: &[&str] = &[
    "resolve",
    "pull",
    "start",
    "start:created",
    "health",
    "switch",
    "drain",
    "drain:cut",
    "drain:stopped",
    "record",
    "record:env-written",
];

#[cfg(feature = "fault-injection")]
#[allow(unsafe_code)]
pub fn point(name: &str) {
    if std::env::var("HOIST_FAULT").is_ok_and(|f| f == name) {
        eprintln!("hoist: fault injection: SIGKILL at {name}");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
