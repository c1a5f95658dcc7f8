//! Signed messages by author: every author key this peer accepted messages
//! from (with the admission chain that binds it to its name), and each
//! author's feed read in sequence order, for `chat history --verify`, the
//! gap check after a history sync, and this peer's own feed head.

use chat_proto::v1::ChatMessage;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, history::message_from_row};

/// An author as recorded: its key, its name, its encoded admission chain.
pub type AuthorRow = (Vec<u8>, String, Vec<u8>);

impl Store {
    /// Records that `author_key` speaks as `name`, proven by `chain` (an
    /// encoded `Credential` holding the admission chain; empty when open).
    /// The first record of a key stays.
    pub fn save_author(
        &self,
        author_key: &[u8],
        name: &str,
        chain: &[u8],
    ) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.prepare_cached(
            "INSERT INTO authors (author_key, name, chain) VALUES (?1, ?2, ?3)
             ON CONFLICT (author_key) DO NOTHING",
        )?
        .execute(params![author_key, name, chain])?;
        Ok(())
    }

    /// Every author recorded: (key, name, encoded chain).
    pub fn authors(&self) -> Result<Vec<AuthorRow>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare("SELECT author_key, name, chain FROM authors")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest message of `author_key`'s feed: (seq, authored bytes); of
    /// two with one seq (a fork), the one with the smaller id, so every peer
    /// holding both names the same head.
    pub fn feed_head(&self, author_key: &[u8]) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        Ok(conn
            .prepare_cached(
                "SELECT seq, authored FROM messages
                 WHERE author_key = ?1 ORDER BY seq DESC, id LIMIT 1",
            )?
            .query_row([author_key], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()?)
    }

    /// Like [`Store::feed_head`], with the head's id: (seq, id, authored).
    pub fn feed_top(
        &self,
        author_key: &[u8],
    ) -> Result<Option<(u64, String, Vec<u8>)>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        Ok(conn
            .prepare_cached(
                "SELECT seq, id, authored FROM messages
                 WHERE author_key = ?1 ORDER BY seq DESC, id LIMIT 1",
            )?
            .query_row([author_key], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })
            .optional()?)
    }

    /// The lowest seq of `author_key`'s feed held twice (a fork), if any.
    pub fn first_fork(&self, author_key: &[u8]) -> Result<Option<u64>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let fork: Option<i64> = conn
            .prepare_cached(
                "SELECT seq FROM messages WHERE author_key = ?1
                 GROUP BY seq HAVING count(*) > 1 ORDER BY seq LIMIT 1",
            )?
            .query_row([author_key], |r| r.get(0))
            .optional()?;
        Ok(fork.map(|s| s as u64))
    }

    /// The sequence numbers of `author_key`'s messages stored, ascending
    /// (read from the feed index alone).
    pub fn feed_seqs(&self, author_key: &[u8]) -> Result<Vec<u64>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement =
            conn.prepare_cached("SELECT seq FROM messages WHERE author_key = ?1 ORDER BY seq")?;
        let rows = statement.query_map([author_key], |r| Ok(r.get::<_, i64>(0)? as u64))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every author key with signed messages stored, with the name its
    /// messages carry, by name then key.
    pub fn feed_keys(&self) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare(
            "SELECT DISTINCT author_key, sender FROM messages
             WHERE author_key IS NOT NULL ORDER BY sender, author_key",
        )?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` messages of `author_key`'s feed after `after` (seq,
    /// id), in seq order, then id (so two messages with one seq, a fork,
    /// come in one order and a page boundary splits neither from the feed).
    pub fn feed(
        &self,
        author_key: &[u8],
        after: (u64, &str),
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare_cached(&format!(
            "SELECT {} FROM messages WHERE author_key = ?1 AND (seq, id) > (?2, ?3)
             ORDER BY seq, id LIMIT ?4",
            super::history::COLUMNS
        ))?;
        let rows = statement.query_map(
            params![author_key, after.0 as i64, after.1, limit as i64],
            message_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every author feed held: (author key, highest seq, how many distinct
    /// seqs), by author key.
    pub fn feed_extents(&self) -> Result<Vec<(Vec<u8>, u64, u64)>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare_cached(
            "SELECT author_key, MAX(seq), COUNT(DISTINCT seq) FROM messages
             WHERE author_key IS NOT NULL GROUP BY author_key ORDER BY author_key",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get::<_, i64>(2)?.max(0) as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Messages stored without a signature (before protocol 3).
    pub fn unsigned_count(&self) -> Result<u64, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        Ok(conn.query_row(
            "SELECT count(*) FROM messages WHERE authored IS NULL",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}
