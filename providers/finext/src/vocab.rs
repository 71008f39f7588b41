//! The closed vocabularies of Finext's proof endpoints, spelled exactly as Finext spells them.
//!
//! Finext compares these strings as sent, so the canonical spelling is what goes on the wire.
//! Frontends are forgiven letter case (`utility bill` → `Utility Bill`): that is a typing
//! slip, not a different value. The emulator, standing in for Finext, accepts only the exact
//! spellings.

use std::fmt;

/// A closed set of values, each with its one wire spelling.
pub trait Vocabulary: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;

    /// The value spelled exactly as on the wire.
    fn exact(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }

    /// The value whatever the letter case (surrounding blanks ignored).
    fn lenient(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    /// `a, b, c` for error messages.
    fn listing() -> String {
        Self::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl Vocabulary for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// `address_type`: what kind of document proves the address.
    AddressType {
        CreditCardStatement => "Credit Card Statement",
        UtilityBill => "Utility Bill",
        BankStatement => "Bank Statement",
        BankLetter => "Bank Letter",
        InsurancePolicy => "Insurance Policy",
        PostOfficeBalanceCertificate => "Post Office Balance Certificate",
        OtherGovernmentIssuedDocument => "Other Government Issued Document",
    }
}

vocabulary! {
    /// `address_language` / `language`: the language the document is written in.
    Language {
        English => "English",
        Spanish => "Spanish",
        French => "French",
        Arabic => "Arabic",
        Chinese => "Chinese",
        Japanese => "Japanese",
        Russian => "Russian",
        Portuguese => "Portuguese",
        German => "German",
        Italian => "Italian",
        Hindi => "Hindi",
        Other => "Other",
    }
}

vocabulary! {
    /// `id_type`: which identity document. A passport has no back side worth sending, and a
    /// national id card may lack issue and expiry dates.
    IdType {
        Passport => "Passport",
        DriverLicense => "Driver License",
        NationalId => "National Id",
    }
}

impl IdType {
    /// Whether the back side must be sent.
    pub fn needs_back(self) -> bool {
        self != IdType::Passport
    }

    /// Whether `issued_date` and `expiration_date` must be sent.
    pub fn needs_dates(self) -> bool {
        self != IdType::NationalId
    }
}

/// ISO 3166-1 alpha-2 country codes (the officially assigned ones; user-assigned codes such as
/// `XK` are not countries in the standard and are refused).
const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Whether `code` is an assigned ISO 3166-1 alpha-2 code, exactly as written (upper case).
pub fn is_country(code: &str) -> bool {
    COUNTRIES.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_country_list_is_complete_sorted_and_unique() {
        assert_eq!(COUNTRIES.len(), 249);
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert!(COUNTRIES
            .iter()
            .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())));
        assert!(is_country("DE") && is_country("US") && is_country("CW"));
        assert!(!is_country("de") && !is_country("XK") && !is_country("UK") && !is_country("USA"));
    }

    #[test]
    fn exact_is_strict_and_lenient_forgives_case_only() {
        assert_eq!(
            AddressType::exact("Utility Bill"),
            Some(AddressType::UtilityBill)
        );
        assert_eq!(AddressType::exact("utility bill"), None);
        assert_eq!(
            AddressType::lenient(" utility BILL "),
            Some(AddressType::UtilityBill)
        );
        assert_eq!(AddressType::lenient("UtilityBill"), None);
        assert_eq!(IdType::exact("Driver License"), Some(IdType::DriverLicense));
        assert_eq!(Language::ALL.len(), 12);
        assert_eq!(AddressType::ALL.len(), 7);
    }

    #[test]
    fn wire_spelling_is_the_serde_spelling() {
        for t in IdType::ALL {
            assert_eq!(
                serde_json::to_value(t).expect("serialises"),
                serde_json::Value::String(t.as_str().into())
            );
        }
    }
}
