//! `docgate emulate ost`: OST's KYC API plus the S3 bucket its URLs point into.
//!
//! Two servers on loopback ports: the OST API (HMAC-checked, OST's envelope everywhere, fault
//! injection) and a real S3 (s3s-fs) that verifies the SigV4 URLs and POST policies the API
//! hands out. Every endpoint of OST's API reference is served (users, users-kyc,
//! users-kyc-detail, the presigned-URL utilities, the Ethereum address validator, and the
//! email endpoints of the SDK); see the crate README for each one and every error code.
//!
//! Control endpoints on the API server (never signed; they are the test harness's), in
//! [`control`] and `docgate_emulator`:
//! * `GET|PUT /__emulator/faults` — fail, delay or drop the next API requests, or all of them
//!   for a while (an outage);
//! * `GET|PUT /__emulator/urls` `{"expire_next": N}` — the next N presign answers are issued
//!   already expired, so S3 refuses them (the client's refetch path);
//! * `POST /__emulator/users/{id}/kyc/{approve|deny|report-issue|aml|whitelist|reopen|
//!   ethereum-address}` — what OST's admins and processes do to a case, with its webhook;
//! * `POST /__emulator/users`, `POST /__emulator/users/{id}/double-opt-in`,
//!   `DELETE /__emulator/users/{id}` — user events;
//! * `GET|POST /__emulator/webhooks`, `PUT /__emulator/webhooks/url` — deliveries, a one-off
//!   signed event, the webhook URL; `GET /__emulator/emails` — the emails OST would have sent.

mod launch;
pub use launch::launch;
mod api;
mod args;
mod control;
pub mod events;
mod kyc_detail;
mod listing;
mod presign;
mod s3;
mod state;
pub mod status;
mod users;
mod users_kyc;
mod validators;
mod webhooks;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use axum::Router;
use docgate_core::Secret;
use serde_json::{Map, Value};

pub use args::EmulatorArgs;
pub use s3::{public_addr, S3Server, S3Settings, REGION};
pub use state::{AddUserError, ControlError, SentEmail, User, UserKyc, MAX_USERS};
pub use status::{
    AdminActionType, AdminStatus, AmlStatus, ChangeError, KycChange, KycState, KycStatus,
    WhitelistStatus,
};
pub use webhooks::{DeliveryRecord, Emitted, WebhookDelivery};

use crate::{config::OstConfig, kyc};

/// Ids of the users a fresh emulator already has (OST users are created by OST's own signup,
/// which docgate does not drive).
pub const FIRST_USER_ID: u64 = 11001;

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The API's address (port 0 picks one).
    pub listen: SocketAddr,
    /// S3 objects live under `data_dir/s3/<bucket>/`.
    pub data_dir: PathBuf,
    /// The API key it accepts (generated when `None`).
    pub api_key: Option<String>,
    /// The API secret it accepts (generated when `None`).
    pub api_secret: Option<String>,
    /// The secret it signs webhooks with (generated when `None`).
    pub webhook_secret: Option<String>,
    /// Where the emulator sends its webhook events (none when `None`); they are signed over
    /// exactly this URL.
    pub webhook_url: Option<String>,
    /// Retries of a failed delivery (OST: 6).
    pub webhook_retries: u32,
    /// The first retry's delay, doubling after each (OST: 1 hour; here 1 s, so tests and
    /// people see retries happen).
    pub webhook_retry_base: Duration,
    /// One delivery attempt's limit (OST: 10 s).
    pub webhook_timeout: Duration,
    /// Events in flight at most; more are dropped (and counted).
    pub webhook_capacity: usize,
    /// The S3 server's address (default: the API's IP, any port).
    pub s3_listen: Option<SocketAddr>,
    pub bucket: String,
    /// The first segment of every S3 key (`4/i/…`): OST's client id.
    pub client_id: u32,
    /// Lifetime of presigned URLs and POST policies (OST: 15 minutes).
    pub url_expiry: Duration,
    /// How far `request_timestamp` may be from the emulator's clock (OST: 10 s).
    pub timestamp_window: Duration,
    /// The POST policy's `content-length-range`.
    pub min_document_bytes: u64,
    pub max_document_bytes: u64,
    /// A path prefix the API is reached under (e.g. `/ost`), stripped before verifying.
    pub mount: String,
    /// Fields a submission must contain (OST: the account's selection).
    pub required_kyc_fields: Vec<String>,
    /// The account's "send KYC data through the API" setting: `users-kyc-detail` answers
    /// with the data (true) or only its id and time (false).
    pub kyc_details_visible: bool,
    /// How many users exist at start, with ids from [`FIRST_USER_ID`].
    pub seed_users: u64,
}

impl EmulatorOptions {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        EmulatorOptions {
            listen,
            data_dir,
            api_key: None,
            api_secret: None,
            webhook_secret: None,
            webhook_url: None,
            s3_listen: None,
            bucket: "kyc.emulator.ost".into(),
            client_id: 4,
            url_expiry: Duration::from_secs(15 * 60),
            timestamp_window: Duration::from_secs(10),
            min_document_bytes: crate::config::DEFAULT_MIN_DOCUMENT_BYTES,
            max_document_bytes: crate::config::DEFAULT_MAX_DOCUMENT_BYTES,
            mount: String::new(),
            required_kyc_fields: kyc::KYC_MANDATORY.iter().map(|s| (*s).to_owned()).collect(),
            webhook_retries: 6,
            webhook_retry_base: Duration::from_secs(1),
            webhook_timeout: Duration::from_secs(10),
            webhook_capacity: 256,
            kyc_details_visible: true,
            seed_users: 10,
        }
    }
}

/// A running emulator. Dropping it stops both servers.
#[derive(Debug)]
pub struct Emulator {
    pub server: docgate_emulator::RunningServer,
    pub faults: Arc<docgate_emulator::Faults>,
    pub s3: S3Server,
    shared: Arc<api::Shared>,
    s3_access_key: String,
    s3_secret_key: Secret,
    _stop_webhooks: StopWebhooksOnDrop,
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

fn generated(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}

/// A webhook URL must be absolute http(s): it is posted to and signed over as written.
pub(crate) fn check_webhook_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(format!(
            "webhook URL `{url}` is not an absolute http(s) URL"
        )),
    }
}

fn check_options(opts: &EmulatorOptions) -> std::io::Result<()> {
    const SEVEN_DAYS: Duration = Duration::from_secs(7 * 24 * 3600);
    if opts.url_expiry < Duration::from_secs(1) || opts.url_expiry > SEVEN_DAYS {
        return Err(invalid(format!(
            "url_expiry must be between 1 s and 7 days (SigV4's limit), not {:?}",
            opts.url_expiry
        )));
    }
    if opts.min_document_bytes > opts.max_document_bytes {
        return Err(invalid(
            "min_document_bytes exceeds max_document_bytes".into(),
        ));
    }
    if let Some(url) = &opts.webhook_url {
        check_webhook_url(url).map_err(invalid)?;
    }
    if opts.webhook_capacity == 0 || opts.webhook_timeout.is_zero() {
        return Err(invalid(
            "webhook_capacity and webhook_timeout must be above zero".into(),
        ));
    }
    if let Some(unknown) = opts
        .required_kyc_fields
        .iter()
        .find(|f| !kyc::KYC_FIELDS.contains(&f.as_str()))
    {
        return Err(invalid(format!(
            "required field `{unknown}` is not a KYC field"
        )));
    }
    Ok(())
}

/// Start the API and its S3.
pub async fn start(opts: EmulatorOptions) -> std::io::Result<Emulator> {
    check_options(&opts)?;
    let s3_root = opts.data_dir.join("s3");
    tokio::fs::create_dir_all(&s3_root).await?;

    let s3_access_key = format!("AKID{}", generated(16).to_ascii_uppercase());
    let s3_secret_key = generated(40);
    let settings = s3::S3Settings {
        listen: opts
            .s3_listen
            .unwrap_or_else(|| SocketAddr::new(opts.listen.ip(), 0)),
        root: s3_root.clone(),
        bucket: opts.bucket.clone(),
        access_key: s3_access_key.clone(),
        secret_key: s3_secret_key.clone(),
        max_post_bytes: opts.max_document_bytes,
        max_url_lifetime: opts.url_expiry,
    };
    let s3 = S3Server::start(&settings).await?;
    let presigner = s3::Presigner::new(&s3.url, &opts.bucket, &s3_access_key, &s3_secret_key);

    let shared = Arc::new(shared_state(&opts, presigner, s3_root)?);
    let faults = docgate_emulator::Faults::new();
    let protocol = Router::new()
        .fallback(api::handle)
        .with_state(shared.clone());
    let router =
        docgate_emulator::with_faults(protocol, faults.clone(), Arc::new(api::fault_envelope))
            .merge(control::routes(shared.clone()));
    let server = docgate_emulator::serve(router, opts.listen).await?;
    Ok(Emulator {
        server,
        faults,
        s3,
        s3_access_key,
        s3_secret_key: Secret::new(s3_secret_key),
        _stop_webhooks: StopWebhooksOnDrop(shared.webhooks.clone()),
        shared,
    })
}

fn shared_state(
    opts: &EmulatorOptions,
    presigner: s3::Presigner,
    s3_root: PathBuf,
) -> std::io::Result<api::Shared> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut registry = state::Registry::new(FIRST_USER_ID);
    for n in 0..opts.seed_users {
        let email = format!("user{}@emulator.ost.test", FIRST_USER_ID + n);
        registry
            .add_user(&email, now)
            .map_err(|e| invalid(format!("cannot seed user {email}: {e:?}")))?;
    }
    let webhooks = webhooks::WebhookSender::new(webhooks::WebhookSettings {
        secret: opts.webhook_secret.clone().unwrap_or_else(|| generated(32)),
        url: opts.webhook_url.clone(),
        retries: opts.webhook_retries,
        retry_base: opts.webhook_retry_base,
        timeout: opts.webhook_timeout,
        capacity: opts.webhook_capacity,
    })?;
    Ok(api::Shared {
        api_key: opts.api_key.clone().unwrap_or_else(|| generated(16)),
        api_secret: opts.api_secret.clone().unwrap_or_else(|| generated(32)),
        mount: opts.mount.clone(),
        timestamp_window: opts.timestamp_window,
        url_lifetime: opts.url_expiry,
        size_range: (opts.min_document_bytes, opts.max_document_bytes),
        client_id: opts.client_id,
        required_kyc_fields: opts.required_kyc_fields.clone(),
        kyc_details_visible: opts.kyc_details_visible,
        presigner,
        s3_root,
        bucket: opts.bucket.clone(),
        registry: Mutex::new(registry),
        expire_next: Default::default(),
        webhooks,
    })
}

impl Emulator {
    /// The API's base URL (what `base_url` and the SDK's `api_base_url` are set to).
    pub fn url(&self) -> String {
        format!("http://{}", public_addr(self.server.addr))
    }

    /// A client config that works against this emulator with its built-in test credentials.
    /// Webhook verification is included when the emulator has a webhook URL (it signs
    /// events over exactly that URL).
    pub fn sandbox_config(&self) -> OstConfig {
        let mut config = OstConfig::new(
            self.url(),
            self.shared.api_key.clone(),
            Secret::new(self.shared.api_secret.clone()),
        );
        if let Some(url) = self.shared.webhooks.url() {
            config.webhook_secret = Some(Secret::new(self.shared.webhooks.secret()));
            config.webhook_url = Some(url);
        }
        config
    }

    /// Lines the CLI prints after "ost emulator listening on http://ADDR".
    pub fn banner(&self) -> Vec<String> {
        let users = self.shared.registry().user_ids();
        let mut lines = vec![
            format!(
                "api_key={} api_secret={}",
                self.shared.api_key, self.shared.api_secret
            ),
            format!(
                "s3 endpoint {} bucket={} root={}",
                self.s3.url,
                self.shared.bucket,
                self.s3_root().display()
            ),
            format!("webhook_secret={}", self.shared.webhooks.secret()),
            match self.shared.webhooks.url() {
                Some(url) => format!("webhooks go to {url}"),
                None => "no webhook URL (set one with PUT /__emulator/webhooks/url)".into(),
            },
        ];
        if let (Some(first), Some(last)) = (users.first(), users.last()) {
            lines.push(format!(
                "users {first}..{last} exist (add more with POST /api/v2/users)"
            ));
        }
        lines.push(
            "control: /__emulator/faults, /__emulator/urls, /__emulator/webhooks, \
             /__emulator/emails, POST /__emulator/users/{id}/kyc/{approve|deny|report-issue|\
             aml|whitelist|reopen|ethereum-address}"
                .into(),
        );
        lines
    }

    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    pub fn api_secret(&self) -> &str {
        &self.shared.api_secret
    }

    pub fn webhook_secret(&self) -> &str {
        self.shared.webhooks.secret()
    }

    /// Send webhook events to `url` from now on (`None`: stop).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.shared.webhooks.set_url(url);
    }

    pub fn webhook_url(&self) -> Option<String> {
        self.shared.webhooks.url()
    }

    /// The S3 endpoint (path-style: `<endpoint>/<bucket>/<key>`).
    pub fn s3_url(&self) -> &str {
        &self.s3.url
    }

    pub fn bucket(&self) -> &str {
        &self.shared.bucket
    }

    /// The directory s3s-fs serves (buckets are its subdirectories).
    pub fn s3_root(&self) -> &std::path::Path {
        &self.shared.s3_root
    }

    /// The S3 credentials the presigner signs with (region [`REGION`]).
    pub fn s3_credentials(&self) -> (&str, &Secret) {
        (&self.s3_access_key, &self.s3_secret_key)
    }

    /// The file holding object `key`, if the key is a plain relative path.
    pub fn object_path(&self, key: &str) -> Option<PathBuf> {
        s3::object_path(&self.shared.s3_root, &self.shared.bucket, key)
    }

    /// A presigned GET URL for `key`, valid for `lifetime`: read an object back through S3.
    pub async fn presigned_get(&self, key: &str, lifetime: Duration) -> std::io::Result<String> {
        self.shared
            .presigner
            .get_url(key, lifetime)
            .await
            .map_err(std::io::Error::other)
    }

    /// The next `n` presign answers carry URLs that are already expired.
    pub fn expire_next_urls(&self, n: u32) {
        self.shared.expire_next.store(n, Ordering::SeqCst);
    }

    /// Create a user quietly (no event); `None` if the email is taken.
    pub fn add_user(&self, email: &str) -> Option<User> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.shared.registry().add_user(email, now).ok()
    }

    /// A user signs up on OST's site: `user_register` (source `web`) is sent.
    pub fn sign_up(&self, email: &str) -> Result<(User, Emitted), AddUserError> {
        control::sign_up(&self.shared, email)
    }

    /// A user confirms the double opt-in email: `user_dopt_in` is sent.
    pub fn double_opt_in(&self, user_id: u64) -> Option<(User, Emitted)> {
        control::double_opt_in(&self.shared, user_id)
    }

    /// An admin deletes a user: `user_deleted` is sent.
    pub fn delete_user(&self, user_id: u64) -> Option<(User, Emitted)> {
        control::delete_user(&self.shared, user_id)
    }

    /// A user's KYC case (last submission and statuses).
    pub fn kyc(&self, user_id: u64) -> Option<UserKyc> {
        self.shared.registry().kyc(user_id).cloned()
    }

    /// Change a case as OST's admins, AML screening or whitelisting would; the documented
    /// event (`kyc_status_update`, `kyc_reopen`, `update_ethereum_address`) is sent.
    pub fn change_kyc(
        &self,
        user_id: u64,
        change: &KycChange,
    ) -> Result<(UserKyc, Emitted), ControlError> {
        control::change_kyc(&self.shared, user_id, change)
    }

    /// The emails OST would have sent (the latest ones).
    pub fn sent_emails(&self) -> Vec<SentEmail> {
        self.shared.registry().emails()
    }

    /// Finished webhook deliveries (the latest ones), oldest first.
    pub fn webhook_deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.webhooks.deliveries()
    }

    /// Sign `event` as OST does and post it to `url` once.
    pub async fn send_webhook(
        &self,
        url: &str,
        event: Map<String, Value>,
    ) -> Result<WebhookDelivery, String> {
        send_completed(&self.shared, url, event).await
    }

    /// Stop both servers, letting in-flight requests finish; pending webhooks are abandoned.
    pub async fn stop(self) -> std::io::Result<()> {
        self.shared.webhooks.shutdown();
        self.s3.stop().await;
        self.server.stop().await
    }
}

/// Abandons pending webhooks when the emulator goes away (their tasks hold the sender).
#[derive(Debug)]
struct StopWebhooksOnDrop(Arc<webhooks::WebhookSender>);

impl Drop for StopWebhooksOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

async fn send_completed(
    shared: &api::Shared,
    url: &str,
    event: Map<String, Value>,
) -> Result<WebhookDelivery, String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let id = shared.registry().next_event_id();
    let event = events::complete_event(event, id, now);
    shared.webhooks.send_once(url, event).await
}
