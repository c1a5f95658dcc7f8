//! What admission keeps durable: this peer's own credential, the admission
//! chain each member last showed (so `chat remove` works while it is
//! offline), and every removal known (so a restart forgets none).

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// A removal as kept: the revoked invitation key, when (ms since the
/// epoch), and the encoded removal.
pub type StoredRemoval = ([u8; 32], u64, Vec<u8>);

/// The name the member whose data dir is `data_dir` was admitted under,
/// read without opening the store for writing (a running peer may hold
/// it): None if the data dir holds no store or no membership.
pub fn member_name_in(data_dir: &std::path::Path) -> Result<Option<String>, StoreError> {
    use prost::Message as _;
    let path = data_dir.join(super::DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let kept: Option<Vec<u8>> = conn
        .query_row(
            "SELECT credential FROM own_credential WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(kept
        .and_then(|bytes| chat_proto::v1::Credential::decode(bytes.as_slice()).ok())
        .and_then(|c| c.chain.last().map(|a| a.name.clone())))
}

impl Store {
    /// This peer's own credential (encoded), if it is a member of a network.
    pub fn own_credential(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        Ok(conn
            .query_row(
                "SELECT credential FROM own_credential WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The identity key `name` was marked verified with, if it was.
    pub fn verified_identity(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        Ok(conn
            .query_row(
                "SELECT identity FROM verified WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every member marked verified, with the identity key it was.
    pub fn verified_identities(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<u8>>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare_cached("SELECT name, identity FROM verified")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks `name` verified with `identity` (committed when this returns).
    pub fn save_verified(&self, name: &str, identity: &[u8]) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.execute(
            "INSERT INTO verified (name, identity, at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET identity = excluded.identity, at_ms = excluded.at_ms",
            params![name, identity, chrono::Utc::now().timestamp_millis()],
        )?;
        Ok(())
    }

    /// Records that `identity` used the invitation with `invite_key`,
    /// unless one was recorded already; returns the identity recorded
    /// (this one, or the first), committed when this returns.
    pub fn record_invitation_use(
        &self,
        invite_key: &[u8],
        identity: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.execute(
            "INSERT INTO invitation_uses (invite_key, identity, at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (invite_key) DO NOTHING",
            params![invite_key, identity, chrono::Utc::now().timestamp_millis()],
        )?;
        Ok(conn.query_row(
            "SELECT identity FROM invitation_uses WHERE invite_key = ?1",
            [invite_key],
            |r| r.get(0),
        )?)
    }

    /// Saves this peer's own credential (committed when this returns).
    pub fn save_own_credential(&self, credential: &[u8]) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.execute(
            "INSERT INTO own_credential (id, credential) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET credential = excluded.credential",
            params![credential],
        )?;
        Ok(())
    }

    /// Every member's last admission chain (encoded), by name.
    pub fn admissions(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare("SELECT name, chain FROM admissions")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records `name`'s admission chain (encoded).
    pub fn save_admission(&self, name: &str, chain: &[u8]) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.prepare_cached(
            "INSERT INTO admissions (name, chain) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET chain = excluded.chain",
        )?
        .execute(params![name, chain])?;
        Ok(())
    }

    /// Every removal known: (revoked invitation key, when, the encoded
    /// removal), newest first. All of them: a removal is never forgotten.
    pub fn removals(&self) -> Result<Vec<StoredRemoval>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare(
            "SELECT invite_key, at_millis, removal FROM removals ORDER BY at_millis DESC, invite_key",
        )?;
        let rows = statement.query_map([], |r| {
            let key: Vec<u8> = r.get(0)?;
            let at: i64 = r.get(1)?;
            Ok((key, at, r.get(2)?))
        })?;
        let mut removals = Vec::new();
        for row in rows {
            let (key, at, removal) = row?;
            // Only this peer writes the table, always with 32-byte keys.
            let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else {
                continue;
            };
            removals.push((key, at.max(0) as u64, removal));
        }
        Ok(removals)
    }

    /// Records a removal of `invite_key`. The first one of a key stays (its
    /// time is the earliest, which bounds what the removed key may still
    /// have signed); a second is kept out.
    pub fn save_removal(
        &self,
        invite_key: &[u8; 32],
        at_millis: u64,
        removal: &[u8],
    ) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.execute(
            "INSERT INTO removals (invite_key, at_millis, removal) VALUES (?1, ?2, ?3)
             ON CONFLICT (invite_key) DO NOTHING",
            params![
                invite_key.as_slice(),
                at_millis.min(i64::MAX as u64) as i64,
                removal
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.own_credential().unwrap(), None);
            store.save_own_credential(b"mine").unwrap();
            store.save_admission("bob", b"chain1").unwrap();
            store.save_admission("bob", b"chain2").unwrap();
            store.save_removal(&[1; 32], 5, b"old").unwrap();
            store.save_removal(&[2; 32], 9, b"new").unwrap();
            store.save_removal(&[2; 32], 9, b"again").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.own_credential().unwrap().as_deref(),
            Some(&b"mine"[..])
        );
        assert_eq!(
            store.admissions().unwrap(),
            [("bob".into(), b"chain2".to_vec())]
        );
        assert_eq!(
            store.removals().unwrap(),
            [([2; 32], 9, b"new".to_vec()), ([1; 32], 5, b"old".to_vec())]
        );
    }
}
