//! The provider table: every provider this build of docgate offers, in one list.
//!
//! The server builds its providers from this table (`[providers.<name>]` sections), the
//! sandbox starts each entry's emulator, `docgate emulate <name>` looks names up here, and
//! `GET /v1/providers` lists what the tenant may use. Adding a provider: write its crate (a
//! `Provider`, optionally an emulator behind its `emulator` feature, and one
//! `REGISTRATION`), then add one line below (and its dependency in Cargo.toml).

#![forbid(unsafe_code)]

use docgate_core::Registration;

/// Every provider, in the order the sandbox lists them.
pub static ALL: &[&Registration] = &[
    &docgate_taler::REGISTRATION,
    &docgate_sila::REGISTRATION,
    &docgate_finext::REGISTRATION,
    &docgate_ost::REGISTRATION,
];

/// The provider called `name`.
pub fn find(name: &str) -> Option<&'static Registration> {
    ALL.iter().copied().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lowercase() {
        let mut names: Vec<&str> = ALL.iter().map(|r| r.name).collect();
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_lowercase())));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
