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
    // Sizes around the read block (1 MiB) and the inline-hash threshold, and one of many
    // blocks: read buffers are reused once the digests are done with them, and reusing one
    // too early would change the digests.
    for len in [
        0u64,
        1,
        16 * 1024,
        1024 * 1024,
        3 * 1024 * 1024 + 7,
        21 * 1024 * 1024 + 3,
    ] {
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
    let verbose = docgate(&[
        "hash",
        "--digest",
        "all",
        "--verbose",
        &file.to_string_lossy(),
    ]);
    let said = String::from_utf8_lossy(&verbose.stderr);
    for part in [
        "implementations: sha256 ",
        "measured digest costs: ",
        "lanes (",
    ] {
        assert!(said.contains(part), "{part:?} missing from:\n{said}");
    }
    let bad = docgate(&["hash", "--digest", "crc32", &file.to_string_lossy()]);
    assert!(!bad.status.success());
}

#[test]
fn regression_emulate_provider_help_shows_the_providers_own_flags() {
    let out = docgate(&["emulate", "taler", "--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("docgate emulate taler"), "{help}");
    for flag in ["--payto-hash", "--purpose", "--extern-pub", "--listen"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
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

/// `docgate <args>` with extra environment variables, logs unfiltered by the caller's.
fn docgate_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_docgate"));
    cmd.args(args)
        .env_remove("DOCGATE_LOG")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run docgate")
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn write_mode(path: &std::path::Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Five problems of four kinds, each of which used to take a failed start of its own.
fn broken_config(dir: &std::path::Path) -> std::path::PathBuf {
    let exposed = dir.join("bank-key");
    write_mode(&exposed, "s3cr3t-in-a-world-readable-file\n", 0o644);
    let config = format!(
        r#"
ledger = "postgres://docgate:pw-never-printed@127.0.0.1:{port}/test"
data_dir = "{data}"

[delivery]
max_atempts = 3

[[tenants]]
name = "shop"
api_key = {{ env = "DOCGATE_CLI_TEST_UNSET_SHOP_KEY" }}
providers = ["taler"]

[[tenants]]
name = "bank"
api_key = {{ file = "{exposed}" }}
providers = ["taler"]

[providers.taler]
base_url = "http://127.0.0.1:1/"
purpose = 1
extern_key = {{ env = "DOCGATE_CLI_TEST_UNSET_TALER_KEY" }}
"#,
        port = closed_port(),
        data = dir.join("data").display(),
        exposed = exposed.display(),
    );
    write_file(dir, "docgate.toml", config.as_bytes())
}

fn assert_names_the_five_problems(report: &str) {
    let lines: Vec<&str> = report.lines().filter(|l| !l.trim().is_empty()).collect();
    let expected = [
        ("delivery.max_atempts: ", "unknown field"),
        (
            "tenants.shop.api_key: ",
            "DOCGATE_CLI_TEST_UNSET_SHOP_KEY is not set",
        ),
        ("tenants.bank.api_key: ", "(mode 0644): chmod 600"),
        (
            "providers.taler.extern_key: ",
            "DOCGATE_CLI_TEST_UNSET_TALER_KEY is not set",
        ),
        ("ledger: ", "cannot reach PostgreSQL at 127.0.0.1:"),
    ];
    for (path, what) in expected {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(path) && l.contains(what)),
            "no `{path}…{what}` line in:\n{report}"
        );
    }
    assert!(!report.contains("s3cr3t"), "{report}");
    assert!(!report.contains("pw-never-printed"), "{report}");
}

#[test]
fn check_names_every_problem_of_a_config_in_one_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broken_config(dir.path());
    let out = docgate_env(&["check", "--config", &config.to_string_lossy()], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 5, "one line per problem:\n{stdout}");
    assert_names_the_five_problems(&stdout);
    assert!(stderr.contains("5 problems"), "{stderr}");
}

#[test]
fn serve_reports_the_same_list_on_a_failed_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broken_config(dir.path());
    let out = docgate_env(
        &[
            "serve",
            "--config",
            &config.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not starting"), "{stderr}");
    assert_names_the_five_problems(&stderr);
}

#[test]
fn check_passes_a_good_config_and_refuses_an_unreadable_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = good_config(dir.path());
    let out = docgate_env(
        &["check", "--config", &config.to_string_lossy()],
        &[("DOCGATE_CLI_TEST_KEY", "s3cr3t-api-key")],
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no problems found"));
    let missing = dir.path().join("absent.toml");
    let out = docgate_env(&["check", "--config", &missing.to_string_lossy()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot read"));
}

fn good_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = format!(
        "data_dir = \"{}\"\n[[tenants]]\nname = \"shop\"\n\
         api_key = {{ env = \"DOCGATE_CLI_TEST_KEY\" }}\nproviders = []\n",
        dir.join("data").display()
    );
    write_file(dir, "good.toml", config.as_bytes())
}

/// `docgate check` on a good config with `env`, stderr written to a file (not a terminal).
fn check_logs(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    let config = good_config(dir);
    let log = dir.join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_docgate"));
    cmd.args(extra)
        .args(["check", "--config", &config.to_string_lossy()])
        .env_remove("DOCGATE_LOG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env("DOCGATE_CLI_TEST_KEY", "s3cr3t-api-key")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    assert!(cmd.status().expect("run").success());
    std::fs::read_to_string(&log).expect("read log")
}

#[test]
fn rust_log_sets_the_level_and_logs_in_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let default = check_logs(dir.path(), &[], &[]);
    assert!(!default.contains("DEBUG"), "info by default:\n{default}");
    let debug = check_logs(dir.path(), &[], &[("RUST_LOG", "debug")]);
    assert!(
        debug
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("ledger")),
        "RUST_LOG=debug shows debug events:\n{debug}"
    );
    assert!(
        !debug.contains("\x1b["),
        "no ANSI codes in a file:\n{debug:?}"
    );
    // The older name still works, and wins when both are set.
    let alias = check_logs(
        dir.path(),
        &[],
        &[("RUST_LOG", "debug"), ("DOCGATE_LOG", "warn")],
    );
    assert!(!alias.contains("DEBUG"), "{alias}");
    let trace = check_logs(dir.path(), &[], &[("RUST_LOG", "trace")]);
    assert!(!trace.contains("s3cr3t"), "secrets never in logs:\n{trace}");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = check_logs(
        dir.path(),
        &["--log-format", "json"],
        &[("RUST_LOG", "debug")],
    );
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "DEBUG"),
        "debug events as JSON:\n{logs}"
    );
    let bad = docgate_env(&["--log-format", "xml", "check", "--config", "x"], &[]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
}

#[tokio::test]
async fn secrets_stay_out_of_trace_logs_of_a_real_upload() {
    use std::io::{BufRead, BufReader};
    const KEY: &str = "s3cr3t-sandbox-api-key";
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_docgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("DOCGATE_LOG")
        .env("RUST_LOG", "trace")
        .env("DOCGATE_SANDBOX_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("docgate listening on ")
                    .map(|u| u.trim().to_owned())
            })
    });
    let url = tokio::time::timeout(std::time::Duration::from_secs(60), url)
        .await
        .expect("listening within 60 s")
        .expect("join")
        .expect("a listening line");
    let form = reqwest::multipart::Form::new()
        .text("provider", "taler")
        .text("payto", PAYTO)
        .part(
            "file",
            reqwest::multipart::Part::bytes(pdf_bytes(50_000, 7).await).file_name("doc.pdf"),
        );
    let res = reqwest::Client::new()
        .post(format!("{url}/v1/uploads"))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = res.status().as_u16();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 201, "{:?}", res.text().await);
    let logs = std::fs::read_to_string(&log).expect("read log");
    assert!(logs.contains("TRACE"), "trace level is on:\n{logs}");
    assert!(!logs.contains(KEY), "the API key reached the logs");
    assert!(!logs.contains("\x1b["), "no ANSI codes in a file");
}

#[test]
fn regression_an_unreachable_postgres_is_named_not_a_pool_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let config = format!(
        "ledger = \"postgres://docgate:pw-never-printed@127.0.0.1:{port}/test\"\n\
         data_dir = \"{}\"\n[[tenants]]\nname = \"shop\"\n\
         api_key = {{ env = \"DOCGATE_CLI_TEST_KEY\" }}\nproviders = []\n",
        dir.path().join("data").display()
    );
    let config = write_file(dir.path(), "pg.toml", config.as_bytes());
    let started = std::time::Instant::now();
    let out = docgate_env(
        &[
            "serve",
            "--config",
            &config.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("DOCGATE_CLI_TEST_KEY", "k")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("pool timed out"), "{stderr}");
    assert!(!stderr.contains("pw-never-printed"), "{stderr}");
    // Refused at once, not after the pool's 10 s acquire timeout.
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
}

/// The AWS SDK's debug events printed the S3 access key id from the configuration.
#[test]
fn regression_debug_logs_do_not_show_the_s3_access_key_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A closed port: the bucket check fails, after the SDK resolved its credentials.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        "data_dir = \"{}\"\nspool = \"s3://bucket/prefix\"\n\
         [spool_s3]\nendpoint = \"http://127.0.0.1:{port}\"\npath_style = true\n\
         access_key_id = {{ env = \"CLI_TEST_S3_ID\" }}\n\
         secret_access_key = {{ env = \"CLI_TEST_S3_SECRET\" }}\n\
         [[tenants]]\nname = \"shop\"\napi_key = {{ env = \"DOCGATE_CLI_TEST_KEY\" }}\nproviders = []\n",
        dir.path().join("data").display()
    );
    let config = write_file(dir.path(), "s3.toml", config.as_bytes());
    for level in ["debug", "trace"] {
        let out = Command::new(env!("CARGO_BIN_EXE_docgate"))
            .args(["check", "--config", &config.to_string_lossy()])
            .env_remove("DOCGATE_LOG")
            .env("RUST_LOG", level)
            .env("DOCGATE_CLI_TEST_KEY", "s3cr3t-api-key")
            .env("CLI_TEST_S3_ID", "AKIAMARKEDKEYID")
            .env("CLI_TEST_S3_SECRET", "marked-s3-secret")
            .output()
            .expect("run");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("bucket"), "the bucket check ran:\n{all}");
        assert!(!all.contains("AKIAMARKEDKEYID"), "{level}:\n{all}");
        assert!(!all.contains("marked-s3-secret"), "{level}:\n{all}");
    }
}
