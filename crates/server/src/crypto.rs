//! Secrets: the encryption keyring, random tokens and their digests, passwords.
//!
//! - OAuth tokens and client secrets are sealed with AES-256-GCM under the
//!   keyring's current key; every sealed value names its key, so values sealed
//!   under an older key still open after a rotation.
//! - Session, API and CSRF tokens are 256-bit random values. Only their SHA-256
//!   digests are stored: they are high-entropy, so a plain hash is enough and
//!   lookups stay cheap (argon2 on every request would cap throughput).
//! - Passwords are hashed with argon2id (PHC strings).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no secrets key at {0}: pass --secrets-key-file with an existing key, or --generate-key to create one there"
    )]
    Missing(PathBuf),
    #[error("the secrets key file {path} is not valid: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("could not read or write the secrets key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One 256-bit key with its id. `Debug` never shows the key bytes.
#[derive(Clone)]
struct Key {
    id: String,
    raw: [u8; 32],
    cipher: Aes256Gcm,
}

/// The keys that seal secrets at rest: the first is current, the others only open.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value was made with key {0}, which is not in the keyring")]
    UnknownKey(String),
    #[error("the sealed value does not authenticate (wrong key or tampered)")]
    Tampered,
}

impl Keyring {
    /// A keyring with one fresh random key (tests and key generation).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_lines(&format!("{} {}", new_key_id(), STANDARD.encode(bytes)))
            .expect("a generated key parses")
    }

    /// Parses a key file: one `ID BASE64KEY` per line, current key first;
    /// blank lines and `#` comments are ignored.
    fn from_lines(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (id, b64) = line
                .split_once(' ')
                .ok_or("each line must be `ID BASE64KEY`")?;
            let raw = STANDARD
                .decode(b64.trim())
                .map_err(|_| format!("key {id} is not base64"))?;
            if raw.len() != 32 {
                return Err(format!("key {id} must be 32 bytes, found {}", raw.len()));
            }
            if id.is_empty() || id.contains('.') {
                return Err("a key id must be non-empty and contain no '.'".into());
            }
            let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|e| e.to_string())?;
            let raw: [u8; 32] = raw
                .try_into()
                .map_err(|_| "a key must be 32 bytes".to_owned())?;
            if keys.iter().any(|k: &Key| k.id == id) {
                return Err(format!("key id {id} appears twice"));
            }
            keys.push(Key {
                id: id.to_owned(),
                raw,
                cipher,
            });
        }
        if keys.is_empty() {
            return Err("the file holds no key".into());
        }
        Ok(Self { keys })
    }

    fn to_lines(&self) -> String {
        let mut out = String::from(
            "# hirewire secrets keys: keep private, back up with the database.\n# The first key seals new values; the others still open older ones.\n",
        );
        for k in &self.keys {
            out.push_str(&format!("{} {}\n", k.id, STANDARD.encode(k.raw)));
        }
        out
    }

    /// A new keyring whose current key is fresh; the old keys still open.
    pub fn rotated(&self) -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let fresh = Self::from_lines(&format!("{} {}", new_key_id(), STANDARD.encode(bytes)))
            .expect("a generated key parses");
        let mut keys = fresh.keys;
        keys.extend(self.keys.iter().cloned());
        Self { keys }
    }

    /// The id of the key that seals new values.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Replaces the key file atomically (a 0600 temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let tmp = path.with_extension("key.tmp");
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, &self.to_lines()).map_err(|source| KeyError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Loads the key file at `path`. With `generate`, a missing file is created
    /// (mode 0600) with a new random key and `Ok((keyring, true))` is returned.
    pub fn load(path: &Path, generate: bool) -> Result<(Self, bool), KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::from_lines(&text)
                    .map(|k| (k, false))
                    .map_err(|why| KeyError::Invalid {
                        path: path.to_owned(),
                        why,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
                let ring = Self::generate();
                write_private(path, &ring.to_lines()).map_err(|source| KeyError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                Ok((ring, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(KeyError::Missing(path.to_owned()))
            }
            Err(source) => Err(KeyError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Seals `plaintext` under the current key: `v1.KEYID.NONCE.CIPHERTEXT` (base64url).
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = key
            .cipher
            .encrypt(&Nonce::from(nonce), plaintext)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        format!(
            "v1.{}.{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ct)
        )
    }

    /// Opens a value sealed by [`Keyring::seal`] under any key of the ring.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.split('.');
        let (Some("v1"), Some(id), Some(nonce), Some(ct), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SealError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| SealError::Malformed)?;
        let ct = URL_SAFE_NO_PAD
            .decode(ct)
            .map_err(|_| SealError::Malformed)?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        key.cipher
            .decrypt(&Nonce::from(nonce), ct.as_slice())
            .map_err(|_| SealError::Tampered)
    }
}

fn new_key_id() -> String {
    let mut bytes = [0u8; 4];
    rand::rng().fill_bytes(&mut bytes);
    format!("k{}", hex_lower(&bytes))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file readable by its owner only (0600 on Unix), failing if it exists.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// A fresh 256-bit random token, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a high-entropy token.
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares two secrets in time independent of where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Argon2id cost. The default follows OWASP's minimum (19 MiB, 2 passes);
/// tests may lower it through the config.
#[derive(Debug, Clone, Copy)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

impl PasswordCost {
    fn argon2(self) -> Argon2<'static> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .expect("valid argon2 parameters");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    pub fn hash(self, password: &str) -> String {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 hashing with valid parameters")
            .to_string()
    }
}

/// Checks a password against a stored PHC string (its own parameters apply).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_and_tampering_is_detected() {
        let ring = Keyring::generate();
        let sealed = ring.seal(b"refresh-token-123");
        assert!(!sealed.contains("refresh-token-123"));
        assert_eq!(ring.open(&sealed).unwrap(), b"refresh-token-123");
        let mut bad = sealed.clone();
        bad.pop();
        bad.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(ring.open(&bad), Err(SealError::Tampered));
        assert_eq!(
            Keyring::generate().open(&sealed),
            Err(SealError::UnknownKey(ring.keys[0].id.clone()))
        );
    }

    #[test]
    fn a_generated_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        assert!(matches!(
            Keyring::load(&path, false),
            Err(KeyError::Missing(_))
        ));
        let (ring, created) = Keyring::load(&path, true).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (again, created) = Keyring::load(&path, true).unwrap();
        assert!(!created);
        assert_eq!(again.open(&ring.seal(b"x")).unwrap(), b"x");
        assert!(
            !format!("{ring:?}").contains(
                &std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .nth(1)
                    .unwrap()[6..]
            )
        );
    }

    #[test]
    fn after_a_rotation_new_values_use_the_new_key_and_old_ones_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (old, _) = Keyring::load(&path, true).unwrap();
        let sealed_before = old.seal(b"token");
        let new = old.rotated();
        new.save(&path).unwrap();
        let (reloaded, created) = Keyring::load(&path, false).unwrap();
        assert!(!created);
        assert_ne!(reloaded.current_key_id(), old.current_key_id());
        assert_eq!(reloaded.open(&sealed_before).unwrap(), b"token");
        assert!(
            reloaded
                .seal(b"x")
                .starts_with(&format!("v1.{}.", reloaded.current_key_id()))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let cost = PasswordCost {
            memory_kib: 1024,
            iterations: 1,
        };
        let phc = cost.hash("correct horse");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("Correct horse", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }
}
