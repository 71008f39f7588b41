//! `docgate emulate ost` command-line options.
//!
//! Every option is optional; what is not given keeps [`EmulatorOptions::new`]'s default, so
//! the defaults live in one place. The credentials are the emulator's test credentials, not
//! real secrets; they can also come from the environment to keep them off `ps` output.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::EmulatorOptions;
use crate::kyc::KYC_FIELDS;

/// Options of `docgate emulate ost` (flatten into the subcommand with `#[command(flatten)]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct EmulatorArgs {
    /// The API key the emulator accepts (generated when absent).
    #[arg(long, env = "DOCGATE_OST_EMULATOR_API_KEY")]
    pub api_key: Option<String>,
    /// The API secret the emulator accepts (generated when absent). A test credential.
    #[arg(long, env = "DOCGATE_OST_EMULATOR_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Where the emulator sends its signed webhook events (none when absent). Signed over this
    /// exact URL, as OST signs over the URL entered in its dashboard.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// The secret webhook events are signed with (generated when absent).
    #[arg(
        long,
        env = "DOCGATE_OST_EMULATOR_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Retries of a failed webhook delivery [default: 6, as OST].
    #[arg(long)]
    pub webhook_retries: Option<u32>,
    /// Delay before the first retry, doubling each time (OST: 1h) [default: 1s].
    #[arg(long, value_parser = docgate_core::duration::parse)]
    pub webhook_retry_base: Option<Duration>,
    /// Lifetime of presigned URLs and POST policies [default: 15m, as OST].
    #[arg(long, value_parser = docgate_core::duration::parse)]
    pub url_expiry: Option<Duration>,
    /// The first segment of every S3 key (OST's client id) [default: 4].
    #[arg(long)]
    pub client_id: Option<u32>,
    /// A path prefix the API is reached under (e.g. /ost).
    #[arg(long)]
    pub mount: Option<String>,
    /// The KYC fields a submission must contain, comma-separated [default: the spec's
    /// mandatory fields].
    #[arg(long, value_delimiter = ',', value_parser = kyc_field)]
    pub required_fields: Option<Vec<String>>,
    /// Answer `users-kyc-detail` without the KYC data (the account setting "off").
    #[arg(long)]
    pub hide_kyc_details: bool,
    /// How many users exist at start [default: 10].
    #[arg(long)]
    pub seed_users: Option<u64>,
}

fn kyc_field(name: &str) -> Result<String, String> {
    let name = name.trim();
    if KYC_FIELDS.contains(&name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "`{name}` is not a KYC field; use: {}",
            KYC_FIELDS.join(", ")
        ))
    }
}

impl EmulatorArgs {
    /// The emulator's options: [`EmulatorOptions::new`] with what was given on top.
    pub fn into_options(self, listen: SocketAddr, data_dir: PathBuf) -> EmulatorOptions {
        let mut o = EmulatorOptions::new(listen, data_dir);
        o.api_key = self.api_key;
        o.api_secret = self.api_secret;
        o.webhook_url = self.webhook_url;
        o.webhook_secret = self.webhook_secret;
        o.webhook_retries = self.webhook_retries.unwrap_or(o.webhook_retries);
        o.webhook_retry_base = self.webhook_retry_base.unwrap_or(o.webhook_retry_base);
        o.url_expiry = self.url_expiry.unwrap_or(o.url_expiry);
        o.client_id = self.client_id.unwrap_or(o.client_id);
        o.mount = self.mount.unwrap_or(o.mount);
        o.required_kyc_fields = self.required_fields.unwrap_or(o.required_kyc_fields);
        o.kyc_details_visible = !self.hide_kyc_details;
        o.seed_users = self.seed_users.unwrap_or(o.seed_users);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    fn options(argv: &[&str]) -> EmulatorOptions {
        let cli = Cli::try_parse_from(std::iter::once("emulate").chain(argv.iter().copied()))
            .expect("parses");
        cli.args
            .into_options("127.0.0.1:0".parse().expect("addr"), PathBuf::from("d"))
    }

    #[test]
    fn nothing_given_keeps_every_default() {
        let defaults = EmulatorOptions::new("127.0.0.1:0".parse().expect("addr"), "d".into());
        let o = options(&[]);
        assert_eq!(
            (
                o.webhook_retries,
                o.url_expiry,
                o.client_id,
                o.kyc_details_visible
            ),
            (
                defaults.webhook_retries,
                defaults.url_expiry,
                defaults.client_id,
                true
            )
        );
        assert_eq!(o.required_kyc_fields, defaults.required_kyc_fields);
    }

    #[test]
    fn flags_reach_the_options() {
        let o = options(&[
            "--api-key",
            "k",
            "--api-secret",
            "s",
            "--webhook-url",
            "http://127.0.0.1:9/h",
            "--webhook-secret",
            "w",
            "--webhook-retries",
            "2",
            "--webhook-retry-base",
            "250ms",
            "--url-expiry",
            "5m",
            "--required-fields",
            "first_name,last_name",
            "--hide-kyc-details",
        ]);
        assert_eq!(o.api_key.as_deref(), Some("k"));
        assert_eq!(o.webhook_url.as_deref(), Some("http://127.0.0.1:9/h"));
        assert_eq!(o.webhook_retry_base, Duration::from_millis(250));
        assert_eq!(o.url_expiry, Duration::from_secs(300));
        assert_eq!(o.required_kyc_fields, vec!["first_name", "last_name"]);
        assert!(!o.kyc_details_visible);
        assert!(Cli::try_parse_from(["emulate", "--required-fields", "nickname"]).is_err());
    }
}
