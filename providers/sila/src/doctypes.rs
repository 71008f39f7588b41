//! The document types Sila accepts in `document_type`, and the media types it takes.
//!
//! The list is the table in Sila's `/documents` documentation (short form = the API value,
//! long form = the label `/document_types` returns). The client checks `document_type`
//! against it *before* reading a byte, so a typo costs the frontend a 422 instead of a
//! stored-then-rejected upload. Sila adds types over time, so the client's copy is
//! configurable (`document_types` in the config); the emulator serves this one.

/// One supported document type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentType {
    /// The API value (`id_drivers_license`). Case matters: `tax_W4` is spelt with a capital W.
    pub name: &'static str,
    /// The human label from the documentation table.
    pub label: &'static str,
    /// The coarse identity category `/document_types` reports next to each type.
    ///
    /// Not verified against the live API (the documentation does not list it); the emulator
    /// reports it for completeness and neither side relies on it.
    pub identity_type: &'static str,
}

const fn t(name: &'static str, label: &'static str, identity_type: &'static str) -> DocumentType {
    DocumentType {
        name,
        label,
        identity_type,
    }
}

/// Every type in the documentation table, in its order.
pub const DOCUMENT_TYPES: &[DocumentType] = &[
    t("tax_1040", "1040 Tax Return", "other"),
    t("vtl_birth_certificate", "Birth Certificate", "other"),
    t("doc_name_change", "Court Order for Name Change", "other"),
    t("vtl_divorce", "Divorce Decree", "other"),
    t("id_drivers_permit", "Driver's permit", "license"),
    t("tax_w2", "IRS form W2", "other"),
    t("doc_lease", "Lease agreement", "other"),
    t("vtl_marriage", "Marriage Certificate", "other"),
    t(
        "id_military_dependent",
        "Military Dependent's ID Card",
        "other",
    ),
    t("id_military", "Military ID", "other"),
    t("doc_mortgage", "Mortgage agreement", "other"),
    t("id_nyc_id", "NYC ID Card", "other"),
    t("other_doc", "Other Document", "other"),
    t("other_id", "Other ID", "other"),
    t("id_passport", "Passport", "passport"),
    t("doc_paystub", "Pay Stub Documentation", "other"),
    t(
        "doc_green_card",
        "Permanent Resident Card (or Green Card)",
        "other",
    ),
    t(
        "doc_ssa",
        "Social Security Administration documentation (includes 4029)",
        "other",
    ),
    t("doc_ss_card", "Social Security Card", "other"),
    t("id_state", "State ID card", "other"),
    t(
        "id_drivers_license",
        "State-issued driver's license",
        "license",
    ),
    t("tax_1095", "Tax Form 1095", "other"),
    t("tax_1099", "Tax Form 1099", "other"),
    t("doc_tuition", "Tuition Statement", "other"),
    t("doc_uo_benefits", "Unemployment Benefits Letter", "other"),
    t("id_passport_card", "US Passport Card", "passport"),
    t("doc_utility", "Utility bill", "other"),
    t("tax_W4", "W4 Withholding Allowance Certificate", "other"),
    t(
        "verification_letter",
        "Account Verification Letter",
        "other",
    ),
    t("bank_statement", "Bank Statement", "other"),
];

/// The API values of [`DOCUMENT_TYPES`], as owned strings (the client's default list).
pub fn default_names() -> Vec<String> {
    DOCUMENT_TYPES.iter().map(|t| t.name.to_owned()).collect()
}

/// The media types Sila accepts (its "Supported Image Formats" table).
pub const SUPPORTED_MEDIA_TYPES: &[&str] = &["image/png", "image/jpeg", "application/pdf"];

/// Sila's request size limit: "Maximum request size is 20mb" — taken as 20 000 000 bytes,
/// the smaller reading, so a request docgate sends is never over the real limit.
pub const MAX_REQUEST_BYTES: u64 = 20_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_the_documented_spelling() {
        let mut names: Vec<&str> = DOCUMENT_TYPES.iter().map(|t| t.name).collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total);
        assert!(names.contains(&"tax_W4"));
        assert!(!names.contains(&"tax_w4"));
        assert!(names.contains(&"id_drivers_license"));
    }
}
