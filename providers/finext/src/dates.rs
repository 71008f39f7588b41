//! Dates on Finext's wire, and the one ambiguity in its docs.
//!
//! `addAddressProof` documents `address_issued_date` as `YYYY-DD-MM`, `updateAddressProof` as
//! `YYYY-MM-DD`, and the only example (`2023-04-04`) fits both. Guessing wrong would swap day
//! and month for every date up to the 12th — silently, and sometimes still "valid". So
//! frontends always send ISO `YYYY-MM-DD` to docgate, and the format put on the wire is
//! configuration ([`DateFormat`], default ISO) shared by the client and the emulator.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{macros::format_description, Date, OffsetDateTime};

/// How dates are written in the request bodies sent to Finext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DateFormat {
    /// ISO 8601 calendar date, e.g. `2023-04-21` (what `updateAddressProof` documents).
    #[default]
    #[serde(rename = "YYYY-MM-DD")]
    YearMonthDay,
    /// Year, day, month, e.g. `2023-21-04` (what `addAddressProof` documents).
    #[serde(rename = "YYYY-DD-MM")]
    YearDayMonth,
}

impl DateFormat {
    pub fn format(self, date: Date) -> String {
        let (y, m, d) = (date.year(), u8::from(date.month()), date.day());
        match self {
            DateFormat::YearMonthDay => format!("{y:04}-{m:02}-{d:02}"),
            DateFormat::YearDayMonth => format!("{y:04}-{d:02}-{m:02}"),
        }
    }

    /// Parse a wire date in this format (strictly: zero-padded, nothing around it).
    pub fn parse(self, s: &str) -> Option<Date> {
        match self {
            DateFormat::YearMonthDay => {
                Date::parse(s, format_description!("[year]-[month]-[day]")).ok()
            }
            DateFormat::YearDayMonth => {
                Date::parse(s, format_description!("[year]-[day]-[month]")).ok()
            }
        }
    }

    pub fn pattern(self) -> &'static str {
        match self {
            DateFormat::YearMonthDay => "YYYY-MM-DD",
            DateFormat::YearDayMonth => "YYYY-DD-MM",
        }
    }
}

impl fmt::Display for DateFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.pattern())
    }
}

/// The frontends' format, whatever goes on the wire.
pub fn parse_iso(s: &str) -> Option<Date> {
    DateFormat::YearMonthDay.parse(s)
}

/// Today's date in UTC: Finext publishes no time zone, and UTC is what a server would use.
pub fn today_utc() -> Date {
    OffsetDateTime::now_utc().date()
}

/// How old an address document may be, in days (the docs: "not more than 90 days old").
pub const MAX_ADDRESS_DOCUMENT_AGE_DAYS: i64 = 90;

/// Why a date breaks one of Finext's rules, as a sentence for the frontend.
pub fn address_issued_date_problem(issued: Date, today: Date) -> Option<String> {
    let age = (today - issued).whole_days();
    if age < 0 {
        Some(format!("{issued} is in the future"))
    } else if age > MAX_ADDRESS_DOCUMENT_AGE_DAYS {
        Some(format!(
            "{issued} is {age} days old; Finext accepts address documents issued within the last {MAX_ADDRESS_DOCUMENT_AGE_DAYS} days"
        ))
    } else {
        None
    }
}

/// An identity document's issue date must lie before today.
pub fn id_issued_date_problem(issued: Date, today: Date) -> Option<String> {
    (issued >= today).then(|| format!("{issued} is not before today ({today})"))
}

/// An identity document must not have expired: its expiration date lies after today.
pub fn expiration_date_problem(expires: Date, today: Date) -> Option<String> {
    (expires <= today)
        .then(|| format!("{expires} is not after today ({today}): the document has expired"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{macros::date, Duration};

    #[test]
    fn both_formats_round_trip_and_differ_when_the_day_is_small() {
        let d = date!(2023 - 04 - 21);
        assert_eq!(DateFormat::YearMonthDay.format(d), "2023-04-21");
        assert_eq!(DateFormat::YearDayMonth.format(d), "2023-21-04");
        for f in [DateFormat::YearMonthDay, DateFormat::YearDayMonth] {
            assert_eq!(f.parse(&f.format(d)), Some(d));
        }
        // The ambiguity the docs leave: the same text is two different dates.
        let s = "2023-04-05";
        assert_ne!(
            DateFormat::YearMonthDay.parse(s),
            DateFormat::YearDayMonth.parse(s)
        );
        assert_eq!(DateFormat::YearDayMonth.parse("2023-04-21"), None);
    }

    #[test]
    fn parsing_is_strict() {
        assert_eq!(parse_iso("2023-4-5"), None);
        assert_eq!(parse_iso(" 2023-04-05"), None);
        assert_eq!(parse_iso("2023-02-30"), None);
        assert_eq!(parse_iso("2023-04-05T00:00"), None);
    }

    #[test]
    fn config_spelling_is_the_pattern() {
        #[derive(Deserialize)]
        struct C {
            f: DateFormat,
        }
        let c: C = serde_json::from_str(r#"{"f":"YYYY-DD-MM"}"#).expect("parses");
        assert_eq!(c.f, DateFormat::YearDayMonth);
        assert!(serde_json::from_str::<C>(r#"{"f":"DD/MM/YYYY"}"#).is_err());
    }

    #[test]
    fn address_documents_may_be_up_to_90_days_old() {
        let today = date!(2024 - 06 - 30);
        assert_eq!(address_issued_date_problem(today, today), None);
        assert_eq!(
            address_issued_date_problem(today - Duration::days(90), today),
            None
        );
        let old = address_issued_date_problem(today - Duration::days(91), today).expect("too old");
        assert!(old.contains("91 days old"), "{old}");
        assert!(address_issued_date_problem(today + Duration::days(1), today).is_some());
    }

    #[test]
    fn id_dates_bracket_today() {
        let today = date!(2024 - 06 - 30);
        assert!(id_issued_date_problem(today - Duration::days(1), today).is_none());
        assert!(id_issued_date_problem(today, today).is_some());
        assert!(expiration_date_problem(today + Duration::days(1), today).is_none());
        assert!(expiration_date_problem(today, today).is_some());
    }
}
