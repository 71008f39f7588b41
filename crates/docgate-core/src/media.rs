//! Media types: what the bytes really are, and whether that is what the sender claimed.
//!
//! The declared `Content-Type` (or a multipart part's type) is a claim made by a browser that
//! often guesses from the file extension; only the first bytes of the content tell the truth.
//! docgate sniffs with [`infer`] and compares: a disagreement is `media_type_mismatch`, a type
//! outside the provider's policy is `unsupported_media_type`. A missing declaration, or the
//! generic `application/octet-stream`, makes no claim and cannot mismatch.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many leading bytes are enough to sniff every type docgate cares about. infer's ZIP
/// sub-type detection (docx, jar, apk …) looks furthest; 8 KiB covers it with room to spare.
pub const SNIFF_BYTES: usize = 8 * 1024;

/// The sniffed media type of `head` (the first bytes of a document), if known.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    infer::get(head).map(|t| normalize_static(t.mime_type()))
}

/// Canonical spellings for the aliases browsers and SDKs send.
fn normalize_static(mime: &'static str) -> &'static str {
    match mime {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "application/x-pdf" => "application/pdf",
        "application/x-zip-compressed" | "application/x-zip" => "application/zip",
        "image/x-png" => "image/png",
        other => other,
    }
}

/// Lower-case a declared type, drop its parameters and map known aliases.
/// `None` means "no claim": absent, empty or `application/octet-stream`.
pub fn normalize_declared(declared: Option<&str>) -> Option<String> {
    let raw = declared?.split(';').next()?.trim().to_ascii_lowercase();
    if raw.is_empty() || raw == "application/octet-stream" {
        return None;
    }
    let canonical = match raw.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "application/x-pdf" => "application/pdf",
        "application/x-zip-compressed" | "application/x-zip" => "application/zip",
        "image/x-png" => "image/png",
        _ => return Some(raw),
    };
    Some(canonical.to_owned())
}

/// An accepted media type: exact (`application/pdf`) or a whole top-level type (`image/*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaRange {
    top: String,
    sub: Option<String>,
}

impl MediaRange {
    pub fn parse(s: &str) -> Result<MediaRange, String> {
        let s = s.trim().to_ascii_lowercase();
        let (top, sub) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a media type (want type/subtype or type/*)"))?;
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !valid(top) || !(sub == "*" || valid(sub)) {
            return Err(format!(
                "`{s}` is not a media type (want type/subtype or type/*)"
            ));
        }
        Ok(MediaRange {
            top: top.to_owned(),
            sub: (sub != "*").then(|| sub.to_owned()),
        })
    }

    pub fn matches(&self, mime: &str) -> bool {
        let Some((top, sub)) = mime.split_once('/') else {
            return false;
        };
        top.eq_ignore_ascii_case(&self.top)
            && self
                .sub
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(sub))
    }
}

impl fmt::Display for MediaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.top, self.sub.as_deref().unwrap_or("*"))
    }
}

impl TryFrom<String> for MediaRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        MediaRange::parse(&s)
    }
}

impl From<MediaRange> for String {
    fn from(r: MediaRange) -> String {
        r.to_string()
    }
}

/// Does a declared type agree with the sniffed one? A declared range (`image/*`) agrees with
/// any member; otherwise the canonical names must be equal.
pub fn declared_agrees(declared: &str, sniffed: &str) -> bool {
    match MediaRange::parse(declared) {
        Ok(range) => range.matches(sniffed),
        Err(_) => false,
    }
}

/// The usual file extension for a media type (used when a provider wants one).
pub fn extension_for(mime: &str) -> Option<&'static str> {
    Some(match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/tiff" => "tiff",
        "image/heif" => "heif",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "video/mp4" => "mp4",
        "audio/mpeg" => "mp3",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

    #[test]
    fn sniffs_from_bytes_not_names() {
        assert_eq!(sniff(PNG), Some("image/png"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0"),
            Some("application/vnd.microsoft.portable-executable")
        );
        assert_eq!(sniff(b"plain words"), None);
    }

    #[test]
    fn declared_types_are_normalised_and_octet_stream_claims_nothing() {
        assert_eq!(
            normalize_declared(Some("Image/JPG; q=1")).as_deref(),
            Some("image/jpeg")
        );
        assert_eq!(normalize_declared(Some("application/octet-stream")), None);
        assert_eq!(normalize_declared(Some("  ")), None);
        assert_eq!(normalize_declared(None), None);
    }

    #[test]
    fn ranges_match_whole_top_level_types_or_exact_types() {
        let image = MediaRange::parse("image/*").expect("valid");
        assert!(image.matches("image/png"));
        assert!(!image.matches("application/pdf"));
        let pdf = MediaRange::parse("application/pdf").expect("valid");
        assert!(pdf.matches("application/pdf"));
        assert!(!pdf.matches("application/zip"));
        assert!(MediaRange::parse("pdf").is_err());
        assert_eq!(image.to_string(), "image/*");
    }
}
