//! Small helpers every layer may use.

/// Locks `m`, carrying on past a poisoned lock: the data behind hoist's mutexes (counters,
/// claimed ids, status) stays usable when a thread panicked while holding it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
