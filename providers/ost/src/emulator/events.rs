//! The webhook events OST documents, built from the emulator's records.
//!
//! Every event has `id`, `name`, `type` (`user` or `user_kyc`), `source` (`web`: an admin or
//! the user on OST's site, `api`: a client's API call, `kyc_system`: OST's own processes),
//! `description`, `version` (`v1`), `created_at` and `data` (`{"result_type", "user" |
//! "user_kyc"}`). OST sends every value as a string; arrays stay arrays of strings.

use serde_json::{json, Map, Value};

use super::state::{User, UserKyc};

/// One documented event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKind {
    pub name: &'static str,
    pub event_type: &'static str,
    pub description: &'static str,
}

pub const USER_REGISTER: EventKind = EventKind {
    name: "user_register",
    event_type: "user",
    description: "User has signed up",
};
pub const USER_DOPT_IN: EventKind = EventKind {
    name: "user_dopt_in",
    event_type: "user",
    description: "User has done double opt in",
};
pub const USER_DELETED: EventKind = EventKind {
    name: "user_deleted",
    event_type: "user",
    description: "User was deleted by admin",
};
pub const KYC_SUBMIT: EventKind = EventKind {
    name: "kyc_submit",
    event_type: "user_kyc",
    description: "User has submitted kyc data",
};
pub const UPDATE_ETHEREUM_ADDRESS: EventKind = EventKind {
    name: "update_ethereum_address",
    event_type: "user_kyc",
    description: "Admin has updated ethereum address of user",
};
pub const KYC_REOPEN: EventKind = EventKind {
    name: "kyc_reopen",
    event_type: "user_kyc",
    description: "user kyc case was reopened by admin",
};
pub const KYC_STATUS_UPDATE: EventKind = EventKind {
    name: "kyc_status_update",
    event_type: "user_kyc",
    description: "user kyc state has changed",
};

/// Every event OST documents.
pub const ALL: [EventKind; 7] = [
    USER_REGISTER,
    USER_DOPT_IN,
    USER_DELETED,
    KYC_SUBMIT,
    UPDATE_ETHEREUM_ADDRESS,
    KYC_REOPEN,
    KYC_STATUS_UPDATE,
];

/// A user event.
pub fn user_event(
    kind: EventKind,
    id: u64,
    source: &str,
    user: &User,
    now: i64,
) -> Map<String, Value> {
    event(
        kind,
        id,
        source,
        now,
        json!({"result_type": "user", "user": as_text(&user.to_json())}),
    )
}

/// A user-KYC event.
pub fn kyc_event(
    kind: EventKind,
    id: u64,
    source: &str,
    case: &UserKyc,
    now: i64,
) -> Map<String, Value> {
    event(
        kind,
        id,
        source,
        now,
        json!({"result_type": "user_kyc", "user_kyc": as_text(&case.to_json())}),
    )
}

fn event(kind: EventKind, id: u64, source: &str, now: i64, data: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(id.to_string()));
    m.insert("name".into(), Value::String(kind.name.into()));
    m.insert("type".into(), Value::String(kind.event_type.into()));
    m.insert("source".into(), Value::String(source.into()));
    m.insert("description".into(), Value::String(kind.description.into()));
    m.insert("version".into(), Value::String("v1".into()));
    m.insert("created_at".into(), Value::String(now.to_string()));
    m.insert("data".into(), data);
    m
}

/// Every scalar as a string, as OST sends them.
fn as_text(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), as_text(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(as_text).collect()),
        Value::String(s) => Value::String(s.clone()),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    }
}

/// Fill in what every OST event has when a caller left it out.
pub fn complete_event(mut event: Map<String, Value>, id: u64, now: i64) -> Map<String, Value> {
    let defaults = [
        ("id", Value::String(id.to_string())),
        ("created_at", Value::String(now.to_string())),
        ("version", Value::String("v1".into())),
        ("source", Value::String("kyc_system".into())),
    ];
    for (k, v) in defaults {
        event.entry(k).or_insert(v);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_events_carry_strings_and_the_properties_array() {
        let user = User {
            id: 11493,
            email: "a@example.com".into(),
            properties: vec!["doptin_mail_sent".into()],
            created_at: 1541144915,
        };
        let e = user_event(USER_REGISTER, 236, "web", &user, 1541144915);
        assert_eq!(e["id"], "236");
        assert_eq!(e["type"], "user");
        assert_eq!(
            e["data"],
            json!({"result_type": "user", "user": {"created_at": "1541144915",
                   "email": "a@example.com", "id": "11493", "properties": ["doptin_mail_sent"]}})
        );
    }
}
