//! KYC submissions: every field checked and normalised the way OST does, with every problem
//! reported at once.
//!
//! One set of rules serves three callers: the gateway ([`validate_submission`], before it
//! spends a signed call), [`OstProvider::submit_kyc`](crate::OstProvider::submit_kyc) (names,
//! shapes, formats) and the emulator (OST's own checks, with the account's required fields).
//! What OST checks, per field: names at most 100 characters; `birthdate` a real
//! `dd/mm/yyyy` date (one-digit day and month accepted) of someone 18 to 99 years old;
//! `country` and `nationality` from OST's lists (any case; stored upper case); the Ethereum
//! address 40 hex digits with `0x` optional; the amount a number of at least 0.01; file paths
//! OST keys; at most two investor proofs. A blank value counts as not sent.

use std::collections::BTreeMap;

use docgate_core::{FieldError, Problem};
use serde_json::{Map, Value};
use time::Date;

use super::{ethereum, ethereum::AddressCheck, is_file_key, lists, KYC_FIELDS, KYC_MANDATORY};
use crate::envelope::ErrorData;

/// Names longer than this are refused (OST's limit).
pub const MAX_NAME_CHARS: usize = 100;
/// Other text values longer than this are refused: they are form fields, not documents.
pub const MAX_TEXT_CHARS: usize = 255;
/// OST's smallest estimated participation amount.
pub const MIN_PARTICIPATION_AMOUNT: f64 = 0.01;
/// Age bounds OST applies to `birthdate` (whole years, today).
pub const MIN_AGE_YEARS: i32 = 18;
pub const MAX_AGE_YEARS: i32 = 100;

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldIssue {
    Missing,
    Unknown,
    Invalid(String),
}

/// One bad field of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub issue: FieldIssue,
}

impl FieldProblem {
    fn new(field: &str, issue: FieldIssue) -> FieldProblem {
        FieldProblem {
            field: field.to_owned(),
            issue,
        }
    }

    /// As an entry of OST's `err.error_data`.
    pub fn to_error_data(&self) -> ErrorData {
        let msg = match &self.issue {
            FieldIssue::Missing => "is required".to_owned(),
            FieldIssue::Unknown => "is not a KYC field".to_owned(),
            FieldIssue::Invalid(msg) => msg.clone(),
        };
        ErrorData::new(&self.field, msg)
    }

    /// As an entry of docgate's `invalid_metadata` problem.
    pub fn to_field_error(&self) -> FieldError {
        match &self.issue {
            FieldIssue::Missing => FieldError::missing(&self.field),
            FieldIssue::Unknown => FieldError::unknown(&self.field),
            FieldIssue::Invalid(msg) => FieldError::invalid(&self.field, msg.as_str()),
        }
    }
}

/// Which fields are required, how addresses are checked, and the day ages are counted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRules {
    pub required: Vec<String>,
    pub address_check: AddressCheck,
    pub today: Date,
}

impl SubmissionRules {
    /// The spec's mandatory fields, addresses checked as OST's submission does (format only).
    pub fn ost(today: Date) -> SubmissionRules {
        SubmissionRules {
            required: KYC_MANDATORY.iter().map(|s| (*s).to_owned()).collect(),
            address_check: AddressCheck::Format,
            today,
        }
    }

    /// The gateway's rules: the spec's mandatory fields, and a mixed-case Ethereum address must
    /// carry its EIP-55 checksum (a typo there would lose the user's funds, not just the form).
    pub fn gateway(today: Date) -> SubmissionRules {
        SubmissionRules {
            address_check: AddressCheck::Checksum,
            ..SubmissionRules::ost(today)
        }
    }

    /// No field required: only names, shapes and formats are checked.
    pub fn formats_only(today: Date) -> SubmissionRules {
        SubmissionRules {
            required: Vec::new(),
            ..SubmissionRules::ost(today)
        }
    }
}

/// Today in UTC (the day OST counts ages to).
pub fn today_utc() -> Date {
    time::OffsetDateTime::now_utc().date()
}

/// The gateway's check before `POST /users-kyc/{id}`: the submitted JSON object, normalised
/// (trimmed, blanks dropped, country and nationality upper case, `0x` on the address,
/// `dd/mm/yyyy` zero-padded), or a 422 `invalid_metadata` problem naming every bad field.
pub fn validate_submission(input: &Map<String, Value>) -> Result<BTreeMap<String, Value>, Problem> {
    validate_submission_with(input, &SubmissionRules::gateway(today_utc()))
}

/// [`validate_submission`] under explicit rules (tests pin `today`; an OST account with other
/// required fields passes its own list).
pub fn validate_submission_with(
    input: &Map<String, Value>,
    rules: &SubmissionRules,
) -> Result<BTreeMap<String, Value>, Problem> {
    let fields: BTreeMap<String, Value> = input.clone().into_iter().collect();
    check_submission(&fields, rules).map_err(|problems| {
        Problem::invalid_metadata(problems.iter().map(FieldProblem::to_field_error).collect())
    })
}

/// Check every field of `fields` under `rules`: the normalised fields, or every problem (bad
/// fields in name order, then the missing required ones).
pub fn check_submission(
    fields: &BTreeMap<String, Value>,
    rules: &SubmissionRules,
) -> Result<BTreeMap<String, Value>, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let mut normalised = BTreeMap::new();
    let mut present = Vec::new();
    for (name, value) in fields {
        if !KYC_FIELDS.contains(&name.as_str()) {
            problems.push(FieldProblem::new(name, FieldIssue::Unknown));
            continue;
        }
        match normalise_field(name, value, rules) {
            Ok(Some(v)) => {
                normalised.insert(name.clone(), v);
                present.push(name.as_str());
            }
            Ok(None) => {}
            Err(msg) => {
                problems.push(FieldProblem::new(name, FieldIssue::Invalid(msg)));
                // Sent, if badly: not also "missing".
                present.push(name.as_str());
            }
        }
    }
    for required in &rules.required {
        if !present.contains(&required.as_str()) {
            problems.push(FieldProblem::new(required, FieldIssue::Missing));
        }
    }
    if problems.is_empty() {
        Ok(normalised)
    } else {
        Err(problems)
    }
}

/// One field's value, normalised; `Ok(None)` when it is blank (as good as not sent).
fn normalise_field(
    name: &str,
    value: &Value,
    rules: &SubmissionRules,
) -> Result<Option<Value>, String> {
    match name {
        "investor_proof_files_path" => investor_proofs(value),
        "estimated_participation_amount" => amount(value),
        _ => {
            let Value::String(s) = value else {
                return Err("must be a string".into());
            };
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            text(name, s, rules).map(|t| Some(Value::String(t)))
        }
    }
}

fn text(name: &str, s: &str, rules: &SubmissionRules) -> Result<String, String> {
    let limit = match name {
        "first_name" | "last_name" => MAX_NAME_CHARS,
        _ => MAX_TEXT_CHARS,
    };
    if s.chars().count() > limit {
        return Err(format!("must be at most {limit} characters"));
    }
    match name {
        "birthdate" => birthdate(s, rules.today),
        "country" => lists::country(s)
            .ok_or_else(|| "is not a country OST accepts (English name, e.g. INDIA)".into()),
        "nationality" => lists::nationality(s)
            .ok_or_else(|| "is not a nationality OST accepts (e.g. INDIAN)".into()),
        "ethereum_address" => ethereum_address(s, rules.address_check),
        n if n.ends_with("_file_path") => {
            if is_file_key(s) {
                Ok(s.to_owned())
            } else {
                Err("must be a file path from a pre-signed URL".into())
            }
        }
        _ => Ok(s.to_owned()),
    }
}

fn ethereum_address(s: &str, check: AddressCheck) -> Result<String, String> {
    let Some(address) = ethereum::normalised(s) else {
        return Err("must be 40 hex digits, optionally after 0x".into());
    };
    if !ethereum::is_valid(&address, check) {
        return Err("has a wrong EIP-55 checksum (mixed case must match it)".into());
    }
    Ok(address)
}

fn birthdate(s: &str, today: Date) -> Result<String, String> {
    let date = parse_birthdate(s).ok_or("must be a date as dd/mm/yyyy")?;
    let mut age = today.year() - date.year();
    if (today.month() as u8, today.day()) < (date.month() as u8, date.day()) {
        age -= 1;
    }
    if !(MIN_AGE_YEARS..MAX_AGE_YEARS).contains(&age) {
        return Err(format!(
            "must be the birthdate of someone {MIN_AGE_YEARS} to {} years old",
            MAX_AGE_YEARS - 1
        ));
    }
    Ok(format!(
        "{:02}/{:02}/{:04}",
        date.day(),
        date.month() as u8,
        date.year()
    ))
}

/// `d/m/yyyy` or `dd/mm/yyyy` naming a real calendar day.
pub fn parse_birthdate(s: &str) -> Option<Date> {
    let parts: Vec<&str> = s.trim().split('/').collect();
    let [d, m, y] = parts.as_slice() else {
        return None;
    };
    let digits = |p: &str, range: std::ops::RangeInclusive<usize>| {
        range.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    };
    if !(digits(d, 1..=2) && digits(m, 1..=2) && digits(y, 4..=4)) {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

fn amount(value: &Value) -> Result<Option<Value>, String> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => return Err("must be a number".into()),
    };
    match parsed {
        Some(v) if v.is_finite() && v >= MIN_PARTICIPATION_AMOUNT => Ok(Some(match value {
            Value::String(s) => Value::String(s.trim().to_owned()),
            other => other.clone(),
        })),
        _ => Err(format!(
            "must be a number of at least {MIN_PARTICIPATION_AMOUNT}"
        )),
    }
}

fn investor_proofs(value: &Value) -> Result<Option<Value>, String> {
    let Value::Array(items) = value else {
        return Err("must be an array of file paths".into());
    };
    if items.len() > super::MAX_INVESTOR_PROOFS {
        return Err(format!("at most {} files", super::MAX_INVESTOR_PROOFS));
    }
    let mut keys = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) if is_file_key(s.trim()) => keys.push(Value::String(s.trim().into())),
            _ => return Err("every entry must be a file path from a pre-signed URL".into()),
        }
    }
    Ok((!keys.is_empty()).then_some(Value::Array(keys)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn today() -> Date {
        Date::from_calendar_date(2024, time::Month::June, 15).expect("date")
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object literal"),
        }
    }

    /// Every mandatory field, valid (the spec's example, lightly varied).
    fn complete() -> Map<String, Value> {
        object(json!({
            "first_name": " Ada ", "last_name": "Lovelace", "birthdate": "1/2/1990",
            "country": "india", "nationality": "Indian", "document_id_number": "arqpa7659a",
            "document_id_file_path": "4/i/f6417391000fae92b5d074b2e5928a3b",
            "selfie_file_path": "4/i/dc71d140532b1a7b55ba29f35b7a16d2",
            "ethereum_address": "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "estimated_participation_amount": 1.5, "street_address": "1 Main St",
            "city": "Pune", "state": "MH", "postal_code": "411001", "residence_proof_file_path": " "
        }))
    }

    fn gateway(input: &Map<String, Value>) -> Result<BTreeMap<String, Value>, Problem> {
        validate_submission_with(input, &SubmissionRules::gateway(today()))
    }

    #[test]
    fn a_complete_submission_comes_back_normalised() {
        let out = gateway(&complete()).expect("valid");
        assert_eq!(out["first_name"], "Ada");
        assert_eq!(out["birthdate"], "01/02/1990");
        assert_eq!(
            (&out["country"], &out["nationality"]),
            (&json!("INDIA"), &json!("INDIAN"))
        );
        assert_eq!(
            out["ethereum_address"],
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        );
        assert_eq!(out["estimated_participation_amount"], 1.5);
        assert!(
            !out.contains_key("residence_proof_file_path"),
            "blank is not sent"
        );
    }

    #[test]
    fn three_missing_required_fields_are_three_field_errors() {
        let mut input = complete();
        for name in ["first_name", "selfie_file_path", "postal_code"] {
            input.remove(name);
        }
        let problem = gateway(&input).expect_err("incomplete");
        assert_eq!(problem.code, "invalid_metadata");
        assert_eq!(problem.status.as_u16(), 422);
        let missing: Vec<(&str, docgate_core::FieldErrorKind)> = problem
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.kind))
            .collect();
        use docgate_core::FieldErrorKind::Missing;
        assert_eq!(
            missing,
            vec![
                ("first_name", Missing),
                ("selfie_file_path", Missing),
                ("postal_code", Missing)
            ]
        );
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut input = complete();
        let bad = json!({
            "birthdate": "1990-02-01", "country": "Atlantis", "nationality": "INDIA",
            "ethereum_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "estimated_participation_amount": "0.001", "first_name": "x".repeat(101),
            "selfie_file_path": "../../etc/passwd", "nickname": "ada", "city": 7,
            "investor_proof_files_path": vec!["4/d/5cfaefa078eb75f3a6470474053ef175"; 3]
        });
        input.extend(object(bad));
        let problem = gateway(&input).expect_err("bad");
        let fields: Vec<&str> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "birthdate",
                "city",
                "country",
                "estimated_participation_amount",
                "ethereum_address",
                "first_name",
                "investor_proof_files_path",
                "nationality",
                "nickname",
                "selfie_file_path"
            ]
        );
        let nickname = problem
            .errors
            .iter()
            .find(|e| e.field == "nickname")
            .expect("n");
        assert_eq!(nickname.kind, docgate_core::FieldErrorKind::Unknown);
    }

    #[test]
    fn ages_count_whole_years_to_today() {
        let rules = SubmissionRules::formats_only(today());
        let check = |d: &str| {
            let f: BTreeMap<String, Value> = [("birthdate".to_string(), json!(d))].into();
            check_submission(&f, &rules).is_ok()
        };
        assert!(check("15/06/2006"), "18 today");
        assert!(!check("16/06/2006"), "18 tomorrow");
        assert!(check("16/06/1924"), "99");
        assert!(!check("15/06/1924"), "100 today");
        assert!(!check("29/02/2023"), "no such day");
        assert!(check("29/02/2004"));
    }

    #[test]
    fn ost_rules_take_any_hex_address_the_gateway_wants_the_checksum() {
        let mut input = complete();
        input.insert(
            "ethereum_address".into(),
            json!("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
        );
        let fields: BTreeMap<String, Value> = input.clone().into_iter().collect();
        assert!(check_submission(&fields, &SubmissionRules::ost(today())).is_ok());
        assert!(gateway(&input).is_err());
    }
}
