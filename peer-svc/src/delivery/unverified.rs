//! Names that have shown this peer no admission (issue 24, item 5): in a
//! network, Discovery's word makes nobody a member. A name Discovery lists
//! but whose credential this peer has never verified is sent to only if a
//! handshake (which checks its credential) succeeds now, is never queued
//! for, and after a failed attempt is not tried again for a while: a
//! thousand names registered by an outsider cost a member one attempt each
//! per [`RETRY_AFTER`], not one per message, and nothing in its outbox.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chat_proto::v1::{Delivery as DeliveryReport, delivery::Status as DeliveryStatus};
use tokio::time::Instant;

use super::{Delivery, Outgoing, describe, report};
use crate::{config::DELIVER_TIMEOUT, directory::Contact};

/// How long a name whose handshake failed is not tried again (for the same
/// listed key).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Most failed names remembered; past it the oldest half is forgotten.
const MAX_REMEMBERED: usize = 65_536;

/// When a handshake with each unverified name last failed, and with which key.
#[derive(Debug, Default)]
pub struct Unverified {
    failed: Mutex<HashMap<String, ([u8; 32], Instant)>>,
}

impl Unverified {
    /// Seconds since `contact` (with its listed key) last failed, if that
    /// was less than [`RETRY_AFTER`] ago.
    fn failed_recently(&self, contact: &Contact) -> Option<u64> {
        let failed = self.failed.lock().expect("unverified lock");
        let (key, at) = failed.get(&contact.name)?;
        let ago = at.elapsed();
        (*key == contact.public_key && ago < RETRY_AFTER).then_some(ago.as_secs())
    }

    fn record(&self, contact: &Contact) {
        let mut failed = self.failed.lock().expect("unverified lock");
        if failed.len() >= MAX_REMEMBERED {
            let now = Instant::now();
            failed.retain(|_, (_, at)| now.duration_since(*at) < RETRY_AFTER);
        }
        failed.insert(contact.name.clone(), (contact.public_key, Instant::now()));
    }

    fn forget(&self, name: &str) {
        self.failed.lock().expect("unverified lock").remove(name);
    }
}

/// Why nothing is kept to retry for a name that showed no admission.
fn not_queued(name: &str) -> String {
    format!(
        "{name} has shown this peer no admission to the network (only Discovery lists it), so no copy is kept for it; if it is a member, it gets the message when it next compares feeds with one that has it"
    )
}

impl Delivery {
    /// True if `name` must show its credential before anything is queued
    /// for it: this peer is in a network and has never verified one of it.
    pub(super) fn unverified(&self, name: &str) -> bool {
        let admission = self.handshaker.admission();
        !admission.is_open() && !admission.is_known_member(name)
    }

    /// Delivers to a name that has shown no admission here: now, through a
    /// handshake that verifies it, or not at all.
    pub(super) async fn to_unverified(
        &self,
        contact: &Contact,
        outgoing: &Outgoing,
    ) -> DeliveryReport {
        let name = &contact.name;
        if !contact.online {
            return report(
                contact,
                DeliveryStatus::Failed,
                format!("offline; {}", not_queued(name)),
            );
        }
        if let Some(ago) = self.unverified.failed_recently(contact) {
            return report(
                contact,
                DeliveryStatus::Failed,
                format!("its handshake failed {ago} s ago; {}", not_queued(name)),
            );
        }
        let outcome = tokio::time::timeout(DELIVER_TIMEOUT, self.try_deliver(contact, outgoing))
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {DELIVER_TIMEOUT:?}"
                )))
            });
        match outcome {
            Ok(()) => {
                self.unverified.forget(name);
                report(contact, DeliveryStatus::Delivered, String::new())
            }
            Err(status) => {
                self.unverified.record(contact);
                report(
                    contact,
                    DeliveryStatus::Failed,
                    format!("{}; {}", describe(&status), not_queued(name)),
                )
            }
        }
    }
}
