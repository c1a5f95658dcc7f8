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
}

/// A message ready to send: stamped, not yet delivered.
#[derive(Debug, Clone)]
pub struct Prepared {
    message: ChatMessage,
    /// Already in the store (a retried Send with the same id).
    stored: bool,
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
        if let Some(stored) = self.existing_own_message(&id)? {
            return Ok(Prepared {
                message: stored,
                stored: true,
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
        Ok(Prepared {
            message,
            stored: false,
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
        let fresh: Vec<ChatMessage> = prepared
            .iter()
            .filter(|p| !p.stored)
            .map(|p| p.message.clone())
            .collect();
        let new = match self.store.insert_batch_grouped(fresh).await {
            Ok(new) => new,
            Err(e) => {
                let why = SendError::Store(format!("cannot store the message: {e}"));
                return prepared.iter().map(|_| Err(why.clone())).collect();
            }
        };
        let mut new = new.into_iter();
        let mut messages = Vec::with_capacity(prepared.len());
        for Prepared { message, stored } in prepared {
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
