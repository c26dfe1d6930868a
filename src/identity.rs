//! The node key: an Ed25519 key pair created on first start in
//! `<state_dir>/node.key` (mode 0600) and kept for the node's life, because the
//! public key *is* the node's identity in the mesh.
//!
//! The file holds the 32-byte secret seed in hex plus a newline. It is written
//! to a temporary file, fsynced and renamed, so a crash never leaves half a key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier};

use crate::node::NodeId;

/// File name of the key inside the state directory.
pub const KEY_FILE: &str = "node.key";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file exists but does not hold a key.
    #[error(
        "{0}: not a meshnode key (expected 64 hex digits); move it away to create a new identity"
    )]
    Malformed(PathBuf),
    /// The OS random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// This node's key pair.
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.node_id()) // never print the secret
    }
}

impl Identity {
    /// Loads the key from `state_dir`, creating it on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        let path = state_dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut seed = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut seed)
                    .map_err(|_| IdentityError::Malformed(path.clone()))?;
                let mode = fs::metadata(&path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "node key was readable by others; setting mode 0600");
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
                Ok(Self {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
                let tmp = state_dir.join(format!("{KEY_FILE}.tmp"));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
                    .map_err(io)?;
                f.sync_all().map_err(io)?;
                fs::rename(&tmp, &path).map_err(io)?;
                crate::cache::blobs::sync_dir(state_dir).map_err(io)?;
                let id = Self {
                    key: SigningKey::from_bytes(&seed),
                };
                tracing::info!(node_id = %id.node_id(), "created node key");
                Ok(id)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The public identity.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

/// Checks `sig` over `msg` by `node`.
pub fn verify(node: &NodeId, msg: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&node.0) else {
        return false;
    };
    vk.verify(msg, &ed25519_dalek::Signature::from_bytes(sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        let sig = a.sign(b"hello");
        assert!(verify(&b.node_id(), b"hello", &sig));
        assert!(!verify(&b.node_id(), b"hellO", &sig));
    }

    #[test]
    fn loose_permissions_are_tightened_and_garbage_refused() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let p = dir.path().join(KEY_FILE);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&p, "nonsense").unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Malformed(_))
        ));
    }
}
