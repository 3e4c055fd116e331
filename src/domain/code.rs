//! One-time codes: generation from the OS CSPRNG, keyed MACs for storage, and strict parsing of
//! what a user typed. The code itself never leaves this module except to be sealed for delivery.
use hmac::{Hmac, KeyInit, Mac};
use rand::TryRng;
use sha2::Sha256;

/// Never fewer digits than this, whatever the configuration says (NIST SP 800-63B).
pub const MIN_CODE_LENGTH: u32 = 6;

/// A freshly generated code. `Debug` is redacted so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl std::fmt::Debug for Code {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Code(<redacted>)")
    }
}

impl Code {
    /// `length` decimal digits, uniformly distributed, leading zeros kept. Rejection sampling
    /// avoids the modulo bias of `byte % 10`.
    pub fn generate(length: u32) -> Self {
        let length = length.max(MIN_CODE_LENGTH) as usize;
        let mut digits = String::with_capacity(length);
        let mut buffer = [0u8; 32];
        while digits.len() < length {
            rand::rngs::SysRng
                .try_fill_bytes(&mut buffer)
                .expect("the operating system's random number generator failed");
            for byte in buffer {
                // 250 is the largest multiple of 10 not above 256.
                if byte < 250 && digits.len() < length {
                    digits.push(char::from(b'0' + byte % 10));
                }
            }
        }
        Self(digits)
    }

    /// Accepts exactly `length` ASCII digits and nothing else: no spaces, no full-width digits,
    /// no signs. Anything else is refused before it can count as a guess.
    pub fn parse(input: &str, length: u32) -> Option<Self> {
        let length = length.max(MIN_CODE_LENGTH) as usize;
        (input.len() == length && input.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| Self(input.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// MACs codes with the rotatable server secrets: the first secret signs, every secret verifies,
/// so rotating a secret does not kill codes already sent.
#[derive(Clone)]
pub struct CodeMac {
    secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CodeMac {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CodeMac")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl CodeMac {
    /// `secrets` must not be empty; the first one signs.
    pub fn new(secrets: &[String]) -> Self {
        Self {
            secrets: secrets
                .iter()
                .map(|secret| secret.as_bytes().to_vec())
                .collect(),
        }
    }

    /// The MAC binds the code to its challenge, so a code (or its MAC) from one challenge is
    /// worthless in another.
    fn mac(secret: &[u8], challenge_id: &str, code: &Code) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("hmac accepts any key length");
        mac.update(b"twofold-code-v1\0");
        mac.update(challenge_id.as_bytes());
        mac.update(b"\0");
        mac.update(code.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The value to store: the MAC under the signing secret.
    pub fn sign(&self, challenge_id: &str, code: &Code) -> [u8; 32] {
        Self::mac(&self.secrets[0], challenge_id, code)
    }

    /// One candidate MAC per secret, for a store to compare against what it holds.
    pub fn candidates(&self, challenge_id: &str, code: &Code) -> Vec<[u8; 32]> {
        self.secrets
            .iter()
            .map(|secret| Self::mac(secret, challenge_id, code))
            .collect()
    }

    /// Constant-time check of `code` against a stored MAC, trying every secret without stopping
    /// at the first match.
    pub fn verify(&self, challenge_id: &str, code: &Code, stored: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.candidates(challenge_id, code)
            .iter()
            .fold(subtle::Choice::from(0), |found, candidate| {
                found | candidate.as_slice().ct_eq(stored)
            })
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::{Code, CodeMac};

    #[test]
    fn codes_have_the_configured_length_never_under_six_and_keep_leading_zeros() {
        assert_eq!(Code::generate(8).expose().len(), 8);
        assert_eq!(Code::generate(4).expose().len(), 6);
        // Over 2,000 codes a leading zero shows up with overwhelming probability (1 - 0.9^2000).
        assert!((0..2000).any(|_| Code::generate(6).expose().starts_with('0')));
    }

    #[test]
    fn digits_are_roughly_uniform() {
        let mut counts = [0usize; 10];
        for _ in 0..2000 {
            for byte in Code::generate(6).expose().bytes() {
                counts[(byte - b'0') as usize] += 1;
            }
        }
        // 12,000 digits: each should be near 1,200; a biased generator drifts far outside.
        assert!(
            counts.iter().all(|&count| (1000..1400).contains(&count)),
            "{counts:?}"
        );
    }

    #[test]
    fn strict_parsing_refuses_anything_but_exact_ascii_digits() {
        assert!(Code::parse("012345", 6).is_some());
        for bad in [
            "12345",
            "1234567",
            "12 345",
            " 123456",
            "１２３４５６",
            "-12345",
            "12345a",
            "+12345",
            "",
        ] {
            assert!(Code::parse(bad, 6).is_none(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn macs_bind_the_challenge_and_every_secret_verifies() {
        let old = CodeMac::new(&["old-secret-0123456789".into()]);
        let rotated = CodeMac::new(&[
            "new-secret-0123456789".into(),
            "old-secret-0123456789".into(),
        ]);
        let code = Code::parse("123456", 6).unwrap();
        let stored = old.sign("challenge-a", &code);
        assert!(old.verify("challenge-a", &code, &stored));
        assert!(
            rotated.verify("challenge-a", &code, &stored),
            "old codes survive rotation"
        );
        assert!(
            !old.verify("challenge-b", &code, &stored),
            "bound to the challenge"
        );
        assert!(!old.verify("challenge-a", &Code::parse("123457", 6).unwrap(), &stored));
        assert!(!format!("{code:?}").contains("123456"));
    }
}
