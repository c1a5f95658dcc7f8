//! Watchers of the membership feed: the cap on concurrent anonymous
//! watchers, a slot of its own for each member, and the limit on how far
//! one may fall behind, with the errors a watch can end with. Knows nothing
//! of protobuf or gRPC; the service translates.
//!
//! Fairness: a client that opens watch after watch can only fill the
//! anonymous slots. A member watching with its lease takes the slot of its
//! name, which nobody without the lease token can take; a newer watch of
//! the same name ends the older one, and a member's watch ends after its own
//! LEFT or EXPIRED, so member slots never outnumber live members.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use chat_proto::tally::{Held, Tally};

use crate::registry::{Event, EventKind};

/// Why a watch was refused or ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// Every watcher slot is taken.
    #[error("too many watchers (limit {limit}); try again later")]
    TooMany {
        /// The most concurrent watchers.
        limit: usize,
    },
    /// The caller's address holds its share of the anonymous slots.
    #[error(
        "too many watchers from this address (limit {limit}, --max-watchers-per-source); \
         watch with your lease, or try again later"
    )]
    TooManyFromSource {
        /// The most anonymous watchers from one address.
        limit: usize,
    },
    /// The watcher fell more than the lag limit behind the feed.
    #[error("watch fell {missed} events behind; call Watch again")]
    FellBehind {
        /// Events it missed.
        missed: u64,
    },
}

/// Member slots by name: the slot's id and what ends its stream.
type MemberSlots = Arc<Mutex<HashMap<String, (u64, CancellationToken)>>>;

/// The watcher slots; cheap to clone.
#[derive(Debug, Clone)]
pub struct Watchers {
    anonymous: Arc<Semaphore>,
    limit: usize,
    /// Anonymous watchers per source address, and the most each may hold.
    per_source: Tally<String>,
    per_source_limit: usize,
    /// Member watches, however many names come and go: a stream whose
    /// client stopped reading outlives its member until the client resets
    /// it, so slots are bounded here too (by the member cap).
    member_permits: Arc<Semaphore>,
    member_limit: usize,
    members: MemberSlots,
    next_id: Arc<AtomicU64>,
}

/// One watcher's slot, held until its stream is dropped.
#[derive(Debug)]
pub struct Slot {
    /// Cancelled when a newer watch of the same member takes the slot.
    ended: CancellationToken,
    kind: SlotKind,
}

#[derive(Debug)]
enum SlotKind {
    Anonymous {
        _permit: OwnedSemaphorePermit,
        _source: Held<String>,
    },
    Member {
        name: String,
        id: u64,
        slots: MemberSlots,
        _permit: OwnedSemaphorePermit,
    },
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let SlotKind::Member {
            name, id, slots, ..
        } = &self.kind
        {
            let mut slots = slots.lock().expect("member slots lock");
            if slots.get(name).is_some_and(|(held, _)| held == id) {
                slots.remove(name);
            }
        }
    }
}

impl Slot {
    /// Whether `event` ends this watch: the member's own LEFT or EXPIRED.
    fn ends_with(&self, event: &Event) -> bool {
        matches!(&self.kind, SlotKind::Member { name, .. }
            if *name == event.member.name && event.kind != EventKind::Joined)
    }
}

impl Watchers {
    /// Room for `limit` concurrent anonymous watchers (at most
    /// `per_source_limit` from one address) and `member_limit` members'
    /// watches.
    pub fn new(limit: usize, per_source_limit: usize, member_limit: usize) -> Self {
        let member_limit = member_limit.min(Semaphore::MAX_PERMITS);
        Self {
            anonymous: Arc::new(Semaphore::new(limit)),
            limit,
            per_source: Tally::default(),
            per_source_limit,
            member_permits: Arc::new(Semaphore::new(member_limit)),
            member_limit,
            members: Arc::default(),
            next_id: Arc::default(),
        }
    }

    /// A slot for one more anonymous watcher, from `source`.
    pub fn admit(&self, source: &str) -> Result<Slot, WatchError> {
        let limit = self.per_source_limit;
        let held = self.per_source.take(&source.to_owned(), |_, from_source| {
            if from_source >= limit {
                Err(WatchError::TooManyFromSource { limit })
            } else {
                Ok(())
            }
        })?;
        // Over the shared cap, `held` drops and gives its count back.
        let permit = self
            .anonymous
            .clone()
            .try_acquire_owned()
            .map_err(|_| WatchError::TooMany { limit: self.limit })?;
        Ok(Slot {
            ended: CancellationToken::new(),
            kind: SlotKind::Anonymous {
                _permit: permit,
                _source: held,
            },
        })
    }

    /// The slot of member `name` (whose lease the caller has shown); a
    /// watch already in it ends. Refused only when as many member watches
    /// are open as members may be registered.
    pub fn admit_member(&self, name: &str) -> Result<Slot, WatchError> {
        let permit = self
            .member_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| WatchError::TooMany {
                limit: self.member_limit,
            })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ended = CancellationToken::new();
        let previous = self
            .members
            .lock()
            .expect("member slots lock")
            .insert(name.to_owned(), (id, ended.clone()));
        if let Some((_, older)) = previous {
            debug!(name, "a newer watch of this member ends the older one");
            older.cancel();
        }
        Ok(Slot {
            ended,
            kind: SlotKind::Member {
                name: name.to_owned(),
                id,
                slots: self.members.clone(),
                _permit: permit,
            },
        })
    }
}

/// The live events after a snapshot, for one watcher.
///
/// The stream reads the shared backlog only when HTTP/2 asks for the next
/// item, so a client that stops reading exerts backpressure on its own
/// stream alone; once it is more than the lag limit events behind, its
/// next item is an error telling it to watch again. No per-watcher task or
/// queue is needed, and the registry never waits for anyone.
///
/// A member's watch ends after the member's own LEFT or EXPIRED, or when a
/// newer watch takes its slot.
pub fn live_events(
    events: broadcast::Receiver<Event>,
    slot: Slot,
) -> impl Stream<Item = Result<Event, WatchError>> + Send {
    futures::stream::unfold(Some((events, slot)), |state| async move {
        let (mut events, slot) = state?;
        let received = tokio::select! {
            received = events.recv() => received,
            () = slot.ended.cancelled() => return None,
        };
        match received {
            Ok(event) if slot.ends_with(&event) => Some((Ok(event), None)),
            Ok(event) => Some((Ok(event), Some((events, slot)))),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "watcher fell behind; dropping it");
                Some((Err(WatchError::FellBehind { missed }), None))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}
