//! The emulator's store: received bodies on disk, indexed by customer and body hash.
//!
//! ```text
//! data_dir/tmp/<uuid>.part                          a body being received (removed if it fails)
//! data_dir/bodies/<hex h_payto>-<H_BODY>.body       the body, byte for byte
//! data_dir/index/<first two hex digits>.jsonl       one line per stored body: the customer and
//!                                                   what was declared (payto, type, size, key, time)
//! ```
//! The files *are* the index, so it survives restarts with nothing to rebuild, and a person can
//! look at what a client sent. A customer is identified by the same payto hash the signature
//! covers (variant A, B or C), which is how the exchange would tell customers apart. A body
//! counts as stored once its `.body` file exists: it is renamed into place last, under a lock,
//! after its index line, so two identical concurrent uploads store it once (the second one
//! gets 412) and every stored body has its line.
//!
//! Flat on purpose: a directory per customer cost a `mkdir` (and a failed open first) for every
//! new customer, and a metadata file a second file creation per body — in the sandbox, where
//! the emulator shares the gateway's process, several per cent of a small upload's CPU. The
//! index is split in 256 files by the customer's hash, so listing a customer reads 1/256 of it.
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
/// same trip to a blocking thread.
fn commit_in_place(
    body_path: &Path,
    temp_path: &Path,
    small: Option<&[axum::body::Bytes]>,
    index_path: &Path,
    index_line: &[u8],
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
    append_line(index_path, index_line)?;
    std::fs::rename(temp_path, body_path)?;
    Ok(Committed::Stored)
}

/// Append one line (from [`index_line`]) to an index file, made if missing. One write of the
/// whole line: appends do not interleave. The line starts with a newline too, so one cut
/// short by a failed write (a full disk) cannot swallow the next.
fn append_line(index_path: &Path, line: &[u8]) -> io::Result<()> {
    let mut index = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(index_path)?;
    io::Write::write_all(&mut index, line)
}

/// One line of the index.
#[derive(Serialize, Deserialize)]
struct IndexLine {
    /// The customer's payto hash, hex.
    customer: String,
    #[serde(flatten)]
    body: StoredBody,
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    commit_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Open (or create) the store under `data_dir`, removing half-received bodies and moving
    /// a store of the earlier layout (a directory per customer) into this one.
    pub fn open(data_dir: &Path) -> io::Result<Store> {
        let tmp = data_dir.join("tmp");
        for dir in ["tmp", "bodies", "index"] {
            std::fs::create_dir_all(data_dir.join(dir))?;
        }
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
        let store = Store {
            root: data_dir.to_path_buf(),
            commit_lock: Default::default(),
        };
        store.move_per_customer_directories()?;
        Ok(store)
    }

    /// `customers/<hex>/<H_BODY>.body` and `.json` (the layout before this one): each body
    /// moves to `bodies/`, its metadata to the index, and the emptied directories go.
    fn move_per_customer_directories(&self) -> io::Result<()> {
        let old = self.root.join("customers");
        let customers = match std::fs::read_dir(&old) {
            Ok(rd) => rd,
            // No earlier store, or something else of that name: not ours to move.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        for customer in customers {
            let customer = customer?;
            // Anything else a person left there (a file beside the directories) is no
            // customer's and stays.
            let Some(hex_customer) = customer.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !customer.file_type()?.is_dir() {
                continue;
            }
            // The oldest layout kept the customer's payto in a file beside the bodies.
            let payto_path = customer.path().join("payto");
            let payto = std::fs::read_to_string(&payto_path).ok();
            for entry in std::fs::read_dir(customer.path())? {
                let path = entry?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("body") {
                    continue;
                }
                self.move_old_body(&hex_customer, &path, payto.as_deref())?;
            }
            let _ = std::fs::remove_file(payto_path);
            // Only if empty: anything left there was not a stored body's.
            let _ = std::fs::remove_dir(customer.path());
        }
        let _ = std::fs::remove_dir(old);
        Ok(())
    }

    /// One body of the earlier layout into this one: its metadata from the `.json` beside it,
    /// or, without one, what the file itself says (size, time).
    fn move_old_body(
        &self,
        hex_customer: &str,
        path: &Path,
        payto: Option<&str>,
    ) -> io::Result<()> {
        // The name says which body it is.
        let Some(h_body) = path.file_stem().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Ok(());
        };
        let meta_path = path.with_extension("json");
        let declared = std::fs::read(&meta_path)
            .ok()
            .and_then(|m| serde_json::from_slice::<StoredBody>(&m).ok());
        let mut body = match declared {
            Some(body) => body,
            None => {
                let file = std::fs::metadata(path)?;
                let received_at = file
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                StoredBody {
                    payto: String::new(),
                    h_body: String::new(),
                    size: file.len(),
                    content_type: String::new(),
                    extern_pub: String::new(),
                    received_at,
                    path: PathBuf::new(),
                }
            }
        };
        body.h_body = h_body;
        if body.payto.is_empty() {
            body.payto = payto.unwrap_or_default().trim().to_owned();
        }
        append_line(
            &self.index_path(hex_customer),
            &index_line(hex_customer, &body)?,
        )?;
        std::fs::rename(path, self.body_path_hex(hex_customer, &body.h_body))?;
        match std::fs::remove_file(meta_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn index_path(&self, hex_customer: &str) -> PathBuf {
        let shard = hex_customer.get(..2).unwrap_or("00");
        self.root.join("index").join(format!("{shard}.jsonl"))
    }

    fn body_path_hex(&self, hex_customer: &str, h_body: &str) -> PathBuf {
        self.root
            .join("bodies")
            .join(format!("{hex_customer}-{h_body}.body"))
    }

    fn body_path(&self, customer: &[u8], h_body: &[u8; 64]) -> PathBuf {
        self.body_path_hex(&hex::encode(customer), &crockford::encode(h_body))
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
        let hex_customer = hex::encode(customer);
        let line = index_line(&hex_customer, meta)?;
        let index_path = self.index_path(&hex_customer);
        let body_path = self.body_path(customer, h_body);
        let guard = self.commit_lock.clone().lock_owned().await;
        // One trip to a blocking thread for the whole commit: the lock is held for as
        // short a time as the file system allows. The lock and the temporary file go with
        // it: a request dropped meanwhile (its client gone) must neither free the lock
        // before the commit ends nor remove the file the commit is moving into place.
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let committed =
                commit_in_place(&body_path, &temp.path, small.as_deref(), &index_path, &line)?;
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
        let hex_customer = hex::encode(customer);
        let index = match std::fs::read(self.index_path(&hex_customer)) {
            Ok(index) => index,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // A line cut short by a crash, or a line whose body never made it into place (the
        // rename failed), is not a stored body. A body committed again after such a failure
        // has a later line: the last one is what was stored.
        let mut latest = std::collections::HashMap::new();
        for line in index.split(|b| *b == b'\n') {
            let Ok(line) = serde_json::from_slice::<IndexLine>(line) else {
                continue;
            };
            // Only what names a body (the hash is part of a path).
            let names_a_body = crockford::decode_array::<64>(&line.body.h_body).is_ok();
            if line.customer == hex_customer && names_a_body {
                latest.insert(line.body.h_body.clone(), line.body);
            }
        }
        let mut out = Vec::new();
        for (_, mut body) in latest {
            body.path = self.body_path_hex(&hex_customer, &body.h_body);
            if body.path.try_exists()? {
                out.push(body);
            }
        }
        out.sort_by(|a, b| (a.received_at, &a.h_body).cmp(&(b.received_at, &b.h_body)));
        Ok(out)
    }
}

/// A body's index line, newline included.
fn index_line(hex_customer: &str, body: &StoredBody) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&IndexLine {
        customer: hex_customer.to_owned(),
        body: body.clone(),
    })
    .map_err(io::Error::other)?;
    line.insert(0, b'\n');
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(payto: &str, h_body: &[u8; 64], received_at: i64) -> StoredBody {
        StoredBody {
            payto: payto.to_owned(),
            h_body: crockford::encode(h_body),
            size: 3,
            content_type: "application/pdf".into(),
            extern_pub: "KEY".into(),
            received_at,
            path: PathBuf::new(),
        }
    }

    async fn store_once(store: &Store, customer: &[u8], h_body: &[u8; 64], at: i64) -> Committed {
        let small = vec![axum::body::Bytes::from_static(b"pdf")];
        store
            .commit(
                store.temp(),
                Some(small),
                customer,
                h_body,
                &declared("payto://x", h_body, at),
            )
            .await
            .expect("commit")
    }

    #[tokio::test]
    async fn a_body_is_stored_once_and_listed_for_its_customer_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        assert_eq!(
            store_once(&store, &alice, &[7; 64], 2).await,
            Committed::Stored
        );
        assert_eq!(
            store_once(&store, &alice, &[7; 64], 3).await,
            Committed::AlreadyStored
        );
        assert_eq!(
            store_once(&store, &alice, &[8; 64], 1).await,
            Committed::Stored
        );
        assert_eq!(
            store_once(&store, &bob, &[7; 64], 4).await,
            Committed::Stored
        );
        let listed = store.list(&alice).expect("list");
        let hashes: Vec<&str> = listed.iter().map(|b| b.h_body.as_str()).collect();
        assert_eq!(
            hashes,
            vec![crockford::encode(&[8; 64]), crockford::encode(&[7; 64])],
            "oldest first"
        );
        assert_eq!(std::fs::read(&listed[0].path).expect("body"), b"pdf");
        assert!(store.contains(&bob, &[7; 64]).await);
        assert!(!store.contains(&bob, &[8; 64]).await);
        // Nothing left in tmp/, no directory per customer.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
        assert!(!dir.path().join("customers").exists());
    }

    #[tokio::test]
    async fn a_line_cut_short_or_without_its_body_is_not_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let customer = [3u8; 32];
        store_once(&store, &customer, &[9; 64], 1).await;
        let index = store.index_path(&hex::encode(customer));
        // A line whose body never came (its rename failed), then one cut short by a full
        // disk: neither is listed, and the next body's line is still read.
        let line = |h: u8, at| index_line(&hex::encode(customer), &declared("p", &[h; 64], at));
        let mut lines = line(5, 2).expect("line");
        let mut cut = line(6, 3).expect("line");
        cut.truncate(20);
        lines.extend_from_slice(&cut);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&index)
            .expect("index");
        io::Write::write_all(&mut file, &lines).expect("append");
        store_once(&store, &customer, &[8; 64], 4).await;
        let listed = store.list(&customer).expect("list");
        let hashes: Vec<String> = listed.iter().map(|b| b.h_body.clone()).collect();
        assert_eq!(
            hashes,
            vec![crockford::encode(&[9; 64]), crockford::encode(&[8; 64])]
        );
    }

    #[test]
    fn a_store_with_a_directory_per_customer_is_moved_into_this_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let customer = [4u8; 32];
        let h_body = crockford::encode(&[6; 64]);
        let old = dir.path().join("customers").join(hex::encode(customer));
        std::fs::create_dir_all(&old).expect("old layout");
        std::fs::write(old.join(format!("{h_body}.body")), b"old").expect("body");
        let meta = serde_json::to_vec(&declared("payto://old", &[6; 64], 5)).expect("json");
        std::fs::write(old.join(format!("{h_body}.json")), meta).expect("meta");
        // A file someone left beside the customers' directories does not stop the start.
        std::fs::write(dir.path().join("customers").join(".DS_Store"), b"x").expect("stray");
        // The oldest layout: the payto in a file beside the bodies, and a body whose
        // metadata file is missing.
        let oldest = [5u8; 32];
        let oldest_dir = dir.path().join("customers").join(hex::encode(oldest));
        std::fs::create_dir_all(&oldest_dir).expect("oldest layout");
        std::fs::write(oldest_dir.join("payto"), b"payto://oldest\n").expect("payto");
        std::fs::write(oldest_dir.join(format!("{h_body}.body")), b"bare").expect("body");
        let store = Store::open(dir.path()).expect("open");
        let listed = store.list(&customer).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].payto, "payto://old");
        assert_eq!(std::fs::read(&listed[0].path).expect("body"), b"old");
        assert!(!dir
            .path()
            .join("customers")
            .join(hex::encode(customer))
            .exists());
        let oldest = store.list(&oldest).expect("list");
        assert_eq!(oldest.len(), 1);
        assert_eq!(
            (oldest[0].payto.as_str(), oldest[0].size),
            ("payto://oldest", 4)
        );
        assert!(!oldest_dir.exists());
    }
}
