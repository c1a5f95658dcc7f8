//! Watchers of the membership feed: the cap on concurrent watchers and the
//! limit on how far one may fall behind, with the errors a watch can end
//! with. Knows nothing of protobuf or gRPC; the service translates.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tracing::warn;

use crate::registry::Event;

/// Why a watch was refused or ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// Every watcher slot is taken.
    #[error("too many watchers (limit {limit}); try again later")]
    TooMany {
        /// The most concurrent watchers.
        limit: usize,
    },
    /// The watcher fell more than the lag limit behind the feed.
    #[error("watch fell {missed} events behind; call Watch again")]
    FellBehind {
        /// Events it missed.
        missed: u64,
    },
}

/// The watcher slots; cheap to clone.
#[derive(Debug, Clone)]
pub struct Watchers {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl Watchers {
    /// Room for `limit` concurrent watchers.
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A slot for one more watcher, held until its stream is dropped.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, WatchError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| WatchError::TooMany { limit: self.limit })
    }
}

/// The live events after a snapshot, for one watcher.
///
/// The stream reads the shared backlog only when HTTP/2 asks for the next
/// item, so a client that stops reading exerts backpressure on its own
/// stream alone; once it is more than the lag limit events behind, its
/// next item is an error telling it to watch again. No per-watcher task or
/// queue is needed, and the registry never waits for anyone.
pub fn live_events(
    events: broadcast::Receiver<Event>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, WatchError>> + Send {
    futures::stream::unfold(Some((events, permit)), |state| async move {
        let (mut events, permit) = state?;
        match events.recv().await {
            Ok(event) => Some((Ok(event), Some((events, permit)))),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "watcher fell behind; dropping it");
                Some((Err(WatchError::FellBehind { missed }), None))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}
