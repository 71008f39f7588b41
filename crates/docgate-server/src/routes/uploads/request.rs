//! What an upload request's head says, parsed and checked before any body byte is read.

use docgate_core::{Fields, Problem};
use http::{header, HeaderMap};

type Result<T> = std::result::Result<T, Problem>;

/// The declared Content-Length, if any.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| Problem::bad_request("Content-Length is not a number")),
    }
}

/// `Idempotency-Key`: 1-255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII"))?
        .trim();
    let valid = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(Problem::bad_request(
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// `Prefer: respond-async`, among other preferences.
pub fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// Query parameters as fields; a name given twice is refused.
pub fn parse_query(raw: Option<&str>, max_fields: usize) -> Result<Fields> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
    // As many as a multipart form may carry: an answer listing each unknown one stays small.
    if pairs.len() > max_fields {
        return Err(Problem::bad_request(format!(
            "more than {max_fields} fields in the query string"
        )));
    }
    let mut fields = Fields::new();
    for (k, v) in pairs {
        if fields.insert(k.clone(), v).is_some() {
            return Err(Problem::invalid_field(&k, "given more than once"));
        }
    }
    Ok(fields)
}

/// `Content-Disposition: attachment; filename="x.pdf"` → `x.pdf` (raw uploads).
pub fn disposition_filename(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_DISPOSITION)?.to_str().ok()?;
    v.split(';').map(str::trim).find_map(|p| {
        let (k, val) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| val.trim().trim_matches('"').to_owned())
    })
}

/// A document's filename as the receipt keeps it: trimmed, without control characters, and
/// at most `max_bytes` of UTF-8 (422 `invalid_metadata` naming `filename` beyond that, so a
/// client cannot park megabytes in the ledger through a name).
pub fn checked_filename(name: Option<&str>, max_bytes: usize) -> Result<Option<String>> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.len() > max_bytes {
        return Err(Problem::invalid_field(
            "filename",
            format!("at most {max_bytes} bytes of UTF-8"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Problem::invalid_field(
            "filename",
            "control characters are not allowed",
        ));
    }
    Ok(Some(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn query_fields_refuse_duplicates() {
        assert_eq!(parse_query(Some("a=1&b=2"), 100).map(|f| f.len()), Ok(2));
        assert!(parse_query(Some("a=1&a=2"), 100).is_err());
        assert_eq!(parse_query(None, 100).map(|f| f.len()), Ok(0));
        assert_eq!(
            parse_query(Some("a=1&b=2&c=3"), 2).map_err(|p| p.status.as_u16()),
            Err(400),
            "past max_fields"
        );
    }

    #[test]
    fn prefer_respond_async_is_recognised_among_other_preferences() {
        let mut h = HeaderMap::new();
        h.insert(
            "prefer",
            HeaderValue::from_static("return=minimal, respond-async"),
        );
        assert!(wants_async(&h));
        assert!(!wants_async(&HeaderMap::new()));
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h), Ok(None));
        h.insert("idempotency-key", HeaderValue::from_static("order-42"));
        assert_eq!(idempotency_key(&h), Ok(Some("order-42".into())));
        h.insert("idempotency-key", HeaderValue::from_static("has space"));
        assert!(idempotency_key(&h).is_err());
    }

    #[test]
    fn content_disposition_filename() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"id card.pdf\""),
        );
        assert_eq!(disposition_filename(&h).as_deref(), Some("id card.pdf"));
    }

    #[test]
    fn regression_a_30_mib_filename_is_refused_not_stored() {
        let huge = "a".repeat(30 << 20);
        let p = checked_filename(Some(&huge), 255).expect_err("refused");
        assert_eq!(p.code, "invalid_metadata");
        assert_eq!(p.errors[0].field, "filename");
        assert_eq!(
            checked_filename(Some("  ok.pdf "), 255),
            Ok(Some("ok.pdf".into()))
        );
        assert!(checked_filename(Some("a\nb"), 255).is_err());
        assert_eq!(checked_filename(Some(" "), 255), Ok(None));
    }
}
