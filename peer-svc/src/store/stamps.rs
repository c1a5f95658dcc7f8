//! The newest handshake timestamp accepted from each peer, kept durable so
//! the replay check of first handshake messages survives a restart.

use std::collections::HashMap;

use rusqlite::params;

use super::{Store, StoreError};

impl Store {
    /// Every peer's newest accepted handshake timestamp.
    pub fn handshake_stamps(&self) -> Result<HashMap<String, u64>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare("SELECT peer, stamp FROM handshake_stamps")?;
        let rows = statement.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records `stamp` as `peer`'s newest (committed when this returns).
    pub fn save_handshake_stamp(&self, peer: &str, stamp: u64) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.prepare_cached(
            "INSERT INTO handshake_stamps (peer, stamp) VALUES (?1, ?2)
             ON CONFLICT (peer) DO UPDATE SET stamp = max(stamp, excluded.stamp)",
        )?
        // Clamped: SQLite integers are signed, and a stamp past i64::MAX
        // (only a peer's own authenticated message can carry one) must
        // still compare as the largest.
        .execute(params![peer, stamp.min(i64::MAX as u64) as i64])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_reopening_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.save_handshake_stamp("alice", 10).unwrap();
            store.save_handshake_stamp("alice", 7).unwrap();
            store.save_handshake_stamp("bob", 3).unwrap();
        }
        let stamps = Store::open(dir.path()).unwrap().handshake_stamps().unwrap();
        assert_eq!(stamps.get("alice"), Some(&10));
        assert_eq!(stamps.get("bob"), Some(&3));
    }
}
