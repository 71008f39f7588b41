//! GNUnet's Crockford base32: how Taler writes keys, signatures and hashes in URLs and headers.
//!
//! GNUnet's flavour is not Douglas Crockford's integer encoding: it encodes a byte string most
//! significant bit first in 5-bit groups, zero-pads the last group on the right, and writes no
//! `=` padding (52 characters for 32 bytes, 103 for 64 bytes). Decoding follows the exchange:
//! case-insensitive, the look-alikes O→0, I/L→1 and U→V are accepted, anything else is an
//! error, the length must be exactly the one for the expected byte count, and the unused pad
//! bits of the last character are *ignored*. A verifier that checked them would refuse headers
//! the real exchange accepts, so [`decode`] deliberately does not.

use std::sync::LazyLock;

use data_encoding::{BitOrder, Encoding, Specification};

/// The 32 symbols, in value order.
pub const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static GNUNET_BASE32: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str(ALPHABET);
    spec.bit_order = BitOrder::MostSignificantFirst;
    spec.check_trailing_bits = false;
    // Lower case letters are the same symbols; O, I, L, U are the look-alikes GNUnet accepts.
    spec.translate
        .from
        .push_str("abcdefghjkmnpqrstvwxyzOoIiLlUu");
    spec.translate.to.push_str("ABCDEFGHJKMNPQRSTVWXYZ001111VV");
    // The specification above is a constant; it is valid by construction (see the unit tests).
    #[allow(clippy::expect_used)]
    spec.encoding()
        .expect("the GNUnet base32 specification is valid")
});

/// Why a Crockford string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrockfordError {
    #[error("expected {expected} base32 characters, found {found}")]
    WrongLength { expected: usize, found: usize },
    #[error("character {position} is not a Crockford base32 symbol")]
    InvalidCharacter { position: usize },
}

/// Characters needed for `bytes` bytes: ceil(8n/5).
pub const fn encoded_len(bytes: usize) -> usize {
    (bytes * 8).div_ceil(5)
}

/// Encode bytes as upper-case GNUnet Crockford base32.
pub fn encode(bytes: &[u8]) -> String {
    GNUNET_BASE32.encode(bytes)
}

/// Decode `text` that must encode exactly `expected` bytes.
pub fn decode(text: &str, expected: usize) -> Result<Vec<u8>, CrockfordError> {
    let want = encoded_len(expected);
    if text.len() != want {
        return Err(CrockfordError::WrongLength {
            expected: want,
            found: text.len(),
        });
    }
    let decoded =
        GNUNET_BASE32
            .decode(text.as_bytes())
            .map_err(|e| CrockfordError::InvalidCharacter {
                position: e.position,
            })?;
    // Unreachable for a length of ceil(8n/5), but a wrong count must never pass silently.
    if decoded.len() != expected {
        return Err(CrockfordError::WrongLength {
            expected: want,
            found: text.len(),
        });
    }
    Ok(decoded)
}

/// Decode into a fixed-size array (keys, signatures, hashes).
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], CrockfordError> {
    let bytes = decode(text, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/taler/vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("vectors.json is readable");
        serde_json::from_str(&text).expect("vectors.json parses")
    }

    #[test]
    fn every_published_encode_vector_round_trips() {
        let v = vectors();
        let cases = v["crockford_encode"].as_object().expect("object");
        assert!(cases.len() >= 7, "the fixture lists the encode cases");
        for (hex_in, expected) in cases {
            let bytes = hex::decode(hex_in).expect("hex");
            let expected = expected.as_str().expect("string");
            assert_eq!(encode(&bytes), expected, "encode {hex_in}");
            assert_eq!(encoded_len(bytes.len()), expected.len());
            assert_eq!(
                decode(expected, bytes.len()).expect("decodes"),
                bytes,
                "decode {expected}"
            );
        }
    }

    #[test]
    fn known_lengths_match_the_notes() {
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
        assert_eq!(encode(b"Hello"), "91JPRV3F");
    }

    #[test]
    fn decoding_is_case_insensitive_and_accepts_look_alikes() {
        assert_eq!(decode("91jprv3f", 5).expect("lower case"), b"Hello");
        // O→0, I→1, L→1, U→V, in both cases.
        let canonical = decode("011V", 2).expect("canonical");
        for alias in ["OIlu", "oiLu", "0ILV", "O1lU", "0i1v"] {
            assert_eq!(decode(alias, 2).expect(alias), canonical, "{alias}");
        }
    }

    #[test]
    fn other_characters_are_refused_with_their_position() {
        assert_eq!(
            decode("91JP=V3F", 5),
            Err(CrockfordError::InvalidCharacter { position: 4 })
        );
        for bad in ["91JPRV3!", "91JPRV3 ", "é1JPRV3", "91JPRV3\n"] {
            assert!(decode(bad, 5).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_length_must_be_exact_for_the_expected_size() {
        assert_eq!(
            decode("91JPRV3", 5),
            Err(CrockfordError::WrongLength {
                expected: 8,
                found: 7
            })
        );
        assert!(decode("91JPRV3F0", 5).is_err());
        assert!(decode("91JPRV3F", 4).is_err());
        assert!(decode("", 1).is_err());
        assert_eq!(decode("", 0).expect("empty"), Vec::<u8>::new());
    }

    #[test]
    fn non_canonical_pad_bits_are_ignored_like_the_exchange_does() {
        // 0xff is `ZW`: the last symbol carries 3 data bits and 2 pad bits (W = 11100).
        // `ZZ` sets the pad bits: the exchange does not check them, so neither do we.
        assert_eq!(decode("ZZ", 1).expect("pad bits ignored"), vec![0xff]);
        assert_eq!(decode("ZX", 1).expect("pad bits ignored"), vec![0xff]);
        // 32 bytes: 52 symbols = 260 bits, 4 pad bits in the last symbol.
        let zeros = "0".repeat(51) + "F";
        assert_eq!(decode(&zeros, 32).expect("pad bits ignored"), vec![0u8; 32]);
        // A non-canonical signature-sized string decodes to the canonical bytes.
        let sig = "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ";
        assert_eq!(decode(sig, 64).expect("decodes"), vec![0xff; 64]);
    }

    #[test]
    fn decode_array_gives_fixed_sizes() {
        let a: [u8; 32] = decode_array(&"0".repeat(52)).expect("32 bytes");
        assert_eq!(a, [0u8; 32]);
        assert!(decode_array::<32>(&"0".repeat(51)).is_err());
    }

    /// A small deterministic fuzz: pseudo-random byte strings of every length up to 80 encode,
    /// decode back, and decode back again after lower-casing.
    #[test]
    fn round_trip_property_over_pseudo_random_inputs() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2_000 {
            let len = round % 81;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert!(text.chars().all(|c| ALPHABET.contains(c)));
            assert_eq!(decode(&text, len).expect("round trip"), bytes);
            assert_eq!(
                decode(&text.to_ascii_lowercase(), len).expect("lower case round trip"),
                bytes
            );
        }
    }
}
