//! The Finext emulator's body reader (struson + base64's streaming decoder) takes request
//! bodies from the network: any bytes must give a result or an error, never a panic (struson
//! panics on misuse, so this also checks the reader is driven correctly on every path), and
//! decoded documents must respect the size cap. When serde_json also reads the body as an
//! object, both must agree on every text field and every decoded document.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use base64::{engine::general_purpose::STANDARD, Engine};
use docgate_finext::emulator::scan::{scan, DocumentProblem, ScanSpec, Scanned};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const DOCUMENTS: [&str; 2] = ["front", "back"];
const TEXTS: [&str; 5] = [
    "username",
    "timestamp",
    "request_id",
    "sign",
    "address_type",
];

fn out_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("docgate-fuzz-finext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// Where serde_json read the same object, the scan must have read the same values.
fn agrees_with_serde(scanned: &Scanned, object: &serde_json::Map<String, Value>) {
    for key in TEXTS {
        match object.get(key) {
            Some(Value::String(s)) => assert_eq!(scanned.texts.get(key), Some(s), "{key}"),
            Some(Value::Null) | None => assert!(!scanned.texts.contains_key(key), "{key}"),
            // Numbers are kept as written; serde_json may spell them differently.
            Some(_) => assert!(scanned.texts.contains_key(key), "{key}"),
        }
    }
    for key in DOCUMENTS {
        let Some(Value::String(text)) = object.get(key) else {
            assert!(!scanned.documents.contains_key(key), "{key}");
            continue;
        };
        let doc = &scanned.documents[key];
        match (STANDARD.decode(text), &doc.problem) {
            (Ok(bytes), None) => {
                let written = std::fs::read(&doc.path).expect("decoded file");
                assert_eq!(written, bytes, "{key}");
                assert_eq!(doc.size, bytes.len() as u64);
            }
            (Ok(bytes), Some(DocumentProblem::TooLarge { limit })) => {
                assert!(bytes.len() as u64 > *limit)
            }
            (Err(_), Some(_)) => {}
            (decoded, problem) => panic!("{key}: base64 says {decoded:?}, scan says {problem:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let spec = ScanSpec {
        documents: &DOCUMENTS,
        texts: &TEXTS,
        max_text: 64,
        max_document_bytes: 4096,
        out_dir: out_dir(),
        prefix: "fuzz",
    };
    let Ok(scanned) = scan(std::io::BufReader::with_capacity(7, data), &spec) else {
        return;
    };
    for text in scanned.texts.values() {
        assert!(text.len() <= spec.max_text);
    }
    for doc in scanned.documents.values() {
        if doc.problem != Some(DocumentProblem::TooLarge { limit: 4096 }) {
            assert!(doc.size <= spec.max_document_bytes);
        }
    }
    if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(data) {
        agrees_with_serde(&scanned, &object);
    }
});
