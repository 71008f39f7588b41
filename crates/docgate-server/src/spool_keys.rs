//! Where an upload's documents are kept in the spool, and removing them.
//!
//! Every document of an upload is one object, `uploads/<upload id>.<slot>` — a flat name, so
//! accepting an upload creates no directory (one fewer metadata write to sync). Slot names
//! are restricted to `[A-Za-z0-9_-]` by the upload policy and the upload id is a UUID, so a
//! key never contains anything a client chose freely. Ledgers written before this layout
//! name `uploads/<upload id>/<slot>`; both are read and both are swept.

use std::time::Duration;

use docgate_core::SpoolDir;
use tracing::Instrument;

/// How long a request waits for the removal of documents it will not keep before it
/// answers; see [`remove_for_request`].
pub const REQUEST_CLEANUP_WAIT: Duration = Duration::from_secs(5);

/// Removals left running past their request's wait, at most. Past it, what a refused request
/// wrote is left to the orphan sweep rather than piling up tasks on a store that does not
/// answer.
const BACKGROUND_REMOVALS: usize = 64;
static REMOVALS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BACKGROUND_REMOVALS);

/// The spool key of one document.
pub fn document_key(upload_id: &str, slot: &str) -> String {
    format!("uploads/{upload_id}.{slot}")
}

/// The spool key of one document of a session's upload sent in one request: `writer`
/// names the request, so a retry of the session's upload never writes the key of an
/// attempt that failed (whose removal may still be on its way).
pub fn session_document_key(upload_id: &str, slot: &str, writer: &str) -> String {
    format!("uploads/{upload_id}.{slot}.{writer}")
}

/// The spool key of the `n`th piece of a resumable upload (`tus_id`) of a session's upload.
/// `writer` names the request that writes it (hex), so two writers never share a key.
pub fn piece_key(upload_id: &str, slot: &str, tus_id: &str, n: usize, writer: &str) -> String {
    format!("uploads/{upload_id}.{slot}.{tus_id}.{n}.{writer}")
}

/// The prefix every upload document key starts with.
pub const UPLOADS: &str = "uploads/";

/// Temporary objects (documents ingested outside an upload, probes).
pub const TMP: &str = "tmp/";

/// The upload a document key belongs to.
pub fn upload_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(UPLOADS)?;
    let end = rest.find(['.', '/']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|id| !id.is_empty())
}

/// Remove the objects `keys` (missing ones are fine). Returns the first error, after trying
/// every key.
pub async fn remove(spool: &SpoolDir, keys: &[String]) -> std::io::Result<()> {
    let mut first_error = None;
    for key in keys {
        if let Err(e) = spool.store().delete(key).await {
            tracing::warn!(key, error = %e, "could not remove a spooled document");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Remove what a refused or failed request wrote, waiting at most [`REQUEST_CLEANUP_WAIT`]
/// before the request answers. A local spool removes them well within it; a store that
/// stopped answering (a frozen S3 server) held the answer for its client's timeouts — as
/// long again as the write that failed — so past the wait the removal goes on in the
/// background (bounded by the store's own timeouts), and what it cannot remove the orphan
/// sweep does.
pub async fn remove_for_request(spool: &SpoolDir, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    let Ok(permit) = REMOVALS.try_acquire() else {
        tracing::warn!(
            keys = keys.len(),
            "the spool is not keeping up with removals: leaving these to the orphan sweep"
        );
        return;
    };
    let spool = spool.clone();
    let removal = tokio::spawn(
        async move {
            let _permit = permit;
            // Each failure is logged by `remove`.
            let _ = remove(&spool, &keys).await;
        }
        .instrument(tracing::Span::current()),
    );
    if tokio::time::timeout(REQUEST_CLEANUP_WAIT, removal)
        .await
        .is_err()
    {
        tracing::warn!(
            "the spool is slow to remove a refused upload's documents: answering without waiting"
        );
    }
}

/// Let the store drop `keys` from its cache (documents kept after delivery for their
/// retention). Best effort: a failure costs memory, not data.
pub async fn evict_cached(spool: &SpoolDir, keys: &[String]) {
    for key in keys {
        if let Err(e) = spool.store().evict_cached(key).await {
            tracing::debug!(key, error = %e, "could not drop a delivered document from the cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::test_stores::Hanging;

    // A frozen S3 server held a refused upload's answer for the removal's timeouts (about
    // 90 s) after the write itself had failed.
    #[tokio::test(start_paused = true)]
    async fn regression_a_request_waits_a_bounded_time_for_its_clean_up() {
        let spool = SpoolDir::with_store(Arc::new(Hanging), 0);
        let started = tokio::time::Instant::now();
        remove_for_request(&spool, vec![document_key("5f0c-1", "front")]).await;
        assert_eq!(started.elapsed(), REQUEST_CLEANUP_WAIT);
    }

    #[tokio::test]
    async fn a_local_spool_is_clean_when_the_request_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let key = document_key("5f0c-1", "front");
        let mut writer = spool.store().put(&key).await.expect("put");
        writer
            .write(bytes::Bytes::from_static(b"x"))
            .await
            .expect("write");
        writer.commit().await.expect("commit");
        remove_for_request(&spool, vec![key.clone()]).await;
        assert!(spool.store().list(UPLOADS).await.expect("list").is_empty());
    }

    #[test]
    fn keys_name_their_upload_in_both_layouts() {
        let key = document_key("5f0c-1", "front");
        assert_eq!(key, "uploads/5f0c-1.front");
        assert_eq!(upload_of(&key), Some("5f0c-1"));
        assert_eq!(upload_of("uploads/5f0c-1/front"), Some("5f0c-1"));
        assert_eq!(
            upload_of(&session_document_key("5f0c-1", "front", "9a")),
            Some("5f0c-1")
        );
        assert_eq!(upload_of("tmp/x"), None);
        assert_eq!(upload_of("uploads/"), None);
    }
}
