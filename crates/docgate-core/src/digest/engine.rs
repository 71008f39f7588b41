//! The hash functions behind the pipeline: OpenSSL's libcrypto where it is linked, the
//! pure-Rust crates otherwise.
//!
//! Why a C library for three standard hashes: on the 2-core AMD EPYC the targets are measured
//! on, libcrypto's assembly computes SHA-512 at ~870 MB/s and MD5 at ~760 MB/s, where `sha2`
//! (with its AVX2 backend; `ring` is no faster) reaches ~610 MB/s and `md-5` (its assembly
//! included) ~630 MB/s. SHA-256 is the same in both (the CPU's SHA instructions). SHA-512 is
//! most of a Taler upload's CPU, so that 40 % is the gateway's, not a benchmark's.
//!
//! The `openssl` feature (on by default) links the system's libcrypto. Without it — or when
//! libcrypto refuses an algorithm, as a FIPS-only configuration refuses MD5 — the pure-Rust
//! implementations are used, with identical results: [`super::Digests::of`] always uses them,
//! and the tests check every pipeline against it.

use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512};

use super::{cost::Algorithm, DigestError, Digests};

/// One running hash.
pub(crate) struct Engine {
    algorithm: Algorithm,
    state: State,
}

enum State {
    #[cfg(feature = "openssl")]
    Libcrypto(openssl::hash::Hasher),
    Sha256(Sha256),
    Sha512(Box<Sha512>),
    Md5(Md5),
    /// libcrypto refused a block: the digest is lost, and `finish` says so.
    #[cfg(feature = "openssl")]
    Failed,
}

impl Engine {
    /// libcrypto's implementation when it is linked and agrees to run the algorithm.
    pub(crate) fn new(algorithm: Algorithm) -> Engine {
        #[cfg(feature = "openssl")]
        {
            use openssl::hash::{Hasher, MessageDigest};
            let md = match algorithm {
                Algorithm::Sha256 => MessageDigest::sha256(),
                Algorithm::Sha512 => MessageDigest::sha512(),
                Algorithm::Md5 => MessageDigest::md5(),
            };
            if let Ok(h) = Hasher::new(md) {
                return Engine {
                    algorithm,
                    state: State::Libcrypto(h),
                };
            }
        }
        Engine::pure_rust(algorithm)
    }

    /// The pure-Rust implementation, whatever is linked.
    pub(crate) fn pure_rust(algorithm: Algorithm) -> Engine {
        let state = match algorithm {
            Algorithm::Sha256 => State::Sha256(Sha256::new()),
            Algorithm::Sha512 => State::Sha512(Box::default()),
            Algorithm::Md5 => State::Md5(Md5::new()),
        };
        Engine { algorithm, state }
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            #[cfg(feature = "openssl")]
            State::Libcrypto(h) => {
                if h.update(data).is_err() {
                    self.state = State::Failed;
                }
            }
            State::Sha256(h) => h.update(data),
            State::Sha512(h) => h.update(data),
            State::Md5(h) => h.update(data),
            #[cfg(feature = "openssl")]
            State::Failed => {}
        }
    }

    /// Write the digest into its place in `out`.
    pub(crate) fn finish_into(self, out: &mut Digests) -> Result<(), DigestError> {
        let failed = || DigestError::new(format!("libcrypto failed on {}", self.algorithm.name()));
        match self.state {
            #[cfg(feature = "openssl")]
            State::Libcrypto(mut h) => {
                let bytes = h.finish().map_err(|_| failed())?;
                let wrong = |_| DigestError::new("libcrypto returned a digest of another length");
                match self.algorithm {
                    Algorithm::Sha256 => out.sha256 = bytes[..].try_into().map_err(wrong)?,
                    Algorithm::Sha512 => out.sha512 = Some(bytes[..].try_into().map_err(wrong)?),
                    Algorithm::Md5 => out.md5 = Some(bytes[..].try_into().map_err(wrong)?),
                }
            }
            State::Sha256(h) => out.sha256 = h.finalize().into(),
            State::Sha512(h) => out.sha512 = Some(h.finalize().into()),
            State::Md5(h) => out.md5 = Some(h.finalize().into()),
            #[cfg(feature = "openssl")]
            State::Failed => return Err(failed()),
        }
        Ok(())
    }

    /// Which implementation runs (for `docgate hash --verbose`).
    pub(crate) fn implementation(&self) -> &'static str {
        match self.state {
            #[cfg(feature = "openssl")]
            State::Libcrypto(_) => "libcrypto",
            _ => "pure Rust",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DigestSet;

    /// Both implementations, fed the same bytes in odd pieces, agree (libcrypto is checked
    /// against the pure-Rust crates, which carry the published vectors in `known_answers`).
    #[test]
    fn libcrypto_and_pure_rust_agree_on_every_algorithm() {
        let data: Vec<u8> = (0..300_001u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut a = Digests::of(&[], DigestSet::ALL);
        let mut b = a.clone();
        for algorithm in Algorithm::ALL {
            let mut fast = Engine::new(algorithm);
            let mut reference = Engine::pure_rust(algorithm);
            for piece in data.chunks(4093) {
                fast.update(piece);
                reference.update(piece);
            }
            fast.finish_into(&mut a).expect("digest");
            reference.finish_into(&mut b).expect("digest");
        }
        assert_eq!(a, b);
        assert_eq!(a, Digests::of(&data, DigestSet::ALL));
    }

    #[cfg(feature = "openssl")]
    #[test]
    fn libcrypto_is_used_where_it_is_linked() {
        for algorithm in Algorithm::ALL {
            assert_eq!(Engine::new(algorithm).implementation(), "libcrypto");
        }
    }
}
