//! `docgate uploads …` against the sandbox gateway, through the real binary.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const KEY: &str = "uploads-cli-test-key";

fn docgate(url: &str, args: &[&str], key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_docgate"));
    cmd.args(args)
        .arg("--url")
        .arg(url)
        .env_remove("DOCGATE_API_KEY");
    if let Some(key) = key {
        cmd.env("DOCGATE_API_KEY", key);
    }
    cmd.output().expect("run docgate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[tokio::test]
async fn list_show_events_and_erase_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Proc::sandbox(&dir.path().join("data"), KEY);
    let url = gateway.url.clone();
    let doc = write_file(dir.path(), "jane-roe.pdf", &pdf_bytes(20_000, 3).await);
    let doc_arg = format!("file={}", doc.display());
    let payto = format!("payto={PAYTO}");
    let up = docgate(
        &url,
        &["upload", "--provider", "taler", "--field", &payto, &doc_arg],
        Some(KEY),
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let id = json(&up)["id"].as_str().expect("id").to_owned();

    // The table names the upload and its status; --json is the gateway's page.
    let list = docgate(&url, &["uploads", "list"], Some(KEY));
    assert!(list.status.success());
    let table = stdout(&list);
    let header = table.lines().next().unwrap_or("");
    assert!(
        header.starts_with("id") && header.contains("status"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("a row for the upload");
    assert!(row.contains("delivered"), "{row}");
    let page = json(&docgate(
        &url,
        &["uploads", "list", "--json", "--status", "delivered"],
        Some(KEY),
    ));
    assert_eq!(page["items"][0]["id"], id.as_str());
    let none = json(&docgate(
        &url,
        &["uploads", "list", "--json", "--status", "failed"],
        Some(KEY),
    ));
    assert_eq!(none["items"], serde_json::json!([]));

    let show = docgate(&url, &["uploads", "show", &id], Some(KEY));
    assert!(stdout(&show).contains("jane-roe.pdf"), "{}", stdout(&show));
    let events = stdout(&docgate(&url, &["uploads", "events", &id], Some(KEY)));
    assert!(
        events.contains("received") && events.contains("delivered"),
        "{events}"
    );

    // A refusal: exit 1 with the problem's code on stderr.
    let retry = docgate(&url, &["uploads", "retry", &id], Some(KEY));
    assert!(!retry.status.success());
    assert!(String::from_utf8_lossy(&retry.stderr).contains("not_retryable"));

    let erased = json(&docgate(
        &url,
        &["uploads", "erase", &id, "--json"],
        Some(KEY),
    ));
    assert!(erased["erased_at"].is_string(), "{erased}");
    let show = stdout(&docgate(&url, &["uploads", "show", &id], Some(KEY)));
    assert!(
        !show.contains("jane-roe.pdf") && show.contains("erased_at"),
        "{show}"
    );

    // The key comes from the environment only.
    let no_key = docgate(&url, &["uploads", "list"], None);
    assert!(!no_key.status.success());
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("DOCGATE_API_KEY"));
    let as_arg = docgate(&url, &["uploads", "list", "--api-key", KEY], None);
    assert!(!as_arg.status.success(), "no --api-key flag");
}
