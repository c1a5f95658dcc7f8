//! Configuration of `peer-svc`: flags with environment twins (DESIGN §7).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

/// Default largest message text: the original broke at 118 bytes; 64,000
/// bytes is a long chat message, and sealed it is one Noise transport
/// message (at most 65,535 bytes, see [`MAX_MESSAGE_BYTES_LIMIT`]).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64_000;

/// Default most messages queued per peer: a day of a busy chat.
pub const DEFAULT_OUTBOX_LIMIT: usize = 10_000;

/// Default most messages queued across all peers: a flood of peers that
/// never come back cannot grow the store without bound.
pub const DEFAULT_OUTBOX_TOTAL_LIMIT: usize = 200_000;

/// Default handshakes per second from one remote address, with a burst of
/// twice that: a whole network restarting at once still gets through, a
/// flood of forged initiations does not eat the CPU.
pub const DEFAULT_HANDSHAKES_PER_SEC: u32 = 200;

/// Default envelopes per second on one session (burst twice that): far above
/// what a person types, and above what a bulk sender on the delivery stream
/// achieves on a small machine, so only a runaway peer ever meets it.
pub const DEFAULT_DELIVERIES_PER_SEC: u32 = 200_000;

/// Room for everything sealed around the text (the `SealedMessage` and
/// `ChatMessage` framing, an id of at most 128 bytes, a sender name of at
/// most 64 characters, the fingerprint, the clocks) and the AEAD tag: the
/// largest is under 800 bytes (`envelope::tests` checks it).
pub const ENVELOPE_OVERHEAD_BYTES: usize = 1024;

/// The largest `--max-message-bytes`: the text plus the envelope overhead
/// fits one Noise transport message (65,535 bytes), so any Noise
/// implementation can open it. Longer texts are sent in parts.
pub const MAX_MESSAGE_BYTES_LIMIT: usize =
    chat_noise::MAX_TRANSPORT_MESSAGE_LEN - ENVELOPE_OVERHEAD_BYTES;

/// Longest client-supplied message id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// How far ahead of our clock a received message's clock may be: generous
/// for badly set clocks, small enough that nobody can push ours far ahead.
pub const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(60);

/// How far a message's `sent_at` may lie before its clock (`hlc`): an
/// honest author's `sent_at` is its wall clock when it stamped the message,
/// never after the clock's time and before it only when the author's wall
/// clock runs behind the network's (its author then states the clock's
/// time instead). `sent_at` after the clock, or further before it, is
/// refused: it is what a person sees as the message's time.
pub const MAX_SENT_AT_BEHIND: Duration = Duration::from_secs(3600);

/// Deadline of one Deliver call (and of a stream batch's ack): generous for
/// loopback or a LAN, short enough that a dead peer does not hold a `chat
/// send` for long.
pub const DELIVER_TIMEOUT: Duration = Duration::from_secs(3);

/// Deadline of one handshake round trip.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long to wait for a TCP connection to a peer or to Discovery.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Deadline of one call to Discovery.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// `peer-svc`: one participant of p2p-chat.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Cli {
    /// This peer's name, unique on the network (1-64 printable characters,
    /// no spaces). Needed on the first start only: a member's data dir
    /// holds the name it was admitted under.
    #[arg(long, env = "CHAT_NAME")]
    pub name: Option<String>,
    /// Address for the Peer service (port 0 picks a free port and registers the real one).
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The address other peers should dial, if not the bound one (host:port).
    #[arg(long, env = "CHAT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Discovery service URL, or several replicas' URLs comma-separated
    /// (the peer fails over between them).
    #[arg(long, env = "CHAT_DISCOVERY", default_value = "http://127.0.0.1:50051")]
    pub discovery: String,
    /// Data dir: identity key, known peers, control socket.
    #[arg(long, env = "CHAT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Largest message text in bytes.
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Let newcomers pull this peer's history (as in the original): true or false.
    #[arg(long, env = "CHAT_SHARE_HISTORY", default_value_t = true, action = clap::ArgAction::Set)]
    pub share_history: bool,
    /// Handshakes accepted per second from one remote address (bursts of twice that).
    #[arg(long, value_parser = chat_proto::process::at_least_one::<u32>, allow_negative_numbers = true, env = "CHAT_HANDSHAKES_PER_SEC", default_value_t = DEFAULT_HANDSHAKES_PER_SEC)]
    pub handshakes_per_sec: u32,
    /// Envelopes accepted per second on one session (bursts of twice that).
    #[arg(long, value_parser = chat_proto::process::at_least_one::<u32>, allow_negative_numbers = true, env = "CHAT_DELIVERIES_PER_SEC", default_value_t = DEFAULT_DELIVERIES_PER_SEC)]
    pub deliveries_per_sec: u32,
    /// Most messages queued per unreachable peer; past it the oldest are dropped (and reported).
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "CHAT_OUTBOX_LIMIT", default_value_t = DEFAULT_OUTBOX_LIMIT)]
    pub outbox_limit: usize,
    /// Most messages queued across all peers; past it the oldest queued for
    /// the peer with the longest queue are dropped (and reported).
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "CHAT_OUTBOX_TOTAL_LIMIT", default_value_t = DEFAULT_OUTBOX_TOTAL_LIMIT)]
    pub outbox_total_limit: usize,
    /// Forget a peer (its contact, cached entry and queued messages) once it
    /// has been offline this long: e.g. 7d, 12h, 30m, 10s.
    #[arg(long, env = "CHAT_FORGET_OFFLINE_AFTER", default_value = "7d", value_parser = parse_grace)]
    pub forget_offline_after: Duration,
    /// Found a new network with this peer as its first member (first start
    /// only; a member already is left as it is).
    #[arg(long, conflicts_with_all = ["join", "open"])]
    pub create_network: bool,
    /// Join the network of the invitation TOKEN (from a member's
    /// `chat invite NAME`; first start only: a member already keeps its network).
    #[arg(long, env = "CHAT_JOIN", value_name = "TOKEN", conflicts_with = "open")]
    pub join: Option<String>,
    /// No network: show no credential and ask for none (anyone who can reach
    /// this peer can chat with it). For experiments only.
    #[arg(long)]
    pub open: bool,
}

/// What a running peer needs once its listener is bound.
#[derive(Debug, Clone)]
pub struct Config {
    /// This peer's name.
    pub name: String,
    /// The address to register; `None` = the listener's address.
    pub advertise: Option<String>,
    /// Discovery service URL(s), comma-separated.
    pub discovery: String,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Largest message text in bytes.
    pub max_message_bytes: usize,
    /// Print received messages on stdout in the original's live format.
    pub print_messages: bool,
    /// Serve `Peer/History` to other peers.
    pub share_history: bool,
    /// Most messages queued per peer.
    pub outbox_limit: usize,
    /// Most messages queued across all peers.
    pub outbox_total_limit: usize,
    /// Handshakes per second per remote address.
    pub handshakes_per_sec: u32,
    /// Envelopes per second per session.
    pub deliveries_per_sec: u32,
    /// How this peer becomes (or stays) a member of a network.
    pub admission: Joining,
    /// How long a peer may stay offline before it is forgotten.
    pub forget_offline_after: Duration,
}

/// Default of `--forget-offline-after`: a week, so a laptop closed over a
/// long weekend still gets what was queued for it.
pub const DEFAULT_FORGET_OFFLINE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `7d`, `12h`, `30m`, `10s` (at least one second).
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    chat_proto::process::parse_duration_in(
        text,
        &[
            ("d", Duration::from_secs(86_400)),
            ("h", Duration::from_secs(3_600)),
            ("m", Duration::from_secs(60)),
            ("s", Duration::from_secs(1)),
        ],
        "7d, 12h, 30m or 10s",
    )
}

/// How a peer becomes a member of a network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Joining {
    /// It must be a member already (its data dir holds a credential).
    #[default]
    Member,
    /// Found a new network, unless a member already.
    CreateNetwork,
    /// Join with this invitation token, unless a member already.
    Join(String),
    /// No network at all (`--open`).
    Open,
}

impl Config {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(name: &str, discovery: &str, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            advertise: None,
            discovery: discovery.to_owned(),
            data_dir: data_dir.into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            print_messages: false,
            share_history: true,
            outbox_limit: DEFAULT_OUTBOX_LIMIT,
            outbox_total_limit: DEFAULT_OUTBOX_TOTAL_LIMIT,
            handshakes_per_sec: DEFAULT_HANDSHAKES_PER_SEC,
            deliveries_per_sec: DEFAULT_DELIVERIES_PER_SEC,
            admission: Joining::Member,
            forget_offline_after: DEFAULT_FORGET_OFFLINE_AFTER,
        }
    }
}

impl From<Cli> for Config {
    fn from(cli: Cli) -> Self {
        Self {
            name: cli.name.unwrap_or_default(),
            advertise: cli.advertise,
            discovery: cli.discovery,
            data_dir: cli.data_dir,
            max_message_bytes: cli.max_message_bytes,
            print_messages: true,
            share_history: cli.share_history,
            outbox_limit: cli.outbox_limit,
            outbox_total_limit: cli.outbox_total_limit,
            handshakes_per_sec: cli.handshakes_per_sec,
            deliveries_per_sec: cli.deliveries_per_sec,
            forget_offline_after: cli.forget_offline_after,
            admission: if cli.open {
                Joining::Open
            } else if let Some(token) = cli.join {
                Joining::Join(token)
            } else if cli.create_network {
                Joining::CreateNetwork
            } else {
                Joining::Member
            },
        }
    }
}

/// What a refusal of an oversized message adds to tonic's byte counts: the
/// text limit, and the flag that sets it.
pub fn oversize_hint(max_message_bytes: usize) -> String {
    format!(
        "a message text may be at most {max_message_bytes} bytes on this peer \
         (peer-svc --max-message-bytes, at most {MAX_MESSAGE_BYTES_LIMIT}); send it in parts"
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    fn parse(extra: &[&str]) -> Result<Cli, String> {
        let args = ["peer-svc", "--name", "a", "--data-dir", "d"];
        Cli::try_parse_from(args.iter().chain(extra)).map_err(|e| e.to_string())
    }

    #[test]
    fn limit_flags_refuse_zero_and_negative_numbers_by_name() {
        for flag in [
            "--max-message-bytes",
            "--handshakes-per-sec",
            "--deliveries-per-sec",
            "--outbox-limit",
        ] {
            for bad in ["0", "-1", "lots"] {
                let error = parse(&[flag, bad]).unwrap_err();
                assert!(
                    error.contains(flag) && error.contains("at least 1"),
                    "{flag} {bad}: {error}"
                );
            }
            assert!(parse(&[flag, "7"]).is_ok(), "{flag} 7");
        }
        assert_eq!(parse(&["--outbox-limit", "3"]).unwrap().outbox_limit, 3);
    }
}
