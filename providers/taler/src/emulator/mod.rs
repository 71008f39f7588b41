//! The exchange side of kyc-bulk: `docgate emulate taler`, and the sandbox's Taler.
//!
//! A real receiver, not a mock: it keeps a registry of third-party keys, verifies the
//! Ed25519 signature strictly, checks lengths, the body hash, media types and ZIP contents,
//! stores every accepted body on disk, and answers with Taler's statuses and `ErrorDetail`
//! envelopes ([`handler`] lists every check in order). Bodies stream to disk while hashed, so
//! memory stays flat whatever the upload size — the sandbox runs this in the gateway's process.
//!
//! Fault injection (`PUT /__emulator/faults`) comes from `docgate_emulator`, with Taler's
//! own envelope for the injected statuses. `GET /__emulator/taler/stored?payto=…` lists what
//! was stored for a customer, for tests written in any language.

mod launch;
pub use launch::launch;
mod args;
mod handler;
mod store;

use std::{
    collections::{HashMap, HashSet},
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    extract::{Query, State},
    routing::{get, post},
    Json, Router,
};
use docgate_core::{
    archive::{ZipRules, DEFAULT_MAX_COMPRESSION_RATIO},
    MediaRange, Secret,
};
use docgate_emulator::{Faults, RunningServer};
use ed25519_dalek::VerifyingKey;

pub use args::EmulatorArgs;
pub use store::StoredBody;

use crate::{
    client::ZIP_ENTRY_TYPES,
    config::TalerConfig,
    crockford,
    payto::Payto,
    signing::{self, ExternKey, PaytoHash, SigningScheme},
    wire::{ErrorCodes, DEFAULT_UPLOAD_LIMIT},
};

/// The signature purpose the emulator uses unless told otherwise: the placeholder of the
/// published test vectors (the real number is unpublished).
pub const PLACEHOLDER_PURPOSE: u32 = 65535;

/// Placeholders for the two unpublished error codes, outside Taler's range (< 10000) so
/// they cannot be mistaken for a real code.
pub const PLACEHOLDER_SIGNATURE_INVALID: u32 = 65001;
pub const PLACEHOLDER_THIRD_PARTY_UNKNOWN: u32 = 65002;

/// File under `data_dir` that keeps the generated sandbox key across restarts.
const SANDBOX_KEY_FILE: &str = "sandbox-extern-key";

/// The numbers the emulator sends for the unpublished codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatorErrorCodes {
    pub signature_invalid: u32,
    pub third_party_unknown: u32,
}

impl Default for EmulatorErrorCodes {
    fn default() -> Self {
        EmulatorErrorCodes {
            signature_invalid: PLACEHOLDER_SIGNATURE_INVALID,
            third_party_unknown: PLACEHOLDER_THIRD_PARTY_UNKNOWN,
        }
    }
}

/// How to run the emulator. `new` gives the exchange's behaviour of today.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub listen: SocketAddr,
    /// Received bodies, the customer index and the generated sandbox key live here.
    pub data_dir: PathBuf,
    /// Larger bodies get 413 (decided from Content-Length). Default 16 MiB.
    pub upload_limit: u64,
    /// The signature purpose to verify against. Default 65535 (placeholder).
    pub purpose: u32,
    /// The payto-hash variant to verify against. Default A.
    pub payto_hash: PaytoHash,
    /// The sandbox key's seed (52 Crockford characters or 64 hex digits). When `None` a key
    /// is generated once and kept in `data_dir`.
    pub sandbox_key: Option<Secret>,
    /// More registered third parties: public keys in Crockford base32.
    pub known_keys: Vec<String>,
    pub error_codes: EmulatorErrorCodes,
    pub max_zip_entries: usize,
    pub max_zip_uncompressed: u64,
    /// A body that sends nothing for this long is answered with 400.
    pub body_idle_timeout: Duration,
}

impl EmulatorOptions {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        EmulatorOptions {
            listen,
            data_dir,
            upload_limit: DEFAULT_UPLOAD_LIMIT,
            purpose: PLACEHOLDER_PURPOSE,
            payto_hash: PaytoHash::default(),
            sandbox_key: None,
            known_keys: Vec::new(),
            error_codes: EmulatorErrorCodes::default(),
            max_zip_entries: 1000,
            max_zip_uncompressed: 1 << 30,
            body_idle_timeout: handler::DEFAULT_BODY_IDLE,
        }
    }
}

/// State shared by the handlers.
#[derive(Debug)]
struct Shared {
    store: store::Store,
    registry: RwLock<HashSet<[u8; 32]>>,
    scheme: SigningScheme,
    upload_limit: u64,
    codes: EmulatorErrorCodes,
    accepted: Vec<MediaRange>,
    zip_rules: ZipRules,
    body_idle_timeout: Duration,
}

impl Shared {
    fn is_registered(&self, key: &VerifyingKey) -> bool {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key.as_bytes())
    }
}

/// A running Taler emulator.
#[derive(Debug)]
pub struct Emulator {
    pub server: RunningServer,
    pub faults: Arc<Faults>,
    shared: Arc<Shared>,
    sandbox_key: ExternKey,
    /// The third parties registered at start besides the sandbox key (for the banner).
    known_keys: Vec<String>,
    data_dir: PathBuf,
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The sandbox key: given, kept from an earlier run, or generated now and kept.
fn sandbox_key(opts: &EmulatorOptions) -> io::Result<ExternKey> {
    if let Some(secret) = &opts.sandbox_key {
        return ExternKey::parse(secret.expose())
            .map_err(|e| invalid_input(format!("taler emulator sandbox_key: {e}")));
    }
    let path = opts.data_dir.join(SANDBOX_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return ExternKey::parse(&text)
                .map_err(|e| invalid_input(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let key = ExternKey::from_seed(seed);
    write_private(&path, key.seed_crockford().as_bytes())?;
    Ok(key)
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Start the emulator on `opts.listen` (port 0 picks a free port).
pub async fn start(opts: EmulatorOptions) -> io::Result<Emulator> {
    std::fs::create_dir_all(&opts.data_dir)?;
    let sandbox_key = sandbox_key(&opts)?;
    let mut registry = HashSet::new();
    registry.insert(sandbox_key.verifying_key().to_bytes());
    let mut known_keys = Vec::with_capacity(opts.known_keys.len());
    for public in &opts.known_keys {
        let key = signing::parse_public(public).ok_or_else(|| {
            invalid_input(format!(
                "taler emulator known key `{public}` is not a Crockford EdDSA public key"
            ))
        })?;
        if registry.insert(key.to_bytes()) {
            known_keys.push(crockford::encode(key.as_bytes()));
        }
    }
    let ranges = |list: &[&str]| -> Vec<MediaRange> {
        list.iter()
            .filter_map(|s| MediaRange::parse(s).ok())
            .collect()
    };
    let shared = Arc::new(Shared {
        store: store::Store::open(&opts.data_dir)?,
        registry: RwLock::new(registry),
        scheme: SigningScheme {
            purpose: opts.purpose,
            payto_hash: opts.payto_hash,
        },
        upload_limit: opts.upload_limit,
        codes: opts.error_codes,
        accepted: handler::accepted_ranges(),
        zip_rules: ZipRules {
            entry_types: ranges(&ZIP_ENTRY_TYPES),
            max_entries: opts.max_zip_entries,
            max_total_uncompressed: opts.max_zip_uncompressed,
            max_compression_ratio: DEFAULT_MAX_COMPRESSION_RATIO,
        },
        body_idle_timeout: opts.body_idle_timeout,
    });
    let faults = Faults::new();
    let protocol = Router::new()
        .route(
            "/kyc-bulk/{extern_pub}",
            post(handler::kyc_bulk).fallback(handler::method_invalid),
        )
        .fallback(handler::endpoint_unknown)
        .with_state(shared.clone());
    let app = docgate_emulator::with_faults(
        protocol,
        faults.clone(),
        handler::fault_envelope(opts.error_codes),
    )
    .merge(
        Router::new()
            .route("/__emulator/taler/stored", get(stored_route))
            .with_state(shared.clone()),
    );
    let server = docgate_emulator::serve(app, opts.listen).await?;
    Ok(Emulator {
        server,
        faults,
        shared,
        sandbox_key,
        known_keys,
        data_dir: opts.data_dir,
    })
}

/// `GET /__emulator/taler/stored?payto=…`: the bodies stored for that customer.
async fn stored_route(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(payto) = query.get("payto") else {
        return handler::taler_error(
            http::StatusCode::BAD_REQUEST,
            crate::wire::ErrorDetail::new(
                crate::wire::codes::GENERIC_PARAMETER_MISSING,
                "the payto query parameter is required",
            ),
        );
    };
    let customer = signing::h_payto(shared.scheme.payto_hash, payto);
    match shared.store.list(&customer) {
        Ok(bodies) => Json(serde_json::json!({
            "payto": payto,
            "count": bodies.len(),
            "bodies": bodies,
        }))
        .into_response(),
        Err(e) => handler::taler_error(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            crate::wire::ErrorDetail::new(
                crate::wire::codes::GENERIC_DB_SETUP_FAILED,
                "the store cannot be listed",
            )
            .with_detail(e.to_string()),
        ),
    }
}

impl Emulator {
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `$EXTERN_PUB` of the sandbox key.
    pub fn extern_pub(&self) -> &str {
        self.sandbox_key.public_crockford()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A client config that works against this emulator with its built-in test credentials.
    pub fn sandbox_config(&self) -> TalerConfig {
        let mut config = TalerConfig::new(
            self.url(),
            Secret::new(self.sandbox_key.seed_crockford()),
            self.shared.scheme.purpose,
        );
        config.payto_hash = self.shared.scheme.payto_hash;
        config.upload_limit = self.shared.upload_limit;
        config.max_zip_entries = self.shared.zip_rules.max_entries;
        config.max_zip_uncompressed = self.shared.zip_rules.max_total_uncompressed;
        config.error_codes = ErrorCodes {
            signature_invalid: Some(self.shared.codes.signature_invalid),
            third_party_unknown: Some(self.shared.codes.third_party_unknown),
        };
        config
    }

    /// Lines the CLI prints after "taler emulator listening on http://ADDR".
    pub fn banner(&self) -> Vec<String> {
        let url = self.url();
        let mut lines = vec![format!(
            "  POST {url}/kyc-bulk/{}   (sandbox EXTERN_PUB)",
            self.extern_pub()
        )];
        lines.extend(
            self.known_keys
                .iter()
                .map(|public| format!("  POST {url}/kyc-bulk/{public}   (registered third party)")),
        );
        lines.extend([
            format!(
                "  sandbox extern key (Ed25519 seed, Crockford; test credential): {}",
                self.sandbox_key.seed_crockford()
            ),
            format!(
                "  purpose {}, payto hash variant {}, upload limit {} bytes",
                self.shared.scheme.purpose,
                self.shared.scheme.payto_hash,
                self.shared.upload_limit
            ),
            format!(
                "  faults: curl -X PUT {url}/__emulator/faults -H 'Content-Type: application/json' -d '{{\"fail_next\":2,\"fail_status\":500}}'"
            ),
            format!("  stored: curl '{url}/__emulator/taler/stored?payto=payto://iban/DE89370400440532013000'"),
            format!("  data: {}", self.data_dir.display()),
        ]);
        lines
    }

    /// Register another third party (its public key in Crockford base32).
    pub fn register_key(&self, public: &str) -> io::Result<()> {
        let key = signing::parse_public(public)
            .ok_or_else(|| invalid_input(format!("`{public}` is not a Crockford public key")))?;
        self.shared
            .registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_bytes());
        Ok(())
    }

    /// The bodies stored for a customer, given the payto URI as the client sent it.
    pub fn stored(&self, payto: &str) -> io::Result<Vec<StoredBody>> {
        let customer = signing::h_payto(self.shared.scheme.payto_hash, payto);
        self.shared.store.list(&customer)
    }

    /// Like [`Emulator::stored`], for a payto URI in any spelling the client canonicalises.
    pub fn stored_canonical(&self, payto: &str) -> io::Result<Vec<StoredBody>> {
        match Payto::parse(payto) {
            Ok(p) => self.stored(p.as_str()),
            Err(_) => self.stored(payto),
        }
    }

    /// Stop serving and wait for in-flight requests.
    pub async fn stop(self) -> io::Result<()> {
        self.server.stop().await
    }
}

/// The Crockford public key of a seed (for tests and tools registering keys).
pub fn public_of_seed(seed: [u8; 32]) -> String {
    crockford::encode(ExternKey::from_seed(seed).verifying_key().as_bytes())
}
