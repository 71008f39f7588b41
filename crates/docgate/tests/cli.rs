//! The CLI's small commands.

mod common;

use std::process::Command;

use common::*;

fn docgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_docgate"))
        .args(args)
        .output()
        .expect("run docgate")
}

fn coreutils(tool: &str, file: &std::path::Path) -> String {
    let out = Command::new(tool).arg(file).output().expect("coreutils");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn hash_agrees_with_coreutils_and_sniffs_the_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Sizes around the read block (1 MiB) and the inline-hash threshold.
    for len in [0u64, 1, 16 * 1024, 1024 * 1024, 3 * 1024 * 1024 + 7] {
        let file = write_file(dir.path(), "doc.pdf", &pdf_bytes(len, len).await);
        let out = docgate(&["hash", "--digest", "all", &file.to_string_lossy()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["size"], len);
        assert_eq!(v["sha256"], coreutils("sha256sum", &file), "len {len}");
        assert_eq!(v["sha512"], coreutils("sha512sum", &file), "len {len}");
        assert_eq!(v["md5"], coreutils("md5sum", &file), "len {len}");
        let expected_type = if len >= 8 {
            "application/pdf"
        } else {
            "application/octet-stream"
        };
        assert_eq!(v["media_type"], expected_type, "len {len}");
    }
    let file = write_file(dir.path(), "x", b"abc");
    let v: serde_json::Value =
        serde_json::from_slice(&docgate(&["hash", &file.to_string_lossy()]).stdout).expect("json");
    assert!(
        v.get("sha512").is_none() && v.get("md5").is_none(),
        "only what was asked: {v}"
    );
    let bad = docgate(&["hash", "--digest", "crc32", &file.to_string_lossy()]);
    assert!(!bad.status.success());
}

#[test]
fn every_emulator_starts_alone_and_prints_where_it_listens() {
    for provider in ["taler", "sila", "finext", "ost"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Proc::spawn(
            &[
                "emulate",
                provider,
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &dir.path().to_string_lossy(),
            ],
            &[],
        );
        assert!(p.url.starts_with("http://127.0.0.1:"), "{}", p.url);
        assert!(p
            .banner
            .iter()
            .any(|l| l.starts_with(&format!("{provider} emulator listening on http://"))));
        p.terminate();
    }
}

#[test]
fn the_ost_emulator_takes_its_credentials_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Proc::spawn(
        &[
            "emulate",
            "ost",
            "--data-dir",
            &dir.path().to_string_lossy(),
            "--api-key",
            "k123",
            "--api-secret",
            "s456",
        ],
        &[],
    );
    assert!(
        p.banner
            .iter()
            .any(|l| l.contains("api_key=k123 api_secret=s456")),
        "{:?}",
        p.banner
    );
    drop(p);
    let bad = docgate(&["emulate", "taler", "--api-key", "x"]);
    assert!(!bad.status.success(), "credentials are an OST-only option");
}
