//! Sila's ECDSA scheme: Ethereum-style signatures over the exact bytes of a message.
//!
//! Sila inherited its request signing from Ethereum wallets, so every piece is Ethereum's:
//!
//! * digest = **Keccak-256** of the message bytes — the original Keccak that Ethereum uses,
//!   which differs from NIST SHA3-256 only in padding (and therefore in every output bit);
//! * **no** EIP-191 `"\x19Ethereum Signed Message:\n<len>"` prefix: a wallet's `personal_sign`
//!   output is a *different* signature and Sila rejects it;
//! * secp256k1 ECDSA with RFC 6979 nonces and low-s normalisation, written as
//!   `hex(r ‖ s ‖ v)` with `v = 27 + recovery id`, lower case, no `0x` — 130 characters;
//! * a key is identified by its **address**: the last 20 bytes of the Keccak-256 of the
//!   64-byte uncompressed public key (without the `0x04` tag).
//!
//! A receiver never verifies against a public key it was given; it *recovers* the signer's
//! address from the signature and compares it with the address registered for the handle.

use std::{fmt, str::FromStr};

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha3::{Digest, Keccak256};

/// Length of a signature header value: 65 bytes as hex.
pub const SIGNATURE_HEX_LEN: usize = 130;

/// Keccak-256 (Ethereum's, not NIST SHA3-256).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("a private key is 32 bytes of hex (64 characters, optional 0x)")]
    KeyFormat,
    #[error("the private key is not a valid secp256k1 scalar")]
    KeyRange,
    #[error("an address is 20 bytes of hex (40 characters, optional 0x)")]
    AddressFormat,
    #[error("a signature is 65 bytes of hex (130 characters)")]
    SignatureFormat,
    #[error("the signature's recovery byte must be 27 or 28 (or 0 or 1)")]
    RecoveryByte,
    #[error("no public key can be recovered from this signature")]
    Unrecoverable,
    #[error("signing failed")]
    Sign,
}

/// An Ethereum address (20 bytes). Compared byte-wise, so the EIP-55 mixed-case spelling and
/// the lower-case one are the same address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

impl Address {
    pub fn of_key(key: &VerifyingKey) -> Address {
        let point = key.to_encoded_point(false);
        // Skip the 0x04 "uncompressed" tag: the address hashes only X ‖ Y.
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Address {
    type Err = SigningError;
    fn from_str(s: &str) -> Result<Address, SigningError> {
        let hex_part = strip_0x(s.trim());
        let bytes = hex::decode(hex_part).map_err(|_| SigningError::AddressFormat)?;
        let arr: [u8; 20] = bytes.try_into().map_err(|_| SigningError::AddressFormat)?;
        Ok(Address(arr))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn strip_0x(s: &str) -> &str {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
}

/// A secp256k1 private key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// Parse 64 hex characters, with or without `0x` (the form Sila's SDKs use).
    pub fn from_hex(s: &str) -> Result<PrivateKey, SigningError> {
        let bytes = hex::decode(strip_0x(s.trim())).map_err(|_| SigningError::KeyFormat)?;
        if bytes.len() != 32 {
            return Err(SigningError::KeyFormat);
        }
        SigningKey::from_slice(&bytes)
            .map(PrivateKey)
            .map_err(|_| SigningError::KeyRange)
    }

    pub fn address(&self) -> Address {
        Address::of_key(self.0.verifying_key())
    }

    /// The `authsignature`/`usersignature` header value for `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, SigningError> {
        let digest = keccak256(message);
        let (sig, recid) = self
            .0
            .sign_prehash_recoverable(&digest)
            .map_err(|_| SigningError::Sign)?;
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + recid.to_byte();
        Ok(hex::encode(out))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(address {})", self.address())
    }
}

/// The address whose key produced `signature_hex` over `message`.
///
/// High-s signatures are accepted the way Ethereum's `ecrecover` accepts them (they recover
/// the same key once normalised); what is checked is only *who* signed these exact bytes.
pub fn recover_signer(message: &[u8], signature_hex: &str) -> Result<Address, SigningError> {
    let raw =
        hex::decode(strip_0x(signature_hex.trim())).map_err(|_| SigningError::SignatureFormat)?;
    if raw.len() != 65 {
        return Err(SigningError::SignatureFormat);
    }
    let v = match raw[64] {
        27 | 28 => raw[64] - 27,
        0 | 1 => raw[64],
        _ => return Err(SigningError::RecoveryByte),
    };
    let sig = Signature::from_slice(&raw[..64]).map_err(|_| SigningError::SignatureFormat)?;
    let (sig, y_odd) = match sig.normalize_s() {
        Some(low) => (low, v == 0),
        None => (sig, v == 1),
    };
    let recid = RecoveryId::new(y_odd, false);
    let key = VerifyingKey::recover_from_prehash(&keccak256(message), &sig, recid)
        .map_err(|_| SigningError::Unrecoverable)?;
    Ok(Address::of_key(&key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The public test keys from the notes (also the emulator's built-in credentials).
    const APP_KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const USER_KEY: &str = "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f";

    fn vectors() -> serde_json::Map<String, Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/sila/signature_vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("signature vectors are readable");
        serde_json::from_str(&text).expect("vectors parse")
    }

    fn field<'a>(v: &'a Value, name: &str) -> &'a str {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("vector field {name}"))
    }

    #[test]
    fn keccak_is_ethereums_not_nist_sha3() {
        assert_eq!(
            hex::encode(keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn every_vector_signs_byte_for_byte_and_recovers_its_signer() {
        let app = PrivateKey::from_hex(APP_KEY).expect("app key");
        let user = PrivateKey::from_hex(USER_KEY).expect("user key");
        let all = vectors();
        assert_eq!(
            all.len(),
            3,
            "hello, py_style_documents, node_style_documents"
        );
        for (name, v) in &all {
            let message = field(v, "message").as_bytes();
            assert_eq!(
                message.len() as u64,
                v["utf8_len"].as_u64().expect("len"),
                "{name}"
            );
            assert_eq!(
                hex::encode(keccak256(message)),
                field(v, "keccak256"),
                "{name}"
            );

            let app_address: Address = field(v, "app_address").parse().expect("address");
            let user_address: Address = field(v, "user_address").parse().expect("address");
            assert_eq!(app.address(), app_address, "{name}");
            assert_eq!(user.address(), user_address, "{name}");

            let app_sig = app.sign(message).expect("sign");
            assert_eq!(
                app_sig,
                field(v, "app_signature"),
                "{name}: RFC 6979 is deterministic"
            );
            assert_eq!(app_sig.len(), SIGNATURE_HEX_LEN);
            assert_eq!(
                user.sign(message).expect("sign"),
                field(v, "user_signature"),
                "{name}"
            );

            assert_eq!(
                recover_signer(message, field(v, "app_signature")),
                Ok(app_address)
            );
            assert_eq!(
                recover_signer(message, field(v, "user_signature")),
                Ok(user_address)
            );
        }
    }

    #[test]
    fn the_eip191_prefixed_signature_does_not_recover_the_app_address() {
        for (name, v) in &vectors() {
            let wrong = field(v, "app_signature_if_EIP191_prefixed(WRONG)");
            let app_address: Address = field(v, "app_address").parse().expect("address");
            let recovered = recover_signer(field(v, "message").as_bytes(), wrong);
            // Recovery of *some* key may succeed; it must never be the app's.
            assert_ne!(recovered, Ok(app_address), "{name}");
        }
    }

    #[test]
    fn a_changed_message_recovers_someone_else() {
        let v = &vectors()["hello"];
        let sig = field(v, "app_signature");
        let app_address: Address = field(v, "app_address").parse().expect("address");
        assert_ne!(recover_signer(b"hellO", sig), Ok(app_address));
    }

    #[test]
    fn high_s_and_zero_based_v_recover_like_ecrecover() {
        let key = PrivateKey::from_hex(USER_KEY).expect("key");
        let sig = hex::decode(key.sign(b"msg").expect("sign")).expect("hex");
        let parsed = Signature::from_slice(&sig[..64]).expect("sig");
        let (r, s) = parsed.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).expect("high-s sig");
        let mut flipped = high.to_bytes().to_vec();
        flipped.push(if sig[64] == 27 { 28 } else { 27 });
        assert_eq!(
            recover_signer(b"msg", &hex::encode(&flipped)),
            Ok(key.address())
        );

        let mut zero_based = sig.clone();
        zero_based[64] -= 27;
        assert_eq!(
            recover_signer(b"msg", &hex::encode(&zero_based)),
            Ok(key.address())
        );
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        assert_eq!(
            PrivateKey::from_hex("abc").err(),
            Some(SigningError::KeyFormat)
        );
        assert_eq!(
            PrivateKey::from_hex(&"0".repeat(64)).err(),
            Some(SigningError::KeyRange)
        );
        assert_eq!("0x12".parse::<Address>(), Err(SigningError::AddressFormat));
        assert_eq!(
            recover_signer(b"m", "zz"),
            Err(SigningError::SignatureFormat)
        );
        let mut bad_v = "11".repeat(64);
        bad_v.push_str("05");
        assert_eq!(
            recover_signer(b"m", &bad_v),
            Err(SigningError::RecoveryByte)
        );
    }

    #[test]
    fn debug_never_prints_a_private_key() {
        let key = PrivateKey::from_hex(APP_KEY).expect("key");
        let shown = format!("{key:?}");
        assert!(!shown.contains("4c0883a6"), "{shown}");
        assert!(shown.contains("0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"));
    }
}
