//! Masking of addresses for anything a log line, error or another person may see.

/// `+4915112345678` → `+49*******678`; `jane@example.com` → `j***@example.com`.
pub fn mask_address(address: &str) -> String {
    if let Some((local, domain)) = address.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 6))
}

/// SHA-256 (hex) of a normalised address: lets audit records and sessions refer to an address
/// without holding it.
pub fn address_hash(address: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(address.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::mask_address;

    #[test]
    fn phone_numbers_keep_only_prefix_and_last_three_digits() {
        assert_eq!(mask_address("+44123456789"), "+44******789");
    }

    #[test]
    fn emails_keep_first_letter_and_domain() {
        assert_eq!(mask_address("jane@example.com"), "j***@example.com");
    }

    #[test]
    fn short_values_are_fully_masked() {
        assert_eq!(mask_address("12345"), "*****");
    }
}
