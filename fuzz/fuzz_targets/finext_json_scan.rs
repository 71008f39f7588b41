//! The Finext emulator's streaming JSON reader takes request bodies from the network: any
//! bytes must give a result or an error, never a panic, and decoded documents must respect
//! the size cap.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use docgate_finext::emulator::scan::{scan, DocumentProblem, ScanSpec};
use libfuzzer_sys::fuzz_target;

fn out_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("docgate-fuzz-finext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let spec = ScanSpec {
        documents: &["front", "back"],
        texts: &[
            "username",
            "timestamp",
            "request_id",
            "sign",
            "address_type",
        ],
        max_text: 64,
        max_document_bytes: 4096,
        out_dir: out_dir(),
        prefix: "fuzz",
    };
    if let Ok(scanned) = scan(std::io::BufReader::with_capacity(7, data), &spec) {
        for text in scanned.texts.values() {
            assert!(text.len() <= spec.max_text);
        }
        for doc in scanned.documents.values() {
            if doc.problem != Some(DocumentProblem::TooLarge { limit: 4096 }) {
                assert!(doc.size <= spec.max_document_bytes);
            }
        }
    }
});
