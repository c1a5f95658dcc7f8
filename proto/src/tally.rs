//! Counts of things held, per key and in total, each given back when its
//! guard drops: what every per-source cap (connections, watchers,
//! registrations in flight) is counted with.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
};

/// The counts; cheap to clone (clones share them).
#[derive(Debug)]
pub struct Tally<K> {
    inner: Arc<Mutex<Counts<K>>>,
}

#[derive(Debug)]
struct Counts<K> {
    total: usize,
    per_key: HashMap<K, usize>,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Counts {
                total: 0,
                per_key: HashMap::new(),
            })),
        }
    }
}

impl<K> Clone for Tally<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Eq + Hash + Clone> Tally<K> {
    /// Takes one for `key` if `admit(total, held by key)` allows it; the
    /// check and the count are one step, so concurrent takers cannot both
    /// pass a cap with one place left.
    pub fn take<E>(
        &self,
        key: &K,
        admit: impl FnOnce(usize, usize) -> Result<(), E>,
    ) -> Result<Held<K>, E> {
        let mut counts = self.inner.lock().expect("tally lock");
        let held = counts.per_key.get(key).copied().unwrap_or(0);
        admit(counts.total, held)?;
        counts.total += 1;
        *counts.per_key.entry(key.clone()).or_default() += 1;
        Ok(Held {
            tally: self.clone(),
            key: key.clone(),
        })
    }
}

/// One counted thing; gives its count back when dropped.
#[derive(Debug)]
pub struct Held<K: Eq + Hash> {
    tally: Tally<K>,
    key: K,
}

impl<K: Eq + Hash> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = self.tally.inner.lock().expect("tally lock");
        counts.total -= 1;
        if let Some(n) = counts.per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_back_when_held_things_drop() {
        let tally: Tally<&str> = Tally::default();
        let cap = |total: usize, held: usize| {
            if total >= 3 || held >= 2 {
                Err(())
            } else {
                Ok(())
            }
        };
        let a1 = tally.take(&"a", cap).unwrap();
        let _a2 = tally.take(&"a", cap).unwrap();
        assert!(tally.take(&"a", cap).is_err(), "per key");
        let _b = tally.take(&"b", cap).unwrap();
        assert!(tally.take(&"c", cap).is_err(), "in total");
        drop(a1);
        tally.take(&"a", cap).unwrap();
    }
}
