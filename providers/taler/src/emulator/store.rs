//! The emulator's store: received bodies on disk, indexed by customer and body hash.
//!
//! ```text
//! data_dir/tmp/<uuid>.part                  a body being received (removed if it fails)
//! data_dir/customers/<hex h_payto>/<H_BODY>.json   what was declared (payto, type, size, key, time)
//! data_dir/customers/<hex h_payto>/<H_BODY>.body   the body, byte for byte
//! ```
//! The directory tree *is* the index, so it survives restarts with nothing to rebuild, and a
//! person can look at what a client sent. A customer is identified by the same payto hash the
//! signature covers (variant A, B or C), which is how the exchange would tell customers
//! apart. A body counts as stored once its `.body` file exists: it is renamed into place
//! last, under a lock, so two identical concurrent uploads store it once (the second one
//! gets 412).
//!
//! The emulator is a test double, not a system of record: what it stored survives a restart
//! of its process (the bytes are in the kernel before the 204), but it does not fsync, so a
//! power cut may lose the last bodies. Syncing cost two fsyncs per upload (the body and the
//! customer's directory) — in the sandbox, where the emulator shares the gateway's process,
//! about as much CPU as the gateway's own durability point — and no answer of the emulator
//! depends on it. The gateway's promise ("accepted means durable") is the gateway's own.
use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::crockford;

/// One stored body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBody {
    /// The customer's payto URI as the client sent it (for people reading the store).
    #[serde(default)]
    pub payto: String,
    /// Crockford SHA-512 of the body (the `If-Not-Match` it came with).
    pub h_body: String,
    pub size: u64,
    pub content_type: String,
    /// The `$EXTERN_PUB` that signed it.
    pub extern_pub: String,
    /// Unix seconds.
    pub received_at: i64,
    /// Where the bytes are.
    #[serde(skip)]
    pub path: PathBuf,
}

/// A body being received; its file is removed on drop unless committed.
#[derive(Debug)]
pub struct TempBody {
    path: PathBuf,
    keep: bool,
}

impl TempBody {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its file is the stored body now: not to be removed.
    fn moved_into_place(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempBody {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort; `Store::open` clears leftovers of a crash.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    Stored,
    /// Someone stored the same body for the same customer first.
    AlreadyStored,
}

/// The commit's file-system steps, in order; the `.body` rename is the last that counts.
/// A small body still in memory (`small`) is written to its temporary file here, in the
/// same trip to a blocking thread. The customer's directory is made only when the metadata
/// cannot be written for want of it.
fn commit_in_place(
    dir: &Path,
    body_path: &Path,
    temp_path: &Path,
    small: Option<&[axum::body::Bytes]>,
    meta_json: &[u8],
) -> io::Result<Committed> {
    if body_path.try_exists()? {
        return Ok(Committed::AlreadyStored);
    }
    if let Some(pieces) = small {
        let mut file = std::fs::File::create(temp_path)?;
        for piece in pieces {
            io::Write::write_all(&mut file, piece)?;
        }
    }
    let meta_path = body_path.with_extension("json");
    match std::fs::write(&meta_path, meta_json) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::write(&meta_path, meta_json)?;
        }
        other => other?,
    }
    std::fs::rename(temp_path, body_path)?;
    Ok(Committed::Stored)
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    commit_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Open (or create) the store under `data_dir`, removing half-received bodies.
    pub fn open(data_dir: &Path) -> io::Result<Store> {
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(data_dir.join("customers"))?;
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Store {
            root: data_dir.to_path_buf(),
            commit_lock: Default::default(),
        })
    }

    fn customer_dir(&self, customer: &[u8]) -> PathBuf {
        self.root.join("customers").join(hex::encode(customer))
    }

    fn body_path(&self, customer: &[u8], h_body: &[u8; 64]) -> PathBuf {
        self.customer_dir(customer)
            .join(format!("{}.body", crockford::encode(h_body)))
    }

    pub async fn contains(&self, customer: &[u8], h_body: &[u8; 64]) -> bool {
        tokio::fs::try_exists(self.body_path(customer, h_body))
            .await
            .unwrap_or(false)
    }

    /// A fresh temporary file path for one incoming body.
    pub fn temp(&self) -> TempBody {
        TempBody {
            path: self
                .root
                .join("tmp")
                .join(format!("{}.part", uuid::Uuid::new_v4().simple())),
            keep: false,
        }
    }

    /// Move a fully received and verified body into place: the temporary file, or `small`,
    /// a body kept in memory, written to it first.
    pub async fn commit(
        &self,
        mut temp: TempBody,
        small: Option<Vec<axum::body::Bytes>>,
        customer: &[u8],
        h_body: &[u8; 64],
        meta: &StoredBody,
    ) -> io::Result<Committed> {
        let meta_json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        let guard = self.commit_lock.clone().lock_owned().await;
        let dir = self.customer_dir(customer);
        let body_path = self.body_path(customer, h_body);
        // One trip to a blocking thread for the whole commit: the lock is held for as
        // short a time as the file system allows. The lock and the temporary file go with
        // it: a request dropped meanwhile (its client gone) must neither free the lock
        // before the commit ends nor remove the file the commit is moving into place.
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let committed =
                commit_in_place(&dir, &body_path, &temp.path, small.as_deref(), &meta_json)?;
            if committed == Committed::Stored {
                temp.moved_into_place();
            }
            Ok(committed)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Every body stored for a customer, oldest first.
    pub fn list(&self, customer: &[u8]) -> io::Result<Vec<StoredBody>> {
        let dir = self.customer_dir(customer);
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("body") {
                continue;
            }
            let meta = std::fs::read(path.with_extension("json"))?;
            let mut body: StoredBody = serde_json::from_slice(&meta)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            body.path = path;
            out.push(body);
        }
        out.sort_by(|a, b| (a.received_at, &a.h_body).cmp(&(b.received_at, &b.h_body)));
        Ok(out)
    }
}
