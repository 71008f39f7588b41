//! `docgate`: the gateway binary.
//!
//! - `docgate serve [--config FILE] [--listen ADDR] [--data-dir DIR]` — without `--config`, the
//!   sandbox: every provider wired to an in-process emulator.
//! - `docgate emulate <provider> [--listen ADDR] [--data-dir DIR] [its own flags]` — one
//!   emulator (in builds with the `sandbox` feature, the default).
//! - `docgate upload --provider P [--field k=v]… SLOT=FILE…` — post documents to a gateway.
//! - `docgate uploads list|show|events|retry|cancel|erase [--json]` — operate on a tenant's
//!   uploads.
//! - `docgate hash [--digest sha256,sha512,md5|all] FILE` — the digest pipeline on a file.
//! - `docgate check --config FILE` — every problem of a configuration at once, one per line.
//!
//! Logs go to stderr, filtered by `RUST_LOG` (`DOCGATE_LOG` wins when set), as text (coloured
//! only on a terminal) or as JSON lines with `--log-format json`.
//!
//! Secrets never come from the command line: the API key for `upload` and `uploads` is read from
//! `DOCGATE_API_KEY`, provider secrets from the environment or files named in the config.

#![forbid(unsafe_code)]

mod hash;
mod upload;
mod uploads;

// Only the binary picks the allocator: the libraries leave it to whoever links them. See the
// `jemalloc` feature in Cargo.toml for why this one.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::{
    ffi::OsString,
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{builder::PossibleValuesParser, Parser, Subcommand, ValueEnum};
use docgate_core::{
    registration::{EmulatorError, EmulatorLaunch},
    ConfigIssues,
};
use docgate_server::{
    check::{self, Overrides},
    sandbox,
    serve::termination_signal,
    Gateway, Setup,
};

#[derive(Parser, Debug)]
#[command(
    name = "docgate",
    version,
    about = "A streaming upload gateway for KYC documents"
)]
struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object per line)
    /// for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DOCGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (the sandbox with emulators when no --config is given).
    Serve {
        /// docgate.toml; without it, the sandbox runs.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides the config's `listen` (sandbox default 127.0.0.1:8080; port 0 picks one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Overrides the config's `data_dir` (sandbox default ./docgate-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run one provider emulator alone (`docgate emulate <provider> --help` for its flags).
    Emulate {
        #[arg(value_parser = PossibleValuesParser::new(docgate_providers::ALL.iter().map(|r| r.name)))]
        provider: String,
        /// The emulator's own flags: --listen ADDR, --data-dir DIR, and the provider's.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Upload documents to a running gateway (API key from $DOCGATE_API_KEY).
    Upload(upload::UploadArgs),
    /// List, inspect, retry, cancel or erase a tenant's uploads on a running gateway (API
    /// key from $DOCGATE_API_KEY).
    Uploads(uploads::UploadsArgs),
    /// Check a configuration: every problem at once (secrets, values, secret file modes, the
    /// ledger, provider hosts), one `path: message` line each; exits 1 if there is any.
    Check {
        /// docgate.toml, loaded exactly as `serve --config` loads it.
        #[arg(long)]
        config: PathBuf,
        /// As `serve --data-dir`: check the directory serve would use.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Sniff and hash a file with the ingest pipeline; prints JSON.
    Hash {
        /// Comma-separated: sha256, sha512, md5, or all.
        #[arg(long, default_value = "sha256")]
        digest: String,
        /// Print the measured digest costs and the lanes chosen from them to stderr.
        #[arg(long)]
        verbose: bool,
        file: PathBuf,
    },
}

/// The log filter: `DOCGATE_LOG` when set (the older name), else the standard `RUST_LOG`,
/// else info. A filter that does not parse is reported, not silently replaced.
fn log_filter() -> (tracing_subscriber::EnvFilter, Option<String>) {
    const DEFAULT: &str = "info,sqlx=warn,hyper=warn";
    let chosen = ["DOCGATE_LOG", "RUST_LOG"].into_iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var, v))
    });
    let Some((var, spec)) = chosen else {
        return (tracing_subscriber::EnvFilter::new(DEFAULT), None);
    };
    match tracing_subscriber::EnvFilter::try_new(&spec) {
        Ok(filter) => (cap_aws_sdk(filter), None),
        Err(e) => (
            tracing_subscriber::EnvFilter::new(DEFAULT),
            Some(format!(
                "{var} is not a valid log filter ({e}); using `{DEFAULT}`"
            )),
        ),
    }
}

/// The AWS SDK (the S3 spool) prints the credentials it resolved, access key id included, in
/// its debug events: it stays at info, whatever level the rest of the gateway logs at (a
/// filter naming an `aws_…` target itself still decides for that target).
fn cap_aws_sdk(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    match "aws=info".parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => filter,
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
    let (filter, warning) = log_filter();
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Json => layer.json().boxed(),
        // Colour codes are for terminals: in a file or a pipe they are noise.
        LogFormat::Text => layer
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .init();
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
}

/// Threads of tokio's blocking pool (file I/O of the spool, fsyncs, archive checks). Its
/// default cap is 512: under 64 concurrent uploads each spool write took a thread of its
/// own, every thread kept a malloc arena, and memory and threads stayed high after the
/// burst. File I/O on 2 cores gains nothing from more than a few threads in flight; 16
/// leaves room for parallel fsyncs (the durability point of each upload) without growth.
/// Hashing does not use this pool: it has its own, one thread per core (docgate-core).
const BLOCKING_THREADS: usize = 16;

/// Where freed memory goes. Bodies move through in blocks of 256 KiB: under a burst of large
/// uploads, blocks freed but kept for reuse were as much memory again as the blocks in use
/// (64 concurrent 15 MiB uploads peaked at +77 – +102 MiB with jemalloc's decay at 0.5–2 s,
/// +61 – +64 MiB with none), so large allocations must go back to the system at once. Small
/// ones are the opposite: returning each freed page at once cost every small upload a few
/// `madvise` calls, each a TLB shootdown across the cores, and the page faults of taking the
/// pages back (~3 % of a small upload's CPU, docs/performance.md).
///
/// So the build (`.cargo/config.toml`, `JEMALLOC_SYS_WITH_MALLOC_CONF`) sends allocations
/// of [`OVERSIZE_THRESHOLD`] and more to jemalloc's arena for huge allocations, which returns
/// pages at once, and lets the other arenas keep freed pages for 100 ms, purged by one
/// background thread, so an idle process gives them back too. A build without that setting
/// (the crate built outside this workspace) falls back to returning everything at once:
/// the memory bound holds either way.
#[cfg(feature = "jemalloc")]
const OVERSIZE_THRESHOLD: usize = 128 * 1024;

#[cfg(feature = "jemalloc")]
fn configure_allocator() {
    use tikv_jemalloc_ctl::{Access, AsName};
    let threshold: Result<usize, _> = b"opt.oversize_threshold\0".name().read();
    if threshold.is_ok_and(|t| t == OVERSIZE_THRESHOLD) {
        return;
    }
    // Set before the runtime starts any thread, so every arena is made with it; failing
    // costs memory, not correctness.
    for key in [
        &b"arenas.dirty_decay_ms\0"[..],
        b"arenas.muzzy_decay_ms\0",
        b"arena.0.dirty_decay_ms\0",
        b"arena.0.muzzy_decay_ms\0",
    ] {
        let _ = key.name().write(0isize);
    }
}

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "jemalloc")]
    configure_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    if let Some(provider) = emulator_help_wanted(std::env::args_os().collect()) {
        return emulate(&provider, vec!["--help".into()]).await;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            init_tracing(cli.log_format);
            serve(config, Overrides { listen, data_dir }).await
        }
        Command::Emulate { provider, args } => {
            init_tracing(cli.log_format);
            emulate(&provider, args).await
        }
        Command::Check { config, data_dir } => {
            init_tracing(cli.log_format);
            let overrides = Overrides {
                listen: None,
                data_dir,
            };
            let issues = check::check(&config, &overrides, docgate_providers::ALL).await;
            if issues.is_empty() {
                println!("{}: no problems found", config.display());
                return Ok(());
            }
            println!("{issues}");
            eprintln!("{}: {}", config.display(), count(&issues));
            std::process::exit(1);
        }
        Command::Upload(args) => upload::run(args).await,
        Command::Uploads(args) => uploads::run(args).await,
        Command::Hash {
            digest,
            verbose,
            file,
        } => hash::run(&digest, &file, verbose).await,
    }
}

fn count(issues: &ConfigIssues) -> String {
    match issues.0.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    }
}

/// The gateway `path` describes. On any problem: the whole list, as `docgate check` gives it
/// (one failed start, not one per problem), and exit 1.
async fn setup_from_file(path: &Path, overrides: &Overrides) -> anyhow::Result<Setup> {
    let (setup, mut issues) = check::load(path, overrides, docgate_providers::ALL)?;
    if issues.is_empty() {
        return Ok(setup);
    }
    issues.extend(check::environment(&setup).await);
    eprintln!(
        "docgate: not starting, {} has {}:",
        path.display(),
        count(&issues)
    );
    eprintln!("{issues}");
    std::process::exit(1);
}

/// Log provider hosts that do not resolve: worth a warning, not a refusal to start (DNS
/// may come back; deliveries are retried).
fn warn_about_unresolvable_hosts(gateway: &Gateway) {
    let registry = gateway.app.registry.clone();
    tokio::spawn(async move {
        for issue in check::probe_endpoints(&registry).await.0 {
            tracing::warn!(path = %issue.path, "{}", issue.message);
        }
    });
}

/// File descriptors kept for what is not a client connection: spool files, the ledger,
/// connections to providers, S3 and PostgreSQL, the emulators' own in the sandbox.
const DESCRIPTORS_BESIDE_CONNECTIONS: u64 = 512;

/// Raise the soft open-files limit to the hard one (systemd and most shells start services
/// at 1024, the default `limits.max_connections`: a flood of connections would leave no
/// descriptor for spool files, the ledger or deliveries — every upload then failing with
/// EMFILE). If the hard limit is still too low for the connection cap, the cap is lowered.
fn fit_connections_to_open_files(limits: &mut docgate_server::config::Limits) {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-files limit");
            return;
        }
    };
    let room = soft.saturating_sub(DESCRIPTORS_BESIDE_CONNECTIONS).max(16);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if limits.max_connections > room {
        tracing::warn!(
            open_files = soft,
            configured = limits.max_connections,
            max_connections = room,
            "the open-files limit (ulimit -n, LimitNOFILE) leaves room for fewer connections \
             than limits.max_connections: lowered"
        );
        limits.max_connections = room;
    }
}

async fn serve(config: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let (mut setup, sandbox) = match config {
        Some(path) => (setup_from_file(&path, &overrides).await?, None),
        None => {
            if docgate_providers::ALL.iter().all(|r| r.emulator.is_none()) {
                anyhow::bail!(
                    "this build has no emulators (built without the `sandbox` feature): \
                     run it with --config docgate.toml"
                );
            }
            let listen = overrides
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let data_dir = overrides
                .data_dir
                .unwrap_or_else(|| PathBuf::from("docgate-data"));
            let key = std::env::var("DOCGATE_SANDBOX_KEY").ok();
            if !listen.ip().is_loopback() {
                // The sandbox's page mints sessions without a key, its emulators show what
                // they received, and on loopback only requests addressed to this machine
                // are answered; on another address all of that is open to the network.
                tracing::warn!(
                    %listen,
                    "the sandbox is listening beyond this machine: anyone who can reach it may \
                     start upload sessions without a key and read what the emulators received. \
                     Use it on 127.0.0.1, or run `serve --config` for anything shared"
                );
            }
            let (setup, sandbox) = sandbox::setup(listen, &data_dir, key, docgate_providers::ALL)
                .await
                .context("starting the sandbox")?;
            (setup, Some(sandbox))
        }
    };
    fit_connections_to_open_files(&mut setup.limits);
    let gateway = Gateway::start(setup)
        .await
        .context("starting the gateway")?;
    let url = gateway.url();
    if sandbox.is_none() {
        warn_about_unresolvable_hosts(&gateway);
    }
    if let Some(sb) = &sandbox {
        println!("docgate sandbox: every provider is wired to its in-process emulator");
        for (name, emu_url) in sb.emulator_urls() {
            println!("  {name:<7} emulator at {emu_url}");
        }
        let key_ref = if sb.generated_key {
            println!(
                "  API key: {}  (set DOCGATE_SANDBOX_KEY to choose your own)",
                sb.api_key.expose()
            );
            sb.api_key.expose().to_owned()
        } else {
            println!("  API key: from $DOCGATE_SANDBOX_KEY");
            "$DOCGATE_SANDBOX_KEY".to_owned()
        };
        println!("  try: curl -H \"Authorization: Bearer {key_ref}\" -F provider=taler -F payto=payto://iban/DE89370400440532013000 -F file=@doc.pdf {url}/v1/uploads");
        println!(
            "  upload page: {url}/   operator console: {url}/console   API: {url}/openapi.json"
        );
    }
    println!("docgate listening on {url}");
    termination_signal().await;
    eprintln!("shutting down: letting in-flight uploads finish");
    gateway.shutdown().await;
    drop(sandbox);
    Ok(())
}

/// `docgate emulate <provider> … --help` asks for the provider's own flags, which clap
/// would answer with the `emulate` command's help instead.
fn emulator_help_wanted(args: Vec<OsString>) -> Option<String> {
    let mut args = args.into_iter().skip(1);
    if args.next()? != "emulate" {
        return None;
    }
    let provider = args.next()?.into_string().ok()?;
    docgate_providers::find(&provider)?;
    args.any(|a| a == "--help" || a == "-h").then_some(provider)
}

async fn emulate(provider: &str, args: Vec<OsString>) -> anyhow::Result<()> {
    let start = docgate_providers::find(provider)
        .and_then(|r| r.emulator)
        .ok_or_else(|| {
            anyhow::anyhow!("this build has no {provider} emulator (built without `sandbox`)")
        })?;
    let emulator = match start(EmulatorLaunch::Cli(args)).await {
        Ok(e) => e,
        Err(EmulatorError::Help(text)) => {
            print!("{text}");
            return Ok(());
        }
        Err(EmulatorError::Usage(text)) => {
            eprint!("{text}");
            std::process::exit(2);
        }
        Err(e) => return Err(e).context(format!("starting the {provider} emulator")),
    };
    // The listening line comes last: scripts wait for it as the "ready" signal.
    for line in emulator.banner() {
        println!("{line}");
    }
    println!("{provider} emulator listening on {}", emulator.url());
    termination_signal().await;
    drop(emulator);
    Ok(())
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use tikv_jemalloc_ctl::{Access, AsName};

    // Built outside `.cargo/config.toml`'s settings, the binary falls back to returning every
    // freed page at once: correct, but ~3 % more CPU per small upload. This fails then.
    #[test]
    fn the_allocator_is_built_to_return_large_blocks_at_once_and_small_ones_soon() {
        let threshold: usize = b"opt.oversize_threshold\0".name().read().expect("read");
        let background: bool = b"opt.background_thread\0".name().read().expect("read");
        let decay: isize = b"opt.dirty_decay_ms\0".name().read().expect("read");
        assert_eq!(
            (threshold, background, decay),
            (super::OVERSIZE_THRESHOLD, true, 100)
        );
    }
}
