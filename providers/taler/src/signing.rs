//! The kyc-bulk signature: Ed25519 over a packed struct that binds the body to the customer.
//!
//! ```text
//! u32 size     big-endian, the whole struct INCLUDING this 8-byte header (136 or 104)
//! u32 purpose  big-endian, TALER_SIGNATURE_EXTERN_BULK_UPLOAD (unpublished: configuration)
//! [64] h_body  SHA-512 of the body
//! [64|32] h_payto
//! ```
//! Which payto hash goes into the struct is not settled by the spec; the three readings are
//! [`PaytoHash`] and live in [`h_payto`] alone, selected by configuration on the client and
//! the emulator alike. EdDSA is plain RFC 8032 Ed25519 as libsodium does it: the private key
//! is the 32-byte seed. The exchange rejects non-canonical signatures and small-order keys,
//! so [`verify`] uses `verify_strict`.
//!
//! The body hash is never computed here for a gateway document: the ingest pass already
//! produced its SHA-512, and hashing a large body twice would double the CPU per upload.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::{crockford, payto::normalize_for_hash};

/// How `h_payto` is computed (see the crate README for the three readings of the spec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaytoHash {
    /// Doc-literal: SHA-512 of the payto URI bytes, all 64 bytes (struct: 136 bytes).
    #[default]
    A,
    /// Taler C convention: SHA-512 of the URI plus its NUL terminator, first 32 bytes
    /// (struct: 104 bytes).
    B,
    /// As B, over the normalised URI (`payto::normalize_for_hash`).
    C,
}

impl fmt::Display for PaytoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PaytoHash::A => "A",
            PaytoHash::B => "B",
            PaytoHash::C => "C",
        })
    }
}

/// The payto hash as it goes into the struct: 64 bytes (A) or 32 bytes (B, C).
pub fn h_payto(variant: PaytoHash, payto: &str) -> Vec<u8> {
    match variant {
        PaytoHash::A => Sha512::digest(payto.as_bytes()).to_vec(),
        PaytoHash::B => nul_terminated_sha512_prefix(payto),
        PaytoHash::C => nul_terminated_sha512_prefix(&normalize_for_hash(payto)),
    }
}

fn nul_terminated_sha512_prefix(s: &str) -> Vec<u8> {
    let mut hasher = Sha512::new();
    hasher.update(s.as_bytes());
    hasher.update([0u8]);
    hasher.finalize()[..32].to_vec()
}

/// The packed struct that is signed.
pub fn signed_bytes(purpose: u32, h_body: &[u8; 64], h_payto: &[u8]) -> Vec<u8> {
    let size = 8 + h_body.len() + h_payto.len();
    let mut out = Vec::with_capacity(size);
    // At most 8 + 64 + 64 bytes: the cast cannot truncate.
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(&purpose.to_be_bytes());
    out.extend_from_slice(h_body);
    out.extend_from_slice(h_payto);
    out
}

/// Everything both sides must agree on besides the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningScheme {
    pub purpose: u32,
    pub payto_hash: PaytoHash,
}

impl SigningScheme {
    pub fn message(&self, h_body: &[u8; 64], payto: &str) -> Vec<u8> {
        signed_bytes(self.purpose, h_body, &h_payto(self.payto_hash, payto))
    }
}

/// Why an extern key from the configuration was refused (never shows the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the extern key must be the 32-byte Ed25519 seed as 52 Crockford base32 characters \
         or 64 hex digits; got {0} characters"
    )]
    Format(usize),
    #[error("the extern key is not valid Crockford base32 or hex")]
    Encoding,
}

/// The third party's key: signs uploads; its public half is `$EXTERN_PUB`.
#[derive(Clone)]
pub struct ExternKey {
    key: SigningKey,
    public_crockford: String,
}

impl fmt::Debug for ExternKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternKey")
            .field("public", &self.public_crockford)
            .finish_non_exhaustive()
    }
}

impl ExternKey {
    pub fn from_seed(seed: [u8; 32]) -> ExternKey {
        let key = SigningKey::from_bytes(&seed);
        let public_crockford = crockford::encode(key.verifying_key().as_bytes());
        ExternKey {
            key,
            public_crockford,
        }
    }

    /// Parse the seed as written in a secret: 52 Crockford characters or 64 hex digits.
    pub fn parse(text: &str) -> Result<ExternKey, KeyError> {
        let text = text.trim();
        let seed: [u8; 32] = match text.len() {
            52 => crockford::decode_array(text).map_err(|_| KeyError::Encoding)?,
            64 => {
                let bytes = hex::decode(text).map_err(|_| KeyError::Encoding)?;
                bytes.try_into().map_err(|_| KeyError::Encoding)?
            }
            n => return Err(KeyError::Format(n)),
        };
        Ok(ExternKey::from_seed(seed))
    }

    /// `$EXTERN_PUB`: the public key in Crockford base32.
    pub fn public_crockford(&self) -> &str {
        &self.public_crockford
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The seed in Crockford base32 (sandbox banners only; never log a real key).
    pub fn seed_crockford(&self) -> String {
        crockford::encode(self.key.as_bytes())
    }

    /// The `Taler-Extern-Signature` value for a body hash and payto URI.
    pub fn sign(&self, scheme: &SigningScheme, h_body: &[u8; 64], payto: &str) -> String {
        let signature = self.key.sign(&scheme.message(h_body, payto));
        crockford::encode(&signature.to_bytes())
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature is not 103 Crockford base32 characters")]
    Malformed,
    #[error("the signature does not verify for this key, body hash and payto URI")]
    Invalid,
}

/// Verify a `Taler-Extern-Signature` header value the way the exchange does (strictly).
pub fn verify(
    key: &VerifyingKey,
    scheme: &SigningScheme,
    h_body: &[u8; 64],
    payto: &str,
    signature: &str,
) -> Result<(), VerifyError> {
    let bytes: [u8; 64] = crockford::decode_array(signature).map_err(|_| VerifyError::Malformed)?;
    let signature = Signature::from_bytes(&bytes);
    key.verify_strict(&scheme.message(h_body, payto), &signature)
        .map_err(|_| VerifyError::Invalid)
}

/// Parse a `$EXTERN_PUB` path segment into a public key (rejects off-curve points).
pub fn parse_public(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = crockford::decode_array(text).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// SHA-512 in Crockford base32: the `If-Not-Match` value.
pub fn if_not_match(h_body: &[u8; 64]) -> String {
    crockford::encode(h_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vectors {
        v: serde_json::Value,
        body: Vec<u8>,
    }

    fn vectors() -> Vectors {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/taler"
        );
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{dir}/vectors.json")).expect("read vectors"),
        )
        .expect("json");
        let body = std::fs::read(format!("{dir}/body.bin")).expect("read body");
        Vectors { v, body }
    }

    fn hex_field(v: &serde_json::Value) -> Vec<u8> {
        hex::decode(v.as_str().expect("string")).expect("hex")
    }

    #[test]
    fn body_file_and_body_hash_match_the_vectors() {
        let Vectors { v, body } = vectors();
        assert_eq!(body, hex_field(&v["inputs"]["body_hex"]));
        let h_body: [u8; 64] = Sha512::digest(&body).into();
        assert_eq!(h_body.to_vec(), hex_field(&v["h_body_hex"]));
        assert_eq!(
            if_not_match(&h_body),
            v["if_not_match"].as_str().expect("s")
        );
    }

    #[test]
    fn extern_pub_from_the_seed_matches_in_both_key_spellings() {
        let Vectors { v, .. } = vectors();
        let seed_hex = v["inputs"]["seed_hex"].as_str().expect("seed");
        let from_hex = ExternKey::parse(seed_hex).expect("hex seed");
        assert_eq!(
            from_hex.public_crockford(),
            v["extern_pub"].as_str().expect("pub")
        );
        let from_crockford = ExternKey::parse(&from_hex.seed_crockford()).expect("crockford");
        assert_eq!(
            from_crockford.public_crockford(),
            from_hex.public_crockford()
        );
        assert!(parse_public(from_hex.public_crockford()).is_some());
    }

    #[test]
    fn every_variant_reproduces_h_payto_signed_bytes_and_signature() {
        let Vectors { v, body } = vectors();
        let key = ExternKey::parse(v["inputs"]["seed_hex"].as_str().expect("seed")).expect("key");
        let payto = v["inputs"]["payto"].as_str().expect("payto");
        let purpose = v["inputs"]["purpose"].as_u64().expect("purpose") as u32;
        let h_body: [u8; 64] = Sha512::digest(&body).into();
        for (name, variant, size) in [
            ("A", PaytoHash::A, 136usize),
            ("B", PaytoHash::B, 104),
            ("C", PaytoHash::C, 104),
        ] {
            let expected = &v["variants"][name];
            let scheme = SigningScheme {
                purpose,
                payto_hash: variant,
            };
            assert_eq!(
                h_payto(variant, payto),
                hex_field(&expected["h_payto_hex"]),
                "{name}"
            );
            let message = scheme.message(&h_body, payto);
            assert_eq!(message.len(), size, "{name}");
            assert_eq!(message, hex_field(&expected["signed_bytes_hex"]), "{name}");
            let signature = key.sign(&scheme, &h_body, payto);
            assert_eq!(
                signature,
                expected["signature"].as_str().expect("sig"),
                "{name}"
            );
            assert_eq!(
                verify(&key.verifying_key(), &scheme, &h_body, payto, &signature),
                Ok(())
            );
        }
    }

    #[test]
    fn verification_fails_for_any_changed_input() {
        let Vectors { v, body } = vectors();
        let key = ExternKey::parse(v["inputs"]["seed_hex"].as_str().expect("seed")).expect("key");
        let payto = v["inputs"]["payto"].as_str().expect("payto");
        let scheme = SigningScheme {
            purpose: 65535,
            payto_hash: PaytoHash::A,
        };
        let h_body: [u8; 64] = Sha512::digest(&body).into();
        let sig = key.sign(&scheme, &h_body, payto);
        let pk = key.verifying_key();
        let mut other_body = h_body;
        other_body[0] ^= 1;
        assert_eq!(
            verify(&pk, &scheme, &other_body, payto, &sig),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            verify(
                &pk,
                &scheme,
                &h_body,
                "payto://iban/GB82WEST12345698765432",
                &sig
            ),
            Err(VerifyError::Invalid)
        );
        let other_purpose = SigningScheme {
            purpose: 1,
            ..scheme
        };
        assert_eq!(
            verify(&pk, &other_purpose, &h_body, payto, &sig),
            Err(VerifyError::Invalid)
        );
        let other_variant = SigningScheme {
            payto_hash: PaytoHash::B,
            ..scheme
        };
        assert_eq!(
            verify(&pk, &other_variant, &h_body, payto, &sig),
            Err(VerifyError::Invalid)
        );
        let other_key = ExternKey::from_seed([7u8; 32]);
        assert_eq!(
            verify(&other_key.verifying_key(), &scheme, &h_body, payto, &sig),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            verify(&pk, &scheme, &h_body, payto, &sig[..102]),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn strict_verification_rejects_a_non_canonical_s() {
        // S + L (the group order) verifies under lax rules but is malleable: the exchange
        // refuses it, and so must we.
        let key = ExternKey::from_seed([3u8; 32]);
        let scheme = SigningScheme {
            purpose: 65535,
            payto_hash: PaytoHash::A,
        };
        let h_body = [9u8; 64];
        let payto = "payto://iban/DE89370400440532013000";
        let sig = crockford::decode(&key.sign(&scheme, &h_body, payto), 64).expect("sig");
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut s_plus_l = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
            s_plus_l[i] = sum as u8;
            carry = sum >> 8;
        }
        let mut malleated = sig.clone();
        malleated[32..].copy_from_slice(&s_plus_l);
        // Only meaningful when S + L still fits in 256 bits, which it does for S < 2^253.
        assert_eq!(carry, 0);
        let text = crockford::encode(&malleated);
        assert_eq!(
            verify(&key.verifying_key(), &scheme, &h_body, payto, &text),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn a_small_order_public_key_is_refused() {
        // The identity point (y = 1) is a small-order key: any "signature" is suspect.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let pk = VerifyingKey::from_bytes(&identity).expect("decodes as a point");
        let scheme = SigningScheme {
            purpose: 65535,
            payto_hash: PaytoHash::A,
        };
        // R = identity, S = 0 verifies for the identity key under lax rules.
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let text = crockford::encode(&sig);
        assert_eq!(
            verify(&pk, &scheme, &[0u8; 64], "payto://x/y", &text),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn key_errors_do_not_show_the_key() {
        let err = ExternKey::parse("secretsecret").expect_err("short");
        assert!(!err.to_string().contains("secret"));
        assert_eq!(
            ExternKey::parse(&"g".repeat(64)).expect_err("bad hex"),
            KeyError::Encoding
        );
        assert_eq!(
            ExternKey::parse(&"!".repeat(52)).expect_err("bad b32"),
            KeyError::Encoding
        );
        let dbg = format!("{:?}", ExternKey::from_seed([1u8; 32]));
        assert!(!dbg.contains(&crockford::encode(&[1u8; 32])));
    }
}
