//! Command-line arguments of `docgate emulate <provider>`.
//!
//! The binary hands everything after the provider's name to the provider, which parses it
//! with its own [`clap::Args`] type flattened next to [`CommonArgs`]; so each emulator owns
//! its flags (Taler's `--purpose`, OST's `--webhook-url`) and `--help` shows exactly them.

use std::{ffi::OsString, net::SocketAddr, path::PathBuf};

use clap::{Args, FromArgMatches};
use docgate_core::registration::{EmulatorError, EmulatorLaunch};

/// Flags every emulator takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address to listen on (port 0 picks a free one; the bound URL is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where the emulator keeps what it received.
    #[arg(long, default_value = "docgate-emulator-data")]
    pub data_dir: PathBuf,
}

/// An emulator's own flags, with no extra ones (for emulators that need none).
#[derive(Debug, Clone, Default, Args)]
pub struct NoArgs {}

/// Parse `args` (without the program name) as `docgate emulate <name> [COMMON] [A]`.
pub fn parse<A: Args + FromArgMatches>(
    name: &str,
    args: Vec<OsString>,
) -> Result<(CommonArgs, A), EmulatorError> {
    // Named and described after the flags are added: an `Args` type's doc comment would
    // otherwise become the command's description.
    let command = A::augment_args(CommonArgs::augment_args(clap::Command::new(
        name.to_owned(),
    )))
    .bin_name(format!("docgate emulate {name}"))
    .about(format!("Run the {name} emulator alone"));
    let argv = std::iter::once(OsString::from(name)).chain(args);
    let matches = command.try_get_matches_from(argv).map_err(usage)?;
    let common = CommonArgs::from_arg_matches(&matches).map_err(usage)?;
    let own = A::from_arg_matches(&matches).map_err(usage)?;
    Ok((common, own))
}

/// Where and how to start an emulator, from either launch: `docgate emulate` (its flags) or
/// the sandbox (a free loopback port, state under the sandbox's data dir, default flags).
#[derive(Debug, Clone)]
pub struct Launch<A> {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub args: A,
    /// The gateway's URL when launched by the sandbox.
    pub gateway_url: Option<String>,
}

impl<A: Args + FromArgMatches + Default> Launch<A> {
    pub fn from(name: &str, launch: EmulatorLaunch) -> Result<Launch<A>, EmulatorError> {
        match launch {
            EmulatorLaunch::Cli(argv) => {
                let (common, args) = parse::<A>(name, argv)?;
                Ok(Launch {
                    listen: common.listen,
                    data_dir: common.data_dir,
                    args,
                    gateway_url: None,
                })
            }
            EmulatorLaunch::Sandbox {
                data_dir,
                gateway_url,
            } => Ok(Launch {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                data_dir,
                args: A::default(),
                gateway_url: Some(gateway_url),
            }),
        }
    }
}

fn usage(e: clap::Error) -> EmulatorError {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => EmulatorError::Help(text),
        _ => EmulatorError::Usage(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Args)]
    struct Own {
        #[arg(long)]
        purpose: Option<u32>,
    }

    #[test]
    fn common_and_own_flags_parse_together() {
        let args = ["--listen", "127.0.0.1:9000", "--purpose", "7"]
            .map(OsString::from)
            .to_vec();
        let (common, own) = parse::<Own>("taler", args).expect("parses");
        assert_eq!(common.listen.port(), 9000);
        assert_eq!(own.purpose, Some(7));
    }

    #[test]
    fn help_and_bad_flags_are_told_apart() {
        let help = parse::<Own>("taler", vec!["--help".into()]);
        assert!(matches!(help, Err(EmulatorError::Help(ref t)) if t.contains("--purpose")));
        let bad = parse::<Own>("taler", vec!["--nope".into()]);
        assert!(matches!(bad, Err(EmulatorError::Usage(_))));
    }
}
