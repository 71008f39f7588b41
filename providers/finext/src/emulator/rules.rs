//! Finext's field rules, as the receiving side enforces them.
//!
//! The receiver is strict where the client is forgiving: enum values must be spelled exactly,
//! country codes upper case, dates in the configured wire format. That strictness is the
//! point — docgate's client must produce exactly what Finext accepts, and the emulator is
//! where that is proven.

use std::collections::BTreeMap;

use time::Date;

use super::{
    codes::Refusal,
    scan::{DecodedDocument, DocumentProblem},
};
use crate::{
    dates::{self, DateFormat},
    submission::Endpoint,
    vocab::{is_country, AddressType, IdType, Language, Vocabulary},
};

/// Extensions the emulator accepts, and the type the decoded bytes must sniff as.
pub const EXTENSIONS: [(&str, &str); 4] = [
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("pdf", "application/pdf"),
];

/// The media type an extension promises (case-insensitive), if supported.
pub fn media_type_of(extension: &str) -> Option<&'static str> {
    EXTENSIONS
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(extension))
        .map(|(_, t)| *t)
}

/// One document of a submission, checked: body field, extension, sniffed type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDocument {
    pub field: &'static str,
    pub extension: String,
    pub media_type: &'static str,
}

struct Fields<'a> {
    texts: &'a BTreeMap<String, String>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.texts
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<&'a str, Refusal> {
        self.get(name)
            .ok_or_else(|| Refusal::InvalidField(format!("{name} is required")))
    }

    fn vocabulary<V: Vocabulary>(&self, name: &str) -> Result<V, Refusal> {
        let v = self.required(name)?;
        V::exact(v).ok_or_else(|| {
            Refusal::InvalidField(format!("{name} `{v}` is not one of: {}", V::listing()))
        })
    }

    fn date(&self, name: &str, format: DateFormat) -> Result<Option<Date>, Refusal> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => format.parse(v).map(Some).ok_or_else(|| {
                Refusal::InvalidField(format!("{name} `{v}` is not a date in the form {format}"))
            }),
        }
    }
}

fn rule(name: &str, problem: Option<String>) -> Result<(), Refusal> {
    match problem {
        Some(p) => Err(Refusal::InvalidField(format!("{name}: {p}"))),
        None => Ok(()),
    }
}

/// Check the metadata fields of a proof submission.
pub fn check_fields(
    endpoint: Endpoint,
    texts: &BTreeMap<String, String>,
    documents: &BTreeMap<String, DecodedDocument>,
    format: DateFormat,
    today: Date,
) -> Result<(), Refusal> {
    let f = Fields { texts };
    let Some((front, back)) = endpoint.document_fields() else {
        return Ok(());
    };
    let back_required = match endpoint {
        Endpoint::AddAddressProof | Endpoint::UpdateAddressProof => {
            f.vocabulary::<AddressType>("address_type")?;
            f.required("address_issued_by")?;
            let issued = f
                .date("address_issued_date", format)?
                .ok_or_else(|| Refusal::InvalidField("address_issued_date is required".into()))?;
            rule(
                "address_issued_date",
                dates::address_issued_date_problem(issued, today),
            )?;
            f.vocabulary::<Language>("address_language")?;
            false
        }
        Endpoint::AddIdProof => {
            let id_type = f.vocabulary::<IdType>("id_type")?;
            f.required("id_number")?;
            let country = f.required("issued_by")?;
            if !is_country(country) {
                return Err(Refusal::InvalidField(format!(
                    "issued_by `{country}` is not an ISO 3166-1 alpha-2 country code"
                )));
            }
            let issued = f.date("issued_date", format)?;
            let expires = f.date("expiration_date", format)?;
            if id_type.needs_dates() {
                for (name, d) in [("issued_date", issued), ("expiration_date", expires)] {
                    if d.is_none() {
                        return Err(Refusal::InvalidField(format!(
                            "{name} is required for id_type {id_type}"
                        )));
                    }
                }
            }
            if let Some(d) = issued {
                rule("issued_date", dates::id_issued_date_problem(d, today))?;
            }
            if let Some(d) = expires {
                rule("expiration_date", dates::expiration_date_problem(d, today))?;
            }
            f.vocabulary::<Language>("language")?;
            id_type.needs_back()
        }
        Endpoint::GetAddressKycStatus => false,
    };
    for (field, required) in [(front, true), (back, back_required)] {
        let ext_field = format!("{field}_extension");
        let has_doc = documents.contains_key(field);
        let has_ext = f.get(&ext_field).is_some();
        match (has_doc, has_ext) {
            (false, _) if required => {
                return Err(Refusal::InvalidField(format!("{field} is required")))
            }
            (true, false) => {
                return Err(Refusal::InvalidField(format!(
                    "{ext_field} is required when {field} is set"
                )))
            }
            (false, true) => {
                return Err(Refusal::InvalidField(format!(
                    "{ext_field} is set but {field} is not"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Check each decoded document: valid base64, within the size limit, not empty, and bytes
/// whose sniffed type is what the extension says.
pub fn check_documents(
    endpoint: Endpoint,
    texts: &BTreeMap<String, String>,
    documents: &BTreeMap<String, DecodedDocument>,
) -> Result<Vec<CheckedDocument>, Refusal> {
    let Some((front, back)) = endpoint.document_fields() else {
        return Ok(Vec::new());
    };
    let mut checked = Vec::new();
    for field in [front, back] {
        let Some(doc) = documents.get(field) else {
            continue;
        };
        match &doc.problem {
            Some(DocumentProblem::Base64(what)) => {
                return Err(Refusal::Base64(format!("{field}: {what}")))
            }
            Some(DocumentProblem::TooLarge { limit }) => {
                return Err(Refusal::TooLarge(format!(
                    "{field} decodes to more than {limit} bytes"
                )))
            }
            None => {}
        }
        if doc.size == 0 {
            return Err(Refusal::InvalidField(format!("{field} is empty")));
        }
        let ext_field = format!("{field}_extension");
        let extension = texts.get(&ext_field).cloned().unwrap_or_default();
        let Some(promised) = media_type_of(&extension) else {
            let supported: Vec<&str> = EXTENSIONS.iter().map(|(e, _)| *e).collect();
            return Err(Refusal::TypeMismatch(format!(
                "{ext_field} `{extension}` is not supported ({})",
                supported.join(", ")
            )));
        };
        let sniffed = docgate_core::media::sniff(&doc.head);
        if sniffed != Some(promised) {
            return Err(Refusal::TypeMismatch(format!(
                "{ext_field} is `{extension}` but the decoded {field} is {}",
                sniffed.unwrap_or("of no recognised type")
            )));
        }
        checked.push(CheckedDocument {
            field,
            extension,
            media_type: promised,
        });
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const TODAY: Date = date!(2024 - 06 - 30);

    fn texts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn doc(head: &[u8]) -> DecodedDocument {
        DecodedDocument {
            path: "unused".into(),
            size: head.len() as u64,
            sha256: [0; 32],
            head: head.to_vec(),
            problem: None,
        }
    }

    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01";

    fn address() -> BTreeMap<String, String> {
        texts(&[
            ("address_type", "Utility Bill"),
            ("address_issued_by", "aaa"),
            ("address_issued_date", "2024-06-01"),
            ("address_language", "English"),
            ("address_proof_front_extension", "jpeg"),
        ])
    }

    fn docs(fields: &[&str]) -> BTreeMap<String, DecodedDocument> {
        fields.iter().map(|f| (f.to_string(), doc(JPEG))).collect()
    }

    fn code(r: Result<(), Refusal>) -> u32 {
        r.map(|()| 10200).unwrap_or_else(|e| e.code())
    }

    #[test]
    fn address_rules_are_exact() {
        let d = docs(&["address_proof_front"]);
        let ymd = DateFormat::YearMonthDay;
        assert_eq!(
            code(check_fields(
                Endpoint::AddAddressProof,
                &address(),
                &d,
                ymd,
                TODAY
            )),
            10200
        );
        for (k, v) in [
            ("address_type", "utility bill"),
            ("address_language", "english"),
            ("address_issued_date", "2024-03-31"),
            ("address_issued_date", "2024-30-06"),
            ("address_issued_by", ""),
        ] {
            let mut t = address();
            t.insert(k.into(), v.into());
            assert_eq!(
                code(check_fields(Endpoint::AddAddressProof, &t, &d, ymd, TODAY)),
                10422,
                "{k}={v}"
            );
        }
        // The same date written the other way round is valid under the other format.
        let mut t = address();
        t.insert("address_issued_date".into(), "2024-01-06".into());
        assert_eq!(
            code(check_fields(
                Endpoint::AddAddressProof,
                &t,
                &d,
                DateFormat::YearDayMonth,
                TODAY
            )),
            10200
        );
        assert_eq!(
            code(check_fields(Endpoint::AddAddressProof, &t, &d, ymd, TODAY)),
            10422
        );
        // A back extension without a back document, and no front at all.
        let mut t = address();
        t.insert("address_proof_back_extension".into(), "jpg".into());
        assert_eq!(
            code(check_fields(Endpoint::AddAddressProof, &t, &d, ymd, TODAY)),
            10422
        );
        assert_eq!(
            code(check_fields(
                Endpoint::AddAddressProof,
                &address(),
                &docs(&[]),
                ymd,
                TODAY
            )),
            10422
        );
    }

    #[test]
    fn id_rules_depend_on_the_id_type() {
        let ymd = DateFormat::YearMonthDay;
        let base = texts(&[
            ("id_type", "Passport"),
            ("id_number", "X1"),
            ("issued_by", "FR"),
            ("issued_date", "2020-01-01"),
            ("expiration_date", "2030-01-01"),
            ("language", "French"),
            ("id_front_extension", "jpg"),
        ]);
        let front = docs(&["id_front"]);
        assert_eq!(
            code(check_fields(
                Endpoint::AddIdProof,
                &base,
                &front,
                ymd,
                TODAY
            )),
            10200
        );
        let mut t = base.clone();
        t.insert("id_type".into(), "Driver License".into());
        assert_eq!(
            code(check_fields(Endpoint::AddIdProof, &t, &front, ymd, TODAY)),
            10422,
            "back needed"
        );
        let mut t = base.clone();
        t.insert("id_type".into(), "National Id".into());
        t.insert("id_back_extension".into(), "jpg".into());
        t.remove("issued_date");
        t.remove("expiration_date");
        assert_eq!(
            code(check_fields(
                Endpoint::AddIdProof,
                &t,
                &docs(&["id_front", "id_back"]),
                ymd,
                TODAY
            )),
            10200
        );
        for (k, v) in [
            ("issued_by", "fr"),
            ("issued_by", "FRA"),
            ("expiration_date", "2024-06-30"),
            ("issued_date", "2024-06-30"),
        ] {
            let mut t = base.clone();
            t.insert(k.into(), v.into());
            assert_eq!(
                code(check_fields(Endpoint::AddIdProof, &t, &front, ymd, TODAY)),
                10422,
                "{k}={v}"
            );
        }
    }

    #[test]
    fn documents_must_match_their_extension() {
        let t = address();
        let ok = check_documents(
            Endpoint::AddAddressProof,
            &t,
            &docs(&["address_proof_front"]),
        )
        .expect("jpeg");
        assert_eq!(ok[0].media_type, "image/jpeg");
        let mut png = BTreeMap::new();
        png.insert(
            "address_proof_front".to_string(),
            doc(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
        );
        let err = check_documents(Endpoint::AddAddressProof, &t, &png).expect_err("mismatch");
        assert_eq!(err.code(), 10415);
        assert!(err.msg().contains("image/png"), "{}", err.msg());
        let mut gif = address();
        gif.insert("address_proof_front_extension".into(), "gif".into());
        let err = check_documents(
            Endpoint::AddAddressProof,
            &gif,
            &docs(&["address_proof_front"]),
        )
        .expect_err("gif");
        assert_eq!(err.code(), 10415);
    }
}
