//! `/openapi.json` is kept beside the code, so these tests hold the two together: every
//! route the code mounts is described, every described operation reaches a handler (not
//! the router's "no such route" or "method not allowed"), and every problem `code` the code
//! can answer with is listed. Schemathesis (run by `scripts/test.sh`) then checks the
//! answers against the document.

mod common;

use std::{collections::BTreeSet, path::Path};

use common::{root, Proc};
use serde_json::Value;

const KEY: &str = "openapi-key";

fn spec() -> Value {
    let text = std::fs::read_to_string(root().join("crates/docgate-server/web/openapi.json"))
        .expect("the OpenAPI document");
    serde_json::from_str(&text).expect("OpenAPI is JSON")
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("tests") && !path.ends_with("emulator") {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literal that follows each occurrence of `marker` (skipping one argument when
/// `skip_arg`), e.g. the code in `Problem::new(StatusCode::X, "code", …)`.
fn literals_after(text: &str, marker: &str, skip_arg: bool) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices(marker) {
        let mut rest = &text[at + marker.len()..];
        if skip_arg {
            let Some(comma) = rest.find(',') else {
                continue;
            };
            rest = &rest[comma + 1..];
        }
        let rest = rest.trim_start();
        if let Some(lit) = rest.strip_prefix('"') {
            if let Some(end) = lit.find('"') {
                found.push(lit[..end].to_owned());
            }
        }
    }
    found
}

#[test]
fn the_document_is_openapi_3_1_and_lists_every_problem_code_the_code_uses() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    let listed: BTreeSet<String> = spec["components"]["schemas"]["Problem"]["properties"]["code"]
        ["enum"]
        .as_array()
        .expect("code enum")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let mut files = Vec::new();
    for dir in [
        "crates/docgate-core/src",
        "crates/docgate-server/src",
        "providers",
    ] {
        sources(&root().join(dir), &mut files);
    }
    let mut used = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source");
        used.extend(literals_after(&text, "Problem::new(", true));
        used.extend(literals_after(&text, "conflict(", false));
    }
    assert!(used.len() > 20, "the scan finds the codes: {used:?}");
    let missing: Vec<_> = used.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "codes missing from openapi.json: {missing:?}"
    );
}

#[test]
fn every_mounted_route_is_described() {
    let spec = spec();
    let paths: BTreeSet<&str> = spec["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let mut mounted = BTreeSet::new();
    for file in [
        "crates/docgate-server/src/app.rs",
        "crates/docgate-server/src/web.rs",
    ] {
        let text = std::fs::read_to_string(root().join(file)).expect("source");
        mounted.extend(literals_after(&text, ".route(", false));
    }
    for provider in std::fs::read_dir(root().join("providers"))
        .expect("providers")
        .flatten()
    {
        let routes = provider.path().join("src/routes.rs");
        let Ok(text) = std::fs::read_to_string(&routes) else {
            continue;
        };
        let name = provider.file_name().to_string_lossy().into_owned();
        // The API routes are nested under the provider's name; its webhook router's "/" is
        // its webhook URL.
        for route in literals_after(&text, ".route(", false) {
            if route == "/" {
                mounted.insert(format!("/v1/webhooks/{name}"));
            } else {
                mounted.insert(format!("/v1/providers/{name}{route}"));
            }
        }
    }
    assert!(mounted.len() > 15, "the scan finds the routes: {mounted:?}");
    let missing: Vec<_> = mounted
        .iter()
        // `/v1/tus` is the same endpoint as `/v1/tus/`.
        .filter(|r| !paths.contains(r.as_str()) && !paths.contains(format!("{r}/").as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_described_operation_reaches_a_handler_and_the_gateway_serves_the_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(&dir.path().join("data"), KEY);
    let client = reqwest::Client::new();
    let served: Value = client
        .get(format!("{}/openapi.json", gw.url))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("JSON");
    let spec = spec();
    assert_eq!(
        served, spec,
        "the binary serves the document in the repository"
    );
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{key}", "taler")
            .replace("{name}", "style.css")
            .replace("{user_id}", "1")
            .replace("{id}", "no-such-id");
        for method in ops.as_object().expect("operations").keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let res = client
                .request(m, format!("{}{concrete}", gw.url))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("request");
            let status = res.status().as_u16();
            let body = res.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path}: no handler\n{body}");
            assert!(
                !(status == 404 && body.contains("no such route")),
                "{method} {path}: no such route"
            );
        }
    }
}
