//! The Control socket: `DATA_DIR/control.sock`, a Unix socket only the
//! owner can open (0600), where plaintext crosses between `chat` and the
//! peer.

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
};

use tokio::net::UnixListener;

/// The control socket's name inside the data dir.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Binds the control socket with mode 0600, refusing to take over the
/// socket of a peer that is still running on the same data dir.
pub(crate) async fn bind_control_socket(path: &Path) -> Result<UnixListener, String> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(format!(
                "a peer-svc is already running for this data dir ({} answers); stop it first",
                path.display()
            ));
        }
        // A socket left by a peer that was killed: nobody answers on it.
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    // Bound inside a fresh 0700 directory, narrowed to 0600, then renamed
    // into place: the socket is never reachable by others, not even in the
    // moment between bind and chmod (the data dir may be more open).
    let setup = |e: std::io::Error| format!("{}: {e}", path.display());
    let staging = path.with_extension(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(setup)?;
    let staged = staging.join(CONTROL_SOCKET);
    let bound = UnixListener::bind(&staged)
        .and_then(|uds| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&staged, path)?;
            Ok(uds)
        })
        .map_err(|e| format!("cannot bind {}: {e}", path.display()));
    let _ = std::fs::remove_dir_all(&staging);
    bound
}
