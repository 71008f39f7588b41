//! What a frontend asks for, checked against Finext's rules before any document byte is read.
//!
//! [`validate`] turns the frontend's text fields into a [`Submission`] (stored in the ledger as
//! the upload's `Prepared`) or one `invalid_metadata` problem naming every bad field, so a form
//! can highlight them all at once. Everything Finext would refuse for metadata reasons is
//! refused here: a refusal after a 50 MiB upload would waste the user's time and bandwidth.
//!
//! Frontend fields (see the README for the full table):
//! * `kind` = `address` | `id`, `username` (the end user's Finext account), and for address
//!   proofs `resubmit` = `true` | `false` (re-submission after review → `updateAddressProof`);
//! * address: `address_type`, `address_issued_by`, `address_issued_date`, `address_language`;
//! * id: `id_type`, `id_number`, `issued_by`, `issued_date`, `expiration_date`, `language`.
//!
//! Dates arrive as ISO `YYYY-MM-DD` whatever the configured wire format.

use docgate_core::{
    provider::fields::{optional, required, unknown},
    FieldError, Fields, Problem,
};
use serde::{Deserialize, Serialize};
use time::Date;

use crate::{
    dates,
    vocab::{is_country, AddressType, IdType, Language, Vocabulary},
};

/// The Finext endpoints, by what they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Endpoint {
    #[serde(rename = "addAddressProof")]
    AddAddressProof,
    #[serde(rename = "updateAddressProof")]
    UpdateAddressProof,
    #[serde(rename = "addIDProof")]
    AddIdProof,
    #[serde(rename = "getAddressKycStatus")]
    GetAddressKycStatus,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::AddAddressProof,
        Endpoint::UpdateAddressProof,
        Endpoint::AddIdProof,
        Endpoint::GetAddressKycStatus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::AddAddressProof => "addAddressProof",
            Endpoint::UpdateAddressProof => "updateAddressProof",
            Endpoint::AddIdProof => "addIDProof",
            Endpoint::GetAddressKycStatus => "getAddressKycStatus",
        }
    }

    /// The path under the base URL.
    pub fn path(self) -> String {
        format!("/api/v1/account/{}", self.name())
    }

    /// The body fields carrying the front and back document (base64), if this endpoint has any.
    pub fn document_fields(self) -> Option<(&'static str, &'static str)> {
        match self {
            Endpoint::AddAddressProof | Endpoint::UpdateAddressProof => {
                Some(("address_proof_front", "address_proof_back"))
            }
            Endpoint::AddIdProof => Some(("id_front", "id_back")),
            Endpoint::GetAddressKycStatus => None,
        }
    }
}

/// A checked request for one proof submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The end user's Finext account.
    pub username: String,
    #[serde(flatten)]
    pub proof: Proof,
}

/// The kind-specific part of a submission. Dates are kept as calendar dates (ISO in the
/// ledger) and only formatted for the wire at delivery, in the configured format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Proof {
    Address {
        resubmit: bool,
        address_type: AddressType,
        address_issued_by: String,
        #[serde(with = "iso_date")]
        address_issued_date: Date,
        address_language: Language,
    },
    Id {
        id_type: IdType,
        id_number: String,
        issued_by: String,
        #[serde(with = "iso_date::option", default)]
        issued_date: Option<Date>,
        #[serde(with = "iso_date::option", default)]
        expiration_date: Option<Date>,
        language: Language,
    },
}

impl Submission {
    pub fn endpoint(&self) -> Endpoint {
        match self.proof {
            Proof::Address {
                resubmit: false, ..
            } => Endpoint::AddAddressProof,
            Proof::Address { resubmit: true, .. } => Endpoint::UpdateAddressProof,
            Proof::Id { .. } => Endpoint::AddIdProof,
        }
    }

    /// Whether the `back` slot must carry a document.
    pub fn needs_back(&self) -> bool {
        match self.proof {
            Proof::Address { .. } => false,
            Proof::Id { id_type, .. } => id_type.needs_back(),
        }
    }
}

const COMMON_FIELDS: [&str; 3] = ["kind", "username", "resubmit"];
const ADDRESS_FIELDS: [&str; 4] = [
    "address_type",
    "address_issued_by",
    "address_issued_date",
    "address_language",
];
const ID_FIELDS: [&str; 6] = [
    "id_type",
    "id_number",
    "issued_by",
    "issued_date",
    "expiration_date",
    "language",
];

/// Every field name a frontend may send, for `GET /v1/providers`.
pub fn field_specs() -> Vec<docgate_core::FieldSpec> {
    use docgate_core::FieldSpec as F;
    let addr = AddressType::listing();
    let lang = Language::listing();
    let ids = IdType::listing();
    vec![
        F::required("kind", "`address` (address proof) or `id` (identity proof)"),
        F::required("username", "the end user's Finext account username"),
        F::optional(
            "resubmit",
            "`true` to re-submit an address proof after review (updateAddressProof); default `false`",
        ),
        F::optional("address_type", &format!("kind=address, required: one of {addr}")),
        F::optional(
            "address_issued_by",
            "kind=address, required: the issuing authority (utility company, bank …)",
        ),
        F::optional(
            "address_issued_date",
            "kind=address, required: YYYY-MM-DD, within the last 90 days",
        ),
        F::optional("address_language", &format!("kind=address, required: one of {lang}")),
        F::optional("id_type", &format!("kind=id, required: one of {ids}")),
        F::optional("id_number", "kind=id, required: the document number"),
        F::optional(
            "issued_by",
            "kind=id, required: issuing country, ISO 3166-1 alpha-2 (e.g. DE)",
        ),
        F::optional(
            "issued_date",
            "kind=id: YYYY-MM-DD before today; required unless id_type is National Id",
        ),
        F::optional(
            "expiration_date",
            "kind=id: YYYY-MM-DD after today; required unless id_type is National Id",
        ),
        F::optional("language", &format!("kind=id, required: one of {lang}")),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Address,
    Id,
}

/// Check the frontend's fields against Finext's rules as of `today` (UTC).
pub fn validate(fields: &Fields, today: Date) -> Result<Submission, Problem> {
    let mut errors = Vec::new();
    let kind = parse_kind(fields, &mut errors);
    check_unknown_fields(fields, kind, &mut errors);
    let username = required(fields, "username", &mut errors)
        .and_then(|u| text(u, "username", 128, false, &mut errors));
    let resubmit = parse_resubmit(fields, kind, &mut errors);

    // With `kind` unknown (absent or invalid) the fields that did arrive are still checked,
    // but none is reported missing: which ones are needed depends on the kind.
    let address = if kind != Some(Kind::Id) {
        address_proof(fields, kind, resubmit, today, &mut errors)
    } else {
        None
    };
    let id = if kind != Some(Kind::Address) {
        id_proof(fields, kind, today, &mut errors)
    } else {
        None
    };

    if !errors.is_empty() {
        return Err(Problem::invalid_metadata(errors));
    }
    let proof = match kind {
        Some(Kind::Address) => address,
        Some(Kind::Id) => id,
        None => None,
    };
    match (username, proof) {
        (Some(username), Some(proof)) => Ok(Submission { username, proof }),
        // Unreachable in practice: every missing piece above recorded an error.
        _ => Err(Problem::internal(
            "finext: metadata incomplete without a reported error",
        )),
    }
}

fn parse_kind(fields: &Fields, errors: &mut Vec<FieldError>) -> Option<Kind> {
    match required(fields, "kind", errors) {
        Some(k) if k.eq_ignore_ascii_case("address") => Some(Kind::Address),
        Some(k) if k.eq_ignore_ascii_case("id") => Some(Kind::Id),
        Some(_) => {
            errors.push(FieldError::invalid("kind", "must be `address` or `id`"));
            None
        }
        None => None,
    }
}

/// Report fields no kind knows; a field of the other kind is named as such.
fn check_unknown_fields(fields: &Fields, kind: Option<Kind>, errors: &mut Vec<FieldError>) {
    let known: Vec<&str> = match kind {
        Some(Kind::Address) => COMMON_FIELDS
            .iter()
            .chain(&ADDRESS_FIELDS)
            .copied()
            .collect(),
        Some(Kind::Id) => COMMON_FIELDS.iter().chain(&ID_FIELDS).copied().collect(),
        None => COMMON_FIELDS
            .iter()
            .chain(&ADDRESS_FIELDS)
            .chain(&ID_FIELDS)
            .copied()
            .collect(),
    };
    for mut e in unknown(fields, &known, &[]) {
        if kind == Some(Kind::Id) && ADDRESS_FIELDS.contains(&e.field.as_str()) {
            e.message = format!("`{}` belongs to kind=address", e.field);
        } else if kind == Some(Kind::Address) && ID_FIELDS.contains(&e.field.as_str()) {
            e.message = format!("`{}` belongs to kind=id", e.field);
        }
        errors.push(e);
    }
}

fn parse_resubmit(fields: &Fields, kind: Option<Kind>, errors: &mut Vec<FieldError>) -> bool {
    let resubmit = match optional(fields, "resubmit") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            errors.push(FieldError::invalid("resubmit", "must be `true` or `false`"));
            false
        }
    };
    if resubmit && kind == Some(Kind::Id) {
        errors.push(FieldError::invalid(
            "resubmit",
            "only address proofs can be re-submitted (Finext has no updateIDProof)",
        ));
    }
    resubmit
}

/// The value of `name`, reported missing only when `kind` is known to need it.
fn field_for<'a>(
    fields: &'a Fields,
    name: &str,
    needed: bool,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    if needed {
        required(fields, name, errors)
    } else {
        optional(fields, name)
    }
}

fn address_proof(
    fields: &Fields,
    kind: Option<Kind>,
    resubmit: bool,
    today: Date,
    errors: &mut Vec<FieldError>,
) -> Option<Proof> {
    let needed = kind == Some(Kind::Address);
    let address_type = field_for(fields, "address_type", needed, errors)
        .and_then(|v| vocabulary::<AddressType>("address_type", v, errors));
    let issued_by = field_for(fields, "address_issued_by", needed, errors)
        .and_then(|v| text(v, "address_issued_by", 255, true, errors));
    let issued_date = field_for(fields, "address_issued_date", needed, errors)
        .and_then(|v| date("address_issued_date", v, errors))
        .and_then(|d| {
            check_date(
                "address_issued_date",
                d,
                dates::address_issued_date_problem(d, today),
                errors,
            )
        });
    let language = field_for(fields, "address_language", needed, errors)
        .and_then(|v| vocabulary::<Language>("address_language", v, errors));
    Some(Proof::Address {
        resubmit,
        address_type: address_type?,
        address_issued_by: issued_by?,
        address_issued_date: issued_date?,
        address_language: language?,
    })
}

fn id_proof(
    fields: &Fields,
    kind: Option<Kind>,
    today: Date,
    errors: &mut Vec<FieldError>,
) -> Option<Proof> {
    let needed = kind == Some(Kind::Id);
    let id_type = field_for(fields, "id_type", needed, errors)
        .and_then(|v| vocabulary::<IdType>("id_type", v, errors));
    let id_number = field_for(fields, "id_number", needed, errors)
        .and_then(|v| text(v, "id_number", 64, true, errors));
    let issued_by = field_for(fields, "issued_by", needed, errors)
        .and_then(|v| country("issued_by", v, errors));
    let language = field_for(fields, "language", needed, errors)
        .and_then(|v| vocabulary::<Language>("language", v, errors));
    // Dates are required unless the id type is known not to need them.
    let dates_required = needed && id_type.is_some_and(IdType::needs_dates);
    let id_date = |name: &str, rule: fn(Date, Date) -> Option<String>, errors: &mut Vec<_>| {
        field_for(fields, name, dates_required, errors)
            .and_then(|v| date(name, v, errors))
            .and_then(|d| check_date(name, d, rule(d, today), errors))
    };
    let issued_date = id_date("issued_date", dates::id_issued_date_problem, errors);
    let expiration_date = id_date("expiration_date", dates::expiration_date_problem, errors);
    Some(Proof::Id {
        id_type: id_type?,
        id_number: id_number?,
        issued_by: issued_by?,
        issued_date,
        expiration_date,
        language: language?,
    })
}

fn vocabulary<V: Vocabulary>(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<V> {
    let found = V::lenient(value);
    if found.is_none() {
        errors.push(FieldError::invalid(
            field,
            format!("`{value}` is not one of: {}", V::listing()),
        ));
    }
    found
}

/// Free text Finext stores as is: bounded, no control characters; `spaces` allows inner blanks.
fn text(
    value: &str,
    field: &str,
    max_chars: usize,
    spaces: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    if value.chars().count() > max_chars {
        errors.push(FieldError::invalid(
            field,
            format!("at most {max_chars} characters"),
        ));
        None
    } else if value.chars().any(char::is_control) {
        errors.push(FieldError::invalid(
            field,
            "must not contain control characters",
        ));
        None
    } else if !spaces && value.chars().any(char::is_whitespace) {
        errors.push(FieldError::invalid(field, "must not contain spaces"));
        None
    } else {
        Some(value.to_owned())
    }
}

fn country(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let upper = value.to_ascii_uppercase();
    if is_country(&upper) {
        Some(upper)
    } else {
        errors.push(FieldError::invalid(
            field,
            format!("`{value}` is not an ISO 3166-1 alpha-2 country code (e.g. DE, US)"),
        ));
        None
    }
}

fn date(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<Date> {
    let parsed = dates::parse_iso(value);
    if parsed.is_none() {
        errors.push(FieldError::invalid(
            field,
            format!("`{value}` is not a date in the form YYYY-MM-DD"),
        ));
    }
    parsed
}

fn check_date(
    field: &str,
    d: Date,
    problem: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<Date> {
    match problem {
        Some(message) => {
            errors.push(FieldError::invalid(field, message));
            None
        }
        None => Some(d),
    }
}

/// Calendar dates as ISO strings in the ledger (readable, and stable across `time` versions).
mod iso_date {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::Date;

    pub fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::dates::DateFormat::YearMonthDay.format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        crate::dates::parse_iso(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not YYYY-MM-DD")))
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => crate::dates::parse_iso(&s)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not YYYY-MM-DD"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docgate_core::FieldErrorKind;
    use time::macros::date;

    const TODAY: Date = date!(2024 - 06 - 30);

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn address() -> Fields {
        fields(&[
            ("kind", "address"),
            ("username", "lili111"),
            ("address_type", "Utility Bill"),
            ("address_issued_by", "Stadtwerke München"),
            ("address_issued_date", "2024-06-01"),
            ("address_language", "German"),
        ])
    }

    fn passport() -> Fields {
        fields(&[
            ("kind", "id"),
            ("username", "lili111"),
            ("id_type", "Passport"),
            ("id_number", "C01X00T47"),
            ("issued_by", "de"),
            ("issued_date", "2020-01-15"),
            ("expiration_date", "2030-01-14"),
            ("language", "german"),
        ])
    }

    fn errors_of(f: &Fields) -> Vec<(String, FieldErrorKind)> {
        let p = validate(f, TODAY).expect_err("invalid");
        assert_eq!(p.code, "invalid_metadata");
        assert_eq!(p.status, 422);
        p.errors.into_iter().map(|e| (e.field, e.kind)).collect()
    }

    #[test]
    fn a_valid_address_proof_is_normalised() {
        let s = validate(&address(), TODAY).expect("valid");
        assert_eq!(s.endpoint(), Endpoint::AddAddressProof);
        assert_eq!(s.username, "lili111");
        assert!(matches!(
            s.proof,
            Proof::Address {
                address_type: AddressType::UtilityBill,
                address_language: Language::German,
                ..
            }
        ));
        let mut f = address();
        f.insert("resubmit".into(), "TRUE".into());
        assert_eq!(
            validate(&f, TODAY).expect("valid").endpoint(),
            Endpoint::UpdateAddressProof
        );
    }

    #[test]
    fn a_valid_passport_is_normalised_to_wire_spellings() {
        let s = validate(&passport(), TODAY).expect("valid");
        assert_eq!(s.endpoint(), Endpoint::AddIdProof);
        assert!(!s.needs_back());
        match s.proof {
            Proof::Id {
                issued_by,
                language,
                ..
            } => {
                assert_eq!(issued_by, "DE");
                assert_eq!(language, Language::German);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn prepared_form_round_trips_with_iso_dates() {
        for f in [address(), passport()] {
            let s = validate(&f, TODAY).expect("valid");
            let json = serde_json::to_value(&s).expect("serialises");
            assert!(
                json.to_string().contains("\"20"),
                "dates are ISO strings: {json}"
            );
            let back: Submission = serde_json::from_value(json).expect("parses");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let f = fields(&[
            ("kind", "address"),
            ("username", "li li"),
            ("address_type", "Phone Bill"),
            ("address_issued_date", "2024-03-31"), // 91 days before TODAY
            ("address_language", "Klingon"),
            ("id_number", "123"),
            ("resubmit", "maybe"),
        ]);
        let errs = errors_of(&f);
        let names: Vec<&str> = errs.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "username",
            "resubmit",
            "address_type",
            "address_issued_by",
            "address_issued_date",
            "address_language",
            "id_number",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(errs.contains(&("address_issued_by".into(), FieldErrorKind::Missing)));
        assert!(errs.contains(&("id_number".into(), FieldErrorKind::Unknown)));
        assert!(errs.contains(&("address_issued_date".into(), FieldErrorKind::Invalid)));
    }

    #[test]
    fn address_dates_at_the_90_day_boundary() {
        let mut f = address();
        f.insert("address_issued_date".into(), "2024-04-01".into()); // 90 days
        assert!(validate(&f, TODAY).is_ok());
        f.insert("address_issued_date".into(), "2024-03-31".into()); // 91 days
        let p = validate(&f, TODAY).expect_err("too old");
        assert!(
            p.errors[0].message.contains("91 days old"),
            "{}",
            p.errors[0].message
        );
        f.insert("address_issued_date".into(), "2024-07-01".into());
        assert!(validate(&f, TODAY).is_err(), "future dates are refused");
        f.insert("address_issued_date".into(), "01.06.2024".into());
        assert_eq!(
            errors_of(&f),
            vec![("address_issued_date".into(), FieldErrorKind::Invalid)]
        );
    }

    #[test]
    fn id_rules_dates_country_and_national_id_exemption() {
        let mut f = passport();
        f.insert("issued_date".into(), "2024-06-30".into());
        f.insert("expiration_date".into(), "2024-06-30".into());
        f.insert("issued_by".into(), "DEU".into());
        let errs = errors_of(&f);
        assert_eq!(errs.len(), 3, "{errs:?}");

        let mut f = passport();
        f.remove("issued_date");
        f.remove("expiration_date");
        let errs = errors_of(&f);
        assert_eq!(
            errs,
            vec![
                ("issued_date".into(), FieldErrorKind::Missing),
                ("expiration_date".into(), FieldErrorKind::Missing)
            ]
        );
        f.insert("id_type".into(), "National Id".into());
        let s = validate(&f, TODAY).expect("national ids may omit both dates");
        assert!(s.needs_back());
        match s.proof {
            Proof::Id {
                issued_date,
                expiration_date,
                ..
            } => {
                assert_eq!((issued_date, expiration_date), (None, None))
            }
            other => panic!("unexpected {other:?}"),
        }
        // ... but dates that are given are still checked.
        f.insert("expiration_date".into(), "2020-01-01".into());
        assert_eq!(
            errors_of(&f),
            vec![("expiration_date".into(), FieldErrorKind::Invalid)]
        );
    }

    #[test]
    fn kind_decides_which_fields_are_known() {
        let mut f = passport();
        f.insert("address_type".into(), "Utility Bill".into());
        f.insert("resubmit".into(), "true".into());
        let p = validate(&f, TODAY).expect_err("invalid");
        let msgs: Vec<String> = p
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(p.errors.len(), 2, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("belongs to kind=address")));
        assert!(msgs.iter().any(|m| m.starts_with("resubmit")));
    }

    #[test]
    fn without_kind_present_fields_are_checked_but_none_is_missing() {
        // The gateway may call prepare early, before every field has arrived.
        let f = fields(&[
            ("username", "lili111"),
            ("address_issued_date", "2020-01-01"),
        ]);
        let errs = errors_of(&f);
        assert_eq!(
            errs,
            vec![
                ("kind".into(), FieldErrorKind::Missing),
                ("address_issued_date".into(), FieldErrorKind::Invalid)
            ]
        );
        let only_kind = errors_of(&fields(&[("username", "lili111"), ("issued_by", "DE")]));
        assert_eq!(only_kind, vec![("kind".into(), FieldErrorKind::Missing)]);
    }
}
