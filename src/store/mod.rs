//! hoist's state: an SQLite database in `state.dir` holding the deploy journal (`journal`:
//! every rollout with its steps and timings), what each service runs now and ran before,
//! pending triggers, GitHub deployment ids and the webhook delivery log (`state`), digests
//! held back and paused automation (`automation`), with the in-memory deduplication of
//! deliveries in [`deliveries`].
//!
//! WAL mode and a busy timeout let the CLI and the daemon share it. The schema is versioned
//! with `PRAGMA user_version`; migrations (`migrations`) run in order at open. Calls are
//! synchronous and short; callers hold the connection only for one statement or transaction.

mod automation;
pub(crate) mod deliveries;
mod journal;
mod migrations;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub(crate) use automation::{Hold, Pause};
pub(crate) use journal::{Deploy, NewDeploy, Outcome, Resolution, Step, StepRecord};
use migrations::MIGRATIONS;
pub(crate) use state::{PendingRow, Received, ServiceState};

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
    #[error("state directory {} cannot be written: {source}", path.display())]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {} has schema version {found}, newer than this hoist knows ({known}); upgrade hoist", path.display())]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

pub(crate) fn now_ms() -> i64 {
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
        warn_if_empty(&path);
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
        crate::util::lock(&self.conn)
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

    /// The directory the database (and the rollouts' lock files) live in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Proves the state can be written, as a rollout writes it: a row in the database and
    /// a new file in its directory (lock files are created there). Reads alone pass on a
    /// read-only or full disk.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO readiness (id, checked_at) VALUES (1, ?1)",
            [now_ms()],
        )?;
        let probe = self.dir().join(".hoist-write-probe");
        let not_writable = |source| StoreError::NotWritable {
            path: self.dir().to_path_buf(),
            source,
        };
        std::fs::write(&probe, b"ok").map_err(not_writable)?;
        std::fs::remove_file(&probe).map_err(not_writable)
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

/// Brings the schema up to date. Each migration runs in an IMMEDIATE transaction that
/// re-reads the version, so two processes opening a new database at once (the CLI while
/// the daemon starts) apply each migration exactly once.
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

/// A database file that exists with 0 bytes (and no write-ahead log to replay) held
/// nothing: SQLite would quietly start it afresh, without the history and the state of
/// the services. Say so, since it usually means a lost or truncated file.
fn warn_if_empty(path: &Path) {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let wal = path.with_file_name("hoist.db-wal");
    if size(path) == Some(0) && size(&wal).unwrap_or(0) == 0 {
        tracing::warn!(path = %path.display(), "The state database exists but is empty (0 bytes): starting with no deploy history or service state; if it held any, restore it from a backup");
    }
}

#[cfg(test)]
mod tests;
