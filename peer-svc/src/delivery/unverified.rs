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

/// A failed handshake with a name: with which listed key, until when it is
/// not tried again, and why.
type Failure = ([u8; 32], Instant, String);

/// How long a name whose credential was valid but not yet confirmed by its
/// inviter (a newcomer a moment from being a member) is not tried again:
/// only a real invitation's user can show one, so it costs an outsider
/// nothing to allow sooner.
pub const RETRY_UNCONFIRMED_AFTER: Duration = Duration::from_secs(1);

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
    fn failed_recently(&self, contact: &Contact) -> Option<String> {
        let failed = self.failed.lock().expect("unverified lock");
        let (key, until, why) = failed.get(&contact.name)?;
        (*key == contact.public_key && Instant::now() < *until).then(|| why.clone())
    }

    /// Records a failed handshake with `contact` (`status`): not tried again
    /// for [`RETRY_AFTER`], or [`RETRY_UNCONFIRMED_AFTER`] if it showed a
    /// valid admission its inviter has not confirmed yet.
    fn record(&self, contact: &Contact, status: &tonic::Status) {
        let wait = if status.code() == tonic::Code::FailedPrecondition {
            RETRY_UNCONFIRMED_AFTER
        } else {
            RETRY_AFTER
        };
        let mut failed = self.failed.lock().expect("unverified lock");
        if failed.len() >= MAX_REMEMBERED {
            let now = Instant::now();
            failed.retain(|_, (_, until, _)| now < *until);
        }
        failed.insert(
            contact.name.clone(),
            (contact.public_key, Instant::now() + wait, describe(status)),
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
        // Not a member yet itself (its inviter has not confirmed it): it
        // meets nobody else, and records no failure that would hold it
        // back once it is one.
        if self.handshaker.admission().own_pending().is_some() {
            return false;
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
        let status = match met {
            Ok(Ok(_)) if !self.unverified(&contact.name) => {
                self.unverified.forget(&contact.name);
                return true;
            }
            Ok(Ok(_)) => tonic::Status::permission_denied("its handshake showed no admission"),
            Ok(Err(status)) => status,
            Err(_) => {
                tonic::Status::deadline_exceeded(format!("no answer within {DELIVER_TIMEOUT:?}"))
            }
        };
        debug!(peer = %contact.name, error = %describe(&status), "could not meet a listed name");
        self.unverified.record(contact, &status);
        false
    }

    /// A handshake with `contact` now, whatever is known of it: how a
    /// newcomer its inviter just confirmed shows its complete admission to
    /// everyone (who may have met it, and refused it, a moment before).
    pub async fn meet(&self, contact: &Contact) -> bool {
        let met = tokio::time::timeout(DELIVER_TIMEOUT, self.handshaker.initiate(contact)).await;
        match met {
            Ok(Ok(_)) => {
                self.unverified.forget(&contact.name);
                true
            }
            Ok(Err(status)) => {
                debug!(peer = %contact.name, error = %describe(&status), "could not meet a listed name");
                false
            }
            Err(_) => false,
        }
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
        if let Some(why) = self.unverified.failed_recently(contact) {
            debug!(peer = %name, reason = %why, "not a member here (its handshake failed recently); not sent");
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
                self.unverified.record(contact, &status);
                None
            }
        }
    }
}
