//! Sizes in configuration files: a whole number of bytes, or `"256MiB"`, `"16MB"`, `"8KiB"`,
//! `"2GiB"`. Binary (KiB, MiB, GiB) and decimal (KB, MB, GB) units are both accepted because
//! both are written in the wild; a bare `K`/`M`/`G` is refused as ambiguous.

use serde::Deserialize;

/// `#[serde(deserialize_with = "docgate_core::size::deserialize")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a size such as \"16MiB\" or whole bytes")]
    enum Written {
        Bytes(u64),
        Text(String),
    }
    match Written::deserialize(d)? {
        Written::Bytes(n) => Ok(n),
        Written::Text(text) => parse(&text).map_err(serde::de::Error::custom),
    }
}

/// `#[serde(default, deserialize_with = "docgate_core::size::deserialize_opt")]`: a size that
/// may be left out.
pub fn deserialize_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    deserialize(d).map(Some)
}

/// Parse `<integer>[B|KB|MB|GB|KiB|MiB|GiB]` (no unit: bytes).
pub fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let bad = || format!("`{text}` is not a size such as 4096, 8KiB, 256MiB or 1GB");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units_or_plain_bytes() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("8KiB"), Ok(8192));
        assert_eq!(parse("256MiB"), Ok(256 << 20));
        assert_eq!(parse("1GB"), Ok(1_000_000_000));
        assert_eq!(parse(" 2 GiB "), Ok(2 << 30));
        for bad in ["", "MiB", "1.5MiB", "5M", "-1", "99999999999GiB"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_are_bytes_and_strings_are_parsed() {
        #[derive(Deserialize)]
        struct C {
            #[serde(deserialize_with = "deserialize")]
            a: u64,
            #[serde(deserialize_with = "deserialize")]
            b: u64,
        }
        let c: C = serde_json::from_str(r#"{"a": 10, "b": "1KiB"}"#).expect("parses");
        assert_eq!((c.a, c.b), (10, 1024));
    }
}
