//! `docgate emulate taler` flags: how the emulated exchange is configured.
//!
//! A third party testing its own client against the emulator needs to set what a real
//! exchange's operator would: the signature purpose, the payto-hash reading, which
//! `EXTERN_PUB`s are registered, the upload limit. Every flag is checked when it is parsed,
//! so a typo stops the command with a message naming the flag, before anything listens.
//! A flag left out keeps [`EmulatorOptions::new`]'s value.

use std::{net::SocketAddr, path::PathBuf};

use ed25519_dalek::VerifyingKey;

use super::EmulatorOptions;
use crate::{crockford, signing::PaytoHash};

/// The exchange's configuration from the command line (flatten into a clap command).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct EmulatorArgs {
    /// Signature purpose to verify against (TALER_SIGNATURE_EXTERN_BULK_UPLOAD, unpublished)
    /// [default: 65535, the test vectors' placeholder]
    #[arg(long, value_name = "U32")]
    pub purpose: Option<u32>,

    /// Which h_payto the signature covers: A = SHA-512(payto), 64 bytes; B = SHA-512(payto
    /// NUL) cut to 32 bytes; C = as B over the normalised payto [default: A]
    #[arg(long, value_name = "A|B|C", value_parser = parse_payto_hash)]
    pub payto_hash: Option<PaytoHash>,

    /// Register a third party: its EXTERN_PUB, an Ed25519 public key in Crockford base32
    /// (52 characters). Repeat for several; the sandbox key is always registered
    #[arg(long = "extern-pub", value_name = "CROCKFORD", value_parser = parse_extern_pub)]
    pub extern_pub: Vec<String>,

    /// Largest body accepted, in bytes; larger ones get 413 from their Content-Length
    /// [default: 16777216]
    #[arg(long, value_name = "BYTES", value_parser = parse_upload_limit)]
    pub upload_limit: Option<u64>,
}

impl EmulatorArgs {
    /// The options to [`super::start`] the emulator with: today's defaults, changed where a
    /// flag was given.
    pub fn into_options(self, listen: SocketAddr, data_dir: PathBuf) -> EmulatorOptions {
        let mut options = EmulatorOptions::new(listen, data_dir);
        if let Some(purpose) = self.purpose {
            options.purpose = purpose;
        }
        if let Some(payto_hash) = self.payto_hash {
            options.payto_hash = payto_hash;
        }
        if let Some(upload_limit) = self.upload_limit {
            options.upload_limit = upload_limit;
        }
        options.known_keys.extend(self.extern_pub);
        options
    }
}

fn parse_payto_hash(text: &str) -> Result<PaytoHash, String> {
    match text.trim() {
        "A" | "a" => Ok(PaytoHash::A),
        "B" | "b" => Ok(PaytoHash::B),
        "C" | "c" => Ok(PaytoHash::C),
        other => Err(format!(
            "`{other}` is not a payto-hash variant: use A, B or C"
        )),
    }
}

/// A registrable `EXTERN_PUB`, spelled canonically (upper case, no look-alikes).
fn parse_extern_pub(text: &str) -> Result<String, String> {
    let bytes: [u8; 32] = crockford::decode_array(text.trim()).map_err(|e| {
        format!("not an EXTERN_PUB (32 bytes in Crockford base32, 52 characters): {e}")
    })?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "decodes to 32 bytes that are not an Ed25519 public key".to_owned())?;
    if key.is_weak() {
        // verify_strict refuses every signature under a small-order key: registering one
        // could only produce 403s.
        return Err("is a small-order (weak) Ed25519 key, which can never sign".to_owned());
    }
    Ok(crockford::encode(key.as_bytes()))
}

fn parse_upload_limit(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("the upload limit must be at least 1 byte".to_owned()),
        Ok(limit) => Ok(limit),
        Err(_) => Err(format!(
            "`{text}` is not a number of bytes (a whole number, e.g. 16777216)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        emulator: EmulatorArgs,
    }

    fn parse(args: &[&str]) -> Result<EmulatorArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("emulate-taler").chain(args.iter().copied()))
            .map(|cli| cli.emulator)
    }

    fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    // The published vectors' key (seed 00 01 … 1f).
    const VECTOR_PUB: &str = "0EGGFFZKSR8BW7BGVMCEEJY0K5KY9NHGKEJGTQRXVJ3684JN66W0";

    #[test]
    fn no_flags_give_todays_exchange() {
        let from_args = parse(&[])
            .expect("parses")
            .into_options(listen(), "d".into());
        let new = EmulatorOptions::new(listen(), "d".into());
        assert_eq!(from_args.purpose, new.purpose);
        assert_eq!(from_args.payto_hash, new.payto_hash);
        assert_eq!(from_args.upload_limit, new.upload_limit);
        assert_eq!(from_args.known_keys, new.known_keys);
    }

    #[test]
    fn every_flag_reaches_the_options() {
        let options = parse(&[
            "--purpose",
            "1234",
            "--payto-hash",
            "B",
            "--extern-pub",
            VECTOR_PUB,
            "--extern-pub",
            &VECTOR_PUB.to_lowercase().replace('0', "o"),
            "--upload-limit",
            "1048576",
        ])
        .expect("parses")
        .into_options(listen(), "d".into());
        assert_eq!(options.purpose, 1234);
        assert_eq!(options.payto_hash, PaytoHash::B);
        assert_eq!(options.upload_limit, 1_048_576);
        assert_eq!(
            options.known_keys,
            [VECTOR_PUB, VECTOR_PUB],
            "look-alikes and case are spelled canonically"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag_and_the_reason() {
        let refused = |args: &[&str], says: &str| {
            let err = parse(args).expect_err("refused").to_string();
            assert!(err.contains(args[0]), "{err}");
            assert!(err.contains(says), "{err}");
        };
        refused(&["--extern-pub", "not-a-key"], "Crockford base32");
        refused(&["--extern-pub", &VECTOR_PUB[..51]], "expected 52");
        // All zeros decode, but are the identity point: small order.
        refused(&["--extern-pub", &"0".repeat(52)], "small-order");
        refused(&["--payto-hash", "D"], "use A, B or C");
        refused(&["--upload-limit", "0"], "at least 1 byte");
        refused(&["--upload-limit", "16MiB"], "not a number of bytes");
        refused(&["--purpose", "4294967296"], "--purpose");
    }

    #[test]
    fn a_y_coordinate_off_the_curve_is_not_a_key() {
        // y = 2 has no x on Ed25519 (it does not decompress).
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        let err = parse_extern_pub(&crockford::encode(&bytes)).expect_err("refused");
        assert!(err.contains("not an Ed25519 public key"), "{err}");
    }
}
