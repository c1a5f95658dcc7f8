//! Own messages reach the store in the order their sequence numbers were
//! given (issue 24, item 10). Sequence numbers are given when a message is
//! written, in the caller's order; signing then runs in parallel, and
//! `SendStream` stores its chunks from tasks of their own. If a later
//! chunk were committed (and delivered) before an earlier one and the peer
//! were killed in between, the earlier numbers would be lost for good: a
//! gap in this author's feed on every peer, which `chat history --verify`
//! reports for ever. So each message waits its turn to be handed to the
//! store's commit queue (which commits in the order it is handed), and a
//! crash can only lose the newest messages, whose numbers are given again.
//! A message written and then dropped unsent (its caller went away) gives
//! up its turn, so nothing waits for it for ever.

use std::{collections::BTreeSet, sync::Mutex};

use tokio::sync::Notify;

/// Whose turn it is to be handed to the store.
#[derive(Debug)]
pub struct FeedOrder {
    /// (the next seq to hand over, later seqs that gave up their turn).
    state: Mutex<(u64, BTreeSet<u64>)>,
    moved: Notify,
}

impl FeedOrder {
    /// Turns from `next` on (the seq after the newest stored).
    pub fn new(next: u64) -> Self {
        Self {
            state: Mutex::new((next, BTreeSet::new())),
            moved: Notify::new(),
        }
    }

    /// Waits until every seq before `seq` has been handed over or given up.
    pub async fn wait_turn(&self, seq: u64) {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.state.lock().expect("feed order lock").0 >= seq {
                return;
            }
            moved.await;
        }
    }

    /// `seq` was handed over, or gives up its turn.
    pub fn done(&self, seq: u64) {
        let mut state = self.state.lock().expect("feed order lock");
        let (next, later) = &mut *state;
        if seq == *next {
            *next += 1;
            while later.remove(next) {
                *next += 1;
            }
        } else if seq > *next {
            later.insert(seq);
        }
        drop(state);
        self.moved.notify_waiters();
    }

    /// The feed moved on to `seq` without this peer writing it (its own
    /// message recovered from another peer after its store was lost).
    pub fn skip_to(&self, seq: u64) {
        let mut state = self.state.lock().expect("feed order lock");
        let (next, later) = &mut *state;
        if seq + 1 > *next {
            *next = seq + 1;
            later.retain(|s| *s > seq);
            while later.remove(next) {
                *next += 1;
            }
        }
        drop(state);
        self.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn turns_go_in_seq_order_and_a_given_up_turn_frees_the_next() {
        let order = Arc::new(FeedOrder::new(1));
        let waiting = {
            let order = order.clone();
            tokio::spawn(async move { order.wait_turn(3).await })
        };
        order.wait_turn(1).await;
        order.done(2); // out of order: kept for later
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "1 has not been handed over");
        order.done(1); // now 1 and 2 are through
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("3's turn")
            .unwrap();
        order.skip_to(9);
        order.wait_turn(10).await;
    }
}
