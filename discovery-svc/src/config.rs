//! Command-line and environment configuration of `discovery-svc`, and every
//! default it starts from. The bottom layer: it uses no other module.

use std::{
    io::Write,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use chat_noise::StaticKeypair;

use clap::Parser;

/// Default lease TTL: short enough that a crashed peer disappears within
/// seconds, long enough that a keepalive every third of it survives hiccups.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Default events a watcher may fall behind by before it is dropped: a
/// burst of joins from a whole network starting at once fits with room to spare.
pub const DEFAULT_WATCH_LAG_LIMIT: usize = 4096;

/// Default most concurrent `Watch` streams: each holds a backlog cursor.
pub const DEFAULT_MAX_WATCHERS: usize = 1024;

/// Default most concurrent anonymous `Watch` streams from one address.
pub const DEFAULT_MAX_WATCHERS_PER_SOURCE: usize = 256;

/// Default most live members: every list, snapshot and fan-out is bounded by it.
pub const DEFAULT_MAX_MEMBERS: usize = 10_000;

/// Default most live members registered from one source address.
pub const DEFAULT_MAX_MEMBERS_PER_SOURCE: usize = 1_000;

/// The caps on live members: no flood of registrations can grow the
/// registry (and every list and watcher snapshot) past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Most live members in total.
    pub members: usize,
    /// Most live members registered from one source address.
    pub per_source: usize,
}

impl Caps {
    /// No caps (tests of other rules).
    pub const NONE: Caps = Caps {
        members: usize::MAX,
        per_source: usize::MAX,
    };
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            members: DEFAULT_MAX_MEMBERS,
            per_source: DEFAULT_MAX_MEMBERS_PER_SOURCE,
        }
    }
}

/// Default etcd key prefix.
pub const DEFAULT_ETCD_PREFIX: &str = "/p2p-chat/v1/discovery/";

/// `discovery-svc`: tells p2p-chat peers who is online.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "DISCOVERY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Lease time-to-live, e.g. 10s, 500ms, 2m.
    #[arg(long, env = "DISCOVERY_TTL", default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Where the registry lives: `memory` (this process only) or `etcd`
    /// (shared by every replica on the same etcd cluster).
    #[arg(long, env = "DISCOVERY_STORE", value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,
    /// etcd client URLs, comma-separated (with `--store etcd`).
    #[arg(
        long,
        env = "DISCOVERY_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of this registry in etcd; replicas of one service share it.
    #[arg(long, env = "DISCOVERY_ETCD_PREFIX", default_value = DEFAULT_ETCD_PREFIX)]
    pub etcd_prefix: String,
    /// File holding Discovery's static X25519 private key (created 0600 if
    /// absent), so a restart keeps the key that registration proofs are made
    /// to. Replicas behind one address share one file. Without it, a key is
    /// made at every start (peers ask for it before each Register).
    #[arg(long, env = "DISCOVERY_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Most concurrent anonymous Watch streams (members watching with
    /// their lease have slots of their own).
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "DISCOVERY_MAX_WATCHERS", default_value_t = DEFAULT_MAX_WATCHERS)]
    pub max_watchers: usize,
    /// Most concurrent anonymous Watch streams from one IP address.
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "DISCOVERY_MAX_WATCHERS_PER_SOURCE", default_value_t = DEFAULT_MAX_WATCHERS_PER_SOURCE)]
    pub max_watchers_per_source: usize,
    /// Most live members; a Register of a new name past it is refused
    /// (RESOURCE_EXHAUSTED) and inserts nothing.
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "DISCOVERY_MAX_MEMBERS", default_value_t = DEFAULT_MAX_MEMBERS)]
    pub max_members: usize,
    /// Most live members registered from one source IP address.
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "DISCOVERY_MAX_MEMBERS_PER_SOURCE", default_value_t = DEFAULT_MAX_MEMBERS_PER_SOURCE)]
    pub max_members_per_source: usize,
    /// Events a watcher may fall behind by before it is told to watch again.
    #[arg(long, value_parser = chat_proto::process::at_least_one::<usize>, allow_negative_numbers = true, env = "DISCOVERY_WATCH_LAG_LIMIT", default_value_t = DEFAULT_WATCH_LAG_LIMIT)]
    pub watch_lag_limit: usize,
}

/// The `--store` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// In this process's memory: one instance, no dependencies.
    Memory,
    /// In etcd: several replicas share one registry.
    Etcd,
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process's memory.
    Memory,
    /// In etcd at `endpoints`, under the key prefix `prefix`.
    Etcd {
        /// Client URLs of the etcd cluster.
        endpoints: Vec<String>,
        /// Key prefix; replicas of one service share it.
        prefix: String,
    },
}

impl std::fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Memory => f.write_str("memory"),
            StoreConfig::Etcd { endpoints, prefix } => {
                write!(f, "etcd {} prefix {prefix}", endpoints.join(","))
            }
        }
    }
}

impl Cli {
    /// The service configuration these flags describe (reading or creating
    /// the key file).
    pub fn config(&self) -> std::io::Result<Config> {
        let store = match self.store {
            StoreKind::Memory => StoreConfig::Memory,
            StoreKind::Etcd => StoreConfig::Etcd {
                endpoints: self.etcd_endpoints.clone(),
                prefix: self.etcd_prefix.clone(),
            },
        };
        let key = match &self.key_file {
            Some(path) => load_or_create_key(path)?,
            None => StaticKeypair::generate(),
        };
        Ok(Config {
            ttl: self.ttl,
            watch_lag_limit: self.watch_lag_limit.max(1),
            max_watchers: self.max_watchers,
            max_watchers_per_source: self.max_watchers_per_source,
            caps: Caps {
                members: self.max_members,
                per_source: self.max_members_per_source,
            },
            store,
            key,
        })
    }
}

/// The key in `path` (32 raw bytes), or a new one written there 0600.
pub fn load_or_create_key(path: &Path) -> std::io::Result<StaticKeypair> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                std::io::Error::other(format!(
                    "{}: a Discovery key file holds 32 bytes, not {}",
                    path.display(),
                    bytes.len()
                ))
            })?;
            Ok(StaticKeypair::from_secret_bytes(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = StaticKeypair::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(key.secret_bytes().as_slice())?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    }
}

/// What the service needs once the listener is bound.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lease time-to-live.
    pub ttl: Duration,
    /// Events a watcher may fall behind by before it is dropped.
    pub watch_lag_limit: usize,
    /// Most concurrent anonymous `Watch` streams.
    pub max_watchers: usize,
    /// Most concurrent anonymous `Watch` streams from one address.
    pub max_watchers_per_source: usize,
    /// The caps on live members.
    pub caps: Caps,
    /// Where the registry lives.
    pub store: StoreConfig,
    /// Discovery's static key, which registration proofs are made to.
    pub key: StaticKeypair,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            watch_lag_limit: DEFAULT_WATCH_LAG_LIMIT,
            max_watchers: DEFAULT_MAX_WATCHERS,
            max_watchers_per_source: DEFAULT_MAX_WATCHERS_PER_SOURCE,
            caps: Caps::default(),
            store: StoreConfig::Memory,
            key: StaticKeypair::generate(),
        }
    }
}

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds; at least 1 s,
/// since leases are reported in whole seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    chat_proto::process::parse_duration_in(
        text,
        &[
            ("ms", Duration::from_millis(1)),
            ("s", Duration::from_secs(1)),
            ("m", Duration::from_secs(60)),
        ],
        "10s, 500ms or 2m",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discovery.key");
        let made = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_or_create_key(&path).unwrap().public_key(),
            made.public_key()
        );
        std::fs::write(&path, b"short").unwrap();
        let err = load_or_create_key(&path).unwrap_err().to_string();
        assert!(err.contains("holds 32 bytes, not 5"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "10h", "-1s", "0s", "999ms", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
