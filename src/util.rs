//! Small helpers every layer may use.

/// Locks `m`, carrying on past a poisoned lock: the data behind hoist's mutexes (counters,
/// claimed ids, status) stays usable when a thread panicked while holding it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The one way hoist builds an HTTP client: `reqwest::Client::new()` panics when the TLS
/// backend cannot be set up (clippy.toml bans it), so this returns why instead, with
/// reqwest's causes, for the caller to report where a request would have failed.
pub(crate) fn http_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
    builder.build().map_err(|e| {
        let causes = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source());
        let causes: Vec<String> = causes.map(ToString::to_string).collect();
        format!("cannot set up an HTTP client: {}", causes.join(": "))
    })
}
