//! Any bytes as a runner report (JSON), or, when not JSON, as one base64 histogram: decoding
//! must not panic, and what decodes must encode and decode to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_core::protocol::histogram::{decode_histogram, encode_histogram};
use volley_core::protocol::report::Report;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = serde_json::from_slice::<Report>(data) {
        if let Ok(m) = report.to_metrics() {
            let again = Report::from_metrics(report.runner, report.seq, report.elapsed(), report.done, &m)
                .expect("decoded metrics encode");
            assert!(again.to_metrics().expect("re-encoded metrics decode") == m);
        }
    } else if let Ok(text) = std::str::from_utf8(data)
        && let Ok(h) = decode_histogram(text)
    {
        let again = decode_histogram(&encode_histogram(&h).expect("encodes")).expect("decodes");
        assert!(again == h);
    }
});
