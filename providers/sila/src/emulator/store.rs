//! Where accepted documents end up: one file plus one JSON record per document.
//!
//! Keeping what was accepted on disk (not in memory) bounds the emulator's footprint and lets
//! a test — or a person poking at `docgate emulate sila` — see exactly what Sila would have
//! stored: `GET /__emulator/documents` lists the records, and the bytes are in
//! `<data dir>/documents/<document_id>.<ext>`.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

/// What the emulator recorded about one accepted document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDocument {
    pub document_id: String,
    /// `header.reference` of the request (the caller's id).
    pub reference: String,
    pub app_handle: String,
    pub user_handle: String,
    /// The part name the file came in (`file` for single uploads).
    pub label: String,
    pub filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub document_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
    pub mime_type: String,
    pub sha256: String,
    pub size: u64,
    /// The request's `Content-Length` header, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_content_length: Option<u64>,
    /// How the request authenticated: `ecdsa` or `oauth2`.
    pub auth: String,
    /// Unix seconds when accepted.
    pub received_at: i64,
}

impl StoredDocument {
    /// Whether this document was uploaded by `user_handle` through `app_handle` (handles are
    /// case-insensitive, as in the registry).
    pub fn belongs_to(&self, app_handle: &str, user_handle: &str) -> bool {
        self.app_handle.eq_ignore_ascii_case(app_handle)
            && self.user_handle.eq_ignore_ascii_case(user_handle)
    }
}

/// The document store under the emulator's data dir.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    tmp: PathBuf,
    index: Mutex<Vec<StoredDocument>>,
}

impl Store {
    /// Open (and create) `<data_dir>/documents` and `<data_dir>/tmp`; earlier records are
    /// loaded, leftovers of an interrupted upload are removed.
    pub fn open(data_dir: &Path) -> io::Result<Store> {
        let dir = data_dir.join("documents");
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
        let mut index = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path)?;
                match serde_json::from_str::<StoredDocument>(&text) {
                    Ok(record) => index.push(record),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "skipping unreadable record")
                    }
                }
            }
        }
        index.sort_by_key(|d| d.received_at);
        Ok(Store {
            dir,
            tmp,
            index: Mutex::new(index),
        })
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the bytes of `document_id` with `extension` live.
    pub fn content_path(&self, document_id: &str, extension: &str) -> PathBuf {
        self.dir.join(format!("{document_id}.{extension}"))
    }

    /// Where the bytes of a recorded document live (the extension follows its media type,
    /// as when it was stored).
    pub fn content_path_of(&self, doc: &StoredDocument) -> PathBuf {
        let ext = docgate_core::media::extension_for(&doc.mime_type).unwrap_or("bin");
        self.content_path(&doc.document_id, ext)
    }

    /// The record of `document_id`, if one was accepted.
    pub fn find(&self, document_id: &str) -> Option<StoredDocument> {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|d| d.document_id == document_id)
            .cloned()
    }

    /// Record a document whose bytes are already at `content_path`.
    pub async fn record(&self, doc: StoredDocument) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(&doc).map_err(io::Error::other)?;
        tokio::fs::write(self.dir.join(format!("{}.json", doc.document_id)), json).await?;
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(doc);
        Ok(())
    }

    /// Every accepted document, oldest first.
    pub fn list(&self) -> Vec<StoredDocument> {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
