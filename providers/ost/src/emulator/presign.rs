//! `GET /api/v2/users-kyc/pre-signed-urls/for-put` and `…/for-post`: one S3 key per
//! requested slot, with a SigV4 PUT URL or a signed POST policy for it.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::api::{bad_request, failure, success, unexpected, Shared};
use crate::{envelope::ErrorData, kyc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Put,
    Post,
}

pub(crate) async fn presign(
    shared: &Shared,
    params: Map<String, Value>,
    kind: Kind,
) -> axum::response::Response {
    let files = match requested_files(&params) {
        Ok(files) => files,
        Err(errors) => return bad_request("emu_presign_invalid_files", errors),
    };
    let start = shared.signing_time();
    let mut answer = Map::new();
    for (slot, content_type) in &files {
        let kind_dir = if content_type.starts_with("image/") {
            "i"
        } else {
            "d"
        };
        let key = format!(
            "{}/{kind_dir}/{}",
            shared.client_id,
            uuid::Uuid::new_v4().simple()
        );
        let entry = match kind {
            Kind::Put => match shared
                .presigner
                .put_url(&key, content_type, start, shared.url_lifetime)
                .await
            {
                Ok(url) => json!({"url": url, "fields": {"key": key}}),
                Err(e) => {
                    tracing::error!("OST emulator could not presign: {e}");
                    return failure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "emu_presign_failed",
                        None,
                    );
                }
            },
            Kind::Post => shared.presigner.post_form(
                &key,
                content_type,
                start,
                shared.url_lifetime,
                shared.size_range,
            ),
        };
        answer.insert(slot.clone(), entry);
    }
    let member = match kind {
        Kind::Put => "file_upload_put",
        Kind::Post => "file_upload_post",
    };
    success(json!({"result_type": member, member: answer}))
}

/// The `files` parameter (slot → content type), or every complaint about it.
fn requested_files(
    params: &Map<String, Value>,
) -> Result<BTreeMap<String, String>, Vec<ErrorData>> {
    let mut errors = unexpected(params, &["files"]);
    let files: BTreeMap<String, String> = match params.get("files") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(slot, ct)| (slot.clone(), ct.as_str().unwrap_or("").to_owned()))
            .collect(),
        Some(_) => {
            errors.push(ErrorData::new(
                "files",
                "must be an object of slot → content type",
            ));
            BTreeMap::new()
        }
        None => BTreeMap::new(),
    };
    if errors.is_empty() {
        errors = kyc::check_files(&files);
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}
