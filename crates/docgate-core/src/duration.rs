//! Durations in configuration files: `"250ms"`, `"10s"`, `"5m"`, `"2h"`, `"7d"`, or a whole
//! number of seconds. Every section of `docgate.toml` — the gateway's and each provider's — writes
//! durations this one way.

use std::time::Duration;

use serde::Deserialize;

/// `#[serde(deserialize_with = "docgate_core::duration::deserialize")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "a duration such as \"500ms\", \"90s\", \"5m\", \"1h\" or \"7d\", or whole seconds"
    )]
    enum Written {
        Seconds(u64),
        Text(String),
    }
    match Written::deserialize(d)? {
        Written::Seconds(n) => Ok(Duration::from_secs(n)),
        Written::Text(text) => parse(&text).map_err(serde::de::Error::custom),
    }
}

/// `#[serde(default, deserialize_with = "docgate_core::duration::deserialize_opt")]`.
pub fn deserialize_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

/// Parse `<integer>[ms|s|m|h|d]` (no unit: seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let bad = || format!("`{text}` is not a duration such as 500ms, 90s, 5m, 1h or 7d");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(bad)
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "5 minutes", "-1s", "1.5s", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_are_seconds_and_strings_are_parsed() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "deserialize")]
            d: Duration,
        }
        let n: T = serde_json::from_str(r#"{"d": 12}"#).expect("number");
        assert_eq!(n.d, Duration::from_secs(12));
        let s: T = serde_json::from_str(r#"{"d": "300ms"}"#).expect("string");
        assert_eq!(s.d, Duration::from_millis(300));
        let bad = serde_json::from_str::<T>(r#"{"d": "ten seconds"}"#)
            .err()
            .expect("refused");
        assert!(bad.to_string().contains("not a duration"), "{bad}");
        assert!(serde_json::from_str::<T>(r#"{"d": -1}"#).is_err());
    }

    #[test]
    fn a_negative_or_fractional_number_is_told_what_a_duration_looks_like() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Limits {
            #[serde(deserialize_with = "deserialize")]
            wait: Duration,
        }
        for bad in ["wait = -5", "wait = 1.5"] {
            let e = toml::from_str::<Limits>(bad).expect_err(bad).to_string();
            assert!(e.contains("a duration such as"), "{e}");
            assert!(!e.contains("untagged"), "{e}");
        }
    }
}
