//! A client of a peer's Control service over its Unix socket, for the
//! `chat` CLI and for tests.

use std::path::{Path, PathBuf};

use chat_proto::v1::control_client::ControlClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::control_socket::CONTROL_SOCKET;

/// Deadline for the answer to each call over the control socket. It bounds
/// the wait for a response, not how long a stream (`attach`) then lasts.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why `chat` cannot reach the peer of a data dir.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No peer answers on the data dir's socket.
    #[error(
        "no peer-svc is running for {data_dir} (nothing answers on {socket}); start one with: \
         peer-svc --name NAME --data-dir {data_dir} (the network `make up` starts has its \
         data dirs in .run/user1 .. .run/user3)"
    )]
    NotRunning {
        /// The data dir asked for.
        data_dir: String,
        /// The socket tried.
        socket: String,
    },
    /// The socket is there but belongs to someone else (it is 0600).
    #[error(
        "permission denied on {socket}: the peer of {data_dir} belongs to another user, and only \
         its owner may drive it"
    )]
    PermissionDenied {
        /// The data dir asked for.
        data_dir: String,
        /// The socket tried.
        socket: String,
    },
}

/// Connects to the peer whose data dir is `data_dir`.
pub async fn connect(data_dir: &Path) -> Result<ControlClient<Channel>, ConnectError> {
    let socket: PathBuf = data_dir.join(CONTROL_SOCKET);
    let (data_dir_text, socket_text) =
        (data_dir.display().to_string(), socket.display().to_string());
    let not_running = || ConnectError::NotRunning {
        data_dir: data_dir_text.clone(),
        socket: socket_text.clone(),
    };
    if let Err(e) = tokio::net::UnixStream::connect(&socket).await {
        return Err(if e.kind() == std::io::ErrorKind::PermissionDenied {
            ConnectError::PermissionDenied {
                data_dir: data_dir_text.clone(),
                socket: socket_text.clone(),
            }
        } else {
            not_running()
        });
    }
    // The URI is required by the API but unused: the connector dials the socket.
    let path = socket.clone();
    let channel = Endpoint::from_static("http://localhost")
        // A local call that takes longer than this is a stuck daemon: a
        // send waits at most a few seconds for its slowest peer.
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|_| not_running())?;
    Ok(ControlClient::new(channel))
}
