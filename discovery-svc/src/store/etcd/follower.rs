//! The follower: one etcd watch on `members/` per replica keeps the
//! replica's [`Mirror`] and feeds its watchers. After a broken connection
//! it resumes from the next revision; if that revision was compacted away
//! it lists again and reports the difference. Calls wait here, briefly,
//! until the mirror has caught up with their own writes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions, WatchRequestSender};
use prost::Message;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::mirror::{Mirror, Mirrored, mirror_diff};
use super::record::Record;
use crate::registry::{Event, EventKind, MemberInfo};
use crate::store::log_event;

/// Longest a call waits for this replica's watch to catch up with a write
/// or read: well under a peer's 3 s call deadline. Past it, the call
/// answers anyway and the event reaches watchers live.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// Longest wait between attempts to re-establish the etcd watch.
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(2);

/// This replica's view of the members and its watchers' event feed.
pub(super) struct Follower {
    client: Client,
    /// `PREFIX/members/`: the keys followed.
    members_prefix: String,
    mirror: Mutex<Mirror>,
    events: broadcast::Sender<Event>,
    /// The revision the mirror has applied, for callers waiting to read
    /// their own writes.
    applied: watch::Sender<i64>,
    /// The live etcd watch's request side, to ask for a progress report.
    progress: tokio::sync::Mutex<Option<WatchRequestSender>>,
}

impl Follower {
    /// Loads the members under `members_prefix`; watchers may fall
    /// `lag_limit` events behind. Call [`Follower::follow`] to keep it current.
    pub(super) async fn load(
        client: Client,
        members_prefix: String,
        lag_limit: usize,
    ) -> Result<Arc<Self>, etcd_client::Error> {
        let (events, _) = broadcast::channel(lag_limit.max(1));
        let loaded = Mirror::load(&client, &members_prefix).await?;
        Ok(Arc::new(Self {
            client,
            members_prefix,
            applied: watch::channel(loaded.revision).0,
            mirror: Mutex::new(loaded),
            events,
            progress: tokio::sync::Mutex::new(None),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().expect("mirror lock")
    }

    /// How many members the mirror holds.
    pub(super) fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// How many members the mirror holds, and how many from `source`.
    pub(super) fn counts(&self, source: &str) -> (usize, usize) {
        self.lock().counts(source)
    }

    /// Follows the members with an etcd watch until `shutdown`.
    pub(super) async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                r = self.follow_once() => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Ok(()) => delay = Duration::from_millis(100),
                Err(e) => {
                    warn!(error = %e, "etcd watch failed; resuming");
                    delay = (delay * 2).min(MAX_WATCH_BACKOFF);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One etcd watch from the revision after the last applied one, until it
    /// ends. A compacted start revision means events were lost to this
    /// replica: it lists again and publishes the difference.
    async fn follow_once(&self) -> Result<(), etcd_client::Error> {
        let from = self.lock().revision + 1;
        let stream = self
            .client
            .watch_client()
            .watch(
                self.members_prefix.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(from)
                        .with_progress_notify(),
                ),
            )
            .await?;
        let (sender, mut stream) = stream.split();
        *self.progress.lock().await = Some(sender);
        while let Some(response) = stream.message().await? {
            if response.created() {
                // Its header is the current revision, not how far the
                // events from `from` have been replayed.
                continue;
            }
            if response.canceled() {
                if response.compact_revision() > 0 {
                    warn!(
                        from,
                        compacted = response.compact_revision(),
                        "etcd compacted the watched revisions; listing again"
                    );
                    let fresh = Mirror::load(&self.client, &self.members_prefix).await?;
                    self.replace_mirror(fresh);
                }
                return Ok(());
            }
            let mut mirror = self.lock();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                self.apply(&mut mirror, event.event_type(), kv);
                mirror.revision = mirror.revision.max(kv.mod_revision());
            }
            if response.events().is_empty()
                && let Some(header) = response.header()
            {
                // A progress notification: nothing under the prefix changed
                // up to this revision.
                mirror.revision = mirror.revision.max(header.revision());
            }
            self.applied.send_replace(mirror.revision);
        }
        Ok(())
    }

    /// Applies one watch event to the mirror and publishes what it means;
    /// called with the mirror locked, so watchers see events in etcd order.
    fn apply(&self, mirror: &mut Mirror, kind: EventType, kv: &KeyValue) {
        if kv.mod_revision() <= mirror.revision {
            return; // Already applied before a reconnect.
        }
        let Some(name) = kv
            .key()
            .strip_prefix(self.members_prefix.as_bytes())
            .and_then(|n| std::str::from_utf8(n).ok())
        else {
            return;
        };
        match kind {
            EventType::Put => {
                let Some((record, info)) = Record::decode(kv.value())
                    .ok()
                    .and_then(|r| r.info().map(|i| (r, i)))
                else {
                    warn!(key = name, "undecodable member record in etcd; ignored");
                    return;
                };
                if record.leaving {
                    if let Some(m) = mirror.members.get_mut(name) {
                        m.leaving = true;
                    }
                    return;
                }
                mirror.insert(Mirrored {
                    info: info.clone(),
                    mod_revision: kv.mod_revision(),
                    leaving: false,
                    source: record.source,
                });
                self.publish(Event {
                    kind: EventKind::Joined,
                    member: info,
                });
            }
            EventType::Delete => {
                if let Some(gone) = mirror.remove(name) {
                    let kind = if gone.leaving {
                        EventKind::Left
                    } else {
                        EventKind::Expired
                    };
                    self.publish(Event {
                        kind,
                        member: gone.info,
                    });
                }
            }
        }
    }

    /// Swaps in a freshly listed mirror and publishes how it differs from
    /// the old one (members gone are reported as EXPIRED: why is unknown).
    fn replace_mirror(&self, fresh: Mirror) {
        let mut mirror = self.lock();
        let old = std::mem::replace(&mut *mirror, fresh);
        for event in mirror_diff(&old, &mirror) {
            self.publish(event);
        }
        self.applied.send_replace(mirror.revision);
    }

    /// Waits until the mirror has applied `revision` (this replica's own
    /// write, or the store's revision at a read), so that a Watch opened
    /// after a call sees that call's effect in its snapshot. Gives up after
    /// [`CATCH_UP_WAIT`]: the event then arrives live instead.
    pub(super) async fn caught_up(&self, revision: i64) {
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(CATCH_UP_WAIT, applied.wait_for(|&r| r >= revision)).await;
    }

    /// The current members and a subscription to every event after them,
    /// once the mirror has caught up with everything written through any
    /// replica so far.
    pub(super) async fn subscribe(&self) -> (Arc<[MemberInfo]>, broadcast::Receiver<Event>) {
        if let Ok(now) = self.current_revision().await
            && *self.applied.borrow() < now
        {
            if let Some(sender) = self.progress.lock().await.as_mut() {
                let _ = sender.request_progress().await;
            }
            self.caught_up(now).await;
        }
        let mut mirror = self.lock();
        (mirror.sorted(), self.events.subscribe())
    }

    /// The store's current revision, from a linearizable read.
    async fn current_revision(&self) -> Result<i64, etcd_client::Error> {
        let response = self
            .client
            .kv_client()
            .get(
                self.members_prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    fn publish(&self, event: Event) {
        log_event(&event);
        // An error only means nobody is watching.
        let _ = self.events.send(event);
    }
}
