//! The peer's embedded database: SQLite (bundled) in `DATA_DIR/history.db`,
//! in WAL mode, holding the message history and the outbox. A write returns
//! only once SQLite has committed it, so what was acknowledged survives a
//! restart or `kill -9`. The schema is versioned with `PRAGMA user_version`
//! and migrated forward on open.

use std::{path::Path, sync::Mutex, time::Duration};

use rusqlite::Connection;

/// The database file's name inside the data dir.
pub const DB_FILE: &str = "history.db";

/// How long a statement waits for a lock held by another connection
/// (e.g. a `sqlite3` shell the user opened) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, applied in order; `user_version` counts those applied.
/// Never edit a released step: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: messages, ordered by (hlc, sender, id) everywhere. A message is
    // identified by (sender, id): one peer cannot claim another's id.
    "CREATE TABLE messages (
        sender             TEXT NOT NULL,
        id                 TEXT NOT NULL,
        hlc                INTEGER NOT NULL,
        sender_fingerprint TEXT NOT NULL,
        sent_at_ms         INTEGER NOT NULL,
        text               TEXT NOT NULL,
        PRIMARY KEY (sender, id)
     ) WITHOUT ROWID;
     CREATE UNIQUE INDEX messages_order ON messages (hlc, sender, id);
     CREATE INDEX messages_by_sender ON messages (sender, hlc);
     CREATE INDEX messages_by_time ON messages (sent_at_ms);",
    // 2: the outbox: messages still owed to a peer.
    "CREATE TABLE outbox (
        peer         TEXT NOT NULL,
        sender       TEXT NOT NULL,
        message_id   TEXT NOT NULL,
        queued_at_ms INTEGER NOT NULL,
        PRIMARY KEY (peer, sender, message_id),
        FOREIGN KEY (sender, message_id) REFERENCES messages (sender, id)
     ) WITHOUT ROWID;",
];

/// A failure of the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("history store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The group commit that carried this write failed.
    #[error("history store: {0}")]
    Batch(String),
}

/// Writes waiting for the next group commit, and whether one is running.
#[derive(Debug, Default)]
pub(crate) struct CommitQueue {
    pub(crate) waiting: Vec<(
        Vec<chat_proto::v1::ChatMessage>,
        tokio::sync::oneshot::Sender<Result<Vec<bool>, StoreError>>,
    )>,
    pub(crate) committing: bool,
}

/// The peer's database.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Mutex<Connection>,
    /// Peers with queued messages: a mirror of the outbox table, so the hot
    /// path (every delivery asks "is anything queued first?") needs no query.
    pub(crate) backlog: Mutex<std::collections::BTreeSet<String>>,
    /// Inserts gathered for one transaction (group commit).
    pub(crate) commits: Mutex<CommitQueue>,
}

impl Store {
    /// Opens (creating if needed) `DATA_DIR/history.db` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::setup(Connection::open(data_dir.join(DB_FILE))?)
    }

    /// A throwaway database in memory, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers never block the writer, and a commit is one append.
        // synchronous=NORMAL in WAL mode: a committed transaction survives
        // the process being killed (it is in the OS's hands); only a power
        // loss can roll back the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let backlog = {
            let mut statement = conn.prepare("SELECT DISTINCT peer FROM outbox")?;
            let peers = statement.query_map([], |r| r.get::<_, String>(0))?;
            peers.collect::<Result<_, _>>()?
        };
        Ok(Self {
            conn: Mutex::new(conn),
            backlog: Mutex::new(backlog),
            commits: Mutex::new(CommitQueue::default()),
        })
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> usize {
        self.conn
            .lock()
            .expect("store lock")
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map(|v| v as usize)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_new_database_to_the_latest_schema_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version(), MIGRATIONS.len());
        drop(store);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.schema_version(), MIGRATIONS.len());
        let mode: String = again
            .conn
            .lock()
            .unwrap()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
