//! The removals a peer knows, as a set members reconcile (docs/protocol.md
//! §5.5): every revoked invitation key with the first verified removal of
//! it, kept whole (nothing is forgotten at restart or crowded out by newer
//! ones), summarised by a digest per bucket so two members find what one
//! lacks without sending what both hold.
//!
//! A bucket is the high four bits of the revoked key's first byte; its
//! digest is SHA-256 over the bucket's revoked keys in ascending order; the
//! set's digest, carried in every handshake, is SHA-256 over the 16 bucket
//! digests in bucket order. Pure data: verification is `admission`'s.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::{Digest, Sha256};

/// Buckets of the reconciliation digest.
pub const BUCKETS: usize = 16;

/// Removals kept per branch: the removals whose remover is not the founder
/// count against the member the founder admitted above them (the second
/// link of the removed admission's chain). Honest members stay far below;
/// a member minting invitations only to remove them stops here, with every
/// key it can mint beneath itself sharing one quota.
pub const MAX_REMOVALS_PER_BRANCH: usize = 4096;

/// Bytes of encoded removals in one page of `Peer/Removals`, so a page
/// sealed in one envelope stays inside one Noise message (65,535 bytes).
pub const PAGE_BYTES: usize = 48 * 1024;

/// One revoked invitation key's record.
#[derive(Debug, Clone)]
struct Record {
    /// When it was removed (ms since the epoch).
    at: u64,
    /// The encoded removal, as verified.
    bytes: Vec<u8>,
}

/// Every removal known, by revoked invitation key.
#[derive(Debug, Default)]
pub struct RemovalSet {
    by_key: BTreeMap<[u8; 32], Record>,
    /// (time, key), for the newest first.
    by_time: BTreeSet<(u64, [u8; 32])>,
    per_branch: HashMap<[u8; 32], usize>,
    /// The bucket digests, until the set changes.
    digests: Option<[[u8; 32]; BUCKETS]>,
}

/// The bucket of a revoked invitation key.
pub fn bucket(key: &[u8; 32]) -> usize {
    usize::from(key[0] >> 4)
}

impl RemovalSet {
    /// True if `key` is revoked.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.by_key.contains_key(key)
    }

    /// When `key` was revoked, if it was.
    pub fn at(&self, key: &[u8; 32]) -> Option<u64> {
        self.by_key.get(key).map(|r| r.at)
    }

    /// When `key` was revoked and the removal that says so, if it was.
    pub fn record(&self, key: &[u8; 32]) -> Option<(u64, &[u8])> {
        self.by_key.get(key).map(|r| (r.at, r.bytes.as_slice()))
    }

    /// How many keys are revoked.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True if no key is revoked.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// True if `branch` has used its quota ([`MAX_REMOVALS_PER_BRANCH`]).
    pub fn branch_full(&self, branch: &[u8; 32]) -> bool {
        self.per_branch.get(branch).copied().unwrap_or(0) >= MAX_REMOVALS_PER_BRANCH
    }

    /// Records a verified removal of `key`; false if `key` was revoked
    /// already (the first record stays: its time is the earliest, which
    /// bounds what the removed key may still have signed).
    pub fn insert(
        &mut self,
        key: [u8; 32],
        at: u64,
        bytes: Vec<u8>,
        branch: Option<[u8; 32]>,
    ) -> bool {
        if self.by_key.contains_key(&key) {
            return false;
        }
        if let Some(b) = branch {
            *self.per_branch.entry(b).or_default() += 1;
        }
        self.by_time.insert((at, key));
        self.by_key.insert(key, Record { at, bytes });
        self.digests = None;
        true
    }

    /// The newest removals, at most `count` and `budget` bytes in all.
    pub fn newest(&self, count: usize, budget: usize) -> Vec<Vec<u8>> {
        let mut left = budget;
        self.by_time
            .iter()
            .rev()
            .take(count)
            .map(|(_, k)| &self.by_key[k].bytes)
            .take_while(|b| {
                let fits = b.len() <= left;
                left = left.saturating_sub(b.len());
                fits
            })
            .cloned()
            .collect()
    }

    /// The digest of each bucket.
    pub fn bucket_digests(&mut self) -> [[u8; 32]; BUCKETS] {
        if let Some(d) = self.digests {
            return d;
        }
        let mut hashers: [Sha256; BUCKETS] = std::array::from_fn(|_| Sha256::new());
        for key in self.by_key.keys() {
            hashers[bucket(key)].update(key);
        }
        let digests = hashers.map(|h| h.finalize().into());
        self.digests = Some(digests);
        digests
    }

    /// The set's digest, as a handshake carries it.
    pub fn digest(&mut self) -> [u8; 32] {
        summary(&self.bucket_digests())
    }

    /// The removals in buckets whose digest is not the asker's
    /// (`theirs`; every bucket if it does not hold [`BUCKETS`] digests),
    /// in ascending key order after `after`, at most [`PAGE_BYTES`] (and at
    /// least one): the page, and the key to resume after if more follow.
    pub fn page(
        &mut self,
        theirs: &[[u8; 32]],
        after: Option<[u8; 32]>,
    ) -> (Vec<Vec<u8>>, Option<[u8; 32]>) {
        let ours = self.bucket_digests();
        let differs =
            |key: &[u8; 32]| theirs.len() != BUCKETS || theirs[bucket(key)] != ours[bucket(key)];
        let range = match after {
            Some(a) => self
                .by_key
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.by_key.range::<[u8; 32], _>(..),
        };
        let mut page = Vec::new();
        let mut used = 0;
        let mut last = None;
        for (key, record) in range.filter(|(k, _)| differs(k)) {
            if !page.is_empty() && used + record.bytes.len() > PAGE_BYTES {
                return (page, last);
            }
            used += record.bytes.len();
            page.push(record.bytes.clone());
            last = Some(*key);
        }
        (page, None)
    }
}

/// The set digest of `buckets`.
pub fn summary(buckets: &[[u8; 32]; BUCKETS]) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in buckets {
        h.update(d);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[u8]) -> RemovalSet {
        let mut s = RemovalSet::default();
        for &k in keys {
            s.insert([k; 32], u64::from(k), vec![k; 10], None);
        }
        s
    }

    #[test]
    fn equal_sets_have_equal_digests_whatever_the_order() {
        let (mut a, mut b) = (set(&[1, 0x20, 0xf0]), set(&[0xf0, 1, 0x20]));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(set(&[]).digest(), RemovalSet::default().digest());
        b.insert([0x21; 32], 1, vec![], None);
        assert_ne!(a.digest(), b.digest());
        // Only the bucket that differs is sent.
        let (page, next) = b.page(&a.bucket_digests(), None);
        assert!(next.is_none());
        assert_eq!(page.len(), 2, "bucket 2 holds 0x20 and 0x21");
        // A second record of a key is not taken (the first stays).
        assert!(!a.insert([1; 32], 99, vec![], None));
        assert_eq!(a.at(&[1; 32]), Some(1));
    }

    #[test]
    fn pages_resume_after_a_key_and_stay_inside_the_budget() {
        let mut s = RemovalSet::default();
        for i in 0..=255u8 {
            s.insert([i; 32], 0, vec![0; 1000], None);
        }
        let mut after = None;
        let mut all = 0;
        loop {
            let (page, next) = s.page(&[], after);
            assert!(page.len() * 1000 <= PAGE_BYTES);
            all += page.len();
            match next {
                Some(k) => assert_eq!(k, [(all - 1) as u8; 32]),
                None => break,
            }
            after = next;
        }
        assert_eq!(all, 256);
        assert_eq!(s.newest(3, 2500).len(), 2, "the budget cuts the count");
    }

    #[test]
    fn a_branch_has_a_quota() {
        let mut s = RemovalSet::default();
        let branch = [7; 32];
        for i in 0..MAX_REMOVALS_PER_BRANCH {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            assert!(!s.branch_full(&branch));
            s.insert(key, 0, vec![], Some(branch));
        }
        assert!(s.branch_full(&branch) && !s.branch_full(&[8; 32]));
    }
}
