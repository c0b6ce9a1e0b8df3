//! hoist's state: an SQLite database in `state.dir` holding the deploy journal (every
//! rollout with its steps and timings) and what each service runs now and ran before.
//!
//! WAL mode and a busy timeout let the CLI and the daemon share it. The schema is versioned
//! with `PRAGMA user_version`; migrations run in order at open. Calls are synchronous and
//! short; callers hold the connection only for one statement or transaction.

pub mod deliveries;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Each entry moves the schema one version forward. Never edit a released entry; add one.
const MIGRATIONS: &[&str] = &[
    // 1: the journal and per-service state.
    "CREATE TABLE deploys (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        environment TEXT NOT NULL,
        trigger TEXT NOT NULL,
        target TEXT NOT NULL,
        from_image TEXT,
        from_digest TEXT,
        to_image TEXT,
        to_tag TEXT,
        to_digest TEXT,
        outcome TEXT NOT NULL,
        step TEXT,
        error TEXT,
        old_container TEXT,
        new_container TEXT,
        pid INTEGER,
        started_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX deploys_by_service ON deploys (service, id);
    CREATE INDEX deploys_running ON deploys (outcome) WHERE outcome = 'running';
    CREATE TABLE deploy_steps (
        deploy_id INTEGER NOT NULL REFERENCES deploys (id),
        step TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        detail TEXT,
        PRIMARY KEY (deploy_id, step)
    );
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        image TEXT NOT NULL,
        tag TEXT,
        digest TEXT NOT NULL,
        previous_image TEXT,
        previous_tag TEXT,
        previous_digest TEXT,
        deployed_at INTEGER NOT NULL,
        deploy_id INTEGER
    );",
    // 2: time each step spent waiting on the outside world and on the Docker engine
    // (see rollout::Clocks).
    "ALTER TABLE deploy_steps ADD COLUMN waited_ms INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE deploy_steps ADD COLUMN engine_ms INTEGER NOT NULL DEFAULT 0;",
    // 3: webhook deliveries seen (deduplication) and triggers waiting for their service.
    "CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        event TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        outcome TEXT
    );
    CREATE INDEX deliveries_by_age ON deliveries (received_at);
    CREATE TABLE pending (
        service TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        trigger TEXT NOT NULL,
        expect_tag TEXT,
        expect_digest TEXT,
        queued_at INTEGER NOT NULL
    );",
    // 4: the GitHub deployment reporting what each service runs (to mark it inactive
    // when it is replaced).
    "CREATE TABLE github_deployments (
        service TEXT PRIMARY KEY,
        deployment_id INTEGER NOT NULL
    );",
    // 5: deliveries become an append-only log. Deduplication happens in memory
    // (deliveries.rs), so the table needs no unique index on the id, and each unique-index
    // insert of a random GitHub GUID cost about 20 µs once the table held a few hundred
    // thousand ids (a batch of 1500 held the write lock for 30 ms); an append costs about
    // 1 µs. What became of a delivery that was acted on moves to its own small table.
    "CREATE TABLE delivery_log (
        id TEXT NOT NULL,
        event TEXT NOT NULL,
        received_at INTEGER NOT NULL
    );
    INSERT INTO delivery_log (id, event, received_at)
        SELECT id, event, received_at FROM deliveries ORDER BY received_at;
    CREATE TABLE delivery_outcomes (
        id TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        decided_at INTEGER NOT NULL
    );
    -- The arrival time stands in for when an old outcome was decided.
    INSERT INTO delivery_outcomes (id, outcome, decided_at)
        SELECT id, outcome, received_at FROM deliveries WHERE outcome IS NOT NULL;
    CREATE INDEX delivery_outcomes_by_age ON delivery_outcomes (decided_at);
    DROP TABLE deliveries;
    ALTER TABLE delivery_log RENAME TO deliveries;
    CREATE INDEX deliveries_by_age ON deliveries (received_at);",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database {} has schema version {found}, newer than this hoist knows ({known}); upgrade hoist", path.display())]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
}

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

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Noop => "noop",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "running" => Outcome::Running,
            "succeeded" => Outcome::Succeeded,
            "noop" => Outcome::Noop,
            "rolled_back" => Outcome::RolledBack,
            "interrupted" => Outcome::Interrupted,
            _ => Outcome::Failed,
        }
    }
}

pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// A second, read-only connection: in WAL mode reads need not wait for a write (a
    /// webhook's deduplication check must not wait for a batch of inserts).
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (creating if needed) `<dir>/hoist.db` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("hoist.db");
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        enable_wal(&conn).map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        migrate(&mut conn, &path)?;
        let reader = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        for file in ["hoist.db", "hoist.db-wal", "hoist.db-shm"] {
            crate::owner::like_dir(dir, &dir.join(file));
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each call is one
        // statement or a transaction), so a poisoned mutex is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs one statement, reusing its prepared form (webhook deliveries hit this path
    /// thousands of times a second under load).
    fn exec(&self, sql: &str, args: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.conn()
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(args))
            .map_err(|e| self.err(e))
    }

    /// Answers a trivial query: the database is there and usable.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

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
             started_at, finished_at FROM deploys {clause}"
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

/// Brings the schema up to date. Each migration runs in an IMMEDIATE transaction that
/// re-reads the version, so two processes opening a new database at once (the CLI while
/// the daemon starts) apply each migration exactly once.
/// A trigger waiting for its service's running rollout to end, kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub service: String,
    /// `track`, `tag:<tag>` or `digest:<digest>`.
    pub target: String,
    pub trigger: String,
    pub expect_tag: Option<String>,
    pub expect_digest: Option<String>,
}

impl Store {
    /// The webhook delivery ids recorded at or after `since` (ms), with their arrival.
    pub fn deliveries_since(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn
            .prepare("SELECT id, received_at FROM deliveries WHERE received_at >= ?1")
            .map_err(|e| self.err(e))?;
        stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// Appends webhook deliveries `(id, event, received_at)` in one transaction. The
    /// caller records each id once ([`crate::store::deliveries`] deduplicates in memory).
    pub fn record_deliveries(
        &self,
        deliveries: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO deliveries (id, event, received_at) VALUES (?1, ?2, ?3)",
                )
                .map_err(|e| self.err(e))?;
            for (id, event, at) in deliveries {
                stmt.execute(params![id, event, at])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records what a delivery that was acted on came to (the latest word wins).
    pub fn set_delivery_outcome(&self, id: &str, outcome: &str) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO delivery_outcomes (id, outcome, decided_at) VALUES (?1, ?2, ?3)",
            params![id, outcome, now_ms()],
        )?;
        Ok(())
    }

    /// The recorded outcome of a delivery, if it was acted on (operators read the table
    /// with sqlite3; tests read it here).
    #[cfg(test)]
    pub fn delivery_outcome(&self, id: &str) -> Result<Option<String>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row(
            "SELECT outcome FROM delivery_outcomes WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Forgets deliveries received, and outcomes decided, before `cutoff` (ms). Returns
    /// how many deliveries were forgotten.
    pub fn prune_deliveries(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.exec(
            "DELETE FROM delivery_outcomes WHERE decided_at < ?1",
            [cutoff],
        )?;
        self.exec("DELETE FROM deliveries WHERE received_at < ?1", [cutoff])
    }

    /// Stores the latest trigger for a service (replacing an older one).
    pub fn save_pending(&self, row: &PendingRow) -> Result<(), StoreError> {
        self.exec("INSERT OR REPLACE INTO pending (service, target, trigger, expect_tag, expect_digest, queued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)", params![
                    row.service,
                    row.target,
                    row.trigger,
                    row.expect_tag,
                    row.expect_digest,
                    now_ms()
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
            .prepare("SELECT service, target, trigger, expect_tag, expect_digest FROM pending ORDER BY queued_at")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            Ok(PendingRow {
                service: r.get(0)?,
                target: r.get(1)?,
                trigger: r.get(2)?,
                expect_tag: r.get(3)?,
                expect_digest: r.get(4)?,
            })
        })
        .map_err(|e| self.err(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| self.err(e))
    }
}

/// Switches the database to WAL. Two processes opening a new database at once (the daemon
/// and a CLI run) can both ask; SQLite then answers one of them "busy" at once instead of
/// calling the busy handler (either waiting would deadlock), so ask again until
/// [`BUSY_TIMEOUT`] runs out.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        let Some(sql) = MIGRATIONS.get(version) else {
            return Ok(());
        };
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(version + 1).unwrap_or(i64::MAX),
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Store::open(dir.path()).unwrap(), dir)
    }

    #[test]
    fn concurrent_opens_of_a_new_database_migrate_once() {
        // Without `enable_wal`'s retry, one round in ten or so lost the race for WAL.
        for _ in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let path = dir.path().to_path_buf();
                    std::thread::spawn(move || Store::open(&path).map(|_| ()))
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn journal_round_trip() {
        let (store, dir) = temp_store();
        let id = store
            .begin_deploy(&NewDeploy {
                service: "web",
                environment: "stage",
                trigger: "manual",
                target: "main",
            })
            .unwrap();
        store.enter_step(id, Step::Pull).unwrap();
        store
            .record_step(
                id,
                &StepRecord {
                    step: "resolve".into(),
                    started_at: now_ms(),
                    duration_ms: 12,
                    waited_ms: 5,
                    engine_ms: 0,
                    ok: true,
                    detail: None,
                },
            )
            .unwrap();
        assert_eq!(store.running_deploys("web").unwrap().len(), 1);
        store.finish_deploy(id, Outcome::Succeeded, None).unwrap();
        let d = store.deploy(id).unwrap().unwrap();
        assert_eq!(d.outcome, Outcome::Succeeded);
        assert_eq!(d.step.as_deref(), Some("pull"));
        assert_eq!((d.steps[0].duration_ms, d.steps[0].waited_ms), (12, 5));
        assert!(store.running_deploys("web").unwrap().is_empty());
        drop(dir);
    }

    #[test]
    fn deliveries_and_their_outcomes_are_kept_and_pruned_and_pending_triggers_kept() {
        let (store, _dir) = temp_store();
        let at = now_ms();
        let old = at - 7_200_000;
        store
            .record_deliveries(&[
                ("d-old".to_string(), "push".to_string(), old),
                ("d-1".to_string(), "push".to_string(), at),
            ])
            .unwrap();
        assert_eq!(
            store.deliveries_since(at - 3_600_000).unwrap(),
            [("d-1".to_string(), at)]
        );
        store.set_delivery_outcome("d-1", "deploy #1 noop").unwrap();
        store
            .set_delivery_outcome("d-1", "deploy #2 succeeded")
            .unwrap();
        assert_eq!(
            store.delivery_outcome("d-1").unwrap().as_deref(),
            Some("deploy #2 succeeded")
        );
        assert_eq!(store.delivery_outcome("d-old").unwrap(), None);
        assert_eq!(store.prune_deliveries(at - 3_600_000).unwrap(), 1);
        assert_eq!(store.deliveries_since(0).unwrap().len(), 1);
        assert_eq!(
            store.prune_deliveries(now_ms() + 1).unwrap(),
            1,
            "everything older than the cutoff goes"
        );
        assert_eq!(store.delivery_outcome("d-1").unwrap(), None);
        let row = |trigger: &str| PendingRow {
            service: "web".into(),
            target: "track".into(),
            trigger: trigger.into(),
            expect_tag: None,
            expect_digest: None,
        };
        store.save_pending(&row("a")).unwrap();
        store.save_pending(&row("b")).unwrap();
        assert_eq!(store.pending().unwrap(), vec![row("b")]);
        store.clear_pending("web").unwrap();
        assert!(store.pending().unwrap().is_empty());
    }

    #[test]
    fn a_version_4_database_keeps_its_deliveries_and_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("hoist.db")).unwrap();
            for sql in &MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO deliveries (id, event, received_at, outcome) VALUES
                     ('a', 'push', 20, NULL), ('b', 'package', 10, 'deploy #3 noop');
                 PRAGMA user_version = 4;",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.deliveries_since(0).unwrap(),
            [("b".to_string(), 10), ("a".to_string(), 20)]
        );
        assert_eq!(
            store.delivery_outcome("b").unwrap().as_deref(),
            Some("deploy #3 noop")
        );
        store
            .record_deliveries(&[("c".to_string(), "push".to_string(), 30)])
            .unwrap();
        assert_eq!(store.deliveries_since(25).unwrap().len(), 1);
    }

    #[test]
    fn current_moves_to_previous_and_reopen_keeps_schema() {
        let (store, dir) = temp_store();
        store.seed_current("web", "r/web", "sha256:a").unwrap();
        store
            .set_current("web", "r/web", Some("v2"), "sha256:b", Some(1))
            .unwrap();
        store
            .set_current("web", "r/web", Some("v2"), "sha256:b", Some(1))
            .unwrap();
        let s = store.service_state("web").unwrap().unwrap();
        assert_eq!(
            (s.digest.as_str(), s.previous_digest.as_deref()),
            ("sha256:b", Some("sha256:a"))
        );
        drop(store);
        let again = Store::open(dir.path()).unwrap();
        assert!(again.service_state("web").unwrap().is_some());
    }
}
