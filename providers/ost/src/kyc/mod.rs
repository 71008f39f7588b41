//! What OST accepts: document slots, their content types, and the KYC submission fields.
//!
//! Shared by the client (to refuse bad input before spending a signed call) and the emulator
//! (to refuse it the way OST does), so both sides agree by construction.

pub mod ethereum;
pub use ethereum::AddressCheck;
pub mod lists;
mod submission;

use std::collections::BTreeMap;

use serde_json::Value;

pub use submission::{
    check_submission, parse_birthdate, today_utc, validate_submission, validate_submission_with,
    FieldIssue, FieldProblem, SubmissionRules, MAX_AGE_YEARS, MAX_NAME_CHARS, MAX_TEXT_CHARS,
    MIN_AGE_YEARS, MIN_PARTICIPATION_AMOUNT,
};

use crate::envelope::ErrorData;

/// The document slots OST presigns URLs for (the multipart part names in docgate).
pub const SLOTS: [&str; 5] = [
    "document_id",
    "selfie",
    "residence_proof",
    "investor_proof_file1",
    "investor_proof_file2",
];

/// Content types OST presigns for. `image/jpg` is a non-standard alias OST lists and accepts.
pub const CONTENT_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/jpg", "application/pdf"];

pub fn is_slot(name: &str) -> bool {
    SLOTS.contains(&name)
}

pub fn is_content_type(ct: &str) -> bool {
    CONTENT_TYPES.contains(&ct)
}

/// The `*_file_path` submission field that carries a slot's S3 key.
pub fn file_path_field(slot: &str) -> Option<&'static str> {
    Some(match slot {
        "document_id" => "document_id_file_path",
        "selfie" => "selfie_file_path",
        "residence_proof" => "residence_proof_file_path",
        // Both investor proofs travel together in one array field.
        "investor_proof_file1" | "investor_proof_file2" => "investor_proof_files_path",
        _ => return None,
    })
}

/// Check a `files` map (slot → content type) for `for-put`/`for-post`.
pub fn check_files(files: &BTreeMap<String, String>) -> Vec<ErrorData> {
    let mut errors = Vec::new();
    if files.is_empty() {
        errors.push(ErrorData::new(
            "files",
            format!("name at least one of: {}", SLOTS.join(", ")),
        ));
    }
    for (slot, ct) in files {
        if !is_slot(slot) {
            errors.push(ErrorData::new(
                format!("files[{slot}]"),
                format!("unknown document; use one of: {}", SLOTS.join(", ")),
            ));
        } else if !is_content_type(ct) {
            errors.push(ErrorData::new(
                format!("files[{slot}]"),
                format!(
                    "content type `{ct}` is not supported; use one of: {}",
                    CONTENT_TYPES.join(", ")
                ),
            ));
        }
    }
    errors
}

/// Every field `POST /api/v2/users-kyc/{user_id}` accepts.
pub const KYC_FIELDS: [&str; 16] = [
    "first_name",
    "last_name",
    "birthdate",
    "country",
    "nationality",
    "document_id_number",
    "document_id_file_path",
    "selfie_file_path",
    "residence_proof_file_path",
    "investor_proof_files_path",
    "ethereum_address",
    "estimated_participation_amount",
    "street_address",
    "city",
    "state",
    "postal_code",
];

/// The fields the spec marks mandatory. Each OST client selects its own set; this is the
/// emulator's default.
pub const KYC_MANDATORY: [&str; 14] = [
    "first_name",
    "last_name",
    "birthdate",
    "country",
    "nationality",
    "document_id_number",
    "document_id_file_path",
    "selfie_file_path",
    "ethereum_address",
    "estimated_participation_amount",
    "street_address",
    "city",
    "state",
    "postal_code",
];

/// At most this many investor proofs (OST has two slots for them).
pub const MAX_INVESTOR_PROOFS: usize = 2;

/// Check submission fields by name, shape and format (not which are required: that is each
/// OST client's own setting). Values are strings, except `investor_proof_files_path` (an array
/// of strings) and `estimated_participation_amount` (a string or a number).
pub fn check_kyc_fields(fields: &BTreeMap<String, Value>) -> Vec<ErrorData> {
    match check_submission(fields, &SubmissionRules::formats_only(today_utc())) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(FieldProblem::to_error_data).collect(),
    }
}

/// The shape of the S3 keys OST hands out: `<client>/<i|d>/<hex>` (e.g. `4/i/a117…`). Anything
/// else — a path with `..`, a URL — is not a key this API could have issued.
pub fn is_file_key(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    let [client, kind, name] = parts.as_slice() else {
        return false;
    };
    !client.is_empty()
        && client.bytes().all(|b| b.is_ascii_digit())
        && (*kind == "i" || *kind == "d")
        && (16..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Every S3 key a submission refers to (the gateway checks they came from the tenant's own
/// receipts before forwarding).
pub fn referenced_keys(fields: &BTreeMap<String, Value>) -> Vec<String> {
    let mut keys = Vec::new();
    for (name, value) in fields {
        match (name.as_str(), value) {
            (n, Value::String(s)) if n.ends_with("_file_path") => keys.push(s.trim().to_owned()),
            ("investor_proof_files_path", Value::Array(items)) => keys.extend(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.trim().to_owned()),
            ),
            _ => {}
        }
    }
    keys
}

/// The kind of [`docgate_core::OwnedRef`] an S3 key handed to a tenant is recorded as.
pub const KEY_REF: &str = "s3_key";

/// The kind of [`docgate_core::OwnedRef`] an OST user id is recorded as: the first tenant to
/// submit KYC for a user owns that user.
pub const USER_REF: &str = "user";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn the_spec_example_submission_is_valid() {
        let f = fields(json!({
            "first_name": "aniket", "last_name": "ayachit", "birthdate": "21/12/1991",
            "country": "india", "nationality": "indian", "document_id_number": "arqpa7659a",
            "document_id_file_path": "4/i/f6417391000fae92b5d074b2e5928a3b",
            "selfie_file_path": "4/i/dc71d140532b1a7b55ba29f35b7a16d2",
            "residence_proof_file_path": "4/d/6c6c6e759bee4c496c325decdeeef007",
            "ethereum_address": "0xdfbc84ccac430f2c0455c437adf417095d7ad68e",
            "estimated_participation_amount": "2", "street_address": "afawfveav ",
            "city": "afawfveav", "state": "afawfveav", "postal_code": "afawfveav",
            "investor_proof_files_path": ["4/d/5cfaefa078eb75f3a6470474053ef175",
                                          "4/d/5ccc6d4b167e12af4616f1c96eb6505a"]
        }));
        assert_eq!(check_kyc_fields(&f), vec![]);
        assert_eq!(referenced_keys(&f).len(), 5);
    }

    #[test]
    fn bad_names_shapes_and_formats_are_each_reported() {
        let f = fields(json!({
            "nickname": "x",
            "birthdate": "31/02/1990",
            "ethereum_address": "0x123",
            "selfie_file_path": "../../etc/passwd",
            "investor_proof_files_path": "4/d/5cfaefa078eb75f3a6470474053ef175",
            "estimated_participation_amount": "-1",
            "city": 5,
            "state": ""
        }));
        let mut names: Vec<String> = check_kyc_fields(&f)
            .into_iter()
            .map(|e| e.parameter)
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "birthdate",
                "city",
                "estimated_participation_amount",
                "ethereum_address",
                "investor_proof_files_path",
                "nickname",
                "selfie_file_path"
            ]
        );
    }

    #[test]
    fn files_maps_name_known_slots_with_supported_types() {
        let ok: BTreeMap<String, String> = [("selfie".into(), "image/jpg".into())].into();
        assert!(check_files(&ok).is_empty());
        let bad: BTreeMap<String, String> = [
            ("passport".into(), "image/jpeg".into()),
            ("selfie".into(), "image/gif".into()),
        ]
        .into();
        assert_eq!(check_files(&bad).len(), 2);
        assert_eq!(check_files(&BTreeMap::new()).len(), 1);
    }
}
