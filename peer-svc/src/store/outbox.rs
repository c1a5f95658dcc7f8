//! The outbox table: messages owed to a peer that could not be reached, kept
//! in the store until delivered or the peer leaves. Bounded per peer and in
//! total: past a bound the oldest are dropped (past the total, from the
//! longest queue), and the caller reports how many — never silently.

use std::sync::atomic::Ordering;

use chat_proto::v1::ChatMessage;
use rusqlite::{Transaction, params};

use super::{Store, StoreError, history::message_from_row};

/// The outbox's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most messages queued for one peer.
    pub per_peer: usize,
    /// Most queued messages across all peers.
    pub total: usize,
}

/// What queueing one message dropped to stay within the bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The oldest queued for this peer, past the per-peer bound.
    pub here: usize,
    /// Past the total: the peer whose queue was the longest, and how many
    /// of its oldest were dropped.
    pub elsewhere: Option<(String, usize)>,
}

impl Store {
    /// Queues `message` (already stored) for `peer` within `limits`.
    /// Returns what was dropped to stay within them.
    pub fn enqueue(
        &self,
        peer: &str,
        message: &ChatMessage,
        limits: OutboxLimits,
    ) -> Result<Dropped, StoreError> {
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction()?;
        let inserted = tx.execute(
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
        let here = drop_oldest(&tx, peer, (queued as usize).saturating_sub(limits.per_peer))?;
        let total = self.outbox_rows.load(Ordering::Relaxed) + inserted - here;
        let elsewhere = if total > limits.total {
            // The longest queue gives way: a flood of queues for peers that
            // never come back cannot push out what a member is owed.
            let longest: (String, i64) = tx.query_row(
                "SELECT peer, count(*) AS n FROM outbox GROUP BY peer ORDER BY n DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let n = drop_oldest(&tx, &longest.0, total - limits.total)?;
            Some((longest.0, n))
        } else {
            None
        };
        tx.commit()?;
        let gone = elsewhere.as_ref().map_or(0, |(_, n)| *n);
        self.outbox_rows.store(total - gone, Ordering::Relaxed);
        let mut backlog = self.backlog.lock().expect("backlog lock");
        backlog.insert(peer.to_owned());
        if let Some((other, _)) = &elsewhere
            && other != peer
            && self.pending_count_in(&conn, other)? == 0
        {
            backlog.remove(other);
        }
        Ok(Dropped { here, elsewhere })
    }

    fn pending_count_in(
        &self,
        conn: &rusqlite::Connection,
        peer: &str,
    ) -> Result<usize, StoreError> {
        let n: i64 =
            conn.query_row("SELECT count(*) FROM outbox WHERE peer = ?1", [peer], |r| {
                r.get(0)
            })?;
        Ok(n as usize)
    }

    /// How many messages are queued across all peers.
    pub fn pending_total(&self) -> usize {
        self.outbox_rows.load(Ordering::Relaxed)
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
        self.pending_count_in(&conn, peer)
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
        let gone = conn.execute(
            "DELETE FROM outbox WHERE peer = ?1 AND sender = ?2 AND message_id = ?3",
            params![peer, message.sender, message.id],
        )?;
        self.outbox_rows.fetch_sub(gone, Ordering::Relaxed);
        if self.pending_count_in(&conn, peer)? == 0 {
            self.backlog.lock().expect("backlog lock").remove(peer);
        }
        Ok(())
    }

    /// Forgets everything queued for `peer` (it left); returns how many.
    pub fn clear_pending(&self, peer: &str) -> Result<usize, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let n = conn.execute("DELETE FROM outbox WHERE peer = ?1", [peer])?;
        self.outbox_rows.fetch_sub(n, Ordering::Relaxed);
        self.backlog.lock().expect("backlog lock").remove(peer);
        Ok(n)
    }
}

/// Drops the `n` oldest messages queued for `peer`; returns how many went.
fn drop_oldest(tx: &Transaction<'_>, peer: &str, n: usize) -> Result<usize, StoreError> {
    if n == 0 {
        return Ok(0);
    }
    Ok(tx.execute(
        "DELETE FROM outbox WHERE peer = ?1 AND (sender, message_id) IN (
           SELECT o.sender, o.message_id FROM outbox o
           JOIN messages m ON m.sender = o.sender AND m.id = o.message_id
           WHERE o.peer = ?1 ORDER BY m.hlc, m.sender, m.id LIMIT ?2)",
        params![peer, n as i64],
    )?)
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

    const LIMITS: OutboxLimits = OutboxLimits {
        per_peer: 3,
        total: 100,
    };

    fn dropped(here: usize) -> Dropped {
        Dropped {
            here,
            elsewhere: None,
        }
    }

    #[test]
    fn past_the_total_the_longest_queue_gives_way() {
        let s = Store::open_in_memory().unwrap();
        let limits = OutboxLimits {
            per_peer: 10,
            total: 5,
        };
        let messages: Vec<ChatMessage> = (0..8).map(|i| msg(i, &format!("m{i}"))).collect();
        for m in &messages {
            s.insert(m).unwrap();
        }
        // Four for a ghost, one for bob: at the total.
        for m in &messages[..4] {
            assert_eq!(s.enqueue("ghost", m, limits).unwrap(), dropped(0));
        }
        assert_eq!(s.enqueue("bob", &messages[4], limits).unwrap(), dropped(0));
        assert_eq!(s.pending_total(), 5);
        // One more for bob: the ghost's oldest goes, not bob's.
        let d = s.enqueue("bob", &messages[5], limits).unwrap();
        assert_eq!(d.elsewhere, Some(("ghost".to_owned(), 1)));
        assert_eq!(s.pending_count("bob").unwrap(), 2);
        assert_eq!(s.pending_count("ghost").unwrap(), 3);
        assert_eq!(s.pending_total(), 5);
        assert_eq!(s.pending("ghost", 10).unwrap()[0].id, "m1");
        s.clear_pending("ghost").unwrap();
        assert_eq!(s.pending_total(), 2);
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
        assert_eq!(s.enqueue("bob", &m["c"], LIMITS).unwrap(), dropped(0));
        assert_eq!(s.enqueue("bob", &m["a"], LIMITS).unwrap(), dropped(0));
        assert_eq!(
            s.enqueue("bob", &m["a"], LIMITS).unwrap(),
            dropped(0),
            "queued once"
        );
        assert_eq!(s.enqueue("bob", &m["b"], LIMITS).unwrap(), dropped(0));
        assert_eq!(
            s.enqueue("bob", &m["d"], LIMITS).unwrap(),
            dropped(1),
            "the oldest is dropped past the bound"
        );
        assert_eq!(s.pending_total(), 3);
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
