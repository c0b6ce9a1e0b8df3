//! Webhook deliveries, for deduplication, keyed as GitHub means them: by
//! (`X-GitHub-Hook-ID`, `X-GitHub-Delivery`). One event reaches every hook with the same
//! delivery id, so each hook's copy is its own delivery; a redelivery keeps both ids. A
//! redelivery of a delivery whose work succeeded queues nothing; one whose work failed is
//! processed again (GitHub never redelivers by itself: a redelivery is an operator asking).
//!
//! Every key received within [`MEMORY`] is kept in memory (12 bytes of its SHA-256, with
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

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::store::{Received, Store, StoreError, millis, now_ms};
use crate::util::lock;

/// How long an id is remembered: a week (GitHub redelivers for three days).
pub(crate) const MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const SHARDS: usize = 64;

/// Ids remembered: their arrival time (seconds since the epoch).
type Shard = HashMap<Key, u32, BuildHasherDefault<KeyHasher>>;

pub(crate) struct Deliveries {
    store: Store,
    /// Shard [`Key::shard`] holds a key.
    shards: Vec<Mutex<Shard>>,
    unflushed: Mutex<Vec<Received>>,
    /// Deliveries whose work failed: few, so a set of their own rather than a flag on
    /// every remembered key.
    failed: Mutex<HashSet<Key>>,
}

/// What a delivery is, as far as its ids tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Never seen: act on it.
    New,
    /// A redelivery of one whose work failed: act on it again.
    Retry,
    /// A redelivery of one whose work succeeded or is under way: nothing to do.
    Duplicate,
}

/// A delivery's ids, as the queue carries them to report what its work came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryId {
    /// `X-GitHub-Hook-ID`, empty when the sender did not say.
    pub hook: String,
    pub id: String,
}

/// A (hook, delivery id)'s first 12 bytes of SHA-256: a fixed size, and exact for any number of
/// deliveries a daemon sees (a collision among a million ids has a chance of about 10^-17).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 12]);

impl Key {
    fn of(hook: &str, id: &str) -> Key {
        // A hook id is digits and a delivery id a GUID: neither holds a newline.
        let digest = sha2::Sha256::new()
            .chain_update(hook.as_bytes())
            .chain_update(b"\n")
            .chain_update(id.as_bytes())
            .finalize();
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
    /// Loads the deliveries of the last [`MEMORY`] from the state database.
    pub(crate) fn open(store: Store) -> Result<Self, StoreError> {
        let since = now_ms() - millis(MEMORY);
        let mut shards = vec![Shard::default(); SHARDS];
        for (hook, id, at) in store.deliveries_since(since)? {
            let key = Key::of(&hook, &id);
            shards[key.shard()].insert(key, seconds(at));
        }
        let failed = store
            .failed_deliveries(since)?
            .iter()
            .map(|(hook, id)| Key::of(hook, id))
            .collect();
        Ok(Deliveries {
            store,
            shards: shards.into_iter().map(Mutex::new).collect(),
            unflushed: Mutex::new(Vec::new()),
            failed: Mutex::new(failed),
        })
    }

    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[key.shard()])
    }

    /// Claims a delivery of `hook` (empty when unknown). Atomic: of two concurrent copies
    /// of one delivery, exactly one is new, and of two redeliveries of a failed one,
    /// exactly one is a retry.
    pub(crate) fn claim(&self, hook: &str, id: &str, event: &str) -> Claim {
        let key = Key::of(hook, id);
        let at = now_ms();
        if self.shard(key).insert(key, seconds(at)).is_some() {
            return if lock(&self.failed).remove(&key) {
                Claim::Retry
            } else {
                Claim::Duplicate
            };
        }
        lock(&self.unflushed).push(Received {
            hook: hook.to_string(),
            id: id.to_string(),
            event: event.to_string(),
            at,
        });
        Claim::New
    }

    /// Whether a delivery was received (and its work did not fail): the sweep leaves those.
    pub(crate) fn settled(&self, hook: &str, id: &str) -> bool {
        let key = Key::of(hook, id);
        self.shard(key).contains_key(&key) && !lock(&self.failed).contains(&key)
    }

    /// Records what a delivery's work came to. A failed one may be processed again when
    /// it is redelivered (or swept). In memory at once; in the database when it can be.
    pub(crate) fn settle(&self, delivery: &DeliveryId, ok: bool, outcome: &str) {
        let key = Key::of(&delivery.hook, &delivery.id);
        {
            let mut failed = lock(&self.failed);
            if ok {
                failed.remove(&key);
            } else {
                failed.insert(key);
            }
        }
        if let Err(e) = self
            .store
            .set_delivery_result(&delivery.hook, &delivery.id, ok, outcome)
        {
            tracing::warn!(delivery = %delivery.id, hook = %delivery.hook, error = %e, "Cannot record what a webhook delivery came to");
        }
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
        let mut forgotten = Vec::new();
        for shard in &self.shards {
            lock(shard).retain(|key, at| {
                let keep = *at >= kept_from;
                if !keep {
                    forgotten.push(*key);
                }
                keep
            });
        }
        let mut failed = lock(&self.failed);
        for key in forgotten {
            failed.remove(&key);
        }
        drop(failed);
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

    fn received(id: &str, at: i64) -> Received {
        Received {
            hook: String::new(),
            id: id.into(),
            event: "push".into(),
            at,
        }
    }

    #[test]
    fn each_hook_has_its_own_copy_and_a_failed_one_is_retried_once_per_failure() {
        let dir = tempfile::tempdir().unwrap();
        let d = Deliveries::open(Store::open(dir.path()).unwrap()).unwrap();
        assert_eq!(d.claim("1", "a", "package"), Claim::New);
        assert_eq!(d.claim("2", "a", "package"), Claim::New, "another hook");
        assert_eq!(d.claim("1", "a", "package"), Claim::Duplicate, "under way");
        let one = DeliveryId {
            hook: "1".into(),
            id: "a".into(),
        };
        d.settle(&one, false, "deploy #1 rolled_back");
        assert!(!d.settled("1", "a"));
        assert!(d.settled("2", "a"));
        assert_eq!(d.claim("1", "a", "package"), Claim::Retry);
        assert_eq!(
            d.claim("1", "a", "package"),
            Claim::Duplicate,
            "retried once"
        );
        d.settle(&one, false, "deploy #2 rolled_back");
        d.flush().unwrap();
        drop(d);
        let again = Deliveries::open(Store::open(dir.path()).unwrap()).unwrap();
        assert_eq!(
            again.claim("1", "a", "package"),
            Claim::Retry,
            "a failure is remembered across restarts"
        );
        again.settle(&one, true, "deploy #3 succeeded");
        assert_eq!(again.claim("1", "a", "package"), Claim::Duplicate);
        assert!(!again.settled("3", "a"), "never received from hook 3");
    }

    #[test]
    fn an_id_is_claimed_once_before_and_after_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let d = Deliveries::open(Store::open(dir.path()).unwrap()).unwrap();
        assert_eq!(Claim::New, d.claim("", "a", "push"));
        assert_eq!(Claim::Duplicate, d.claim("", "a", "push"));
        d.flush().unwrap();
        assert_eq!(Claim::Duplicate, d.claim("", "a", "push"));
        assert_eq!(Claim::New, d.claim("", "c", "push"), "claimed, not flushed");
        drop(d);
        let again = Deliveries::open(Store::open(dir.path()).unwrap()).unwrap();
        assert_eq!(
            Claim::Duplicate,
            again.claim("", "a", "push"),
            "remembered across restarts"
        );
        assert_eq!(Claim::New, again.claim("", "b", "push"));
        assert_eq!(
            Claim::New,
            again.claim("", "c", "push"),
            "an id that was never flushed is forgotten by a restart"
        );
    }

    #[test]
    fn a_failed_flush_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Deliveries::open(store.clone()).unwrap();
        let db = rusqlite::Connection::open(dir.path().join("hoist.db")).unwrap();
        assert_eq!(Claim::New, d.claim("", "a", "push"));
        db.execute_batch("ALTER TABLE deliveries RENAME TO away")
            .unwrap();
        assert!(d.flush().is_err(), "the table is gone");
        assert_eq!(
            Claim::New,
            d.claim("", "b", "push"),
            "claims go on meanwhile"
        );
        assert_eq!(Claim::Duplicate, d.claim("", "a", "push"));
        db.execute_batch("ALTER TABLE away RENAME TO deliveries")
            .unwrap();
        d.flush().unwrap();
        let mut ids: Vec<String> = store
            .deliveries_since(0)
            .unwrap()
            .into_iter()
            .map(|(_, id, _)| id)
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
            .record_deliveries(&[received("old", old), received("recent", now_ms())])
            .unwrap();
        let d = Deliveries::open(store.clone()).unwrap();
        assert_eq!(Claim::Duplicate, d.claim("", "recent", "push"));
        let aged = Key::of("", "aged");
        d.shard(aged).insert(aged, seconds(old));
        assert_eq!(d.prune().unwrap(), 1, "the old row");
        assert_eq!(
            Claim::New,
            d.claim("", "aged", "push"),
            "forgotten in memory"
        );
        assert_eq!(Claim::Duplicate, d.claim("", "recent", "push"));
        let again = Deliveries::open(store).unwrap();
        assert_eq!(
            Claim::New,
            again.claim("", "old", "push"),
            "forgotten on disk"
        );
        assert_eq!(Claim::Duplicate, again.claim("", "recent", "push"));
    }
}
