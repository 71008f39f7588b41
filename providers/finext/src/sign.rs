//! Finext's request signature and the two values that make every attempt unique.
//!
//! Every Finext call carries `sign` = lowercase hex MD5 of `api_key + username + timestamp +
//! secret + request_id`, concatenated without separators. MD5 is weak, so the scheme leans on
//! the other two inputs: the `timestamp` (13-digit milliseconds) is only accepted within ±30 s
//! and the `request_id` may never be used twice. That is why a retry must never resend an old
//! body: each attempt gets a fresh [`request_id`] and [`timestamp_ms`], and is signed anew.

use md5::{Digest, Md5};

/// The lowercase hex MD5 signature of one request.
pub fn sign(
    api_key: &str,
    username: &str,
    timestamp: &str,
    secret: &str,
    request_id: &str,
) -> String {
    let mut md5 = Md5::new();
    for part in [api_key, username, timestamp, secret, request_id] {
        md5.update(part.as_bytes());
    }
    hex::encode(md5.finalize())
}

/// A fresh request id: 32 lowercase hex characters (the shape of the docs' examples), well
/// inside Finext's 20–64 character rule and random enough never to repeat.
pub fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Now, as Finext's 13-digit millisecond timestamp.
pub fn timestamp_ms() -> String {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000).to_string()
}

/// Constant-time equality for secrets and signatures: a receiver must not reveal through its
/// timing how many leading characters of a forged value were right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const API_KEY: &str = "fd01a53d7834b06c080cd1024ae9c60a";
    const SECRET: &str = "16388ce4331b35e8e0d32777ba57d7d9";

    #[test]
    fn add_address_proof_vector_from_the_docs() {
        assert_eq!(
            sign(
                API_KEY,
                "lili111",
                "1682073075988",
                SECRET,
                "45242f41f20b456092d1b48caa76ce13"
            ),
            "aeb294ad0e59e34dfae4885b26b848ee"
        );
    }

    #[test]
    fn update_mailing_address_vector_from_the_docs() {
        assert_eq!(
            sign(
                API_KEY,
                "lili1",
                "1682072257009",
                SECRET,
                "5737eb4809b846e48ad15d4b8f97d98c"
            ),
            "6f411a001e7a15802acc4a8d6b2d51e5"
        );
    }

    #[test]
    fn get_address_kyc_status_vector_from_the_docs() {
        assert_eq!(
            sign(
                API_KEY,
                "lili111",
                "1682074028258",
                SECRET,
                "48dde322bf7a4ea7bf928a2996744840"
            ),
            "400407149060322023134bb9070274ef"
        );
    }

    #[test]
    fn the_order_of_the_inputs_matters() {
        // Swapping timestamp and request_id must change the signature: the order is the scheme.
        assert_ne!(
            sign(
                API_KEY,
                "lili111",
                "45242f41f20b456092d1b48caa76ce13",
                SECRET,
                "1682073075988"
            ),
            "aeb294ad0e59e34dfae4885b26b848ee"
        );
    }

    #[test]
    fn request_ids_are_32_lowercase_hex_and_do_not_repeat() {
        let a = request_id();
        let b = request_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn timestamps_have_13_digits() {
        let t = timestamp_ms();
        assert_eq!(t.len(), 13, "{t}");
        assert!(t.bytes().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
