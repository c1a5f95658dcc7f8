//! `chat`: the owner's CLI for their own peer, over the peer's Control socket.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use chat_proto::v1::{
    ChatMessage, ConnectionsRequest, ControlLeaveRequest, HandshakeRequest, HistoryRequest,
    RefreshConnectionsRequest, SendRequest, SubscribeRequest, TrustRequest,
    connection::SessionState, control_client::ControlClient, delivery::Status as DeliveryStatus,
};
use clap::{Parser, Subcommand};
use peer_svc::console;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

/// Drive your own p2p-chat peer.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Your peer's data dir (where peer-svc keeps its key and control socket).
    #[arg(long, env = "CHAT_DATA_DIR", global = true, default_value = ".")]
    data_dir: PathBuf,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Send a message to every connected peer (end-to-end encrypted).
    Send {
        /// The message text.
        #[arg(required_unless_present = "stdin")]
        text: Option<String>,
        /// An id of your own: sending again with the same id never duplicates.
        #[arg(long, conflicts_with = "stdin")]
        id: Option<String>,
        /// Send each line of standard input as a message, in order, over one
        /// stream (bulk sending); prints a summary.
        #[arg(long, conflicts_with = "text")]
        stdin: bool,
    },
    /// Print every message seen, oldest first.
    History {
        /// Only the newest N messages.
        #[arg(long)]
        limit: Option<u32>,
        /// Only messages since TIME: RFC 3339 (2026-11-25T12:00:00Z) or an age (10m, 2h, 1d).
        #[arg(long)]
        since: Option<String>,
        /// Only messages from PEER.
        #[arg(long)]
        from: Option<String>,
        /// Only messages containing TEXT.
        #[arg(long)]
        grep: Option<String>,
        /// One JSON object per line, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List the peers you know, with address, fingerprint and session state.
    Connections {
        /// JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Reload the peer list from Discovery; with PEERs, handshake with them again.
    Refresh {
        /// Peers to handshake with again.
        peers: Vec<String>,
    },
    /// Run the key exchange with PEER now and print both fingerprints to compare.
    Handshake {
        /// The peer.
        peer: String,
    },
    /// Leave the network (your peer deregisters and exits), or with PEER stop sending to it.
    Leave {
        /// The peer to drop; none = leave yourself.
        peer: Option<String>,
    },
    /// Accept PEER's new key after comparing its fingerprint out of band.
    Trust {
        /// The peer.
        peer: String,
    },
    /// The live console: incoming messages print as they arrive; typed lines are sent.
    Attach,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("chat: {message}");
            ExitCode::FAILURE
        }
    }
}

fn status_text(s: tonic::Status) -> String {
    format!("{} ({:?})", s.message(), s.code())
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let mut client = peer_svc::control_client::connect(&cli.data_dir)
        .await
        .map_err(|e| e.to_string())?;
    match cli.verb {
        Verb::Send {
            text: Some(text),
            id,
            stdin: false,
        } => send(&mut client, text, id.unwrap_or_default()).await,
        Verb::Send { .. } => send_lines(&mut client).await,
        Verb::History {
            limit,
            since,
            from,
            grep,
            json,
        } => {
            let since = since.map(|s| parse_since(&s)).transpose()?;
            let mut request = HistoryRequest {
                limit: limit.unwrap_or(0),
                since,
                from: from.unwrap_or_default(),
                grep: grep.unwrap_or_default(),
                cursor: String::new(),
            };
            if !json {
                println!("The history");
            }
            loop {
                let page = client
                    .history(request.clone())
                    .await
                    .map_err(status_text)?
                    .into_inner();
                for m in &page.messages {
                    if json {
                        println!("{}", message_json(m));
                    } else {
                        println!("{}", console::history_line(m));
                    }
                }
                if page.next_cursor.is_empty() {
                    break;
                }
                request.cursor = page.next_cursor;
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Connections { json } => {
            let list = client
                .connections(ConnectionsRequest {})
                .await
                .map_err(status_text)?
                .into_inner()
                .connections;
            if json {
                let items: Vec<_> = list
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name, "address": c.address,
                            "fingerprint": c.fingerprint, "session": session_name(c.session()),
                            "queued": c.queued,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else if list.is_empty() {
                println!("no other peers are connected");
            } else {
                println!(
                    "{:<16} {:<22} {:<40} SESSION",
                    "NAME", "ADDRESS", "FINGERPRINT"
                );
                for c in &list {
                    println!(
                        "{:<16} {:<22} {:<40} {}",
                        c.name,
                        c.address,
                        c.fingerprint,
                        session_name(c.session())
                    );
                    if c.session() == SessionState::KeyChanged {
                        println!(
                            "  WARNING: {}'s key changed; nothing is sent to it until you compare fingerprints and run `chat trust {}`",
                            c.name, c.name
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Refresh { peers } => {
            let list = client
                .refresh_connections(RefreshConnectionsRequest { peers })
                .await
                .map_err(status_text)?
                .into_inner()
                .connections;
            let names: Vec<_> = list.iter().map(|c| c.name.as_str()).collect();
            println!(
                "connections: {}",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Handshake { peer } => {
            let r = client
                .handshake(HandshakeRequest { peer })
                .await
                .map_err(status_text)?
                .into_inner();
            println!(
                "handshake with {} done in {:.2} ms",
                r.peer,
                r.elapsed_micros as f64 / 1000.0
            );
            println!("  {:<6} fingerprint: {}", r.peer, r.fingerprint);
            println!("  {:<6} fingerprint: {}", "your", r.local_fingerprint);
            println!(
                "Compare them with {} over another channel (in person, by phone).",
                r.peer
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Leave { peer } => {
            let named = peer.clone().unwrap_or_default();
            client
                .leave(ControlLeaveRequest {
                    peer: named.clone(),
                })
                .await
                .map_err(status_text)?;
            if named.is_empty() {
                println!("left the network; your peer is shutting down");
            } else {
                println!("dropped {named}: nothing more is sent to it");
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Trust { peer } => {
            let r = client
                .trust(TrustRequest { peer })
                .await
                .map_err(status_text)?
                .into_inner();
            println!("trusted {}: key {} is now pinned", r.peer, r.fingerprint);
            Ok(ExitCode::SUCCESS)
        }
        Verb::Attach => attach(client).await,
    }
}

async fn send(
    client: &mut ControlClient<Channel>,
    text: String,
    id: String,
) -> Result<ExitCode, String> {
    let r = client
        .send(SendRequest { text, id })
        .await
        .map_err(status_text)?
        .into_inner();
    println!("sent {}", r.id);
    if r.deliveries.is_empty() {
        println!("  (no other peers are connected; the message is in your history)");
    }
    for d in &r.deliveries {
        match d.status() {
            DeliveryStatus::Delivered => println!("  {:<16} delivered", d.peer),
            other => println!(
                "  {:<16} {}: {}",
                d.peer,
                format!("{other:?}").to_lowercase(),
                d.error
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `chat send --stdin`: every non-empty line of stdin is one message, sent
/// in order over `Control/SendStream`.
async fn send_lines(client: &mut ControlClient<Channel>) -> Result<ExitCode, String> {
    use tokio::io::AsyncBufReadExt;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let reader = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut read = 0usize;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.is_empty() {
                continue;
            }
            read += 1;
            let request = SendRequest {
                text: line,
                id: String::new(),
            };
            if tx.send(request).await.is_err() {
                break;
            }
        }
        read
    });
    let mut answers = client
        .send_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status_text)?
        .into_inner();
    let (mut sent, mut failed) = (0usize, 0usize);
    // Per peer: delivered, queued, failed or refused.
    let mut per_peer: std::collections::BTreeMap<String, [usize; 4]> = Default::default();
    let mut line = 0usize;
    while let Some(answer) = answers.message().await.map_err(status_text)? {
        line += 1;
        match answer.response {
            Some(r) if answer.code == 0 => {
                sent += 1;
                for d in r.deliveries {
                    let slot = match d.status() {
                        DeliveryStatus::Delivered => 0,
                        DeliveryStatus::Queued => 1,
                        DeliveryStatus::Refused => 3,
                        _ => 2,
                    };
                    per_peer.entry(d.peer).or_default()[slot] += 1;
                }
            }
            _ => {
                failed += 1;
                eprintln!("message {line} not sent: {}", answer.error);
            }
        }
    }
    let read = reader.await.unwrap_or(0);
    println!("sent {sent} of {read} messages");
    for (peer, [delivered, queued, failed, refused]) in &per_peer {
        println!(
            "  {peer:<16} delivered {delivered}, queued {queued}, failed {failed}, refused {refused}"
        );
    }
    Ok(if failed == 0 && sent == read {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn attach(mut client: ControlClient<Channel>) -> Result<ExitCode, String> {
    let mut incoming = client
        .subscribe(SubscribeRequest {})
        .await
        .map_err(status_text)?
        .into_inner();
    eprintln!(
        "attached: incoming messages print here; type a line and press Enter to send (Ctrl-D to detach)"
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            message = incoming.message() => match message {
                Ok(Some(m)) => if let Some(m) = m.message { println!("{}", console::live_line(&m)) },
                Ok(None) => { eprintln!("the peer closed the stream"); return Ok(ExitCode::SUCCESS) }
                Err(s) => return Err(status_text(s)),
            },
            line = lines.next_line() => match line {
                Ok(Some(text)) if text.trim().is_empty() => {}
                Ok(Some(text)) => {
                    let r = client.send(SendRequest { text, id: String::new() }).await.map_err(status_text)?.into_inner();
                    let failed: Vec<_> = r.deliveries.iter().filter(|d| d.status() != DeliveryStatus::Delivered).map(|d| d.peer.as_str()).collect();
                    if !failed.is_empty() {
                        eprintln!("(not delivered to: {})", failed.join(", "));
                    }
                }
                Ok(None) => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(format!("stdin: {e}")),
            },
        }
    }
}

fn session_name(state: SessionState) -> &'static str {
    match state {
        SessionState::Established => "established",
        SessionState::None | SessionState::Unspecified => "none",
        SessionState::KeyChanged => "KEY CHANGED",
        SessionState::Dropped => "dropped",
        SessionState::Offline => "offline",
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

/// RFC 3339, or an age such as 90s, 10m, 2h, 1d.
fn parse_since(text: &str) -> Result<prost_types::Timestamp, String> {
    let at = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&chrono::Utc)
    } else {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (n, unit) = text.split_at(split);
        let n: i64 = n
            .parse()
            .map_err(|_| format!("--since {text:?}: use RFC 3339 or an age like 10m"))?;
        let seconds = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86400,
            _ => return Err(format!("--since {text:?}: unit must be s, m, h or d")),
        };
        chrono::Utc::now() - chrono::Duration::seconds(seconds)
    };
    Ok(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    })
}
