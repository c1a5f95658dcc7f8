//! A replica's copy of the members in etcd: read in one go, sorted for
//! lists, and compared with an older copy when a relist replaces it.

use std::{collections::HashMap, sync::Arc};

use etcd_client::{Client, GetOptions};
use prost::Message;

use super::record::Record;
use crate::registry::{Event, EventKind, MemberInfo};

/// One member in a replica's mirror.
#[derive(Debug, Clone)]
pub(super) struct Mirrored {
    pub(super) info: MemberInfo,
    /// Revision of the record's last write: lists are sorted by it.
    pub(super) mod_revision: i64,
    /// Marked by `Leave`: its deletion is a LEFT, not an EXPIRED.
    pub(super) leaving: bool,
    /// The address it registered from, for the per-source cap.
    pub(super) source: String,
}

/// The members as this replica's watch last saw them.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    pub(super) members: HashMap<String, Mirrored>,
    /// Every event up to this revision has been applied.
    pub(super) revision: i64,
    /// [`Mirror::sorted`], shared by watchers until the members change.
    shared: Option<Arc<[MemberInfo]>>,
}

impl Mirror {
    /// Reads every member under `members_prefix`, with the revision the
    /// read saw.
    pub(super) async fn load(
        client: &Client,
        members_prefix: &str,
    ) -> Result<Mirror, etcd_client::Error> {
        let response = client
            .kv_client()
            .get(members_prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let members = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let record = Record::decode(kv.value()).ok()?;
                let info = record.info()?;
                Some((
                    info.name.clone(),
                    Mirrored {
                        info,
                        mod_revision: kv.mod_revision(),
                        leaving: record.leaving,
                        source: record.source,
                    },
                ))
            })
            .collect();
        Ok(Mirror {
            members,
            revision,
            shared: None,
        })
    }

    /// The members, oldest write first, shared until they change.
    pub(super) fn sorted(&mut self) -> Arc<[MemberInfo]> {
        let members = &self.members;
        self.shared
            .get_or_insert_with(|| {
                let mut all: Vec<&Mirrored> = members.values().collect();
                all.sort_unstable_by_key(|m| m.mod_revision);
                all.into_iter().map(|m| m.info.clone()).collect()
            })
            .clone()
    }

    /// Adds or replaces a member.
    pub(super) fn insert(&mut self, member: Mirrored) {
        self.shared = None;
        self.members.insert(member.info.name.clone(), member);
    }

    /// Removes a member, if present.
    pub(super) fn remove(&mut self, name: &str) -> Option<Mirrored> {
        self.shared = None;
        self.members.remove(name)
    }

    /// How many members there are, and how many registered from `source`.
    /// O(n): etcd registrations are dominated by their round trips.
    pub(super) fn counts(&self, source: &str) -> (usize, usize) {
        let from = self.members.values().filter(|m| m.source == source).count();
        (self.members.len(), from)
    }
}

/// The events that turn `old` into `new`: JOINED for new or changed
/// members (in write order), EXPIRED for members gone.
pub(super) fn mirror_diff(old: &Mirror, new: &Mirror) -> Vec<Event> {
    let mut events: Vec<Event> = old
        .members
        .values()
        .filter(|m| !new.members.contains_key(&m.info.name))
        .map(|m| Event {
            kind: EventKind::Expired,
            member: m.info.clone(),
        })
        .collect();
    let mut joined: Vec<&Mirrored> = new
        .members
        .values()
        .filter(|m| {
            old.members
                .get(&m.info.name)
                .is_none_or(|o| o.mod_revision != m.mod_revision)
        })
        .collect();
    joined.sort_unstable_by_key(|m| m.mod_revision);
    events.extend(joined.into_iter().map(|m| Event {
        kind: EventKind::Joined,
        member: m.info.clone(),
    }));
    events
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn member(name: &str, rev: i64) -> Mirrored {
        Mirrored {
            info: MemberInfo {
                name: name.into(),
                address: "127.0.0.1:1".into(),
                public_key: [9; 32],
                fingerprint: String::new(),
                joined_at: Utc::now(),
            },
            mod_revision: rev,
            leaving: false,
            source: String::new(),
        }
    }

    fn mirror(members: &[(&str, i64)]) -> Mirror {
        Mirror {
            members: members
                .iter()
                .map(|&(n, r)| (n.to_owned(), member(n, r)))
                .collect(),
            revision: 0,
            shared: None,
        }
    }

    #[test]
    fn relisting_reports_the_difference() {
        let old = mirror(&[("alice", 2), ("bob", 3), ("carol", 4)]);
        let new = mirror(&[("alice", 2), ("carol", 9), ("dave", 7)]);
        let events: Vec<(EventKind, String)> = mirror_diff(&old, &new)
            .into_iter()
            .map(|e| (e.kind, e.member.name))
            .collect();
        assert_eq!(
            events,
            vec![
                (EventKind::Expired, "bob".to_owned()),
                (EventKind::Joined, "dave".to_owned()),
                (EventKind::Joined, "carol".to_owned()),
            ]
        );
    }
}
