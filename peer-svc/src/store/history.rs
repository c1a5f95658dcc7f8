//! Every message this peer sent or received, in the store, ordered by
//! (hlc, sender, id) — the same order on every peer — with duplicates
//! dropped by (sender, id) (never by text: the same text twice is two
//! messages; and one peer cannot shadow another's message by reusing its id).

use chat_proto::v1::ChatMessage;
use rusqlite::{OptionalExtension, Row, params, types::Value};

use super::{Store, StoreError};

/// Most messages in one page of `Control/History` or `Peer/History`.
pub const PAGE_SIZE: usize = 1000;

/// Most bytes of text in one page, well under the 4 MiB default gRPC limit
/// even when every text is at the 64,511-byte maximum.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Which messages to return.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Only the newest `limit` messages (0 = all).
    pub limit: usize,
    /// Only messages sent at or after this many ms since the epoch.
    pub since_ms: Option<i64>,
    /// Only messages with a clock at or after this.
    pub since_hlc: Option<u64>,
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

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The cursor was not one this peer returned.
    #[error("cursor is not one this peer returned; start again without a cursor")]
    BadCursor,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        QueryError::Store(e.into())
    }
}

/// The order of history: hybrid logical clock, then sender, then id.
type Key = (u64, String, String);

/// Separates the parts of a cursor; a control character no name contains.
const CURSOR_SEP: char = '\u{1f}';

/// The cursor that resumes right after `message`.
pub fn cursor_of(message: &ChatMessage) -> String {
    hex::encode(format!(
        "{}{CURSOR_SEP}{}{CURSOR_SEP}{}",
        message.hlc, message.sender, message.id
    ))
}

fn decode_cursor(cursor: &str) -> Result<Key, QueryError> {
    let bytes = hex::decode(cursor).map_err(|_| QueryError::BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| QueryError::BadCursor)?;
    let mut parts = text.splitn(3, CURSOR_SEP);
    let hlc = parts
        .next()
        .and_then(|h| h.parse().ok())
        .ok_or(QueryError::BadCursor)?;
    let sender = parts.next().ok_or(QueryError::BadCursor)?.to_owned();
    let id = parts.next().ok_or(QueryError::BadCursor)?.to_owned();
    Ok((hlc, sender, id))
}

/// Milliseconds since the epoch of a message's `sent_at`.
pub fn sent_at_ms(message: &ChatMessage) -> i64 {
    message
        .sent_at
        .as_ref()
        .map(|t| {
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos) / 1_000_000)
        })
        .unwrap_or(0)
}

pub(crate) const COLUMNS: &str =
    "id, hlc, sender, sender_fingerprint, sent_at_ms, text, authored, signature, seq, author_key";

pub(crate) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<ChatMessage> {
    let ms: i64 = row.get(4)?;
    Ok(ChatMessage {
        id: row.get(0)?,
        hlc: row.get::<_, i64>(1)? as u64,
        sender: row.get(2)?,
        sender_fingerprint: row.get(3)?,
        sent_at: Some(prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
        text: row.get(5)?,
        authored: row.get::<_, Option<Vec<u8>>>(6)?.unwrap_or_default(),
        signature: row.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
        seq: row.get::<_, Option<i64>>(8)?.unwrap_or(0) as u64,
        author_key: row.get::<_, Option<Vec<u8>>>(9)?.unwrap_or_default(),
    })
}

/// An empty byte string as NULL (a message stored unsigned).
fn blob(bytes: &[u8]) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes)
}

impl Store {
    /// Stores a message; false if one with this id is already stored. The
    /// message is committed when this returns.
    pub fn insert(&self, message: &ChatMessage) -> Result<bool, StoreError> {
        Ok(self.insert_many(std::slice::from_ref(message))? == 1)
    }

    /// Stores a message and returns once it is committed, like
    /// [`Store::insert`], but commits together with whatever other inserts
    /// arrive meanwhile (group commit): under load one transaction carries
    /// many messages, and each caller still hears back only after its own
    /// message is durable.
    pub async fn insert_grouped(&self, message: ChatMessage) -> Result<bool, StoreError> {
        let new = self.insert_batch_grouped(vec![message]).await?;
        Ok(new.first().copied().unwrap_or(false))
    }

    /// Stores `messages` (in one transaction, with whatever else arrives
    /// meanwhile) and resolves once they are committed: for each, whether
    /// it was new. They join the commit queue when this is called, not when
    /// the future is first polled, and the queue commits in the order it is
    /// joined: what is handed over first is committed first.
    pub fn insert_batch_grouped(
        &self,
        messages: Vec<ChatMessage>,
    ) -> impl std::future::Future<Output = Result<Vec<bool>, StoreError>> + '_ {
        let queued = (!messages.is_empty()).then(|| {
            let (done, outcome) = tokio::sync::oneshot::channel();
            let mut queue = self.commits.lock().expect("commit queue lock");
            queue.waiting.push((messages, done));
            outcome
        });
        async move {
            let Some(outcome) = queued else {
                return Ok(Vec::new());
            };
            // Who commits is decided when polled: a future dropped unpolled
            // leaves its messages to the next writer's commit.
            let lead = {
                let mut queue = self.commits.lock().expect("commit queue lock");
                !std::mem::replace(&mut queue.committing, true)
            };
            if lead {
                self.commit_waiting();
            }
            outcome.await.unwrap_or_else(|_| {
                Err(StoreError::Batch(
                    "the committing task was cancelled".into(),
                ))
            })
        }
    }

    /// The first writer commits for everyone waiting, until no one is.
    fn commit_waiting(&self) {
        loop {
            let batch = {
                let mut queue = self.commits.lock().expect("commit queue lock");
                if queue.waiting.is_empty() {
                    queue.committing = false;
                    break;
                }
                std::mem::take(&mut queue.waiting)
            };
            let sizes: Vec<usize> = batch.iter().map(|(m, _)| m.len()).collect();
            let (groups, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let messages: Vec<ChatMessage> = groups.into_iter().flatten().collect();
            match self.insert_each(&messages) {
                Ok(new) => {
                    let mut new = new.into_iter();
                    for (waiter, size) in waiters.into_iter().zip(sizes) {
                        let _ = waiter.send(Ok(new.by_ref().take(size).collect()));
                    }
                }
                Err(e) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(StoreError::Batch(e.to_string())));
                    }
                }
            }
        }
    }

    /// Stores messages in one transaction; returns how many were new.
    pub fn insert_many(&self, messages: &[ChatMessage]) -> Result<usize, StoreError> {
        Ok(self
            .insert_each(messages)?
            .into_iter()
            .filter(|n| *n)
            .count())
    }

    /// Stores messages in one transaction; for each, whether it was new.
    fn insert_each(&self, messages: &[ChatMessage]) -> Result<Vec<bool>, StoreError> {
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction()?;
        let mut added = Vec::with_capacity(messages.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (id, hlc, sender, sender_fingerprint, sent_at_ms, text,
                                       authored, signature, seq, author_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
            )?;
            for m in messages {
                let rows = insert.execute(params![
                    m.id,
                    m.hlc as i64,
                    m.sender,
                    m.sender_fingerprint,
                    sent_at_ms(m),
                    m.text,
                    blob(&m.authored),
                    blob(&m.signature),
                    (m.seq > 0).then_some(m.seq as i64),
                    blob(&m.author_key),
                ])?;
                added.push(rows == 1);
            }
        }
        tx.commit()?;
        if added.iter().any(|a| *a) {
            self.journal_feeds(messages, &added);
        }
        Ok(added)
    }

    /// Notes the signed messages just added for the feed heads.
    fn journal_feeds(&self, messages: &[ChatMessage], added: &[bool]) {
        let mut journal = self.feed_journal.lock().expect("journal lock");
        for (m, _) in messages.iter().zip(added).filter(|(_, a)| **a) {
            if m.seq == 0 || m.author_key.is_empty() || m.authored.is_empty() {
                continue;
            }
            if journal.entries.len() >= super::MAX_FEED_JOURNAL {
                journal.entries = Vec::new();
                journal.overflowed = true;
            }
            if !journal.overflowed {
                journal
                    .entries
                    .push((m.author_key.clone(), m.seq, m.id.clone()));
            }
        }
    }

    /// The signed messages added since the last take, and whether some were
    /// dropped (then the caller reads the heads from the table again).
    pub fn take_feed_journal(&self) -> super::FeedJournal {
        std::mem::take(&mut *self.feed_journal.lock().expect("journal lock"))
    }

    /// The stored message `id` from `sender`.
    pub fn get(&self, sender: &str, id: &str) -> Result<Option<ChatMessage>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM messages WHERE sender = ?1 AND id = ?2"
            ))?
            .query_row([sender, id], message_from_row)
            .optional()?)
    }

    /// How many messages are stored.
    pub fn len(&self) -> usize {
        let conn = self.conn.lock().expect("store lock");
        conn.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .unwrap_or(0)
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest clock stored (0 when empty), so a restarted peer's clock
    /// continues after everything it has seen.
    pub fn max_hlc(&self) -> Result<u64, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let max: Option<i64> = conn.query_row("SELECT max(hlc) FROM messages", [], |r| r.get(0))?;
        Ok(max.unwrap_or(0) as u64)
    }

    /// The messages matching `query`, oldest first, one page at a time.
    pub fn query(&self, query: &Query) -> Result<Page, QueryError> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let mut filters = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(since) = query.since_ms {
            filters.push("sent_at_ms >= ?");
            args.push(since.into());
        }
        if let Some(since) = query.since_hlc {
            filters.push("hlc >= ?");
            args.push((since as i64).into());
        }
        if let Some(from) = &query.from {
            filters.push("sender = ?");
            args.push(from.clone().into());
        }
        if let Some(grep) = &query.grep {
            filters.push("instr(text, ?) > 0");
            args.push(grep.clone().into());
        }
        if let Some((hlc, sender, id)) = &after {
            filters.push("(hlc, sender, id) > (?, ?, ?)");
            args.extend([
                (*hlc as i64).into(),
                sender.clone().into(),
                id.clone().into(),
            ]);
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        // The newest `limit` (when no cursor continues a previous page), read
        // oldest first; one row more than a page tells whether more follow.
        let sql = if query.limit > 0 && after.is_none() {
            args.push((query.limit as i64).into());
            format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM messages {filter}
                 ORDER BY hlc DESC, sender DESC, id DESC LIMIT ?)
                 ORDER BY hlc, sender, id LIMIT {}",
                PAGE_SIZE + 1
            )
        } else {
            format!(
                "SELECT {COLUMNS} FROM messages {filter} ORDER BY hlc, sender, id LIMIT {}",
                PAGE_SIZE + 1
            )
        };
        let conn = self.conn.lock().expect("store lock");
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(args), message_from_row)?;
        let mut page = Page::default();
        let mut bytes = 0;
        for row in rows {
            let message = row?;
            let full = page.messages.len() == PAGE_SIZE
                || (!page.messages.is_empty() && bytes + message.text.len() > MAX_PAGE_BYTES);
            if full {
                page.next_cursor = page.messages.last().map(cursor_of);
                break;
            }
            bytes += message.text.len();
            page.messages.push(message);
        }
        Ok(page)
    }
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
            sent_at: Some(prost_types::Timestamp {
                seconds: hlc as i64,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.messages.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn ordered_by_hlc_sender_id_and_deduplicated_by_sender_and_id() {
        let h = Store::open_in_memory().unwrap();
        assert!(h.insert(&msg(2, "b", "x", "same")).unwrap());
        assert!(h.insert(&msg(2, "a", "y", "same")).unwrap());
        assert!(h.insert(&msg(1, "z", "z", "first")).unwrap());
        assert!(
            !h.insert(&msg(9, "b", "x", "other text, same sender and id"))
                .unwrap()
        );
        assert!(h.insert(&msg(3, "q", "x", "another sender's x")).unwrap());
        assert_eq!(
            ids(&h.query(&Query::default()).unwrap()),
            ["z", "y", "x", "x"]
        );
        assert_eq!(h.max_hlc().unwrap(), 3);
        let round_trip = h.get("a", "y").unwrap().unwrap();
        assert_eq!(round_trip, msg(2, "a", "y", "same"));
        assert!(h.get("b", "y").unwrap().is_none());
    }

    #[test]
    fn filters_limit_and_pages() {
        let h = Store::open_in_memory().unwrap();
        let all: Vec<ChatMessage> = (0..2500u64)
            .map(|i| {
                let sender = if i % 2 == 0 { "even" } else { "odd" };
                msg(i, sender, &format!("m{i}"), &format!("text {i}"))
            })
            .collect();
        assert_eq!(h.insert_many(&all).unwrap(), 2500);
        let last3 = h
            .query(&Query {
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&last3), ["m2497", "m2498", "m2499"]);
        assert!(last3.next_cursor.is_none());

        let mut q = Query {
            from: Some("odd".into()),
            ..Default::default()
        };
        let mut got = Vec::new();
        loop {
            let page = h.query(&q).unwrap();
            got.extend(page.messages);
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got.len(), 1250);
        assert!(got.windows(2).all(|w| w[0].hlc < w[1].hlc));
        let grep = h
            .query(&Query {
                grep: Some("text 1234".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&grep), ["m1234"]);
        let since = h
            .query(&Query {
                since_ms: Some(2_498_000),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&since), ["m2498", "m2499"]);
        let since_hlc = h
            .query(&Query {
                since_hlc: Some(2499),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&since_hlc), ["m2499"]);
        assert!(matches!(
            h.query(&Query {
                cursor: Some("zz".into()),
                ..Default::default()
            }),
            Err(QueryError::BadCursor)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_answers_each_writer_after_its_message_is_stored() {
        let store = std::sync::Arc::new(Store::open_in_memory().unwrap());
        let tasks: Vec<_> = (0..400u64)
            .map(|i| {
                let store = store.clone();
                // Every message twice: exactly one of the two is new.
                tokio::spawn(async move {
                    let m = msg(i / 2, "s", &format!("g{}", i / 2), "t");
                    let new = store.insert_grouped(m.clone()).await.unwrap();
                    assert!(
                        store.get("s", &m.id).unwrap().is_some(),
                        "stored before the answer"
                    );
                    new
                })
            })
            .collect();
        let mut new = 0;
        for t in tasks {
            new += usize::from(t.await.unwrap());
        }
        assert_eq!(new, 200);
        assert_eq!(store.len(), 200);
        assert!(
            !store.commits.lock().unwrap().committing,
            "nobody left holding the commit"
        );
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path())
            .unwrap()
            .insert(&msg(5, "a", "kept", "t"))
            .unwrap();
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.get("a", "kept").unwrap().unwrap().text, "t");
    }
}
