//! Configuration of `peer-svc`: flags with environment twins (DESIGN §7).

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

/// Default largest message text: the original broke at 118 bytes; 64 KiB is
/// a long chat message and still one small gRPC frame.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// `peer-svc`: one participant of p2p-chat.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Cli {
    /// This peer's name, unique on the network (1-64 printable characters, no spaces).
    #[arg(long, env = "CHAT_NAME")]
    pub name: String,
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
    #[arg(long, value_parser = chat_proto::process::at_least_one::<u32>, allow_negative_numbers = true, env = "CHAT_HANDSHAKES_PER_SEC", default_value_t = crate::rate::DEFAULT_HANDSHAKES_PER_SEC)]
    pub handshakes_per_sec: u32,
    /// Envelopes accepted per second on one session (bursts of twice that).
    #[arg(long, value_parser = chat_proto::process::at_least_one::<u32>, allow_negative_numbers = true, env = "CHAT_DELIVERIES_PER_SEC", default_value_t = crate::rate::DEFAULT_DELIVERIES_PER_SEC)]
    pub deliveries_per_sec: u32,
    /// Most messages queued per unreachable peer; past it the oldest are dropped (and reported).
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "CHAT_OUTBOX_LIMIT", default_value_t = crate::outbox::DEFAULT_OUTBOX_LIMIT)]
    pub outbox_limit: usize,
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
    /// Handshakes per second per remote address.
    pub handshakes_per_sec: u32,
    /// Envelopes per second per session.
    pub deliveries_per_sec: u32,
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
            outbox_limit: crate::outbox::DEFAULT_OUTBOX_LIMIT,
            handshakes_per_sec: crate::rate::DEFAULT_HANDSHAKES_PER_SEC,
            deliveries_per_sec: crate::rate::DEFAULT_DELIVERIES_PER_SEC,
        }
    }
}

impl From<Cli> for Config {
    fn from(cli: Cli) -> Self {
        Self {
            name: cli.name,
            advertise: cli.advertise,
            discovery: cli.discovery,
            data_dir: cli.data_dir,
            max_message_bytes: cli.max_message_bytes,
            print_messages: true,
            share_history: cli.share_history,
            outbox_limit: cli.outbox_limit,
            handshakes_per_sec: cli.handshakes_per_sec,
            deliveries_per_sec: cli.deliveries_per_sec,
        }
    }
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
