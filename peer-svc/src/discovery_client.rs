//! The Discovery client: the replicas this peer may use (`--discovery URL1,URL2`): one
//! lazily connected client each, one of them current. A call that fails
//! because the replica is unreachable or unresponsive moves on to the next
//! replica at once, so a dead replica costs one refused connection or one
//! deadline, not a lost lease.

use std::{
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
};

use chat_proto::v1::discovery_client::DiscoveryClient;
use tonic::{Code, Status, transport::Channel};
use tracing::warn;

/// HTTP/2 pings on an idle Discovery connection, and how long one may go
/// unanswered before the connection is dropped.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Clients of every Discovery replica, and which one is in use.
#[derive(Debug)]
pub struct Discovery {
    clients: Vec<(String, DiscoveryClient<Channel>)>,
    current: AtomicUsize,
}

/// True when `status` says the replica, not the request, is the problem.
pub fn replica_failed(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

impl Discovery {
    /// Clients for the comma-separated `urls`, connected on first use.
    pub fn new(urls: &str, connect_timeout: std::time::Duration) -> Result<Self, String> {
        let clients = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|given| {
                let url = discovery_url(given)?;
                let channel = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| format!("--discovery {given}: {e} (expected http://HOST:PORT)"))?
                    .connect_timeout(connect_timeout)
                    // A replica that vanishes without a reset (host down,
                    // partition) is noticed in seconds, not when TCP gives up:
                    // the Watch stream fails and the peer moves on.
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                Ok((url, DiscoveryClient::new(channel)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if clients.is_empty() {
            return Err("--discovery needs at least one URL".into());
        }
        Ok(Self {
            clients,
            current: AtomicUsize::new(0),
        })
    }

    /// The URL of the replica in use.
    pub fn current_url(&self) -> &str {
        &self.clients[self.current.load(Ordering::Relaxed) % self.clients.len()].0
    }

    /// Marks replica `index` as failed: if it is still the current one, the
    /// next one becomes current.
    pub fn failed(&self, index: usize) {
        let n = self.clients.len();
        if n > 1
            && self
                .current
                .compare_exchange(index, (index + 1) % n, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            warn!(
                failed = %self.clients[index].0,
                now = %self.clients[(index + 1) % n].0,
                "Discovery replica unreachable; switching"
            );
        }
    }

    /// Runs `call` on the current replica; while a replica fails, on the
    /// next, trying each once. Returns which replica answered, and its answer
    /// (or the last failure).
    pub async fn call<T, F, Fut>(&self, mut call: F) -> (usize, Result<T, Status>)
    where
        F: FnMut(DiscoveryClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let n = self.clients.len();
        let start = self.current.load(Ordering::SeqCst) % n;
        let mut last = (start, Err(Status::unavailable("no Discovery replica")));
        for step in 0..n {
            let index = (start + step) % n;
            match call(self.clients[index].1.clone()).await {
                Err(status) if replica_failed(&status) => {
                    self.failed(index);
                    last = (index, Err(status));
                }
                answer => return (index, answer),
            }
        }
        last
    }
}

/// A Discovery URL as given to `--discovery`: `HOST:PORT` means plain HTTP/2
/// (`http://HOST:PORT`, the way `grpcurl -plaintext HOST:PORT` reads it);
/// any scheme but http or https is refused, since nothing else could answer.
pub fn discovery_url(given: &str) -> Result<String, String> {
    match given.split_once("://") {
        None => Ok(format!("http://{given}")),
        Some(("http" | "https", _)) => Ok(given.to_owned()),
        Some((scheme, _)) => Err(format!(
            "--discovery {given}: unsupported scheme {scheme:?}; use http://HOST:PORT"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fails_over_in_order_and_stays_on_the_replica_that_answers() {
        let r = Discovery::new(
            "http://127.0.0.1:1, http://127.0.0.1:2,http://127.0.0.1:3",
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(r.current_url(), "http://127.0.0.1:1");
        let mut tried = Vec::new();
        let (index, answer) = r
            .call(|_| {
                tried.push(tried.len());
                let n = tried.len();
                async move {
                    if n < 2 {
                        Err(Status::unavailable("down"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!((index, answer.unwrap()), (1, 2));
        assert_eq!(r.current_url(), "http://127.0.0.1:2");
        // A refusal by the replica itself is an answer, not a failover.
        let (index, answer) = r
            .call(|_| async { Err::<(), _>(Status::already_exists("taken")) })
            .await;
        assert_eq!(index, 1);
        assert_eq!(answer.unwrap_err().code(), Code::AlreadyExists);
        // Every replica down: each tried once, the last failure returned.
        let mut calls = 0;
        let (_, answer) = r
            .call(|_| {
                calls += 1;
                async { Err::<(), _>(Status::unavailable("down")) }
            })
            .await;
        assert_eq!(calls, 3);
        assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
        assert!(Discovery::new(" , ", std::time::Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_bare_discovery_address_means_http_and_other_schemes_are_refused() {
        use super::discovery_url;
        assert_eq!(
            discovery_url("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(discovery_url("http://d:1").unwrap(), "http://d:1");
        assert_eq!(discovery_url("https://d:1").unwrap(), "https://d:1");
        let refused = discovery_url("grpc://d:1").unwrap_err();
        assert!(
            refused.contains("grpc") && refused.contains("http://HOST:PORT"),
            "{refused}"
        );
    }
}
