//! The outbox table: messages owed to a peer that could not be reached, kept
//! in the store until delivered or the peer leaves. Bounded per peer and in
//! total: past a bound the oldest are dropped (past the total, from the
//! longest queue), and the caller reports how many — never silently.

use std::{collections::BTreeMap, sync::atomic::Ordering};

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
        // The queue lengths change only under the store lock: they match
        // the table whenever it is free.
        let mut lengths = self.backlog.lock().expect("backlog lock");
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
        let queued = lengths.get(peer).copied().unwrap_or(0) + inserted;
        let here = drop_oldest(&tx, peer, queued.saturating_sub(limits.per_peer))?;
        let total = self.outbox_rows.load(Ordering::Relaxed) + inserted - here;
        let elsewhere = if total > limits.total {
            // The longest queue gives way: a flood of queues for peers that
            // never come back cannot push out what a member is owed.
            let longest = lengths
                .iter()
                .map(|(p, &n)| (p.as_str(), if p == peer { queued - here } else { n }))
                .chain(std::iter::once((peer, queued - here)))
                .max_by_key(|&(_, n)| n)
                .map(|(p, _)| p.to_owned())
                .expect("at least this peer's queue");
            let n = drop_oldest(&tx, &longest, total - limits.total)?;
            Some((longest, n))
        } else {
            None
        };
        tx.commit()?;
        lengths.insert(peer.to_owned(), queued - here);
        let mut total = total;
        if let Some((other, n)) = &elsewhere {
            total -= n;
            shorten(&mut lengths, other, *n);
        }
        self.outbox_rows.store(total, Ordering::Relaxed);
        Ok(Dropped { here, elsewhere })
    }

    /// How many messages are queued across all peers.
    pub fn pending_total(&self) -> usize {
        self.outbox_rows.load(Ordering::Relaxed)
    }

    /// Whether anything is queued for `peer` (no query: kept in memory).
    pub fn has_pending(&self, peer: &str) -> bool {
        self.backlog
            .lock()
            .expect("backlog lock")
            .contains_key(peer)
    }

    /// The oldest `max` messages queued for `peer`, in history order.
    pub fn pending(&self, peer: &str, max: usize) -> Result<Vec<ChatMessage>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare_cached(
            "SELECT m.id, m.hlc, m.sender, m.sender_fingerprint, m.sent_at_ms, m.text,
                    m.authored, m.signature, m.seq, m.author_key
             FROM outbox o JOIN messages m ON m.sender = o.sender AND m.id = o.message_id
             WHERE o.peer = ?1 ORDER BY m.hlc, m.sender, m.id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![peer, max as i64], message_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many messages are queued for `peer` (no query: kept in memory).
    pub fn pending_count(&self, peer: &str) -> Result<usize, StoreError> {
        Ok(self
            .backlog
            .lock()
            .expect("backlog lock")
            .get(peer)
            .copied()
            .unwrap_or(0))
    }

    /// Peers with queued messages, by name.
    pub fn peers_with_pending(&self) -> Vec<String> {
        self.backlog
            .lock()
            .expect("backlog lock")
            .keys()
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
        shorten(&mut self.backlog.lock().expect("backlog lock"), peer, gone);
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

/// Takes `n` from `peer`'s queue length, forgetting it at zero.
fn shorten(lengths: &mut BTreeMap<String, usize>, peer: &str, n: usize) {
    if let Some(len) = lengths.get_mut(peer) {
        *len = len.saturating_sub(n);
        if *len == 0 {
            lengths.remove(peer);
        }
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
    fn queue_lengths_are_read_back_when_the_store_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            for (i, peer) in ["bob", "bob", "carol"].into_iter().enumerate() {
                let m = msg(i as u64 + 1, &format!("m{i}"));
                s.insert(&m).unwrap();
                s.enqueue(peer, &m, LIMITS).unwrap();
            }
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.pending_total(), 3);
        assert_eq!(s.pending_count("bob").unwrap(), 2);
        assert_eq!(s.peers_with_pending(), ["bob", "carol"]);
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
