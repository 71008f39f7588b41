//! Small parsers of client-supplied text: media ranges and declared types, payto URIs,
//! durations. None may panic; accepted payto URIs must survive a second parse unchanged.
#![no_main]

use docgate_core::{duration, media, MediaRange};
use docgate_taler::payto::Payto;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = media::sniff(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = MediaRange::parse(text);
    let _ = media::normalize_declared(Some(text));
    let _ = duration::parse(text);
    if let Ok(payto) = Payto::parse(text) {
        let again = Payto::parse(payto.as_str()).unwrap_or_else(|e| {
            panic!(
                "{:?} (from {text:?}) does not parse again: {e}",
                payto.as_str()
            )
        });
        assert_eq!(again.as_str(), payto.as_str());
    }
});
