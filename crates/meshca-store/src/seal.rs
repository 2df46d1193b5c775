//! AES-256-GCM sealing of secret values with a key kept outside the store
//! (`--store-key-file`: 32 random bytes, raw or base64). The sealed form
//! carries a short key id, so a replica holding a different key gets an error
//! saying exactly that instead of a bare "decryption failed". The key itself
//! is never written anywhere and never printed (`Debug` shows the id only).

use crate::error::{Result, StoreError};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Prefix of every sealed value (format version 1).
const MAGIC: &str = "meshca-sealed-v1";

/// The key that seals secret values in the store.
pub struct StoreKey {
    key: LessSafeKey,
    id: String,
    origin: PathBuf,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKey").field("id", &self.id).field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// 32 random bytes, base64-encoded: the content of a new key file.
pub fn generate_key_file_content() -> Result<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| StoreError::Config("random number generator failed".into()))?;
    Ok(format!("{}\n", STANDARD.encode(raw.as_ref())))
}

fn key_id(raw: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"meshca store key id\0");
    ctx.update(raw);
    hex::encode(&ctx.finish().as_ref()[..8])
}

impl StoreKey {
    /// Read a key file: exactly 32 raw bytes, or their base64 (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self> {
        let err = |problem: String| StoreError::KeyFile { path: path.to_path_buf(), problem };
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(format!("cannot be read: {e}")))?);
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the store key file is readable by other users; chmod 600 it");
            }
        }
        let raw: Zeroizing<Vec<u8>> = if bytes.len() == 32 {
            Zeroizing::new(bytes.to_vec())
        } else {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| err(format!("holds {} bytes; expected 32 raw bytes or their base64", bytes.len())))?;
            Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| {
                err(format!(
                    "is neither 32 raw bytes nor valid base64 ({} bytes); make one with `head -c 32 /dev/urandom | \
                     base64 > {}`",
                    bytes.len(),
                    path.display()
                ))
            })?)
        };
        if raw.len() != 32 {
            return Err(err(format!(
                "decodes to {} bytes; an AES-256 key is 32 bytes (make one with `head -c 32 /dev/urandom | base64`)",
                raw.len()
            )));
        }
        Self::from_bytes(&raw, path)
    }

    /// A key from its 32 bytes; `origin` is only used in messages.
    pub fn from_bytes(raw: &[u8], origin: &Path) -> Result<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| StoreError::KeyFile {
            path: origin.to_path_buf(),
            problem: format!("{} bytes is not an AES-256 key (32 bytes)", raw.len()),
        })?;
        Ok(Self { key: LessSafeKey::new(unbound), id: key_id(raw), origin: origin.to_path_buf() })
    }

    /// Short public identifier of the key (a truncated hash; reveals nothing of the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seal `plaintext` for the store key `name` (bound as associated data, so a
    /// value moved to another key does not open).
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| StoreError::Config("random number generator failed".into()))?;
        let mut buf = Zeroizing::new(plaintext.to_vec());
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut *buf)
            .map_err(|_| StoreError::Sealed { key: name.into(), problem: "encryption failed".into() })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{MAGIC}:{}:{}", self.id, STANDARD.encode(out)))
    }

    /// Open a value sealed by [`StoreKey::seal`] for `name`.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>> {
        let err = |problem: String| StoreError::Sealed { key: name.into(), problem };
        let mut parts = sealed.trim().splitn(3, ':');
        let (magic, id, body) = (parts.next(), parts.next(), parts.next());
        let (Some(MAGIC), Some(id), Some(body)) = (magic, id, body) else {
            return Err(err(format!("is not a value sealed by meshca (expected the {MAGIC} format)")));
        };
        if id != self.id {
            return Err(err(format!(
                "was sealed with store key {id}, but the key in {} is {}: give every replica the same \
                 --store-key-file",
                self.origin.display(),
                self.id
            )));
        }
        let mut data = STANDARD.decode(body).map_err(|_| err("sealed body is not valid base64".into()))?;
        if data.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(err("sealed body is truncated".into()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&data[..NONCE_LEN]);
        let mut ct = Zeroizing::new(data.split_off(NONCE_LEN));
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut ct)
            .map_err(|_| {
                err(format!(
                    "does not decrypt with the key in {} (id {}): the value was altered in the store or belongs \
                     to another key",
                    self.origin.display(),
                    self.id
                ))
            })?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StoreKey {
        StoreKey::from_bytes(&[byte; 32], Path::new("test.key")).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let k = key(7);
        let s = k.seal("ca/root", b"secret pem").unwrap();
        assert!(!s.contains("secret"));
        assert_eq!(&*k.open("ca/root", &s).unwrap(), b"secret pem");
        let moved = k.open("ca/other", &s).unwrap_err().to_string();
        assert!(moved.contains("does not decrypt"), "{moved}");
        let wrong = key(8).open("ca/root", &s).unwrap_err().to_string();
        assert!(wrong.contains("was sealed with store key") && wrong.contains("test.key"), "{wrong}");
        assert!(!format!("{k:?}").contains("7, 7"));
    }

    #[test]
    fn key_file_forms() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [1u8; 32]).unwrap();
        let b64 = dir.path().join("b64");
        std::fs::write(&b64, format!("{}\n", STANDARD.encode([1u8; 32]))).unwrap();
        assert_eq!(StoreKey::from_file(&raw).unwrap().id(), StoreKey::from_file(&b64).unwrap().id());
        let short = dir.path().join("short");
        std::fs::write(&short, STANDARD.encode([1u8; 16])).unwrap();
        let e = StoreKey::from_file(&short).unwrap_err().to_string();
        assert!(e.contains("short") && e.contains("16 bytes"), "{e}");
        let gen = dir.path().join("gen");
        std::fs::write(&gen, generate_key_file_content().unwrap()).unwrap();
        StoreKey::from_file(&gen).unwrap();
        let missing = StoreKey::from_file(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains("cannot be read"), "{missing}");
    }
}
