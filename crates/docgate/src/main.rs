//! `docgate`: the gateway binary.
//!
//! - `docgate serve [--config FILE] [--listen ADDR] [--data-dir DIR]` — without `--config`, the
//!   sandbox: every provider wired to an in-process emulator.
//! - `docgate emulate <provider> [--listen ADDR] [--data-dir DIR] [its own flags]` — one
//!   emulator (in builds with the `sandbox` feature, the default).
//! - `docgate upload --provider P [--field k=v]… SLOT=FILE…` — post documents to a gateway.
//! - `docgate hash [--digest sha256,sha512,md5|all] FILE` — the digest pipeline on a file.
//!
//! Secrets never come from the command line: the API key for `upload` is read from
//! `DOCGATE_API_KEY`, provider secrets from the environment or files named in the config.

#![forbid(unsafe_code)]

mod hash;
mod upload;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::{builder::PossibleValuesParser, Parser, Subcommand};
use docgate_core::registration::{EmulatorError, EmulatorLaunch};
use docgate_server::{config::Config, sandbox, serve::termination_signal, Gateway, Setup};

#[derive(Parser, Debug)]
#[command(
    name = "docgate",
    version,
    about = "A streaming upload gateway for KYC documents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Sniff and hash a file with the ingest pipeline; prints JSON.
    Hash {
        /// Comma-separated: sha256, sha512, md5, or all.
        #[arg(long, default_value = "sha256")]
        digest: String,
        file: PathBuf,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            init_tracing();
            serve(config, listen, data_dir).await
        }
        Command::Emulate { provider, args } => {
            init_tracing();
            emulate(&provider, args).await
        }
        Command::Upload(args) => upload::run(args).await,
        Command::Hash { digest, file } => hash::run(&digest, &file).await,
    }
}

async fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (setup, sandbox) = match config {
        Some(path) => {
            let mut config = Config::load(&path)?;
            if let Some(l) = listen {
                config.listen = l;
            }
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            (Setup::from_config(config, docgate_providers::ALL)?, None)
        }
        None => {
            if docgate_providers::ALL.iter().all(|r| r.emulator.is_none()) {
                anyhow::bail!(
                    "this build has no emulators (built without the `sandbox` feature): \
                     run it with --config docgate.toml"
                );
            }
            let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from("docgate-data"));
            let key = std::env::var("DOCGATE_SANDBOX_KEY").ok();
            let (setup, sandbox) = sandbox::setup(listen, &data_dir, key, docgate_providers::ALL)
                .await
                .context("starting the sandbox")?;
            (setup, Some(sandbox))
        }
    };
    let gateway = Gateway::start(setup)
        .await
        .context("starting the gateway")?;
    let url = gateway.url();
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
    }
    println!("docgate listening on {url}");
    termination_signal().await;
    eprintln!("shutting down: letting in-flight uploads finish");
    gateway.shutdown().await;
    drop(sandbox);
    Ok(())
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
