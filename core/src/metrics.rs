//! The metrics model: what a runner records, what `volley run` summarises, and what the
//! aggregator merges. Pure data in, data out: no I/O, no clocks, no async.
//!
//! - Latencies go into HdrHistograms with the bounds of `docs/reference.md` §4.4 (1 µs to 1 h,
//!   3 significant digits), in microseconds. Histograms with equal bounds merge by adding their
//!   counts, so percentiles of a merge are *exactly* those of one histogram fed every sample.
//! - [`RunMetrics`] holds everything a run measured, cumulative since its start: one
//!   [`ScenarioMetrics`] per scenario (setup steps live in a scenario named [`SETUP_SCENARIO`]),
//!   one [`StepMetrics`] per request step.
//! - [`Report`] is the runner → aggregator body (`docs/reference.md` §3.3): the same data with
//!   each histogram as base64 of HdrHistogram's V2 compressed format. [`decode_histogram`]
//!   treats its input as hostile: every size is capped *before* anything is allocated from it.
//! - [`metrics_status`], [`scenario_statuses`], [`step_statuses`] and [`evaluate_thresholds`]
//!   turn merged data into the status types of [`volley_crds::status`]; [`series_point`] turns two
//!   cumulative snapshots into one point of the per-second series.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{
    DeserializeError, Deserializer, Serializer as _, V2DeflateSerializeError, V2DeflateSerializer,
};
use serde::{Deserialize, Serialize};

use crate::threshold::{ScopeMetrics, parse_threshold, significant};
use volley_crds::spec::{ErrorKind, LoadTestSpec, Step};
use volley_crds::status::{
    LatencyMs, MetricsStatus, ScenarioStatus, StepStatus, ThresholdStatus, Verdict,
};
use volley_crds::text::shorten;

/// Lowest latency a histogram tells apart, in microseconds (`docs/reference.md` §4.4).
pub const LATENCY_LOW_US: u64 = 1;
/// Highest latency a histogram tracks, in microseconds: one hour. Longer ones are recorded as
/// one hour.
pub const LATENCY_HIGH_US: u64 = 3_600_000_000;
/// Significant decimal digits every latency histogram keeps (values are within 0.1%).
pub const LATENCY_SIGFIG: u8 = 3;

/// The name of the pseudo-scenario that holds the `setup` steps. It is left out of the overall
/// figures, the scenario rows and the thresholds; its steps still get status rows.
pub const SETUP_SCENARIO: &str = "setup";

/// Largest encoded histogram [`decode_histogram`] accepts, in bytes after base64 decoding.
pub const MAX_ENCODED_HISTOGRAM_BYTES: usize = 1 << 20;
/// Largest decompressed histogram [`decode_histogram`] accepts, in bytes. A histogram with
/// Volley's bounds needs at most about 210 KiB even with every bucket used, so this only stops
/// zip bombs.
pub const MAX_DECOMPRESSED_HISTOGRAM_BYTES: usize = 1 << 20;
/// Most samples one decoded histogram may hold (2^48, about 2.8·10^14: 10 million requests per
/// second for 7 days is 6·10^12). Keeping counts far below `u64::MAX` means merging thousands
/// of reports can never overflow.
pub const MAX_HISTOGRAM_COUNT: u64 = 1 << 48;
/// Most steps (over all scenarios) a [`Report`] may carry. Each decoded step holds three
/// histograms of about 190 KiB each, so this bounds what one report can make the aggregator
/// allocate.
pub const MAX_REPORT_STEPS: usize = 512;

/// Cookie of HdrHistogram's V2 format.
const V2_COOKIE: u32 = 0x1c84_9313;
/// Cookie of HdrHistogram's V2 format wrapped in zlib ("compressed").
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// Bytes of a V2 header: cookie, payload length, normalizing offset, significant digits,
/// lowest value, highest value, integer-to-double ratio.
const V2_HEADER_LEN: usize = 40;

/// Why metrics could not be merged, compared, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// An encoded histogram was the empty string.
    #[error("the encoded histogram is empty")]
    EmptyHistogram,
    /// An encoded histogram was not base64 (standard alphabet, with padding).
    #[error("the encoded histogram is not valid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    /// An encoded histogram, or its decompressed form, is bigger than Volley accepts.
    #[error("the {what} histogram is larger than the {limit} bytes Volley accepts")]
    TooLarge {
        /// `encoded` or `decompressed`.
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes are not a well-formed HdrHistogram V2 compressed histogram.
    #[error("malformed histogram: {0}")]
    Malformed(String),
    /// A histogram was made with other bounds than Volley's latency histograms.
    #[error(
        "the histogram tracks {low} µs to {high} µs with {sigfig} significant digits; Volley's \
         latency histograms track {LATENCY_LOW_US} µs to {LATENCY_HIGH_US} µs with \
         {LATENCY_SIGFIG}"
    )]
    Bounds {
        /// Lowest discernible value of the histogram.
        low: u64,
        /// Highest trackable value of the histogram.
        high: u64,
        /// Its significant digits.
        sigfig: u8,
    },
    /// A decoded histogram holds a value outside 1 µs to 1 h.
    #[error("the histogram holds a latency of {value} µs, outside the range of 1 µs to 1 h")]
    OutOfRange {
        /// The offending value, in microseconds.
        value: u64,
    },
    /// A decoded histogram holds more samples than [`MAX_HISTOGRAM_COUNT`].
    #[error("the histogram holds more than {MAX_HISTOGRAM_COUNT} samples")]
    TooManySamples,
    /// A histogram holds values above what the histogram it is merged into can track.
    #[error("cannot add a histogram with values up to {max} µs to one that tracks up to {high} µs")]
    Incompatible {
        /// Highest value of the histogram being added.
        max: u64,
        /// Highest value the receiving histogram tracks.
        high: u64,
    },
    /// The later of two snapshots holds less than the earlier one, so they are not successive
    /// cumulative snapshots of one run.
    #[error(
        "the later snapshot has fewer {what} ({cur}) than the earlier one ({prev}); \
         snapshots must be cumulative and in order"
    )]
    NotCumulative {
        /// What went down: `requests`, `failures` or `latency samples`.
        what: &'static str,
        /// The earlier figure.
        prev: u64,
        /// The later figure.
        cur: u64,
    },
    /// HdrHistogram could not encode a histogram.
    #[error("could not encode a histogram: {0}")]
    Encode(#[source] V2DeflateSerializeError),
    /// HdrHistogram could not decode a histogram that passed Volley's own checks.
    #[error("could not decode the histogram: {0}")]
    Decode(#[source] DeserializeError),
    /// A report carries more steps than [`MAX_REPORT_STEPS`].
    #[error("the report has {steps} steps; at most {MAX_REPORT_STEPS} are accepted")]
    TooManySteps {
        /// Steps in the report, over all scenarios.
        steps: usize,
    },
    /// An error in one histogram of one step, with where it is.
    #[error("scenario `{scenario}` step `{step}` {field}: {source}")]
    InStep {
        /// Scenario name (cut to 100 characters).
        scenario: String,
        /// Step name (cut to 100 characters).
        step: String,
        /// Which histogram: `latency`, `latencySent` or `failedLatency`.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: Box<MetricsError>,
    },
}

impl MetricsError {
    fn in_step(self, scenario: &str, step: &str, field: &'static str) -> MetricsError {
        MetricsError::InStep {
            scenario: shorten(scenario, 100),
            step: shorten(step, 100),
            field,
            source: Box::new(self),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Histograms
// ---------------------------------------------------------------------------------------------

/// An empty latency histogram with the bounds of `docs/reference.md` §4.4: 1 µs to 1 h, 3
/// significant digits, in microseconds. Auto-resize is off, so its memory is fixed (about
/// 190 KiB); [`record_latency`] clamps what is longer than an hour.
pub fn new_latency_histogram() -> Histogram<u64> {
    #[allow(
        clippy::expect_used,
        reason = "constant, valid bounds (1 < 2 * 1 <= high, sigfig <= 5); a test creates one"
    )]
    Histogram::new_with_bounds(LATENCY_LOW_US, LATENCY_HIGH_US, LATENCY_SIGFIG)
        .expect("Volley's latency histogram bounds are valid")
}

/// Records one latency: whole microseconds (saturating), clamped to 1 µs .. 1 h. Never fails:
/// a sub-microsecond response counts as 1 µs and one over an hour as exactly an hour.
pub fn record_latency(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(LATENCY_LOW_US, LATENCY_HIGH_US));
}

/// Whether every value of `source` fits into `target` (so that `target.add(source)` and
/// `target.subtract(source)` cannot fail on range).
fn fits(target: &Histogram<u64>, source: &Histogram<u64>) -> Result<(), MetricsError> {
    let high = target.highest_equivalent(target.high());
    if source.is_empty() || source.max() <= high {
        Ok(())
    } else {
        Err(MetricsError::Incompatible {
            max: source.max(),
            high: target.high(),
        })
    }
}

/// Adds `source` into `target`, which [`fits`] has approved.
fn add_checked(target: &mut Histogram<u64>, source: &Histogram<u64>) -> Result<(), MetricsError> {
    fits(target, source)?;
    target.add(source).map_err(|_| MetricsError::Incompatible {
        max: source.max(),
        high: target.high(),
    })
}

/// Adds `source` into `target` and never fails: values out of `target`'s range are clamped
/// into it. Only used where the API has no error to return; histograms built by this module
/// always take the exact path.
fn add_clamped(target: &mut Histogram<u64>, source: &Histogram<u64>) {
    if add_checked(target, source).is_err() {
        for v in source.iter_recorded() {
            target.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Two histograms hold the same samples: same count at every recorded value.
fn same_histogram(a: &Histogram<u64>, b: &Histogram<u64>) -> bool {
    a.len() == b.len()
        && a.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .eq(b
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value())))
}

/// A histogram in one line, for `Debug` (the derived form prints ~23 000 counters).
struct HistogramSummary<'a>(&'a Histogram<u64>);

impl fmt::Debug for HistogramSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.0;
        if h.is_empty() {
            return f.write_str("Histogram(empty)");
        }
        write!(
            f,
            "Histogram(len {}, min {}us, p50 {}us, p99 {}us, max {}us, {} distinct)",
            h.len(),
            h.min(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            h.iter_recorded().count()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Counters and measurements
// ---------------------------------------------------------------------------------------------

/// Everything counted (rather than timed) for a step, a scenario, or a whole run. All
/// additions saturate, so figures from the network can never overflow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Requests sent (each retry and poll counts).
    #[serde(default)]
    pub requests: u64,
    /// Requests that failed, any kind.
    #[serde(default)]
    pub failures: u64,
    /// Iterations completed (scenario level).
    #[serde(default)]
    pub iterations: u64,
    /// Iterations an arrival-rate executor could not start (scenario level).
    #[serde(default)]
    pub dropped_iterations: u64,
    /// Iterations cut off because they outlived `gracefulStop` (scenario level): started but
    /// neither completed nor failed, their last request not counted.
    #[serde(default)]
    pub interrupted_iterations: u64,
    /// Checks that held.
    #[serde(default)]
    pub checks_passed: u64,
    /// Checks that did not hold.
    #[serde(default)]
    pub checks_failed: u64,
    /// Request bytes sent.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Response bytes received.
    #[serde(default)]
    pub bytes_received: u64,
    /// Failed requests by kind, keyed by [`ErrorKind`]'s name in manifests: `connect`,
    /// `timeout`, `4xx`, `5xx`, `check`, `extract`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
}

/// The name of an error kind in manifests, metrics and status (its serde name).
pub fn error_kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Connect => "connect",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Status4xx => "4xx",
        ErrorKind::Status5xx => "5xx",
        ErrorKind::Check => "check",
        ErrorKind::Extract => "extract",
        ErrorKind::Blocked => "blocked",
    }
}

impl Counters {
    /// Adds every figure of `other` (saturating).
    pub fn add(&mut self, other: &Counters) {
        self.requests = self.requests.saturating_add(other.requests);
        self.failures = self.failures.saturating_add(other.failures);
        self.iterations = self.iterations.saturating_add(other.iterations);
        self.dropped_iterations = self
            .dropped_iterations
            .saturating_add(other.dropped_iterations);
        self.interrupted_iterations = self
            .interrupted_iterations
            .saturating_add(other.interrupted_iterations);
        self.checks_passed = self.checks_passed.saturating_add(other.checks_passed);
        self.checks_failed = self.checks_failed.saturating_add(other.checks_failed);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        for (kind, n) in &other.errors {
            let c = self.errors.entry(kind.clone()).or_insert(0);
            *c = c.saturating_add(*n);
        }
    }

    /// What happened between the cumulative `earlier` and `self`, field by field. Fails when
    /// `self` holds less than `earlier` anywhere: they are not successive snapshots of one run.
    pub fn since(&self, earlier: &Counters) -> Result<Counters, MetricsError> {
        let diff = |what: &'static str, prev: u64, cur: u64| {
            cur.checked_sub(prev)
                .ok_or(MetricsError::NotCumulative { what, prev, cur })
        };
        let mut interval = Counters {
            requests: diff("requests", earlier.requests, self.requests)?,
            failures: diff("failures", earlier.failures, self.failures)?,
            iterations: diff("iterations", earlier.iterations, self.iterations)?,
            dropped_iterations: diff(
                "dropped iterations",
                earlier.dropped_iterations,
                self.dropped_iterations,
            )?,
            interrupted_iterations: diff(
                "interrupted iterations",
                earlier.interrupted_iterations,
                self.interrupted_iterations,
            )?,
            checks_passed: diff("checks passed", earlier.checks_passed, self.checks_passed)?,
            checks_failed: diff("checks failed", earlier.checks_failed, self.checks_failed)?,
            bytes_sent: diff("bytes sent", earlier.bytes_sent, self.bytes_sent)?,
            bytes_received: diff(
                "bytes received",
                earlier.bytes_received,
                self.bytes_received,
            )?,
            errors: BTreeMap::new(),
        };
        for (kind, prev) in &earlier.errors {
            let cur = self.errors.get(kind).copied().unwrap_or(0);
            diff("errors of a kind", *prev, cur)?;
        }
        for (kind, cur) in &self.errors {
            let prev = earlier.errors.get(kind).copied().unwrap_or(0);
            let n = diff("errors of a kind", prev, *cur)?;
            if n > 0 {
                interval.errors.insert(kind.clone(), n);
            }
        }
        Ok(interval)
    }

    /// Counts one failed request of `kind`: `failures` and `errors[kind]` both go up by one, so
    /// the error map always sums to `failures`. Call it once per failed request, instead of
    /// (not in addition to) incrementing `failures`. `requests` is counted separately.
    pub fn count_error(&mut self, kind: ErrorKind) {
        self.failures = self.failures.saturating_add(1);
        let c = self
            .errors
            .entry(error_kind_name(kind).to_owned())
            .or_insert(0);
        *c = c.saturating_add(1);
    }
}

/// Everything measured for one step of one scenario (or the scenario's iteration-level
/// counters, or a merge of several). Latencies are in microseconds.
#[derive(Clone)]
pub struct Measurements {
    /// Every request's latency: from the scheduled start for arrival-rate executors (free of
    /// coordinated omission), from the send otherwise.
    pub latency: Histogram<u64>,
    /// Every request's latency from the moment it was actually sent.
    pub latency_sent: Histogram<u64>,
    /// Failed requests only, so slow (or fast) failures can be told apart from successes.
    pub failed_latency: Histogram<u64>,
    /// Requests, failures, iterations, checks, bytes, errors by kind.
    pub counters: Counters,
}

impl Default for Measurements {
    fn default() -> Self {
        Measurements {
            latency: new_latency_histogram(),
            latency_sent: new_latency_histogram(),
            failed_latency: new_latency_histogram(),
            counters: Counters::default(),
        }
    }
}

/// Histograms are compared by value: the same count at every recorded value.
impl PartialEq for Measurements {
    fn eq(&self, other: &Self) -> bool {
        self.counters == other.counters
            && same_histogram(&self.latency, &other.latency)
            && same_histogram(&self.latency_sent, &other.latency_sent)
            && same_histogram(&self.failed_latency, &other.failed_latency)
    }
}

/// Summarises the histograms (count, min, p50, p99, max) instead of dumping their counters.
impl fmt::Debug for Measurements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Measurements")
            .field("latency", &HistogramSummary(&self.latency))
            .field("latency_sent", &HistogramSummary(&self.latency_sent))
            .field("failed_latency", &HistogramSummary(&self.failed_latency))
            .field("counters", &self.counters)
            .finish()
    }
}

/// `cur − prev` for one histogram of two cumulative snapshots (exact, count by count).
fn histogram_since(
    prev: &Histogram<u64>,
    cur: &Histogram<u64>,
) -> Result<Histogram<u64>, MetricsError> {
    let not_cumulative = || MetricsError::NotCumulative {
        what: "latency samples at some value",
        prev: prev.len(),
        cur: cur.len(),
    };
    if cur.len() < prev.len() {
        return Err(not_cumulative());
    }
    fits(cur, prev)?;
    let mut h = cur.clone();
    h.subtract(prev).map_err(|_| not_cumulative())?;
    Ok(h)
}

impl Measurements {
    /// What happened between the cumulative snapshot `earlier` and `self`: every histogram and
    /// counter minus the earlier one (exact). Fails when the two are not successive
    /// snapshots of one run.
    pub fn since(&self, earlier: &Measurements) -> Result<Measurements, MetricsError> {
        Ok(Measurements {
            latency: histogram_since(&earlier.latency, &self.latency)?,
            latency_sent: histogram_since(&earlier.latency_sent, &self.latency_sent)?,
            failed_latency: histogram_since(&earlier.failed_latency, &self.failed_latency)?,
            counters: self.counters.since(&earlier.counters)?,
        })
    }

    /// Adds `other` into `self`: histograms count by count (exact), counters saturating.
    /// Fails, leaving `self` unchanged, when `other` holds values `self`'s histograms cannot
    /// track (never the case for histograms made by this module).
    pub fn add(&mut self, other: &Measurements) -> Result<(), MetricsError> {
        self.check_addable(other)?;
        add_checked(&mut self.latency, &other.latency)?;
        add_checked(&mut self.latency_sent, &other.latency_sent)?;
        add_checked(&mut self.failed_latency, &other.failed_latency)?;
        self.counters.add(&other.counters);
        Ok(())
    }

    fn check_addable(&self, other: &Measurements) -> Result<(), MetricsError> {
        fits(&self.latency, &other.latency)?;
        fits(&self.latency_sent, &other.latency_sent)?;
        fits(&self.failed_latency, &other.failed_latency)
    }

    /// Like [`Measurements::add`], clamping out-of-range values instead of failing.
    fn add_clamped(&mut self, other: &Measurements) {
        add_clamped(&mut self.latency, &other.latency);
        add_clamped(&mut self.latency_sent, &other.latency_sent);
        add_clamped(&mut self.failed_latency, &other.failed_latency);
        self.counters.add(&other.counters);
    }

    /// The figures thresholds are evaluated on.
    pub(crate) fn scope(&self, elapsed: Duration) -> ScopeMetrics<'_> {
        let c = &self.counters;
        ScopeMetrics {
            latency_us: &self.latency,
            requests: c.requests,
            failures: c.failures,
            iterations: c.iterations,
            dropped_iterations: c.dropped_iterations,
            checks_passed: c.checks_passed,
            checks_failed: c.checks_failed,
            elapsed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run model
// ---------------------------------------------------------------------------------------------

/// One scenario: iteration-level counters plus per-step measurements, in step order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScenarioMetrics {
    /// Scenario name ([`SETUP_SCENARIO`] for the setup steps).
    pub name: String,
    /// Iteration-level counters: `iterations` and `dropped_iterations` are counted here, not
    /// in the steps.
    pub iterations: Counters,
    /// One entry per request step (sleep steps have none), in step order.
    pub steps: Vec<StepMetrics>,
}

/// One request step's measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// The step's [`Step::display_name`].
    pub name: String,
    /// What was measured.
    pub m: Measurements,
}

/// All of a run's metrics, cumulative since its start. Setup steps live in a scenario named
/// [`SETUP_SCENARIO`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMetrics {
    /// Scenarios in spec order, setup first.
    pub scenarios: Vec<ScenarioMetrics>,
}

/// Where an entry of `other` lands in `list` when merging: the same position if the name
/// matches there (the usual case, both sides shaped by the same spec), else the first entry
/// of that name.
fn position_by_name<T>(
    list: &[T],
    hint: usize,
    name: &str,
    name_of: impl Fn(&T) -> &str,
) -> Option<usize> {
    if list.get(hint).is_some_and(|x| name_of(x) == name) {
        return Some(hint);
    }
    list.iter().position(|x| name_of(x) == name)
}

impl RunMetrics {
    /// An empty model shaped like the spec: a [`SETUP_SCENARIO`] entry first if `spec.setup`
    /// is non-empty, then one entry per scenario, each with one [`StepMetrics`] per step that
    /// has a request (named by [`Step::display_name`]). Sleep steps get no entry. The runner
    /// records by index into this shape ([`RunMetrics::step_mut`]).
    pub fn for_spec(spec: &LoadTestSpec) -> RunMetrics {
        fn scenario(name: &str, steps: &[Step]) -> ScenarioMetrics {
            ScenarioMetrics {
                name: name.to_owned(),
                iterations: Counters::default(),
                steps: steps
                    .iter()
                    .filter(|s| crate::scenario::is_measured(s))
                    .map(|s| StepMetrics {
                        name: s.display_name(),
                        m: Measurements::default(),
                    })
                    .collect(),
            }
        }
        let setup = (!spec.setup.is_empty()).then(|| scenario(SETUP_SCENARIO, &spec.setup));
        RunMetrics {
            scenarios: setup
                .into_iter()
                .chain(spec.scenarios.iter().map(|s| scenario(&s.name, &s.steps)))
                .collect(),
        }
    }

    /// Merges another runner's metrics into these: scenarios and steps are matched by name
    /// (by position first, then by name), so reports from runners of one spec line up; names
    /// not found here are appended, so nothing is lost. Histograms add exactly.
    ///
    /// Fails, leaving `self` unchanged, if a histogram of `other` holds values the matching
    /// histogram here cannot track (never the case for histograms made by this module).
    pub fn merge(&mut self, other: &RunMetrics) -> Result<(), MetricsError> {
        // Check first, so that applying, which finds the same targets, cannot fail half-way.
        self.check_merge(other)?;
        for (i, os) in other.scenarios.iter().enumerate() {
            let si = match position_by_name(&self.scenarios, i, &os.name, |s| s.name.as_str()) {
                Some(si) => si,
                None => {
                    self.scenarios.push(ScenarioMetrics {
                        name: os.name.clone(),
                        ..ScenarioMetrics::default()
                    });
                    self.scenarios.len() - 1
                }
            };
            let Some(scenario) = self.scenarios.get_mut(si) else {
                continue;
            };
            scenario.iterations.add(&os.iterations);
            for (j, ost) in os.steps.iter().enumerate() {
                match position_by_name(&scenario.steps, j, &ost.name, |s| s.name.as_str())
                    .and_then(|k| scenario.steps.get_mut(k))
                {
                    // Checked by check_merge; clamping is only a fallback that cannot be reached.
                    Some(target) => target.m.add_clamped(&ost.m),
                    None => scenario.steps.push(ost.clone()),
                }
            }
        }
        Ok(())
    }

    /// Whether [`RunMetrics::merge`] would take `other`: every histogram of `other` that lands on
    /// one of these can be added to it. Changes nothing; allocates no histogram, so a server can
    /// check each incoming report against the empty shape of its run cheaply.
    pub fn check_merge(&self, other: &RunMetrics) -> Result<(), MetricsError> {
        // Find every target on a copy of the names, as merge will.
        let mut plan: Vec<(&str, Vec<(&str, &Measurements)>)> = self
            .scenarios
            .iter()
            .map(|s| {
                let steps = s.steps.iter().map(|st| (st.name.as_str(), &st.m)).collect();
                (s.name.as_str(), steps)
            })
            .collect();
        for (i, os) in other.scenarios.iter().enumerate() {
            let si = match position_by_name(&plan, i, &os.name, |s| s.0) {
                Some(si) => si,
                None => {
                    plan.push((os.name.as_str(), Vec::new()));
                    plan.len() - 1
                }
            };
            let Some((_, steps)) = plan.get_mut(si) else {
                continue;
            };
            for (j, ost) in os.steps.iter().enumerate() {
                match position_by_name(steps, j, &ost.name, |s| s.0) {
                    Some(k) => {
                        if let Some((_, target)) = steps.get(k) {
                            target
                                .check_addable(&ost.m)
                                .map_err(|e| e.in_step(&os.name, &ost.name, "histograms"))?;
                        }
                    }
                    None => steps.push((ost.name.as_str(), &ost.m)),
                }
            }
        }
        Ok(())
    }

    /// The first scenario with this name.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioMetrics> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// Step `step` of scenario `scenario`, by index in [`RunMetrics::for_spec`]'s shape: the
    /// runner's recording fast path.
    pub fn step_mut(&mut self, scenario: usize, step: usize) -> Option<&mut Measurements> {
        self.scenarios
            .get_mut(scenario)?
            .steps
            .get_mut(step)
            .map(|s| &mut s.m)
    }

    /// Scenarios that count towards the overall figures and thresholds: all but setup.
    pub fn load_scenarios(&self) -> impl Iterator<Item = &ScenarioMetrics> {
        self.scenarios.iter().filter(|s| s.name != SETUP_SCENARIO)
    }

    /// The whole run: every step and the iteration counters of every scenario but
    /// [`SETUP_SCENARIO`] (setup has its own step rows, and is not load).
    pub fn overall(&self) -> Measurements {
        let mut total = Measurements::default();
        for s in self.load_scenarios() {
            add_scenario(&mut total, s);
        }
        total
    }

    /// One scenario (the first of that name): its steps merged, plus its iteration counters.
    pub fn scenario_total(&self, name: &str) -> Option<Measurements> {
        let s = self.scenario(name)?;
        let mut total = Measurements::default();
        add_scenario(&mut total, s);
        Some(total)
    }

    /// One step's measurements (the first step of that name in the first scenario of that
    /// name). Iterations are counted per scenario, so its `iterations` are 0.
    pub fn step_total(&self, scenario: &str, step: &str) -> Option<Measurements> {
        self.scenario(scenario)?
            .steps
            .iter()
            .find(|s| s.name == step)
            .map(|s| s.m.clone())
    }
}

fn add_scenario(total: &mut Measurements, s: &ScenarioMetrics) {
    for step in &s.steps {
        total.add_clamped(&step.m);
    }
    total.counters.add(&s.iterations);
}

// ---------------------------------------------------------------------------------------------
// Status summaries
// ---------------------------------------------------------------------------------------------

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The latency at quantile `q` in ms, 0 when empty. Same formula as threshold evaluation, so
/// status and thresholds always show the same figure.
pub(crate) fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        us_to_ms(h.value_at_quantile(q))
    }
}

pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub(crate) fn per_second(n: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        n as f64 / elapsed.as_secs_f64()
    }
}

/// A latency for `kubectl get`, to the histogram's 3 significant digits: `512us`, `44.2ms`,
/// `1.23s`, `125s`.
pub fn format_latency_ms(ms: f64) -> String {
    if ms > 0.0 && ms < 1.0 {
        format!("{}us", significant(ms * 1000.0, 3))
    } else if ms < 1000.0 {
        format!("{}ms", significant(ms, 3))
    } else {
        format!("{}s", significant(ms / 1000.0, 3))
    }
}

/// A share as a percentage for `kubectl get`: at most 2 decimals, `0%` only for exactly none,
/// `<0.01%` for fewer than one in 10 000, `>99.99%` for all but fewer than one in 10 000.
pub fn format_percent(part: u64, whole: u64) -> String {
    if part == 0 || whole == 0 {
        return "0%".to_owned();
    }
    if part >= whole {
        return "100%".to_owned();
    }
    // Integer comparisons, so exactly 1 in 10 000 is `0.01%` whatever the float rounding.
    let (part_wide, whole_wide) = (u128::from(part), u128::from(whole));
    if part_wide * 10_000 < whole_wide {
        return "<0.01%".to_owned();
    }
    if part_wide * 10_000 > whole_wide * 9_999 {
        return ">99.99%".to_owned();
    }
    let pct = part as f64 / whole as f64 * 100.0;
    let text = format!("{pct:.2}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Latency statistics of a histogram of microseconds, in milliseconds (all 0 when empty).
pub fn latency_ms(h: &Histogram<u64>) -> LatencyMs {
    if h.is_empty() {
        return LatencyMs::default();
    }
    LatencyMs {
        min: us_to_ms(h.min()),
        mean: h.mean() / 1000.0,
        p50: quantile_ms(h, 0.5),
        p90: quantile_ms(h, 0.9),
        p95: quantile_ms(h, 0.95),
        p99: quantile_ms(h, 0.99),
        max: us_to_ms(h.max()),
    }
}

/// The status figures of `m` (normally [`RunMetrics::overall`]) after `elapsed`: rps over
/// `elapsed` (0 when it is zero), error rate (0 without requests), checks pass rate (absent
/// without checks), latency in ms from `latency` (all 0 when empty), and the display strings
/// `p95` (`-` when empty) and `errors`.
pub fn metrics_status(m: &Measurements, elapsed: Duration) -> MetricsStatus {
    let c = &m.counters;
    let h = &m.latency;
    let latency_ms = latency_ms(h);
    let checks = c.checks_passed.saturating_add(c.checks_failed);
    MetricsStatus {
        requests: c.requests,
        failures: c.failures,
        error_rate: ratio(c.failures, c.requests),
        rps: per_second(c.requests, elapsed),
        iterations: c.iterations,
        dropped_iterations: c.dropped_iterations,
        interrupted_iterations: c.interrupted_iterations,
        checks_pass_rate: (checks > 0).then(|| ratio(c.checks_passed, checks)),
        p95: if h.is_empty() {
            "-".to_owned()
        } else {
            format_latency_ms(latency_ms.p95)
        },
        latency_ms,
        errors_by_kind: c.errors.clone(),
        data_received_bytes: c.bytes_received,
        data_sent_bytes: c.bytes_sent,
        errors: format_percent(c.failures, c.requests),
        throughput: format_rate(per_second(c.requests, elapsed)),
        duration: volley_crds::Duration::from(Duration::from_secs(elapsed.as_secs())).to_string(),
    }
}

/// A rate for `kubectl get`, to 3 significant digits: `30/s`, `1235/s`, `0.5/s`.
pub fn format_rate(per_second: f64) -> String {
    format!("{}/s", significant(per_second, 3))
}

/// One row per scenario but setup, in order. `rps` is over the run's `elapsed`.
pub fn scenario_statuses(run: &RunMetrics, elapsed: Duration) -> Vec<ScenarioStatus> {
    run.load_scenarios()
        .map(|s| {
            let mut m = Measurements::default();
            add_scenario(&mut m, s);
            let c = &m.counters;
            ScenarioStatus {
                scenario: s.name.clone(),
                requests: c.requests,
                iterations: c.iterations,
                dropped_iterations: c.dropped_iterations,
                interrupted_iterations: c.interrupted_iterations,
                error_rate: ratio(c.failures, c.requests),
                rps: per_second(c.requests, elapsed),
                p50_ms: quantile_ms(&m.latency, 0.5),
                p95_ms: quantile_ms(&m.latency, 0.95),
                p99_ms: quantile_ms(&m.latency, 0.99),
                sustainable_rate: None,
            }
        })
        .collect()
}

/// One row per step of every scenario, setup included, in order; only the first `limit`, so
/// the status stays bounded.
pub fn step_statuses(run: &RunMetrics, limit: usize) -> Vec<StepStatus> {
    run.scenarios
        .iter()
        .flat_map(|s| s.steps.iter().map(move |st| (s, st)))
        .take(limit)
        .map(|(s, st)| StepStatus {
            scenario: s.name.clone(),
            step: st.name.clone(),
            requests: st.m.counters.requests,
            error_rate: ratio(st.m.counters.failures, st.m.counters.requests),
            p50_ms: quantile_ms(&st.m.latency, 0.5),
            p95_ms: quantile_ms(&st.m.latency, 0.95),
            p99_ms: quantile_ms(&st.m.latency, 0.99),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Thresholds
// ---------------------------------------------------------------------------------------------

/// One threshold evaluated on merged data.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdResult {
    /// The status row: expression as written, scope (`all`, `scenario NAME`,
    /// `scenario NAME step NAME`), actual value, passed. `aborted` is left false for the
    /// caller to set when this failure stops the run.
    pub status: ThresholdStatus,
    /// The threshold asks to stop the run as soon as it fails.
    pub abort_on_fail: bool,
    /// Do not act on `abort_on_fail` before the run has lasted this long (zero if unset).
    pub delay_abort_eval: Duration,
    /// When failed: a sentence for the status message, e.g. `p(95) 612ms >= 500ms`, with
    /// ` (scenario NAME step NAME)` appended for scoped thresholds; or what is wrong with the
    /// threshold itself.
    pub failure_message: Option<String>,
    /// There was data to judge. A threshold without data fails the final verdict, but must
    /// not abort a run that simply has not sent anything yet.
    pub has_data: bool,
}

/// Evaluates every threshold of `spec` on `run`'s merged data after `elapsed`. The scope is
/// the whole run without setup ([`RunMetrics::overall`]), one scenario, or one step of one
/// scenario; a step scope takes its `iterations` and `dropped_iterations` from its scenario.
///
/// Never panics and never skips a threshold: one that does not parse, or names a scenario or
/// step the spec does not have, fails with `actual` saying why (validation normally rejects
/// those earlier). A scope with no data fails (`no data`), except for counts, where zero is a
/// count. A scenario or step the spec has but `run` has no entry for yet counts as empty.
pub fn evaluate_thresholds(
    spec: &LoadTestSpec,
    run: &RunMetrics,
    elapsed: Duration,
) -> Vec<ThresholdResult> {
    spec.thresholds
        .iter()
        .map(|t| evaluate_one(&t.to_threshold(), spec, run, elapsed))
        .collect()
}

fn evaluate_one(
    t: &volley_crds::spec::Threshold,
    spec: &LoadTestSpec,
    run: &RunMetrics,
    elapsed: Duration,
) -> ThresholdResult {
    let scope = match (&t.scenario, &t.step) {
        (None, None) => "all".to_owned(),
        (Some(sc), None) => format!("scenario {sc}"),
        (Some(sc), Some(st)) => format!("scenario {sc} step {st}"),
        (None, Some(st)) => format!("step {st}"),
    };
    let result = |actual: String, passed: bool, has_data: bool, failure_message: Option<String>| {
        ThresholdResult {
            status: ThresholdStatus {
                expr: t.expr.clone(),
                scope: scope.clone(),
                actual,
                passed,
                aborted: false,
            },
            abort_on_fail: t.abort_on_fail,
            delay_abort_eval: t.delay_abort_eval.map(|d| d.get()).unwrap_or_default(),
            failure_message,
            has_data,
        }
    };
    let invalid = |why: String| {
        let message = format!("threshold `{}` ({scope}): {why}", t.expr);
        result(why, false, false, Some(message))
    };

    let expr = match parse_threshold(&t.expr) {
        Ok(expr) => expr,
        Err(e) => return invalid(format!("invalid threshold: {e}")),
    };
    let data: Measurements = match (&t.scenario, &t.step) {
        (None, None) => run.overall(),
        (None, Some(st)) => {
            return invalid(format!(
                "`step: {st}` needs `scenario` to say which scenario's step it is"
            ));
        }
        (Some(sc), step) => {
            let Some(spec_scenario) = spec.scenarios.iter().find(|s| &s.name == sc) else {
                let known: Vec<&str> = spec.scenarios.iter().map(|s| s.name.as_str()).collect();
                return invalid(format!(
                    "unknown scenario `{sc}` (scenarios: {})",
                    known.join(", ")
                ));
            };
            let scenario_data = run
                .load_scenarios()
                .find(|s| &s.name == sc)
                .cloned()
                .unwrap_or_default();
            match step {
                None => {
                    let mut m = Measurements::default();
                    add_scenario(&mut m, &scenario_data);
                    m
                }
                Some(st) => {
                    let is_request_step = spec_scenario
                        .steps
                        .iter()
                        .any(|s| crate::scenario::is_measured(s) && &s.display_name() == st);
                    if !is_request_step {
                        return invalid(format!(
                            "scenario `{sc}` has no request step named `{st}`"
                        ));
                    }
                    let mut m = scenario_data
                        .steps
                        .iter()
                        .find(|s| &s.name == st)
                        .map(|s| s.m.clone())
                        .unwrap_or_default();
                    m.counters.iterations = scenario_data.iterations.iterations;
                    m.counters.dropped_iterations = scenario_data.iterations.dropped_iterations;
                    m
                }
            }
        }
    };
    let outcome = expr.evaluate(&data.scope(elapsed));
    let failure_message = (!outcome.passed).then(|| {
        let message = expr.failure_message(&outcome);
        if scope == "all" {
            message
        } else {
            format!("{message} ({scope})")
        }
    });
    let has_data = outcome.actual.is_some();
    result(
        outcome.actual_display,
        outcome.passed,
        has_data,
        failure_message,
    )
}

/// The first threshold whose failure should stop the run now: `abortOnFail`, failed on real
/// data, and past its `delayAbortEval`. Shared by `volley run` and the aggregator so both
/// abort on exactly the same rule.
pub fn abort_trigger(results: &[ThresholdResult], elapsed: Duration) -> Option<usize> {
    results.iter().position(|r| {
        r.abort_on_fail && !r.status.passed && r.has_data && elapsed >= r.delay_abort_eval
    })
}

/// Passed iff every result passed; an empty list is Passed.
pub fn verdict(results: &[ThresholdResult]) -> Verdict {
    if results.iter().all(|r| r.status.passed) {
        Verdict::Passed
    } else {
        Verdict::Failed
    }
}

// ---------------------------------------------------------------------------------------------
// Per-second series
// ---------------------------------------------------------------------------------------------

/// One point of the per-second series: what happened between two cumulative snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// Seconds since the start at the end of the interval.
    pub second: u64,
    /// Length of the interval in ms (normally 1000; longer when a report was lost).
    pub interval_ms: u64,
    /// Requests in the interval.
    pub requests: u64,
    /// Failed requests in the interval.
    pub failures: u64,
    /// Requests per second over the interval.
    pub rps: f64,
    /// Median latency of the interval's requests, ms (0 without requests).
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// The interval between two cumulative snapshots of the overall measurements: `cur − prev`,
/// histogram by histogram (exact). Fails if `cur` holds less than `prev` anywhere, i.e. the
/// two are not successive snapshots of one run.
pub fn series_point(
    prev: &Measurements,
    cur: &Measurements,
    second: u64,
    interval: Duration,
) -> Result<SeriesPoint, MetricsError> {
    let interval_counters = cur.counters.since(&prev.counters)?;
    let (requests, failures) = (interval_counters.requests, interval_counters.failures);
    let h = histogram_since(&prev.latency, &cur.latency)?;
    Ok(SeriesPoint {
        second,
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        requests,
        failures,
        rps: per_second(requests, interval),
        p50_ms: quantile_ms(&h, 0.5),
        p95_ms: quantile_ms(&h, 0.95),
        p99_ms: quantile_ms(&h, 0.99),
    })
}

// ---------------------------------------------------------------------------------------------
// Wire encoding
// ---------------------------------------------------------------------------------------------

/// A runner's report to the aggregator (`docs/reference.md` §3.3): everything it measured since
/// the start, so a lost or repeated report loses nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The runner's index.
    pub runner: u32,
    /// Increases with every report of this runner; the aggregator keeps the highest.
    pub seq: u64,
    /// Time since the common start, in ms.
    pub elapsed_ms: u64,
    /// The runner has finished; this is its final report.
    pub done: bool,
    /// Per-scenario data, setup first when there is one.
    pub scenarios: Vec<ScenarioReport>,
}

/// One scenario of a [`Report`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// Iteration-level counters.
    pub iterations: Counters,
    /// Per-step data, in step order.
    pub steps: Vec<StepReport>,
}

/// One step of a [`ScenarioReport`]. Histograms are HdrHistogram V2 compressed, in base64
/// (standard alphabet, padded), as made by [`encode_histogram`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// The step's counters.
    pub counters: Counters,
    /// [`Measurements::latency`], encoded.
    pub latency: String,
    /// [`Measurements::latency_sent`], encoded.
    pub latency_sent: String,
    /// [`Measurements::failed_latency`], encoded.
    pub failed_latency: String,
}

impl Report {
    /// Encodes `m` as report number `seq` of runner `runner`.
    pub fn from_metrics(
        runner: u32,
        seq: u64,
        elapsed: Duration,
        done: bool,
        m: &RunMetrics,
    ) -> Result<Report, MetricsError> {
        let scenarios = m
            .scenarios
            .iter()
            .map(|s| {
                let steps = s
                    .steps
                    .iter()
                    .map(|st| {
                        let enc = |h: &Histogram<u64>, field: &'static str| {
                            encode_histogram(h).map_err(|e| e.in_step(&s.name, &st.name, field))
                        };
                        Ok(StepReport {
                            name: st.name.clone(),
                            counters: st.m.counters.clone(),
                            latency: enc(&st.m.latency, "latency")?,
                            latency_sent: enc(&st.m.latency_sent, "latencySent")?,
                            failed_latency: enc(&st.m.failed_latency, "failedLatency")?,
                        })
                    })
                    .collect::<Result<Vec<_>, MetricsError>>()?;
                Ok(ScenarioReport {
                    name: s.name.clone(),
                    iterations: s.iterations.clone(),
                    steps,
                })
            })
            .collect::<Result<Vec<_>, MetricsError>>()?;
        Ok(Report {
            runner,
            seq,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            done,
            scenarios,
        })
    }

    /// Decodes the report's histograms. Fails, naming the scenario, step and histogram, on
    /// anything [`decode_histogram`] rejects, and on more than [`MAX_REPORT_STEPS`] steps.
    pub fn to_metrics(&self) -> Result<RunMetrics, MetricsError> {
        let steps = self
            .scenarios
            .iter()
            .fold(0usize, |n, s| n.saturating_add(s.steps.len()));
        if steps > MAX_REPORT_STEPS {
            return Err(MetricsError::TooManySteps { steps });
        }
        let scenarios = self
            .scenarios
            .iter()
            .map(|s| {
                let steps = s
                    .steps
                    .iter()
                    .map(|st| {
                        let dec = |text: &str, field: &'static str| {
                            decode_histogram(text).map_err(|e| e.in_step(&s.name, &st.name, field))
                        };
                        Ok(StepMetrics {
                            name: st.name.clone(),
                            m: Measurements {
                                latency: dec(&st.latency, "latency")?,
                                latency_sent: dec(&st.latency_sent, "latencySent")?,
                                failed_latency: dec(&st.failed_latency, "failedLatency")?,
                                counters: st.counters.clone(),
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, MetricsError>>()?;
                Ok(ScenarioMetrics {
                    name: s.name.clone(),
                    iterations: s.iterations.clone(),
                    steps,
                })
            })
            .collect::<Result<Vec<_>, MetricsError>>()?;
        Ok(RunMetrics { scenarios })
    }

    /// The elapsed time as a duration.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms)
    }
}

/// A histogram as base64 (standard alphabet, padded) of HdrHistogram's V2 compressed format,
/// readable by any HdrHistogram implementation.
pub fn encode_histogram(h: &Histogram<u64>) -> Result<String, MetricsError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(MetricsError::Encode)?;
    Ok(BASE64.encode(bytes))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_be_bytes)
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)?
        .try_into()
        .ok()
        .map(u64::from_be_bytes)
}

fn malformed(what: impl Into<String>) -> MetricsError {
    MetricsError::Malformed(what.into())
}

/// Decodes what [`encode_histogram`] made, treating the text as hostile.
///
/// Rejects, with an error saying what is wrong: the empty string; more than
/// [`MAX_ENCODED_HISTOGRAM_BYTES`] (after base64); bad base64; anything but the V2 compressed
/// format; a length field that disagrees with the data; more than
/// [`MAX_DECOMPRESSED_HISTOGRAM_BYTES`] once inflated (zip bombs); bounds or significant
/// digits other than Volley's; counts past the end of the histogram, negative, or more than
/// [`MAX_HISTOGRAM_COUNT`] in total; values outside 1 µs to 1 h.
///
/// The header and counts are checked here before HdrHistogram's deserializer sees them,
/// because it sizes its allocations from the header's fields.
pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, MetricsError> {
    if s.is_empty() {
        return Err(MetricsError::EmptyHistogram);
    }
    if s.len() > MAX_ENCODED_HISTOGRAM_BYTES.div_ceil(3) * 4 {
        return Err(MetricsError::TooLarge {
            what: "encoded",
            limit: MAX_ENCODED_HISTOGRAM_BYTES,
        });
    }
    let bytes = BASE64.decode(s).map_err(MetricsError::Base64)?;
    if bytes.len() > MAX_ENCODED_HISTOGRAM_BYTES {
        return Err(MetricsError::TooLarge {
            what: "encoded",
            limit: MAX_ENCODED_HISTOGRAM_BYTES,
        });
    }

    // Outer envelope: cookie, length of the zlib stream, zlib stream.
    let cookie = be_u32(&bytes, 0).ok_or_else(|| malformed("shorter than its 8-byte header"))?;
    if cookie != V2_COMPRESSED_COOKIE {
        return Err(malformed(format!(
            "cookie {cookie:#010x} is not HdrHistogram's V2 compressed format ({V2_COMPRESSED_COOKIE:#010x})"
        )));
    }
    let stream_len = be_u32(&bytes, 4)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| malformed("shorter than its 8-byte header"))?;
    let stream = bytes.get(8..).unwrap_or_default();
    if stream_len != stream.len() {
        return Err(malformed(format!(
            "the header announces {stream_len} compressed bytes but {} follow (truncated?)",
            stream.len()
        )));
    }
    let mut raw = Vec::new();
    let mut inflater = flate2::bufread::ZlibDecoder::new(stream);
    (&mut inflater)
        .take(MAX_DECOMPRESSED_HISTOGRAM_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| malformed(format!("the compressed data is corrupt or truncated: {e}")))?;
    if raw.len() > MAX_DECOMPRESSED_HISTOGRAM_BYTES {
        return Err(MetricsError::TooLarge {
            what: "decompressed",
            limit: MAX_DECOMPRESSED_HISTOGRAM_BYTES,
        });
    }
    if !inflater.into_inner().is_empty() {
        return Err(malformed("unexpected bytes after the compressed data"));
    }

    // Inner V2 header.
    let short = || malformed("the decompressed data is shorter than the 40-byte V2 header");
    if be_u32(&raw, 0).ok_or_else(short)? != V2_COOKIE {
        return Err(malformed(
            "the decompressed data is not HdrHistogram's V2 format",
        ));
    }
    let payload_len = be_u32(&raw, 4).ok_or_else(short)?;
    let normalizing_offset = be_u32(&raw, 8).ok_or_else(short)?;
    let sigfig = be_u32(&raw, 12).ok_or_else(short)?;
    let low = be_u64(&raw, 16).ok_or_else(short)?;
    let high = be_u64(&raw, 24).ok_or_else(short)?;
    let ratio_bits = be_u64(&raw, 32).ok_or_else(short)?;
    let payload = raw.get(V2_HEADER_LEN..).unwrap_or_default();
    if usize::try_from(payload_len).ok() != Some(payload.len()) {
        return Err(malformed(format!(
            "the V2 header announces {payload_len} bytes of counts but {} follow",
            payload.len()
        )));
    }
    if low != LATENCY_LOW_US || high != LATENCY_HIGH_US || sigfig != u32::from(LATENCY_SIGFIG) {
        return Err(MetricsError::Bounds {
            low,
            high,
            sigfig: u8::try_from(sigfig).unwrap_or(u8::MAX),
        });
    }
    if normalizing_offset != 0 || f64::from_bits(ratio_bits) != 1.0 {
        return Err(malformed(
            "normalizing offsets and integer-to-double ratios other than 1 are not supported",
        ));
    }
    let template = new_latency_histogram();
    check_counts(payload, template.distinct_values())?;

    // Now the header can be trusted: its allocation is a histogram of Volley's bounds, and
    // its counts fit, are non-negative, and cannot overflow.
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut raw.as_slice())
        .map_err(MetricsError::Decode)?;
    if h.low() != LATENCY_LOW_US || h.high() != LATENCY_HIGH_US || h.sigfig() != LATENCY_SIGFIG {
        return Err(MetricsError::Bounds {
            low: h.low(),
            high: h.high(),
            sigfig: h.sigfig(),
        });
    }
    if !h.is_empty() {
        if h.min() < LATENCY_LOW_US {
            return Err(MetricsError::OutOfRange { value: h.min() });
        }
        if h.max() > h.highest_equivalent(LATENCY_HIGH_US) {
            return Err(MetricsError::OutOfRange {
                value: h.lowest_equivalent(h.max()),
            });
        }
    }
    Ok(h)
}

/// Walks the V2 counts encoding (zig-zag LEB128, at most 9 bytes per number; a negative
/// number is a run of that many empty counters) the way HdrHistogram's deserializer does, and
/// rejects what would make it misbehave: runs or counts past `counts_len`, truncated numbers,
/// and totals over [`MAX_HISTOGRAM_COUNT`].
fn check_counts(payload: &[u8], counts_len: usize) -> Result<(), MetricsError> {
    let mut at = 0usize;
    let mut index = 0usize;
    let mut total = 0u64;
    while at < payload.len() {
        let mut raw = 0u64;
        let mut shift = 0u32;
        loop {
            let b = *payload
                .get(at)
                .ok_or_else(|| malformed("a count is cut off at the end of the data"))?;
            at += 1;
            if shift == 56 {
                // The 9th byte carries 8 bits as they are.
                raw |= u64::from(b) << 56;
                break;
            }
            raw |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        // Zig-zag decoding, without the overflow of negating i64::MIN.
        let negative = raw & 1 == 1;
        let magnitude = (raw >> 1) + u64::from(negative);
        let past_end = || malformed("counts run past the end of the histogram's range");
        if negative {
            let zeros = usize::try_from(magnitude).map_err(|_| past_end())?;
            index = index.checked_add(zeros).ok_or_else(past_end)?;
            if index > counts_len {
                return Err(past_end());
            }
        } else {
            if magnitude > 0 {
                if index >= counts_len {
                    return Err(past_end());
                }
                total = total.saturating_add(magnitude);
                if total > MAX_HISTOGRAM_COUNT {
                    return Err(MetricsError::TooManySamples);
                }
            }
            index += 1;
            if index > counts_len {
                return Err(past_end());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use volley_crds::spec::{Request, Scenario, Sleep, Threshold, ThresholdSpec};

    // ---- helpers ----

    /// A small deterministic generator (splitmix64), so tests need no RNG crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Log-normal: median `median_us`, shape `sigma`.
        fn lognormal_us(&mut self, median_us: f64, sigma: f64) -> u64 {
            let u1 = self.unit().max(1e-12);
            let u2 = self.unit();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (median_us * (sigma * z).exp()) as u64
        }
    }

    fn hist(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = new_latency_histogram();
        for v in values {
            record_latency(&mut h, Duration::from_micros(v));
        }
        h
    }

    fn request_step(name: Option<&str>, method: &str, url: &str) -> Step {
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

    fn sleep_step() -> Step {
        Step {
            sleep: Some(Sleep::Fixed(volley_crds::Duration::from_secs(1))),
            ..Step::default()
        }
    }

    /// setup [login], light [convert, sleep, GET /api/jobs], heavy [upload].
    fn spec() -> LoadTestSpec {
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
    fn record(m: &mut Measurements, us: u64, n: u64, fail_every: u64) {
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

    fn measurements(values: &[u64]) -> Measurements {
        let mut m = Measurements::default();
        for &v in values {
            record(&mut m, v, 1, 0);
        }
        m
    }

    fn with_thresholds(thresholds: Vec<ThresholdSpec>) -> LoadTestSpec {
        LoadTestSpec {
            thresholds,
            ..spec()
        }
    }

    fn scoped(expr: &str, scenario: Option<&str>, step: Option<&str>) -> ThresholdSpec {
        ThresholdSpec::Detailed(Threshold {
            expr: expr.to_owned(),
            scenario: scenario.map(str::to_owned),
            step: step.map(str::to_owned),
            ..Threshold::default()
        })
    }

    /// Builds a V2 compressed histogram from a hand-made uncompressed body, for hostile input.
    fn compress(raw: &[u8]) -> String {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(raw).unwrap();
        let stream = z.finish().unwrap();
        let mut bytes = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        bytes.extend((stream.len() as u32).to_be_bytes());
        bytes.extend(stream);
        BASE64.encode(bytes)
    }

    /// A V2 header with our bounds (or the given ones) and `payload_len`.
    fn v2_header(payload_len: u32, sigfig: u32, low: u64, high: u64) -> Vec<u8> {
        let mut b = V2_COOKIE.to_be_bytes().to_vec();
        b.extend(payload_len.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(sigfig.to_be_bytes());
        b.extend(low.to_be_bytes());
        b.extend(high.to_be_bytes());
        b.extend(1.0f64.to_bits().to_be_bytes());
        b
    }

    fn ours(payload: &[u8]) -> String {
        let mut raw = v2_header(payload.len() as u32, 3, 1, LATENCY_HIGH_US);
        raw.extend(payload);
        compress(&raw)
    }

    // ---- recording ----

    #[test]
    fn latency_histogram_has_the_design_bounds() {
        let h = new_latency_histogram();
        assert_eq!((h.low(), h.high(), h.sigfig()), (1, 3_600_000_000, 3));
        assert!(!h.is_auto_resize());
        assert!(h.is_empty());
    }

    #[test]
    fn record_latency_rounds_to_microseconds_and_clamps() {
        let mut h = new_latency_histogram();
        record_latency(&mut h, Duration::ZERO);
        record_latency(&mut h, Duration::from_nanos(999));
        assert_eq!((h.len(), h.min(), h.max()), (2, 1, 1));

        let mut h = new_latency_histogram();
        record_latency(&mut h, Duration::from_nanos(1_500_999));
        assert_eq!(h.max(), 1500);
        assert_eq!(h.min(), 1500);

        let mut h = new_latency_histogram();
        record_latency(&mut h, Duration::from_secs(7200));
        record_latency(&mut h, Duration::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.equivalent(h.min(), LATENCY_HIGH_US));
        assert_eq!(h.max(), h.highest_equivalent(LATENCY_HIGH_US));
        assert_eq!(h.count_at(LATENCY_HIGH_US), 2);
    }

    // ---- counters and measurements ----

    #[test]
    fn counters_add_every_field_and_merge_error_kinds() {
        let mut a = Counters {
            requests: 10,
            failures: 2,
            iterations: 5,
            dropped_iterations: 1,
            interrupted_iterations: 2,
            checks_passed: 7,
            checks_failed: 1,
            bytes_sent: 100,
            bytes_received: 1000,
            errors: BTreeMap::from([("5xx".to_owned(), 2)]),
        };
        let b = Counters {
            requests: 1,
            failures: 1,
            iterations: 2,
            dropped_iterations: 3,
            interrupted_iterations: 5,
            checks_passed: 4,
            checks_failed: 5,
            bytes_sent: 6,
            bytes_received: 7,
            errors: BTreeMap::from([("5xx".to_owned(), 1), ("timeout".to_owned(), 4)]),
        };
        a.add(&b);
        assert_eq!(
            a,
            Counters {
                requests: 11,
                failures: 3,
                iterations: 7,
                dropped_iterations: 4,
                interrupted_iterations: 7,
                checks_passed: 11,
                checks_failed: 6,
                bytes_sent: 106,
                bytes_received: 1007,
                errors: BTreeMap::from([("5xx".to_owned(), 3), ("timeout".to_owned(), 4)]),
            }
        );
        let mut big = Counters {
            requests: u64::MAX - 1,
            errors: BTreeMap::from([("connect".to_owned(), u64::MAX)]),
            ..Counters::default()
        };
        big.add(&Counters {
            requests: 5,
            errors: BTreeMap::from([("connect".to_owned(), 5)]),
            ..Counters::default()
        });
        assert_eq!(big.requests, u64::MAX);
        assert_eq!(big.errors["connect"], u64::MAX);
    }

    #[test]
    fn since_is_the_exact_difference_of_two_snapshots() {
        let mut early = Measurements::default();
        record_latency(&mut early.latency, Duration::from_millis(1));
        early.counters.requests = 1;
        early.counters.errors = BTreeMap::from([("5xx".to_owned(), 1)]);
        let mut late = early.clone();
        record_latency(&mut late.latency, Duration::from_millis(50));
        record_latency(&mut late.failed_latency, Duration::from_millis(50));
        late.counters.requests = 2;
        late.counters.failures = 1;
        late.counters.errors.insert("timeout".to_owned(), 1);
        let d = late.since(&early).unwrap();
        assert_eq!(d.latency.len(), 1);
        assert!(d.latency.equivalent(d.latency.min(), 50_000));
        assert_eq!(d.failed_latency.len(), 1);
        assert_eq!((d.counters.requests, d.counters.failures), (1, 1));
        assert_eq!(
            d.counters.errors,
            BTreeMap::from([("timeout".to_owned(), 1)])
        );
        // Backwards, or an error kind that vanished: not successive snapshots.
        assert!(early.since(&late).is_err());
        let mut lost = late.clone();
        lost.counters.errors.remove("5xx");
        assert!(matches!(
            lost.since(&early),
            Err(MetricsError::NotCumulative { .. })
        ));
    }

    #[test]
    fn count_error_counts_a_failure_under_the_serde_name() {
        let kinds = [
            ErrorKind::Connect,
            ErrorKind::Timeout,
            ErrorKind::Status4xx,
            ErrorKind::Status5xx,
            ErrorKind::Check,
            ErrorKind::Extract,
        ];
        let mut c = Counters::default();
        for (i, kind) in kinds.into_iter().enumerate() {
            let serde_name = serde_json::to_value(kind).unwrap();
            assert_eq!(serde_name.as_str(), Some(error_kind_name(kind)));
            for _ in 0..=i {
                c.count_error(kind);
            }
        }
        assert_eq!(c.failures, 21);
        assert_eq!(c.errors.values().sum::<u64>(), c.failures);
        assert_eq!(c.errors["connect"], 1);
        assert_eq!(c.errors["4xx"], 3);
        assert_eq!(c.errors["extract"], 6);
        assert_eq!(c.requests, 0);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["checksPassed"], 0);
        assert_eq!(json["errors"]["5xx"], 4);
    }

    #[test]
    fn measurements_add_equals_recording_everything_in_one() {
        let mut rng = Rng(7);
        let mut all = Measurements::default();
        let mut parts = [Measurements::default(), Measurements::default()];
        for i in 0..5000u64 {
            let us = rng.lognormal_us(20_000.0, 1.0);
            let fail = if i % 17 == 0 { 1 } else { 0 };
            record(&mut all, us, 1, fail);
            record(&mut parts[(i % 2) as usize], us, 1, fail);
        }
        assert_ne!(parts[0], all);
        let [mut a, b] = parts;
        a.add(&b).unwrap();
        assert_eq!(a, all);
        assert_eq!(a.counters.requests, 5000);
        assert_eq!(a.failed_latency.len(), a.counters.failures);
    }

    #[test]
    fn measurements_equality_is_by_value() {
        assert_eq!(
            measurements(&[5, 900, 40_000]),
            measurements(&[40_000, 5, 900])
        );
        assert_ne!(measurements(&[5, 900]), measurements(&[5, 901]));
        assert_ne!(measurements(&[5, 900]), measurements(&[5, 900, 900]));
        // A histogram of other bounds holding the same samples is still the same data.
        let mut other = measurements(&[5, 900]);
        other.latency = Histogram::new_with_bounds(1, 10_000, 3).unwrap();
        other.latency.record(5).unwrap();
        other.latency.record(900).unwrap();
        assert_eq!(other, measurements(&[5, 900]));
        let mut counted = measurements(&[5, 900]);
        counted.counters.bytes_sent = 1;
        assert_ne!(counted, measurements(&[5, 900]));
        // Debug is a summary, not 23 000 counters.
        assert!(format!("{:?}", measurements(&[5, 900])).len() < 600);
    }

    #[test]
    fn add_rejects_out_of_range_histograms_and_changes_nothing() {
        let mut wide = Measurements {
            latency_sent: Histogram::new_with_bounds(1, 100 * LATENCY_HIGH_US, 3).unwrap(),
            ..Measurements::default()
        };
        wide.latency_sent.record(50 * LATENCY_HIGH_US).unwrap();
        wide.latency.record(1000).unwrap();
        let mut m = measurements(&[10, 20]);
        let before = m.clone();
        let err = m.add(&wide).unwrap_err();
        assert!(matches!(err, MetricsError::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("tracks up to 3600000000"), "{err}");
        assert_eq!(m, before);

        // The same in a run merge: nothing at all is merged.
        let mut run = RunMetrics::for_spec(&spec());
        *run.step_mut(1, 0).unwrap() = measurements(&[10]);
        let before = run.clone();
        let mut other = RunMetrics::for_spec(&spec());
        *other.step_mut(0, 0).unwrap() = measurements(&[30]);
        *other.step_mut(1, 1).unwrap() = wide;
        let err = run.merge(&other).unwrap_err();
        assert!(
            err.to_string()
                .contains("scenario `light` step `GET /api/jobs`"),
            "{err}"
        );
        assert_eq!(run, before);
        // check_merge says the same against the empty shape, without merging.
        let shape = RunMetrics::for_spec(&spec());
        let err = shape.check_merge(&other).unwrap_err();
        assert!(
            err.to_string()
                .contains("scenario `light` step `GET /api/jobs`"),
            "{err}"
        );
        assert_eq!(shape, RunMetrics::for_spec(&spec()));
        *other.step_mut(1, 1).unwrap() = measurements(&[40]);
        assert!(shape.check_merge(&other).is_ok());
    }

    // ---- the run model ----

    #[test]
    fn for_spec_is_shaped_like_the_spec() {
        let run = RunMetrics::for_spec(&spec());
        let shape: Vec<(&str, Vec<&str>)> = run
            .scenarios
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.steps.iter().map(|st| st.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("setup", vec!["login"]),
                ("light", vec!["convert", "GET /api/jobs"]),
                ("heavy", vec!["upload"]),
            ]
        );
        assert!(
            run.scenarios
                .iter()
                .flat_map(|s| &s.steps)
                .all(|s| s.m == Measurements::default())
        );

        let no_setup = RunMetrics::for_spec(&LoadTestSpec {
            setup: vec![],
            ..spec()
        });
        assert_eq!(no_setup.scenarios[0].name, "light");
        assert_eq!(no_setup.scenarios.len(), 2);
    }

    #[test]
    fn step_mut_scenario_and_totals() {
        let mut run = RunMetrics::for_spec(&spec());
        record(run.step_mut(0, 0).unwrap(), 50_000, 1, 0); // setup login
        record(run.step_mut(1, 0).unwrap(), 10_000, 10, 5); // light convert
        record(run.step_mut(1, 1).unwrap(), 2_000, 20, 0); // light GET /api/jobs
        record(run.step_mut(2, 0).unwrap(), 400_000, 4, 0); // heavy upload
        run.scenarios[1].iterations.iterations = 10;
        run.scenarios[1].iterations.dropped_iterations = 2;
        run.scenarios[2].iterations.iterations = 4;
        assert!(run.step_mut(1, 2).is_none());
        assert!(run.step_mut(3, 0).is_none());
        assert_eq!(run.scenario("heavy").unwrap().steps.len(), 1);
        assert!(run.scenario("nope").is_none());

        let overall = run.overall();
        assert_eq!(overall.counters.requests, 34, "setup is not counted");
        assert_eq!(overall.counters.failures, 2);
        assert_eq!(overall.counters.iterations, 14);
        assert_eq!(overall.counters.dropped_iterations, 2);
        assert_eq!(overall.latency.len(), 34);
        assert_eq!(
            overall.latency.max(),
            overall.latency.highest_equivalent(400_000)
        );
        assert_eq!(overall.failed_latency.len(), 2);

        let light = run.scenario_total("light").unwrap();
        assert_eq!(light.counters.requests, 30);
        assert_eq!(light.counters.iterations, 10);
        assert_eq!(light, {
            let mut m = run.step_total("light", "convert").unwrap();
            m.add(&run.step_total("light", "GET /api/jobs").unwrap())
                .unwrap();
            m.counters.add(&run.scenarios[1].iterations);
            m
        });
        assert_eq!(run.scenario_total("setup").unwrap().counters.requests, 1);
        let convert = run.step_total("light", "convert").unwrap();
        assert_eq!(convert.counters.requests, 10);
        assert_eq!(convert.counters.iterations, 0);
        assert!(run.step_total("light", "upload").is_none());
        assert!(run.scenario_total("nope").is_none());
        assert_eq!(RunMetrics::default().overall(), Measurements::default());
    }

    #[test]
    fn merge_matches_by_name_and_appends_unknown_names() {
        let mut a = RunMetrics::for_spec(&spec());
        record(a.step_mut(1, 0).unwrap(), 1000, 3, 0);
        a.scenarios[1].iterations.iterations = 3;

        // Another runner whose model lists things in another order, with extra names.
        let mut b = RunMetrics {
            scenarios: vec![
                ScenarioMetrics {
                    name: "heavy".to_owned(),
                    iterations: Counters {
                        iterations: 1,
                        ..Counters::default()
                    },
                    steps: vec![StepMetrics {
                        name: "upload".to_owned(),
                        m: measurements(&[9_000]),
                    }],
                },
                ScenarioMetrics {
                    name: "light".to_owned(),
                    iterations: Counters {
                        iterations: 2,
                        dropped_iterations: 1,
                        ..Counters::default()
                    },
                    steps: vec![
                        StepMetrics {
                            name: "new step".to_owned(),
                            m: measurements(&[7]),
                        },
                        StepMetrics {
                            name: "convert".to_owned(),
                            m: measurements(&[2000, 3000]),
                        },
                    ],
                },
                ScenarioMetrics {
                    name: "surprise".to_owned(),
                    iterations: Counters::default(),
                    steps: vec![StepMetrics {
                        name: "x".to_owned(),
                        m: measurements(&[1]),
                    }],
                },
            ],
        };
        b.scenarios[1].steps[1]
            .m
            .counters
            .count_error(ErrorKind::Timeout);
        a.merge(&b).unwrap();

        let names: Vec<&str> = a.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["setup", "light", "heavy", "surprise"]);
        let light = a.scenario("light").unwrap();
        let steps: Vec<&str> = light.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(steps, ["convert", "GET /api/jobs", "new step"]);
        assert_eq!(light.iterations.iterations, 5);
        assert_eq!(light.iterations.dropped_iterations, 1);
        let convert = a.step_total("light", "convert").unwrap();
        let mut expected = measurements(&[1000, 1000, 1000, 2000, 3000]);
        expected.counters.count_error(ErrorKind::Timeout);
        assert_eq!(convert, expected);
        assert_eq!(
            a.step_total("light", "new step").unwrap(),
            measurements(&[7])
        );
        assert_eq!(
            a.step_total("heavy", "upload").unwrap(),
            measurements(&[9_000])
        );
        assert_eq!(a.step_total("surprise", "x").unwrap(), measurements(&[1]));
        assert_eq!(a.overall().counters.requests, 3 + 2 + 1 + 1 + 1);
        assert_eq!(a.overall().counters.iterations, 3 + 1 + 2);

        // Merging into an empty model copies everything.
        let mut empty = RunMetrics::default();
        empty.merge(&a).unwrap();
        assert_eq!(empty, a);
    }

    #[test]
    fn merge_of_runners_is_exact() {
        // 100 000 samples spread over 4 runners and 2 steps: the merge must be identical to
        // one histogram fed every sample, not just close.
        let spec = spec();
        let mut rng = Rng(42);
        let mut runners: Vec<RunMetrics> = (0..4).map(|_| RunMetrics::for_spec(&spec)).collect();
        let mut reference = new_latency_histogram();
        let mut reference_convert = new_latency_histogram();
        for i in 0..100_000u64 {
            // Mostly log-normal around 20 ms, some tail up to minutes, a few over an hour.
            let us = match i % 1000 {
                0 => rng.next() % (2 * LATENCY_HIGH_US),
                1..=20 => rng.next() % 120_000_000,
                _ => rng.lognormal_us(20_000.0, 0.8),
            };
            let runner = (rng.next() % 4) as usize;
            let step = (rng.next() % 2) as usize;
            let d = Duration::from_micros(us);
            let m = runners[runner].step_mut(1, step).unwrap();
            record_latency(&mut m.latency, d);
            m.counters.requests += 1;
            record_latency(&mut reference, d);
            if step == 0 {
                record_latency(&mut reference_convert, d);
            }
        }
        let mut merged = RunMetrics::for_spec(&spec);
        for r in &runners {
            // Through the wire format too: what the aggregator sees.
            let report = Report::from_metrics(0, 1, Duration::from_secs(1), false, r).unwrap();
            let json = serde_json::to_string(&report).unwrap();
            let back: Report = serde_json::from_str(&json).unwrap();
            merged.merge(&back.to_metrics().unwrap()).unwrap();
        }
        let overall = merged.overall();
        let h = &overall.latency;
        assert_eq!(h.len(), 100_000);
        assert_eq!(overall.counters.requests, 100_000);
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                h.value_at_quantile(q),
                reference.value_at_quantile(q),
                "q={q}"
            );
        }
        assert_eq!(h.max(), reference.max());
        assert_eq!(h.min(), reference.min());
        assert_eq!(h.mean(), reference.mean());
        assert!(same_histogram(h, &reference));
        let convert = merged.step_total("light", "convert").unwrap();
        assert!(same_histogram(&convert.latency, &reference_convert));
        // Clamped samples are kept, at one hour.
        assert_eq!(h.max(), h.highest_equivalent(LATENCY_HIGH_US));
    }

    fn arb_measurements() -> impl Strategy<Value = Measurements> {
        (
            prop::collection::vec(1u64..=LATENCY_HIGH_US, 0..12),
            prop::collection::vec(1u64..=5_000u64, 0..6),
            0u64..50,
            0u64..5,
        )
            .prop_map(|(lat, failed, requests, errors)| {
                let mut m = Measurements::default();
                for v in &lat {
                    m.latency.record(*v).unwrap();
                    m.latency_sent.record((*v / 2).max(1)).unwrap();
                }
                for v in failed {
                    m.failed_latency.record(v).unwrap();
                }
                m.counters.requests = requests;
                for _ in 0..errors {
                    m.counters.count_error(ErrorKind::Connect);
                }
                m
            })
    }

    /// A small run with names drawn from small sets, so merges both match and append.
    fn arb_run() -> impl Strategy<Value = RunMetrics> {
        prop::collection::vec(
            (
                0usize..3,
                0u64..10,
                prop::collection::vec((0usize..3, arb_measurements()), 0..3),
            ),
            0..3,
        )
        .prop_map(|scenarios| {
            let mut run = RunMetrics::default();
            for (s, iterations, steps) in scenarios {
                let mut sc = ScenarioMetrics {
                    name: ["a", "b", "setup"][s].to_owned(),
                    iterations: Counters {
                        iterations,
                        ..Counters::default()
                    },
                    steps: vec![],
                };
                for (st, m) in steps {
                    sc.steps.push(StepMetrics {
                        name: ["x", "y", "z"][st].to_owned(),
                        m,
                    });
                }
                // Build through merge, so names are unique within the run, like for_spec's.
                run.merge(&RunMetrics {
                    scenarios: vec![sc],
                })
                .unwrap();
            }
            run
        })
    }

    /// Merge order decides where appended names land; content must not depend on it.
    type Normalized = Vec<(String, Counters, Vec<(String, Measurements)>)>;

    fn normalized(run: &RunMetrics) -> Normalized {
        let mut v: Vec<_> = run
            .scenarios
            .iter()
            .map(|s| {
                let mut steps: Vec<_> = s
                    .steps
                    .iter()
                    .map(|st| (st.name.clone(), st.m.clone()))
                    .collect();
                steps.sort_by(|x, y| x.0.cmp(&y.0));
                (s.name.clone(), s.iterations.clone(), steps)
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    }

    fn merged(parts: &[&RunMetrics]) -> RunMetrics {
        let mut out = RunMetrics::default();
        for p in parts {
            out.merge(p).unwrap();
        }
        out
    }

    proptest! {
        // 64 cases by default (each merges whole runs); `PROPTEST_CASES` raises it for a sweep.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn merge_is_commutative(a in arb_run(), b in arb_run()) {
            prop_assert_eq!(normalized(&merged(&[&a, &b])), normalized(&merged(&[&b, &a])));
        }

        #[test]
        fn merge_is_associative(a in arb_run(), b in arb_run(), c in arb_run()) {
            let left = merged(&[&merged(&[&a, &b]), &c]);
            let mut bc = b.clone();
            bc.merge(&c).unwrap();
            let mut right = a.clone();
            right.merge(&bc).unwrap();
            prop_assert_eq!(normalized(&left), normalized(&right));
        }

        #[test]
        fn merge_of_same_shaped_runs_commutes_exactly(a in arb_measurements(), b in arb_measurements()) {
            let spec = spec();
            let mut x = RunMetrics::for_spec(&spec);
            *x.step_mut(1, 1).unwrap() = a;
            let mut y = RunMetrics::for_spec(&spec);
            *y.step_mut(1, 1).unwrap() = b;
            let mut xy = x.clone();
            xy.merge(&y).unwrap();
            let mut yx = y.clone();
            yx.merge(&x).unwrap();
            prop_assert_eq!(xy, yx);
        }

        #[test]
        fn encode_decode_round_trips(
            values in prop::collection::vec((1u64..=LATENCY_HIGH_US, 1u64..1_000_000), 0..200),
        ) {
            let mut h = new_latency_histogram();
            for (v, n) in &values {
                h.record_n(*v, *n).unwrap();
            }
            let back = decode_histogram(&encode_histogram(&h).unwrap()).unwrap();
            prop_assert!(same_histogram(&h, &back));
            prop_assert_eq!((back.low(), back.high(), back.sigfig()), (h.low(), h.high(), h.sigfig()));
            prop_assert_eq!(back.len(), h.len());
            prop_assert_eq!(back.max(), h.max());
            prop_assert_eq!(back.min(), h.min());
        }

        #[test]
        fn decoding_random_text_never_panics(s in "[A-Za-z0-9+/=]{0,200}") {
            let _ = decode_histogram(&s);
        }

        #[test]
        fn decoding_corrupted_histograms_never_panics(
            values in prop::collection::vec(1u64..=LATENCY_HIGH_US, 1..50),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            // Corrupt the *decompressed* bytes, then recompress, so the corruption reaches the
            // V2 parser instead of being caught by zlib's checksum.
            let h = hist(values);
            let bytes = BASE64.decode(encode_histogram(&h).unwrap()).unwrap();
            let mut raw = Vec::new();
            flate2::read::ZlibDecoder::new(&bytes[8..]).read_to_end(&mut raw).unwrap();
            for (at, byte) in flips {
                let i = at.index(raw.len());
                raw[i] ^= byte;
            }
            let _ = decode_histogram(&compress(&raw));
            // And the compressed bytes themselves.
            let mut bytes = bytes;
            let i = bytes.len() / 2;
            bytes[i] ^= 0x55;
            let _ = decode_histogram(&BASE64.encode(&bytes));
        }
    }

    // ---- decoding hostile input ----

    #[test]
    fn decode_rejects_empty_and_bad_base64() {
        assert!(matches!(
            decode_histogram(""),
            Err(MetricsError::EmptyHistogram)
        ));
        for bad in ["not base64!", "HISTFAA", "====", "abc"] {
            let err = decode_histogram(bad).unwrap_err();
            assert!(matches!(err, MetricsError::Base64(_)), "{bad}: {err}");
            assert!(err.to_string().contains("not valid base64"));
        }
        // Valid base64 that is not a histogram.
        let err = decode_histogram(&BASE64.encode(b"hello world")).unwrap_err();
        assert!(
            err.to_string()
                .contains("not HdrHistogram's V2 compressed format"),
            "{err}"
        );
        let err = decode_histogram(&BASE64.encode([0x1c, 0x84])).unwrap_err();
        assert!(
            err.to_string().contains("shorter than its 8-byte header"),
            "{err}"
        );
    }

    #[test]
    fn decode_rejects_truncated_payloads() {
        let h = hist([10, 2000, 30_000, 400_000, 5_000_000]);
        let bytes = BASE64.decode(encode_histogram(&h).unwrap()).unwrap();
        for cut in [1, 4, 8, 9, bytes.len() / 2, bytes.len() - 1] {
            let err = decode_histogram(&BASE64.encode(&bytes[..cut])).unwrap_err();
            assert!(
                matches!(err, MetricsError::Malformed(_)),
                "cut {cut}: {err}"
            );
        }
        // Truncated with the length field fixed up: zlib notices.
        let mut fixed = bytes[..bytes.len() - 4].to_vec();
        let len = (fixed.len() - 8) as u32;
        fixed[4..8].copy_from_slice(&len.to_be_bytes());
        let err = decode_histogram(&BASE64.encode(&fixed)).unwrap_err();
        assert!(err.to_string().contains("corrupt or truncated"), "{err}");
        // Trailing bytes after the stream.
        let mut longer = bytes.clone();
        longer.extend([0, 0, 0]);
        let len = (longer.len() - 8) as u32;
        longer[4..8].copy_from_slice(&len.to_be_bytes());
        let err = decode_histogram(&BASE64.encode(&longer)).unwrap_err();
        assert!(
            err.to_string().contains("after the compressed data"),
            "{err}"
        );
        // A counts payload cut inside a number.
        let err = decode_histogram(&ours(&[0x80])).unwrap_err();
        assert!(err.to_string().contains("cut off"), "{err}");
    }

    #[test]
    fn decode_rejects_other_bounds_and_precision() {
        for (low, high, sigfig) in [
            (1u64, 10_000_000u64, 3u8),
            (1, LATENCY_HIGH_US, 2),
            (1, LATENCY_HIGH_US, 4),
            (1000, LATENCY_HIGH_US, 3),
            (1, 1 << 40, 4),
        ] {
            let mut h = Histogram::<u64>::new_with_bounds(low, high, sigfig).unwrap();
            h.record(5000).unwrap();
            let err = decode_histogram(&encode_histogram(&h).unwrap()).unwrap_err();
            assert!(matches!(err, MetricsError::Bounds { .. }), "{err}");
            assert!(
                err.to_string()
                    .contains(&format!("{sigfig} significant digits")),
                "{err}"
            );
        }
        // An uncompressed V2 histogram is not the wire format.
        let mut raw = Vec::new();
        hdrhistogram::serialization::V2Serializer::new()
            .serialize(&hist([5]), &mut raw)
            .unwrap();
        let err = decode_histogram(&BASE64.encode(&raw)).unwrap_err();
        assert!(err.to_string().contains("cookie"), "{err}");
    }

    #[test]
    fn decode_rejects_values_outside_the_range() {
        // Values a Volley histogram can hold but record_latency never produces.
        let mut zero = new_latency_histogram();
        zero.record(0).unwrap();
        zero.record(5).unwrap();
        let err = decode_histogram(&encode_histogram(&zero).unwrap()).unwrap_err();
        assert!(
            matches!(err, MetricsError::OutOfRange { value: 0 }),
            "{err}"
        );

        let mut above = new_latency_histogram();
        above.record(4_000_000_000).unwrap(); // above 1 h, inside the last bucket
        let err = decode_histogram(&encode_histogram(&above).unwrap()).unwrap_err();
        assert!(matches!(err, MetricsError::OutOfRange { .. }), "{err}");
        assert!(
            err.to_string().contains("outside the range of 1 µs to 1 h"),
            "{err}"
        );

        let mut top = new_latency_histogram();
        record_latency(&mut top, Duration::from_secs(3600));
        assert!(decode_histogram(&encode_histogram(&top).unwrap()).is_ok());
    }

    #[test]
    fn decode_rejects_hostile_headers_and_counts_without_allocating_from_them() {
        // A header that claims 4 GiB of counts.
        let mut raw = v2_header(u32::MAX, 3, 1, LATENCY_HIGH_US);
        raw.extend([2, 2, 2]);
        let err = decode_histogram(&compress(&raw)).unwrap_err();
        assert!(
            err.to_string().contains("announces 4294967295 bytes"),
            "{err}"
        );

        // Bounds that would make HdrHistogram allocate hundreds of MB.
        let mut raw = v2_header(1, 5, 1, u64::MAX / 4);
        raw.push(2);
        assert!(matches!(
            decode_histogram(&compress(&raw)),
            Err(MetricsError::Bounds { .. })
        ));

        // A zip bomb: 8 MiB of zeros compress to a few KB.
        let mut raw = v2_header(8 << 20, 3, 1, LATENCY_HIGH_US);
        raw.resize(raw.len() + (8 << 20), 0);
        let bomb = compress(&raw);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let err = decode_histogram(&bomb).unwrap_err();
        assert!(
            matches!(
                err,
                MetricsError::TooLarge {
                    what: "decompressed",
                    ..
                }
            ),
            "{err}"
        );

        // Oversized before decoding.
        let err = decode_histogram(&"A".repeat(2 << 20)).unwrap_err();
        assert!(
            matches!(
                err,
                MetricsError::TooLarge {
                    what: "encoded",
                    ..
                }
            ),
            "{err}"
        );

        // Zig-zag of u64::MAX is i64::MIN, which HdrHistogram would negate (overflow).
        let min = [0xff; 9];
        let err = decode_histogram(&ours(&min)).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
        // A run of zeros past the end, and a count after the last counter.
        let err = decode_histogram(&ours(&[0x81, 0x80, 0x80, 0x01])).unwrap_err(); // -(2^20)-1
        assert!(err.to_string().contains("past the end"), "{err}");
        let len = new_latency_histogram().distinct_values() as u64;
        let mut run = Vec::new();
        let mut zz = (len << 1) - 1; // zig-zag of -len
        while zz >= 0x80 {
            run.push((zz as u8) | 0x80);
            zz >>= 7;
        }
        run.push(zz as u8);
        assert!(
            decode_histogram(&ours(&run)).is_ok(),
            "skipping exactly to the end is fine"
        );
        run.push(2); // then a count of 1 past the end
        let err = decode_histogram(&ours(&run)).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");

        // Counts that would overflow when merged.
        let mut huge = new_latency_histogram();
        huge.record_n(1000, MAX_HISTOGRAM_COUNT + 1).unwrap();
        let err = decode_histogram(&encode_histogram(&huge).unwrap()).unwrap_err();
        assert!(matches!(err, MetricsError::TooManySamples), "{err}");
        let mut ok = new_latency_histogram();
        ok.record_n(1000, MAX_HISTOGRAM_COUNT).unwrap();
        assert_eq!(
            decode_histogram(&encode_histogram(&ok).unwrap())
                .unwrap()
                .len(),
            MAX_HISTOGRAM_COUNT
        );

        // A normalizing offset is not supported.
        let mut raw = v2_header(1, 3, 1, LATENCY_HIGH_US);
        raw[8..12].copy_from_slice(&1u32.to_be_bytes());
        raw.push(2);
        let err = decode_histogram(&compress(&raw)).unwrap_err();
        assert!(err.to_string().contains("normalizing"), "{err}");

        // The empty histogram is fine.
        assert!(decode_histogram(&ours(&[])).unwrap().is_empty());
    }

    // ---- reports ----

    fn busy_run(seed: u64, requests_per_step: u64, sigma: f64) -> RunMetrics {
        let spec = LoadTestSpec {
            scenarios: vec![Scenario {
                name: "checkout".to_owned(),
                steps: (0..10)
                    .map(|i| request_step(Some(&format!("step-{i}")), "GET", "/x"))
                    .collect(),
                ..Scenario::default()
            }],
            ..LoadTestSpec::default()
        };
        let mut run = RunMetrics::for_spec(&spec);
        let mut rng = Rng(seed);
        for step in 0..10 {
            let median = 5_000.0 * (step as f64 + 1.0);
            let m = run.step_mut(0, step).unwrap();
            for i in 0..requests_per_step {
                // Latency from the schedule >= latency from the send.
                let sent = rng.lognormal_us(median, sigma).max(100);
                let queued = if rng.next().is_multiple_of(50) {
                    rng.next() % 200_000
                } else {
                    0
                };
                record_latency(&mut m.latency, Duration::from_micros(sent + queued));
                record_latency(&mut m.latency_sent, Duration::from_micros(sent));
                m.counters.requests += 1;
                m.counters.bytes_sent += 300;
                m.counters.bytes_received += 2000;
                m.counters.checks_passed += 1;
                if i % 200 == 0 {
                    record_latency(&mut m.failed_latency, Duration::from_micros(sent));
                    m.counters.count_error(ErrorKind::Status5xx);
                }
            }
        }
        run.scenarios[0].iterations.iterations = requests_per_step;
        run
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut run = busy_run(1, 500, 0.7);
        run.scenarios
            .insert(0, RunMetrics::for_spec(&spec()).scenarios.remove(0));
        record(run.step_mut(0, 0).unwrap(), 80_000, 1, 0);
        let report =
            Report::from_metrics(3, 17, Duration::from_millis(12_345), true, &run).unwrap();
        assert_eq!(
            (report.runner, report.seq, report.elapsed_ms, report.done),
            (3, 17, 12_345, true)
        );
        assert_eq!(report.elapsed(), Duration::from_millis(12_345));
        let json = serde_json::to_value(&report).unwrap();
        for key in ["runner", "seq", "elapsedMs", "done", "scenarios"] {
            assert!(json.get(key).is_some(), "{key}");
        }
        let step = &json["scenarios"][1]["steps"][0];
        for key in [
            "name",
            "counters",
            "latency",
            "latencySent",
            "failedLatency",
        ] {
            assert!(step.get(key).is_some(), "{key}");
        }
        assert_eq!(step["counters"]["errors"]["5xx"], 3);
        assert_eq!(json["scenarios"][1]["iterations"]["iterations"], 500);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert_eq!(back.to_metrics().unwrap(), run);
    }

    #[test]
    fn report_decoding_errors_name_the_histogram() {
        let mut report =
            Report::from_metrics(0, 1, Duration::ZERO, false, &busy_run(2, 10, 0.7)).unwrap();
        report.scenarios[0].steps[4].latency_sent = "garbage!".to_owned();
        let err = report.to_metrics().unwrap_err();
        assert_eq!(
            err.to_string().split(':').next().unwrap(),
            "scenario `checkout` step `step-4` latencySent"
        );
        assert!(matches!(err, MetricsError::InStep { .. }));
        assert!(std::error::Error::source(&err).is_some());

        let one = report.scenarios[0].steps[0].clone();
        report.scenarios[0].steps = vec![one; MAX_REPORT_STEPS + 1];
        assert!(matches!(
            report.to_metrics(),
            Err(MetricsError::TooManySteps { steps: 513 })
        ));
    }

    #[test]
    fn report_size_at_realistic_load() {
        let mut sizes = Vec::new();
        // Step medians 5, 10, .. 50 ms; log-normal spread `sigma` (0.7: p99 ≈ 5× median, a
        // wide, realistic service; 0.25: a tight one); 2% queued up to 200 ms before sending;
        // 0.5% failures. Size depends on how many distinct buckets are used, not on the count.
        for (label, per_step, sigma, bound) in [
            ("idle (no requests yet)", 0u64, 0.7, 5_000usize),
            ("60 s at 100 rps per step, wide", 6_000, 0.7, 80_000),
            ("5 min at 500 rps per step, wide", 150_000, 0.7, 200_000),
            ("60 s at 100 rps per step, tight", 6_000, 0.25, 40_000),
            ("5 min at 500 rps per step, tight", 150_000, 0.25, 120_000),
        ] {
            let run = busy_run(9, per_step, sigma);
            let report =
                Report::from_metrics(0, 300, Duration::from_secs(300), false, &run).unwrap();
            let json = serde_json::to_string(&report).unwrap();
            let hist_bytes: usize = report.scenarios[0]
                .steps
                .iter()
                .map(|s| s.latency.len() + s.latency_sent.len() + s.failed_latency.len())
                .sum();
            println!(
                "report size, 10 steps, {label}: {} bytes of JSON ({} in histograms, {} per step)",
                json.len(),
                hist_bytes,
                json.len() / 10
            );
            assert!(json.len() < bound, "{label}: {} bytes", json.len());
            sizes.push(json.len());
        }
        assert!(sizes[0] < sizes[3] && sizes[3] < sizes[1] && sizes[1] < sizes[2]);
    }

    #[test]
    fn the_largest_possible_histogram_decodes() {
        // Every counter in use, with counts that need long varints: the worst case a runner
        // can send must stay within the decoder's limits.
        let mut rng = Rng(3);
        let mut h = new_latency_histogram();
        let mut v = LATENCY_LOW_US;
        while v <= LATENCY_HIGH_US {
            h.record_n(v, 1 + rng.next() % (1 << 30)).unwrap();
            v = h.next_non_equivalent(v);
        }
        assert!(h.iter_recorded().count() > 20_000);
        let text = encode_histogram(&h).unwrap();
        println!(
            "largest histogram: {} distinct values, {} bytes encoded",
            h.iter_recorded().count(),
            text.len()
        );
        assert!(text.len() < MAX_ENCODED_HISTOGRAM_BYTES / 2);
        assert!(same_histogram(&decode_histogram(&text).unwrap(), &h));
    }

    // ---- series ----

    #[test]
    fn series_point_is_the_interval_between_snapshots() {
        let mut rng = Rng(5);
        let mut cumulative = Measurements::default();
        let mut snapshots = vec![cumulative.clone()];
        let mut intervals = Vec::new();
        for second in 0..3 {
            let mut interval = Measurements::default();
            for i in 0..(1000 * (second + 1)) {
                let us = rng.lognormal_us(10_000.0 * (second + 1) as f64, 0.5);
                record(&mut interval, us, 1, if i % 100 == 0 { 1 } else { 0 });
            }
            cumulative.add(&interval).unwrap();
            snapshots.push(cumulative.clone());
            intervals.push(interval);
        }
        for (i, interval) in intervals.iter().enumerate() {
            let p = series_point(
                &snapshots[i],
                &snapshots[i + 1],
                i as u64 + 1,
                Duration::from_millis(1000),
            )
            .unwrap();
            assert_eq!(
                p,
                SeriesPoint {
                    second: i as u64 + 1,
                    interval_ms: 1000,
                    requests: interval.counters.requests,
                    failures: interval.counters.failures,
                    rps: interval.counters.requests as f64,
                    p50_ms: interval.latency.value_at_quantile(0.5) as f64 / 1000.0,
                    p95_ms: interval.latency.value_at_quantile(0.95) as f64 / 1000.0,
                    p99_ms: interval.latency.value_at_quantile(0.99) as f64 / 1000.0,
                }
            );
        }
        // A lost report widens one interval.
        let wide =
            series_point(&snapshots[1], &snapshots[3], 3, Duration::from_millis(2000)).unwrap();
        let mut both = intervals[1].clone();
        both.add(&intervals[2]).unwrap();
        assert_eq!(wide.requests, 5000);
        assert_eq!(wide.rps, 2500.0);
        assert_eq!(
            wide.p99_ms,
            both.latency.value_at_quantile(0.99) as f64 / 1000.0
        );
        // Nothing happened.
        let idle = series_point(&snapshots[3], &snapshots[3], 4, Duration::ZERO).unwrap();
        assert_eq!((idle.requests, idle.rps, idle.p50_ms), (0, 0.0, 0.0));
        // Out of order.
        let err =
            series_point(&snapshots[2], &snapshots[1], 2, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("fewer requests"), "{err}");
        // Same counters but a latency sample moved: not cumulative.
        let a = measurements(&[1000, 2000]);
        let b = measurements(&[1000, 3000]);
        let err = series_point(&a, &b, 1, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, MetricsError::NotCumulative { .. }), "{err}");
        let json = serde_json::to_value(&wide).unwrap();
        assert!(json.get("intervalMs").is_some() && json.get("p95Ms").is_some());
    }

    // ---- status ----

    #[test]
    fn metrics_status_on_known_data() {
        // 1..=1000 ms, 10 of them failed (5xx), 990 checks passed and 10 failed, over 10 s.
        let mut m = Measurements::default();
        for ms in 1..=1000u64 {
            let d = Duration::from_millis(ms);
            record_latency(&mut m.latency, d);
            record_latency(&mut m.latency_sent, d);
            m.counters.requests += 1;
            if ms % 100 == 0 {
                m.counters.count_error(ErrorKind::Status5xx);
                m.counters.checks_failed += 1;
            } else {
                m.counters.checks_passed += 1;
            }
        }
        m.counters.iterations = 500;
        m.counters.dropped_iterations = 3;
        m.counters.bytes_sent = 123;
        m.counters.bytes_received = 456;
        let s = metrics_status(&m, Duration::from_secs(10));
        assert_eq!(s.requests, 1000);
        assert_eq!(s.failures, 10);
        assert_eq!(s.error_rate, 0.01);
        assert_eq!(s.rps, 100.0);
        assert_eq!(s.iterations, 500);
        assert_eq!(s.dropped_iterations, 3);
        assert_eq!(s.checks_pass_rate, Some(0.99));
        assert_eq!(s.errors_by_kind, BTreeMap::from([("5xx".to_owned(), 10)]));
        assert_eq!((s.data_sent_bytes, s.data_received_bytes), (123, 456));
        let close = |actual: f64, expected: f64| {
            assert!(
                (actual - expected).abs() <= expected * 1e-3,
                "{actual} vs {expected}"
            );
        };
        close(s.latency_ms.min, 1.0);
        close(s.latency_ms.mean, 500.5);
        close(s.latency_ms.p50, 500.0);
        close(s.latency_ms.p90, 900.0);
        close(s.latency_ms.p95, 950.0);
        close(s.latency_ms.p99, 990.0);
        close(s.latency_ms.max, 1000.0);
        assert_eq!(
            s.latency_ms.p95,
            m.latency.value_at_quantile(0.95) as f64 / 1000.0
        );
        assert_eq!(s.p95, "950ms");
        assert_eq!(s.errors, "1%");
        assert_eq!(
            (s.throughput.as_str(), s.duration.as_str()),
            ("100/s", "10s")
        );

        // `kubectl get` once showed the rate as 29.993334814485667.
        let odd = metrics_status(&m, Duration::from_micros(33_340_741));
        assert_eq!(odd.rps, 1000.0 / 33.340741);
        assert_eq!(
            (odd.throughput.as_str(), odd.duration.as_str()),
            ("30/s", "33s")
        );
        assert_eq!(format_rate(1234.6), "1235/s");
        assert_eq!(format_rate(0.4567), "0.457/s");

        // Nothing yet.
        let empty = metrics_status(&Measurements::default(), Duration::ZERO);
        assert_eq!(empty.rps, 0.0);
        assert_eq!(empty.error_rate, 0.0);
        assert_eq!(empty.checks_pass_rate, None);
        assert_eq!(empty.latency_ms, LatencyMs::default());
        assert_eq!((empty.p95.as_str(), empty.errors.as_str()), ("-", "0%"));
        assert_eq!(
            (empty.throughput.as_str(), empty.duration.as_str()),
            ("0/s", "0s")
        );
        // Status and thresholds agree on the figure.
        let t = parse_threshold("p(95) < 1s").unwrap();
        let outcome = t.evaluate(&m.scope(Duration::from_secs(10)));
        assert_eq!(outcome.actual, Some(s.latency_ms.p95));
    }

    #[test]
    fn display_strings() {
        for (ms, text) in [
            (44.2, "44.2ms"),
            (44.223, "44.2ms"),
            (1234.0, "1.23s"),
            (950.271, "950ms"),
            (0.512, "512us"),
            (0.001, "1us"),
            (1.5, "1.5ms"),
            (125_300.0, "125s"),
            (3_600_000.0, "3600s"),
        ] {
            assert_eq!(format_latency_ms(ms), text, "{ms}");
        }
        for (part, whole, text) in [
            (0, 0, "0%"),
            (0, 1000, "0%"),
            (1, 10_000, "0.01%"),
            (1, 1_000_000, "<0.01%"),
            (42, 10_000, "0.42%"),
            (1, 3, "33.33%"),
            (15, 1000, "1.5%"),
            (1, 2, "50%"),
            (999_999, 1_000_000, ">99.99%"),
            (5, 5, "100%"),
        ] {
            assert_eq!(format_percent(part, whole), text, "{part}/{whole}");
        }
        let mut m = Measurements::default();
        record(&mut m, 44_200, 1, 0);
        assert_eq!(metrics_status(&m, Duration::from_secs(1)).p95, "44.2ms");
        let mut m = Measurements::default();
        record(&mut m, 1_230_000, 1, 0);
        assert_eq!(metrics_status(&m, Duration::from_secs(1)).p95, "1.23s");
    }

    #[test]
    fn scenario_and_step_rows() {
        let mut run = RunMetrics::for_spec(&spec());
        record(run.step_mut(0, 0).unwrap(), 50_000, 1, 0);
        record(run.step_mut(1, 0).unwrap(), 10_000, 10, 5);
        record(run.step_mut(1, 1).unwrap(), 2_000, 10, 0);
        run.scenarios[1].iterations = Counters {
            iterations: 10,
            dropped_iterations: 1,
            ..Counters::default()
        };
        let rows = scenario_statuses(&run, Duration::from_secs(2));
        assert_eq!(rows.len(), 2, "no setup row");
        assert_eq!(rows[0].scenario, "light");
        assert_eq!(
            (
                rows[0].requests,
                rows[0].iterations,
                rows[0].dropped_iterations
            ),
            (20, 10, 1)
        );
        assert_eq!(rows[0].error_rate, 0.1);
        assert_eq!(rows[0].rps, 10.0);
        assert_eq!(rows[0].p50_ms, 2.0);
        assert_eq!(
            rows[0].p99_ms,
            run.step_total("light", "convert").unwrap().latency.max() as f64 / 1000.0
        );
        assert_eq!(rows[1].scenario, "heavy");
        assert_eq!(
            (rows[1].requests, rows[1].p95_ms, rows[1].rps),
            (0, 0.0, 0.0)
        );

        let steps = step_statuses(&run, 100);
        let names: Vec<(&str, &str)> = steps
            .iter()
            .map(|s| (s.scenario.as_str(), s.step.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("setup", "login"),
                ("light", "convert"),
                ("light", "GET /api/jobs"),
                ("heavy", "upload")
            ]
        );
        assert_eq!((steps[1].requests, steps[1].error_rate), (10, 0.2));
        assert_eq!(
            steps[0].p50_ms,
            run.scenarios[0].steps[0].m.latency.max() as f64 / 1000.0
        );
        assert_eq!(step_statuses(&run, 2).len(), 2);
        assert!(step_statuses(&run, 0).is_empty());
    }

    // ---- thresholds ----

    /// light/convert: 10 × 10 ms, 2 failed; light/GET /api/jobs: 10 × 2 ms; heavy/upload:
    /// 10 × 400 ms; setup/login: 1 × 5 s (must not count anywhere). 10 s elapsed.
    fn threshold_run() -> RunMetrics {
        let mut run = RunMetrics::for_spec(&spec());
        record(run.step_mut(0, 0).unwrap(), 5_000_000, 1, 0);
        record(run.step_mut(1, 0).unwrap(), 10_000, 10, 5);
        record(run.step_mut(1, 1).unwrap(), 2_000, 10, 0);
        record(run.step_mut(2, 0).unwrap(), 400_000, 10, 0);
        run.scenarios[1].iterations.iterations = 10;
        run.scenarios[2].iterations.iterations = 10;
        run
    }

    fn evaluate(thresholds: Vec<ThresholdSpec>) -> Vec<ThresholdResult> {
        evaluate_thresholds(
            &with_thresholds(thresholds),
            &threshold_run(),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn thresholds_are_scoped() {
        let results = evaluate(vec![
            ThresholdSpec::Expr("max < 1s".to_owned()),
            ThresholdSpec::Expr("requests == 30".to_owned()),
            ThresholdSpec::Expr("iterations == 20".to_owned()),
            scoped("p(99) < 100ms", Some("light"), None),
            scoped("requests == 20", Some("light"), None),
            scoped("error_rate == 10%", Some("light"), None),
            scoped("error_rate == 20%", Some("light"), Some("convert")),
            scoped("max < 5ms", Some("light"), Some("GET /api/jobs")),
            scoped("iterations == 10", Some("light"), Some("convert")),
            scoped("p(50) < 100ms", Some("heavy"), None),
            scoped("rps > 1", Some("heavy"), Some("upload")),
        ]);
        let rows: Vec<(&str, &str, bool)> = results
            .iter()
            .map(|r| {
                (
                    r.status.scope.as_str(),
                    r.status.actual.as_str(),
                    r.status.passed,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("all", "400.1ms", true),
                ("all", "30", true),
                ("all", "20", true),
                ("scenario light", "10.01ms", true),
                ("scenario light", "20", true),
                ("scenario light", "10%", true),
                ("scenario light step convert", "20%", true),
                ("scenario light step GET /api/jobs", "2ms", true),
                ("scenario light step convert", "10", true),
                ("scenario heavy", "400.1ms", false),
                ("scenario heavy step upload", "1/s", false),
            ]
        );
        assert!(results.iter().all(|r| !r.status.aborted));
        assert_eq!(results[0].status.expr, "max < 1s");
        assert_eq!(results[0].failure_message, None);
        assert_eq!(
            results[9].failure_message.as_deref(),
            Some("p(50) 400.1ms >= 100ms (scenario heavy)")
        );
        assert_eq!(verdict(&results), Verdict::Failed);
        assert_eq!(verdict(&results[..9]), Verdict::Passed);
    }

    #[test]
    fn unscoped_failure_message_is_the_threshold_sentence() {
        let results = evaluate(vec![ThresholdSpec::Expr("p(95) < 100ms".to_owned())]);
        assert_eq!(
            results[0].failure_message.as_deref(),
            Some("p(95) 400.1ms >= 100ms")
        );
        assert!(!results[0].status.passed);
    }

    #[test]
    fn invalid_thresholds_fail_with_an_explanation() {
        let results = evaluate(vec![
            scoped("p(95) < 1s", Some("nope"), None),
            scoped("p(95) < 1s", Some("light"), Some("upload")),
            scoped("p(95) < 1s", Some("light"), Some("sleep 1s")),
            scoped("p(95) < 1s", None, Some("convert")),
            ThresholdSpec::Expr("p95 < 1s".to_owned()),
            scoped("p(95) < 1s", Some("setup"), None),
        ]);
        for r in &results {
            assert!(!r.status.passed, "{r:?}");
            let message = r.failure_message.as_deref().unwrap();
            assert!(message.contains(&r.status.actual), "{message}");
        }
        assert_eq!(
            results[0].status.actual,
            "unknown scenario `nope` (scenarios: light, heavy)"
        );
        assert_eq!(results[0].status.scope, "scenario nope");
        assert_eq!(
            results[1].status.actual,
            "scenario `light` has no request step named `upload`"
        );
        assert_eq!(
            results[2].status.actual,
            "scenario `light` has no request step named `sleep 1s`"
        );
        assert!(results[3].status.actual.contains("needs `scenario`"));
        assert_eq!(results[3].status.scope, "step convert");
        assert!(
            results[4]
                .status
                .actual
                .starts_with("invalid threshold: unknown metric `p95`")
        );
        assert!(
            results[5]
                .status
                .actual
                .starts_with("unknown scenario `setup`")
        );
        assert_eq!(verdict(&results), Verdict::Failed);
    }

    #[test]
    fn thresholds_without_data_fail() {
        let spec = with_thresholds(vec![
            ThresholdSpec::Expr("p(95) < 1s".to_owned()),
            ThresholdSpec::Expr("error_rate < 1%".to_owned()),
            ThresholdSpec::Expr("rps >= 0".to_owned()),
            ThresholdSpec::Expr("checks > 0%".to_owned()),
            ThresholdSpec::Expr("requests == 0".to_owned()),
            scoped("p(95) < 1s", Some("heavy"), Some("upload")),
        ]);
        // Only setup ran: the load scopes are empty.
        let mut run = RunMetrics::for_spec(&spec);
        record(run.step_mut(0, 0).unwrap(), 1000, 5, 0);
        for run in [run, RunMetrics::default()] {
            let results = evaluate_thresholds(&spec, &run, Duration::from_secs(10));
            let rows: Vec<(&str, bool)> = results
                .iter()
                .map(|r| (r.status.actual.as_str(), r.status.passed))
                .collect();
            assert_eq!(
                rows,
                [
                    ("no data", false),
                    ("no data", false),
                    ("no data", false),
                    ("no data", false),
                    ("0", true),
                    ("no data", false),
                ]
            );
            assert_eq!(
                results[0].failure_message.as_deref(),
                Some("p(95) has no data")
            );
            assert_eq!(verdict(&results), Verdict::Failed);
        }
    }

    #[test]
    fn abort_trigger_needs_failure_data_and_the_delay() {
        let r = |passed: bool, abort: bool, has_data: bool, delay: u64| ThresholdResult {
            status: ThresholdStatus {
                passed,
                ..ThresholdStatus::default()
            },
            abort_on_fail: abort,
            delay_abort_eval: Duration::from_secs(delay),
            failure_message: None,
            has_data,
        };
        let t = Duration::from_secs(10);
        assert_eq!(abort_trigger(&[r(false, true, true, 0)], t), Some(0));
        assert_eq!(abort_trigger(&[r(true, true, true, 0)], t), None, "passing");
        assert_eq!(
            abort_trigger(&[r(false, false, true, 0)], t),
            None,
            "no abortOnFail"
        );
        assert_eq!(
            abort_trigger(&[r(false, true, false, 0)], t),
            None,
            "no data yet"
        );
        assert_eq!(
            abort_trigger(&[r(false, true, true, 30)], t),
            None,
            "before the delay"
        );
        assert_eq!(
            abort_trigger(&[r(false, true, true, 30), r(false, true, true, 5)], t),
            Some(1)
        );
    }

    #[test]
    fn abort_settings_are_carried() {
        let results = evaluate(vec![
            ThresholdSpec::Detailed(Threshold {
                expr: "p(99) < 1s".to_owned(),
                scenario: Some("light".to_owned()),
                step: Some("convert".to_owned()),
                abort_on_fail: true,
                delay_abort_eval: Some(volley_crds::Duration::from_secs(30)),
            }),
            ThresholdSpec::Expr("rps > 1".to_owned()),
        ]);
        assert!(results[0].abort_on_fail);
        assert_eq!(results[0].delay_abort_eval, Duration::from_secs(30));
        assert!(!results[1].abort_on_fail);
        assert_eq!(results[1].delay_abort_eval, Duration::ZERO);
        assert_eq!(results[1].status.actual, "3/s");
    }

    #[test]
    fn verdict_of_results() {
        assert_eq!(verdict(&[]), Verdict::Passed);
        let results = evaluate(vec![ThresholdSpec::Expr("requests > 0".to_owned())]);
        assert_eq!(verdict(&results), Verdict::Passed);
        let results = evaluate(vec![
            ThresholdSpec::Expr("requests > 0".to_owned()),
            ThresholdSpec::Expr("requests > 1000".to_owned()),
        ]);
        assert_eq!(verdict(&results), Verdict::Failed);
    }
}
