//! Webhook delivery ids, for deduplication: GitHub redelivers with the same
//! `X-GitHub-Delivery`, and a redelivery must queue nothing.
//!
//! A new id is claimed in memory (atomically, so two concurrent copies of one delivery
//! cannot both pass) and written to the state database in batches, every 50 ms, off the
//! request path: one SQLite commit per batch instead of one per delivery. A crash can
//! forget the last 50 ms of ids; a redelivery of one of those then causes one more check
//! of the registry, which finds the service up to date (a no-op).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError, now_ms};

const FLUSH_EVERY: Duration = Duration::from_millis(50);

pub struct Deliveries {
    store: Store,
    /// Claimed, not yet written: id -> (event, received at).
    unflushed: Mutex<HashMap<String, (String, i64)>>,
}

impl Deliveries {
    pub fn new(store: Store) -> Self {
        Deliveries {
            store,
            unflushed: Mutex::new(HashMap::new()),
        }
    }

    /// `true` when the id is new (and is now claimed), `false` for a redelivery.
    pub fn claim(&self, id: &str, event: &str) -> Result<bool, StoreError> {
        // The database is read under the lock: an id leaves the map only after it is
        // written, so it is always in one of the two.
        let mut unflushed = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        if unflushed.contains_key(id) || self.store.delivery_seen(id)? {
            return Ok(false);
        }
        unflushed.insert(id.to_string(), (event.to_string(), now_ms()));
        Ok(true)
    }

    /// Writes claimed ids to the database.
    pub fn flush(&self) -> Result<(), StoreError> {
        let batch: Vec<(String, String, i64)> = {
            let unflushed = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
            unflushed
                .iter()
                .map(|(id, (event, at))| (id.clone(), event.clone(), *at))
                .collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.store.record_deliveries(&batch)?;
        let mut unflushed = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        for (id, _, _) in &batch {
            unflushed.remove(id);
        }
        Ok(())
    }

    /// Flushes every 50 ms until `stop`, and once more after it. A flush is a
    /// blocking SQLite transaction: it runs on the blocking pool, so that the threads
    /// answering webhooks never wait for it.
    pub async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => false,
                () = stop.cancelled() => true,
            };
            let this = self.clone();
            let flushed = tokio::task::spawn_blocking(move || this.flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "Cannot record webhook deliveries; will retry");
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_claimed_once_before_and_after_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let d = Deliveries::new(Store::open(dir.path()).unwrap());
        assert!(d.claim("a", "push").unwrap());
        assert!(!d.claim("a", "push").unwrap());
        d.flush().unwrap();
        assert!(!d.claim("a", "push").unwrap());
        let again = Deliveries::new(Store::open(dir.path()).unwrap());
        assert!(
            !again.claim("a", "push").unwrap(),
            "remembered across restarts"
        );
        assert!(again.claim("b", "push").unwrap());
    }
}
