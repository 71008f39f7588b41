//! The frontend's fields for a Sila upload, checked before any document byte is read.
//!
//! | field | |
//! |---|---|
//! | `user_handle` | required: the Sila user the documents belong to |
//! | `document_type` | required: one of Sila's document types |
//! | `name` | optional, ≤ 100 characters |
//! | `description` | optional, ≤ 255 characters |
//! | `identity_type` | optional |
//!
//! One upload may carry several documents (one per file part; the part name is the slot).
//! The four per-document fields apply to every document, and each may be overridden for one
//! slot by suffixing the slot name: `document_type.back=id_drivers_license` or
//! `description.selfie=…`. A per-slot value wins over the shared one; `document_type` may be
//! left out entirely when every document has its own `document_type.<slot>`. Per-slot fields
//! for a slot that carries no document are refused, so a typo never goes unnoticed.

use std::collections::BTreeMap;

use docgate_core::{
    provider::fields::{optional, required, unknown},
    DocumentMeta, FieldError, Fields, Problem,
};
use serde::{Deserialize, Serialize};

use crate::naming::MAX_FILENAME_CHARS;

pub const USER_HANDLE: &str = "user_handle";
pub const DOCUMENT_TYPE: &str = "document_type";
pub const NAME: &str = "name";
pub const DESCRIPTION: &str = "description";
pub const IDENTITY_TYPE: &str = "identity_type";

/// Fields that may also appear as `<field>.<slot>`.
pub const PER_DOCUMENT: [&str; 4] = [DOCUMENT_TYPE, NAME, DESCRIPTION, IDENTITY_TYPE];

pub const MAX_NAME_CHARS: usize = MAX_FILENAME_CHARS;
pub const MAX_DESCRIPTION_CHARS: usize = 255;
const MAX_HANDLE_CHARS: usize = 100;
const MAX_IDENTITY_TYPE_CHARS: usize = 64;

/// The per-document metadata, shared or for one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
}

impl DocumentFields {
    fn set(&mut self, field: &str, value: String) {
        match field {
            DOCUMENT_TYPE => self.document_type = Some(value),
            NAME => self.name = Some(value),
            DESCRIPTION => self.description = Some(value),
            _ => self.identity_type = Some(value),
        }
    }

    /// `self` with the gaps filled from `shared`.
    fn over(&self, shared: &DocumentFields) -> DocumentFields {
        DocumentFields {
            document_type: self.document_type.clone().or(shared.document_type.clone()),
            name: self.name.clone().or(shared.name.clone()),
            description: self.description.clone().or(shared.description.clone()),
            identity_type: self.identity_type.clone().or(shared.identity_type.clone()),
        }
    }
}

/// What `prepare` stores for the delivery (plain JSON in the ledger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedUpload {
    pub user_handle: String,
    #[serde(default)]
    pub shared: DocumentFields,
    /// Slot name → that slot's overrides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_slot: BTreeMap<String, DocumentFields>,
}

/// Tells whether docgate holds a signing key for a user handle (`Err`: the keystore is
/// unusable).
pub type HasUserKey<'a> = &'a dyn Fn(&str) -> Result<bool, String>;

/// What decides whether a field value is acceptable.
pub struct Rules<'a> {
    pub document_types: &'a [String],
    /// `Some(f)` in ECDSA mode: `f(handle)` tells whether a signing key exists for it.
    pub has_user_key: Option<HasUserKey<'a>>,
}

impl std::fmt::Debug for Rules<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("document_types", &self.document_types.len())
            .field("ecdsa", &self.has_user_key.is_some())
            .finish()
    }
}

/// Validate and normalise the frontend's fields, reporting every bad field at once.
pub fn prepare(fields: &Fields, rules: &Rules<'_>) -> Result<PreparedUpload, Problem> {
    let mut errors = unknown(
        fields,
        &[USER_HANDLE, DOCUMENT_TYPE, NAME, DESCRIPTION, IDENTITY_TYPE],
        &PER_DOCUMENT,
    );

    let user_handle = required(fields, USER_HANDLE, &mut errors).map(str::to_owned);
    if let Some(handle) = &user_handle {
        if let Err(e) = check_handle(handle, rules) {
            errors.push(FieldError::invalid(USER_HANDLE, e));
        }
    }

    let mut shared = DocumentFields::default();
    for field in PER_DOCUMENT {
        if let Some(value) = optional(fields, field) {
            match check_value(field, value, rules) {
                Ok(()) => shared.set(field, value.to_owned()),
                Err(e) => errors.push(FieldError::invalid(field, e)),
            }
        }
    }

    let mut per_slot: BTreeMap<String, DocumentFields> = BTreeMap::new();
    for (key, raw) in fields {
        let Some((field, slot)) = key.split_once('.') else {
            continue;
        };
        if !PER_DOCUMENT.contains(&field) {
            continue; // already reported as unknown
        }
        if !valid_slot(slot) {
            errors.push(FieldError::invalid(
                key,
                "the part after `.` must be a document slot name (A-Z a-z 0-9 _ -)",
            ));
            continue;
        }
        let value = raw.trim();
        if value.is_empty() {
            continue;
        }
        match check_value(field, value, rules) {
            Ok(()) => per_slot
                .entry(slot.to_owned())
                .or_default()
                .set(field, value.to_owned()),
            Err(e) => errors.push(FieldError::invalid(key, e)),
        }
    }

    let any_slot_type = per_slot.values().any(|f| f.document_type.is_some());
    if shared.document_type.is_none() && !any_slot_type && optional(fields, DOCUMENT_TYPE).is_none()
    {
        errors.push(FieldError::missing(DOCUMENT_TYPE));
    }

    match (errors.is_empty(), user_handle) {
        (true, Some(user_handle)) => Ok(PreparedUpload {
            user_handle,
            shared,
            per_slot,
        }),
        _ => Err(Problem::invalid_metadata(errors)),
    }
}

/// One document's final metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub document_type: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub identity_type: Option<String>,
}

/// Per-document metadata for `documents`, in their order; checks that per-slot fields name
/// slots that exist and that every document ends up with a `document_type`.
pub fn resolve(
    prepared: &PreparedUpload,
    documents: &[&DocumentMeta],
) -> Result<Vec<Resolved>, Problem> {
    let mut errors = Vec::new();
    for slot in prepared.per_slot.keys() {
        if !documents.iter().any(|d| &d.slot == slot) {
            let fields: Vec<&str> = PER_DOCUMENT
                .iter()
                .copied()
                .filter(|f| prepared.per_slot[slot].has(f))
                .collect();
            for field in fields {
                errors.push(FieldError::invalid(
                    format!("{field}.{slot}"),
                    format!("no document was sent in slot `{slot}`"),
                ));
            }
        }
    }
    let mut out = Vec::with_capacity(documents.len());
    for doc in documents {
        let merged = prepared
            .per_slot
            .get(&doc.slot)
            .map(|f| f.over(&prepared.shared))
            .unwrap_or_else(|| prepared.shared.clone());
        match merged.document_type {
            Some(document_type) => out.push(Resolved {
                document_type,
                name: merged.name,
                description: merged.description,
                identity_type: merged.identity_type,
            }),
            None => errors.push(FieldError::missing(format!("{DOCUMENT_TYPE}.{}", doc.slot))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Problem::invalid_metadata(errors))
    }
}

impl DocumentFields {
    fn has(&self, field: &str) -> bool {
        match field {
            DOCUMENT_TYPE => self.document_type.is_some(),
            NAME => self.name.is_some(),
            DESCRIPTION => self.description.is_some(),
            _ => self.identity_type.is_some(),
        }
    }
}

fn valid_slot(slot: &str) -> bool {
    !slot.is_empty()
        && slot.len() <= 64
        && slot
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_handle(handle: &str, rules: &Rules<'_>) -> Result<(), String> {
    let ok = handle.chars().count() <= MAX_HANDLE_CHARS
        && handle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(format!(
            "a Sila handle is at most {MAX_HANDLE_CHARS} characters of A-Z a-z 0-9 . _ -"
        ));
    }
    if let Some(has_key) = rules.has_user_key {
        match has_key(handle) {
            Ok(true) => {}
            Ok(false) => return Err("docgate holds no signing key for this user_handle".to_owned()),
            // The keystore itself is broken: that is the gateway's fault, but the upload
            // cannot proceed either; say so without details (they are in the server log).
            Err(_) => {
                return Err("the user keystore is unavailable; see the gateway log".to_owned())
            }
        }
    }
    Ok(())
}

fn check_value(field: &str, value: &str, rules: &Rules<'_>) -> Result<(), String> {
    let chars = value.chars().count();
    match field {
        DOCUMENT_TYPE => {
            if rules.document_types.iter().any(|t| t == value) {
                Ok(())
            } else {
                Err(format!(
                    "`{value}` is not a Sila document type; one of: {}",
                    rules.document_types.join(", ")
                ))
            }
        }
        NAME if chars > MAX_NAME_CHARS => {
            Err(format!("at most {MAX_NAME_CHARS} characters (got {chars})"))
        }
        DESCRIPTION if chars > MAX_DESCRIPTION_CHARS => Err(format!(
            "at most {MAX_DESCRIPTION_CHARS} characters (got {chars})"
        )),
        IDENTITY_TYPE
            if chars > MAX_IDENTITY_TYPE_CHARS
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Err(format!(
                "at most {MAX_IDENTITY_TYPE_CHARS} characters of A-Z a-z 0-9 _ -"
            ))
        }
        _ if value.chars().any(char::is_control) => {
            Err("control characters are not allowed".to_owned())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docgate_core::{DigestsHex, FieldErrorKind};

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn types() -> Vec<String> {
        crate::doctypes::default_names()
    }

    fn prep(pairs: &[(&str, &str)]) -> Result<PreparedUpload, Problem> {
        let types = types();
        prepare(
            &fields(pairs),
            &Rules {
                document_types: &types,
                has_user_key: None,
            },
        )
    }

    fn meta(slot: &str) -> DocumentMeta {
        DocumentMeta {
            slot: slot.into(),
            filename: None,
            size: 1,
            media_type: "image/png".into(),
            declared_type: None,
            digests: DigestsHex {
                sha256: "00".repeat(32),
                sha512: None,
                md5: None,
            },
            entries: None,
        }
    }

    fn errors(p: &Problem) -> Vec<(String, FieldErrorKind)> {
        p.errors.iter().map(|e| (e.field.clone(), e.kind)).collect()
    }

    #[test]
    fn a_complete_upload_prepares() {
        let p = prep(&[
            ("user_handle", "test_user.silamoney.eth"),
            ("document_type", "id_drivers_license"),
            ("description", "front side"),
        ])
        .expect("valid");
        assert_eq!(p.user_handle, "test_user.silamoney.eth");
        assert_eq!(
            p.shared.document_type.as_deref(),
            Some("id_drivers_license")
        );
        assert_eq!(p.shared.description.as_deref(), Some("front side"));
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let p = prep(&[
            ("document_type", "id_driving_licence"),
            ("name", &"n".repeat(101)),
            ("description", &"d".repeat(256)),
            ("colour", "blue"),
        ])
        .expect_err("invalid");
        assert_eq!(p.status.as_u16(), 422);
        let got = errors(&p);
        assert!(got.contains(&("user_handle".into(), FieldErrorKind::Missing)));
        assert!(got.contains(&("document_type".into(), FieldErrorKind::Invalid)));
        assert!(got.contains(&("name".into(), FieldErrorKind::Invalid)));
        assert!(got.contains(&("description".into(), FieldErrorKind::Invalid)));
        assert!(got.contains(&("colour".into(), FieldErrorKind::Unknown)));
        assert!(
            p.detail.unwrap_or_default().contains("id_drivers_license"),
            "lists the valid types"
        );
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        assert!(prep(&[
            ("user_handle", "u"),
            ("document_type", "other_doc"),
            ("name", &"ü".repeat(100)),
            ("description", &"ü".repeat(255)),
        ])
        .is_ok());
    }

    #[test]
    fn per_slot_fields_override_the_shared_ones() {
        let p = prep(&[
            ("user_handle", "u"),
            ("document_type", "id_drivers_license"),
            ("description", "shared"),
            ("document_type.selfie", "other_id"),
            ("description.back", "back side"),
        ])
        .expect("valid");
        let (front, back, selfie) = (meta("front"), meta("back"), meta("selfie"));
        let r = resolve(&p, &[&front, &back, &selfie]).expect("resolves");
        assert_eq!(r[0].document_type, "id_drivers_license");
        assert_eq!(r[0].description.as_deref(), Some("shared"));
        assert_eq!(r[1].description.as_deref(), Some("back side"));
        assert_eq!(r[2].document_type, "other_id");
        assert_eq!(r[2].description.as_deref(), Some("shared"));
    }

    #[test]
    fn without_a_shared_type_every_document_needs_its_own() {
        let p = prep(&[("user_handle", "u"), ("document_type.front", "id_state")])
            .expect("valid so far");
        let (front, back) = (meta("front"), meta("back"));
        let err = resolve(&p, &[&front, &back]).expect_err("back has no type");
        assert_eq!(
            errors(&err),
            vec![("document_type.back".into(), FieldErrorKind::Missing)]
        );
        assert!(prep(&[("user_handle", "u")]).is_err(), "no type at all");
    }

    #[test]
    fn per_slot_fields_for_absent_slots_and_bad_slot_names_are_refused() {
        let p = prep(&[
            ("user_handle", "u"),
            ("document_type", "id_state"),
            ("name.frnt", "typo"),
        ])
        .expect("valid so far");
        let front = meta("front");
        let err = resolve(&p, &[&front]).expect_err("frnt has no document");
        assert_eq!(
            errors(&err),
            vec![("name.frnt".into(), FieldErrorKind::Invalid)]
        );

        let bad = prep(&[
            ("user_handle", "u"),
            ("document_type", "id_state"),
            ("name.a/b", "x"),
        ])
        .expect_err("bad slot");
        assert_eq!(
            errors(&bad),
            vec![("name.a/b".into(), FieldErrorKind::Invalid)]
        );
        let bad_type =
            prep(&[("user_handle", "u"), ("document_type.front", "nope")]).expect_err("bad");
        assert!(
            errors(&bad_type).contains(&("document_type.front".into(), FieldErrorKind::Invalid))
        );
    }

    #[test]
    fn handles_are_checked_and_need_a_key_in_ecdsa_mode() {
        let types = types();
        let has_key = |h: &str| Ok::<bool, String>(h == "known.silamoney.eth");
        let rules = Rules {
            document_types: &types,
            has_user_key: Some(&has_key),
        };
        let ok = fields(&[
            ("user_handle", "known.silamoney.eth"),
            ("document_type", "id_state"),
        ]);
        assert!(prepare(&ok, &rules).is_ok());
        let unknown_user = fields(&[
            ("user_handle", "other.silamoney.eth"),
            ("document_type", "id_state"),
        ]);
        let err = prepare(&unknown_user, &rules).expect_err("no key");
        assert_eq!(
            errors(&err),
            vec![("user_handle".into(), FieldErrorKind::Invalid)]
        );
        let weird = fields(&[("user_handle", "a b"), ("document_type", "id_state")]);
        assert!(prepare(&weird, &rules).is_err());
    }

    #[test]
    fn prepared_metadata_round_trips_through_json() {
        let p = prep(&[
            ("user_handle", "u"),
            ("document_type", "id_state"),
            ("identity_type.front", "license"),
        ])
        .expect("valid");
        let json = serde_json::to_value(&p).expect("ser");
        let back: PreparedUpload = serde_json::from_value(json).expect("de");
        assert_eq!(back, p);
    }
}
