//! Servers meant for this machine alone (the sandbox, the emulators on loopback) answer only
//! requests addressed to it.
//!
//! A port on 127.0.0.1 is out of other machines' reach, not of the browser on this one: a
//! page from anywhere can make its own name resolve to 127.0.0.1 ("DNS rebinding") and then
//! read what it asks, as the same origin. Its requests name that page's host in `Host`. The
//! sandbox mints upload sessions without a key and the emulators show what they received, so
//! such requests are refused: only `localhost` (and names under it) and IP literals are
//! addresses a page cannot make its own.

use axum::{extract::Request, middleware::Next, response::Response};

use crate::Problem;

/// True for a `Host` value no other site's page can send: an IP literal, or `localhost` and
/// the names under it (RFC 6761 keeps them on this machine), with or without a port.
pub fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
}

/// A layer for a local-only server: 403 `host_not_local` for a request whose `Host` names
/// anything else. (HTTP/2 carries it as `:authority`, which hyper puts in the URI.)
pub async fn refuse_other_hosts(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        Some(h) if !is_local_host(h) => axum::response::IntoResponse::into_response(
            Problem::new(http::StatusCode::FORBIDDEN, "host_not_local", "Host not local")
                .with_detail("this server answers only requests addressed to this machine (localhost or an IP address)"),
        ),
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::is_local_host;

    #[test]
    fn only_names_a_page_cannot_own_are_local() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "bucket.localhost:9000",
            "[::1]:8080",
            "[::1]",
            "10.0.0.5:80",
        ] {
            assert!(is_local_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1.evil]",
            "",
        ] {
            assert!(!is_local_host(host), "{host}");
        }
    }
}
