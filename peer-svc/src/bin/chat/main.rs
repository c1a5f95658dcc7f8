//! `chat`: the owner's CLI for their own peer, over the peer's Control socket.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use chat_proto::v1::{
    ChatMessage, ConnectionsRequest, ControlLeaveRequest, HandshakeRequest, HistoryRequest,
    RefreshConnectionsRequest, SendRequest, SeqRange, SubscribeRequest, TrustRequest,
    VerifyHistoryRequest, VerifyRequest, connection::SessionState, control_client::ControlClient,
    delivery::Status as DeliveryStatus,
};
use clap::{Parser, Subcommand};
use peer_svc::console;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

/// The Control client every verb drives.
type Client = ControlClient<Channel>;

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
    /// Send a message to every member (end-to-end encrypted; queued for those offline).
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
        /// Check the stored history instead: every signature, and each
        /// author's numbering (gaps: messages dropped by a relay or not
        /// received yet; broken links; forks). Exits 1 if anything is wrong.
        #[arg(long, conflicts_with_all = ["limit", "since", "from", "grep"])]
        verify: bool,
        /// One JSON object per line, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List the peers you know, with address, fingerprint and session state.
    Connections {
        /// JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// Also names that are not members: listed by Discovery without an
        /// admission, or removed from the network.
        #[arg(long)]
        all: bool,
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
    /// Stop your peer: it deregisters and exits; you stay a member, what is sent meanwhile waits for you, and starting it again rejoins.
    Stop,
    /// With PEER: stop sending to PEER. Without: leave the network for good (with --yes): every member records it, and this data dir cannot rejoin (`chat stop` only stops your peer).
    Leave {
        /// The peer to drop; none = you leave the network for good.
        peer: Option<String>,
        /// Confirms leaving the network for good (without PEER).
        #[arg(long)]
        yes: bool,
    },
    /// Show PEER's safety number and yours to compare out of band; with --yes, mark PEER verified.
    Verify {
        /// The member.
        peer: String,
        /// The numbers were compared and match: mark PEER verified (until its identity changes).
        #[arg(long)]
        yes: bool,
    },
    /// Accept PEER's new key after comparing its fingerprint out of band.
    Trust {
        /// The peer.
        peer: String,
    },
    /// The live console: incoming messages print as they arrive; typed lines are sent.
    Attach,
    /// Invite NAME to your network: prints a token for `CHAT_JOIN=TOKEN peer-svc ...`.
    Invite {
        /// The name the newcomer joins as.
        name: String,
        /// Share all past history with it (default: only from now on).
        #[arg(long)]
        all_history: bool,
        /// Bind the invitation to the newcomer's identity key (what `chat key` printed on their side): only they can join with it, and the token holds no secret.
        #[arg(long, value_name = "IDENTITY_KEY")]
        key: Option<String>,
    },
    /// Print this data dir's identity key (made if there is none), to give to the member who invites you (`chat invite NAME --key KEY`). Needs no running peer.
    Key,
    /// Remove NAME from the network (the founder, or whoever admitted NAME).
    Remove {
        /// The member.
        name: String,
        /// Which identity, by safety number, when two have claimed the name.
        #[arg(long, value_name = "SAFETY_NUMBER")]
        key: Option<String>,
    },
    /// Print a Discovery RegisterRequest for the key in --data-dir, with its
    /// proof of possession made now (valid for a minute), as JSON for
    /// `grpcurl -d`. A running peer registers itself; this is for scripts.
    Register {
        /// Print the request (the only mode: nothing is sent).
        #[arg(long, required = true)]
        print: bool,
        /// The name to register.
        #[arg(long)]
        name: String,
        /// The address to register, HOST:PORT.
        #[arg(long)]
        address: String,
        /// Discovery, HOST:PORT or URL: the proof is made to its key.
        #[arg(long, env = "CHAT_DISCOVERY", default_value = "127.0.0.1:50051")]
        discovery: String,
    },
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

mod sending;
mod views;

use sending::{attach, send, send_lines};
use views::{
    connections, handshake, history, invite, leave, parse_since, refresh, remove, stop, trust,
    verify, verify_history,
};

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
    if let Verb::Register {
        name,
        address,
        discovery,
        ..
    } = &cli.verb
    {
        return register_print(&cli.data_dir, name, address, discovery).await;
    }
    if let Verb::Key = cli.verb {
        return views::key(&cli.data_dir);
    }
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
            verify: true, json, ..
        } => verify_history(&mut client, json).await,
        Verb::History {
            limit,
            since,
            from,
            grep,
            json,
            ..
        } => {
            let since = since.map(|s| parse_since(&s)).transpose()?;
            let request = HistoryRequest {
                limit: limit.unwrap_or(0),
                since,
                from: from.unwrap_or_default(),
                grep: grep.unwrap_or_default(),
                cursor: String::new(),
            };
            history(&mut client, request, json).await
        }
        Verb::Connections { json, all } => connections(&mut client, json, all).await,
        Verb::Refresh { peers } => refresh(&mut client, peers).await,
        Verb::Handshake { peer } => handshake(&mut client, peer).await,
        Verb::Stop => stop(&mut client).await,
        Verb::Leave { peer, yes } => leave(&mut client, peer, yes).await,
        Verb::Trust { peer } => trust(&mut client, peer).await,
        Verb::Verify { peer, yes } => verify(&mut client, peer, yes).await,
        Verb::Attach => attach(client).await,
        Verb::Invite {
            name,
            all_history,
            key,
        } => invite(&mut client, name, all_history, key).await,
        Verb::Key => unreachable!("handled before connecting"),
        Verb::Remove { name, key } => remove(&mut client, name, key).await,
        Verb::Register { .. } => unreachable!("handled before connecting"),
    }
}

/// `chat register --print`: asks Discovery for its key, proves the data
/// dir's key to it and prints the request as grpcurl's JSON.
async fn register_print(
    data_dir: &std::path::Path,
    name: &str,
    address: &str,
    discovery: &str,
) -> Result<ExitCode, Failure> {
    use base64::Engine;
    let url = peer_svc::discovery_client::discovery_url(discovery)?;
    peer_svc::identity::ensure_data_dir(data_dir).map_err(|e| e.to_string())?;
    let keypair = peer_svc::identity::load_or_create(data_dir).map_err(|e| e.to_string())?;
    let mut client = chat_proto::v1::discovery_client::DiscoveryClient::connect(url.clone())
        .await
        .map_err(|e| format!("cannot reach Discovery at {url}: {e}"))?;
    let info = client
        .info(chat_proto::v1::InfoRequest {})
        .await
        .map_err(|s| format!("Discovery/Info at {url}: {}", status_text(s)))?
        .into_inner();
    let request = chat_proto::registration::request(&keypair, &info, name, address)?;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let json = serde_json::json!({
        "name": request.name,
        "address": request.address,
        "public_key": b64(&request.public_key),
        "proof": b64(&request.proof),
    });
    out!("{json}");
    Ok(ExitCode::SUCCESS)
}
