//! The outbox table: messages owed to a peer that could not be reached, kept
//! in the store until delivered or the peer leaves. Bounded per peer: past the
//! bound the oldest are dropped, and the caller reports how many — never
//! silently.

use chat_proto::v1::ChatMessage;
use rusqlite::params;

use super::{Store, StoreError, history::message_from_row};

impl Store {
    /// Queues `message` (already stored) for `peer`, dropping the oldest
    /// beyond `limit`. Returns how many were dropped.
    pub fn enqueue(
        &self,
        peer: &str,
        message: &ChatMessage,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO outbox (peer, sender, message_id, queued_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![
                peer,
                message.sender,
                message.id,
                chrono::Utc::now().timestamp_millis()
            ],
        )?;
        let queued: i64 =
            tx.query_row("SELECT count(*) FROM outbox WHERE peer = ?1", [peer], |r| {
                r.get(0)
            })?;
        let excess = (queued as usize).saturating_sub(limit);
        if excess > 0 {
            tx.execute(
                "DELETE FROM outbox WHERE peer = ?1 AND (sender, message_id) IN (
                   SELECT o.sender, o.message_id FROM outbox o
                   JOIN messages m ON m.sender = o.sender AND m.id = o.message_id
                   WHERE o.peer = ?1 ORDER BY m.hlc, m.sender, m.id LIMIT ?2)",
                params![peer, excess as i64],
            )?;
        }
        tx.commit()?;
        self.backlog
            .lock()
            .expect("backlog lock")
            .insert(peer.to_owned());
        Ok(excess)
    }

    /// Whether anything is queued for `peer` (no query: kept in memory).
    pub fn has_pending(&self, peer: &str) -> bool {
        self.backlog.lock().expect("backlog lock").contains(peer)
    }

    /// The oldest `max` messages queued for `peer`, in history order.
    pub fn pending(&self, peer: &str, max: usize) -> Result<Vec<ChatMessage>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare_cached(
            "SELECT m.id, m.hlc, m.sender, m.sender_fingerprint, m.sent_at_ms, m.text
             FROM outbox o JOIN messages m ON m.sender = o.sender AND m.id = o.message_id
             WHERE o.peer = ?1 ORDER BY m.hlc, m.sender, m.id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![peer, max as i64], message_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many messages are queued for `peer`.
    pub fn pending_count(&self, peer: &str) -> Result<usize, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let n: i64 =
            conn.query_row("SELECT count(*) FROM outbox WHERE peer = ?1", [peer], |r| {
                r.get(0)
            })?;
        Ok(n as usize)
    }

    /// Peers with queued messages, by name.
    pub fn peers_with_pending(&self) -> Vec<String> {
        self.backlog
            .lock()
            .expect("backlog lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Marks `message` delivered to `peer`.
    pub fn delivered(&self, peer: &str, message: &ChatMessage) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.execute(
            "DELETE FROM outbox WHERE peer = ?1 AND sender = ?2 AND message_id = ?3",
            params![peer, message.sender, message.id],
        )?;
        let left: i64 =
            conn.query_row("SELECT count(*) FROM outbox WHERE peer = ?1", [peer], |r| {
                r.get(0)
            })?;
        if left == 0 {
            self.backlog.lock().expect("backlog lock").remove(peer);
        }
        Ok(())
    }

    /// Forgets everything queued for `peer` (it left); returns how many.
    pub fn clear_pending(&self, peer: &str) -> Result<usize, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let n = conn.execute("DELETE FROM outbox WHERE peer = ?1", [peer])?;
        self.backlog.lock().expect("backlog lock").remove(peer);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(hlc: u64, id: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            sender: "me".into(),
            hlc,
            text: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn queued_in_history_order_bounded_and_cleared() {
        let s = Store::open_in_memory().unwrap();
        let m: std::collections::HashMap<&str, ChatMessage> =
            [(3, "c"), (1, "a"), (2, "b"), (4, "d")]
                .into_iter()
                .map(|(h, id)| (id, msg(h, id)))
                .collect();
        for message in m.values() {
            s.insert(message).unwrap();
        }
        assert_eq!(s.enqueue("bob", &m["c"], 3).unwrap(), 0);
        assert_eq!(s.enqueue("bob", &m["a"], 3).unwrap(), 0);
        assert_eq!(s.enqueue("bob", &m["a"], 3).unwrap(), 0, "queued once");
        assert_eq!(s.enqueue("bob", &m["b"], 3).unwrap(), 0);
        assert_eq!(
            s.enqueue("bob", &m["d"], 3).unwrap(),
            1,
            "the oldest is dropped past the bound"
        );
        let ids: Vec<String> = s
            .pending("bob", 10)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["b", "c", "d"]);
        s.delivered("bob", &m["b"]).unwrap();
        assert_eq!(s.pending_count("bob").unwrap(), 2);
        assert_eq!(s.peers_with_pending(), ["bob"]);
        assert!(s.has_pending("bob"));
        assert_eq!(s.clear_pending("bob").unwrap(), 2);
        assert!(s.peers_with_pending().is_empty());
        assert!(!s.has_pending("bob"));
    }
}
