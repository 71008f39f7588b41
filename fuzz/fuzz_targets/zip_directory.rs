//! The ZIP check runs on untrusted uploads before anything else looks inside them: whatever
//! the bytes, it must answer (entries or an error) without panicking or inflating past its
//! budget, and what it accepts stays within the size and ratio budget with safe names.
#![no_main]

use docgate_core::{archive, MediaRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rules = archive::ZipRules {
        entry_types: ["application/pdf", "image/*"]
            .iter()
            .filter_map(|r| MediaRange::parse(r).ok())
            .collect(),
        max_entries: 64,
        max_total_uncompressed: 1 << 20,
        max_compression_ratio: archive::DEFAULT_MAX_COMPRESSION_RATIO,
    };
    if let Ok(entries) = archive::inspect_with(std::io::Cursor::new(data), &rules, true) {
        let total: u64 = entries.iter().map(|e| e.size).sum();
        assert!(entries.len() <= rules.max_entries);
        assert!(total <= rules.max_total_uncompressed);
        assert!(!archive::ratio_exceeded(
            total,
            data.len() as u64,
            rules.max_compression_ratio
        ));
        for entry in &entries {
            assert_eq!(
                archive::unsafe_name(entry.name.as_bytes()),
                None,
                "{}",
                entry.name
            );
        }
    }
});
