//! Ethereum addresses: OST's format check and the EIP-55 mixed-case checksum.
//!
//! OST's submission endpoint only checks the format (`0x` optional, 40 hex digits); its
//! `ethereum-address-validation` endpoint also asks web3 whether the address is valid, which
//! means: all lower case or all upper case passes on format alone, mixed case must be the
//! EIP-55 checksum (a typo in a checksummed address is caught, one in a lower-case one is not).

use sha3::{Digest, Keccak256};

/// How strictly an address is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressCheck {
    /// 40 hex digits, `0x` optional: what OST's KYC submission accepts.
    Format,
    /// Format, and a mixed-case address must carry a correct EIP-55 checksum.
    Checksum,
}

/// The 40 hex digits of `s` (`0x`/`0X` prefix optional, surrounding space ignored), if that is
/// all it is.
pub fn hex_digits(s: &str) -> Option<&str> {
    let s = s.trim();
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    (digits.len() == 40 && digits.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digits)
}

/// The EIP-55 spelling of an address given as 40 hex digits (any case): `0x` + each letter
/// upper-cased where the matching nibble of Keccak-256(lower-case hex) is 8 or more.
pub fn checksummed(digits: &str) -> String {
    let lower = digits.to_ascii_lowercase();
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let byte = hash[i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// Whether `s` is an address under `check`.
pub fn is_valid(s: &str, check: AddressCheck) -> bool {
    let Some(digits) = hex_digits(s) else {
        return false;
    };
    match check {
        AddressCheck::Format => true,
        AddressCheck::Checksum => {
            let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
            let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
            !(has_lower && has_upper) || checksummed(digits)[2..] == *digits
        }
    }
}

/// `s` as OST stores it: `0x` + the 40 digits as given (case kept: it carries the checksum).
pub fn normalised(s: &str) -> Option<String> {
    hex_digits(s).map(|d| format!("0x{d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors published with EIP-55.
    const EIP55_VECTORS: [&str; 8] = [
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "0xde709f2102306220921060314715629080e2fb77",
        "0x27b1fdb04752bbc536007a920d24acb045561c26",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn the_published_eip55_vectors_checksum_and_validate() {
        for v in EIP55_VECTORS {
            assert!(is_valid(v, AddressCheck::Checksum), "{v}");
        }
        // The four mixed-case vectors are exactly their own checksum.
        for v in &EIP55_VECTORS[4..] {
            assert_eq!(checksummed(&v[2..]), *v);
        }
    }

    #[test]
    fn one_flipped_letter_breaks_the_checksum_but_not_the_format() {
        let flipped = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        assert!(!is_valid(flipped, AddressCheck::Checksum));
        assert!(is_valid(flipped, AddressCheck::Format));
        // All one case is accepted on format alone, as web3 does.
        assert!(is_valid(
            &flipped.to_ascii_lowercase(),
            AddressCheck::Checksum
        ));
        assert!(is_valid(
            &format!("0x{}", flipped[2..].to_ascii_uppercase()),
            AddressCheck::Checksum
        ));
    }

    #[test]
    fn the_prefix_is_optional_and_the_length_exact() {
        assert_eq!(
            normalised(" 04d39e0b112c20917868ffd5c42372ecc5df577b "),
            Some("0x04d39e0b112c20917868ffd5c42372ecc5df577b".into())
        );
        assert_eq!(
            normalised("0X04d39e0b112c20917868ffd5c42372ecc5df577b").as_deref(),
            Some("0x04d39e0b112c20917868ffd5c42372ecc5df577b")
        );
        assert!(!is_valid("0x123", AddressCheck::Format));
        assert!(!is_valid(
            "0xg4d39e0b112c20917868ffd5c42372ecc5df577b",
            AddressCheck::Format
        ));
        assert!(!is_valid("", AddressCheck::Format));
    }
}
