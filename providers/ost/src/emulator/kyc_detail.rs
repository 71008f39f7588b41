//! `GET /api/v2/users-kyc-detail/{user_id}`: the details of a user's last submission.
//!
//! What OST answers depends on the account's "send KYC data through the API" setting: on,
//! `user_kyc_detail` with every field (files as S3 GET URLs valid for 12 hours, fields not
//! submitted as `null`, investor proofs as an array); off, only `{"id", "created_at"}`
//! under `user_kyc`.

use std::time::Duration;

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{
    api::{bad_request, failure, not_found, success, unexpected, Shared},
    state::UserKyc,
};

/// How long the file URLs in the answer stay valid (OST: 12 hours).
pub const FILE_URL_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The text fields of the detail object, as submitted.
const TEXT_FIELDS: [&str; 11] = [
    "first_name",
    "last_name",
    "birthdate",
    "country",
    "nationality",
    "document_id_number",
    "ethereum_address",
    "street_address",
    "city",
    "state",
    "postal_code",
];

/// Submitted file path → the detail object's URL field.
const FILE_FIELDS: [(&str, &str); 3] = [
    ("document_id_file_path", "document_id_file"),
    ("selfie_file_path", "selfie_file"),
    ("residence_proof_file_path", "residence_proof_file"),
];

pub(crate) async fn get(shared: &Shared, user_id: u64, params: &Map<String, Value>) -> Response {
    let errors = unexpected(params, &[]);
    if !errors.is_empty() {
        return bad_request("emu_kyc_invalid", errors);
    }
    let Some(case) = shared.registry().kyc(user_id).cloned() else {
        return not_found();
    };
    if !shared.kyc_details_visible {
        return success(json!({
            "result_type": "user_kyc_detail",
            "user_kyc": {"id": case.user_kyc_detail_id, "created_at": case.submitted_at},
        }));
    }
    match detail(shared, &case).await {
        Ok(detail) => success(json!({"result_type": "user_kyc_detail", "user_kyc_detail": detail})),
        Err(e) => {
            tracing::error!("OST emulator could not presign a detail URL: {e}");
            failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "emu_presign_failed",
                None,
            )
        }
    }
}

async fn detail(shared: &Shared, case: &UserKyc) -> Result<Value, String> {
    let d = &case.details;
    let mut out = Map::new();
    out.insert("id".into(), json!(case.user_kyc_detail_id));
    out.insert("created_at".into(), json!(case.submitted_at));
    for name in TEXT_FIELDS {
        out.insert(name.into(), d.get(name).cloned().unwrap_or(Value::Null));
    }
    let amount = d
        .get("estimated_participation_amount")
        .and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        })
        .map_or(Value::Null, |a| json!(a));
    out.insert("estimated_participation_amount".into(), amount);
    for (path_field, url_field) in FILE_FIELDS {
        let url = match d.get(path_field).and_then(Value::as_str) {
            Some(key) => Value::String(shared.presigner.get_url(key, FILE_URL_LIFETIME).await?),
            None => Value::Null,
        };
        out.insert(url_field.into(), url);
    }
    let mut proofs = Vec::new();
    let keys = d
        .get("investor_proof_files_path")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for key in keys.iter().filter_map(Value::as_str) {
        proofs.push(Value::String(
            shared.presigner.get_url(key, FILE_URL_LIFETIME).await?,
        ));
    }
    out.insert("investor_proof_files".into(), Value::Array(proofs));
    Ok(Value::Object(out))
}
