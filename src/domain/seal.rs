//! Sealing of delivery data (the code inside a queued message) with XChaCha20-Poly1305, so the
//! outbox never holds a code in plaintext. Keys derive from Kratos's `secrets.cipher` (falling
//! back to `secrets.default`); the first key seals, every key opens, so rotation is possible.
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const NONCE_LENGTH: usize = 24;

#[derive(Clone)]
pub struct Sealer {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sealer")
            .field("keys", &self.ciphers.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sealed data cannot be opened with any configured key")]
pub struct Unsealable;

impl Sealer {
    /// `secrets` must not be empty. Each secret is stretched to a 256-bit key with HMAC-SHA256
    /// under a fixed label, so secrets of any length work and keys differ from MAC keys.
    pub fn new(secrets: &[String]) -> Self {
        let ciphers = secrets
            .iter()
            .map(|secret| {
                let mut kdf = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(secret.as_bytes())
                    .expect("hmac accepts any key length");
                kdf.update(b"twofold-seal-v1");
                let key = kdf.finalize().into_bytes();
                XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key")
            })
            .collect();
        Self { ciphers }
    }

    /// `associated` (for example the message id) is authenticated but not encrypted, so sealed
    /// data cannot be moved to another record.
    pub fn seal(&self, plaintext: &[u8], associated: &[u8]) -> Vec<u8> {
        let nonce = chacha20poly1305::XNonce::generate();
        let ciphertext = self.ciphers[0]
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: associated,
                },
            )
            .expect("encryption of an in-memory buffer cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, sealed: &[u8], associated: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE_LENGTH {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LENGTH);
        let nonce = chacha20poly1305::XNonce::try_from(nonce).map_err(|_| Unsealable)?;
        self.ciphers
            .iter()
            .find_map(|cipher| {
                cipher
                    .decrypt(
                        &nonce,
                        Payload {
                            msg: ciphertext,
                            aad: associated,
                        },
                    )
                    .ok()
            })
            .ok_or(Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::{Sealer, Unsealable};

    #[test]
    fn sealed_data_opens_only_with_its_key_and_record() {
        let sealer = Sealer::new(&["cipher-secret-0123456789abcdef".into()]);
        let sealed = sealer.seal(b"123456", b"message-1");
        assert!(
            !sealed.windows(6).any(|w| w == b"123456"),
            "no plaintext in the sealed bytes"
        );
        assert_eq!(sealer.open(&sealed, b"message-1").unwrap(), b"123456");
        assert_eq!(sealer.open(&sealed, b"message-2"), Err(Unsealable));
        let other = Sealer::new(&["another-secret-0123456789abcdef".into()]);
        assert_eq!(other.open(&sealed, b"message-1"), Err(Unsealable));
        let rotated = Sealer::new(&[
            "another-secret-0123456789abcdef".into(),
            "cipher-secret-0123456789abcdef".into(),
        ]);
        assert_eq!(rotated.open(&sealed, b"message-1").unwrap(), b"123456");
        assert_eq!(sealer.open(b"short", b"message-1"), Err(Unsealable));
    }
}
