//! Credentials that can change while docgate runs: the user keystore and an OAuth2 token.
//!
//! Both are files an operator (or a secret manager) rewrites: users are registered with Sila
//! over time, tokens expire and are rotated. Restarting the gateway for either would drop
//! in-flight uploads, so both are re-read when the file's modification time or length
//! changes — a `stat` per delivery, the content only when it changed.
//!
//! The keystore holds private keys, so it is refused unless only its owner can access it
//! (mode `0600` or stricter), exactly like `ssh` refuses a private key others can read.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use docgate_core::{secret::SecretError, Secret, SecretSource};

use crate::signing::{PrivateKey, SigningError};

/// A keystore or token file larger than this is certainly not one.
const MAX_CREDENTIAL_FILE: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is accessible by group or others (mode {mode:04o}); it holds private keys: chmod 600 it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("{0} is larger than 1 MiB")]
    TooLarge(PathBuf),
    #[error("{path} is not a JSON object of user_handle → private key hex (line {line}, column {column})")]
    Format {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{path}: the key for `{handle}` is unusable: {source}")]
    Key {
        path: PathBuf,
        handle: String,
        source: SigningError,
    },
}

/// When a file last changed, as far as `stat` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(meta: &fs::Metadata) -> FileStamp {
    FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    }
}

/// User handle → private key, from a private JSON file.
#[derive(Debug)]
pub struct Keystore {
    path: PathBuf,
    state: Mutex<(FileStamp, BTreeMap<String, PrivateKey>)>,
}

impl Keystore {
    /// Load the file now; refuse it when others can read it or any key is malformed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Keystore, KeystoreError> {
        let path = path.into();
        let (stamp, keys) = load_keystore(&path)?;
        Ok(Keystore {
            path,
            state: Mutex::new((stamp, keys)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key for `handle` (handles compare case-insensitively), re-reading the file first
    /// if it changed. A file that became unusable is an error, not "no key": keys must not
    /// silently disappear because someone loosened a permission.
    pub fn key_for(&self, handle: &str) -> Result<Option<PrivateKey>, KeystoreError> {
        let meta = fs::metadata(&self.path).map_err(|source| KeystoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        // A chmod changes neither mtime nor length: the mode is checked on every use.
        check_private(&self.path, &meta)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if stamp(&meta) != state.0 {
            *state = load_keystore(&self.path)?;
        }
        Ok(state.1.get(&handle.to_ascii_lowercase()).cloned())
    }

    /// The handles that have keys (for diagnostics; never the keys).
    pub fn handles(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1.keys().cloned().collect()
    }
}

fn load_keystore(path: &Path) -> Result<(FileStamp, BTreeMap<String, PrivateKey>), KeystoreError> {
    let io = |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    check_private(path, &meta)?;
    let text = fs::read_to_string(path).map_err(io)?;
    // serde_json's messages can quote the offending value: report the position only, so a
    // malformed file never echoes key material into a log.
    let raw: BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|e| KeystoreError::Format {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
        })?;
    let mut keys = BTreeMap::new();
    for (handle, hex) in raw {
        let key = PrivateKey::from_hex(&hex).map_err(|source| KeystoreError::Key {
            path: path.to_owned(),
            handle: handle.clone(),
            source,
        })?;
        keys.insert(handle.trim().to_ascii_lowercase(), key);
    }
    Ok((stamp(&meta), keys))
}

fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeystoreError> {
    if !meta.is_file() {
        return Err(KeystoreError::NotAFile(path.to_owned()));
    }
    if meta.len() > MAX_CREDENTIAL_FILE {
        return Err(KeystoreError::TooLarge(path.to_owned()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeystoreError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

/// Write a keystore file the way [`Keystore::open`] wants it: mode 0600 from the start (the
/// file is created with that mode, so there is no moment where others could read it).
pub fn write_keystore(
    path: &Path,
    entries: &BTreeMap<String, String>,
) -> Result<(), std::io::Error> {
    use std::io::Write;
    let json = serde_json::to_vec_pretty(entries).map_err(std::io::Error::other)?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // An existing file keeps its old mode through `open`: tighten it explicitly.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(&json)?;
    file.sync_all()
}

/// Where the OAuth2 access token comes from.
#[derive(Debug)]
pub struct TokenSource(Token);

#[derive(Debug)]
enum Token {
    /// An environment variable, read once at start (a process's environment cannot change).
    Fixed(Secret),
    /// A file, re-read when it changes.
    File {
        path: PathBuf,
        state: Mutex<(FileStamp, Secret)>,
    },
}

impl TokenSource {
    pub fn open(source: &SecretSource) -> Result<TokenSource, SecretError> {
        match source {
            SecretSource::Env { .. } => source.load().map(|t| TokenSource(Token::Fixed(t))),
            SecretSource::File { file } => {
                let (stamp, token) = load_token(file)?;
                Ok(TokenSource(Token::File {
                    path: file.clone(),
                    state: Mutex::new((stamp, token)),
                }))
            }
        }
    }

    /// The current token.
    pub fn current(&self) -> Result<Secret, SecretError> {
        match &self.0 {
            Token::Fixed(token) => Ok(token.clone()),
            Token::File { path, state } => {
                let meta = fs::metadata(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                if stamp(&meta) != state.0 {
                    *state = load_token(path)?;
                }
                Ok(state.1.clone())
            }
        }
    }
}

fn load_token(path: &Path) -> Result<(FileStamp, Secret), SecretError> {
    let io = |source| SecretError::File {
        path: path.to_owned(),
        source,
    };
    // Stat before reading: if the file changes in between, the next call sees a newer stamp
    // and reads again, so a rotation is never missed.
    let meta = fs::metadata(path).map_err(io)?;
    let token = SecretSource::File {
        file: path.to_owned(),
    }
    .load()?;
    Ok((stamp(&meta), token))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const USER_KEY: &str = "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f";
    const APP_KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

    fn entries(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(h, k)| (h.to_string(), k.to_string()))
            .collect()
    }

    #[test]
    fn a_private_keystore_loads_and_group_or_world_access_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.json");
        write_keystore(&path, &entries(&[("Test_User.silamoney.eth", USER_KEY)])).expect("write");
        assert_eq!(
            fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
            0o600
        );
        let store = Keystore::open(&path).expect("0600 is accepted");
        let key = store
            .key_for("test_user.silamoney.eth")
            .expect("readable")
            .expect("present");
        assert_eq!(
            key.address().to_string(),
            "0x63fac9201494f0bd17b9892b9fae4d52fe3bd377"
        );

        for mode in [0o640, 0o604, 0o660, 0o610] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let err = Keystore::open(&path).expect_err("refused");
            assert!(matches!(err, KeystoreError::Permissions { .. }), "{mode:o}");
            assert!(err.to_string().contains("chmod 600"));
            // A running keystore refuses too, instead of using a now-exposed file.
            assert!(store.key_for("test_user.silamoney.eth").is_err());
        }
    }

    #[test]
    fn malformed_files_never_echo_key_material() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.json");
        let secretish = "8da4ef21b864d2cc526dbdb2a120bd28";
        fs::write(&path, format!("{{\"u\": {secretish}}}")).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = Keystore::open(&path).expect_err("not a string");
        assert!(!err.to_string().contains(secretish), "{err}");

        write_keystore(&path, &entries(&[("u", "0x1234")])).expect("write");
        let err = Keystore::open(&path).expect_err("short key");
        assert!(matches!(err, KeystoreError::Key { .. }));
        assert!(!err.to_string().contains("1234"), "{err}");
    }

    #[test]
    fn keystore_changes_are_picked_up_without_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.json");
        write_keystore(&path, &entries(&[("a", USER_KEY)])).expect("write");
        let store = Keystore::open(&path).expect("open");
        assert!(store.key_for("b").expect("ok").is_none());
        // Different length, so the change is visible even within one mtime tick.
        write_keystore(&path, &entries(&[("a", USER_KEY), ("b", APP_KEY)])).expect("write");
        assert!(store.key_for("b").expect("ok").is_some());
        assert_eq!(store.handles(), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn a_token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        fs::write(&path, "first-token\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let source = TokenSource::open(&SecretSource::File { file: path.clone() }).expect("open");
        assert_eq!(source.current().expect("token").expose(), "first-token");
        fs::write(&path, "second-token-longer\n").expect("rotate");
        assert_eq!(
            source.current().expect("token").expose(),
            "second-token-longer"
        );
        fs::remove_file(&path).expect("rm");
        assert!(
            source.current().is_err(),
            "a vanished token file is an error"
        );
    }
}
