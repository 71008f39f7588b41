//! Memory stays bounded per upload, whatever the document size.
//!
//! 16 concurrent 15 MiB uploads (240 MiB in flight) through the sandbox — gateway and Taler
//! emulator in one process — must raise its resident memory by less than 64 MiB (issue #13's
//! bound for a burst). Measured: 31–55 MiB from run to run on the same binary, as jemalloc
//! keeps freed pages for seconds and the timing of 32 streams decides how many blocks are
//! alive at once; the bound leaves room for that, and none for a design that buffers. Buffering
//! even one document per upload would need 240 MiB.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use tokio::sync::Notify;

const KEY: &str = "memory-test-key";
const MIB: u64 = 1024 * 1024;

/// The two tests measure one process each, but on a 2-core machine each starves the other of
/// CPU, which keeps more blocks in flight than an upload alone holds: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_15_mib_uploads_stay_under_64_mib_above_idle() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(dir.path(), KEY);
    let client = reqwest::Client::new();
    let upload = |seed: u64, len: u64| {
        let part = reqwest::multipart::Part::stream_with_length(pdf_stream(len, seed), len)
            .file_name("scan.pdf");
        let form = reqwest::multipart::Form::new()
            .text("provider", "taler")
            .text("payto", PAYTO)
            .part("file", part);
        client
            .post(format!("{}/v1/uploads", gw.url))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
    };
    // Warm up every path once (allocator arenas, connection pools), then measure idle.
    assert_eq!(upload(1000, MIB).await.expect("warm-up").status(), 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle, _) = rss_kb(gw.pid());

    let done = Arc::new(Notify::new());
    let pid = gw.pid();
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            loop {
                peak = peak.max(rss_kb(pid).0);
                tokio::select! {
                    _ = done.notified() => return peak,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        })
    };
    let results = futures_util::future::join_all((0..16).map(|i| upload(i, 15 * MIB))).await;
    done.notify_one();
    let sampled_peak = sampler.await.expect("sampler");
    for r in results {
        let r = r.expect("upload");
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }
    let (_, hwm) = rss_kb(gw.pid());
    let peak = sampled_peak.max(hwm);
    let grew_mib = peak.saturating_sub(idle) as f64 / 1024.0;
    eprintln!(
        "idle RSS {} MiB, peak {} MiB, growth {grew_mib:.1} MiB",
        idle / 1024,
        peak / 1024
    );
    assert!(
        grew_mib < 64.0,
        "peak RSS grew {grew_mib:.1} MiB over idle for 240 MiB of uploads"
    );
}

/// Finext carries documents base64-encoded inside JSON: a 50 MiB document becomes a ~67 MiB
/// body, streamed from the spool with an exact Content-Length and decoded by the emulator
/// straight to disk. Through the whole gateway, memory stays flat and the emulator's copy is
/// byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_finext_document_flows_through_with_flat_memory_and_arrives_identical() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(dir.path(), KEY);
    let finext = gw
        .banner
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("finext")
                .and_then(|r| r.trim().strip_prefix("emulator at "))
        })
        .expect("the banner names the finext emulator")
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let today = time::OffsetDateTime::now_utc().date();
    let issued = format!(
        "{:04}-{:02}-{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    let len = 50 * MIB;
    let form = reqwest::multipart::Form::new()
        .text("provider", "finext")
        .text("kind", "address")
        .text("username", "lili111")
        .text("address_type", "Bank Statement")
        .text("address_issued_by", "Big Bank")
        .text("address_issued_date", issued)
        .text("address_language", "English")
        .part(
            "front",
            reqwest::multipart::Part::stream_with_length(pdf_stream(len, 77), len)
                .file_name("statement.pdf"),
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle, _) = rss_kb(gw.pid());
    let res = client
        .post(format!("{}/v1/uploads", gw.url))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = res.status();
    let mut receipt: serde_json::Value = res.json().await.expect("json");
    // Delivered within the request's sync budget (201), or, on a slow machine (a debug build
    // sealing and base64-encoding 50 MiB beside the other test), after it (202): either way
    // the whole delivery is over before the peak is read.
    if status == 202 {
        let id = receipt["id"].as_str().expect("id").to_owned();
        receipt = common::wait_final(&client, &gw.url, KEY, &id, Duration::from_secs(120)).await;
    } else {
        assert_eq!(status, 201, "{receipt}");
    }
    assert_eq!(receipt["status"], "delivered", "{receipt}");
    let (_, peak) = rss_kb(gw.pid());
    let grew_mib = peak.saturating_sub(idle) as f64 / 1024.0;
    eprintln!(
        "finext 50 MiB: idle RSS {} MiB, peak {} MiB, growth {grew_mib:.1} MiB",
        idle / 1024,
        peak / 1024
    );
    assert!(
        grew_mib < 48.0,
        "peak RSS grew {grew_mib:.1} MiB for one 50 MiB document"
    );

    let submissions: serde_json::Value = client
        .get(format!("{finext}/__emulator/finext/submissions"))
        .send()
        .await
        .expect("submissions")
        .json()
        .await
        .expect("json");
    let stored = &submissions.as_array().expect("list")[0]["documents"][0];
    assert_eq!(stored["size"], len);
    assert_eq!(
        stored["sha256"], receipt["documents"][0]["sha256"],
        "the emulator decoded exactly what was sent"
    );
    let path = stored["path"].as_str().expect("path");
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    let on_disk = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        Some(on_disk.as_str()),
        receipt["documents"][0]["sha256"].as_str(),
        "stored bytes are the document"
    );
}
