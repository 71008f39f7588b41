//! `/api/v2/users`: add (`POST`), retrieve (`GET /{id}`), list (`GET`).
//!
//! List filters, as OST documents and implements them: `is_kyc_submitted`, `is_doptin_done`,
//! `is_doptin_mail_sent` (exactly `true` or `false`) and `email` (users whose email starts
//! with it, any case). Users are ordered by creation.

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{
    api::{bad_request, not_found, success, unexpected, unprocessable, Shared},
    events,
    listing::{self, FilterVerdict},
    state::{AddUserError, User},
};
use crate::envelope::ErrorData;

/// The boolean user filters and the property each one tests.
const PROPERTY_FILTERS: [(&str, &str); 3] = [
    ("is_kyc_submitted", "kyc_submitted"),
    ("is_doptin_done", "doptin_done"),
    ("is_doptin_mail_sent", "doptin_mail_sent"),
];

pub(crate) fn add(shared: &Shared, params: Map<String, Value>, now: i64) -> Response {
    let mut errors = unexpected(&params, &["email"]);
    let email = params
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    if !is_email(email) {
        errors.push(ErrorData::new("email", "must be a valid email address"));
    }
    if !errors.is_empty() {
        return bad_request("emu_user_invalid", errors);
    }
    let added = shared.registry().add_user(email, now);
    match added {
        Ok(user) => {
            shared.emit(|id| events::user_event(events::USER_REGISTER, id, "api", &user, now));
            success(json!({"result_type": "user", "user": user.to_json()}))
        }
        Err(AddUserError::Taken) => bad_request(
            "emu_user_duplicate",
            vec![ErrorData::new("email", "is already registered")],
        ),
        Err(AddUserError::Full) => unprocessable(
            "emu_user_limit",
            format!(
                "The emulator holds at most {} users.",
                super::state::MAX_USERS
            ),
        ),
    }
}

/// One `@`, something before it, a dot in the domain, no spaces: what OST's check amounts to.
fn is_email(email: &str) -> bool {
    email.len() <= 255
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
}

pub(crate) fn get(shared: &Shared, id: u64, params: &Map<String, Value>) -> Response {
    let errors = unexpected(params, &[]);
    if !errors.is_empty() {
        return bad_request("emu_user_invalid", errors);
    }
    match shared.registry().user(id) {
        Some(u) => success(json!({"result_type": "user", "user": u.to_json()})),
        None => not_found(),
    }
}

fn check_filter(name: &str, value: &str) -> FilterVerdict {
    if name == "email" {
        return FilterVerdict::Accept;
    }
    if PROPERTY_FILTERS.iter().any(|(n, _)| *n == name) {
        return match value {
            "true" | "false" => FilterVerdict::Accept,
            _ => FilterVerdict::Refuse("must be `true` or `false`".into()),
        };
    }
    FilterVerdict::Refuse(
        "is not a filter of this list; use is_kyc_submitted, is_doptin_done, \
         is_doptin_mail_sent or email"
            .into(),
    )
}

fn matches(user: &User, filters: &Map<String, Value>) -> bool {
    filters.iter().all(|(name, value)| {
        let value = value.as_str().unwrap_or("");
        if name == "email" {
            return user.email.to_lowercase().starts_with(&value.to_lowercase());
        }
        PROPERTY_FILTERS
            .iter()
            .find(|(n, _)| n == name)
            .is_none_or(|(_, property)| user.has(property) == (value == "true"))
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
        .users()
        .filter(|u| matches(u, &query.filters))
        .map(User::to_json)
        .collect();
    let (total, page) = query.page(chosen);
    success(json!({"result_type": "users", "users": page, "meta": query.meta(total)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(is_email("kyc@ost.com"));
        assert!(is_email("yogesh+13233@ost.com"));
        for bad in [
            "",
            "kyc",
            "@ost.com",
            "kyc@ost",
            "kyc@ost.",
            "a b@ost.com",
            "a@b@c.d",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn filters_test_properties_and_email_prefixes() {
        let user = User {
            id: 1,
            email: "kycuser7@ost.com".into(),
            properties: vec!["kyc_submitted".into()],
            created_at: 0,
        };
        let f = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        assert!(matches(
            &user,
            &f(json!({"email": "KYCuser", "is_kyc_submitted": "true"}))
        ));
        assert!(!matches(&user, &f(json!({"email": "user7"}))));
        assert!(!matches(&user, &f(json!({"is_doptin_done": "true"}))));
        assert_eq!(
            check_filter("is_doptin_done", "True"),
            FilterVerdict::Refuse("must be `true` or `false`".into())
        );
    }
}
