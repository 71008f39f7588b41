//! `/api/v2/users-kyc`: submit (`POST /{user_id}`), retrieve (`GET /{user_id}`), list
//! (`GET`), and the emails OST sends a user about their case (`POST /{user_id}/email/…`).
//!
//! A submission is checked as OST checks it ([`crate::kyc::check_submission`] with the
//! account's required fields), then every file path must be this account's key of an object
//! in the bucket, of a size within the upload range. A closed (approved or denied) case
//! refuses resubmission with 422. List filters: `admin_status`, `aml_status` (also
//! `cleared:approved`), `whitelist_status`, `admin_action_types` (also `no_admin_action`);
//! cases are ordered by their last submission.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{
    api::{bad_request, not_found, success, unexpected, unprocessable, EmailKind, Shared},
    events,
    listing::{self, FilterVerdict},
    s3::object_path,
    state::{SentEmail, UserKyc},
    status::{AdminActionType, AdminStatus, AmlStatus, KycStatus, WhitelistStatus},
};
use crate::{
    envelope::ErrorData,
    kyc::{self, AddressCheck, FieldProblem, SubmissionRules},
};

pub(crate) fn submit(
    shared: &Shared,
    user_id: u64,
    params: Map<String, Value>,
    now: i64,
) -> Response {
    let fields: BTreeMap<String, Value> = params.into_iter().collect();
    let rules = SubmissionRules {
        required: shared.required_kyc_fields.clone(),
        address_check: AddressCheck::Format,
        today: kyc::today_utc(),
    };
    let (normalised, mut errors) = match kyc::check_submission(&fields, &rules) {
        Ok(normalised) => (normalised, Vec::new()),
        Err(problems) => (
            BTreeMap::new(),
            problems.iter().map(FieldProblem::to_error_data).collect(),
        ),
    };
    let refused: Vec<String> = errors.iter().map(|e| e.parameter.clone()).collect();
    errors.extend(file_problems(shared, &fields, &refused));
    if !errors.is_empty() {
        return bad_request("emu_kyc_invalid", errors);
    }
    if shared.registry().user(user_id).is_none() {
        return not_found();
    }
    let submitted = shared
        .registry()
        .submit(user_id, normalised.into_iter().collect(), now);
    match submitted {
        Ok(case) => {
            shared.emit(|id| events::kyc_event(events::KYC_SUBMIT, id, "api", &case, now));
            success(json!({"result_type": "user_kyc", "user_kyc": case.to_json()}))
        }
        Err(status) => unprocessable(
            "emu_case_closed",
            format!("Case cannot be updated: it is already {status}."),
        ),
    }
}

/// Every file path (not already refused) must be a key of this account, stored in the
/// bucket, with a size inside the upload range.
fn file_problems(
    shared: &Shared,
    fields: &BTreeMap<String, Value>,
    refused: &[String],
) -> Vec<ErrorData> {
    let mut problems = Vec::new();
    let (min, max) = shared.size_range;
    let own_prefix = format!("{}/", shared.client_id);
    for (name, value) in fields {
        if refused.contains(name) {
            continue;
        }
        let keys: Vec<&str> = match value {
            Value::String(s) if name.ends_with("_file_path") => vec![s.trim()],
            Value::Array(items) if name == "investor_proof_files_path" => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .collect(),
            _ => Vec::new(),
        };
        for key in keys.into_iter().filter(|k| !k.is_empty()) {
            let size = object_path(&shared.s3_root, &shared.bucket, key)
                .filter(|_| key.starts_with(&own_prefix))
                .and_then(|p| std::fs::metadata(p).ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len());
            let complaint = match size {
                None => format!("no uploaded file at `{key}`"),
                Some(n) if n < min || n > max => {
                    format!("the file at `{key}` has {n} bytes; it must have {min} to {max}")
                }
                Some(_) => continue,
            };
            problems.push(ErrorData::new(name, complaint));
        }
    }
    problems
}

pub(crate) fn get(shared: &Shared, user_id: u64, params: &Map<String, Value>) -> Response {
    let errors = unexpected(params, &[]);
    if !errors.is_empty() {
        return bad_request("emu_kyc_invalid", errors);
    }
    match shared.registry().kyc(user_id) {
        Some(k) => success(json!({"result_type": "user_kyc", "user_kyc": k.to_json()})),
        None => not_found(),
    }
}

fn check_filter(name: &str, value: &str) -> FilterVerdict {
    let known = match name {
        "admin_status" => AdminStatus::parse(value).is_some(),
        "aml_status" => value == "cleared:approved" || AmlStatus::parse(value).is_some(),
        "whitelist_status" => WhitelistStatus::parse(value).is_some(),
        "admin_action_types" => {
            value == "no_admin_action" || AdminActionType::parse(value).is_some()
        }
        _ => {
            return FilterVerdict::Refuse(
                "is not a filter of this list; use admin_status, aml_status, \
                 whitelist_status or admin_action_types"
                    .into(),
            )
        }
    };
    if known {
        FilterVerdict::Accept
    } else {
        FilterVerdict::Refuse(format!("`{value}` is not a value of this filter"))
    }
}

fn matches(case: &UserKyc, filters: &Map<String, Value>) -> bool {
    let s = &case.state;
    filters.iter().all(|(name, value)| {
        let value = value.as_str().unwrap_or("");
        match name.as_str() {
            "admin_status" => s.admin_status.as_str() == value,
            "aml_status" if value == "cleared:approved" => {
                matches!(s.aml_status, AmlStatus::Cleared | AmlStatus::Approved)
            }
            "aml_status" => s.aml_status.as_str() == value,
            "whitelist_status" => s.whitelist_status.as_str() == value,
            "admin_action_types" if value == "no_admin_action" => s.admin_action_types.is_empty(),
            "admin_action_types" => s.admin_action_types.iter().any(|t| t.as_str() == value),
            _ => true,
        }
    })
}

pub(crate) fn list(shared: &Shared, params: &Map<String, Value>) -> Response {
    let mut errors = unexpected(params, &listing::LIST_PARAMETERS);
    let query = listing::parse(params, check_filter, &mut errors);
    if !errors.is_empty() {
        return bad_request("emu_list_invalid", errors);
    }
    let chosen: Vec<Value> = shared
        .registry()
        .cases()
        .into_iter()
        .filter(|c| matches(c, &query.filters))
        .map(UserKyc::to_json)
        .collect();
    let (total, page) = query.page(chosen);
    success(json!({"result_type": "users_kyc", "users_kyc": page, "meta": query.meta(total)}))
}

/// `template_vars`: an object whose values are text, or one level of objects or arrays of
/// text (OST refuses deeper nesting).
fn template_vars(params: &Map<String, Value>) -> Result<Map<String, Value>, ErrorData> {
    let bad = || {
        ErrorData::new(
            "template_vars",
            "must be an object of text values (one level of nesting at most)",
        )
    };
    let vars = match params.get("template_vars") {
        None => return Ok(Map::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Map::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad()),
    };
    let flat = |v: &Value| matches!(v, Value::String(_));
    for value in vars.values() {
        let ok = match value {
            Value::String(_) => true,
            Value::Object(m) => m.values().all(flat),
            Value::Array(items) => items.iter().all(flat),
            _ => false,
        };
        if !ok {
            return Err(bad());
        }
    }
    Ok(vars.clone())
}

pub(crate) fn email(
    shared: &Shared,
    user_id: u64,
    kind: EmailKind,
    params: Map<String, Value>,
    now: i64,
) -> Response {
    let mut errors = unexpected(&params, &["template_vars"]);
    let vars = template_vars(&params)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    if !errors.is_empty() {
        return bad_request("emu_email_invalid", errors);
    }
    let mut registry = shared.registry();
    let Some(user) = registry.user(user_id).cloned() else {
        return not_found();
    };
    let state = registry.kyc(user_id).map(|k| k.state.clone());
    let (fits, template, internal_id, msg) = match kind {
        EmailKind::Approve => (
            state
                .as_ref()
                .is_some_and(|s| s.kyc_status() == KycStatus::Approved),
            "kyc_approved",
            "emu_kyc_not_approved",
            "Could not process: KYC is not approved for this user.",
        ),
        EmailKind::Deny => (
            state
                .as_ref()
                .is_some_and(|s| s.kyc_status() == KycStatus::Denied),
            "kyc_denied",
            "emu_kyc_not_denied",
            "Could not process: KYC is not denied for this user.",
        ),
        EmailKind::ReportIssue => (
            state
                .as_ref()
                .is_some_and(|s| !s.admin_action_types.is_empty()),
            "kyc_issue",
            "emu_kyc_no_issue_reported",
            "Could not process: no issue is reported for this user.",
        ),
    };
    if !fits {
        return unprocessable(internal_id, msg.to_owned());
    }
    registry.log_email(SentEmail {
        user_id,
        email: user.email,
        template: template.to_owned(),
        template_vars: vars,
        sent_at: now,
    });
    success(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn template_vars_allow_one_level_of_nesting() {
        let ok =
            object(json!({"template_vars": {"name": "Ada", "list": ["a", "b"], "o": {"k": "v"}}}));
        assert_eq!(template_vars(&ok).map(|m| m.len()), Ok(3));
        let deep = object(json!({"template_vars": {"o": {"k": {"deeper": "v"}}}}));
        assert!(template_vars(&deep).is_err());
        assert!(template_vars(&object(json!({"template_vars": "x"}))).is_err());
    }

    #[test]
    fn kyc_filters_know_the_documented_values() {
        assert_eq!(
            check_filter("aml_status", "cleared:approved"),
            FilterVerdict::Accept
        );
        assert_eq!(
            check_filter("admin_action_types", "no_admin_action"),
            FilterVerdict::Accept
        );
        assert!(matches!(
            check_filter("admin_status", "approved"),
            FilterVerdict::Refuse(_)
        ));
        assert!(matches!(
            check_filter("kyc_status", "approved"),
            FilterVerdict::Refuse(_)
        ));
    }
}
