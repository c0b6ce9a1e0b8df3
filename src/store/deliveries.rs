//! Webhook delivery ids, for deduplication: GitHub redelivers with the same
//! `X-GitHub-Delivery`, and a redelivery must queue nothing.
//!
//! Every id received within [`MEMORY`] is kept in memory (12 bytes of its SHA-256, with
//! its arrival time: 16 bytes an id), loaded from the state database at start. A claim is one hash-map
//! insert under a lock held for well under a microsecond: the request path never touches
//! SQLite. The map is split into 64 shards by key, so that concurrent claims rarely meet
//! and growing the map never holds up claims for long (one shard is rehashed at a time).
//!
//! New ids are appended to the database in batches, every 50 ms, on the blocking pool: one
//! commit per batch instead of one per delivery. The table has no unique index (this map
//! is what deduplicates), so a batch costs about 1 µs an id even when GitHub's random
//! GUIDs land all over a table of hundreds of thousands of ids. A crash can forget the
//! last 50 ms of ids; a redelivery of one of those then causes one more check of the
//! registry, which finds the service up to date (a no-op).
//!
//! Only deliveries with a valid signature are claimed, so nobody without the webhook
//! secret can grow the set; a week of a busy organisation's deliveries is a few MB.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError, millis, now_ms};
use crate::util::lock;

/// How long an id is remembered: a week (GitHub redelivers for three days).
pub(crate) const MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const SHARDS: usize = 64;

/// Ids remembered: their arrival time (seconds since the epoch).
type Shard = HashMap<Key, u32, BuildHasherDefault<KeyHasher>>;

/// A delivery claimed and not yet written: (id, event, received at).
type Unflushed = (String, String, i64);

pub(crate) struct Deliveries {
    store: Store,
    /// Shard [`Key::shard`] holds a key.
    shards: Vec<Mutex<Shard>>,
    unflushed: Mutex<Vec<Unflushed>>,
}

/// An id's first 12 bytes of SHA-256: a fixed size, and exact for any number of
/// deliveries a daemon sees (a collision among a million ids has a chance of about 10^-17).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 12]);

impl Key {
    fn of(id: &str) -> Key {
        let digest = sha2::Sha256::digest(id.as_bytes());
        let mut first = [0u8; 12];
        first.copy_from_slice(&digest[..12]);
        Key(first)
    }

    /// From the last byte, which the hash does not use.
    fn shard(self) -> usize {
        usize::from(self.0[11]) % SHARDS
    }
}

/// A key is uniformly random already: its first 8 bytes are its hash.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes a [`Key`]'s hash through (SipHash would only spend time on it).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Seconds since the epoch, for a time in ms.
fn seconds(ms: i64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(0)
}

impl Deliveries {
    /// Loads the ids of the last [`MEMORY`] from the state database.
    pub(crate) fn open(store: Store) -> Result<Self, StoreError> {
        let mut shards = vec![Shard::default(); SHARDS];
        for (id, at) in store.deliveries_since(now_ms() - millis(MEMORY))? {
            let key = Key::of(&id);
            shards[key.shard()].insert(key, seconds(at));
        }
        Ok(Deliveries {
            store,
            shards: shards.into_iter().map(Mutex::new).collect(),
            unflushed: Mutex::new(Vec::new()),
        })
    }

    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[key.shard()])
    }

    /// `true` when the id is new (and is now claimed), `false` for a redelivery. Atomic:
    /// of two concurrent copies of one delivery, exactly one is new.
    pub(crate) fn claim(&self, id: &str, event: &str) -> bool {
        let key = Key::of(id);
        let at = now_ms();
        if self.shard(key).insert(key, seconds(at)).is_some() {
            return false;
        }
        lock(&self.unflushed).push((id.to_string(), event.to_string(), at));
        true
    }

    /// Writes claimed ids to the database. On failure they stay claimed and are written
    /// by the next flush.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
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
    pub(crate) fn prune(&self) -> Result<usize, StoreError> {
        let cutoff = now_ms() - millis(MEMORY);
        let kept_from = seconds(cutoff);
        for shard in &self.shards {
            lock(shard).retain(|_, at| *at >= kept_from);
        }
        self.store.prune_deliveries(cutoff)
    }

    /// Flushes every 50 ms and prunes every hour until `stop`, then flushes once more.
    /// Both are blocking SQLite transactions: they run on the blocking pool, so that the
    /// threads answering webhooks never wait for them.
    pub(crate) async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
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
        let aged = Key::of("aged");
        d.shard(aged).insert(aged, seconds(old));
        assert_eq!(d.prune().unwrap(), 1, "the old row");
        assert!(d.claim("aged", "push"), "forgotten in memory");
        assert!(!d.claim("recent", "push"));
        let again = Deliveries::open(store).unwrap();
        assert!(again.claim("old", "push"), "forgotten on disk");
        assert!(!again.claim("recent", "push"));
    }
}
