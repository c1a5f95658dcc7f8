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
#[command(name = "chat", version, about)]
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

/// Why a command ended early.
#[derive(Debug)]
enum Failure {
    /// What went wrong, for the user.
    Message(String),
    /// Stdout could not be written: a reader that went away (`chat history
    /// | head`) ends the command quietly; any other error is reported.
    Stdout(std::io::Error),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::Message(message)
    }
}

/// Prints one line on stdout, ending the command (see [`Failure::Stdout`]) if
/// it cannot be written; `println!` would panic instead.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            return Err(Failure::Stdout(e));
        }
    }};
}

/// Prints one line on stderr; a closed stderr is no reason to stop.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(Failure::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Stdout(e)) => {
            note!("chat: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Message(message)) => {
            note!("chat: {message}");
            ExitCode::FAILURE
        }
    }
}

fn status_text(s: tonic::Status) -> String {
    format!("{} ({:?})", s.message(), s.code())
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
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
                out!("The history");
            }
            loop {
                let page = client
                    .history(request.clone())
                    .await
                    .map_err(status_text)?
                    .into_inner();
                for m in &page.messages {
                    if json {
                        out!("{}", message_json(m));
                    } else {
                        out!("{}", console::history_line(m));
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
                out!("{}", serde_json::Value::Array(items));
            } else if list.is_empty() {
                out!("no other peers are connected");
            } else {
                out!(
                    "{:<16} {:<22} {:<40} {:<12} QUEUED",
                    "NAME",
                    "ADDRESS",
                    "FINGERPRINT",
                    "SESSION"
                );
                for c in &list {
                    out!(
                        "{:<16} {:<22} {:<40} {:<12} {}",
                        c.name,
                        c.address,
                        c.fingerprint,
                        session_name(c.session()),
                        c.queued
                    );
                    if c.session() == SessionState::KeyChanged {
                        out!(
                            "  WARNING: {}'s key changed; nothing is sent to it until you compare fingerprints and run `chat trust {}`",
                            c.name,
                            c.name
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
        Verb::Handshake { peer } => {
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
            out!("  {:<6} fingerprint: {}", r.peer, r.fingerprint);
            out!("  {:<6} fingerprint: {}", "your", r.local_fingerprint);
            out!(
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
                out!("left the network; your peer is shutting down");
            } else {
                out!(
                    "dropped {named}: nothing more is sent to it, and what was queued for it is discarded \
                     (`chat handshake {named}` takes it back)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Trust { peer } => {
            let r = client
                .trust(TrustRequest { peer })
                .await
                .map_err(status_text)?
                .into_inner();
            out!("trusted {}: key {} is now pinned", r.peer, r.fingerprint);
            Ok(ExitCode::SUCCESS)
        }
        Verb::Attach => attach(client).await,
    }
}

async fn send(
    client: &mut ControlClient<Channel>,
    text: String,
    id: String,
) -> Result<ExitCode, Failure> {
    let r = client
        .send(SendRequest { text, id })
        .await
        .map_err(status_text)?
        .into_inner();
    out!("sent {}", r.id);
    if r.deliveries.is_empty() {
        out!("  (no other peers are connected; the message is in your history)");
    }
    for d in &r.deliveries {
        match d.status() {
            DeliveryStatus::Delivered => out!("  {:<16} delivered", d.peer),
            other => out!(
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
async fn send_lines(client: &mut ControlClient<Channel>) -> Result<ExitCode, Failure> {
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
    // The stream ends early when the peer refuses a request it cannot read
    // (too large, say); the messages before it were sent and are counted.
    let mut stopped = None;
    loop {
        let answer = match answers.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) => break,
            Err(s) => {
                stopped = Some(s);
                break;
            }
        };
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
                note!("message {line} not sent: {}", answer.error);
            }
        }
    }
    if let Some(s) = &stopped {
        reader.abort();
        note!(
            "message {} not sent, and none after it: {}",
            line + 1,
            status_text(s.clone())
        );
        out!("sent {sent} messages, then stopped at message {}", line + 1);
    } else {
        let read = reader.await.unwrap_or(0);
        out!("sent {sent} of {read} messages");
        if sent != read {
            failed += 1;
        }
    }
    for (peer, [delivered, queued, failed, refused]) in &per_peer {
        out!(
            "  {peer:<16} delivered {delivered}, queued {queued}, failed {failed}, refused {refused}"
        );
    }
    Ok(if failed == 0 && stopped.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn attach(mut client: ControlClient<Channel>) -> Result<ExitCode, Failure> {
    let mut incoming = client
        .subscribe(SubscribeRequest {})
        .await
        .map_err(status_text)?
        .into_inner();
    note!(
        "attached: incoming messages print here; type a line and press Enter to send (Ctrl-D to detach)"
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            message = incoming.message() => match message {
                Ok(Some(m)) => if let Some(m) = m.message { out!("{}", console::live_line(&m)) },
                Ok(None) => { note!("the peer closed the stream"); return Ok(ExitCode::SUCCESS) }
                Err(s) => return Err(status_text(s).into()),
            },
            line = lines.next_line() => match line {
                Ok(Some(text)) if text.trim().is_empty() => {}
                Ok(Some(text)) => {
                    let r = client.send(SendRequest { text, id: String::new() }).await.map_err(status_text)?.into_inner();
                    let failed: Vec<_> = r.deliveries.iter().filter(|d| d.status() != DeliveryStatus::Delivered).map(|d| d.peer.as_str()).collect();
                    if !failed.is_empty() {
                        note!("(not delivered to: {})", failed.join(", "));
                    }
                }
                Ok(None) => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(format!("stdin: {e}").into()),
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
