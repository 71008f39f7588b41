//! A KYC case's statuses and how they change.
//!
//! OST keeps four statuses per case and derives a fifth: `kyc_status` is `approved` when an
//! admin qualified the case and AML cleared or approved it, `denied` when the admin denied it
//! or AML rejected it, else `pending`. An approved or denied case is closed: resubmissions
//! are refused (422) until an admin reopens it. The changes below are what OST's dashboard,
//! its AML provider and its whitelisting do; the emulator's control API drives them.

use serde::Serialize;

/// Enums whose values travel as OST's lower-case words.
macro_rules! ost_words {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text)
            }

            /// Every value, for error messages.
            pub fn words() -> String {
                $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }
    };
}

ost_words!(
    /// The case as a whole, derived from the others.
    KycStatus { Pending => "pending", Approved => "approved", Denied => "denied" }
);
ost_words!(
    /// The admins' decision.
    AdminStatus { Unprocessed => "unprocessed", Qualified => "qualified", Denied => "denied" }
);
ost_words!(
    /// The AML screening's result.
    AmlStatus {
        Unprocessed => "unprocessed", Pending => "pending", Cleared => "cleared",
        Approved => "approved", Rejected => "rejected", Failed => "failed",
    }
);
ost_words!(
    /// Whitelisting of an approved case's Ethereum address.
    WhitelistStatus {
        Unprocessed => "unprocessed", Started => "started", Done => "done", Failed => "failed",
    }
);
ost_words!(
    /// The issues an admin can report to the user by email.
    AdminActionType {
        DataMismatch => "data_mismatch", DocumentIssue => "document_issue",
        OtherIssue => "other_issue",
    }
);

/// The statuses of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KycState {
    pub admin_status: AdminStatus,
    pub aml_status: AmlStatus,
    pub whitelist_status: WhitelistStatus,
    pub admin_action_types: Vec<AdminActionType>,
    /// The admin who acted last (`""`: nobody, or OST's own system).
    pub last_acted_by: String,
}

impl Default for KycState {
    fn default() -> KycState {
        KycState {
            admin_status: AdminStatus::Unprocessed,
            aml_status: AmlStatus::Unprocessed,
            whitelist_status: WhitelistStatus::Unprocessed,
            admin_action_types: Vec::new(),
            last_acted_by: String::new(),
        }
    }
}

impl KycState {
    pub fn kyc_status(&self) -> KycStatus {
        let aml_passed = matches!(self.aml_status, AmlStatus::Cleared | AmlStatus::Approved);
        if self.admin_status == AdminStatus::Denied || self.aml_status == AmlStatus::Rejected {
            KycStatus::Denied
        } else if self.admin_status == AdminStatus::Qualified && aml_passed {
            KycStatus::Approved
        } else {
            KycStatus::Pending
        }
    }

    pub fn is_closed(&self) -> bool {
        self.kyc_status() != KycStatus::Pending
    }

    /// What a (re)submission leaves: OST starts the review over, keeping the whitelisting.
    pub fn resubmitted(&self) -> KycState {
        KycState {
            whitelist_status: self.whitelist_status,
            last_acted_by: self.last_acted_by.clone(),
            ..KycState::default()
        }
    }
}

/// The admin name the emulator acts under when a change names none.
pub const DEFAULT_ADMIN: &str = "Emulator Admin";

/// A change to a case, as OST's dashboard (admins), its AML screening or its whitelisting
/// would make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KycChange {
    /// Qualify the case; AML still open (unprocessed, pending, failed) is cleared with it.
    Approve {
        admin: Option<String>,
    },
    Deny {
        admin: Option<String>,
    },
    /// Report issues to the user (they show in `admin_action_types`).
    ReportIssue {
        types: Vec<AdminActionType>,
        admin: Option<String>,
    },
    Aml(AmlStatus),
    /// Only for approved cases.
    Whitelist(WhitelistStatus),
    /// Only for approved or denied cases: back to an open review.
    Reopen {
        admin: Option<String>,
    },
    /// An admin corrects the user's address.
    EthereumAddress {
        address: String,
        admin: Option<String>,
    },
}

/// Why a change does not apply to a case in its current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("the case is already {0}; reopen it first")]
    Closed(&'static str),
    #[error("the case is {0}, not approved: only approved cases are whitelisted")]
    NotApproved(&'static str),
    #[error("the case is still pending; only approved or denied cases are reopened")]
    NotClosed,
    #[error("name at least one issue type: {}", AdminActionType::words())]
    NoIssueTypes,
    #[error("`{0}` is not an Ethereum address (40 hex digits, 0x optional)")]
    BadAddress(String),
}

/// Which webhook event a change makes OST send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEvent {
    StatusUpdate,
    Reopen,
    EthereumAddress,
}

impl KycChange {
    /// Apply the change to `state` (the address change is applied by the caller, which holds
    /// the details). Who made it decides the event's `source`.
    pub fn apply(&self, state: &mut KycState) -> Result<ChangeEvent, ChangeError> {
        let open = || {
            if state.is_closed() {
                Err(ChangeError::Closed(state.kyc_status().as_str()))
            } else {
                Ok(())
            }
        };
        match self {
            KycChange::Approve { .. } => {
                open()?;
                if matches!(
                    state.aml_status,
                    AmlStatus::Unprocessed | AmlStatus::Pending | AmlStatus::Failed
                ) {
                    state.aml_status = AmlStatus::Cleared;
                }
                state.admin_status = AdminStatus::Qualified;
            }
            KycChange::Deny { .. } => {
                open()?;
                state.admin_status = AdminStatus::Denied;
            }
            KycChange::ReportIssue { types, .. } => {
                open()?;
                if types.is_empty() {
                    return Err(ChangeError::NoIssueTypes);
                }
                for t in types {
                    if !state.admin_action_types.contains(t) {
                        state.admin_action_types.push(*t);
                    }
                }
            }
            KycChange::Aml(status) => {
                open()?;
                state.aml_status = *status;
            }
            KycChange::Whitelist(status) => {
                let now = state.kyc_status();
                if now != KycStatus::Approved {
                    return Err(ChangeError::NotApproved(now.as_str()));
                }
                state.whitelist_status = *status;
            }
            KycChange::Reopen { .. } => {
                if !state.is_closed() {
                    return Err(ChangeError::NotClosed);
                }
                state.admin_status = AdminStatus::Unprocessed;
                if state.aml_status == AmlStatus::Rejected {
                    state.aml_status = AmlStatus::Unprocessed;
                }
                state.whitelist_status = WhitelistStatus::Unprocessed;
                state.admin_action_types.clear();
            }
            KycChange::EthereumAddress { address, .. } => {
                if crate::kyc::ethereum::normalised(address).is_none() {
                    return Err(ChangeError::BadAddress(address.clone()));
                }
            }
        }
        if let Some(admin) = self.admin() {
            state.last_acted_by = admin;
        }
        Ok(match self {
            KycChange::Reopen { .. } => ChangeEvent::Reopen,
            KycChange::EthereumAddress { .. } => ChangeEvent::EthereumAddress,
            _ => ChangeEvent::StatusUpdate,
        })
    }

    /// The admin acting, for the changes admins make.
    fn admin(&self) -> Option<String> {
        match self {
            KycChange::Approve { admin }
            | KycChange::Deny { admin }
            | KycChange::ReportIssue { admin, .. }
            | KycChange::Reopen { admin }
            | KycChange::EthereumAddress { admin, .. } => {
                Some(admin.clone().unwrap_or_else(|| DEFAULT_ADMIN.to_owned()))
            }
            KycChange::Aml(_) | KycChange::Whitelist(_) => None,
        }
    }

    /// `web` for an admin's action on the dashboard, `kyc_system` for OST's own processes.
    pub fn source(&self) -> &'static str {
        match self {
            KycChange::Aml(_) | KycChange::Whitelist(_) => "kyc_system",
            _ => "web",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_needs_the_admin_and_aml_and_closes_the_case() {
        let mut s = KycState::default();
        assert_eq!(s.kyc_status(), KycStatus::Pending);
        KycChange::Approve { admin: None }
            .apply(&mut s)
            .expect("approve");
        assert_eq!(
            (s.kyc_status(), s.aml_status, s.last_acted_by.as_str()),
            (KycStatus::Approved, AmlStatus::Cleared, DEFAULT_ADMIN)
        );
        assert_eq!(
            KycChange::Deny { admin: None }.apply(&mut s),
            Err(ChangeError::Closed("approved"))
        );
        KycChange::Whitelist(WhitelistStatus::Done)
            .apply(&mut s)
            .expect("whitelist");
        KycChange::Reopen { admin: None }
            .apply(&mut s)
            .expect("reopen");
        assert_eq!(
            (s.kyc_status(), s.whitelist_status),
            (KycStatus::Pending, WhitelistStatus::Unprocessed)
        );
    }

    #[test]
    fn an_aml_rejection_denies_and_issues_accumulate_once() {
        let mut s = KycState::default();
        let report = KycChange::ReportIssue {
            types: vec![AdminActionType::DataMismatch, AdminActionType::DataMismatch],
            admin: Some("Grace".into()),
        };
        report.apply(&mut s).expect("report");
        assert_eq!(s.admin_action_types, vec![AdminActionType::DataMismatch]);
        assert_eq!(s.last_acted_by, "Grace");
        KycChange::Aml(AmlStatus::Rejected)
            .apply(&mut s)
            .expect("aml");
        assert_eq!(s.kyc_status(), KycStatus::Denied);
        assert_eq!(
            KycChange::Whitelist(WhitelistStatus::Started).apply(&mut s),
            Err(ChangeError::NotApproved("denied"))
        );
        assert_eq!(AmlStatus::parse("cleared"), Some(AmlStatus::Cleared));
        assert_eq!(AmlStatus::parse("Cleared"), None);
    }
}
