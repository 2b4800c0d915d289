//! Test data shared by the metrics, threshold evaluation and report codec tests: a
//! deterministic generator, a small spec, and recording helpers.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::histogram::{new_latency_histogram, record_latency};
use crate::metrics::model::Measurements;
use volley_crds::spec::{ErrorKind, LoadTestSpec, Request, Scenario, Sleep, Step};

/// A small deterministic generator (splitmix64), so tests need no RNG crate.
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-normal: median `median_us`, shape `sigma`.
    pub(crate) fn lognormal_us(&mut self, median_us: f64, sigma: f64) -> u64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        (median_us * (sigma * z).exp()) as u64
    }
}

pub(crate) fn hist(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
    let mut h = new_latency_histogram();
    for v in values {
        record_latency(&mut h, Duration::from_micros(v));
    }
    h
}

pub(crate) fn request_step(name: Option<&str>, method: &str, url: &str) -> Step {
    Step {
        name: name.map(str::to_owned),
        request: Some(Request {
            method: method.to_owned(),
            url: url.to_owned(),
            ..Request::default()
        }),
        ..Step::default()
    }
}

pub(crate) fn sleep_step() -> Step {
    Step {
        sleep: Some(Sleep::Fixed(volley_crds::Duration::from_secs(1))),
        ..Step::default()
    }
}

/// setup [login], light [convert, sleep, GET /api/jobs], heavy [upload].
pub(crate) fn spec() -> LoadTestSpec {
    LoadTestSpec {
        setup: vec![request_step(Some("login"), "POST", "/auth/login")],
        scenarios: vec![
            Scenario {
                name: "light".to_owned(),
                steps: vec![
                    request_step(Some("convert"), "POST", "/api/process"),
                    sleep_step(),
                    request_step(None, "get", "/api/jobs"),
                ],
                ..Scenario::default()
            },
            Scenario {
                name: "heavy".to_owned(),
                steps: vec![request_step(Some("upload"), "PUT", "/api/upload")],
                ..Scenario::default()
            },
        ],
        ..LoadTestSpec::default()
    }
}

/// Records `n` requests of latency `us` (every `fail_every`-th failing) into a step.
pub(crate) fn record(m: &mut Measurements, us: u64, n: u64, fail_every: u64) {
    for i in 0..n {
        let d = Duration::from_micros(us);
        record_latency(&mut m.latency, d);
        record_latency(&mut m.latency_sent, d);
        m.counters.requests += 1;
        if fail_every > 0 && i % fail_every == 0 {
            record_latency(&mut m.failed_latency, d);
            m.counters.count_error(ErrorKind::Status5xx);
        }
    }
}

pub(crate) fn measurements(values: &[u64]) -> Measurements {
    let mut m = Measurements::default();
    for &v in values {
        record(&mut m, v, 1, 0);
    }
    m
}
