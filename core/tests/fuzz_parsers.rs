//! Property-based fuzzing of the three parsers that read untrusted input: the manifest parser
//! (YAML from users), the threshold parser (expressions from users) and the report decoder
//! (JSON and base64 histograms from runner pods).
//!
//! `cargo fuzz` needs a nightly compiler for its default sanitizer, so CI runs this instead
//! (the coverage-guided targets live in `fuzz/`, runnable on stable with `-s none`). Inputs
//! start from real data and are mutated: the manifest corpus (`tests/manifests/`, the
//! examples), grammar-guided near-miss thresholds, and reports and histograms encoded by
//! Volley itself, damaged at the base64, the zlib and the HdrHistogram layer.
//!
//! Every case must finish without a panic within [`CASE_LIMIT`], and whatever parses must
//! round-trip: a manifest through YAML and through the API server's JSON, a threshold through
//! its canonical text, a histogram through its encoding.
//!
//! The default case counts keep the whole file to a few seconds (the CI smoke fuzz). For a
//! longer local run set `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=20000 cargo test -p volley-core --release --test fuzz_parsers`.
//! A failure is shrunk to a minimal input and saved under `proptest-regressions/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use volley_core::manifest::{ManifestError, parse_manifest, parse_manifest_bytes};
use volley_core::metrics::histogram::{
    LATENCY_HIGH_US, MAX_HISTOGRAM_COUNT, new_latency_histogram, record_latency,
};
use volley_core::metrics::model::RunMetrics;
use volley_core::protocol::histogram::{decode_histogram, encode_histogram};
use volley_core::protocol::report::Report;
use volley_core::threshold::parse_threshold;
use volley_core::validate::{validate, validate_for_cluster};
use volley_crds::LoadTest;

/// Longest one case may take (a debug build on a busy CI machine).
const CASE_LIMIT: Duration = Duration::from_secs(10);

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        // Shrinking re-runs slow cases many times; a few hundred steps find a small input.
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

/// Runs `f` on its own thread; a panic or a run past [`CASE_LIMIT`] fails the case.
fn bounded<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, TestCaseError> + Send + 'static,
) -> Result<T, TestCaseError> {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "{what}: still running after {:?}",
            started.elapsed()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let why = handle
                .join()
                .err()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                })
                .unwrap_or_default();
            Err(TestCaseError::fail(format!("{what}: panicked: {why}")))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// The seed corpus: every valid manifest, the examples, and the small invalid ones.
fn manifest_seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = Vec::new();
    for dir in [
        root.join("tests/manifests/valid"),
        root.join("tests/manifests/invalid"),
        root.join("../examples"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).unwrap();
            if bytes.len() < 64 * 1024 {
                seeds.push(bytes);
            }
        }
    }
    assert!(
        seeds.len() > 40,
        "the seed corpus shrank to {}",
        seeds.len()
    );
    seeds
}

/// Fragments spliced into manifests: YAML syntax, hostile scalars, template syntax.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ",",
    ": ",
    "- ",
    "\n",
    "  ",
    "\t",
    "&a ",
    "*a",
    "!!str ",
    "!Tag ",
    "\"",
    "'",
    " #",
    "${",
    "}",
    "${env:X}",
    "${env:VOLLEY_TOKEN}",
    "${setup.x}",
    "${a.b}",
    "$${",
    "${uuid}",
    "\0",
    "\u{feff}",
    "\r\n",
    "-1",
    "1e300",
    "18446744073709551616",
    ".nan",
    "~",
    "null",
    "true",
    "0s",
    "-5s",
    "99999999999999999999d",
    "p(95) < ",
    "%",
    "µs",
    "? ",
    "<<: ",
    "---\n",
    "...\n",
    "0x10",
    "|\n",
    ">-\n",
    "\u{85}",
    "\u{2028}",
    "é",
    "\\",
    "\\u0000",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte (may leave invalid UTF-8).
    Flip(usize, u8),
    /// Insert one of [`TOKENS`].
    Insert(usize, usize),
    /// Delete a short range.
    Delete(usize, usize),
    /// Repeat the line around a position.
    DuplicateLine(usize),
    /// Swap the lines at two positions.
    SwapLines(usize, usize),
    /// Cut the file.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>();
    prop_oneof![
        (pos, 1u8..).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (pos, 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Insert(p, t)),
        (pos, 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        pos.prop_map(Mutation::DuplicateLine),
        (pos, pos).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        pos.prop_map(Mutation::Truncate),
    ]
}

fn line_bounds(b: &[u8], pos: usize) -> (usize, usize) {
    let start = b[..pos]
        .iter()
        .rposition(|c| *c == b'\n')
        .map_or(0, |i| i + 1);
    let end = b[pos..]
        .iter()
        .position(|c| *c == b'\n')
        .map_or(b.len(), |i| pos + i + 1);
    (start, end)
}

fn mutate(mut b: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match *m {
            Mutation::Flip(p, x) if !b.is_empty() => {
                let i = p % b.len();
                b[i] ^= x;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(p, t) => {
                let i = at(p, b.len());
                b.splice(i..i, TOKENS[t].bytes());
            }
            Mutation::Delete(p, n) => {
                let i = at(p, b.len());
                let j = (i + n).min(b.len());
                b.drain(i..j);
            }
            Mutation::DuplicateLine(p) => {
                let (s, e) = line_bounds(&b, at(p, b.len()));
                let line = b[s..e].to_vec();
                b.splice(e..e, line);
            }
            Mutation::SwapLines(p, q) => {
                let (s1, e1) = line_bounds(&b, at(p, b.len()));
                let (s2, e2) = line_bounds(&b, at(q, b.len()));
                if e1 <= s2 {
                    let second = b[s2..e2].to_vec();
                    let first = b[s1..e1].to_vec();
                    b.splice(s2..e2, first);
                    b.splice(s1..e1, second);
                }
            }
            Mutation::Truncate(p) => b.truncate(at(p, b.len())),
        }
    }
    b
}

fn manifest_errors(e: &ManifestError) -> Vec<String> {
    match e {
        ManifestError::UnknownFields(f) => f.clone(),
        e => vec![e.to_string()],
    }
}

/// Parses, validates and round-trips one manifest; errors must be short.
fn check_manifest(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    bounded("manifest", move || {
        let lt = match parse_manifest_bytes(&bytes) {
            Err(e) => {
                for msg in manifest_errors(&e) {
                    prop_assert!(msg.len() < 2_000, "an error of {} bytes", msg.len());
                }
                return Ok(());
            }
            Ok(lt) => lt,
        };
        if let Err(errors) = validate(&lt.spec) {
            prop_assert!(errors.len() <= volley_core::validate::MAX_ERRORS + 1);
            for e in &errors {
                prop_assert!(e.to_string().len() < 2_000, "{e}");
            }
        }
        if let Err(errors) = validate_for_cluster(&lt.spec) {
            prop_assert!(errors.len() <= volley_core::validate::MAX_ERRORS + 1);
        }
        // Through YAML again, as `kubectl get -o yaml` would print it.
        let yaml = serde_norway::to_string(&lt).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match parse_manifest(&yaml) {
            Ok(again) => {
                prop_assert_eq!(&again.spec, &lt.spec, "YAML round trip:\n{}", yaml);
                prop_assert_eq!(&again.metadata, &lt.metadata, "YAML round trip:\n{}", yaml);
            }
            Err(e) => prop_assert!(false, "the printed manifest does not parse: {e}\n{yaml}"),
        }
        // Through JSON, as the API server hands it to the operator.
        let json = serde_json::to_string(&lt).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let seen: LoadTest =
            serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&seen.spec, &lt.spec, "JSON round trip: {}", json);
        prop_assert_eq!(&seen.metadata, &lt.metadata, "JSON round trip: {}", json);
        Ok(())
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_manifests_never_panic_or_hang(
        seed in prop::sample::select(manifest_seeds()),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        check_manifest(mutate(seed, &mutations))?;
    }

    #[test]
    fn arbitrary_bytes_as_manifests(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_manifest(bytes)?;
    }

    #[test]
    fn arbitrary_yaml_like_text(
        text in prop::collection::vec(prop::sample::select(TOKENS), 0..64)
            .prop_map(|t| format!("apiVersion: volley.dev/v1alpha1\nkind: LoadTest\n{}", t.concat()))
    ) {
        check_manifest(text.into_bytes())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Thresholds
// ---------------------------------------------------------------------------------------------

/// Metric spellings: right, and the mistakes people make.
const METRICS: &[&str] = &[
    "p(95)",
    "p(99.9)",
    "p(0)",
    "p(100)",
    "p(101)",
    "p(-1)",
    "p()",
    "p(",
    "p95",
    "p(95",
    "p 95",
    "p(1e2)",
    "p(.5)",
    "avg",
    "med",
    "min",
    "max",
    "mean",
    "error_rate",
    "err_rate",
    "checks",
    "rps",
    "requests",
    "iterations",
    "dropped_iterations",
    "P(95)",
    "p(९५)",
    "",
];
const OPERATORS: &[&str] = &[
    "<", "<=", ">", ">=", "==", "=", "=<", "!=", "≤", "<<", "", "< =",
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "500",
    "0.5",
    ".5",
    "1.",
    "00",
    "1e3",
    "-1",
    "+1",
    "NaN",
    "inf",
    "1,5",
    "18446744073709551616",
    "0.000000000000000000001",
    "99999999999999999999999999999999999",
    "",
];
const UNITS: &[&str] = &[
    "", "ms", "s", "m", "us", "µs", "%", "h", "d", "parsecs", " ms", "%%",
];

fn near_miss_threshold() -> impl Strategy<Value = String> {
    (
        prop::sample::select(METRICS),
        prop::sample::select(OPERATORS),
        prop::sample::select(NUMBERS),
        prop::sample::select(UNITS),
        prop::sample::select(&["", " ", "  ", "\t"][..]),
        any::<bool>(),
    )
        .prop_map(|(m, o, n, u, ws, trailing)| {
            format!(
                "{m}{ws}{o}{ws}{n}{u}{}",
                if trailing { " extra" } else { "" }
            )
        })
}

fn check_threshold(text: String) -> Result<(), TestCaseError> {
    bounded("threshold", move || {
        match parse_threshold(&text) {
            Ok(t) => {
                // The canonical text parses back to the same threshold.
                let canonical = t.to_string();
                let again = parse_threshold(&canonical)
                    .map_err(|e| TestCaseError::fail(format!("{canonical:?}: {e}")))?;
                prop_assert_eq!(&again.subject, &t.subject, "{}", canonical);
                prop_assert_eq!(again.metric, t.metric, "{}", canonical);
                prop_assert_eq!(again.comparison, t.comparison, "{}", canonical);
                prop_assert_eq!(again.value.to_bits(), t.value.to_bits(), "{}", canonical);
                let _ = t.format_value(t.value);
            }
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                prop_assert!(e.position <= text.chars().count() + 1);
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_threshold_text(text in "\\PC{0,40}") {
        check_threshold(text)?;
    }

    #[test]
    fn near_miss_thresholds(text in near_miss_threshold()) {
        check_threshold(text)?;
    }

    #[test]
    fn mutated_thresholds(
        text in near_miss_threshold(),
        cut in any::<usize>(),
        insert in "\\PC{0,4}",
    ) {
        let chars: Vec<char> = text.chars().collect();
        let at = cut % (chars.len() + 1);
        let mutated: String = chars[..at].iter().copied().chain(insert.chars()).chain(chars[at..].iter().copied()).collect();
        check_threshold(mutated)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Reports and histograms
// ---------------------------------------------------------------------------------------------

fn histogram_of(latencies_us: &[u64]) -> hdrhistogram::Histogram<u64> {
    let mut h = new_latency_histogram();
    for us in latencies_us {
        record_latency(&mut h, Duration::from_micros(*us));
    }
    h
}

fn latencies() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![0u64..10_000, 0u64..=2 * LATENCY_HIGH_US, Just(u64::MAX)],
        0..64,
    )
}

#[derive(Clone, Debug)]
enum Damage {
    /// Change one base64 character.
    Text(usize, char),
    /// XOR one byte of the decoded envelope (cookie, length or zlib stream).
    Envelope(usize, u8),
    /// XOR one byte of the inflated HdrHistogram V2 data, then compress it again.
    Inner(usize, u8),
    /// Cut the inflated data, then compress it again.
    InnerTruncate(usize),
    /// Append bytes to the inflated data (bigger counts), then compress it again.
    InnerExtend(Vec<u8>),
    /// Cut the envelope.
    Truncate(usize),
    /// Append bytes to the envelope.
    Extend(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (
            any::<usize>(),
            prop::sample::select(&['A', '/', '+', '=', '!', 'z'][..])
        )
            .prop_map(|(p, c)| Damage::Text(p, c)),
        (any::<usize>(), 1u8..).prop_map(|(p, x)| Damage::Envelope(p, x)),
        (any::<usize>(), 1u8..).prop_map(|(p, x)| Damage::Inner(p, x)),
        (0usize..64).prop_map(Damage::InnerTruncate),
        prop::collection::vec(any::<u8>(), 1..32).prop_map(Damage::InnerExtend),
        any::<usize>().prop_map(Damage::Truncate),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Damage::Extend),
    ]
}

/// Rewraps V2 bytes in Volley's envelope: compressed cookie, stream length, zlib stream.
fn envelope(inner: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(inner).unwrap();
    let stream = z.finish().unwrap();
    let mut out = 0x1c84_9314u32.to_be_bytes().to_vec();
    out.extend((stream.len() as u32).to_be_bytes());
    out.extend(stream);
    out
}

fn apply_damage(encoded: &str, d: &Damage) -> String {
    let mut bytes = BASE64.decode(encoded).unwrap();
    let inner = || {
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&bytes[8..])
            .read_to_end(&mut raw)
            .unwrap();
        raw
    };
    match d {
        Damage::Text(p, c) => {
            let mut chars: Vec<char> = encoded.chars().collect();
            if let Some(i) = index(*p, chars.len()) {
                chars[i] = *c;
            }
            return chars.into_iter().collect();
        }
        Damage::Envelope(p, x) => {
            if let Some(i) = index(*p, bytes.len()) {
                bytes[i] ^= x;
            }
        }
        Damage::Inner(p, x) => {
            let mut raw = inner();
            if let Some(i) = index(*p, raw.len()) {
                raw[i] ^= x;
            }
            bytes = envelope(&raw);
        }
        Damage::InnerTruncate(n) => {
            let mut raw = inner();
            raw.truncate(raw.len().saturating_sub(*n));
            bytes = envelope(&raw);
        }
        Damage::InnerExtend(extra) => {
            let mut raw = inner();
            raw.extend(extra);
            bytes = envelope(&raw);
        }
        Damage::Truncate(p) => bytes.truncate(p % (bytes.len() + 1)),
        Damage::Extend(extra) => bytes.extend(extra),
    }
    BASE64.encode(bytes)
}

/// `p` as an index into `len` items, if there are any.
fn index(p: usize, len: usize) -> Option<usize> {
    (len > 0).then(|| p % len)
}

/// Decodes `text`; whatever decodes must be a sane latency histogram that round-trips.
fn check_histogram_text(text: String) -> Result<(), TestCaseError> {
    bounded("histogram", move || {
        if let Ok(h) = decode_histogram(&text) {
            prop_assert!(h.len() <= MAX_HISTOGRAM_COUNT);
            if !h.is_empty() {
                prop_assert!(h.max() <= h.highest_equivalent(LATENCY_HIGH_US));
                prop_assert!(h.min() >= 1);
            }
            let again = decode_histogram(&encode_histogram(&h).unwrap()).unwrap();
            prop_assert!(again == h, "a decoded histogram does not round-trip");
        }
        Ok(())
    })
}

const MINIMAL: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: fuzz}
spec:
  target: {baseUrl: "http://127.0.0.1:8080"}
  scenarios:
    - name: s
      executor: constant-vus
      vus: 1
      duration: 1s
      steps: [{name: a, request: {url: /a}}, {name: b, request: {url: /b}}]
"#;

fn report_of(latencies_us: &[u64], seq: u64) -> (RunMetrics, Report) {
    let lt = parse_manifest(MINIMAL).unwrap();
    let mut m = RunMetrics::for_spec(&lt.spec);
    let scenario = m
        .scenarios
        .iter()
        .position(|s| s.name == "s")
        .expect("the scenario");
    for (i, us) in latencies_us.iter().enumerate() {
        let step = m.step_mut(scenario, i % 2).expect("a step");
        record_latency(&mut step.latency, Duration::from_micros(*us));
        record_latency(&mut step.latency_sent, Duration::from_micros(*us / 2));
        step.counters.requests += 1;
    }
    let report = Report::from_metrics(1, seq, Duration::from_secs(3), false, &m).unwrap();
    (m, report)
}

/// Edits to a report's JSON tree.
const JSON_VALUES: &[&str] = &[
    "-1",
    "1e300",
    "18446744073709551616",
    "null",
    "\"\"",
    "[]",
    "{}",
    "\"AAAA\"",
    "true",
    "\"HIST\"",
];

fn check_report_bytes(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    bounded("report", move || {
        let Ok(report) = serde_json::from_slice::<Report>(&bytes) else {
            return Ok(());
        };
        if let Ok(decoded) = report.to_metrics() {
            // The aggregator merges what decodes; that must not panic either.
            let lt = parse_manifest(MINIMAL).unwrap();
            let mut total = RunMetrics::for_spec(&lt.spec);
            let _ = total.merge(&decoded);
            // And it encodes back to a report that decodes to the same metrics.
            let again = Report::from_metrics(
                report.runner,
                report.seq,
                report.elapsed(),
                report.done,
                &decoded,
            )
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(again.to_metrics().unwrap() == decoded);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn real_histograms_round_trip(us in latencies()) {
        let h = histogram_of(&us);
        let text = encode_histogram(&h).unwrap();
        let back = decode_histogram(&text).unwrap();
        prop_assert!(back == h);
    }

    #[test]
    fn damaged_histograms_never_panic(us in latencies(), damages in prop::collection::vec(damage(), 1..4)) {
        let mut text = encode_histogram(&histogram_of(&us)).unwrap();
        for d in &damages {
            // Later damage needs an envelope it can open; stop once there is none.
            let Ok(bytes) = BASE64.decode(&text) else { break };
            if bytes.len() < 8
                || flate2::read::ZlibDecoder::new(&bytes[8..]).read_to_end(&mut Vec::new()).is_err()
            {
                break;
            }
            text = apply_damage(&text, d);
        }
        check_histogram_text(text)?;
    }

    #[test]
    fn arbitrary_histogram_text(text in "[A-Za-z0-9+/=]{0,200}") {
        check_histogram_text(text)?;
    }

    #[test]
    fn reports_round_trip(us in latencies(), seq in any::<u64>()) {
        let (m, report) = report_of(&us, seq);
        let json = serde_json::to_vec(&report).unwrap();
        let back: Report = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(&back, &report);
        prop_assert!(back.to_metrics().unwrap() == m);
    }

    #[test]
    fn mutated_report_json_never_panics(
        us in latencies(),
        mutations in prop::collection::vec(mutation(), 0..6),
        edits in prop::collection::vec((any::<usize>(), 0..JSON_VALUES.len(), any::<usize>()), 0..4),
        damage in damage(),
    ) {
        let (_, report) = report_of(&us, 7);
        let damaged = apply_damage(&report.scenarios[0].steps[0].latency, &damage);
        let mut tree = serde_json::to_value(&report).unwrap();
        // Replace some leaves (numbers, histogram strings) with hostile values.
        for (pick, value, hist) in edits {
            let mut leaves = Vec::new();
            collect_leaves(&mut tree, &mut leaves);
            if leaves.is_empty() {
                break;
            }
            let text = JSON_VALUES[value].replace("HIST", if hist % 2 == 0 { &damaged } else { "" });
            let n = leaves.len();
            *leaves[pick % n] = serde_json::from_str(&text).unwrap();
        }
        let bytes = mutate(serde_json::to_vec(&tree).unwrap(), &mutations);
        check_report_bytes(bytes)?;
    }

    #[test]
    fn reports_with_many_steps_are_refused(copies in 100usize..700) {
        let (_, mut report) = report_of(&[1_000, 2_000], 1);
        let step = report.scenarios[0].steps[0].clone();
        report.scenarios[0].steps = vec![step; copies];
        let result = report.to_metrics();
        prop_assert_eq!(result.is_err(), copies > volley_core::protocol::report::MAX_REPORT_STEPS);
    }
}

fn collect_leaves<'a>(v: &'a mut serde_json::Value, out: &mut Vec<&'a mut serde_json::Value>) {
    match v {
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| collect_leaves(i, out)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|i| collect_leaves(i, out)),
        leaf => out.push(leaf),
    }
}
