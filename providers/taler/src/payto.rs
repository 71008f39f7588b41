//! The `payto` field: which customer a document is about (RFC 8905 `payto://` URIs).
//!
//! The exchange files bulk data under the customer's payto URI, and the signature covers a
//! hash of it, so a typo here is not a cosmetic problem: the document would be stored, signed
//! and accepted for a customer who does not exist. [`Payto::parse`] therefore checks the shape
//! strictly (scheme, target type, non-empty path, valid percent-escapes, a sane length) and,
//! for `iban` targets, the IBAN's ISO 7064 mod-97 checksum and the BIC's shape.
//!
//! It also puts the URI in one canonical spelling — lower-case scheme and target type,
//! upper-case IBAN and BIC — because the signed hash covers the exact bytes: two frontends
//! spelling one account differently must not become two customers at the exchange. The rest
//! (path of other target types, query options) is kept byte for byte.
//!
//! [`normalize_for_hash`] is the separate, looser normalisation that payto-hash variant C
//! applies before hashing (see `signing`).

use docgate_core::{FieldError, Problem};

/// The frontend field name.
pub const FIELD: &str = "payto";

/// Longer than any real account URI with options, short enough to be a header value.
pub const MAX_LEN: usize = 2048;

const SCHEME: &str = "payto://";

/// A validated payto URI in canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payto {
    uri: String,
    target_type: String,
}

/// Why a payto URI was refused. Messages name what is wrong, never echo the whole value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaytoError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} bytes long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("must start with `payto://`")]
    Scheme,
    #[error("contains whitespace or control characters")]
    Whitespace,
    #[error("must not contain a fragment (`#`)")]
    Fragment,
    #[error("needs a target type and a path, as in payto://iban/DE89370400440532013000")]
    NoPath,
    #[error("the target type `{0}` is not a valid name")]
    TargetType(String),
    #[error("the path has an empty segment")]
    EmptySegment,
    #[error("character `{0}` is not allowed in a payto URI (percent-encode it)")]
    Character(char),
    #[error("`%` must be followed by two hex digits")]
    PercentEncoding,
    #[error("an option in the query has no name")]
    EmptyOption,
    #[error("an iban target is payto://iban/[BIC/]IBAN")]
    IbanPath,
    #[error("the IBAN {0}")]
    Iban(&'static str),
    #[error("the BIC is not 8 or 11 letters and digits in the form AAAABBCC[DDD]")]
    Bic,
}

impl PaytoError {
    /// The frontend's view: an `invalid_metadata` problem naming the `payto` field.
    pub fn to_problem(&self) -> Problem {
        Problem::invalid_metadata(vec![FieldError::invalid(
            FIELD,
            format!("not a valid payto URI: {self}"),
        )])
    }
}

impl Payto {
    /// Validate `input` (surrounding whitespace is ignored) and spell it canonically.
    pub fn parse(input: &str) -> Result<Payto, PaytoError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(PaytoError::Empty);
        }
        if input.len() > MAX_LEN {
            return Err(PaytoError::TooLong(input.len()));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PaytoError::Whitespace);
        }
        let rest = match input.get(..SCHEME.len()) {
            Some(head) if head.eq_ignore_ascii_case(SCHEME) => &input[SCHEME.len()..],
            _ => return Err(PaytoError::Scheme),
        };
        if rest.contains('#') {
            return Err(PaytoError::Fragment);
        }
        let (hier, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let (target_type, path) = hier.split_once('/').ok_or(PaytoError::NoPath)?;
        if path.is_empty() {
            return Err(PaytoError::NoPath);
        }
        let target_type = target_type.to_ascii_lowercase();
        if !valid_target_type(&target_type) {
            return Err(PaytoError::TargetType(target_type));
        }
        let mut segments: Vec<String> = Vec::new();
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err(PaytoError::EmptySegment);
            }
            check_chars(segment, is_pchar)?;
            segments.push(segment.to_owned());
        }
        if let Some(query) = query {
            check_chars(query, |c| is_pchar(c) || c == '/' || c == '?')?;
            if query
                .split('&')
                .any(|option| option.split('=').next().is_none_or(str::is_empty))
            {
                return Err(PaytoError::EmptyOption);
            }
        }
        if target_type == "iban" {
            segments = canonical_iban_path(segments)?;
        }
        let mut uri = format!("{SCHEME}{target_type}/{}", segments.join("/"));
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        Ok(Payto { uri, target_type })
    }

    /// The canonical URI: what is sent in `Taler-Customer-Payto` and hashed into the signature.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The lower-case target type (`iban`, `x-taler-bank`, …).
    pub fn target_type(&self) -> &str {
        &self.target_type
    }
}

impl std::fmt::Display for Payto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri)
    }
}

/// The normalisation of payto-hash variant C: drop the query (options such as
/// `receiver-name` do not identify an account); for `iban` targets also lower-case the
/// `payto://iban/` prefix, drop the BIC and upper-case the IBAN. Other targets keep their
/// path as sent.
pub fn normalize_for_hash(payto: &str) -> String {
    let without_query = payto.split_once('?').map_or(payto, |(head, _)| head);
    const IBAN_PREFIX: &str = "payto://iban/";
    match without_query.get(..IBAN_PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(IBAN_PREFIX) => {
            let path = &without_query[IBAN_PREFIX.len()..];
            let iban = path.rsplit('/').next().unwrap_or(path);
            format!("{IBAN_PREFIX}{}", iban.to_ascii_uppercase())
        }
        _ => without_query.to_owned(),
    }
}

fn valid_target_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.starts_with(|c: char| c.is_ascii_alphanumeric())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// RFC 3986 `pchar` minus `%`, which [`check_chars`] handles as an escape.
fn is_pchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c)
}

fn check_chars(s: &str, allowed: impl Fn(char) -> bool) -> Result<(), PaytoError> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let hi = chars.next();
            let lo = chars.next();
            if !(hi.is_some_and(|h| h.is_ascii_hexdigit())
                && lo.is_some_and(|l| l.is_ascii_hexdigit()))
            {
                return Err(PaytoError::PercentEncoding);
            }
        } else if !allowed(c) {
            return Err(PaytoError::Character(c));
        }
    }
    Ok(())
}

/// `[BIC/]IBAN`, checked and upper-cased.
fn canonical_iban_path(segments: Vec<String>) -> Result<Vec<String>, PaytoError> {
    let (bic, iban) = match segments.as_slice() {
        [iban] => (None, iban),
        [bic, iban] => (Some(bic), iban),
        _ => return Err(PaytoError::IbanPath),
    };
    let iban = iban.to_ascii_uppercase();
    check_iban(&iban)?;
    let mut out = Vec::with_capacity(2);
    if let Some(bic) = bic {
        let bic = bic.to_ascii_uppercase();
        check_bic(&bic)?;
        out.push(bic);
    }
    out.push(iban);
    Ok(out)
}

/// ISO 13616: country letters, two check digits, 11-30 letters/digits; mod-97 of the
/// rearranged number is 1.
pub fn check_iban(iban: &str) -> Result<(), PaytoError> {
    let b = iban.as_bytes();
    if !(15..=34).contains(&b.len()) {
        return Err(PaytoError::Iban("must be 15 to 34 characters long"));
    }
    if !(b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase()) {
        return Err(PaytoError::Iban(
            "must start with a two-letter country code",
        ));
    }
    if !(b[2].is_ascii_digit() && b[3].is_ascii_digit()) {
        return Err(PaytoError::Iban(
            "must have two check digits after the country code",
        ));
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(PaytoError::Iban("may only contain letters and digits"));
    }
    let mut remainder: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let value = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    if remainder == 1 {
        Ok(())
    } else {
        Err(PaytoError::Iban("has a wrong checksum (a typo?)"))
    }
}

fn check_bic(bic: &str) -> Result<(), PaytoError> {
    let b = bic.as_bytes();
    let shape = (b.len() == 8 || b.len() == 11)
        && b[..6].iter().all(u8::is_ascii_uppercase)
        && b[6..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if shape {
        Ok(())
    } else {
        Err(PaytoError::Bic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_forms_and_spells_them_canonically() {
        let cases = [
            (
                "payto://iban/DE89370400440532013000",
                "payto://iban/DE89370400440532013000",
            ),
            (
                "  PAYTO://IBAN/de89370400440532013000?receiver-name=Max%20Mustermann ",
                "payto://iban/DE89370400440532013000?receiver-name=Max%20Mustermann",
            ),
            (
                "payto://iban/cobadeffxxx/DE89370400440532013000",
                "payto://iban/COBADEFFXXX/DE89370400440532013000",
            ),
            (
                "payto://x-taler-bank/bank.example.com/Alice?receiver-name=Alice",
                "payto://x-taler-bank/bank.example.com/Alice?receiver-name=Alice",
            ),
            ("payto://bitcoin/bc1qxyz", "payto://bitcoin/bc1qxyz"),
        ];
        for (input, canonical) in cases {
            let p = Payto::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(p.as_str(), canonical);
        }
        assert_eq!(
            Payto::parse("payto://IBAN/DE89370400440532013000")
                .expect("valid")
                .target_type(),
            "iban"
        );
    }

    #[test]
    fn refuses_malformed_uris_with_a_reason() {
        let cases: [(&str, PaytoError); 14] = [
            ("", PaytoError::Empty),
            ("https://iban/DE89370400440532013000", PaytoError::Scheme),
            ("payto:iban/DE89370400440532013000", PaytoError::Scheme),
            ("payto://iban", PaytoError::NoPath),
            ("payto://iban/", PaytoError::NoPath),
            ("payto:///DE89", PaytoError::TargetType(String::new())),
            (
                "payto://iban//DE89370400440532013000",
                PaytoError::EmptySegment,
            ),
            ("payto://x-taler-bank/host/", PaytoError::EmptySegment),
            ("payto://iban/DE89 3704", PaytoError::Whitespace),
            (
                "payto://iban/DE89370400440532013000#x",
                PaytoError::Fragment,
            ),
            ("payto://bitcoin/a%2", PaytoError::PercentEncoding),
            ("payto://bitcoin/a%zz", PaytoError::PercentEncoding),
            ("payto://bitcoin/a<b", PaytoError::Character('<')),
            ("payto://bitcoin/abc?=x", PaytoError::EmptyOption),
        ];
        for (input, expected) in cases {
            assert_eq!(Payto::parse(input), Err(expected), "{input:?}");
        }
        let long = format!("payto://bitcoin/{}", "a".repeat(MAX_LEN));
        assert!(matches!(Payto::parse(&long), Err(PaytoError::TooLong(_))));
    }

    #[test]
    fn iban_targets_are_checksummed() {
        assert!(Payto::parse("payto://iban/GB82WEST12345698765432").is_ok());
        assert!(Payto::parse("payto://iban/NL91ABNA0417164300").is_ok());
        // One digit off: the checksum catches it.
        assert_eq!(
            Payto::parse("payto://iban/DE89370400440532013001"),
            Err(PaytoError::Iban("has a wrong checksum (a typo?)"))
        );
        assert!(matches!(
            Payto::parse("payto://iban/DE89"),
            Err(PaytoError::Iban(_))
        ));
        assert!(matches!(
            Payto::parse("payto://iban/1E89370400440532013000"),
            Err(PaytoError::Iban(_))
        ));
        assert_eq!(
            Payto::parse("payto://iban/COBA/DE89370400440532013000"),
            Err(PaytoError::Bic)
        );
        assert_eq!(
            Payto::parse("payto://iban/A/B/DE89370400440532013000"),
            Err(PaytoError::IbanPath)
        );
    }

    #[test]
    fn errors_become_invalid_metadata_naming_the_field() {
        let problem = Payto::parse("nope").expect_err("invalid").to_problem();
        assert_eq!(problem.code, "invalid_metadata");
        assert_eq!(problem.errors.len(), 1);
        assert_eq!(problem.errors[0].field, "payto");
        assert!(problem.errors[0].message.contains("payto://"));
    }

    #[test]
    fn variant_c_normalisation_matches_the_fixture() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/taler/vectors.json"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        assert_eq!(
            normalize_for_hash(v["inputs"]["payto"].as_str().expect("payto")),
            v["variant_C_normalized_payto"]
                .as_str()
                .expect("normalized")
        );
        assert_eq!(
            normalize_for_hash("PAYTO://IBAN/cobadeffxxx/de89370400440532013000?x=1"),
            "payto://iban/DE89370400440532013000"
        );
        assert_eq!(
            normalize_for_hash("payto://x-taler-bank/h/Alice?receiver-name=A"),
            "payto://x-taler-bank/h/Alice"
        );
    }
}
