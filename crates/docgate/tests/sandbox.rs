//! The README's run command: `docgate serve` with no config is the sandbox, every provider
//! wired to its in-process emulator. These are the acceptance checks, made through the real
//! binary over real HTTP, as a frontend would make them.

mod common;

use common::*;
use serde_json::Value;
use time::{Duration as Days, OffsetDateTime};

const KEY: &str = "sandbox-test-key";
const SILA_USER: &str = "test_user.silamoney.eth";
const PNG: &[u8] = include_bytes!("../../../../shared/fixtures/sila/red1x1.png");

async fn post(
    client: &reqwest::Client,
    base: &str,
    form: reqwest::multipart::Form,
) -> (u16, Value) {
    let res = client
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .expect("send");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

fn file(bytes: Vec<u8>, name: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned())
}

fn iso(days_from_today: i64) -> String {
    let d = (OffsetDateTime::now_utc() + Days::days(days_from_today)).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_accepts_each_provider_the_way_a_frontend_uses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(dir.path(), KEY);
    assert!(
        gw.banner
            .iter()
            .any(|l| l.contains("API key: from $DOCGATE_SANDBOX_KEY")),
        "{:?}",
        gw.banner
    );
    assert!(
        !gw.banner.iter().any(|l| l.contains(KEY)),
        "a key given by the user is not printed"
    );
    let c = reqwest::Client::new();
    let base = gw.url.as_str();

    // GNU Taler: a PDF, then the same PDF again.
    let doc = pdf_bytes(300_000, 1).await;
    let form = || {
        reqwest::multipart::Form::new()
            .text("provider", "taler")
            .text("payto", PAYTO)
            .part("file", file(doc.clone(), "doc.pdf"))
    };
    let (status, receipt) = post(&c, base, form()).await;
    assert_eq!(status, 201, "{receipt}");
    let dir_file = write_file(dir.path(), "doc.pdf", &doc);
    let out = std::process::Command::new("sha512sum")
        .arg(&dir_file)
        .output()
        .expect("sha512sum");
    let sha512 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    assert_eq!(receipt["documents"][0]["sha512"], sha512);
    let (status, again) = post(&c, base, form()).await;
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("duplicate")),
        "{again}"
    );

    // Sila: one document, then three in one request.
    let sila = |files: Vec<(&'static str, Vec<u8>, &'static str)>| {
        let mut f = reqwest::multipart::Form::new()
            .text("provider", "sila")
            .text("user_handle", SILA_USER)
            .text("document_type", "id_drivers_license");
        for (slot, bytes, name) in files {
            f = f.part(slot, file(bytes, name));
        }
        f
    };
    let (status, r) = post(&c, base, sila(vec![("file", PNG.to_vec(), "front.png")])).await;
    assert_eq!(status, 201, "{r}");
    assert!(r["provider_reference"]["document_id"].is_string(), "{r}");
    let three = vec![
        ("front", PNG.to_vec(), "front.png"),
        ("back", pdf_bytes(2000, 2).await, "back.pdf"),
        ("selfie", PNG.to_vec(), "me.png"),
    ];
    let (status, r) = post(&c, base, sila(three)).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        r["provider_reference"]["document_id"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{r}"
    );
    // A PNG sent as application/pdf: 415, naming both types.
    let lying = reqwest::multipart::Part::bytes(PNG.to_vec())
        .file_name("front.pdf")
        .mime_str("application/pdf")
        .expect("mime");
    let form = reqwest::multipart::Form::new()
        .text("provider", "sila")
        .text("user_handle", SILA_USER)
        .text("document_type", "id_drivers_license")
        .part("file", lying);
    let (status, r) = post(&c, base, form).await;
    assert_eq!(
        (status, r["code"].as_str()),
        (415, Some("media_type_mismatch")),
        "{r}"
    );
    assert_eq!(
        (r["declared_type"].as_str(), r["sniffed_type"].as_str()),
        (Some("application/pdf"), Some("image/png"))
    );
    // An unknown document_type: 422 naming the field.
    let form = reqwest::multipart::Form::new()
        .text("provider", "sila")
        .text("user_handle", SILA_USER)
        .text("document_type", "id_library_card")
        .part("file", file(PNG.to_vec(), "x.png"));
    let (status, r) = post(&c, base, form).await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"][0]["field"], "document_type");
    // 21 MB declared: refused once `provider=sila` is read, before the document.
    let head = format!(
        "POST /v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 21000000\r\n\r\n\
         --B\r\nContent-Disposition: form-data; name=\"provider\"\r\n\r\nsila\r\n--B\r\n"
    );
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().expect("addr");
    let (status, body) = raw(addr, &head).await;
    assert_eq!(status, 413, "{body}");

    // Finext: an address proof (front and back), an ID proof (passport, front only), and an
    // address document too old.
    let address = |issued: String| {
        reqwest::multipart::Form::new()
            .text("provider", "finext")
            .text("kind", "address")
            .text("username", "lili111")
            .text("address_type", "Utility Bill")
            .text("address_issued_by", "City Power")
            .text("address_issued_date", issued)
            .text("address_language", "English")
    };
    let form = address(iso(-10))
        .part("front", file(pdf_bytes(50_000, 3).await, "bill.pdf"))
        .part("back", file(PNG.to_vec(), "back.png"));
    let (status, r) = post(&c, base, form).await;
    assert_eq!(status, 201, "{r}");
    let form = reqwest::multipart::Form::new()
        .text("provider", "finext")
        .text("kind", "id")
        .text("username", "lili111")
        .text("id_type", "Passport")
        .text("id_number", "X1234567")
        .text("issued_by", "DE")
        .text("issued_date", iso(-400))
        .text("expiration_date", iso(2000))
        .text("language", "German")
        .part("front", file(PNG.to_vec(), "passport.png"));
    let (status, r) = post(&c, base, form).await;
    assert_eq!(status, 201, "{r}");
    let form = address(iso(-91)).part("front", file(pdf_bytes(50_000, 4).await, "old.pdf"));
    let (status, r) = post(&c, base, form).await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"][0]["field"], "address_issued_date");
}

async fn raw(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer without sending the body")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if text.contains("\r\n\r\n{") && text.trim_end().ends_with('}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
