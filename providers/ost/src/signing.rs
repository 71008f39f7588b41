//! OST's request signature: HMAC-SHA256 over a Rack-style nested query string.
//!
//! OST's servers are Rails: they rebuild the string to sign from the *parsed* parameters with
//! ActiveSupport's `to_query`, and its SDKs imitate that. So the signature is not over the bytes
//! on the wire but over a canonical form:
//!
//! ```text
//! Q   = nested_query(params, keys sorted recursively)   files%5Bselfie%5D=image%2Fjpeg&…
//! S   = endpoint + "?" + Q, with every "~" written "%7E" (only in S, never on the wire)
//! sig = hex(HMAC-SHA256(secret, S))
//! ```
//! A client sends `Q&signature=sig` (GET: query string, POST: form body). A server parses the
//! parameters back into a tree ([`parse_nested_query`]), drops `signature`, re-encodes and
//! compares — which is why a verifier must work on the tree and not on the raw string.
//!
//! The escaping is Python's `quote_plus`/Rack's: only `A-Za-z0-9-._~` stay bare, a space is
//! `+`, everything else (UTF-8 bytes) is `%XX` with uppercase hex. `~` stays bare on the wire
//! (as the real SDK sends it) and becomes `%7E` only in the string to sign.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Escape one key or value the way the SDKs do (see the module docs).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The wire form of `params`: keys sorted recursively, arrays as `k[]`, arrays of objects as
/// `k[][a]`, empty arrays and objects left out, `null` and `""` as `k=`.
pub fn nested_query(params: &Map<String, Value>) -> String {
    let mut pairs = Vec::new();
    encode_object(params, None, &mut pairs);
    pairs.join("&")
}

fn encode_object(map: &Map<String, Value>, prefix: Option<&str>, pairs: &mut Vec<String>) {
    // serde_json's Map may keep insertion order (feature `preserve_order`); sort explicitly.
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let name = match prefix {
            Some(p) => format!("{p}[{key}]"),
            None => key.clone(),
        };
        encode_value(&map[key.as_str()], &name, pairs);
    }
}

fn encode_value(value: &Value, name: &str, pairs: &mut Vec<String>) {
    match value {
        Value::Object(map) => encode_object(map, Some(name), pairs),
        Value::Array(items) => {
            let name = format!("{name}[]");
            for item in items {
                encode_value(item, &name, pairs);
            }
        }
        Value::Null => pairs.push(format!("{}=", escape(name))),
        Value::String(s) => pairs.push(format!("{}={}", escape(name), escape(s))),
        // Ruby's to_query writes booleans as `true`/`false` (OST's webhooks are Ruby-made).
        Value::Bool(b) => pairs.push(format!("{}={b}", escape(name))),
        Value::Number(n) => pairs.push(format!("{}={}", escape(name), escape(&n.to_string()))),
    }
}

/// `endpoint?query` with `~` written `%7E`: the exact bytes that are HMAC'd.
pub fn string_to_sign(endpoint: &str, query: &str) -> String {
    format!("{endpoint}?{query}").replace('~', "%7E")
}

/// Hex HMAC-SHA256 of `string_to_sign` under `secret`.
pub fn hmac_hex(secret: &str, string_to_sign: &str) -> String {
    let mut mac = mac_for(secret);
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a hex signature.
pub fn hmac_matches(secret: &str, string_to_sign: &str, signature_hex: &str) -> bool {
    let Ok(expected) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac = mac_for(secret);
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

fn mac_for(secret: &str) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// A signed API request, ready to send: `wire` is the query string (GET) or form body (POST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedParams {
    pub wire: String,
    pub signature: String,
}

/// Sign `params` for `endpoint` (`/api/v2/...`): adds `api_key` and `request_timestamp`.
pub fn sign_request(
    endpoint: &str,
    mut params: Map<String, Value>,
    api_key: &str,
    api_secret: &str,
    timestamp: i64,
) -> SignedParams {
    params.insert("api_key".into(), Value::String(api_key.to_owned()));
    params.insert("request_timestamp".into(), Value::from(timestamp));
    let query = nested_query(&params);
    let signature = hmac_hex(api_secret, &string_to_sign(endpoint, &query));
    let wire = if query.is_empty() {
        format!("signature={signature}")
    } else {
        format!("{query}&signature={signature}")
    };
    SignedParams { wire, signature }
}

/// A query string or form body that is not well-formed nested parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("`{0}` is not valid percent-encoded UTF-8")]
    Encoding(String),
    #[error("parameter `{0}` is used both as a value and as a nested structure")]
    Conflict(String),
    #[error("parameter name `{0}` is malformed")]
    BadName(String),
    #[error("parameters nest deeper than {0} levels")]
    TooDeep(usize),
}

/// Deeper nesting than this is refused (it is only ever an attack on the parser).
const MAX_DEPTH: usize = 8;

/// Undo [`escape`]: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub fn unescape(s: &str) -> Result<String, ParamsError> {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ParamsError::Encoding(s.to_owned()))
}

/// Parse a query string or form body into a parameter tree the way Rack does:
/// `a[b]=1` nests, `a[]=1&a[]=2` is an array, `a[][x]=1&a[][y]=2&a[][x]=3` an array of
/// objects (a new object starts when its first key repeats). Every leaf is a string.
pub fn parse_nested_query(query: &str) -> Result<Map<String, Value>, ParamsError> {
    let mut root = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = unescape(raw_name)?;
        let value = unescape(raw_value)?;
        let path = split_name(&name)?;
        insert_path(&mut root, &path, Value::String(value), &name)?;
    }
    Ok(root)
}

/// One step of a parameter name: `a[b][]` is `Key(a), Key(b), Push`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Push,
}

fn split_name(name: &str) -> Result<Vec<Step>, ParamsError> {
    let bad = || ParamsError::BadName(name.to_owned());
    let (base, mut rest) = match name.find('[') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    if base.is_empty() {
        return Err(bad());
    }
    let mut steps = vec![Step::Key(base.to_owned())];
    while !rest.is_empty() {
        let inner_end = rest.find(']').ok_or_else(bad)?;
        if !rest.starts_with('[') {
            return Err(bad());
        }
        let inner = &rest[1..inner_end];
        steps.push(if inner.is_empty() {
            Step::Push
        } else {
            Step::Key(inner.to_owned())
        });
        rest = &rest[inner_end + 1..];
        if steps.len() > MAX_DEPTH {
            return Err(ParamsError::TooDeep(MAX_DEPTH));
        }
    }
    Ok(steps)
}

fn insert_path(
    map: &mut Map<String, Value>,
    path: &[Step],
    value: Value,
    full: &str,
) -> Result<(), ParamsError> {
    let conflict = || ParamsError::Conflict(full.to_owned());
    let Some((Step::Key(key), rest)) = path.split_first() else {
        return Err(ParamsError::BadName(full.to_owned()));
    };
    match rest.split_first() {
        None => {
            map.insert(key.clone(), value);
            Ok(())
        }
        Some((Step::Key(_), _)) => {
            let child = map
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(child) = child else {
                return Err(conflict());
            };
            insert_path(child, rest, value, full)
        }
        Some((Step::Push, after)) => {
            let child = map
                .entry(key.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(items) = child else {
                return Err(conflict());
            };
            if after.is_empty() {
                items.push(value);
                return Ok(());
            }
            // `k[][a]…`: continue the last object unless it already has this key (then a new
            // object starts) — Rack's rule for arrays of objects.
            if !matches!(after.first(), Some(Step::Key(_))) {
                return Err(ParamsError::BadName(full.to_owned()));
            }
            let continue_last = matches!(
                items.last(),
                Some(Value::Object(last)) if !last_has_leaf(last, after)
            );
            if !continue_last {
                items.push(Value::Object(Map::new()));
            }
            match items.last_mut() {
                Some(Value::Object(last)) => insert_path(last, after, value, full),
                _ => Err(conflict()),
            }
        }
    }
}

/// Whether the object already holds a scalar at the end of `path` (so a new one must start).
fn last_has_leaf(map: &Map<String, Value>, path: &[Step]) -> bool {
    match path {
        [Step::Key(k)] => map.contains_key(k),
        [Step::Key(k), rest @ ..] => match map.get(k) {
            Some(Value::Object(child)) => last_has_leaf(child, rest),
            _ => false,
        },
        _ => false,
    }
}

/// Why a signed API request was refused. `Display` never shows a secret or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("parameter `{0}` is missing")]
    Missing(&'static str),
    #[error("the request parameters are malformed: {0}")]
    Malformed(#[from] ParamsError),
    #[error("unknown api_key")]
    UnknownKey,
    #[error("request_timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("request_timestamp is {skew_secs} s away from the server's clock (allowed: {window_secs} s)")]
    Expired { skew_secs: i64, window_secs: i64 },
    #[error("the signature does not match")]
    BadSignature,
    #[error("`{0}` is not an API path")]
    NotAnApiPath(String),
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedRequest {
    /// The endpoint as signed (`/api/v2/...`).
    pub endpoint: String,
    pub api_key: String,
    pub timestamp: i64,
    /// The parameters without `api_key`, `request_timestamp` and `signature`.
    pub params: Map<String, Value>,
}

/// The endpoint a client signed for a request that arrived at `path`: runs of `/` collapse
/// (the SDK joins `base_url + endpoint`, so a base URL ending in `/` gives `//api/...`) and
/// the server's own `mount` prefix (e.g. `/ost`) is removed. `None` when the rest is not
/// under `/api/`.
pub fn canonical_endpoint(path: &str, mount: &str) -> Option<String> {
    let collapse = |p: &str| {
        let mut out = String::with_capacity(p.len());
        for seg in p.split('/').filter(|s| !s.is_empty()) {
            out.push('/');
            out.push_str(seg);
        }
        out
    };
    let path = collapse(path);
    let mount = collapse(mount);
    let rest = if mount.is_empty() {
        path.as_str()
    } else {
        path.strip_prefix(&mount)?
    };
    (rest.starts_with("/api/")).then(|| rest.to_owned())
}

/// Server side: verify a request that arrived at `path` with the raw query string or form body
/// `raw_params`. `secret_for` maps an api_key to its secret; `window_secs` bounds the distance
/// between `request_timestamp` and `now` (OST: 10 s).
pub fn verify_request(
    path: &str,
    mount: &str,
    raw_params: &str,
    secret_for: impl Fn(&str) -> Option<String>,
    now: i64,
    window_secs: i64,
) -> Result<VerifiedRequest, AuthError> {
    let endpoint =
        canonical_endpoint(path, mount).ok_or_else(|| AuthError::NotAnApiPath(path.to_owned()))?;
    let mut params = parse_nested_query(raw_params)?;
    let signature = match params.remove("signature") {
        Some(Value::String(s)) => s,
        _ => return Err(AuthError::Missing("signature")),
    };
    let api_key = match params.get("api_key") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(AuthError::Missing("api_key")),
    };
    let timestamp = match params.get("request_timestamp") {
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| AuthError::BadTimestamp)?,
        Some(_) => return Err(AuthError::BadTimestamp),
        None => return Err(AuthError::Missing("request_timestamp")),
    };
    let secret = secret_for(&api_key).ok_or(AuthError::UnknownKey)?;
    let expected = string_to_sign(&endpoint, &nested_query(&params));
    if !hmac_matches(&secret, &expected, &signature) {
        return Err(AuthError::BadSignature);
    }
    let skew = now.saturating_sub(timestamp);
    if skew.abs() > window_secs {
        return Err(AuthError::Expired {
            skew_secs: skew,
            window_secs,
        });
    }
    params.remove("api_key");
    params.remove("request_timestamp");
    Ok(VerifiedRequest {
        endpoint,
        api_key,
        timestamp,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn escaping_keeps_only_unreserved_bytes_bare() {
        assert_eq!(escape("a b*c~d-_."), "a+b%2Ac~d-_.");
        assert_eq!(escape("é/+"), "%C3%A9%2F%2B");
    }

    #[test]
    fn empty_containers_are_dropped_and_nulls_are_empty() {
        let q = nested_query(&obj(
            json!({"b": [], "a": {}, "c": null, "d": "", "e": [{"y": 1, "x": 2}]}),
        ));
        assert_eq!(q, "c=&d=&e%5B%5D%5Bx%5D=2&e%5B%5D%5By%5D=1");
    }

    #[test]
    fn parsing_undoes_encoding_including_arrays_of_objects() {
        let original = obj(json!({
            "list": [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}],
            "files": {"selfie": "image/jpeg", "document_id": "application/pdf"},
            "tags": ["x y", "~*"],
            "plain": "v"
        }));
        let parsed = parse_nested_query(&nested_query(&original)).expect("parses");
        assert_eq!(parsed, original);
    }

    /// Found by fuzz/ost_nested_query: objects in an array are told apart only by a repeated
    /// key, and the signed form sorts keys, so objects with different key sets can regroup.
    /// Rack and OST's SDKs behave the same; docgate never sends arrays of objects.
    #[test]
    fn arrays_of_objects_with_different_keys_regroup_as_in_rack() {
        let original = obj(json!({"k": [{"b": "1"}, {"a": "2", "b": "3"}]}));
        let signed = nested_query(&original);
        assert_eq!(signed, "k%5B%5D%5Bb%5D=1&k%5B%5D%5Ba%5D=2&k%5B%5D%5Bb%5D=3");
        let parsed = parse_nested_query(&signed).expect("parses");
        assert_eq!(
            parsed,
            obj(json!({"k": [{"a": "2", "b": "1"}, {"b": "3"}]}))
        );
    }

    #[test]
    fn conflicting_shapes_and_bad_names_are_refused() {
        assert!(matches!(
            parse_nested_query("a=1&a[b]=2"),
            Err(ParamsError::Conflict(_))
        ));
        assert!(matches!(
            parse_nested_query("%5Bx%5D=1"),
            Err(ParamsError::BadName(_))
        ));
        assert!(matches!(
            parse_nested_query("a%5Bb=1"),
            Err(ParamsError::BadName(_))
        ));
        assert!(matches!(
            parse_nested_query("a=%FF"),
            Err(ParamsError::Encoding(_))
        ));
        let deep = format!("a{}=1", "[x]".repeat(20));
        assert!(matches!(
            parse_nested_query(&deep),
            Err(ParamsError::TooDeep(_))
        ));
    }

    #[test]
    fn endpoints_lose_doubled_slashes_and_the_mount_prefix() {
        assert_eq!(
            canonical_endpoint("//api/v2/users", "").as_deref(),
            Some("/api/v2/users")
        );
        assert_eq!(
            canonical_endpoint("/ost//api/v2/users-kyc/1", "/ost/").as_deref(),
            Some("/api/v2/users-kyc/1")
        );
        assert_eq!(canonical_endpoint("/other/api/v2/users", "/ost"), None);
        assert_eq!(canonical_endpoint("/healthz", ""), None);
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let params = obj(json!({"files": {"selfie": "image/png"}}));
        let signed = sign_request("/api/v2/x", params, "key", "secret", 1000);
        let lookup = |k: &str| (k == "key").then(|| "secret".to_owned());
        let ok = verify_request("/api/v2/x", "", &signed.wire, lookup, 1005, 10).expect("valid");
        assert_eq!(ok.params, obj(json!({"files": {"selfie": "image/png"}})));
        assert_eq!(
            verify_request("/api/v2/x", "", &signed.wire, lookup, 1011, 10),
            Err(AuthError::Expired {
                skew_secs: 11,
                window_secs: 10
            })
        );
        let tampered = signed.wire.replace("image%2Fpng", "image%2Fjpeg");
        assert_eq!(
            verify_request("/api/v2/x", "", &tampered, lookup, 1000, 10),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_request("/api/v2/y", "", &signed.wire, lookup, 1000, 10),
            Err(AuthError::BadSignature)
        );
        let other_key = signed.wire.replace("api_key=key", "api_key=nope");
        assert_eq!(
            verify_request("/api/v2/x", "", &other_key, lookup, 1000, 10),
            Err(AuthError::UnknownKey)
        );
    }
}
