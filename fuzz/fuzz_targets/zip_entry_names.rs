//! Entry names come from the uploader and end up as paths wherever the archive is unpacked:
//! a name the check lets through must not climb out, be absolute, or carry separators or
//! control characters; the form shown in errors must be printable and short.
#![no_main]

use docgate_core::archive::{display_name, unsafe_name, NAME_SHOWN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let shown = display_name(raw);
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(shown.chars().count() <= NAME_SHOWN + 1);
    if unsafe_name(raw).is_none() {
        assert!(!raw.is_empty());
        assert!(raw[0] != b'/');
        assert!(!raw.iter().any(|&b| b == b'\\' || b < 0x20 || b == 0x7f));
        assert!(!raw.split(|&b| b == b'/').any(|segment| segment == b".."));
        assert!(!(raw.len() >= 2 && raw[1] == b':' && raw[0].is_ascii_alphabetic()));
    }
});
