//! History sync: a peer that joins, or returns after downtime, pulls what it
//! missed from a live peer over `Peer/History` — sealed to it inside its own
//! session, streamed in pages, resumable from the last item received.

use std::sync::Arc;

use chat_proto::v1::{
    ChatMessage, Envelope, HistoryCursor, PeerHistoryRequest, SealedMessage,
    peer_client::PeerClient,
};
use prost::Message;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::{directory::Contact, history::cursor_of, node::Node, session::envelope_aad};

/// How far back before the newest stored message a returning peer asks
/// for, in HLC units (ms << 16): five minutes, to cover messages whose
/// senders' clocks ran a little behind ours.
const SYNC_OVERLAP_HLC: u64 = (5 * 60 * 1000) << 16;

/// Messages stored per transaction while syncing.
const SYNC_BATCH: usize = 500;

/// Longest wait for the next history item before the pull is resumed.
const ITEM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Attempts per source peer when the stream breaks (each resumes).
const ATTEMPTS_PER_PEER: usize = 3;

/// Pulls missed history from one live peer (trying each known peer in turn,
/// those Discovery lists first). With `want_members`, also learns the
/// network from that peer. Returns how many new messages were stored.
pub async fn pull_missed_history(node: Arc<Node>, want_members: bool) -> Option<usize> {
    let mut candidates: Vec<Contact> = node
        .directory
        .all()
        .into_iter()
        .filter(|c| !c.dropped && !c.key_changed)
        .collect();
    // Online first, otherwise a random start so peers spread the load.
    let offset = rand::random::<u64>() as usize % candidates.len().max(1);
    candidates.rotate_left(offset);
    candidates.sort_by_key(|c| !c.online);
    for contact in candidates {
        match pull_from(&node, &contact, want_members).await {
            Ok(added) => {
                if want_members {
                    announce(&node, &contact.name).await;
                }
                return Some(added);
            }
            Err(e) => {
                debug!(peer = %contact.name, error = %e.message(), "history sync failed; trying another peer")
            }
        }
    }
    if !node.directory.all().is_empty() {
        warn!("no peer answered a history sync; history may be incomplete until one does");
    }
    None
}

/// Without Discovery, the peers only learn this peer's (possibly new)
/// address from a handshake with it: handshake with every known peer but
/// `synced_from`, so each can deliver to it (and flush what it queued).
async fn announce(node: &Node, synced_from: &str) {
    let others: Vec<Contact> = node
        .directory
        .all()
        .into_iter()
        .filter(|c| c.name != synced_from && !c.dropped && !c.key_changed)
        .collect();
    let results = futures::future::join_all(others.iter().map(|c| node.handshake(c))).await;
    for (contact, result) in others.iter().zip(results) {
        match result {
            Ok(_) => node
                .directory
                .learn_address(&contact.name, &contact.address),
            Err(e) => {
                debug!(peer = %contact.name, error = %e.message(), "could not announce our address")
            }
        }
    }
}

/// Pulls everything since our newest message (minus an overlap) from `contact`.
pub async fn pull_from(
    node: &Node,
    contact: &Contact,
    want_members: bool,
) -> Result<usize, Status> {
    let newest = node.store.max_hlc().unwrap_or(0);
    let since_hlc = if newest == 0 {
        0
    } else {
        newest.saturating_sub(SYNC_OVERLAP_HLC)
    };
    let mut after = String::new();
    let (mut seen, mut added, mut refused) = (0usize, 0usize, 0usize);
    let mut last_error = None;
    for attempt in 0..ATTEMPTS_PER_PEER {
        // A fresh session per attempt: a long pull may outlive the last one.
        let session = node
            .handshake_with(contact, want_members && attempt == 0)
            .await?;
        node.directory
            .learn_address(&contact.name, &contact.address);
        let cursor = HistoryCursor {
            after: after.clone(),
            limit: 0,
            since_hlc,
        };
        let aad = envelope_aad(&session.id(), node.name(), "");
        let (counter, ciphertext) = session
            .transport
            .seal_next(&aad, &cursor.encode_to_vec())
            .map_err(|e| Status::internal(format!("cannot seal: {e}")))?;
        let request = PeerHistoryRequest {
            envelope: Some(Envelope {
                session_id: session.id().to_vec(),
                counter,
                sender: node.name().to_owned(),
                message_id: String::new(),
                ciphertext,
            }),
        };
        let mut stream = match PeerClient::new(node.channel(&contact.address)?)
            .history(request)
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                last_error = Some(s);
                continue;
            }
        };
        let mut batch = Vec::with_capacity(SYNC_BATCH);
        let outcome = loop {
            // A stalled source must not hold the sync forever.
            let next = tokio::time::timeout(ITEM_TIMEOUT, stream.message())
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("history stream stalled")));
            match next {
                Ok(Some(item)) => {
                    let Some(envelope) = item.envelope else {
                        break Err(Status::invalid_argument("history item without envelope"));
                    };
                    if envelope.session_id != session.id() {
                        break Err(Status::unauthenticated("history item on another session"));
                    }
                    let (_, plaintext) = node
                        .open_envelope(&envelope)
                        .map_err(|e| Status::unauthenticated(e.to_string()))?;
                    let message = SealedMessage::decode(plaintext.as_slice())
                        .ok()
                        .and_then(|s| s.message)
                        .filter(|m| m.id == envelope.message_id && !m.id.is_empty())
                        .ok_or_else(|| Status::invalid_argument("malformed history item"))?;
                    // Resume after what was really received, not what the
                    // unauthenticated cursor field says.
                    after = cursor_of(&message);
                    seen += 1;
                    if !acceptable(node, &message) {
                        refused += 1;
                        continue;
                    }
                    node.hlc.observe(message.hlc);
                    if message.hlc >= node.started_hlc {
                        // Sent while we were up, and it won the race with its
                        // direct delivery: show it live like that would have.
                        let new = node
                            .store_received(message)
                            .await
                            .map_err(|e| Status::internal(e.to_string()))?;
                        added += usize::from(new);
                        continue;
                    }
                    batch.push(message);
                    if batch.len() == SYNC_BATCH {
                        added += store(node, &mut batch)?;
                    }
                }
                Ok(None) => break Ok(()),
                Err(s) => break Err(s),
            }
        };
        added += store(node, &mut batch)?;
        match outcome {
            Ok(()) => {
                if refused > 0 {
                    warn!(from = %contact.name, refused, "history items refused (claimed our name, a wrong fingerprint, a future clock or an oversize text)");
                }
                info!(from = %contact.name, received = seen, new = added, "history synced");
                return Ok(added);
            }
            Err(s) => {
                debug!(from = %contact.name, error = %s.message(), "history stream broke; resuming");
                last_error = Some(s);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Status::unavailable("history sync failed")))
}

/// Whether a history item relayed by another peer may be stored. Without
/// per-author signatures a relaying peer could invent messages; these checks
/// bound what it can invent: never in our name, never under a fingerprint
/// other than the one we know for that sender, never from the future.
fn acceptable(node: &Node, message: &ChatMessage) -> bool {
    if message.sender == node.name() || message.text.len() > node.config.max_message_bytes {
        return false;
    }
    if let Some(known) = node.directory.get(&message.sender)
        && !known.key_changed
        && known.fingerprint != message.sender_fingerprint
    {
        return false;
    }
    node.check_clock(message.hlc).is_ok()
}

fn store(node: &Node, batch: &mut Vec<chat_proto::v1::ChatMessage>) -> Result<usize, Status> {
    if batch.is_empty() {
        return Ok(0);
    }
    let added = node
        .store
        .insert_many(batch)
        .map_err(|e| Status::internal(e.to_string()))?;
    batch.clear();
    Ok(added)
}
