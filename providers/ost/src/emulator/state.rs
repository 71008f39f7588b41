//! The emulator's bookkeeping: OST users and their last KYC submission.
//!
//! Kept in memory: the documents themselves are in the S3 directory (which survives a
//! restart); users and submissions are test fixtures that a fresh emulator recreates.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// One OST user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: u64,
    pub email: String,
    pub properties: Vec<String>,
    pub created_at: i64,
}

impl User {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "email": self.email,
            "properties": self.properties,
            "created_at": self.created_at,
        })
    }
}

/// A user's last KYC submission and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct UserKyc {
    pub id: u64,
    pub user_kyc_detail_id: u64,
    pub user_id: u64,
    pub submission_count: u64,
    pub created_at: i64,
    /// The submitted fields, as received.
    pub details: Map<String, Value>,
}

impl UserKyc {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "user_kyc_detail_id": self.user_kyc_detail_id,
            "user_id": self.user_id,
            "kyc_status": "pending",
            "admin_status": "unprocessed",
            "aml_status": "unprocessed",
            "whitelist_status": "unprocessed",
            "admin_action_types": [],
            "submission_count": self.submission_count,
            "last_acted_by": "",
            "created_at": self.created_at,
        })
    }
}

/// Users and submissions, plus the id counters.
#[derive(Debug, Default)]
pub struct Registry {
    users: BTreeMap<u64, User>,
    kyc: BTreeMap<u64, UserKyc>,
    next_user_id: u64,
    next_kyc_id: u64,
    next_detail_id: u64,
    next_event_id: u64,
}

impl Registry {
    pub fn new(first_user_id: u64) -> Registry {
        Registry {
            next_user_id: first_user_id,
            next_kyc_id: 300,
            next_detail_id: 700,
            next_event_id: 200,
            ..Registry::default()
        }
    }

    /// Add a user; `None` when the email is taken (OST refuses duplicates).
    pub fn add_user(&mut self, email: &str, now: i64) -> Option<User> {
        let email = email.trim().to_ascii_lowercase();
        if self.users.values().any(|u| u.email == email) {
            return None;
        }
        let user = User {
            id: self.next_user_id,
            email,
            properties: Vec::new(),
            created_at: now,
        };
        self.next_user_id += 1;
        self.users.insert(user.id, user.clone());
        Some(user)
    }

    pub fn user(&self, id: u64) -> Option<&User> {
        self.users.get(&id)
    }

    pub fn user_ids(&self) -> Vec<u64> {
        self.users.keys().copied().collect()
    }

    pub fn kyc(&self, user_id: u64) -> Option<&UserKyc> {
        self.kyc.get(&user_id)
    }

    /// Record a submission (a re-submission replaces the details and counts up).
    pub fn submit(&mut self, user_id: u64, details: Map<String, Value>, now: i64) -> UserKyc {
        let detail_id = self.next_detail_id;
        self.next_detail_id += 1;
        let record = match self.kyc.get(&user_id) {
            Some(prev) => UserKyc {
                user_kyc_detail_id: detail_id,
                submission_count: prev.submission_count + 1,
                details,
                ..prev.clone()
            },
            None => {
                let id = self.next_kyc_id;
                self.next_kyc_id += 1;
                UserKyc {
                    id,
                    user_kyc_detail_id: detail_id,
                    user_id,
                    submission_count: 1,
                    created_at: now,
                    details,
                }
            }
        };
        if let Some(user) = self.users.get_mut(&user_id) {
            if !user.properties.iter().any(|p| p == "kyc_submitted") {
                user.properties.push("kyc_submitted".into());
            }
        }
        self.kyc.insert(user_id, record.clone());
        record
    }

    pub fn next_event_id(&mut self) -> u64 {
        self.next_event_id += 1;
        self.next_event_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_unique_and_resubmissions_count_up() {
        let mut r = Registry::new(11001);
        let u = r.add_user("A@example.com", 1).expect("new");
        assert_eq!(u.id, 11001);
        assert!(r.add_user("a@example.com", 2).is_none());
        let first = r.submit(u.id, Map::new(), 3);
        let second = r.submit(u.id, Map::new(), 4);
        assert_eq!((first.id, second.id), (first.id, first.id));
        assert_eq!(second.submission_count, 2);
        assert_ne!(first.user_kyc_detail_id, second.user_kyc_detail_id);
        assert_eq!(
            r.user(u.id).map(|u| u.properties.clone()),
            Some(vec!["kyc_submitted".to_string()])
        );
    }
}
