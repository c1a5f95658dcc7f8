//! The peer's long-term keys, kept in the data dir (file mode 0600), created
//! on first start and reused after: the static X25519 key pair of every
//! Noise handshake (so a peer keeps its fingerprint across restarts), and
//! the Ed25519 identity key that signs admissions and certifies the static
//! key (see `credential`).

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use chat_noise::StaticKeypair;
use zeroize::Zeroizing;

/// The identity file's name inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

/// The Ed25519 identity key's file inside the data dir.
pub const SIGNING_KEY_FILE: &str = "identity.ed25519.key";

/// Permission bits that must be clear on the identity file: nobody but the
/// owner may read a private key.
const GROUP_OTHER_BITS: u32 = 0o077;

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file is readable or writable by group or others.
    #[error(
        "{path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}` if the key was not exposed, or delete it to make a new identity"
    )]
    TooOpen {
        /// The identity file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a 32-byte key in hex.
    #[error(
        "{0} is not an identity file (expected 64 hex digits); move it away to make a new identity"
    )]
    Malformed(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or dir.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads the key pair from `data_dir`, or creates and saves a new one.
pub fn load_or_create(data_dir: &Path) -> Result<StaticKeypair, IdentityError> {
    let secret = load_or_create_secret(&data_dir.join(IDENTITY_FILE))?;
    Ok(StaticKeypair::from_secret_bytes(*secret))
}

/// Loads the Ed25519 identity key from `data_dir`, or creates and saves a new one.
pub fn load_or_create_signing_key(
    data_dir: &Path,
) -> Result<ed25519_dalek::SigningKey, IdentityError> {
    let secret = load_or_create_secret(&data_dir.join(SIGNING_KEY_FILE))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&secret))
}

/// The 32-byte secret in `path` (hex), or a new random one saved there.
fn load_or_create_secret(path: &Path) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let path = path.to_owned();
    match fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & GROUP_OTHER_BITS != 0 {
                return Err(IdentityError::TooOpen { path, mode });
            }
            let text = Zeroizing::new(fs::read_to_string(&path).map_err(io_err(&path))?);
            let mut secret = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim(), secret.as_mut())
                .map_err(|_| IdentityError::Malformed(path.clone()))?;
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = Zeroizing::new(rand::random::<[u8; 32]>());
            let hex = Zeroizing::new(hex::encode(secret.as_ref()));
            // Written to a temp file created with mode 0600 (never readable by
            // others, not even for a moment), synced, then renamed into place:
            // a crash leaves no key or a whole one, never half of one.
            let tmp = path.with_extension("key.tmp");
            let _ = fs::remove_file(&tmp);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            file.write_all(hex.as_bytes()).map_err(io_err(&tmp))?;
            file.write_all(b"\n").map_err(io_err(&tmp))?;
            file.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            Ok(secret)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Creates `data_dir` (mode 0700) if needed. An existing one that others
/// can enter is used, with a warning: the history and the member lists in
/// it would be readable by them (the key file itself is checked on its own).
pub fn ensure_data_dir(data_dir: &Path) -> Result<(), IdentityError> {
    if !data_dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io_err(data_dir))?;
        return Ok(());
    }
    // A dir that existed before (made by hand, or by an older version) is
    // tightened: 0700 for it, and 0600 for every file in it. The history
    // in it is plaintext; a warning alone left it readable.
    tighten(data_dir, PRIVATE_DIR_MODE).map_err(io_err(data_dir))?;
    for entry in fs::read_dir(data_dir).map_err(io_err(data_dir))? {
        let path = entry.map_err(io_err(data_dir))?.path();
        if path.is_file() {
            tighten(&path, PRIVATE_FILE_MODE).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// The data dir's mode: its owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Every file's mode in the data dir: its owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Takes group and other bits off `path`'s mode, saying so if there were any.
pub fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    let was = fs::metadata(path)?.permissions().mode() & 0o777;
    if was & GROUP_OTHER_BITS != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{was:o}"),
            now = format!("{mode:o}"),
            "was accessible by other users; made private"
        );
    }
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(IDENTITY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        let signing = load_or_create_signing_key(dir.path()).unwrap();
        assert_eq!(
            load_or_create_signing_key(dir.path())
                .unwrap()
                .verifying_key(),
            signing.verifying_key()
        );
        let mode = fs::metadata(dir.path().join(SIGNING_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_group_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, IdentityError::TooOpen { mode: 0o640, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(b"not hex")
            .unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(IdentityError::Malformed(_))
        ));
    }
}
