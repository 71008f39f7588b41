//! Schemathesis (PyPI; its own virtualenv, built by `scripts/test.sh`) generates requests
//! from `/openapi.json` and checks every answer against it: no server error, only
//! documented statuses, content types, headers and bodies, and the acceptance and
//! rejection rules in `schemathesis.toml`.

mod common;

use std::process::Command;

use common::{root, Proc};

const KEY: &str = "schemathesis-key";

#[test]
fn schemathesis_finds_no_failure_against_the_sandbox() {
    let st = std::env::var("DOCGATE_SCHEMATHESIS").expect(
        "DOCGATE_SCHEMATHESIS names schemathesis' `st` in its virtualenv: run ./scripts/test.sh",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(&dir.path().join("data"), KEY);
    // The repository's settings, plus the API key — read from the environment, so it is on
    // no command line.
    let settings = std::fs::read_to_string(root().join("schemathesis.toml")).expect("settings");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("headers = {{ Authorization = \"Bearer ${{DOCGATE_ST_KEY}}\" }}\n{settings}"),
    )
    .expect("config");
    let seed = std::env::var("DOCGATE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261129".into());
    let out = Command::new(st)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(root().join("crates/docgate-server/web/openapi.json"))
        .args([
            "--url",
            &gw.url,
            "--max-examples",
            "40",
            "--seed",
            &seed,
            "--no-color",
        ])
        .env("DOCGATE_ST_KEY", KEY)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", root().join("interop/schemathesis"))
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}):\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "a real run:\n{report}");
}
