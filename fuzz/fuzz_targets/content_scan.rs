//! The content scanner sees every byte of every upload, split into blocks wherever the network
//! split them: whatever the bytes, it must answer without panicking, and its verdict (refuse
//! or accept) must not depend on where the blocks were cut.
#![no_main]

use docgate_core::{ContentScan, ScanError};
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 4] = ["image/jpeg", "image/png", "application/pdf", "image/gif"];

fn verdict(media_type: &str, data: &[u8], block: usize) -> Result<(), ScanError> {
    let mut scan = ContentScan::for_media_type(media_type);
    for chunk in data.chunks(block) {
        scan.feed(chunk)?;
    }
    scan.finish()
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let media_type = TYPES[usize::from(selector) % TYPES.len()];
    let block = usize::from(selector / 4) + 1;
    let whole = verdict(media_type, data, data.len().max(1));
    let pieces = verdict(media_type, data, block);
    assert_eq!(
        whole.is_ok(),
        pieces.is_ok(),
        "{media_type} in blocks of {block}: {whole:?} vs {pieces:?}"
    );
});
