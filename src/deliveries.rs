//! Webhook delivery ids, for deduplication: GitHub redelivers with the same
//! `X-GitHub-Delivery`, and a redelivery must queue nothing.
//!
//! Every id received within [`MEMORY`] is kept in memory (16 bytes of its SHA-256, with
//! its arrival time), loaded from the state database at start. A claim is one hash-map
//! insert under a lock held for well under a microsecond: the request path never touches
//! SQLite. The map is split into 64 shards by key, so that concurrent claims rarely meet
//! and growing the map never holds up claims for long (one shard is rehashed at a time).
//!
//! New ids are written to the database in batches, every 50 ms, on the blocking pool: one
//! commit per batch instead of one per delivery. A crash can forget the last 50 ms of ids;
//! a redelivery of one of those then causes one more check of the registry, which finds
//! the service up to date (a no-op).
//!
//! Only deliveries with a valid signature are claimed, so nobody without the webhook
//! secret can grow the set; a week of a busy organisation's deliveries is a few MB.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError, millis, now_ms};

/// How long an id is remembered: a week (GitHub redelivers for three days).
pub const MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const SHARDS: usize = 64;

/// Ids remembered, by [`key`]: their arrival time (ms since the epoch).
type Shard = HashMap<u128, i64>;

/// A delivery claimed and not yet written: (id, event, received at).
type Unflushed = (String, String, i64);

pub struct Deliveries {
    store: Store,
    /// Shard `key % SHARDS` holds the key.
    shards: Vec<Mutex<Shard>>,
    unflushed: Mutex<Vec<Unflushed>>,
}

/// An id's first 16 bytes of SHA-256: exact for any number of deliveries a daemon sees
/// (a collision among a billion ids has a chance of about 10^-21), in a fixed 16 bytes.
fn key(id: &str) -> u128 {
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

fn shard_of(key: u128) -> usize {
    (key % SHARDS as u128) as usize
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deliveries {
    /// Loads the ids of the last [`MEMORY`] from the state database.
    pub fn open(store: Store) -> Result<Self, StoreError> {
        let mut shards = vec![Shard::new(); SHARDS];
        for (id, at) in store.deliveries_since(now_ms() - millis(MEMORY))? {
            let key = key(&id);
            shards[shard_of(key)].insert(key, at);
        }
        Ok(Deliveries {
            store,
            shards: shards.into_iter().map(Mutex::new).collect(),
            unflushed: Mutex::new(Vec::new()),
        })
    }

    fn shard(&self, key: u128) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[shard_of(key)])
    }

    /// `true` when the id is new (and is now claimed), `false` for a redelivery. Atomic:
    /// of two concurrent copies of one delivery, exactly one is new.
    pub fn claim(&self, id: &str, event: &str) -> bool {
        let key = key(id);
        let at = now_ms();
        if self.shard(key).insert(key, at).is_some() {
            return false;
        }
        lock(&self.unflushed).push((id.to_string(), event.to_string(), at));
        true
    }

    /// Writes claimed ids to the database. On failure they stay claimed and are written
    /// by the next flush.
    pub fn flush(&self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut *lock(&self.unflushed));
        if batch.is_empty() {
            return Ok(());
        }
        let written = self.store.record_deliveries(&batch);
        if written.is_err() {
            let mut unflushed = lock(&self.unflushed);
            let newer = std::mem::replace(&mut *unflushed, batch);
            unflushed.extend(newer);
        }
        written
    }

    /// Forgets ids older than [`MEMORY`], in memory and in the database.
    pub fn prune(&self) -> Result<usize, StoreError> {
        let cutoff = now_ms() - millis(MEMORY);
        for shard in &self.shards {
            lock(shard).retain(|_, at| *at >= cutoff);
        }
        self.store.prune_deliveries(cutoff)
    }

    /// Flushes every 50 ms and prunes every hour until `stop`, then flushes once more.
    /// Both are blocking SQLite transactions: they run on the blocking pool, so that the
    /// threads answering webhooks never wait for them.
    pub async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        // A full disk fails every flush: say so when it starts and when it ends.
        let mut failing = false;
        loop {
            let (stopping, pruning) = tokio::select! {
                _ = flush.tick() => (false, false),
                _ = prune.tick() => (false, true),
                () = stop.cancelled() => (true, false),
            };
            let this = self.clone();
            let done = tokio::task::spawn_blocking(move || {
                if pruning {
                    match this.prune() {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(count = n, "Forgot old webhook deliveries"),
                        Err(e) => tracing::warn!(error = %e, "Cannot prune webhook deliveries"),
                    }
                }
                this.flush()
            })
            .await;
            match done {
                Ok(Err(e)) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "Cannot record webhook deliveries; they are deduplicated in memory meanwhile, and written when the state database accepts them");
                }
                Ok(Ok(())) if failing => {
                    failing = false;
                    tracing::info!(
                        "Recorded the webhook deliveries held back since the last error"
                    );
                }
                _ => {}
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
        let d = Deliveries::open(Store::open(dir.path()).unwrap()).unwrap();
        assert!(d.claim("a", "push"));
        assert!(!d.claim("a", "push"));
        d.flush().unwrap();
        assert!(!d.claim("a", "push"));
        assert!(d.claim("c", "push"), "claimed, not flushed");
        drop(d);
        let again = Deliveries::open(Store::open(dir.path()).unwrap()).unwrap();
        assert!(!again.claim("a", "push"), "remembered across restarts");
        assert!(again.claim("b", "push"));
        assert!(
            again.claim("c", "push"),
            "an id that was never flushed is forgotten by a restart"
        );
    }

    #[test]
    fn a_failed_flush_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Deliveries::open(store.clone()).unwrap();
        let db = rusqlite::Connection::open(dir.path().join("hoist.db")).unwrap();
        assert!(d.claim("a", "push"));
        db.execute_batch("ALTER TABLE deliveries RENAME TO away")
            .unwrap();
        assert!(d.flush().is_err(), "the table is gone");
        assert!(d.claim("b", "push"), "claims go on meanwhile");
        assert!(!d.claim("a", "push"));
        db.execute_batch("ALTER TABLE away RENAME TO deliveries")
            .unwrap();
        d.flush().unwrap();
        let mut ids: Vec<String> = store
            .deliveries_since(0)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn pruning_forgets_ids_older_than_the_memory_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = now_ms() - millis(MEMORY) - 1000;
        store
            .record_deliveries(&[
                ("old".into(), "push".into(), old),
                ("recent".into(), "push".into(), now_ms()),
            ])
            .unwrap();
        let d = Deliveries::open(store.clone()).unwrap();
        assert!(!d.claim("recent", "push"));
        d.shard(key("aged")).insert(key("aged"), old);
        assert_eq!(d.prune().unwrap(), 1, "the old row");
        assert!(d.claim("aged", "push"), "forgotten in memory");
        assert!(!d.claim("recent", "push"));
        let again = Deliveries::open(store).unwrap();
        assert!(again.claim("old", "push"), "forgotten on disk");
        assert!(!again.claim("recent", "push"));
    }
}
