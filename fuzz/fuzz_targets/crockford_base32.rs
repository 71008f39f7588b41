//! Taler keys and signatures arrive as GNUnet Crockford base32. Decoding arbitrary text must
//! never panic, must only succeed at the exact length, and must invert encoding.
#![no_main]

use docgate_taler::crockford;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As bytes to encode: the round trip is exact.
    let text = crockford::encode(data);
    assert_eq!(text.len(), crockford::encoded_len(data.len()));
    assert_eq!(crockford::decode(&text, data.len()).as_deref(), Ok(data));
    // As text to decode, at the lengths the protocol uses and at the length it implies.
    if let Ok(text) = std::str::from_utf8(data) {
        for expected in [32, 64, text.len() * 5 / 8] {
            if let Ok(bytes) = crockford::decode(text, expected) {
                assert_eq!(bytes.len(), expected);
                // Aliases (O, I, L, U, lower case) decode, but re-encode canonically.
                let canonical = crockford::encode(&bytes);
                assert_eq!(crockford::decode(&canonical, expected), Ok(bytes));
            }
        }
    }
});
