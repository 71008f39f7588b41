//! The emulator's control API (unsigned; for tests and people with curl) and the actions
//! behind it, which [`super::Emulator`] also offers in Rust.
//!
//! What OST's dashboard, its AML screening and its whitelisting do to a case, and what users
//! do on OST's site, happen here; each sends the webhook event OST documents for it to the
//! configured URL. Answers are plain JSON (`{"error"}` on refusal: 400 bad body, 404 unknown
//! user or no submission, 409 not possible in the case's state).

use std::{str::FromStr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
    Json, Router,
};
use http::StatusCode;
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Map, Value};

use super::{
    api::Shared,
    events,
    state::{AddUserError, ControlError, User, UserKyc},
    status::{AdminActionType, AmlStatus, ChangeEvent, KycChange, WhitelistStatus},
    webhooks::Emitted,
};

/// Apply `change` to a user's case and send the event it calls for.
pub(crate) fn change_kyc(
    shared: &Shared,
    user_id: u64,
    change: &KycChange,
) -> Result<(UserKyc, Emitted), ControlError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (case, event) = shared.registry().change_kyc(user_id, change)?;
    let kind = match event {
        ChangeEvent::StatusUpdate => events::KYC_STATUS_UPDATE,
        ChangeEvent::Reopen => events::KYC_REOPEN,
        ChangeEvent::EthereumAddress => events::UPDATE_ETHEREUM_ADDRESS,
    };
    let emitted = shared.emit(|id| events::kyc_event(kind, id, change.source(), &case, now));
    Ok((case, emitted))
}

/// A user signs up on OST's site (`user_register`, source `web`).
pub(crate) fn sign_up(shared: &Shared, email: &str) -> Result<(User, Emitted), AddUserError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let user = shared.registry().add_user(email, now)?;
    let emitted =
        shared.emit(|id| events::user_event(events::USER_REGISTER, id, "web", &user, now));
    Ok((user, emitted))
}

/// A user confirms OST's double opt-in email (`user_dopt_in`).
pub(crate) fn double_opt_in(shared: &Shared, user_id: u64) -> Option<(User, Emitted)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let user = shared.registry().double_opt_in(user_id)?;
    let emitted = shared.emit(|id| events::user_event(events::USER_DOPT_IN, id, "web", &user, now));
    Some((user, emitted))
}

/// An admin deletes a user (`user_deleted`); their case goes with them.
pub(crate) fn delete_user(shared: &Shared, user_id: u64) -> Option<(User, Emitted)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let user = shared.registry().delete_user(user_id)?;
    let emitted = shared.emit(|id| events::user_event(events::USER_DELETED, id, "web", &user, now));
    Some((user, emitted))
}

fn refusal(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": error.to_string()}))).into_response()
}

fn control_error(e: &ControlError) -> Response {
    let status = match e {
        ControlError::UnknownUser(_) | ControlError::NoSubmission(_) => StatusCode::NOT_FOUND,
        ControlError::Change(_) => StatusCode::CONFLICT,
    };
    refusal(status, e)
}

/// A JSON body, where an empty one means `{}`.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| refusal(StatusCode::BAD_REQUEST, e))
}

/// The body of `POST /__emulator/users/{id}/kyc/{action}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    admin: Option<String>,
    /// `report-issue`: `data_mismatch`, `document_issue`, `other_issue` (default: other).
    types: Option<Vec<String>>,
    /// `aml`, `whitelist`: the new status.
    status: Option<String>,
    /// `ethereum-address`: the new address.
    ethereum_address: Option<String>,
}

fn parse_word<T>(
    what: &str,
    text: Option<&str>,
    parse: fn(&str) -> Option<T>,
    words: &str,
) -> Result<T, String> {
    let text = text.ok_or_else(|| format!("`{what}` is required: one of {words}"))?;
    parse(text).ok_or_else(|| format!("`{text}` is not one of {words}"))
}

/// The change an action route names.
fn change_for(action: &str, b: ActionBody) -> Result<KycChange, String> {
    let admin = b.admin;
    Ok(match action {
        "approve" => KycChange::Approve { admin },
        "deny" => KycChange::Deny { admin },
        "reopen" => KycChange::Reopen { admin },
        "report-issue" => {
            let names = b.types.unwrap_or_else(|| vec!["other_issue".into()]);
            let types = names
                .iter()
                .map(|t| {
                    parse_word(
                        "types",
                        Some(t),
                        AdminActionType::parse,
                        &AdminActionType::words(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            KycChange::ReportIssue { types, admin }
        }
        "aml" => KycChange::Aml(parse_word(
            "status",
            b.status.as_deref(),
            AmlStatus::parse,
            &AmlStatus::words(),
        )?),
        "whitelist" => KycChange::Whitelist(parse_word(
            "status",
            b.status.as_deref(),
            WhitelistStatus::parse,
            &WhitelistStatus::words(),
        )?),
        "ethereum-address" => KycChange::EthereumAddress {
            address: b.ethereum_address.ok_or("`ethereum_address` is required")?,
            admin,
        },
        other => {
            return Err(format!(
                "unknown action `{other}`; use approve, deny, report-issue, aml, whitelist, \
                 reopen or ethereum-address"
            ))
        }
    })
}

fn user_id(raw: &str) -> Result<u64, Response> {
    u64::from_str(raw).map_err(|_| refusal(StatusCode::NOT_FOUND, format!("no user {raw}")))
}

async fn kyc_action(
    State(s): State<Arc<Shared>>,
    Path((id, action)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let id = match user_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let change = match body::<ActionBody>(&bytes)
        .and_then(|b| change_for(&action, b).map_err(|e| refusal(StatusCode::BAD_REQUEST, e)))
    {
        Ok(change) => change,
        Err(r) => return r,
    };
    match change_kyc(&s, id, &change) {
        Ok((case, emitted)) => {
            Json(json!({"user_kyc": case.to_json(), "webhook": emitted})).into_response()
        }
        Err(e) => control_error(&e),
    }
}

fn user_answer(found: Option<(User, Emitted)>, id: u64) -> Response {
    match found {
        Some((user, emitted)) => {
            Json(json!({"user": user.to_json(), "webhook": emitted})).into_response()
        }
        None => refusal(StatusCode::NOT_FOUND, format!("no user {id}")),
    }
}

async fn opt_in(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match user_id(&id) {
        Ok(id) => user_answer(double_opt_in(&s, id), id),
        Err(r) => r,
    }
}

async fn remove_user(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match user_id(&id) {
        Ok(id) => user_answer(delete_user(&s, id), id),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignUp {
    email: String,
}

async fn new_user(State(s): State<Arc<Shared>>, bytes: Bytes) -> Response {
    let req = match body::<SignUp>(&bytes) {
        Ok(req) => req,
        Err(r) => return r,
    };
    match sign_up(&s, &req.email) {
        Ok((user, emitted)) => {
            Json(json!({"user": user.to_json(), "webhook": emitted})).into_response()
        }
        Err(AddUserError::Taken) => refusal(StatusCode::CONFLICT, "that email is taken"),
        Err(AddUserError::Full) => {
            refusal(StatusCode::CONFLICT, "the emulator holds no more users")
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlFaults {
    expire_next: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRequest {
    #[serde(default)]
    url: Option<String>,
    event: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookUrl {
    url: Option<String>,
}

async fn show_urls(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"expire_next": s.expire_next.load(std::sync::atomic::Ordering::SeqCst)}))
}

async fn set_urls(State(s): State<Arc<Shared>>, Json(plan): Json<UrlFaults>) -> Json<Value> {
    s.expire_next
        .store(plan.expire_next, std::sync::atomic::Ordering::SeqCst);
    Json(json!({"expire_next": plan.expire_next}))
}

async fn show_webhooks(State(s): State<Arc<Shared>>) -> Json<Value> {
    let w = &s.webhooks;
    Json(json!({
        "url": w.url(), "in_flight": w.in_flight(), "dropped": w.dropped(),
        "deliveries": w.deliveries(),
    }))
}

async fn set_webhook_url(State(s): State<Arc<Shared>>, bytes: Bytes) -> Response {
    let req = match body::<WebhookUrl>(&bytes) {
        Ok(req) => req,
        Err(r) => return r,
    };
    if let Some(url) = &req.url {
        if let Err(e) = super::check_webhook_url(url) {
            return refusal(StatusCode::BAD_REQUEST, e);
        }
    }
    s.webhooks.set_url(req.url.clone());
    Json(json!({"url": req.url})).into_response()
}

async fn post_webhook(State(s): State<Arc<Shared>>, bytes: Bytes) -> Response {
    let req = match body::<WebhookRequest>(&bytes) {
        Ok(req) => req,
        Err(r) => return r,
    };
    let Some(url) = req.url.or_else(|| s.webhooks.url()) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "no url given and no webhook_url configured",
        );
    };
    match super::send_completed(&s, &url, req.event).await {
        Ok(delivery) => Json(json!(delivery)).into_response(),
        Err(e) => refusal(StatusCode::BAD_GATEWAY, e),
    }
}

async fn emails(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"emails": s.registry().emails()}))
}

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/__emulator/urls",
            get(show_urls).put(set_urls).post(set_urls),
        )
        .route(
            "/__emulator/webhooks",
            get(show_webhooks).post(post_webhook),
        )
        .route("/__emulator/webhooks/url", put(set_webhook_url))
        .route("/__emulator/users", post(new_user))
        .route("/__emulator/users/{id}", delete(remove_user))
        .route("/__emulator/users/{id}/double-opt-in", post(opt_in))
        .route("/__emulator/users/{id}/kyc/{action}", post(kyc_action))
        .route("/__emulator/emails", get(emails))
        .with_state(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_bodies_become_changes_or_say_what_is_wrong() {
        assert_eq!(
            change_for("report-issue", ActionBody::default()),
            Ok(KycChange::ReportIssue {
                types: vec![AdminActionType::OtherIssue],
                admin: None
            })
        );
        let aml = ActionBody {
            status: Some("cleared".into()),
            ..ActionBody::default()
        };
        assert_eq!(
            change_for("aml", aml),
            Ok(KycChange::Aml(AmlStatus::Cleared))
        );
        assert!(change_for("aml", ActionBody::default())
            .expect_err("no status")
            .contains("required"));
        assert!(change_for("promote", ActionBody::default()).is_err());
    }
}
