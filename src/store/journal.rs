//! The deploy journal: every rollout with the step it is in, how it ended, and each
//! step's timings and detail.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now_ms};

/// The named steps of a rollout, in order, as the journal records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Resolve,
    Pull,
    Start,
    Health,
    Switch,
    Drain,
    Record,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Resolve,
        Step::Pull,
        Step::Start,
        Step::Health,
        Step::Switch,
        Step::Drain,
        Step::Record,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Resolve => "resolve",
            Step::Pull => "pull",
            Step::Start => "start",
            Step::Health => "health",
            Step::Switch => "switch",
            Step::Drain => "drain",
            Step::Record => "record",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a rollout ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    /// The target digest was already running; nothing was touched.
    Noop,
    /// The new version failed a step; the old one kept serving.
    RolledBack,
    /// Stopped before anything was changed (registry down, refused by a check).
    Failed,
    /// hoist died during the rollout; the next start recovered it (see the error text).
    Interrupted,
    /// Not a rollout: an operator paused automation of the service (why: the note).
    Paused,
    /// Not a rollout: automation of the service resumed (why: the note).
    Resumed,
}

impl Outcome {
    /// Ended with the target running: deployed, or running it already.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Succeeded | Outcome::Noop)
    }

    /// A step failed, so the rollout was refused or rolled back. (An interruption is not
    /// the rollout's failure: recovery finished it.)
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::RolledBack)
    }

    /// Ended, one way or another.
    pub fn is_finished(self) -> bool {
        self != Outcome::Running
    }

    /// A rollout's entry, not a note that automation was paused or resumed.
    pub fn is_rollout(self) -> bool {
        !matches!(self, Outcome::Paused | Outcome::Resumed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Noop => "noop",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Paused => "paused",
            Outcome::Resumed => "resumed",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "running" => Outcome::Running,
            "succeeded" => Outcome::Succeeded,
            "noop" => Outcome::Noop,
            "rolled_back" => Outcome::RolledBack,
            "interrupted" => Outcome::Interrupted,
            "paused" => Outcome::Paused,
            "resumed" => Outcome::Resumed,
            _ => Outcome::Failed,
        }
    }
}

/// One row of the journal with its steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deploy {
    pub id: i64,
    pub service: String,
    pub environment: String,
    pub trigger: String,
    pub target: String,
    pub from_image: Option<String>,
    pub from_digest: Option<String>,
    pub to_image: Option<String>,
    pub to_tag: Option<String>,
    pub to_digest: Option<String>,
    pub outcome: Outcome,
    /// The step running now, or the one that failed.
    pub step: Option<String>,
    pub error: Option<String>,
    /// What the rollout did to automation (a digest held back, automation paused), or
    /// why automation was paused or resumed.
    #[serde(default)]
    pub note: Option<String>,
    pub old_container: Option<String>,
    pub new_container: Option<String>,
    pub pid: Option<i64>,
    /// Milliseconds since the Unix epoch.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: String,
    pub started_at: i64,
    pub duration_ms: i64,
    /// Part of the duration spent waiting on the app, Traefik or the configured periods.
    pub waited_ms: i64,
    /// Part of the duration the Docker engine spent creating, starting, removing containers.
    pub engine_ms: i64,
    pub ok: bool,
    pub detail: Option<String>,
}

/// The start of a journal entry.
pub struct NewDeploy<'a> {
    pub service: &'a str,
    pub environment: &'a str,
    pub trigger: &'a str,
    pub target: &'a str,
}

/// Facts learned by the resolve step.
pub struct Resolution<'a> {
    pub from_image: Option<&'a str>,
    pub from_digest: Option<&'a str>,
    pub to_image: &'a str,
    pub to_tag: Option<&'a str>,
    pub to_digest: &'a str,
    pub old_container: Option<&'a str>,
}

impl Store {
    pub fn begin_deploy(&self, d: &NewDeploy<'_>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO deploys (service, environment, trigger, target, outcome, step, pid, started_at)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7)",
            params![
                d.service,
                d.environment,
                d.trigger,
                d.target,
                Step::Resolve.as_str(),
                std::process::id(),
                now_ms()
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(conn.last_insert_rowid())
    }

    pub fn set_resolution(&self, id: i64, r: &Resolution<'_>) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deploys SET from_image = ?2, from_digest = ?3, to_image = ?4, to_tag = ?5,
                 to_digest = ?6, old_container = ?7 WHERE id = ?1",
            params![
                id,
                r.from_image,
                r.from_digest,
                r.to_image,
                r.to_tag,
                r.to_digest,
                r.old_container
            ],
        )?;
        Ok(())
    }

    /// Marks the step the rollout is entering; recovery reads it after a crash.
    pub fn enter_step(&self, id: i64, step: Step) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deploys SET step = ?2 WHERE id = ?1",
            params![id, step.as_str()],
        )?;
        Ok(())
    }

    pub fn set_new_container(&self, id: i64, container: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deploys SET new_container = ?2 WHERE id = ?1",
            params![id, container],
        )?;
        Ok(())
    }

    pub fn record_step(&self, id: i64, record: &StepRecord) -> Result<(), StoreError> {
        self.exec("INSERT OR REPLACE INTO deploy_steps (deploy_id, step, started_at, duration_ms, waited_ms, engine_ms, ok, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", params![
                    id,
                    record.step,
                    record.started_at,
                    record.duration_ms,
                    record.waited_ms,
                    record.engine_ms,
                    record.ok,
                    record.detail
                ])?;
        Ok(())
    }

    pub fn finish_deploy(
        &self,
        id: i64,
        outcome: Outcome,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deploys SET outcome = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![id, outcome.as_str(), error, now_ms()],
        )?;
        Ok(())
    }

    /// Rollouts still marked running for a service: after a crash, these need recovery.
    pub fn running_deploys(&self, service: &str) -> Result<Vec<Deploy>, StoreError> {
        self.query_deploys(
            "WHERE service = ?1 AND outcome = 'running' ORDER BY id",
            params![service],
        )
    }

    /// The journal, newest first.
    pub fn deploys(&self, service: Option<&str>, limit: usize) -> Result<Vec<Deploy>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match service {
            Some(s) => self.query_deploys(
                "WHERE service = ?1 ORDER BY id DESC LIMIT ?2",
                params![s, limit],
            ),
            None => self.query_deploys("ORDER BY id DESC LIMIT ?1", params![limit]),
        }
    }

    /// The newest rollout of `service` (the journal's pause and resume notes left out).
    pub fn last_rollout(&self, service: &str) -> Result<Option<Deploy>, StoreError> {
        Ok(self
            .query_deploys(
                "WHERE service = ?1 AND outcome NOT IN ('paused', 'resumed') ORDER BY id DESC LIMIT 1",
                params![service],
            )?
            .into_iter()
            .next())
    }

    pub fn deploy(&self, id: i64) -> Result<Option<Deploy>, StoreError> {
        Ok(self
            .query_deploys("WHERE id = ?1", params![id])?
            .into_iter()
            .next())
    }

    fn query_deploys(
        &self,
        clause: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<Deploy>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT id, service, environment, trigger, target, from_image, from_digest, to_image,
             to_tag, to_digest, outcome, step, error, old_container, new_container, pid,
             started_at, finished_at, note FROM deploys {clause}"
        );
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut deploys = stmt
            .query_map(args, |r| {
                Ok(Deploy {
                    id: r.get(0)?,
                    service: r.get(1)?,
                    environment: r.get(2)?,
                    trigger: r.get(3)?,
                    target: r.get(4)?,
                    from_image: r.get(5)?,
                    from_digest: r.get(6)?,
                    to_image: r.get(7)?,
                    to_tag: r.get(8)?,
                    to_digest: r.get(9)?,
                    outcome: Outcome::parse(&r.get::<_, String>(10)?),
                    step: r.get(11)?,
                    error: r.get(12)?,
                    old_container: r.get(13)?,
                    new_container: r.get(14)?,
                    pid: r.get(15)?,
                    started_at: r.get(16)?,
                    finished_at: r.get(17)?,
                    note: r.get(18)?,
                    steps: Vec::new(),
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let mut steps = conn
            .prepare(
                "SELECT step, started_at, duration_ms, waited_ms, engine_ms, ok, detail FROM deploy_steps
                 WHERE deploy_id = ?1 ORDER BY started_at, rowid",
            )
            .map_err(|e| self.err(e))?;
        for d in &mut deploys {
            d.steps = steps
                .query_map([d.id], |r| {
                    Ok(StepRecord {
                        step: r.get(0)?,
                        started_at: r.get(1)?,
                        duration_ms: r.get(2)?,
                        waited_ms: r.get(3)?,
                        engine_ms: r.get(4)?,
                        ok: r.get(5)?,
                        detail: r.get(6)?,
                    })
                })
                .map_err(|e| self.err(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))?;
        }
        Ok(deploys)
    }
}
