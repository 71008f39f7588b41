//! Small helpers every provider client needs when reading a provider's answer.

use std::time::Duration;

/// `Retry-After` as delay-seconds (the HTTP-date form is rare from APIs and is ignored).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// At most this much of a provider's error body is read and kept.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// Read at most `limit` bytes of a body stream (e.g. `reqwest::Response::bytes_stream()`),
/// dropping the rest: a provider's answer is for summaries and parsing, and a misbehaving
/// peer must not make the gateway buffer an unbounded body.
pub async fn read_bounded<S, E>(mut body: S, limit: usize) -> Result<Vec<u8>, E>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// A short, single-line summary of a provider's answer for problems and the ledger.
pub fn summarize_body(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MAX {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("7"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn read_bounded_stops_at_the_limit() {
        let chunks = (0..100)
            .map(|_| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![7u8; 1000])));
        let body = futures_util::stream::iter(chunks);
        assert_eq!(read_bounded(body, 2500).await.map(|v| v.len()), Ok(2500));
        let short = futures_util::stream::iter(vec![Ok::<_, std::convert::Infallible>(
            bytes::Bytes::from_static(b"ok"),
        )]);
        assert_eq!(read_bounded(short, 2500).await, Ok(b"ok".to_vec()));
    }

    #[test]
    fn summaries_are_one_short_line() {
        assert_eq!(summarize_body(b"{\n  \"a\": 1\n}"), "{ \"a\": 1 }");
        assert!(summarize_body(&[b'x'; 1000]).chars().count() <= 301);
    }
}

/// A configured URL as it may be shown in messages: any `user:password@` in it replaced by
/// `***@` (a URL that does not parse is scrubbed as text, since that is exactly when it is
/// shown).
pub fn shown_url(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod shown_url_tests {
    use super::shown_url;

    #[test]
    fn credentials_in_a_url_are_not_shown() {
        assert_eq!(
            shown_url("http://user:TALERURLPASS@ex.example/path"),
            "http://***@ex.example/path"
        );
        assert_eq!(
            shown_url("https://a:b@c@h:1/?q=x@y"),
            "https://***@h:1/?q=x@y"
        );
        assert_eq!(
            shown_url("https://ex.example/p@th"),
            "https://ex.example/p@th"
        );
        assert_eq!(shown_url("not a url"), "not a url");
    }
}
