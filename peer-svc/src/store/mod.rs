//! The peer's embedded database: SQLite (bundled) in `DATA_DIR/history.db`,
//! in WAL mode, holding the message history and the outbox. A write returns
//! only once SQLite has committed it, so what was acknowledged survives a
//! restart or `kill -9`. The schema is versioned with `PRAGMA user_version`
//! and migrated forward on open.

mod admission;
pub use admission::member_name_in;
mod authors;
pub mod history;
pub mod outbox;
mod stamps;

use std::{path::Path, sync::Mutex, time::Duration};

use rusqlite::Connection;

/// The database file's name inside the data dir.
pub const DB_FILE: &str = "history.db";

/// How long a statement waits for a lock held by another connection
/// (e.g. a `sqlite3` shell the user opened) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a statement sleeps between tries while the database is locked,
/// for the first [`BUSY_QUICK_FOR`] of a wait, and after that. SQLite's own
/// busy handler sleeps 1, 2, 5, 10… ms; the locks a peer meets are held for
/// one commit or one rewind of the WAL, usually a millisecond or two, and a
/// commit should follow them that closely.
const BUSY_SLEEP: Duration = Duration::from_micros(100);
const BUSY_QUICK_FOR: Duration = Duration::from_millis(2);
const BUSY_SLEEP_LATER: Duration = Duration::from_millis(1);

/// How long the checkpointer waits for the write lock (and, holding it, for
/// the database's readers) before it gives up rewinding the WAL until the
/// next round. Commits are short and back to back under load: it gets in
/// between two of them.
const REWIND_WAIT: Duration = Duration::from_millis(20);

/// A busy handler's policy: keep retrying until `total` has passed since
/// the first try, sleeping briefly at first, then longer.
#[derive(Debug)]
struct BusyWait {
    total: Duration,
    since: std::time::Instant,
}

impl BusyWait {
    fn new(total: Duration) -> Self {
        Self {
            total,
            since: std::time::Instant::now(),
        }
    }

    /// SQLite's `count`-th call for one lock: sleeps and says whether to
    /// try again.
    fn retry(&mut self, count: i32) -> bool {
        if count == 0 {
            self.since = std::time::Instant::now();
        }
        let waited = self.since.elapsed();
        let Some(left) = self.total.checked_sub(waited).filter(|l| !l.is_zero()) else {
            return false;
        };
        let nap = if waited < BUSY_QUICK_FOR {
            BUSY_SLEEP
        } else {
            BUSY_SLEEP_LATER
        };
        std::thread::sleep(nap.min(left));
        true
    }
}

/// Makes `conn` retry a locked database for `total` (see [`BusyWait`]).
fn retry_when_busy(conn: &mut Connection, total: Duration) -> rusqlite::Result<()> {
    let mut wait = BusyWait::new(total);
    conn.busy_handler(Some(move |count: i32| wait.retry(count)))
}

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
    // 3: messages as a rowid table with two indexes. A 1 KiB text made the
    // WITHOUT ROWID rows spill into overflow pages, and the sender and time
    // indexes doubled the writes of every insert (the profile of a bulk
    // stream showed SQLite's commits as most of a peer's CPU). Lookups by
    // (sender, id) and the (hlc, sender, id) order keep their indexes;
    // `--from` and `--since` filter along the order index.
    "CREATE TABLE messages_v3 (
        sender             TEXT NOT NULL,
        id                 TEXT NOT NULL,
        hlc                INTEGER NOT NULL,
        sender_fingerprint TEXT NOT NULL,
        sent_at_ms         INTEGER NOT NULL,
        text               TEXT NOT NULL
     );
     INSERT INTO messages_v3 (sender, id, hlc, sender_fingerprint, sent_at_ms, text)
        SELECT sender, id, hlc, sender_fingerprint, sent_at_ms, text
        FROM messages ORDER BY hlc, sender, id;
     DROP TABLE messages;
     ALTER TABLE messages_v3 RENAME TO messages;
     CREATE UNIQUE INDEX messages_identity ON messages (sender, id);
     CREATE UNIQUE INDEX messages_order ON messages (hlc, sender, id);",
    // 4: the newest handshake timestamp accepted from each peer, so a
    // captured first message cannot be replayed after a restart.
    "CREATE TABLE handshake_stamps (
        peer  TEXT PRIMARY KEY,
        stamp INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 5: admission: this peer's own credential, the admission chain each
    // member last showed (or was invited with here), and the removals known.
    "CREATE TABLE own_credential (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        credential BLOB NOT NULL
     );
     CREATE TABLE admissions (
        name  TEXT PRIMARY KEY,
        chain BLOB NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE removals (
        invite_key BLOB PRIMARY KEY,
        at_millis  INTEGER NOT NULL,
        removal    BLOB NOT NULL
     ) WITHOUT ROWID;",
    // 6: signed messages (protocol 3): the exact bytes the author signed,
    // the signature, and the author's key and sequence number (each
    // author's feed is read in seq order by `feed`); NULL for messages
    // stored before. And every author key this peer accepted messages
    // from, with the admission chain that binds it to its name, kept after
    // the member is re-admitted under another key, so its old messages can
    // still be relayed with their proof.
    "ALTER TABLE messages ADD COLUMN authored BLOB;
     ALTER TABLE messages ADD COLUMN signature BLOB;
     ALTER TABLE messages ADD COLUMN seq INTEGER;
     ALTER TABLE messages ADD COLUMN author_key BLOB;
     CREATE INDEX messages_feed ON messages (author_key, seq) WHERE author_key IS NOT NULL;
     CREATE TABLE authors (
        author_key BLOB PRIMARY KEY,
        name       TEXT NOT NULL,
        chain      BLOB NOT NULL
     ) WITHOUT ROWID;",
    // 7: members whose safety number the owner compared out of band
    // (`chat verify NAME --yes`), with the identity key it was of.
    "CREATE TABLE verified (
        name     TEXT PRIMARY KEY,
        identity BLOB NOT NULL,
        at_ms    INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 8: the identity that used each invitation this peer issued, as it
    // confirmed it: an invitation is used once.
    "CREATE TABLE invitation_uses (
        invite_key BLOB PRIMARY KEY,
        identity   BLOB NOT NULL,
        at_ms      INTEGER NOT NULL
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

/// Where a group commit answers one caller: for each of its messages,
/// whether it was new.
pub(crate) type CommitWaiter = tokio::sync::oneshot::Sender<Result<Vec<bool>, StoreError>>;

/// Writes waiting for the next group commit, and whether one is running.
#[derive(Debug, Default)]
pub(crate) struct CommitQueue {
    pub(crate) waiting: Vec<(Vec<chat_proto::v1::ChatMessage>, CommitWaiter)>,
    pub(crate) committing: bool,
}

/// The peer's database.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Mutex<Connection>,
    /// Peers with queued messages and how many: a mirror of the outbox
    /// table, so the hot path (every delivery asks "is anything queued
    /// first?") needs no query, and the longest queue is found without one.
    pub(crate) backlog: Mutex<std::collections::BTreeMap<String, usize>>,
    /// Rows in the outbox (messages are never deleted, so only the outbox's
    /// own writes change it).
    pub(crate) outbox_rows: std::sync::atomic::AtomicUsize,
    /// Inserts gathered for one transaction (group commit).
    pub(crate) commits: Mutex<CommitQueue>,
    /// The signed messages added since the feed heads last read them.
    pub(crate) feed_journal: Mutex<FeedJournal>,
    /// Copies the WAL into the database off the write path; stops on drop.
    _checkpointer: Option<Checkpointer>,
}

/// A signed message added: (author key, seq, id), what the feed heads need
/// of it (the head's hash is read when the heads are, for the heads that
/// changed, not computed for every message stored).
pub type FeedEntry = (Vec<u8>, u64, String);

/// Signed messages added since the feed heads last took them. Past
/// [`MAX_FEED_JOURNAL`] it is dropped and marked overflowed: the heads are
/// then read again from the table.
#[derive(Debug, Default)]
pub struct FeedJournal {
    /// The messages added, in commit order.
    pub entries: Vec<FeedEntry>,
    /// Entries were dropped since the last take.
    pub overflowed: bool,
}

/// Most entries the feed journal keeps between two reads of the heads.
pub const MAX_FEED_JOURNAL: usize = 16_384;

/// How often the checkpointer copies committed WAL frames into the
/// database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// The checkpointer rewinds the WAL once it holds this much. Below it,
/// rewinding costs more than it saves (it holds writers while it syncs),
/// and a WAL that gets quiet moments is rewound by SQLite itself.
const REWIND_AFTER: i64 = 4 * 1024 * 1024;

/// Past this size the checkpointer also truncates the WAL file when it
/// rewinds it (it has grown while a reader kept it from rewinding).
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// A thread with its own connection that checkpoints the WAL. SQLite would
/// otherwise checkpoint inside whichever commit crosses its threshold,
/// stalling that commit (and every caller waiting on it) while it copies
/// and syncs the database.
///
/// Each round is two steps. A PASSIVE checkpoint copies what is committed
/// and syncs the database without blocking anyone. Then, once the WAL holds
/// more than [`REWIND_AFTER`], a RESTART checkpoint takes the write lock
/// between two commits (waiting at most [`REWIND_WAIT`]), copies the frames
/// committed meanwhile, syncs, and lets the next commit write at the WAL's
/// start again. Writers wait for it while it copies and syncs: a millisecond
/// or two on an idle disk, more on a busy one. Under a steady stream of
/// commits the WAL never catches up by itself (SQLite rewinds it only when a
/// commit finds it fully copied). Before, a TRUNCATE checkpoint once the WAL
/// passed 64 MiB did it in one go: it held every writer while it copied and
/// synced the whole WAL and gave its blocks back to the disk, for hundreds
/// of milliseconds on a busy disk. A reader still on an old snapshot (a
/// `sqlite3` shell in a transaction, say) keeps the PASSIVE step from
/// copying everything; the round then leaves the WAL alone rather than hold
/// writers while it waits for that reader.
#[derive(Debug)]
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let rounds = Rounds::open(path)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                loop {
                    let done = !matches!(
                        stopped.recv_timeout(CHECKPOINT_EVERY),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    if let Err(e) = rounds.run() {
                        tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                    }
                    if done {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::Batch(format!("cannot start the checkpointer: {e}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The checkpointer's own connection, and what its rounds need to know.
#[derive(Debug)]
struct Rounds {
    conn: Connection,
    /// The WAL file: `<database>-wal`.
    wal: std::path::PathBuf,
    /// The database's page size (it cannot change in WAL mode).
    page: i64,
}

impl Rounds {
    fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        retry_when_busy(&mut conn, REWIND_WAIT)?;
        let page = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Self {
            conn,
            wal: wal.into(),
            page,
        })
    }

    /// One round: copies what is committed, then rewinds the WAL if it is
    /// worth it and nobody keeps it from doing so for longer than
    /// [`REWIND_WAIT`]. Returns whether it rewound.
    fn run(&self) -> Result<bool, StoreError> {
        // (busy, frames in the WAL, frames copied): a checkpoint that
        // someone kept from finishing is not an error, its row says so.
        let (busy, frames, copied): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        let large = std::fs::metadata(&self.wal).is_ok_and(|m| m.len() > WAL_SIZE_LIMIT);
        let worth_it = large || frames * self.page >= REWIND_AFTER;
        if busy != 0 || copied < frames || !worth_it {
            return Ok(false);
        }
        let rewind = if large { "TRUNCATE" } else { "RESTART" };
        let busy: i64 =
            self.conn
                .query_row(&format!("PRAGMA wal_checkpoint({rewind})"), [], |r| {
                    r.get(0)
                })?;
        Ok(busy == 0)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (creating if needed) `DATA_DIR/history.db` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        create_private(&path)?;
        let mut store = Self::setup(Connection::open(&path)?)?;
        {
            let conn = store.conn.lock().expect("store lock");
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        store._checkpointer = Some(Checkpointer::start(&path)?);
        Ok(store)
    }

    /// A throwaway database in memory, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        retry_when_busy(&mut conn, BUSY_TIMEOUT)?;
        // WAL: readers never block the writer, and a commit is one append.
        // synchronous=NORMAL in WAL mode: a committed transaction survives
        // the process being killed (it is in the OS's hands); only a power
        // loss can roll back the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Migrations rebuild tables (SQLite's documented way to change a
        // table: new table, copy, drop, rename), which needs foreign keys off
        // while they run; every key is checked before the step commits.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(step)?;
            let broken: i64 =
                tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })?;
            if broken > 0 {
                return Err(StoreError::Batch(format!(
                    "schema migration {} would break {broken} foreign keys",
                    i + 1
                )));
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let backlog: std::collections::BTreeMap<String, usize> = {
            let mut statement = conn.prepare("SELECT peer, count(*) FROM outbox GROUP BY peer")?;
            let peers = statement.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
            })?;
            peers.collect::<Result<_, _>>()?
        };
        let rows = backlog.values().sum();
        Ok(Self {
            conn: Mutex::new(conn),
            backlog: Mutex::new(backlog),
            outbox_rows: std::sync::atomic::AtomicUsize::new(rows),
            feed_journal: Mutex::default(),
            commits: Mutex::new(CommitQueue::default()),
            _checkpointer: None,
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

/// Creates the database file 0600 before SQLite opens it: SQLite creates
/// a new file with the process's umask (usually 0644) and gives its WAL and
/// shared-memory files the database file's mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let private = |e: std::io::Error| StoreError::Batch(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(private)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_2_database_keeps_its_messages_and_outbox_through_migration_3() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.pragma_update(None, "foreign_keys", "ON").unwrap();
            for step in &MIGRATIONS[..2] {
                conn.execute_batch(step).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute_batch(
                "INSERT INTO messages VALUES ('alice', 'm1', 65536, 'fp', 1, 'hello');
                 INSERT INTO messages VALUES ('bob', 'm1', 131072, 'fp', 2, 'shadow?');
                 INSERT INTO outbox VALUES ('carol', 'alice', 'm1', 3);",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version(), MIGRATIONS.len());
        assert_eq!(store.get("alice", "m1").unwrap().unwrap().text, "hello");
        assert_eq!(store.get("bob", "m1").unwrap().unwrap().text, "shadow?");
        assert_eq!(store.pending("carol", 10).unwrap().len(), 1);
        assert!(store.has_pending("carol"));
        // The identity is still unique, and foreign keys are enforced again.
        let conn = store.conn.lock().unwrap();
        assert!(
            conn.execute(
                "INSERT INTO messages VALUES ('alice', 'm1', 9, 'fp', 9, 'again')",
                []
            )
            .is_err()
        );
        assert!(
            conn.execute("INSERT INTO outbox VALUES ('carol', 'zed', 'nope', 4)", [])
                .is_err(),
            "an outbox row needs its message"
        );
    }

    fn message(n: usize) -> chat_proto::v1::ChatMessage {
        chat_proto::v1::ChatMessage {
            id: format!("m{n}"),
            sender: "alice".into(),
            sender_fingerprint: "fp".into(),
            sent_at: None,
            text: "x".repeat(1024),
            hlc: n as u64 + 1,
            ..Default::default()
        }
    }

    /// A store with no checkpointer thread, and the checkpointer's rounds
    /// to run by hand.
    fn store_and_rounds(dir: &Path) -> (Store, Rounds) {
        let store = Store::setup(Connection::open(dir.join(DB_FILE)).unwrap()).unwrap();
        let writer = store.conn.lock().unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        drop(writer);
        (store, Rounds::open(&dir.join(DB_FILE)).unwrap())
    }

    #[test]
    fn checkpoint_rounds_keep_the_wal_small_under_back_to_back_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rounds) = store_and_rounds(dir.path());
        let store = std::sync::Arc::new(store);
        // A writer commits 4,000 messages one by one, with no pause: the
        // WAL is never fully copied when a commit starts, so with PASSIVE
        // checkpoints alone SQLite never rewinds it and it grows to 65 MB
        // (four 4 KiB frames a commit). Rewound, it holds REWIND_AFTER plus
        // what is committed during one round.
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0..4000 {
                    store.insert_many(&[message(n)]).unwrap();
                }
            })
        };
        let mut rewound = 0;
        while !writer.is_finished() {
            rewound += usize::from(rounds.run().unwrap());
        }
        writer.join().unwrap();
        assert!(rewound > 0, "no round got in between the commits");
        let wal_len = std::fs::metadata(&rounds.wal).unwrap().len();
        assert!(wal_len < 40 * 1024 * 1024, "WAL is {wal_len} bytes");
        assert_eq!(store.len(), 4000);
    }

    #[test]
    fn a_small_wal_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rounds) = store_and_rounds(dir.path());
        store.insert_many(&[message(0)]).unwrap();
        assert!(!rounds.run().unwrap());
    }

    /// Enough messages for the WAL to pass REWIND_AFTER.
    fn fill_wal(store: &Store, from: usize) {
        let batch: Vec<_> = (from..from + 5000).map(message).collect();
        assert_eq!(store.insert_many(&batch).unwrap(), 5000);
    }

    #[test]
    fn a_checkpoint_round_gives_up_rewinding_while_another_connection_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rounds) = store_and_rounds(dir.path());
        fill_wal(&store, 0);
        // Another connection holds the write lock: the round copies what it
        // can and gives up rewinding after REWIND_WAIT.
        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(!rounds.run().unwrap());
        // The store's own write waits for a lock held briefly, then goes
        // through: its busy handler retries.
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.execute_batch("COMMIT").unwrap();
        });
        fill_wal(&store, 5000);
        holder.join().unwrap();
        assert!(rounds.run().unwrap());
    }

    #[test]
    fn a_reader_on_an_old_snapshot_keeps_the_round_from_rewinding() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rounds) = store_and_rounds(dir.path());
        store.insert_many(&[message(0)]).unwrap();
        let reader = Connection::open(dir.path().join(DB_FILE)).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 1);
        fill_wal(&store, 1);
        // PASSIVE cannot copy past the reader's snapshot, so the round does
        // not take the write lock to wait for it.
        assert!(!rounds.run().unwrap());
        reader.execute_batch("COMMIT").unwrap();
        assert!(rounds.run().unwrap());
        assert_eq!(store.len(), 5001);
    }

    #[test]
    fn a_busy_wait_retries_until_its_time_is_up_then_stops() {
        let mut none = BusyWait::new(Duration::ZERO);
        assert!(!none.retry(0));
        let total = Duration::from_millis(5);
        let mut wait = BusyWait::new(total);
        let start = std::time::Instant::now();
        let mut count = 0;
        while wait.retry(count) {
            count += 1;
        }
        assert!(start.elapsed() >= total);
        // 100 µs naps for the first 2 ms, then 1 ms naps: a few dozen calls,
        // not one per microsecond, and never an endless loop.
        assert!(count > 1, "{count}");
        // A new lock (count 0 again) starts a new wait.
        assert!(wait.retry(0));
    }

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
