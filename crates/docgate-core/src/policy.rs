//! `UploadPolicy`: everything a provider accepts, stated as data.
//!
//! The pipeline enforces a policy without knowing which provider wrote it: sizes (per document
//! and per request), media types, which digests to compute, and which slots (document names)
//! exist. Keeping this declarative is what lets the front door reject early and lets
//! `GET /v1/providers` tell frontends the rules before they upload.

use serde::{Deserialize, Serialize};

use crate::{archive::ZipRules, media::MediaRange, problem::Problem};

/// Which digests a provider needs. SHA-256 is always computed (it is cheap and goes in every
/// receipt); SHA-512 and MD5 cost a core each at ~500 MB/s, so only when asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSet {
    #[serde(default)]
    pub sha512: bool,
    #[serde(default)]
    pub md5: bool,
}

impl DigestSet {
    pub const SHA256: DigestSet = DigestSet {
        sha512: false,
        md5: false,
    };
    pub const ALL: DigestSet = DigestSet {
        sha512: true,
        md5: true,
    };

    pub fn union(self, other: DigestSet) -> DigestSet {
        DigestSet {
            sha512: self.sha512 || other.sha512,
            md5: self.md5 || other.md5,
        }
    }

    /// The digests in the set, SHA-256 first.
    pub fn algorithms(self) -> impl Iterator<Item = crate::digest::Algorithm> {
        use crate::digest::Algorithm;
        [
            Some(Algorithm::Sha256),
            self.sha512.then_some(Algorithm::Sha512),
            self.md5.then_some(Algorithm::Md5),
        ]
        .into_iter()
        .flatten()
    }

    /// Parse `sha256,sha512,md5` or `all` (the CLI's `--digest`).
    pub fn parse_list(list: &str) -> Result<DigestSet, String> {
        let mut set = DigestSet::SHA256;
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "sha256" | "sha-256" => {}
                "sha512" | "sha-512" => set.sha512 = true,
                "md5" => set.md5 = true,
                "all" => set = DigestSet::ALL,
                other => {
                    return Err(format!(
                        "unknown digest `{other}` (sha256, sha512, md5, all)"
                    ))
                }
            }
        }
        Ok(set)
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut v = vec!["sha256"];
        if self.sha512 {
            v.push("sha512");
        }
        if self.md5 {
            v.push("md5");
        }
        v
    }
}

/// One named document slot (a multipart part name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSpec {
    pub name: String,
    pub required: bool,
}

/// Which part names may carry documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Slots {
    /// A fixed set of names (e.g. `front`, `back`).
    Named { slots: Vec<SlotSpec> },
    /// Any name made of `[A-Za-z0-9_-]`, up to `max` documents (e.g. Sila labels).
    Free { max: usize },
}

/// The rules for one provider's uploads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadPolicy {
    pub min_document_bytes: u64,
    pub max_document_bytes: u64,
    /// The sum over all documents of one request.
    pub max_request_bytes: u64,
    pub accepted: Vec<MediaRange>,
    pub digests: DigestSet,
    pub slots: Slots,
    /// When set, `application/zip` documents are opened and every entry checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip: Option<ZipRules>,
    /// Refuse documents that carry active content: an archive, executable or script hidden
    /// after the end of an image or PDF (a polyglot), a ZIP that ZIP tools would find inside
    /// another format, PDF JavaScript and Launch actions, executables embedded in a PDF (see
    /// [`crate::scan`]). On unless a provider states otherwise.
    #[serde(default = "refuse_by_default")]
    pub refuse_active_content: bool,
}

fn refuse_by_default() -> bool {
    true
}

/// Room for multipart framing and text fields on top of the documents themselves, when the
/// request's Content-Length is compared with the policy before reading.
pub const MULTIPART_OVERHEAD_ALLOWANCE: u64 = 64 * 1024;

impl UploadPolicy {
    pub fn accepts(&self, mime: &str) -> bool {
        self.accepted.iter().any(|r| r.matches(mime))
    }

    pub fn accepted_names(&self) -> Vec<String> {
        self.accepted.iter().map(ToString::to_string).collect()
    }

    pub fn max_documents(&self) -> usize {
        match &self.slots {
            Slots::Named { slots } => slots.len(),
            Slots::Free { max } => *max,
        }
    }

    /// The most permissive policy over `policies`: what a document may be when it arrives
    /// before the field naming its provider (multipart part order is free). The document is
    /// re-checked against the real provider's policy once that is known. `None` for none.
    pub fn most_permissive<'a>(
        policies: impl IntoIterator<Item = &'a UploadPolicy>,
    ) -> Option<UploadPolicy> {
        let mut policies = policies.into_iter();
        let first = policies.next()?.clone();
        let mut merged = UploadPolicy {
            slots: Slots::Free {
                max: first.max_documents(),
            },
            zip: None,
            ..first
        };
        for p in policies {
            merged.min_document_bytes = merged.min_document_bytes.min(p.min_document_bytes);
            merged.max_document_bytes = merged.max_document_bytes.max(p.max_document_bytes);
            merged.max_request_bytes = merged.max_request_bytes.max(p.max_request_bytes);
            for r in &p.accepted {
                if !merged.accepted.contains(r) {
                    merged.accepted.push(r.clone());
                }
            }
            merged.digests = merged.digests.union(p.digests);
            // Lenient unless every provider refuses: the document is scanned again under
            // its provider's own policy once that is known.
            merged.refuse_active_content &= p.refuse_active_content;
            merged.slots = Slots::Free {
                max: merged.max_documents().max(p.max_documents()),
            };
        }
        Some(merged)
    }

    /// Check a slot (part) name before reading any of its bytes.
    pub fn check_slot(&self, name: &str) -> Result<(), Problem> {
        match &self.slots {
            Slots::Named { slots } => {
                if slots.iter().any(|s| s.name == name) {
                    Ok(())
                } else {
                    let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
                    Err(Problem::invalid_field(
                        name,
                        format!("not a document slot here; slots are: {}", names.join(", ")),
                    ))
                }
            }
            Slots::Free { .. } => {
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if ok {
                    Ok(())
                } else {
                    Err(Problem::invalid_field(
                        name,
                        "a document slot name is 1-64 characters of A-Z a-z 0-9 _ -",
                    ))
                }
            }
        }
    }

    /// Required slots that are missing from `present`.
    pub fn missing_slots<'a>(&'a self, present: &[&str]) -> Vec<&'a str> {
        match &self.slots {
            Slots::Named { slots } => slots
                .iter()
                .filter(|s| s.required && !present.contains(&s.name.as_str()))
                .map(|s| s.name.as_str())
                .collect(),
            Slots::Free { .. } => Vec::new(),
        }
    }

    /// The request's declared length against the policy, before any body byte is read.
    /// `framing` is the allowance for multipart boundaries and fields (0 for a raw body).
    pub fn precheck_request_length(
        &self,
        content_length: u64,
        framing: u64,
    ) -> Result<(), Problem> {
        let limit = self.max_request_bytes.min(
            self.max_document_bytes
                .saturating_mul(self.max_documents() as u64),
        );
        if content_length > limit.saturating_add(framing) {
            return Err(Problem::payload_too_large(
                limit,
                "the request (by its Content-Length)",
            ));
        }
        Ok(())
    }

    /// A raw single-document body: its declared length is exactly the document's size.
    pub fn precheck_document_length(&self, len: u64) -> Result<(), Problem> {
        if len > self.max_document_bytes.min(self.max_request_bytes) {
            return Err(Problem::payload_too_large(
                self.max_document_bytes.min(self.max_request_bytes),
                "the document (by its Content-Length)",
            ));
        }
        if len < self.min_document_bytes {
            return Err(Problem::payload_too_small(
                self.min_document_bytes,
                len,
                "the document",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(slots: Slots) -> UploadPolicy {
        UploadPolicy {
            min_document_bytes: 1,
            max_document_bytes: 100,
            max_request_bytes: 150,
            accepted: vec![MediaRange::parse("image/*").expect("valid")],
            digests: DigestSet::SHA256,
            slots,
            zip: None,
            refuse_active_content: true,
        }
    }

    #[test]
    fn request_limit_is_the_smaller_of_request_max_and_documents_times_document_max() {
        let one = policy(Slots::Free { max: 1 });
        assert!(one.precheck_request_length(100, 0).is_ok());
        assert_eq!(
            one.precheck_request_length(101, 0)
                .map_err(|p| p.status.as_u16()),
            Err(413)
        );
        let three = policy(Slots::Free { max: 3 });
        assert!(three.precheck_request_length(150, 0).is_ok());
        assert!(three.precheck_request_length(151, 0).is_err());
        assert!(three.precheck_request_length(151, 10).is_ok());
    }

    #[test]
    fn named_slots_reject_unknown_names_and_report_missing_required_ones() {
        let p = policy(Slots::Named {
            slots: vec![
                SlotSpec {
                    name: "front".into(),
                    required: true,
                },
                SlotSpec {
                    name: "back".into(),
                    required: false,
                },
            ],
        });
        assert!(p.check_slot("front").is_ok());
        assert_eq!(
            p.check_slot("side").map_err(|p| p.code.into_owned()),
            Err("invalid_metadata".into())
        );
        assert_eq!(p.missing_slots(&["back"]), vec!["front"]);
        assert!(p.missing_slots(&["front"]).is_empty());
    }

    #[test]
    fn free_slot_names_are_restricted_to_safe_characters() {
        let p = policy(Slots::Free { max: 2 });
        assert!(p.check_slot("file_1").is_ok());
        assert!(p.check_slot("../etc").is_err());
        assert!(p.check_slot("").is_err());
    }

    #[test]
    fn the_most_permissive_policy_takes_the_widest_of_every_rule() {
        let mut a = policy(Slots::Free { max: 1 });
        a.digests = DigestSet {
            sha512: true,
            md5: false,
        };
        let mut b = policy(Slots::Free { max: 3 });
        b.min_document_bytes = 0;
        b.max_document_bytes = 500;
        b.accepted = vec![MediaRange::parse("application/pdf").expect("valid")];
        b.digests = DigestSet {
            sha512: false,
            md5: true,
        };
        let m = UploadPolicy::most_permissive([&a, &b]).expect("some");
        assert_eq!(m.min_document_bytes, 0);
        assert_eq!(m.max_document_bytes, 500);
        assert_eq!(m.max_documents(), 3);
        assert!(m.accepts("image/png") && m.accepts("application/pdf"));
        assert_eq!(m.digests, DigestSet::ALL);
        assert!(UploadPolicy::most_permissive([]).is_none());
    }

    #[test]
    fn active_content_is_refused_unless_a_policy_says_otherwise() {
        let mut json = serde_json::to_value(policy(Slots::Free { max: 1 })).expect("json");
        assert_eq!(json["refuse_active_content"], true);
        json.as_object_mut()
            .expect("object")
            .remove("refuse_active_content");
        let back: UploadPolicy = serde_json::from_value(json).expect("parse");
        assert!(back.refuse_active_content);
    }

    #[test]
    fn digest_lists_parse() {
        assert_eq!(DigestSet::parse_list("sha256"), Ok(DigestSet::SHA256));
        assert_eq!(DigestSet::parse_list("all"), Ok(DigestSet::ALL));
        assert_eq!(
            DigestSet::parse_list("sha256,md5"),
            Ok(DigestSet {
                sha512: false,
                md5: true
            })
        );
        assert!(DigestSet::parse_list("crc32").is_err());
    }
}
