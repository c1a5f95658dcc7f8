//! Accepting TCP connections within limits, for both servers: a cap on
//! concurrent connections per listener and per remote IP address, a
//! deadline for a connection's first bytes (the HTTP/2 preface), and an idle
//! deadline for a connection that sends nothing at all — not even the PING
//! acknowledgements the server's HTTP/2 keepalive asks for, so a live client
//! is never cut off. The accept loop never spins: when the process is out of
//! file descriptors it waits before accepting again.
//!
//! A connection over a cap is closed as soon as it is accepted: the fd and
//! the memory of an HTTP/2 connection are never spent on it.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

use crate::tally::{Held, Tally};

/// Default most concurrent connections on one listener (lowered to half
/// the open-files limit, so that the rest of the process keeps room).
pub const MAX_CONNECTIONS: usize = 4096;

/// Default most concurrent connections from one remote IP address.
pub const MAX_CONNECTIONS_PER_IP: usize = 256;

/// Longest a new connection may take to send its first bytes.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a connection may send nothing. Servers ping every
/// [`KEEPALIVE_INTERVAL`], so a live client answers well within it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// HTTP/2 keepalive: the server pings a connection it has not heard from for
/// this long…
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// …and closes it if the ping is not acknowledged within this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the accept loop waits after an accept error (out of file
/// descriptors, say) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most concurrent connections.
    pub max_total: usize,
    /// Most concurrent connections from one IP address.
    pub max_per_ip: usize,
    /// Deadline for a new connection's first bytes.
    pub first_bytes: Duration,
    /// Longest a connection may send nothing.
    pub idle: Duration,
}

impl Default for ConnLimits {
    /// The defaults, with the total lowered to half the soft open-files
    /// limit (call after [`crate::process::raise_open_files_limit`]).
    fn default() -> Self {
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        Self {
            max_total: MAX_CONNECTIONS.min(files / 2).max(1),
            max_per_ip: MAX_CONNECTIONS_PER_IP,
            first_bytes: FIRST_BYTES_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// The source a per-address cap counts `ip` under: the address itself for
/// IPv4, its /64 for IPv6 (one host is usually given a whole /64), and the
/// IPv4 address inside an IPv4-mapped IPv6 one.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
    }
}

/// Takes a place for a connection from `ip`, or says which cap is full.
fn take_place(
    counts: &Tally<IpAddr>,
    limits: &ConnLimits,
    ip: IpAddr,
) -> Result<Held<IpAddr>, &'static str> {
    counts.take(&ip, |total, from_ip| {
        if total >= limits.max_total {
            Err("the listener's connection cap")
        } else if from_ip >= limits.max_per_ip {
            Err("the per-address connection cap")
        } else {
            Ok(())
        }
    })
}

/// The connections `listener` accepts within `limits`, with TCP_NODELAY
/// (Nagle plus delayed ACKs would hold small responses ~40 ms). The stream
/// never ends and never yields an error.
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
) -> impl Stream<Item = io::Result<LimitedConn>> + Send + 'static {
    let counts = Tally::default();
    futures::stream::unfold(
        (listener, counts, 0u64),
        move |(listener, counts, mut refused)| async move {
            loop {
                let (stream, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and friends: retrying at once would spin.
                        warn!(error = %e, "cannot accept a connection; pausing");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let place = match take_place(&counts, &limits, source_of(remote.ip())) {
                    Ok(place) => place,
                    Err(cap) => {
                        refused += 1;
                        // Logged once per power of two, so a flood cannot
                        // flood the log too.
                        if refused.is_power_of_two() {
                            warn!(remote = %remote, cap, refused, "connection refused at a cap");
                        }
                        drop(stream);
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(error = %e, "could not set TCP_NODELAY");
                }
                let conn = LimitedConn::new(stream, remote, place, &limits);
                return Some((Ok(conn), (listener, counts, refused)));
            }
        },
    )
}

/// An accepted connection that holds its place under the caps and fails
/// its reads when the client has been silent too long.
#[derive(Debug)]
pub struct LimitedConn {
    inner: TcpStream,
    info: TcpConnectInfo,
    _place: Held<IpAddr>,
    idle: Duration,
    /// Set once any byte has arrived; until then the first-bytes deadline applies.
    heard: bool,
    last_read: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl LimitedConn {
    fn new(inner: TcpStream, remote: SocketAddr, place: Held<IpAddr>, limits: &ConnLimits) -> Self {
        let info = TcpConnectInfo {
            local_addr: inner.local_addr().ok(),
            remote_addr: Some(remote),
        };
        let now = Instant::now();
        Self {
            inner,
            info,
            _place: place,
            idle: limits.idle,
            heard: false,
            last_read: now,
            deadline: Box::pin(tokio::time::sleep_until(now + limits.first_bytes)),
        }
    }

    /// When silence ends the connection, as of now.
    fn silence_ends(&self) -> Instant {
        if self.heard {
            self.last_read + self.idle
        } else {
            self.deadline.deadline()
        }
    }
}

impl Connected for LimitedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.heard = true;
                    // Read the clock only per read, and move the timer only
                    // when it fires (below): a busy connection costs nothing.
                    this.last_read = Instant::now();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        loop {
            ready!(this.deadline.as_mut().poll(cx));
            let ends = this.silence_ends();
            if ends <= Instant::now() {
                let what = if this.heard {
                    "idle connection"
                } else {
                    "no request"
                };
                debug!(remote = ?this.info.remote_addr, what, "closing a silent connection");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
            }
            this.deadline.as_mut().reset(ends);
        }
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use futures::StreamExt;

    async fn serve(limits: ConnLimits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut accepted = std::pin::pin!(incoming(listener, limits));
            while let Some(Ok(mut conn)) = accepted.next().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    // Echo until the peer closes or the connection is cut.
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// True if the server closed `stream` (EOF or reset) within `within`.
    async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 8];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_of(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn connections_past_the_per_address_cap_are_closed_at_once() {
        let addr = serve(ConnLimits {
            max_total: 100,
            max_per_ip: 3,
            first_bytes: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"hi").await.unwrap();
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).await.unwrap();
            held.push(s);
        }
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(closed(&mut fourth, Duration::from_secs(5)).await);
        // Another address has its own share.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut other = socket.connect(addr).await.unwrap();
        other.write_all(b"yo").await.unwrap();
        let mut buf = [0u8; 2];
        other.read_exact(&mut buf).await.unwrap();
        // A place frees up when a connection closes.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = TcpStream::connect(addr).await.unwrap();
        again.write_all(b"ok").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_talkative_ones_kept() {
        let addr = serve(ConnLimits {
            max_total: 100,
            max_per_ip: 100,
            first_bytes: Duration::from_millis(300),
            idle: Duration::from_millis(600),
        })
        .await;
        let mut mute = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed(&mut mute, Duration::from_secs(5)).await,
            "no first bytes"
        );
        let mut chatty = TcpStream::connect(addr).await.unwrap();
        // Talking every 200 ms for 1.2 s (twice the idle limit) keeps it.
        for _ in 0..6 {
            chatty.write_all(b"x").await.unwrap();
            let mut buf = [0u8; 1];
            chatty.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Then silence ends it.
        assert!(closed(&mut chatty, Duration::from_secs(5)).await, "idle");
    }
}
