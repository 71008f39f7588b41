//! A faithful stand-in for Sila's documents API (`docgate emulate sila`).
//!
//! It is a real receiver, not a mock: it recovers signers from the exact `data` bytes,
//! hashes and sniffs every file, checks labels, document types and sizes, and answers with
//! Sila's status codes in Sila's JSON envelope — the same checks, in the same order, that
//! [`documents`] lists. The real Python SDK and docgate's own client are both tested against
//! it. By default it knows the public test identities from the notes (see [`TEST_APP_HANDLE`]
//! and friends), so a sandbox works with no setup.
//!
//! Routes: `POST /0.2/documents`, `POST /0.2/list_documents`, `POST /0.2/get_document`,
//! `POST /0.2/document_types`, `GET /0.2/getmessage`;
//! `PUT|GET /__emulator/faults` (fault injection, answered in Sila's envelope) and
//! `GET /__emulator/documents` (what was stored). Everything else is a JSON 404/405.

mod launch;
pub use launch::launch;
pub mod catalog;
pub mod documents;
pub mod download;
pub mod envelope;
pub mod intake;
pub mod listing;
pub mod registry;
pub mod signed;
pub mod store;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use docgate_core::Secret;
use docgate_emulator::{Faults, RunningServer};

use self::{
    envelope::Failure,
    registry::Registry,
    store::{Store, StoredDocument},
};
use crate::{
    config::SilaConfig,
    credentials::write_keystore,
    doctypes,
    signing::{Address, PrivateKey},
};

/// The built-in app identity (public test key from the notes; never use it for real).
pub const TEST_APP_HANDLE: &str = "test_app.silamoney.eth";
pub const TEST_APP_PRIVATE_KEY: &str =
    "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
/// The built-in user identity.
pub const TEST_USER_HANDLE: &str = "test_user.silamoney.eth";
pub const TEST_USER_PRIVATE_KEY: &str =
    "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f";
/// The built-in OAuth2 access token.
pub const TEST_BEARER_TOKEN: &str = "docgate-sila-emulator-test-token";

/// The keystore file the sandbox configuration points at (under the data dir).
pub const SANDBOX_KEYSTORE: &str = "sandbox-user-keys.json";

/// Optional file under the data dir registering more handles and tokens at start:
/// `{"apps": {"<handle>": "0x<address>"}, "users": {…}, "bearer_tokens": ["…"]}`.
pub const REGISTRY_FILE: &str = "registry.json";

/// The contents of [`REGISTRY_FILE`].
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    apps: BTreeMap<String, Address>,
    #[serde(default)]
    users: BTreeMap<String, Address>,
    #[serde(default)]
    bearer_tokens: Vec<String>,
}

/// Add the handles and tokens of `<data_dir>/registry.json`, if there is one. This is how a
/// client with its own keys is registered with `docgate emulate sila`, as an app would
/// register users with the real Sila.
fn merge_registry_file(opts: &mut EmulatorOptions) -> std::io::Result<()> {
    let path = opts.data_dir.join(REGISTRY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let file: RegistryFile = serde_json::from_str(&text).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    opts.apps.extend(file.apps);
    opts.users.extend(file.users);
    opts.bearer_tokens.extend(file.bearer_tokens);
    Ok(())
}

fn test_address(key: &str) -> Address {
    // The constants above are valid keys; a typo would be caught by the tests at once.
    PrivateKey::from_hex(key)
        .map(|k| k.address())
        .unwrap_or(Address([0; 20]))
}

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub listen: SocketAddr,
    /// Stored documents, temporary parts and the sandbox keystore live here.
    pub data_dir: PathBuf,
    /// Registered app handles and their addresses.
    pub apps: BTreeMap<String, Address>,
    /// Registered user handles and their addresses.
    pub users: BTreeMap<String, Address>,
    /// Accepted OAuth2 bearer tokens (empty: OAuth2 refused).
    pub bearer_tokens: Vec<String>,
    /// Request size limit (Sila: 20 MB).
    pub max_request_bytes: u64,
    /// Known `document_type` values.
    pub document_types: Vec<String>,
    /// Refuse messages whose `header.created` is further than this from now. Off by
    /// default, so recorded captures can be replayed byte for byte.
    pub max_clock_skew: Option<Duration>,
}

impl EmulatorOptions {
    /// The defaults: the test app and user registered, the test bearer token, 20 MB.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        EmulatorOptions {
            listen,
            data_dir,
            apps: BTreeMap::from([(
                TEST_APP_HANDLE.to_owned(),
                test_address(TEST_APP_PRIVATE_KEY),
            )]),
            users: BTreeMap::from([(
                TEST_USER_HANDLE.to_owned(),
                test_address(TEST_USER_PRIVATE_KEY),
            )]),
            bearer_tokens: vec![TEST_BEARER_TOKEN.to_owned()],
            max_request_bytes: doctypes::MAX_REQUEST_BYTES,
            document_types: doctypes::default_names(),
            max_clock_skew: None,
        }
    }
}

/// State shared by the handlers.
#[derive(Debug)]
pub struct EmulatorState {
    pub options: EmulatorOptions,
    pub registry: Registry,
    pub store: Store,
}

impl EmulatorState {
    /// The optional freshness check on `header.created`.
    pub fn check_fresh(&self, created: Option<i64>) -> Result<(), Failure> {
        let Some(skew) = self.options.max_clock_skew else {
            return Ok(());
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let fresh = created.is_some_and(|c| c.abs_diff(now) <= skew.as_secs());
        if fresh {
            Ok(())
        } else {
            Err(Failure::bad_request(serde_json::json!({
                "header": {"created": format!(
                    "created must be unix seconds within {}s of the server's clock", skew.as_secs()
                )}
            })))
        }
    }
}

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    pub server: RunningServer,
    pub faults: Arc<Faults>,
    state: Arc<EmulatorState>,
    keystore: PathBuf,
}

/// The emulator's routes (without fault injection), for embedding.
pub fn router(state: Arc<EmulatorState>) -> Router {
    Router::new()
        .route("/0.2/documents", post(documents::upload))
        .route("/0.2/list_documents", post(listing::list_documents))
        .route("/0.2/get_document", post(download::get_document))
        .route("/0.2/document_types", post(catalog::document_types))
        .route("/0.2/getmessage", get(catalog::get_message))
        .fallback(envelope::not_found)
        .method_not_allowed_fallback(envelope::method_not_allowed)
        .with_state(state)
}

/// Start the emulator on `opts.listen` (port 0 picks a free port).
pub async fn start(mut opts: EmulatorOptions) -> std::io::Result<Emulator> {
    std::fs::create_dir_all(&opts.data_dir)?;
    merge_registry_file(&mut opts)?;
    let store = Store::open(&opts.data_dir)?;
    let keystore = opts.data_dir.join(SANDBOX_KEYSTORE);
    write_keystore(
        &keystore,
        &BTreeMap::from([(
            TEST_USER_HANDLE.to_owned(),
            TEST_USER_PRIVATE_KEY.to_owned(),
        )]),
    )?;
    let registry = Registry::new(&opts.apps, &opts.users, &opts.bearer_tokens);
    let listen = opts.listen;
    let state = Arc::new(EmulatorState {
        options: opts,
        registry,
        store,
    });
    let faults = Faults::new();
    let app = docgate_emulator::with_faults(
        router(state.clone()),
        faults.clone(),
        Arc::new(envelope::injected),
    )
    .merge(inspection(state.clone()));
    let server = docgate_emulator::serve(app, listen).await?;
    Ok(Emulator {
        server,
        faults,
        state,
        keystore,
    })
}

fn inspection(state: Arc<EmulatorState>) -> Router {
    async fn list(State(state): State<Arc<EmulatorState>>) -> Json<Vec<StoredDocument>> {
        Json(state.store.list())
    }
    Router::new()
        .route("/__emulator/documents", get(list))
        .with_state(state)
}

impl Emulator {
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A client config that works against this emulator with its built-in test credentials:
    /// ECDSA with the test app key, and a keystore file (mode 0600, under the data dir)
    /// holding the test user's key.
    pub fn sandbox_config(&self) -> SilaConfig {
        SilaConfig::ecdsa(
            self.url(),
            TEST_APP_HANDLE,
            Secret::new(TEST_APP_PRIVATE_KEY),
            self.keystore.clone(),
        )
    }

    /// Lines the CLI prints after "sila emulator listening on http://ADDR".
    pub fn banner(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (handle, address) in self.state.registry.apps() {
            lines.push(format!("app handle:  {handle} (address {address})"));
        }
        for (handle, address) in self.state.registry.users() {
            lines.push(format!("user handle: {handle} (address {address})"));
        }
        lines.push(format!(
            "public test keys (never use them for real): app {TEST_APP_PRIVATE_KEY}, user {TEST_USER_PRIVATE_KEY}"
        ));
        if !self.state.options.bearer_tokens.is_empty() {
            lines.push(format!(
                "OAuth2: Authorization: Bearer {}",
                self.state.options.bearer_tokens.join(" | ")
            ));
        }
        lines.push(format!(
            "endpoints: POST {0}/0.2/documents, POST {0}/0.2/list_documents, POST {0}/0.2/get_document, POST {0}/0.2/document_types, GET {0}/0.2/getmessage",
            self.url()
        ));
        lines.push(format!(
            "stored documents: {} (list: GET {}/__emulator/documents)",
            self.state.store.dir().display(),
            self.url()
        ));
        lines.push(format!(
            "faults: curl -X PUT {}/__emulator/faults -H 'content-type: application/json' -d '{{\"fail_next\":2,\"fail_status\":503}}'",
            self.url()
        ));
        lines
    }

    /// Every document accepted so far.
    pub fn stored(&self) -> Vec<StoredDocument> {
        self.state.store.list()
    }

    pub fn data_dir(&self) -> &Path {
        &self.state.options.data_dir
    }

    /// Stop accepting and wait for in-flight requests.
    pub async fn stop(self) -> std::io::Result<()> {
        self.server.stop().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registry_file_adds_handles_and_tokens() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join(REGISTRY_FILE),
            r#"{"users": {"u.silamoney.eth": "0x63FaC9201494f0bd17B9892B9fae4d52fe3BD377"},
                "bearer_tokens": ["t2"]}"#,
        )
        .expect("write");
        let emu = start(EmulatorOptions::new(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().to_owned(),
        ))
        .await
        .expect("starts");
        assert!(emu.state.registry.users().contains_key("u.silamoney.eth"));
        assert!(emu.state.registry.users().contains_key(TEST_USER_HANDLE));
        assert!(emu.banner().iter().any(|l| l.contains("t2")));
        emu.stop().await.expect("stop");

        std::fs::write(dir.path().join(REGISTRY_FILE), r#"{"user": {}}"#).expect("write");
        let err = start(EmulatorOptions::new(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().to_owned(),
        ))
        .await
        .expect_err("typo refused");
        assert!(err.to_string().contains(REGISTRY_FILE), "{err}");
    }

    #[test]
    fn the_built_in_identities_are_the_notes_addresses() {
        assert_eq!(
            test_address(TEST_APP_PRIVATE_KEY).to_string(),
            "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
        );
        assert_eq!(
            test_address(TEST_USER_PRIVATE_KEY).to_string(),
            "0x63fac9201494f0bd17b9892b9fae4d52fe3bd377"
        );
    }
}
