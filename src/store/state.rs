//! What each service runs now and ran before, triggers waiting for their service, the
//! GitHub deployment reporting each service, and the log of webhook deliveries.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Store, StoreError, now_ms};

/// What a service runs now and what it ran before, as hoist deployed it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    pub name: String,
    pub image: String,
    pub tag: Option<String>,
    pub digest: String,
    pub previous_image: Option<String>,
    pub previous_tag: Option<String>,
    pub previous_digest: Option<String>,
    pub deployed_at: i64,
    pub deploy_id: Option<i64>,
}

/// A webhook delivery as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `X-GitHub-Hook-ID`, empty when the sender did not say.
    pub hook: String,
    /// `X-GitHub-Delivery`.
    pub id: String,
    pub event: String,
    /// When it arrived (ms since the epoch).
    pub at: i64,
}

/// A trigger waiting for its service's running rollout to end, kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub service: String,
    /// `track`, `tag:<tag>` or `digest:<digest>`.
    pub target: String,
    pub trigger: String,
    pub expect_tag: Option<String>,
    pub expect_digest: Option<String>,
    /// The webhook delivery behind it: (`X-GitHub-Hook-ID`, `X-GitHub-Delivery`).
    pub delivery: Option<(String, String)>,
}

impl Store {
    /// Records that `service` now runs `image@digest`; what it ran before becomes previous.
    /// Recording the digest that is already current changes nothing (recovery may repeat it).
    pub fn set_current(
        &self,
        service: &str,
        image: &str,
        tag: Option<&str>,
        digest: &str,
        deploy_id: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let current: Option<(String, Option<String>, String)> = tx
            .query_row(
                "SELECT image, tag, digest FROM services WHERE name = ?1",
                [service],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match current {
            Some((_, _, d)) if d == digest => {}
            Some((prev_image, prev_tag, prev_digest)) => {
                tx.execute(
                    "UPDATE services SET image = ?2, tag = ?3, digest = ?4, previous_image = ?5,
                     previous_tag = ?6, previous_digest = ?7, deployed_at = ?8, deploy_id = ?9
                     WHERE name = ?1",
                    params![
                        service,
                        image,
                        tag,
                        digest,
                        prev_image,
                        prev_tag,
                        prev_digest,
                        now_ms(),
                        deploy_id
                    ],
                )
                .map_err(|e| self.err(e))?;
            }
            None => {
                tx.execute(
                    "INSERT INTO services (name, image, tag, digest, deployed_at, deploy_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![service, image, tag, digest, now_ms(), deploy_id],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Remembers what was running before hoist's first rollout of a service, so that
    /// `hoist rollback` works after it.
    pub fn seed_current(&self, service: &str, image: &str, digest: &str) -> Result<(), StoreError> {
        self.exec("INSERT OR IGNORE INTO services (name, image, digest, deployed_at) VALUES (?1, ?2, ?3, ?4)", params![service, image, digest, now_ms()])?;
        Ok(())
    }

    pub fn service_state(&self, service: &str) -> Result<Option<ServiceState>, StoreError> {
        self.conn()
            .query_row(
                "SELECT name, image, tag, digest, previous_image, previous_tag, previous_digest,
                 deployed_at, deploy_id FROM services WHERE name = ?1",
                [service],
                |r| {
                    Ok(ServiceState {
                        name: r.get(0)?,
                        image: r.get(1)?,
                        tag: r.get(2)?,
                        digest: r.get(3)?,
                        previous_image: r.get(4)?,
                        previous_tag: r.get(5)?,
                        previous_digest: r.get(6)?,
                        deployed_at: r.get(7)?,
                        deploy_id: r.get(8)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The webhook deliveries `(hook, id, received_at)` recorded at or after `since` (ms).
    pub fn deliveries_since(&self, since: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = crate::util::lock(&self.reader);
        let mut stmt = conn
            .prepare("SELECT hook, id, received_at FROM deliveries WHERE received_at >= ?1")
            .map_err(|e| self.err(e))?;
        stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// Appends webhook deliveries in one transaction. The caller records each (hook, id)
    /// once ([`crate::store::deliveries`] deduplicates in memory).
    pub fn record_deliveries(&self, deliveries: &[Received]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO deliveries (hook, id, event, received_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err(e))?;
            for d in deliveries {
                stmt.execute(params![d.hook, d.id, d.event, d.at])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records what a delivery's work came to (the latest word wins); `ok` false lets a
    /// redelivery of it be processed again.
    pub fn set_delivery_result(
        &self,
        hook: &str,
        id: &str,
        ok: bool,
        outcome: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO delivery_results (hook, id, ok, outcome, decided_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hook, id, ok, outcome, now_ms()],
        )?;
        Ok(())
    }

    /// The deliveries `(hook, id)` whose work failed, decided at or after `since` (ms).
    pub fn failed_deliveries(&self, since: i64) -> Result<Vec<(String, String)>, StoreError> {
        let conn = crate::util::lock(&self.reader);
        let mut stmt = conn
            .prepare("SELECT hook, id FROM delivery_results WHERE ok = 0 AND decided_at >= ?1")
            .map_err(|e| self.err(e))?;
        stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// The recorded outcome of a delivery and whether it succeeded, if it was acted on
    /// (operators read the table with sqlite3; tests read it here).
    #[cfg(test)]
    pub fn delivery_result(
        &self,
        hook: &str,
        id: &str,
    ) -> Result<Option<(bool, String)>, StoreError> {
        let conn = crate::util::lock(&self.reader);
        conn.query_row(
            "SELECT ok, outcome FROM delivery_results WHERE hook = ?1 AND id = ?2",
            [hook, id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Forgets deliveries received, and results decided, before `cutoff` (ms). Returns
    /// how many deliveries were forgotten.
    pub fn prune_deliveries(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.exec(
            "DELETE FROM delivery_results WHERE decided_at < ?1",
            [cutoff],
        )?;
        self.exec("DELETE FROM deliveries WHERE received_at < ?1", [cutoff])
    }

    /// Remembers that `hook_id` delivers `repository`'s events (for the sweep).
    pub fn remember_hook(&self, repository: &str, hook_id: u64) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO github_hooks (repository, hook_id, seen_at) VALUES (?1, ?2, ?3)",
            params![repository, i64::try_from(hook_id).unwrap_or(i64::MAX), now_ms()],
        )?;
        Ok(())
    }

    /// The hooks seen delivering each repository: `(repository, hook_id)`.
    pub fn hooks(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = crate::util::lock(&self.reader);
        let mut stmt = conn
            .prepare("SELECT repository, hook_id FROM github_hooks ORDER BY repository, hook_id")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .and_then(Iterator::collect)
        .map_err(|e| self.err(e))
    }

    /// Stores the latest trigger for a service (replacing an older one).
    pub fn save_pending(&self, row: &PendingRow) -> Result<(), StoreError> {
        let (hook, id) = row.delivery.clone().unzip();
        self.exec("INSERT OR REPLACE INTO pending (service, target, trigger, expect_tag, expect_digest, queued_at, delivery_hook, delivery_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", params![
                    row.service,
                    row.target,
                    row.trigger,
                    row.expect_tag,
                    row.expect_digest,
                    now_ms(),
                    hook,
                    id
                ])?;
        Ok(())
    }

    pub fn github_deployment(&self, service: &str) -> Result<Option<u64>, StoreError> {
        self.conn()
            .query_row(
                "SELECT deployment_id FROM github_deployments WHERE service = ?1",
                [service],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|id| id.and_then(|id| u64::try_from(id).ok()))
            .map_err(|e| self.err(e))
    }

    pub fn set_github_deployment(&self, service: &str, id: u64) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO github_deployments (service, deployment_id) VALUES (?1, ?2)",
            params![service, i64::try_from(id).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    pub fn clear_pending(&self, service: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM pending WHERE service = ?1", [service])?;
        Ok(())
    }

    pub fn pending(&self) -> Result<Vec<PendingRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT service, target, trigger, expect_tag, expect_digest, delivery_hook, delivery_id FROM pending ORDER BY queued_at")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            Ok(PendingRow {
                service: r.get(0)?,
                target: r.get(1)?,
                trigger: r.get(2)?,
                expect_tag: r.get(3)?,
                expect_digest: r.get(4)?,
                delivery: r
                    .get::<_, Option<String>>(5)?
                    .zip(r.get::<_, Option<String>>(6)?),
            })
        })
        .map_err(|e| self.err(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| self.err(e))
    }
}
