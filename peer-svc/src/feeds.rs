//! The heads of the author feeds this peer holds, and their digest
//! (docs/protocol.md §9.6): what two members compare to find, in
//! O(authors), which messages one of them lacks. Read from the store once,
//! then kept current from the store's feed journal (every signed message
//! it adds), so a digest never costs a scan of the messages.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use sha2::{Digest, Sha256};

use crate::{
    authorship,
    store::{Store, StoreError},
};

/// The newest message of one author's feed held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedHead {
    /// The author's identity key.
    pub author_key: Vec<u8>,
    /// The highest seq held.
    pub seq: u64,
    /// SHA-256 of that message's authored bytes.
    pub hash: [u8; 32],
    /// Every seq from 1 to this is held (0: not even the first).
    pub contiguous: u64,
    /// The end of the run of seqs held that starts at the lowest held (the
    /// same as `contiguous` when seq 1 is held): how far a feed held from
    /// its middle (a member admitted to history from some time on) is whole.
    /// Not part of the digest.
    pub run: u64,
}

/// The digest of `heads` (in author key order), as protocol.md §9.6 says.
pub fn digest(heads: &[FeedHead]) -> [u8; 32] {
    let mut h = Sha256::new();
    for head in heads {
        absorb(&mut h, head);
    }
    h.finalize().into()
}

fn absorb(h: &mut Sha256, head: &FeedHead) {
    h.update((head.author_key.len() as u32).to_be_bytes());
    h.update(&head.author_key);
    h.update(head.seq.to_be_bytes());
    h.update(head.contiguous.to_be_bytes());
    h.update(head.hash);
}

/// Heads are split in this many buckets, by the high four bits of the
/// author key's first byte, so a frontier carries only the buckets that differ.
pub const BUCKETS: usize = 16;

/// The bucket of `author_key`.
pub fn bucket_of(author_key: &[u8]) -> usize {
    author_key.first().map_or(0, |b| usize::from(b >> 4))
}

/// The digest of each bucket: as [`digest`], over the heads in it.
pub fn bucket_digests(heads: &[FeedHead]) -> Vec<[u8; 32]> {
    let mut hashers: [Sha256; BUCKETS] = std::array::from_fn(|_| Sha256::new());
    for head in heads {
        absorb(&mut hashers[bucket_of(&head.author_key)], head);
    }
    hashers.into_iter().map(|h| h.finalize().into()).collect()
}

/// One author's feed as held here: its head, and how far it is whole.
#[derive(Debug, Clone, Default)]
struct Feed {
    /// The highest seq held, the id and hash of its message (of two with
    /// that seq, a fork, the smaller id's, as every peer picks).
    seq: u64,
    id: String,
    hash: [u8; 32],
    /// Every seq from 1 to this is held.
    contiguous: u64,
    /// Seqs held above `contiguous + 1`, as disjoint ranges start → end
    /// (a feed held from its middle is one range, not one entry a message).
    above: BTreeMap<u64, u64>,
}

impl Feed {
    /// Takes in a message (author's `seq` and `id`); true if it is the new
    /// head, whose hash the caller then reads. Taking one in twice changes
    /// nothing.
    fn add(&mut self, seq: u64, id: &str) -> bool {
        let head =
            seq > self.seq || (seq == self.seq && (self.id.is_empty() || id < self.id.as_str()));
        if head {
            self.seq = seq;
            self.id = id.to_owned();
        }
        self.hold(seq);
        head
    }

    /// Notes that `seq` is held.
    fn hold(&mut self, seq: u64) {
        if seq <= self.contiguous {
            return;
        }
        if seq == self.contiguous + 1 {
            self.contiguous = seq;
            if let Some(end) = self.above.remove(&(seq + 1)) {
                self.contiguous = end;
            }
            return;
        }
        // Above a gap: into the ranges, merged with its neighbours.
        let below = self.above.range(..=seq).next_back().map(|(s, e)| (*s, *e));
        if below.is_some_and(|(_, e)| e >= seq) {
            return;
        }
        let start = match below {
            Some((s, e)) if e + 1 == seq => s,
            _ => seq,
        };
        let end = self.above.remove(&(seq + 1)).unwrap_or(seq);
        self.above.insert(start, end);
    }
}

/// What the heads are built from, and the last heads given out.
#[derive(Debug, Default)]
struct State {
    /// Every author's feed (None until first read from the store).
    feeds: Option<BTreeMap<Vec<u8>, Feed>>,
    /// The heads and their digest, as of the last change.
    heads: Arc<Vec<FeedHead>>,
    digest: [u8; 32],
}

/// This peer's feed heads: read from its store once, then kept current
/// from the messages the store adds (its feed journal), so a handshake's
/// digest costs O(authors) after a change and nothing otherwise, however
/// many messages are held.
#[derive(Debug)]
pub struct Feeds {
    store: Arc<Store>,
    state: Mutex<State>,
}

impl Feeds {
    /// The feeds `store` holds.
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            state: Mutex::default(),
        }
    }

    /// The heads and their digest.
    pub fn heads(&self) -> Result<(Arc<Vec<FeedHead>>, [u8; 32]), StoreError> {
        let mut state = self.state.lock().expect("feeds lock");
        let journal = self.store.take_feed_journal();
        let changed = if state.feeds.is_none() || journal.overflowed {
            // What the journal holds is in the table already or comes in
            // below; taking a message in twice changes nothing.
            state.feeds = Some(self.read_all()?);
            true
        } else {
            !journal.entries.is_empty()
        };
        if !changed {
            return Ok((state.heads.clone(), state.digest));
        }
        let feeds = state.feeds.as_mut().expect("read above");
        let mut new_heads = std::collections::BTreeSet::new();
        for (author_key, seq, id) in &journal.entries {
            if feeds.entry(author_key.clone()).or_default().add(*seq, id) {
                new_heads.insert(author_key);
            }
        }
        // Only a new head's message is read and hashed, once per reading of
        // the heads, however many messages came in meanwhile.
        for author_key in new_heads {
            if let Some((seq, id, authored)) = self.store.feed_top(author_key)?
                && let Some(feed) = feeds.get_mut(author_key)
            {
                (feed.seq, feed.id, feed.hash) = (seq, id, authorship::hash(&authored));
            }
        }
        let heads: Vec<FeedHead> = feeds
            .iter()
            .map(|(author_key, f)| FeedHead {
                author_key: author_key.clone(),
                seq: f.seq,
                hash: f.hash,
                contiguous: f.contiguous,
                run: if f.contiguous > 0 {
                    f.contiguous
                } else {
                    f.above.first_key_value().map_or(0, |(_, end)| *end)
                },
            })
            .collect();
        state.digest = digest(&heads);
        state.heads = Arc::new(heads);
        Ok((state.heads.clone(), state.digest))
    }

    /// Every author's feed, read from the store.
    fn read_all(&self) -> Result<BTreeMap<Vec<u8>, Feed>, StoreError> {
        let mut feeds = BTreeMap::new();
        for (author_key, seq, count) in self.store.feed_extents()? {
            let Some((_, id, authored)) = self.store.feed_top(&author_key)? else {
                continue;
            };
            let mut feed = Feed {
                seq,
                id,
                hash: authorship::hash(&authored),
                ..Feed::default()
            };
            if count == seq {
                feed.contiguous = seq;
            } else {
                for s in self.store.feed_seqs(&author_key)? {
                    feed.hold(s);
                }
            }
            feeds.insert(author_key, feed);
        }
        Ok(feeds)
    }

    /// The digest alone (empty if the store cannot be read).
    pub fn digest(&self) -> Vec<u8> {
        self.heads().map(|(_, d)| d.to_vec()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn a_feed_knows_how_far_it_is_whole_whatever_the_order_messages_come_in() {
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.random_range(1..60u64);
            // Some seqs, each possibly twice, in a random order.
            let mut seqs: Vec<u64> = (1..=n).filter(|_| rng.random_bool(0.8)).collect();
            let again: Vec<u64> = seqs
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.2))
                .collect();
            seqs.extend(again);
            for i in (1..seqs.len()).rev() {
                seqs.swap(i, rng.random_range(0..=i));
            }
            let mut feed = Feed::default();
            for s in &seqs {
                feed.add(*s, &format!("m{s}"));
            }
            let held: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
            let contiguous = (1..).take_while(|s| held.contains(s)).count() as u64;
            assert_eq!(feed.contiguous, contiguous, "seed {seed}: {seqs:?}");
            assert_eq!(feed.seq, held.last().copied().unwrap_or(0), "seed {seed}");
            let above: Vec<u64> = feed.above.iter().flat_map(|(s, e)| *s..=*e).collect();
            let want: Vec<u64> = held.iter().copied().filter(|s| *s > contiguous).collect();
            assert_eq!(above, want, "seed {seed}: ranges {:?}", feed.above);
            // Disjoint and not touching: each range ends before the next
            // one's start minus one.
            let ranges: Vec<(u64, u64)> = feed.above.iter().map(|(s, e)| (*s, *e)).collect();
            assert!(ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0), "{ranges:?}");
        }
    }

    #[test]
    fn heads_kept_from_the_journal_are_the_heads_read_afresh() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let authors: Vec<authorship::Author> = (0..4u8)
            .map(|i| {
                authorship::Author::new(
                    ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]),
                    Vec::new(),
                    &format!("a{i}"),
                    "",
                    None,
                )
            })
            .collect();
        let mut messages = Vec::new();
        for (i, author) in authors.iter().enumerate() {
            for n in 1..=30u64 {
                let ms = n * 1000 + i as u64;
                messages.push(author.sign(
                    || (format!("a{i}-{n}"), ms << 16, authorship::timestamp(ms)),
                    format!("text {n}"),
                ));
            }
        }
        let mut rng = StdRng::seed_from_u64(7);
        for i in (1..messages.len()).rev() {
            messages.swap(i, rng.random_range(0..=i));
        }
        let kept = Feeds::new(store.clone());
        kept.heads().unwrap();
        for chunk in messages.chunks(7) {
            store.insert_many(chunk).unwrap();
            let (heads, digest) = kept.heads().unwrap();
            let (fresh_heads, fresh_digest) = Feeds::new(store.clone()).heads().unwrap();
            assert_eq!(*heads, *fresh_heads);
            assert_eq!(digest, fresh_digest);
        }
    }

    #[test]
    fn heads_show_the_newest_seq_and_how_far_the_feed_is_whole() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let author = authorship::Author::new(
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
            Vec::new(),
            "carol",
            "abcd ef01 2345 6789",
            None,
        );
        let messages: Vec<_> = (1..=4u64)
            .map(|n| {
                author.sign(
                    || {
                        (
                            format!("m{n}"),
                            (n * 1000) << 16,
                            authorship::timestamp(n * 1000),
                        )
                    },
                    format!("text {n}"),
                )
            })
            .collect();
        let feeds = Feeds::new(store.clone());
        let (heads, empty) = feeds.heads().unwrap();
        assert!(heads.is_empty());
        // 1, 2 and 4 held: the feed is whole up to 2.
        for m in [&messages[0], &messages[1], &messages[3]] {
            store.insert(m).unwrap();
        }
        let (heads, with_gap) = feeds.heads().unwrap();
        assert_eq!((heads[0].seq, heads[0].contiguous), (4, 2));
        assert_eq!(heads[0].hash, authorship::hash(&messages[3].authored));
        assert_ne!(empty, with_gap);
        store.insert(&messages[2]).unwrap();
        let (heads, whole) = feeds.heads().unwrap();
        assert_eq!((heads[0].seq, heads[0].contiguous), (4, 4));
        // The gap is part of the digest: a peer missing 3 differs from one
        // that holds it, so the two compare and the gap is filled.
        assert_ne!(whole, with_gap);
    }
}
