//! Base64 of a document that is never whole in memory.
//!
//! Base64 turns every 3 input bytes into 4 characters, so a block can be encoded on its own
//! only when it starts on a 3-byte boundary. The spool hands out blocks of arbitrary length;
//! [`Base64Encoder`] encodes the aligned part of each block straight away and carries the 0–2
//! leftover bytes into the next one. Concatenating its outputs gives exactly the standard,
//! padded base64 of the whole document, whose length is known up front: [`encoded_len`].

use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;

/// The padded base64 length of `n` bytes: 4·⌈n/3⌉.
pub const fn encoded_len(n: u64) -> u64 {
    n.div_ceil(3) * 4
}

/// Incremental standard (RFC 4648, padded) base64 encoder.
#[derive(Debug, Default)]
pub struct Base64Encoder {
    carry: [u8; 2],
    carry_len: usize,
    consumed: u64,
}

impl Base64Encoder {
    pub fn new() -> Base64Encoder {
        Base64Encoder::default()
    }

    /// Input bytes seen so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Encode what can be encoded of `block` now; keeps up to 2 bytes for later.
    pub fn push(&mut self, block: &[u8]) -> Bytes {
        self.consumed += block.len() as u64;
        let mut rest = block;
        let mut out = String::with_capacity((self.carry_len + block.len()) / 3 * 4);
        if self.carry_len > 0 {
            let need = 3 - self.carry_len;
            if rest.len() < need {
                self.carry[self.carry_len..self.carry_len + rest.len()].copy_from_slice(rest);
                self.carry_len += rest.len();
                return Bytes::new();
            }
            let mut triple = [0u8; 3];
            triple[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            triple[self.carry_len..].copy_from_slice(&rest[..need]);
            STANDARD.encode_string(triple, &mut out);
            rest = &rest[need..];
            self.carry_len = 0;
        }
        let aligned = rest.len() / 3 * 3;
        STANDARD.encode_string(&rest[..aligned], &mut out);
        let tail = &rest[aligned..];
        self.carry[..tail.len()].copy_from_slice(tail);
        self.carry_len = tail.len();
        Bytes::from(out)
    }

    /// The last 0 or 4 characters (with padding).
    pub fn finish(self) -> Bytes {
        Bytes::from(STANDARD.encode(&self.carry[..self.carry_len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes without a dependency: a small xorshift generator.
    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    fn encode_in_pieces(data: &[u8], cuts: &[usize]) -> String {
        let mut enc = Base64Encoder::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            out.extend_from_slice(&enc.push(&data[start..cut]));
            start = cut;
        }
        assert_eq!(enc.consumed(), data.len() as u64);
        out.extend_from_slice(&enc.finish());
        String::from_utf8(out).expect("base64 is ASCII")
    }

    #[test]
    fn every_split_into_three_pieces_of_every_short_length_matches_one_shot_base64() {
        // Lengths 0..=40 cover 0, 1 and 2 mod 3 many times over; two cuts at every pair of
        // offsets put block boundaries everywhere, including empty blocks.
        for len in 0..=40 {
            let data = pseudo_random(len, 0x9e37_79b9_7f4a_7c15 ^ len as u64);
            let expected = STANDARD.encode(&data);
            assert_eq!(expected.len() as u64, encoded_len(len as u64));
            for i in 0..=len {
                for j in i..=len {
                    assert_eq!(
                        encode_in_pieces(&data, &[i, j]),
                        expected,
                        "len {len} cuts {i},{j}"
                    );
                }
            }
        }
    }

    #[test]
    fn many_small_irregular_blocks_of_a_larger_document() {
        for (len, seed) in [(100_000usize, 1u64), (100_001, 2), (100_002, 3)] {
            let data = pseudo_random(len, seed);
            let mut cuts = Vec::new();
            let mut at = 0;
            let sizes = pseudo_random(2000, seed + 10);
            for s in sizes {
                at += s as usize % 7 + 1; // blocks of 1..=7 bytes, every residue mod 3
                if at >= len {
                    break;
                }
                cuts.push(at);
            }
            assert_eq!(encode_in_pieces(&data, &cuts), STANDARD.encode(&data));
        }
    }

    #[test]
    fn encoded_length_is_four_thirds_rounded_up() {
        assert_eq!(encoded_len(0), 0);
        assert_eq!(encoded_len(1), 4);
        assert_eq!(encoded_len(2), 4);
        assert_eq!(encoded_len(3), 4);
        assert_eq!(encoded_len(4), 8);
        assert_eq!(encoded_len(50 * 1024 * 1024), 69_905_068);
    }
}
