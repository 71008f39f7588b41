//! OST signatures cover the canonical nested query. The emulator (and OST) parse what arrives
//! and canonicalise it again, so parsing must never panic and the canonical form must be a
//! fixed point: parse(canonical) canonicalises to the same string, byte for byte.
//!
//! Except for arrays of objects: Rack's `k[][a]` form groups by "a new object starts when a
//! key repeats", and recursive key sorting can regroup objects with different key sets
//! (`[{b},{a,b}]` signs as `k[][b]&k[][a]&k[][b]`, which parses as `[{a,b},{b}]`). That is
//! the format's own ambiguity, shared by OST's SDKs (see the unit test
//! `arrays_of_objects_with_different_keys_regroup_as_in_rack`); docgate never sends such
//! arrays, so those inputs are skipped here.
#![no_main]

use docgate_ost::signing;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn has_array_of_objects(value: &Value) -> bool {
    match value {
        Value::Array(items) => items
            .iter()
            .any(|v| v.is_object() || has_array_of_objects(v)),
        Value::Object(map) => map.values().any(has_array_of_objects),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(params) = signing::parse_nested_query(query) else {
        return;
    };
    if params.values().any(has_array_of_objects) {
        return;
    }
    let canonical = signing::nested_query(&params);
    let reparsed = signing::parse_nested_query(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} does not parse: {e}"));
    assert_eq!(
        signing::nested_query(&reparsed),
        canonical,
        "canonical form of {query:?} is not stable"
    );
});
