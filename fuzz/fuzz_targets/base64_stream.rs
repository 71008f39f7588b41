//! Finext bodies carry documents as base64 produced block by block from the spool. However
//! the document is cut into blocks, the stream must equal one-shot standard base64.
#![no_main]

use base64::Engine as _;
use docgate_finext::base64_stream::Base64Encoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, document)) = data.split_first() else {
        return;
    };
    let block = usize::from(cut).max(1);
    let mut encoder = Base64Encoder::new();
    let mut out = Vec::new();
    for chunk in document.chunks(block) {
        out.extend_from_slice(&encoder.push(chunk));
    }
    assert_eq!(encoder.consumed(), document.len() as u64);
    out.extend_from_slice(&encoder.finish());
    assert_eq!(
        out,
        base64::engine::general_purpose::STANDARD
            .encode(document)
            .into_bytes()
    );
});
