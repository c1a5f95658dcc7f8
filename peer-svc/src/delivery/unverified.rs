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
use tracing::debug;

use super::{Delivery, Outgoing, describe, report};
use crate::{config::DELIVER_TIMEOUT, directory::Contact};

/// How long a name whose handshake failed is not tried again (for the same
/// listed key).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Most failed names remembered; past it the oldest half is forgotten.
const MAX_REMEMBERED: usize = 65_536;

/// When a handshake with each unverified name last failed, and with which key.
#[derive(Debug)]
pub struct Unverified {
    failed: Mutex<HashMap<String, Failure>>,
    /// Introductions (handshakes made only to meet a name) running at once.
    introducing: tokio::sync::Semaphore,
}

/// A failed handshake with a name: with which listed key, when, and why.
type Failure = ([u8; 32], Instant, String);

/// Introductions run at once at most.
const INTRODUCING_AT_ONCE: usize = 4;

impl Default for Unverified {
    fn default() -> Self {
        Self {
            failed: Mutex::default(),
            introducing: tokio::sync::Semaphore::new(INTRODUCING_AT_ONCE),
        }
    }
}

impl Unverified {
    /// Seconds since `contact` (with its listed key) last failed, and why,
    /// if that was less than [`RETRY_AFTER`] ago.
    fn failed_recently(&self, contact: &Contact) -> Option<(u64, String)> {
        let failed = self.failed.lock().expect("unverified lock");
        let (key, at, why) = failed.get(&contact.name)?;
        let ago = at.elapsed();
        (*key == contact.public_key && ago < RETRY_AFTER).then(|| (ago.as_secs(), why.clone()))
    }

    fn record(&self, contact: &Contact, why: String) {
        let mut failed = self.failed.lock().expect("unverified lock");
        if failed.len() >= MAX_REMEMBERED {
            let now = Instant::now();
            failed.retain(|_, (_, at, _)| now.duration_since(*at) < RETRY_AFTER);
        }
        failed.insert(
            contact.name.clone(),
            (contact.public_key, Instant::now(), why),
        );
    }

    fn forget(&self, name: &str) {
        self.failed.lock().expect("unverified lock").remove(name);
    }
}

impl Delivery {
    /// Meets a listed name that has shown no admission here, so that two
    /// members that never talked still compare feeds: one handshake, which
    /// verifies its credential, at most once per [`RETRY_AFTER`] for one
    /// name and key, and a few at a time (an outsider's thousand names cost
    /// one attempt each per period, as for a send). True if it is now a
    /// known member.
    pub async fn introduce(&self, contact: &Contact) -> bool {
        if !self.unverified(&contact.name) {
            return true;
        }
        if !contact.online || self.unverified.failed_recently(contact).is_some() {
            return false;
        }
        let Ok(_permit) = self.unverified.introducing.acquire().await else {
            return false;
        };
        if self.unverified.failed_recently(contact).is_some() {
            return false;
        }
        let met = tokio::time::timeout(DELIVER_TIMEOUT, self.handshaker.initiate(contact)).await;
        let why = match met {
            Ok(Ok(_)) if !self.unverified(&contact.name) => {
                self.unverified.forget(&contact.name);
                return true;
            }
            Ok(Ok(_)) => "its handshake showed no admission".to_owned(),
            Ok(Err(status)) => describe(&status),
            Err(_) => format!("no answer within {DELIVER_TIMEOUT:?}"),
        };
        self.unverified.record(contact, why);
        false
    }

    /// True if `name` must show its credential before anything is queued
    /// for it: this peer is in a network and has never verified one of it.
    pub(super) fn unverified(&self, name: &str) -> bool {
        let admission = self.handshaker.admission();
        !admission.is_open() && !admission.is_known_member(name)
    }

    /// Delivers to a name that has shown no admission here: now, through a
    /// handshake that verifies it, or not at all. Only a delivery is
    /// reported: a name only Discovery lists is no contact (issue 26, item
    /// 6), and why it was not reached is logged at debug level.
    pub(super) async fn to_unverified(
        &self,
        contact: &Contact,
        outgoing: &Outgoing,
    ) -> Option<DeliveryReport> {
        let name = &contact.name;
        if !contact.online {
            return None;
        }
        if let Some((ago, why)) = self.unverified.failed_recently(contact) {
            debug!(peer = %name, ago, reason = %why, "not a member here (its handshake failed recently); not sent");
            return None;
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
                Some(report(contact, DeliveryStatus::Delivered, String::new()))
            }
            Err(status) => {
                debug!(peer = %name, error = %describe(&status), "a name Discovery lists showed no admission; not sent");
                self.unverified.record(contact, describe(&status));
                None
            }
        }
    }
}
