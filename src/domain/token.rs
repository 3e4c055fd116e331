//! Session tokens: 256 bits from the OS CSPRNG, handed out once, stored only as SHA-256.
//! A fast hash is right here (unlike passwords): the token has full entropy, so it cannot be
//! guessed offline, and lookups must stay cheap on every request.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng;
use sha2::{Digest, Sha256};

/// Prefix that makes leaked tokens easy to recognise in secret scanners.
const TOKEN_PREFIX: &str = "tfs_";

/// A bearer token. `Debug` is redacted so it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SessionToken(<redacted>)")
    }
}

impl SessionToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random number generator failed");
        Self(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn from_presented(token: &str) -> Self {
        Self(token.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::SessionToken;

    #[test]
    fn tokens_carry_256_random_bits_and_differ() {
        let first = SessionToken::generate();
        let second = SessionToken::generate();
        assert_ne!(first, second);
        // 32 bytes in unpadded base64 are 43 characters.
        assert_eq!(first.expose().len(), "tfs_".len() + 43);
    }

    #[test]
    fn hash_is_sha256_and_debug_hides_the_token() {
        let token = SessionToken::generate();
        assert_eq!(token.hash().len(), 32);
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
