//! Every message this peer sent or received, ordered by (hlc, sender, id) —
//! the same order on every peer — with duplicates dropped by id (never by
//! text: the same text twice is two messages).
//!
//! Kept in memory behind this one small type; the durable store replaces
//! its inside without changing its callers.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use chat_proto::v1::ChatMessage;

/// Most messages in one page of `Control/History`: pages stay far below
/// the gRPC message limit even with maximum-size texts (1000 × 64 KiB would
/// not, so pages also stop at [`MAX_PAGE_BYTES`]).
pub const PAGE_SIZE: usize = 1000;

/// Most bytes of text in one page, under the 4 MiB default gRPC limit.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// The order of history: hybrid logical clock, then sender, then id.
type Key = (u64, String, String);

fn key(message: &ChatMessage) -> Key {
    (message.hlc, message.sender.clone(), message.id.clone())
}

/// Which messages to return.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Only the newest `limit` messages (0 = all).
    pub limit: usize,
    /// Only messages sent at or after this many ms since the epoch.
    pub since_ms: Option<i64>,
    /// Only messages from this sender.
    pub from: Option<String>,
    /// Only messages whose text contains this.
    pub grep: Option<String>,
    /// Continue after this cursor (from a previous page).
    pub cursor: Option<String>,
}

/// One page of results, oldest first.
#[derive(Debug, Default)]
pub struct Page {
    /// The messages.
    pub messages: Vec<ChatMessage>,
    /// Where the next page starts; `None` when this is the last.
    pub next_cursor: Option<String>,
}

/// A cursor that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("cursor is not one this peer returned; start again without a cursor")]
pub struct BadCursor;

#[derive(Debug, Default)]
struct Inner {
    ordered: BTreeMap<Key, ChatMessage>,
    by_id: HashMap<String, Key>,
}

/// The message history of one peer.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a message; false if one with this id is already stored.
    pub fn insert(&self, message: ChatMessage) -> bool {
        let mut inner = self.inner.lock().expect("history lock");
        if inner.by_id.contains_key(&message.id) {
            return false;
        }
        let k = key(&message);
        inner.by_id.insert(message.id.clone(), k.clone());
        inner.ordered.insert(k, message);
        true
    }

    /// The stored message with this id.
    pub fn get(&self, id: &str) -> Option<ChatMessage> {
        let inner = self.inner.lock().expect("history lock");
        inner.by_id.get(id).map(|k| inner.ordered[k].clone())
    }

    /// How many messages are stored.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("history lock").ordered.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages matching `query`, oldest first, one page at a time.
    pub fn query(&self, query: &Query) -> Result<Page, BadCursor> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let inner = self.inner.lock().expect("history lock");
        let matches = |m: &ChatMessage| {
            query.since_ms.is_none_or(|since| {
                m.sent_at
                    .as_ref()
                    .is_some_and(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000 >= since)
            }) && query.from.as_deref().is_none_or(|f| m.sender == f)
                && query.grep.as_deref().is_none_or(|g| m.text.contains(g))
        };
        let range = match &after {
            Some(k) => inner.ordered.range((
                std::ops::Bound::Excluded(k.clone()),
                std::ops::Bound::Unbounded,
            )),
            None => inner.ordered.range::<Key, _>(..),
        };
        let mut selected: Vec<&ChatMessage> =
            range.map(|(_, m)| m).filter(|m| matches(m)).collect();
        if query.limit > 0 && after.is_none() && selected.len() > query.limit {
            selected.drain(..selected.len() - query.limit);
        }
        let mut page = Page::default();
        let mut bytes = 0;
        for (i, m) in selected.iter().enumerate() {
            if i == PAGE_SIZE || (i > 0 && bytes + m.text.len() > MAX_PAGE_BYTES) {
                page.next_cursor = page
                    .messages
                    .last()
                    .map(|m: &ChatMessage| encode_cursor(&key(m)));
                break;
            }
            bytes += m.text.len();
            page.messages.push((*m).clone());
        }
        Ok(page)
    }
}

/// Separates the parts of a cursor; a control character no name contains.
const CURSOR_SEP: char = '\u{1f}';

/// The cursor that resumes right after `message`.
pub fn cursor_of(message: &ChatMessage) -> String {
    encode_cursor(&key(message))
}

fn encode_cursor(k: &Key) -> String {
    hex::encode(format!("{}{CURSOR_SEP}{}{CURSOR_SEP}{}", k.0, k.1, k.2))
}

fn decode_cursor(cursor: &str) -> Result<Key, BadCursor> {
    let bytes = hex::decode(cursor).map_err(|_| BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
    let mut parts = text.splitn(3, CURSOR_SEP);
    let hlc = parts.next().and_then(|h| h.parse().ok()).ok_or(BadCursor)?;
    let sender = parts.next().ok_or(BadCursor)?.to_owned();
    let id = parts.next().ok_or(BadCursor)?.to_owned();
    Ok((hlc, sender, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(hlc: u64, sender: &str, id: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            sender: sender.into(),
            hlc,
            text: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn ordered_by_hlc_sender_id_and_deduplicated_by_id_only() {
        let h = History::new();
        assert!(h.insert(msg(2, "b", "x", "same")));
        assert!(h.insert(msg(2, "a", "y", "same")));
        assert!(h.insert(msg(1, "z", "z", "first")));
        assert!(!h.insert(msg(9, "q", "x", "other text, same id")));
        let ids: Vec<_> = h
            .query(&Query::default())
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["z", "y", "x"]);
    }

    #[test]
    fn filters_limit_and_pages() {
        let h = History::new();
        for i in 0..2500u64 {
            let sender = if i % 2 == 0 { "even" } else { "odd" };
            h.insert(msg(i, sender, &format!("m{i}"), &format!("text {i}")));
        }
        let last3 = h
            .query(&Query {
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        let ids: Vec<_> = last3.messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m2497", "m2498", "m2499"]);
        assert!(last3.next_cursor.is_none());

        let odd = Query {
            from: Some("odd".into()),
            ..Default::default()
        };
        let mut all = Vec::new();
        let mut q = odd.clone();
        loop {
            let page = h.query(&q).unwrap();
            all.extend(page.messages);
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(all.len(), 1250);
        assert!(all.windows(2).all(|w| w[0].hlc < w[1].hlc));
        let grep = h
            .query(&Query {
                grep: Some("text 1234".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(grep.messages.len(), 1);
        assert!(
            h.query(&Query {
                cursor: Some("zz".into()),
                ..Default::default()
            })
            .is_err()
        );
    }
}
