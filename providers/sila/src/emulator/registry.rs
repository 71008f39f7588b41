//! Who may call the emulator: registered app and user handles, and OAuth2 tokens.
//!
//! Sila knows each app handle and each user handle by an Ethereum address (registered via
//! `/register` or `/register_wallet`). A request proves itself by signatures that *recover*
//! to those addresses over the exact `data` bytes — so a signature made with another key, or
//! over a re-serialised message, or with the EIP-191 wallet prefix, recovers some other
//! address and is refused with 403. A missing signature header is 401. In OAuth2 mode the
//! bearer token replaces both signatures; the handles must still be registered.

use std::collections::BTreeMap;

use http::{HeaderMap, StatusCode};

use super::envelope::{failure, Failure};
use crate::signing::{recover_signer, Address};

pub const AUTH_SIGNATURE: &str = "authsignature";
pub const USER_SIGNATURE: &str = "usersignature";

/// Registered handles and tokens.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    apps: BTreeMap<String, Address>,
    users: BTreeMap<String, Address>,
    tokens: Vec<String>,
}

/// How a request authenticated itself (decided from headers alone, before the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Bearer,
    Signatures { app: String, user: Option<String> },
}

impl Registry {
    pub fn new(
        apps: &BTreeMap<String, Address>,
        users: &BTreeMap<String, Address>,
        tokens: &[String],
    ) -> Registry {
        let lower = |m: &BTreeMap<String, Address>| {
            m.iter()
                .map(|(h, a)| (h.trim().to_ascii_lowercase(), *a))
                .collect()
        };
        Registry {
            apps: lower(apps),
            users: lower(users),
            tokens: tokens.to_vec(),
        }
    }

    pub fn apps(&self) -> &BTreeMap<String, Address> {
        &self.apps
    }

    pub fn users(&self) -> &BTreeMap<String, Address> {
        &self.users
    }

    /// Look at the credentials in the headers before reading the body: a request without any
    /// is refused at once (401), as is an unknown bearer token.
    pub fn presented(&self, headers: &HeaderMap, needs_user: bool) -> Result<Presented, Failure> {
        if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .ok_or_else(|| unauthorized("Authorization must be `Bearer <access token>`."))?;
            if self
                .tokens
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
            {
                return Ok(Presented::Bearer);
            }
            return Err(unauthorized("Invalid or expired access token."));
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let app = header(AUTH_SIGNATURE)
            .ok_or_else(|| unauthorized("authsignature header is missing."))?;
        let user = header(USER_SIGNATURE);
        if needs_user && user.is_none() {
            return Err(unauthorized("usersignature header is missing."));
        }
        Ok(Presented::Signatures { app, user })
    }

    /// Check the presented credentials against the handles in the message's header.
    /// `data` is the raw `data` bytes (or the raw JSON body) exactly as received.
    pub fn verify(
        &self,
        presented: &Presented,
        data: &[u8],
        app_handle: &str,
        user_handle: Option<&str>,
    ) -> Result<(), Failure> {
        let app_address = self
            .apps
            .get(&app_handle.to_ascii_lowercase())
            .ok_or_else(|| forbidden("Application handle is not registered."))?;
        let user_address = match user_handle {
            Some(handle) => Some(
                self.users
                    .get(&handle.to_ascii_lowercase())
                    .ok_or_else(|| forbidden("User handle is not registered for this app."))?,
            ),
            None => None,
        };
        let Presented::Signatures { app, user } = presented else {
            return Ok(()); // a valid bearer token vouches for the app and its users
        };
        if recover_signer(data, app).ok().as_ref() != Some(app_address) {
            return Err(forbidden("Failed to authenticate app signature."));
        }
        if let Some(expected) = user_address {
            let signature = user.as_deref().unwrap_or_default();
            if recover_signer(data, signature).ok().as_ref() != Some(expected) {
                return Err(forbidden("Failed to authenticate user signature."));
            }
        }
        Ok(())
    }
}

fn unauthorized(message: &str) -> Failure {
    failure(StatusCode::UNAUTHORIZED, message)
}

fn forbidden(message: &str) -> Failure {
    failure(StatusCode::FORBIDDEN, message)
}

/// Token comparison whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::PrivateKey;

    const APP_KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const USER_KEY: &str = "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f";

    fn registry() -> (Registry, PrivateKey, PrivateKey) {
        let app = PrivateKey::from_hex(APP_KEY).expect("key");
        let user = PrivateKey::from_hex(USER_KEY).expect("key");
        let apps = BTreeMap::from([("App.silamoney.eth".to_string(), app.address())]);
        let users = BTreeMap::from([("user.silamoney.eth".to_string(), user.address())]);
        (
            Registry::new(&apps, &users, &["tok".to_string()]),
            app,
            user,
        )
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn registered_signers_pass_and_swapped_keys_are_forbidden() {
        let (reg, app, user) = registry();
        let data = br#"{"header":{}}"#;
        let good = headers(&[
            (AUTH_SIGNATURE, app.sign(data).expect("sign")),
            (USER_SIGNATURE, user.sign(data).expect("sign")),
        ]);
        let p = reg.presented(&good, true).expect("present");
        assert!(reg
            .verify(&p, data, "app.silamoney.eth", Some("USER.silamoney.eth"))
            .is_ok());
        assert_eq!(
            reg.verify(
                &p,
                b"{\"header\": {}}",
                "app.silamoney.eth",
                Some("user.silamoney.eth")
            )
            .map_err(|f| f.status),
            Err(StatusCode::FORBIDDEN),
            "re-serialised JSON is a different message"
        );
        let swapped = headers(&[
            (AUTH_SIGNATURE, user.sign(data).expect("sign")),
            (USER_SIGNATURE, app.sign(data).expect("sign")),
        ]);
        let p = reg.presented(&swapped, true).expect("present");
        assert_eq!(
            reg.verify(&p, data, "app.silamoney.eth", Some("user.silamoney.eth"))
                .map_err(|f| f.status),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            reg.verify(&p, data, "nobody.silamoney.eth", None)
                .map_err(|f| f.status),
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn missing_credentials_are_401_before_the_body_is_read() {
        let (reg, app, _) = registry();
        let only_app = headers(&[(AUTH_SIGNATURE, app.sign(b"x").expect("sign"))]);
        assert_eq!(
            reg.presented(&only_app, true).map_err(|f| f.status),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert!(reg.presented(&only_app, false).is_ok());
        assert_eq!(
            reg.presented(&HeaderMap::new(), false)
                .map_err(|f| f.status),
            Err(StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let (reg, _, _) = registry();
        let ok = headers(&[("authorization", "Bearer tok".to_string())]);
        assert_eq!(reg.presented(&ok, true).expect("ok"), Presented::Bearer);
        assert!(reg
            .verify(
                &Presented::Bearer,
                b"{}",
                "app.silamoney.eth",
                Some("user.silamoney.eth")
            )
            .is_ok());
        let bad = headers(&[("authorization", "Bearer tok2".to_string())]);
        assert_eq!(
            reg.presented(&bad, true).map_err(|f| f.status),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            reg.verify(
                &Presented::Bearer,
                b"{}",
                "app.silamoney.eth",
                Some("stranger")
            )
            .map_err(|f| f.status),
            Err(StatusCode::FORBIDDEN),
            "a token does not register users"
        );
    }
}
