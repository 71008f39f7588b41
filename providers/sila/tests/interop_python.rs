//! Interop with the real Sila Python SDK (`silasdk` from PyPI, pinned in
//! `interop/requirements.txt`): the SDK, unmodified, talks to the emulator and must succeed
//! with `uploadDocument` and `uploadDocuments`, be refused — with Sila's status and
//! envelope — for tampered uploads, list what it uploaded with `listDocuments` (filters,
//! paging, order) and fetch each file back byte-identical with `getDocument`. See
//! `interop/sila_sdk_interop.py` for the checks.
//!
//! `DOCGATE_INTEROP_PYTHON` names a Python with those requirements installed (the repo's
//! test script builds a venv from every `providers/*/interop/requirements.txt`). Without it
//! this test fails: a skipped interop test would look like a passing one.

mod common;

use common::*;

#[tokio::test]
async fn the_real_python_sdk_is_accepted_and_its_tampered_uploads_refused() {
    let python = std::env::var("DOCGATE_INTEROP_PYTHON").unwrap_or_else(|_| {
        panic!(
            "DOCGATE_INTEROP_PYTHON is not set. Create a venv with \
             `python3.11 -m venv /tmp/venv && /tmp/venv/bin/pip install -r {}/interop/requirements.txt` \
             and run the tests with DOCGATE_INTEROP_PYTHON=/tmp/venv/bin/python",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let (emu, _dir) = start_emulator(|_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/sila_sdk_interop.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg("--base-url")
        .arg(emu.url())
        .arg("--fixtures")
        .arg(fixtures())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the silasdk interop script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    println!("{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // What the SDK stored: one single upload and one two-file upload; nothing tampered.
    let stored = emu.stored();
    assert_eq!(stored.len(), 3, "{stored:#?}");
    assert_eq!(stored.iter().filter(|d| d.label == "file").count(), 1);
    let multi: Vec<_> = stored
        .iter()
        .filter(|d| d.label.starts_with("file_"))
        .collect();
    assert_eq!(multi.len(), 2);
    assert_eq!(multi[0].reference, multi[1].reference, "one request");
    assert!(stored.iter().all(|d| d.request_content_length.is_some()));
    emu.stop().await.expect("stop");
}
