//! What this peer sends: a text is checked, stamped with the next clock
//! value and an id, signed by this peer's identity key as the next message
//! of its feed, stored (committed before anything leaves), and handed to
//! delivery, which reports per peer.

use std::sync::Arc;

use chat_proto::v1::{ChatMessage, SendResponse};

use crate::{
    authorship::Author,
    checks::{self, CheckError},
    config::{Config, MAX_SENT_AT_BEHIND},
    delivery::Delivery,
    hlc::Hlc,
    store::Store,
};

/// Why a message was not sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The text or id breaks a rule.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// This peer's store failed.
    #[error("{0}")]
    Store(String),
    /// This peer joined with a bearer token and waits for its inviter.
    #[error("not sent: this peer is not a member yet: {0}")]
    Pending(String),
    /// This peer is no longer a member of its network.
    #[error(
        "not sent: {0}; this peer is no longer a member, so nothing it sends is accepted. To take part again, ask a member for a new invitation and start with a new data dir"
    )]
    NotMember(String),
}

/// A message ready to send: stamped, not yet delivered.
#[derive(Debug)]
pub struct Prepared {
    message: ChatMessage,
    /// Already in the store (a retried Send with the same id).
    stored: bool,
    /// Its turn to be stored (none for one already stored).
    turn: Option<Turn>,
}

/// A written message's turn to be handed to the store (see `feed_order`):
/// given up if it is dropped before, so no later message waits for ever.
#[derive(Debug)]
struct Turn {
    author: Arc<Author>,
    seq: u64,
    taken: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.taken {
            self.author.order().done(self.seq);
        }
    }
}

/// The sending side of this peer.
#[derive(Debug)]
pub struct Outbound {
    name: String,
    author: Arc<Author>,
    max_message_bytes: usize,
    hlc: Arc<Hlc>,
    store: Arc<Store>,
    delivery: Arc<Delivery>,
}

impl Outbound {
    /// Sends as `config.name`, signed by `author`, through `delivery`.
    pub fn new(
        config: &Config,
        author: Arc<Author>,
        hlc: Arc<Hlc>,
        store: Arc<Store>,
        delivery: Arc<Delivery>,
    ) -> Self {
        Self {
            name: config.name.clone(),
            author,
            max_message_bytes: config.max_message_bytes,
            hlc,
            store,
            delivery,
        }
    }

    /// `Control/Send`: stores the message, then encrypts it separately for
    /// every connected peer and delivers to all of them at once.
    pub async fn send(&self, text: String, id: String) -> Result<SendResponse, SendError> {
        let prepared = self.prepare(text, id)?;
        self.send_prepared(vec![prepared])
            .await
            .pop()
            .expect("one answer per message")
    }

    /// The first half of a Send, done in the caller's order: checks the
    /// text, and stamps a new message with the next clock value (or finds
    /// the one already sent under this id). `SendStream` prepares in
    /// request order, so the history keeps that order.
    pub fn prepare(&self, text: String, id: String) -> Result<Prepared, SendError> {
        checks::text_to_send(&text, self.max_message_bytes)?;
        if let Some(removal) = self.delivery.own_removal() {
            return Err(SendError::NotMember(removal.to_string()));
        }
        if let Some(inviter) = self.delivery.own_pending() {
            let why = self.delivery.pending_refusal().unwrap_or_else(|| {
                format!("waiting for {inviter}, who made the invitation, to confirm it (it must be online once; the peer keeps asking)")
            });
            return Err(SendError::Pending(why));
        }
        if let Some(stored) = self.existing_own_message(&id)? {
            return Ok(Prepared {
                message: stored,
                stored: true,
                turn: None,
            });
        }
        // Written here, in the caller's order; signed in `send_prepared`,
        // where many messages are signed at once on every core.
        let message = self.author.write(
            || {
                let now = chrono::Utc::now();
                let hlc = self.hlc.tick(now.timestamp_millis().max(0) as u64);
                let id = if id.is_empty() {
                    let fingerprint = self.author.fingerprint().replace(' ', "");
                    format!("{}-{hlc:016x}", &fingerprint[..8])
                } else {
                    id
                };
                // Our wall clock, unless it runs so far behind the clock
                // (pushed on by peers' clocks) that receivers would refuse
                // it: then the clock's own time.
                let wall = now.timestamp_millis().max(0) as u64;
                let clock = Hlc::millis(hlc);
                let behind = MAX_SENT_AT_BEHIND.as_millis() as u64;
                let ms = if clock.saturating_sub(wall) > behind {
                    clock
                } else {
                    wall.min(clock)
                };
                let sent_at = crate::authorship::timestamp(ms);
                (id, hlc, sent_at)
            },
            text,
        );
        let turn = Turn {
            author: self.author.clone(),
            seq: message.seq,
            taken: false,
        };
        Ok(Prepared {
            message,
            stored: false,
            turn: Some(turn),
        })
    }

    /// The second half: signs the prepared messages, stores them in one
    /// transaction (committed before anything is sent), then delivers each
    /// to every peer, all at once. One answer per message, in order.
    pub async fn send_prepared(
        &self,
        mut prepared: Vec<Prepared>,
    ) -> Vec<Result<SendResponse, SendError>> {
        for p in prepared.iter_mut().filter(|p| !p.stored) {
            self.author.sign_written(&mut p.message);
        }
        let new = match self.store_in_order(&mut prepared).await {
            Ok(new) => new,
            Err(e) => {
                let why = SendError::Store(format!("cannot store the message: {e}"));
                return prepared.iter().map(|_| Err(why.clone())).collect();
            }
        };
        let mut new = new.into_iter();
        let mut messages = Vec::with_capacity(prepared.len());
        for Prepared {
            message, stored, ..
        } in prepared
        {
            if !stored && new.next() == Some(false) {
                // The same id was sent concurrently: deliver what was stored.
                messages.push(match self.existing_own_message(&message.id) {
                    Ok(Some(first)) => Ok(first),
                    Ok(None) => Ok(message),
                    Err(e) => Err(e),
                });
            } else {
                messages.push(Ok(message));
            }
        }
        futures::future::join_all(
            messages
                .into_iter()
                .map(|m| async move { Ok(self.delivery.to_everyone(m?).await) }),
        )
        .await
    }

    /// Stores the fresh messages of `prepared`, each run of consecutive
    /// sequence numbers handed to the store's commit queue when its turn
    /// comes (every earlier number handed over first), then waits for the
    /// commits: for each fresh message, whether it was new.
    async fn store_in_order(
        &self,
        prepared: &mut [Prepared],
    ) -> Result<Vec<bool>, crate::store::StoreError> {
        // Runs of consecutive sequence numbers, as indices into `prepared`.
        let mut runs: Vec<Vec<usize>> = Vec::new();
        for (i, p) in prepared.iter().enumerate() {
            if p.stored {
                continue;
            }
            match runs.last_mut() {
                Some(run) if prepared[run[run.len() - 1]].message.seq + 1 == p.message.seq => {
                    run.push(i)
                }
                _ => runs.push(vec![i]),
            }
        }
        let mut commits = Vec::with_capacity(runs.len());
        for run in runs {
            let first = prepared[run[0]].message.seq;
            self.author.order().wait_turn(first).await;
            let messages: Vec<ChatMessage> =
                run.iter().map(|&i| prepared[i].message.clone()).collect();
            commits.push(self.store.insert_batch_grouped(messages));
            for &i in &run {
                if let Some(turn) = prepared[i].turn.as_mut() {
                    turn.taken = true;
                }
                self.author.order().done(prepared[i].message.seq);
            }
        }
        let mut new = Vec::new();
        for result in futures::future::join_all(commits).await {
            new.extend(result?);
        }
        Ok(new)
    }

    /// For a retried Send with the same id: the message already stored.
    fn existing_own_message(&self, id: &str) -> Result<Option<ChatMessage>, SendError> {
        if id.is_empty() {
            return Ok(None);
        }
        checks::own_id(id)?;
        self.store
            .get(&self.name, id)
            .map_err(|e| SendError::Store(format!("cannot read the store: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::testkit::Kit;

    /// Issue 24, item 10: messages numbered later are never stored before
    /// messages numbered earlier, whichever send gets to the store first,
    /// so a crash in between cannot leave a gap in this peer's feed; and a
    /// message written but dropped unsent does not hold the others up.
    #[tokio::test]
    async fn own_messages_are_stored_in_the_order_they_are_numbered() {
        let kit = Kit::new("alice", |_| {});
        let config = Config::new("alice", "http://127.0.0.1:1", "/nonexistent");
        let identity = SigningKey::from_bytes(&[7; 32]);
        let own_key = identity.verifying_key().to_bytes();
        let author = Arc::new(Author::new(
            identity,
            Vec::new(),
            "alice",
            "abcd ef01 2345 6789",
            None,
        ));
        let outbound = Arc::new(Outbound::new(
            &config,
            author,
            Arc::new(Hlc::new()),
            kit.store.clone(),
            kit.delivery.clone(),
        ));
        let first: Vec<Prepared> = (0..3)
            .map(|i| {
                outbound
                    .prepare(format!("first {i}"), String::new())
                    .unwrap()
            })
            .collect();
        let dropped = outbound
            .prepare("never sent".into(), String::new())
            .unwrap();
        let later: Vec<Prepared> = (0..2)
            .map(|i| {
                outbound
                    .prepare(format!("later {i}"), String::new())
                    .unwrap()
            })
            .collect();
        // The later ones reach the store first: they wait their turn.
        let later = tokio::spawn({
            let outbound = outbound.clone();
            async move { outbound.send_prepared(later).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            kit.store.feed_head(&own_key).unwrap(),
            None,
            "nothing numbered 5 or 6 is stored before 1 to 4 are handed over"
        );
        for sent in outbound.send_prepared(first).await {
            sent.unwrap();
        }
        drop(dropped); // seq 4 gives up its turn
        for sent in tokio::time::timeout(Duration::from_secs(5), later)
            .await
            .expect("the later ones are stored once 1 to 4 are through")
            .unwrap()
        {
            sent.unwrap();
        }
        assert_eq!(kit.store.feed_head(&own_key).unwrap().unwrap().0, 6);
    }
}
