//! What restrains automation per service, kept across restarts: a digest held back after
//! it failed by its own fault, and a pause an operator caused. The decisions are made in
//! `serve::automation`; this is only their record.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::journal::Outcome;
use super::{Store, StoreError, now_ms};

/// A digest automation does not deploy to a service again, until what automation is
/// heading for is another digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub digest: String,
    /// The step that failed ("health").
    pub step: Option<String>,
    /// The failure, in one line.
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub since: i64,
    /// The journal entry of the failed rollout.
    pub deploy_id: Option<i64>,
}

/// Automation of a service paused by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Who paused it: the trigger of the operator's rollout ("rollback", "api deploy"), or
    /// the pause command ("pause by alice", "api pause").
    pub by: String,
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub since: i64,
    /// What automation was heading for when it was paused (the track's digest, or the
    /// promotion source's); once it heads elsewhere, the pause ends. `None`: not known
    /// yet, taken at the next look.
    pub track_digest: Option<String>,
    /// An explicit pause (`hoist pause`): it lasts until `hoist resume`, whatever the track
    /// does.
    pub until_resumed: bool,
}

impl Store {
    pub fn hold(&self, service: &str) -> Result<Option<Hold>, StoreError> {
        self.conn()
            .query_row(
                "SELECT digest, step, reason, since, deploy_id FROM holds WHERE service = ?1",
                [service],
                |r| {
                    Ok(Hold {
                        digest: r.get(0)?,
                        step: r.get(1)?,
                        reason: r.get(2)?,
                        since: r.get(3)?,
                        deploy_id: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Holds back `hold.digest` for `service`, replacing an earlier hold.
    pub fn set_hold(&self, service: &str, hold: &Hold) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO holds (service, digest, step, reason, since, deploy_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                service,
                hold.digest,
                hold.step,
                hold.reason,
                hold.since,
                hold.deploy_id
            ],
        )?;
        Ok(())
    }

    /// Releases the hold of `service`; whether there was one.
    pub fn clear_hold(&self, service: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM holds WHERE service = ?1", [service])? > 0)
    }

    pub fn pause(&self, service: &str) -> Result<Option<Pause>, StoreError> {
        self.conn()
            .query_row(
                "SELECT paused_by, reason, since, track_digest, until_resumed FROM pauses
                 WHERE service = ?1",
                [service],
                |r| {
                    Ok(Pause {
                        by: r.get(0)?,
                        reason: r.get(1)?,
                        since: r.get(2)?,
                        track_digest: r.get(3)?,
                        until_resumed: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Pauses automation of `service`, replacing an earlier pause.
    pub fn set_pause(&self, service: &str, pause: &Pause) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO pauses (service, paused_by, reason, since, track_digest,
             until_resumed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                service,
                pause.by,
                pause.reason,
                pause.since,
                pause.track_digest,
                pause.until_resumed
            ],
        )?;
        Ok(())
    }

    /// Records what automation was heading for when a pause whose digest was not known
    /// began (the first look after it).
    pub fn set_pause_baseline(&self, service: &str, digest: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE pauses SET track_digest = ?2 WHERE service = ?1 AND track_digest IS NULL",
            params![service, digest],
        )?;
        Ok(())
    }

    /// Ends the pause of `service`; whether there was one.
    pub fn clear_pause(&self, service: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM pauses WHERE service = ?1", [service])? > 0)
    }

    /// A journal entry that is not a rollout: automation paused or resumed, by `trigger`,
    /// with why in its note.
    pub fn journal_event(
        &self,
        service: &str,
        environment: &str,
        trigger: &str,
        outcome: Outcome,
        note: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        let now = now_ms();
        conn.execute(
            "INSERT INTO deploys (service, environment, trigger, target, outcome, note, pid,
             started_at, finished_at) VALUES (?1, ?2, ?3, 'automation', ?4, ?5, ?6, ?7, ?7)",
            params![
                service,
                environment,
                trigger,
                outcome.as_str(),
                note,
                std::process::id(),
                now
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// Adds to a journal entry's note (what the rollout did to automation).
    pub fn add_note(&self, id: i64, note: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deploys SET note = CASE WHEN note IS NULL THEN ?2 ELSE note || '; ' || ?2 END
             WHERE id = ?1",
            params![id, note],
        )?;
        Ok(())
    }
}
