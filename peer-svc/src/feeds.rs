//! The heads of the author feeds this peer holds, and their digest
//! (docs/protocol.md §9.6): what two members compare to find, in
//! O(authors), which messages one of them lacks. Read from the store and
//! kept until a message is added (the store counts its writes of messages,
//! the only way they change), so handshakes in a burst cost one read.

use std::sync::{Arc, Mutex};

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
}

/// The digest of `heads` (in author key order), as protocol.md §9.6 says.
pub fn digest(heads: &[FeedHead]) -> [u8; 32] {
    let mut h = Sha256::new();
    for head in heads {
        h.update((head.author_key.len() as u32).to_be_bytes());
        h.update(&head.author_key);
        h.update(head.seq.to_be_bytes());
        h.update(head.contiguous.to_be_bytes());
        h.update(head.hash);
    }
    h.finalize().into()
}

/// Heads read from the store: at which count of message writes, the heads,
/// their digest.
type Read = (u64, Arc<Vec<FeedHead>>, [u8; 32]);

/// This peer's feed heads, read from its store.
#[derive(Debug)]
pub struct Feeds {
    store: Arc<Store>,
    cached: Mutex<Option<Read>>,
}

impl Feeds {
    /// The feeds `store` holds.
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            cached: Mutex::default(),
        }
    }

    /// The heads and their digest (read again once messages were added).
    pub fn heads(&self) -> Result<(Arc<Vec<FeedHead>>, [u8; 32]), StoreError> {
        let writes = self.store.message_writes();
        if let Some((read_at, heads, digest)) = &*self.cached.lock().expect("feeds lock")
            && *read_at == writes
        {
            return Ok((heads.clone(), *digest));
        }
        let mut heads = Vec::new();
        for (author_key, seq, count) in self.store.feed_extents()? {
            let Some((_, authored)) = self.store.feed_head(&author_key)? else {
                continue;
            };
            let contiguous = if count == seq {
                seq
            } else {
                let mut held = 0;
                for s in self.store.feed_seqs(&author_key)? {
                    if s == held + 1 {
                        held = s;
                    } else if s > held + 1 {
                        break;
                    }
                }
                held
            };
            heads.push(FeedHead {
                author_key,
                seq,
                hash: authorship::hash(&authored),
                contiguous,
            });
        }
        let digest = digest(&heads);
        let heads = Arc::new(heads);
        *self.cached.lock().expect("feeds lock") = Some((writes, heads.clone(), digest));
        Ok((heads, digest))
    }

    /// The digest alone (empty if the store cannot be read).
    pub fn digest(&self) -> Vec<u8> {
        self.heads().map(|(_, d)| d.to_vec()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
