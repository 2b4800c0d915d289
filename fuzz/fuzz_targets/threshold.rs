//! Any text as a threshold: no panic, and what parses round-trips through its canonical text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_core::threshold::parse_threshold;

fuzz_target!(|text: &str| {
    if let Ok(t) = parse_threshold(text) {
        let again = parse_threshold(&t.to_string()).expect("the canonical text parses");
        assert_eq!(again.subject, t.subject);
        assert_eq!(again.metric, t.metric);
        assert_eq!(again.comparison, t.comparison);
        assert_eq!(again.value.to_bits(), t.value.to_bits());
    }
});
