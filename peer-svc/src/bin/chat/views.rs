//! The verbs that show or change what the peer knows: history,
//! connections, refresh, handshake, stop, leave, verify, trust.

use super::*;

/// `chat history`: every page, oldest first, as the original printed it (or JSON lines).
pub(crate) async fn history(
    client: &mut Client,
    mut request: HistoryRequest,
    json: bool,
) -> Result<ExitCode, Failure> {
    if !json {
        out!("The history");
    }
    let filtered = !request.from.is_empty() || !request.grep.is_empty() || request.since.is_some();
    let names = known_names(client).await;
    let mut shown = 0usize;
    loop {
        let page = client
            .history(request.clone())
            .await
            .map_err(status_text)?
            .into_inner();
        shown += page.messages.len();
        for m in &page.messages {
            if json {
                out!("{}", message_json(m));
            } else {
                out!("{}", console::history_line(m, Some(&names)));
            }
        }
        if page.next_cursor.is_empty() {
            break;
        }
        request.cursor = page.next_cursor;
    }
    if shown == 0 && !json {
        // Said, not a bare heading: an empty answer looks like a failure.
        if filtered {
            note!("no messages match");
        } else {
            note!("no messages yet");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `chat history --verify`: what the peer found checking its stored
/// history, author by author; exit status 1 when anything is wrong.
pub(crate) async fn verify_history(client: &mut Client, json: bool) -> Result<ExitCode, Failure> {
    let report = client
        .verify_history(VerifyHistoryRequest {})
        .await
        .map_err(status_text)?
        .into_inner();
    let ranges = |missing: &[SeqRange]| -> String {
        missing
            .iter()
            .map(|r| {
                if r.from == r.to {
                    r.from.to_string()
                } else {
                    format!("{}-{}", r.from, r.to)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let wrong = report
        .authors
        .iter()
        .any(|a| !a.missing.is_empty() || !a.problems.is_empty());
    if json {
        for a in &report.authors {
            out!(
                "{}",
                serde_json::json!({
                    "name": a.name, "key_fingerprint": a.key_fingerprint,
                    "messages": a.messages, "first_seq": a.first_seq, "last_seq": a.last_seq,
                    "missing": a.missing.iter().map(|r| [r.from, r.to]).collect::<Vec<_>>(),
                    "problems": a.problems,
                })
            );
        }
    } else {
        out!(
            "History checked: {} from {}{}",
            count(report.messages as u64, "message", "messages"),
            count(report.authors.len() as u64, "author key", "author keys"),
            if wrong {
                ""
            } else {
                "; every signature verifies, no gaps"
            }
        );
        for a in &report.authors {
            let state = if a.missing.is_empty() && a.problems.is_empty() {
                "complete".to_owned()
            } else if a.missing.is_empty() {
                format!("{} problems", a.problems.len())
            } else {
                format!(
                    "missing {} (dropped by a relay, or not received yet)",
                    ranges(&a.missing)
                )
            };
            out!(
                "{}  key {}  seq {}-{}  {}  {state}",
                a.name,
                a.key_fingerprint,
                a.first_seq,
                a.last_seq,
                count(a.messages, "message", "messages")
            );
            for problem in &a.problems {
                out!("  {problem}");
            }
        }
        if report.unsigned > 0 {
            out!(
                "{} messages stored before protocol 3 have no signature (kept here, never relayed)",
                report.unsigned
            );
        }
    }
    Ok(if wrong {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The names the peer knows (members and its own), to mark a name that
/// looks like another wherever one is shown; none if it cannot say.
pub(crate) async fn known_names(client: &mut Client) -> peer_svc::names::Lookalikes {
    let request = ConnectionsRequest {
        page_size: 1,
        ..Default::default()
    };
    match client.connections(request).await {
        Ok(r) => peer_svc::names::Lookalikes::new(r.into_inner().names_known),
        Err(_) => peer_svc::names::Lookalikes::default(),
    }
}

/// `chat connections`: a table (or JSON) of the members known (with
/// `all`, every name known: also those only Discovery lists, and removed
/// members).
pub(crate) async fn connections(
    client: &mut Client,
    json: bool,
    all: bool,
) -> Result<ExitCode, Failure> {
    let list = all_connections(client, String::new(), all).await?;
    let names = known_names(client).await;
    if json {
        let items: Vec<_> = list
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name, "address": c.address,
                    "fingerprint": c.fingerprint, "session": session_name(c.session()),
                    "queued": c.queued, "verified": c.verified,
                    "static_fingerprint": c.static_fingerprint,
                    "listed_other_fingerprint": c.listed_other_fingerprint,
                })
            })
            .collect();
        out!("{}", serde_json::Value::Array(items));
    } else if list.is_empty() {
        out!(
            "no other members are known (`chat connections --all` also lists names that are not members)"
        );
    } else {
        out!(
            "{:<16} {:<22} {:<40} {:<12} {:<8} QUEUED",
            "NAME",
            "ADDRESS",
            "SAFETY NUMBER",
            "SESSION",
            "VERIFIED"
        );
        for c in &list {
            out!(
                "{:<16} {:<22} {:<40} {:<12} {:<8} {}",
                c.name,
                c.address,
                c.fingerprint,
                session_name(c.session()),
                if c.verified { "yes" } else { "-" },
                c.queued
            );
            if let Some(other) = names.looks_like(&c.name) {
                out!(
                    "  NOTE: {} looks like {other} (their characters are confusable): tell them apart by safety number (`chat verify {}`)",
                    c.name,
                    c.name
                );
            }
            if c.session() == SessionState::NotAMember {
                out!(
                    "  NOTE: Discovery lists {}, but it has shown this peer no admission to the network: nothing is sent to it unless a handshake shows one",
                    c.name
                );
            }
            if c.session() == SessionState::KeyChanged {
                out!(
                    "  WARNING: {}'s key changed; nothing is sent to it until you compare fingerprints and run `chat trust {}` (in a network, the new key must first show an admission)",
                    c.name,
                    c.name
                );
            }
            if !c.listed_other_fingerprint.is_empty() {
                out!(
                    "  NOTE: Discovery lists another key for {} ({}); its pinned key proved itself and is kept. Only if {} really has a new key: compare fingerprints, then `chat trust {}`",
                    c.name,
                    c.listed_other_fingerprint,
                    c.name,
                    c.name
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every known peer, page by page, from the page after `page_token`.
async fn all_connections(
    client: &mut Client,
    mut page_token: String,
    all: bool,
) -> Result<Vec<chat_proto::v1::Connection>, Failure> {
    let mut list = Vec::new();
    loop {
        let page = client
            .connections(ConnectionsRequest {
                page_size: 0,
                page_token,
                all,
            })
            .await
            .map_err(status_text)?
            .into_inner();
        list.extend(page.connections);
        if page.next_page_token.is_empty() {
            return Ok(list);
        }
        page_token = page.next_page_token;
    }
}

/// `chat refresh [PEER...]`: reload the list from Discovery.
pub(crate) async fn refresh(client: &mut Client, peers: Vec<String>) -> Result<ExitCode, Failure> {
    let first = client
        .refresh_connections(RefreshConnectionsRequest { peers })
        .await
        .map_err(status_text)?
        .into_inner();
    let mut list = first.connections;
    if !first.next_page_token.is_empty() {
        list.extend(all_connections(client, first.next_page_token, false).await?);
    }
    let names: Vec<_> = list.iter().map(|c| c.name.as_str()).collect();
    out!(
        "connections: {}",
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `chat handshake PEER`: a key exchange now, and both fingerprints.
pub(crate) async fn handshake(client: &mut Client, peer: String) -> Result<ExitCode, Failure> {
    let r = client
        .handshake(HandshakeRequest { peer })
        .await
        .map_err(status_text)?
        .into_inner();
    out!(
        "handshake with {} done in {:.2} ms",
        r.peer,
        r.elapsed_micros as f64 / 1000.0
    );
    safety_numbers(&r.peer, &r.fingerprint, &r.local_fingerprint)?;
    out!(
        "Compare them with {} over another channel (in person, by phone); if they match: chat verify {} --yes",
        r.peer,
        r.peer
    );
    Ok(ExitCode::SUCCESS)
}

/// Both safety numbers, aligned.
fn safety_numbers(peer: &str, theirs: &str, ours: &str) -> Result<(), Failure> {
    let width = peer.len().max(4);
    out!("  {peer:<width$}  safety number: {theirs}");
    out!("  {:<width$}  safety number: {ours}", "you");
    Ok(())
}

/// `chat verify PEER [--yes]`: both safety numbers; with --yes, PEER is
/// marked verified.
pub(crate) async fn verify(
    client: &mut Client,
    peer: String,
    yes: bool,
) -> Result<ExitCode, Failure> {
    let r = client
        .verify(VerifyRequest { peer, confirm: yes })
        .await
        .map_err(status_text)?
        .into_inner();
    safety_numbers(&r.peer, &r.fingerprint, &r.local_fingerprint)?;
    if yes {
        out!(
            "{} is marked verified: `chat connections` shows it while {}'s identity stays the same",
            r.peer,
            r.peer
        );
    } else if r.verified {
        out!("{} is verified (you compared these numbers before)", r.peer);
    } else {
        out!(
            "Compare them with {} over another channel (in person, by phone); if they match: chat verify {} --yes",
            r.peer,
            r.peer
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `chat stop`: your peer deregisters and exits; you stay a member.
pub(crate) async fn stop(client: &mut Client) -> Result<ExitCode, Failure> {
    client
        .leave(ControlLeaveRequest::default())
        .await
        .map_err(status_text)?;
    out!(
        "stopped: your peer left Discovery and is shutting down; you stay a member (what is sent meanwhile waits for you; start peer-svc again to rejoin)"
    );
    Ok(ExitCode::SUCCESS)
}

/// `chat leave PEER`: drop one peer; `chat leave --yes`: leave the network
/// for good.
pub(crate) async fn leave(
    client: &mut Client,
    peer: Option<String>,
    yes: bool,
) -> Result<ExitCode, Failure> {
    let Some(named) = peer else {
        if !yes {
            note!(
                "`chat leave` leaves the network for good: every member records it, nothing more reaches you, and this data dir cannot rejoin (a new invitation and a new data dir can). To only stop your peer (you stay a member), run `chat stop`. To leave for good, run `chat leave --yes`."
            );
            return Ok(ExitCode::from(2));
        }
        let r = client
            .leave(ControlLeaveRequest {
                peer: String::new(),
                network: true,
            })
            .await
            .map_err(status_text)?
            .into_inner();
        out!(
            "left the network for good; told now: {}; the others hear of it from them. Your peer is shutting down.",
            if r.told.is_empty() {
                "nobody online".to_owned()
            } else {
                r.told.join(", ")
            }
        );
        return Ok(ExitCode::SUCCESS);
    };
    if yes {
        note!("--yes is for leaving the network (without PEER); dropping {named} needs none");
    }
    client
        .leave(ControlLeaveRequest {
            peer: named.clone(),
            network: false,
        })
        .await
        .map_err(status_text)?;
    out!(
        "dropped {named}: nothing more is sent to it, and what was queued for it is discarded \
         (`chat handshake {named}` takes it back)"
    );
    Ok(ExitCode::SUCCESS)
}

/// `chat trust PEER`: accept and pin its current key.
pub(crate) async fn trust(client: &mut Client, peer: String) -> Result<ExitCode, Failure> {
    let r = client
        .trust(TrustRequest { peer })
        .await
        .map_err(status_text)?
        .into_inner();
    out!("trusted {}: key {} is now pinned", r.peer, r.fingerprint);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn invite(
    client: &mut Client,
    name: String,
    all_history: bool,
    key: Option<String>,
) -> Result<ExitCode, Failure> {
    let bound = key.is_some();
    let r = client
        .invite(chat_proto::v1::InviteRequest {
            name: name.clone(),
            all_history,
            identity_key: key.unwrap_or_default(),
        })
        .await
        .map_err(status_text)?
        .into_inner();
    // The token alone on stdout, for `$(chat invite NAME)`; the rest on stderr.
    out!("{}", r.token);
    if bound {
        note!(
            "an invitation for {name} to network {}, bound to the identity key given: only that identity can join with it, so it holds no secret; they start: CHAT_JOIN=TOKEN peer-svc --name {name} --data-dir DIR (the data dir `chat key` read)",
            r.network
        );
    } else {
        note!(
            "an invitation for {name} to network {}: pass it privately (whoever holds it can join as {name}; `chat invite {name} --key KEY` binds it to their identity key instead); they start: CHAT_JOIN=TOKEN peer-svc --name {name} ... (the environment, not --join, which other local users can read in ps)",
            r.network
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `chat key`: this data dir's identity key (made if there is none yet),
/// to give to the member who invites you (`chat invite NAME --key KEY`).
/// Needs no running peer.
pub(crate) fn key(data_dir: &std::path::Path) -> Result<ExitCode, Failure> {
    peer_svc::identity::ensure_data_dir(data_dir).map_err(|e| e.to_string())?;
    let identity =
        peer_svc::identity::load_or_create_signing_key(data_dir).map_err(|e| e.to_string())?;
    let public = identity.verifying_key().to_bytes();
    // The key alone on stdout, for `$(chat key)`; the rest on stderr.
    out!("{}", hex::encode(public));
    note!(
        "your identity key (safety number {}): give it to the member who invites you, who runs `chat invite NAME --key KEY`; the token they send back works only for this data dir",
        chat_proto::keys::fingerprint(&public)
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn remove(
    client: &mut Client,
    name: String,
    key: Option<String>,
) -> Result<ExitCode, Failure> {
    let r = client
        .remove(chat_proto::v1::RemoveRequest {
            name: name.clone(),
            fingerprint: key.unwrap_or_default(),
        })
        .await
        .map_err(status_text)?
        .into_inner();
    let which = if r.fingerprint.is_empty() {
        " (an invitation nobody used)".to_owned()
    } else {
        format!(" (safety number {})", r.fingerprint)
    };
    out!(
        "removed {name}{which} from the network; told now: {}; the others hear at their next handshake",
        if r.told.is_empty() {
            "nobody".to_owned()
        } else {
            r.told.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn session_name(state: SessionState) -> &'static str {
    match state {
        SessionState::Established => "established",
        SessionState::None | SessionState::Unspecified => "none",
        SessionState::KeyChanged => "KEY CHANGED",
        SessionState::Dropped => "dropped",
        SessionState::Offline => "offline",
        SessionState::NotAMember => "NOT A MEMBER",
        SessionState::Removed => "removed",
    }
}

fn message_json(m: &ChatMessage) -> serde_json::Value {
    let sent_at = m
        .sent_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    serde_json::json!({
        "id": m.id, "sender": m.sender, "sender_fingerprint": m.sender_fingerprint,
        "sent_at": sent_at, "hlc": m.hlc, "text": m.text,
    })
}

/// "1 message", "2 messages".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// RFC 3339, a date (YYYY-MM-DD, from its start in local time), or an age
/// such as 90s, 10m, 2h, 1d.
pub(crate) fn parse_since(text: &str) -> Result<prost_types::Timestamp, String> {
    let at = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&chrono::Utc)
    } else if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        use chrono::TimeZone;
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        chrono::Local
            .from_local_datetime(&midnight)
            .earliest()
            .ok_or_else(|| format!("--since {text:?}: no such local time"))?
            .with_timezone(&chrono::Utc)
    } else {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (n, unit) = text.split_at(split);
        let n: i64 = n.parse().map_err(|_| {
            format!("--since {text:?}: use a date (2026-12-05), RFC 3339, or an age like 10m")
        })?;
        let seconds = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86400,
            _ => {
                return Err(format!(
                    "--since {text:?}: an age's unit is s, m, h or d (or give a date: 2026-12-05)"
                ));
            }
        };
        chrono::Utc::now() - chrono::Duration::seconds(seconds)
    };
    Ok(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    })
}
