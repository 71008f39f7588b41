//! What the emulator has accepted: submissions, their stored documents and review states.
//!
//! Everything is appended to `journal.jsonl` in the data directory and replayed at start, so a
//! restarted emulator still knows every submission and answers `getAddressKycStatus` as
//! before. Documents live under `documents/<submission id>/<field>.<extension>`.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::submission::Endpoint;

/// Address KYC review states, as `getAddressKycStatus` reports them.
pub const NOT_SUBMITTED: u8 = 0;
pub const PENDING: u8 = 1;
pub const APPROVED: u8 = 2;
pub const RESUBMISSION_NEEDED: u8 = 3;
pub const REJECTED: u8 = 4;

/// One accepted submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubmission {
    pub id: u64,
    pub endpoint: Endpoint,
    pub username: String,
    pub request_id: String,
    pub received_at_ms: i64,
    /// The non-document fields as received (without `sign`).
    pub fields: BTreeMap<String, String>,
    pub documents: Vec<StoredDocument>,
}

/// One decoded, stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDocument {
    /// The body field it came in (`address_proof_front`, `id_back` …).
    pub field: String,
    /// The `*_extension` sent with it.
    pub extension: String,
    /// The type sniffed from the decoded bytes.
    pub media_type: String,
    pub size: u64,
    pub sha256: String,
    /// Absolute path of the stored bytes (relative to the data directory in the journal).
    pub path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Submission(StoredSubmission),
    Review { username: String, status: u8 },
}

#[derive(Debug)]
pub struct Ledger {
    root: PathBuf,
    journal: File,
    submissions: Vec<StoredSubmission>,
    address_status: HashMap<String, u8>,
    next_id: u64,
}

impl Ledger {
    pub fn open(root: &Path) -> io::Result<Ledger> {
        let path = root.join("journal.jsonl");
        let mut ledger = Ledger {
            root: root.to_owned(),
            journal: OpenOptions::new().create(true).append(true).open(&path)?,
            submissions: Vec::new(),
            address_status: HashMap::new(),
            next_id: 1,
        };
        for line in BufReader::new(File::open(&path)?).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            // A line cut by a crash mid-write is the only way to get a bad one; skip it.
            if let Ok(event) = serde_json::from_str::<Event>(&line) {
                ledger.apply(event);
            }
        }
        Ok(ledger)
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Submission(mut s) => {
                for d in &mut s.documents {
                    d.path = self.root.join(&d.path);
                }
                if matches!(
                    s.endpoint,
                    Endpoint::AddAddressProof | Endpoint::UpdateAddressProof
                ) {
                    self.address_status.insert(s.username.clone(), PENDING);
                }
                self.next_id = self.next_id.max(s.id + 1);
                self.submissions.push(s);
            }
            Event::Review { username, status } => {
                self.address_status.insert(username, status);
            }
        }
    }

    fn append(&mut self, event: &Event) -> io::Result<()> {
        let line = serde_json::to_string(event).map_err(io::Error::other)?;
        writeln!(self.journal, "{line}")?;
        self.journal.flush()
    }

    /// The id the next submission will get (its documents directory is named after it).
    pub fn reserve_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Record an accepted submission whose documents are already in place.
    pub fn record(&mut self, submission: StoredSubmission) -> io::Result<()> {
        let mut on_disk = submission.clone();
        for d in &mut on_disk.documents {
            if let Ok(rel) = d.path.strip_prefix(&self.root) {
                d.path = rel.to_owned();
            }
        }
        self.append(&Event::Submission(on_disk))?;
        // `apply` joins paths onto the root; an absolute path stays as it is.
        self.apply(Event::Submission(submission));
        Ok(())
    }

    /// Set the review state of a user's address KYC (what a Finext reviewer would do).
    pub fn review(&mut self, username: &str, status: u8) -> io::Result<()> {
        let event = Event::Review {
            username: username.to_owned(),
            status,
        };
        self.append(&event)?;
        self.apply(event);
        Ok(())
    }

    pub fn address_status(&self, username: &str) -> u8 {
        self.address_status
            .get(username)
            .copied()
            .unwrap_or(NOT_SUBMITTED)
    }

    pub fn submissions(&self) -> &[StoredSubmission] {
        &self.submissions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(id: u64, endpoint: Endpoint, root: &Path) -> StoredSubmission {
        StoredSubmission {
            id,
            endpoint,
            username: "lili111".into(),
            request_id: format!("{id:032}"),
            received_at_ms: 1,
            fields: BTreeMap::new(),
            documents: vec![StoredDocument {
                field: "id_front".into(),
                extension: "jpg".into(),
                media_type: "image/jpeg".into(),
                size: 3,
                sha256: "00".into(),
                path: root
                    .join("documents")
                    .join(id.to_string())
                    .join("id_front.jpg"),
            }],
        }
    }

    #[test]
    fn submissions_and_reviews_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = Ledger::open(dir.path()).expect("open");
        assert_eq!(l.address_status("lili111"), NOT_SUBMITTED);
        let id = l.reserve_id();
        l.record(submission(id, Endpoint::AddIdProof, dir.path()))
            .expect("record");
        assert_eq!(
            l.address_status("lili111"),
            NOT_SUBMITTED,
            "an ID proof is not an address proof"
        );
        let id = l.reserve_id();
        l.record(submission(id, Endpoint::AddAddressProof, dir.path()))
            .expect("record");
        assert_eq!(l.address_status("lili111"), PENDING);
        l.review("lili111", RESUBMISSION_NEEDED).expect("review");
        let before = l.submissions().to_vec();
        drop(l);

        let mut l = Ledger::open(dir.path()).expect("reopen");
        assert_eq!(l.address_status("lili111"), RESUBMISSION_NEEDED);
        assert_eq!(l.submissions(), &before[..]);
        assert!(l.submissions()[0].documents[0].path.starts_with(dir.path()));
        assert_eq!(l.reserve_id(), 3);
    }
}
