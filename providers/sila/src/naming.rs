//! Names docgate derives for Sila: the per-file `filename` and the multi-upload labels.
//!
//! Frontends send whatever the user's browser had: `C:\Users\ann\Scan 2024 (1).PDF`,
//! names in any script, empty names. Sila wants `filename` *without* extension and at most
//! 100 characters, and labels that are both multipart part names and JSON keys. Sanitising
//! here keeps everything the user would recognise (letters and digits of any script) and
//! replaces what could confuse a header or a path.

/// Sila's limit on `filename` (and on `name`).
pub const MAX_FILENAME_CHARS: usize = 100;

/// `filename` for Sila: the last path component, without its extension, with anything but
/// letters, digits, `-`, `_` and `.` turned into `_`, at most 100 characters. Falls back to
/// `fallback` (the slot name) when nothing usable is left.
pub fn sila_filename(original: Option<&str>, fallback: &str) -> String {
    let cleaned = original.map(clean_stem).unwrap_or_default();
    if cleaned.is_empty() {
        clean_stem(fallback)
    } else {
        cleaned
    }
}

fn clean_stem(original: &str) -> String {
    let last = original
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(original)
        .trim();
    let stem = match last.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() && !ext.contains(' ') => stem,
        _ => last,
    };
    let mut out = String::with_capacity(stem.len());
    for c in stem.chars() {
        let keep = c.is_alphanumeric() || matches!(c, '-' | '_' | '.');
        let c = if keep { c } else { '_' };
        // Collapse runs of replacements: "Scan 2024 (1)" → "Scan_2024_1".
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_matches(|c| c == '_' || c == '.');
    trimmed.chars().take(MAX_FILENAME_CHARS).collect()
}

/// A multipart label: ASCII letters, digits, `_` and `-` only (the gateway's free-slot names
/// already are; this guards the invariant for anything else), never empty.
pub fn label(slot: &str) -> String {
    let out: String = slot
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if out.is_empty() {
        "file".to_owned()
    } else {
        out
    }
}

/// The part's `filename="…"` attribute: ASCII only so no header quoting rules apply. Sila
/// ignores it (the JSON `filename` is what counts), but some proxies log it.
pub fn part_filename(stem: &str, extension: Option<&str>) -> String {
    let ascii: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match extension {
        Some(ext) => format!("{ascii}.{ext}"),
        None => ascii,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_paths_extensions_and_unsafe_characters() {
        assert_eq!(sila_filename(Some("red1x1.png"), "file"), "red1x1");
        assert_eq!(
            sila_filename(Some(r"C:\Users\ann\Scan 2024 (1).PDF"), "front"),
            "Scan_2024_1"
        );
        assert_eq!(
            sila_filename(Some("/tmp/a/b/scan.final.pdf"), "x"),
            "scan.final"
        );
        assert_eq!(sila_filename(Some("Führerschein.jpg"), "x"), "Führerschein");
        assert_eq!(sila_filename(Some(".hidden"), "x"), "hidden");
        assert_eq!(sila_filename(Some("no extension"), "x"), "no_extension");
    }

    #[test]
    fn empty_or_hostile_names_fall_back_to_the_slot() {
        assert_eq!(sila_filename(None, "front"), "front");
        assert_eq!(sila_filename(Some(""), "back"), "back");
        assert_eq!(sila_filename(Some("../../"), "back"), "back");
        assert_eq!(sila_filename(Some("\"';<>.pdf"), "selfie"), "selfie");
    }

    #[test]
    fn filenames_are_capped_at_100_characters_not_bytes() {
        let long = format!("{}.pdf", "ä".repeat(150));
        let name = sila_filename(Some(&long), "x");
        assert_eq!(name.chars().count(), MAX_FILENAME_CHARS);
    }

    #[test]
    fn labels_and_part_filenames_are_ascii() {
        assert_eq!(label("front"), "front");
        assert_eq!(label("a b/c"), "a_b_c");
        assert_eq!(label(""), "file");
        assert_eq!(
            part_filename("Führerschein", Some("jpg")),
            "F_hrerschein.jpg"
        );
    }
}
