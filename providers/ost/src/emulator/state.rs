//! The emulator's bookkeeping: OST users, their last KYC submission and its statuses, and the
//! emails OST would have sent.
//!
//! Kept in memory: the documents themselves are in the S3 directory (which survives a
//! restart); users and submissions are test fixtures that a fresh emulator recreates. Every
//! collection is bounded: users by [`MAX_USERS`], the email log by [`MAX_EMAIL_LOG`].

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::status::{ChangeError, ChangeEvent, KycChange, KycState};

/// More users than this and `POST /users` is refused (422): the registry lives in memory.
pub const MAX_USERS: usize = 100_000;
/// The email log keeps the last this many.
pub const MAX_EMAIL_LOG: usize = 100;

/// One OST user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: u64,
    pub email: String,
    /// `kyc_submitted`, `doptin_mail_sent`, `doptin_done`.
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

    pub fn has(&self, property: &str) -> bool {
        self.properties.iter().any(|p| p == property)
    }

    fn set(&mut self, property: &str) {
        if !self.has(property) {
            self.properties.push(property.to_owned());
        }
    }
}

/// A user's KYC case: the last submission and its statuses.
#[derive(Debug, Clone, PartialEq)]
pub struct UserKyc {
    pub id: u64,
    /// The id of the last submission's details (`users-kyc-detail`'s `id`).
    pub user_kyc_detail_id: u64,
    pub user_id: u64,
    pub submission_count: u64,
    pub created_at: i64,
    /// When the last submission (its details) arrived.
    pub submitted_at: i64,
    pub state: KycState,
    /// The submitted fields, normalised as OST stores them.
    pub details: Map<String, Value>,
}

impl UserKyc {
    /// OST's `user_kyc` object.
    pub fn to_json(&self) -> Value {
        let s = &self.state;
        json!({
            "id": self.id,
            "user_kyc_detail_id": self.user_kyc_detail_id,
            "user_id": self.user_id,
            "kyc_status": s.kyc_status().as_str(),
            "admin_status": s.admin_status.as_str(),
            "aml_status": s.aml_status.as_str(),
            "whitelist_status": s.whitelist_status.as_str(),
            "admin_action_types": s.admin_action_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "submission_count": self.submission_count,
            "last_acted_by": s.last_acted_by,
            "created_at": self.created_at,
        })
    }
}

/// An email OST would have sent a user (the emulator sends none; it keeps a log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentEmail {
    pub user_id: u64,
    pub email: String,
    /// `kyc_approved`, `kyc_denied` or `kyc_issue`.
    pub template: String,
    pub template_vars: Map<String, Value>,
    pub sent_at: i64,
}

/// Why a user could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddUserError {
    Taken,
    Full,
}

/// Why a control change did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no user {0}")]
    UnknownUser(u64),
    #[error("user {0} has not submitted KYC details")]
    NoSubmission(u64),
    #[error(transparent)]
    Change(#[from] ChangeError),
}

/// Users and cases, plus the id counters.
#[derive(Debug, Default)]
pub struct Registry {
    users: BTreeMap<u64, User>,
    kyc: BTreeMap<u64, UserKyc>,
    emails: VecDeque<SentEmail>,
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

    /// Add a user; OST refuses a taken email (compared case-insensitively).
    pub fn add_user(&mut self, email: &str, now: i64) -> Result<User, AddUserError> {
        let email = email.trim().to_ascii_lowercase();
        if self.users.values().any(|u| u.email == email) {
            return Err(AddUserError::Taken);
        }
        if self.users.len() >= MAX_USERS {
            return Err(AddUserError::Full);
        }
        let user = User {
            id: self.next_user_id,
            email,
            properties: Vec::new(),
            created_at: now,
        };
        self.next_user_id += 1;
        self.users.insert(user.id, user.clone());
        Ok(user)
    }

    pub fn user(&self, id: u64) -> Option<&User> {
        self.users.get(&id)
    }

    pub fn user_ids(&self) -> Vec<u64> {
        self.users.keys().copied().collect()
    }

    /// Every user, oldest first (ids grow with creation).
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Remove a user and their case (an admin's delete).
    pub fn delete_user(&mut self, id: u64) -> Option<User> {
        self.kyc.remove(&id);
        self.users.remove(&id)
    }

    /// The user confirmed OST's double opt-in email.
    pub fn double_opt_in(&mut self, id: u64) -> Option<User> {
        let user = self.users.get_mut(&id)?;
        user.set("doptin_mail_sent");
        user.set("doptin_done");
        Some(user.clone())
    }

    pub fn kyc(&self, user_id: u64) -> Option<&UserKyc> {
        self.kyc.get(&user_id)
    }

    /// Every case, oldest submission first.
    pub fn cases(&self) -> Vec<&UserKyc> {
        let mut cases: Vec<&UserKyc> = self.kyc.values().collect();
        cases.sort_by_key(|k| k.user_kyc_detail_id);
        cases
    }

    /// Record a submission: a first one opens the case, a later one replaces the details,
    /// counts up and starts the review over. A closed case refuses it (`Err(status)`).
    pub fn submit(
        &mut self,
        user_id: u64,
        details: Map<String, Value>,
        now: i64,
    ) -> Result<UserKyc, &'static str> {
        let detail_id = self.next_detail_id;
        let record = match self.kyc.get(&user_id) {
            Some(prev) if prev.state.is_closed() => {
                return Err(prev.state.kyc_status().as_str());
            }
            Some(prev) => UserKyc {
                user_kyc_detail_id: detail_id,
                submission_count: prev.submission_count + 1,
                submitted_at: now,
                state: prev.state.resubmitted(),
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
                    submitted_at: now,
                    state: KycState::default(),
                    details,
                }
            }
        };
        self.next_detail_id += 1;
        if let Some(user) = self.users.get_mut(&user_id) {
            user.set("kyc_submitted");
        }
        self.kyc.insert(user_id, record.clone());
        Ok(record)
    }

    /// Apply a status change to a user's case.
    pub fn change_kyc(
        &mut self,
        user_id: u64,
        change: &KycChange,
    ) -> Result<(UserKyc, ChangeEvent), ControlError> {
        if !self.users.contains_key(&user_id) {
            return Err(ControlError::UnknownUser(user_id));
        }
        let case = self
            .kyc
            .get_mut(&user_id)
            .ok_or(ControlError::NoSubmission(user_id))?;
        let mut state = case.state.clone();
        let event = change.apply(&mut state)?;
        if let KycChange::EthereumAddress { address, .. } = change {
            if let Some(address) = crate::kyc::ethereum::normalised(address) {
                case.details
                    .insert("ethereum_address".into(), Value::String(address));
            }
        }
        case.state = state;
        Ok((case.clone(), event))
    }

    /// Log an email as sent (the oldest entry goes when the log is full).
    pub fn log_email(&mut self, email: SentEmail) {
        if self.emails.len() >= MAX_EMAIL_LOG {
            self.emails.pop_front();
        }
        self.emails.push_back(email);
    }

    pub fn emails(&self) -> Vec<SentEmail> {
        self.emails.iter().cloned().collect()
    }

    pub fn next_event_id(&mut self) -> u64 {
        self.next_event_id += 1;
        self.next_event_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::status::{AdminStatus, KycStatus};

    #[test]
    fn emails_are_unique_and_resubmissions_count_up() {
        let mut r = Registry::new(11001);
        let u = r.add_user("A@example.com", 1).expect("new");
        assert_eq!(u.id, 11001);
        assert_eq!(r.add_user("a@example.com", 2), Err(AddUserError::Taken));
        let first = r.submit(u.id, Map::new(), 3).expect("first");
        let second = r.submit(u.id, Map::new(), 4).expect("second");
        assert_eq!(second.id, first.id);
        assert_eq!(second.submission_count, 2);
        assert_ne!(first.user_kyc_detail_id, second.user_kyc_detail_id);
        assert_eq!((second.created_at, second.submitted_at), (3, 4));
        assert_eq!(
            r.user(u.id).map(|u| u.properties.clone()),
            Some(vec!["kyc_submitted".to_string()])
        );
    }

    #[test]
    fn a_closed_case_refuses_resubmission_until_reopened() {
        let mut r = Registry::new(1);
        let u = r.add_user("a@example.com", 1).expect("new");
        r.submit(u.id, Map::new(), 2).expect("submit");
        let (case, _) = r
            .change_kyc(u.id, &KycChange::Deny { admin: None })
            .expect("deny");
        assert_eq!(case.state.kyc_status(), KycStatus::Denied);
        assert_eq!(r.submit(u.id, Map::new(), 3), Err("denied"));
        r.change_kyc(u.id, &KycChange::Reopen { admin: None })
            .expect("reopen");
        let again = r.submit(u.id, Map::new(), 4).expect("resubmit");
        assert_eq!(again.state.admin_status, AdminStatus::Unprocessed);
        assert_eq!(
            r.change_kyc(99, &KycChange::Deny { admin: None }),
            Err(ControlError::UnknownUser(99))
        );
    }

    #[test]
    fn the_email_log_keeps_only_the_latest() {
        let mut r = Registry::new(1);
        for n in 0..(MAX_EMAIL_LOG as u64 + 5) {
            r.log_email(SentEmail {
                user_id: n,
                email: String::new(),
                template: "kyc_approved".into(),
                template_vars: Map::new(),
                sent_at: 0,
            });
        }
        let log = r.emails();
        assert_eq!(log.len(), MAX_EMAIL_LOG);
        assert_eq!(log[0].user_id, 5);
    }
}
