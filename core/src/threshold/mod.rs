//! The threshold language: the pass/fail criteria of a load test, such as
//! `p(95) < 500ms` or `error_rate < 1%`.
//!
//! A threshold is one comparison, `metric operator value`, in the spirit of k6
//! thresholds:
//!
//! ```text
//! threshold := subject? metric operator limit
//!            | scalar operator limit | "gauge(" name ")" ("min" | "max" | "avg") operator limit
//! subject   := "ws_connect" | "ws_message" | "ws_chunk" | "trend(" name ")"
//! scalar    := "counter(" name ")" | "gauge(" name ")" | "prom(" name ")"
//! limit     := number unit?                      (the unit is required where the metric has one)
//!            | "baseline" ( "*" number | ("+" | "-") number unit? )?
//! metric    := "p" "(" number ")" | "avg" | "med" | "min" | "max"
//!            | "error_rate" | "checks" | "rps"
//!            | "requests" | "iterations" | "dropped_iterations" | "count"
//! operator  := "<" | "<=" | ">" | ">=" | "=="
//! number    := digits ("." digits)? | "." digits     (no sign, no exponent)
//! unit      := "us" | "µs" | "ms" | "s" | "m" | "%"
//! ```
//!
//! Whitespace may appear between any two tokens (`p(95)<500ms` and
//! `p( 95 ) < 500 ms` are the same threshold). Units must fit the metric:
//!
//! | metric                                  | accepts                                   | stored as       |
//! |-----------------------------------------|-------------------------------------------|-----------------|
//! | `p(N)`, `avg`, `med`, `min`, `max`      | `us`/`µs`, `ms`, `s`, `m` (required)      | milliseconds    |
//! | `error_rate`, `checks`                  | `N%` with `0 <= N <= 100` (required)      | fraction        |
//! | `rps`                                   | a bare number                             | per second      |
//! | `requests`, `iterations`, `dropped_iterations` | a bare whole number                | count           |
//!
//! Without a subject a threshold is about HTTP requests. A [`Subject`] names other figures:
//! WebSocket handshakes, messages and frames (`ws_connect p(95) < 100ms`, `ws_connect error_rate
//! < 5%`, `ws_chunk count > 100`), a custom trend (`trend(NAME) p(95) < 200ms`, or a plain
//! number when the trend is not a duration), and scalars compared directly: a custom counter's
//! total (`counter(NAME) > 0`), a gauge's last value or its `min`/`max`/`avg`
//! (`gauge(NAME) max < 100`), a Prometheus query's result (`prom(NAME) < 0.5`). Scalars and
//! plain trends take plain numbers; `count` is a whole number; `error_rate` a percentage.
//!
//! A bare number where a unit belongs is refused with the threshold to write instead: it was
//! once read as milliseconds or as a fraction, so `error_rate < 1` meant 100% and passed
//! every run.
//!
//! A limit of `baseline` compares with the same metric of a baseline run in the same scope
//! (`volley run --baseline summary.json`, or `spec.baseline`): `p(95) < baseline * 1.10` (at
//! most 10% slower), `error_rate <= baseline + 0.5%` (at most half a percentage point more
//! errors), `rps > baseline * 0.95`. A factor after `*` is a plain number; an offset after `+`
//! or `-` is written like any value of the metric, unit included. Without a baseline (or
//! without that figure in it) such a threshold is skipped, not judged: see
//! [`evaluate::evaluate_thresholds`].
//!
//! Parsing converts every value to that one canonical unit, so evaluation and
//! comparison never have to think about units again, and [`fmt::Display`]
//! renders a form that parses back to exactly the same value.
//!
//! This module holds the language: the parser, [`ThresholdExpr`], and what one expression
//! makes of one scope's figures ([`ThresholdExpr::evaluate`]). [`evaluate`] judges a spec's
//! thresholds on a run's merged metrics.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::status::significant;

pub mod evaluate;

/// Why a threshold could not be parsed: what is wrong, in a sentence, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at character {position} of `{input}`)")]
pub struct ThresholdParseError {
    /// The threshold as written, with surrounding whitespace trimmed.
    pub input: String,
    /// Where the problem is: 1-based and counted in characters (not bytes) of
    /// `input`, because that is how a person counts along the text. One past
    /// the last character when the threshold stops too early.
    pub position: usize,
    /// What is wrong and, where possible, how to write it instead.
    pub message: String,
}

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// `p(N)`: the N-th percentile of request latency, with `0 < N <= 100`.
    Percentile(f64),
    /// `avg`: mean request latency.
    Avg,
    /// `min`: fastest request.
    Min,
    /// `max`: slowest request.
    Max,
    /// `med`: median request latency, the same figure as `p(50)`.
    Med,
    /// `error_rate`: failed requests as a fraction of all requests.
    ErrorRate,
    /// `checks`: passed checks as a fraction of all checks.
    Checks,
    /// `rps`: requests per second over the run.
    Rps,
    /// `requests`: how many requests were sent.
    Requests,
    /// `iterations`: how many iterations completed.
    Iterations,
    /// `dropped_iterations`: iterations that were due but could not start.
    DroppedIterations,
    /// `count`: how many values a [`Subject`] other than HTTP recorded (e.g. WebSocket
    /// handshakes that completed for `ws_connect count`).
    Count,
    /// Written as nothing: the single value of a scalar subject (`counter(NAME)`,
    /// `gauge(NAME)`, `prom(NAME)`): a counter's total, a gauge's last value, a query's result.
    Value,
}

/// The kind of quantity a metric measures, which decides the units it accepts,
/// how it is shown, and how strictly it is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    /// Milliseconds.
    Latency,
    /// A fraction in `[0, 1]`.
    Ratio,
    /// Per second.
    Rate,
    /// A whole number, compared exactly.
    Count,
    /// A plain number without a unit (a custom metric's or a Prometheus query's value).
    Plain,
}

impl Metric {
    /// The quantity of this metric of HTTP requests.
    fn quantity(self) -> Quantity {
        match self {
            Metric::Percentile(_) | Metric::Avg | Metric::Min | Metric::Max | Metric::Med => {
                Quantity::Latency
            }
            Metric::ErrorRate | Metric::Checks => Quantity::Ratio,
            Metric::Rps => Quantity::Rate,
            Metric::Requests
            | Metric::Iterations
            | Metric::DroppedIterations
            | Metric::Count
            | Metric::Value => Quantity::Count,
        }
    }

    /// A statistic of a distribution: `p(N)`, `avg`, `med`, `min` or `max`.
    pub fn is_statistic(self) -> bool {
        matches!(
            self,
            Metric::Percentile(_) | Metric::Avg | Metric::Min | Metric::Max | Metric::Med
        )
    }
}

/// The metric as written in a threshold, e.g. `p(99.9)` or `error_rate`.
impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            // f64's Display is the shortest text that reads back as the same
            // number, so `p(99.9)` stays `p(99.9)` and `p(95.0)` becomes `p(95)`.
            Metric::Percentile(p) => return write!(f, "p({p})"),
            Metric::Avg => "avg",
            Metric::Min => "min",
            Metric::Max => "max",
            Metric::Med => "med",
            Metric::ErrorRate => "error_rate",
            Metric::Checks => "checks",
            Metric::Rps => "rps",
            Metric::Requests => "requests",
            Metric::Iterations => "iterations",
            Metric::DroppedIterations => "dropped_iterations",
            Metric::Count => "count",
            Metric::Value => "",
        };
        f.write_str(name)
    }
}

/// The named metrics (everything but `p(N)`), for parsing and for suggestions.
const NAMED_METRICS: [(&str, Metric); 11] = [
    ("avg", Metric::Avg),
    ("min", Metric::Min),
    ("max", Metric::Max),
    ("med", Metric::Med),
    ("error_rate", Metric::ErrorRate),
    ("checks", Metric::Checks),
    ("rps", Metric::Rps),
    ("requests", Metric::Requests),
    ("iterations", Metric::Iterations),
    ("dropped_iterations", Metric::DroppedIterations),
    ("count", Metric::Count),
];

/// What a threshold measures the metric of: HTTP requests unless the threshold names another
/// subject before its metric (`ws_connect p(95) < 100ms`, `trend(tokens) avg > 20`,
/// `counter(retries) < 10`, `prom(queue_depth_max) < 100`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// HTTP requests: every threshold written without a subject.
    Http,
    /// `ws_connect`: WebSocket handshakes (time to connect; `error_rate` counts failed ones).
    WsConnect,
    /// `ws_message`: WebSocket messages that wait for a reply (time from send to the matching
    /// reply; `error_rate` counts those without one).
    WsMessage,
    /// `ws_chunk`: time between consecutive frames received on a WebSocket connection.
    WsChunk,
    /// `trend(NAME)`: a custom trend read from responses (a distribution).
    Trend {
        /// The trend's name as declared in a step's `metrics`.
        name: String,
        /// The limit was written with a time unit, so the trend holds durations (compared in
        /// milliseconds) rather than plain numbers.
        time_unit: bool,
    },
    /// `counter(NAME)`: a custom counter's total.
    Counter(String),
    /// `gauge(NAME)`: a custom gauge: its last value, or `min`/`max`/`avg` of its samples.
    Gauge(String),
    /// `prom(NAME)`: the result of a Prometheus query declared in `spec.observe.prometheus`.
    Prom(String),
}

/// The subject as written before the metric, e.g. `ws_connect` or `trend(tokens)`; empty for
/// HTTP requests.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Http => Ok(()),
            Subject::WsConnect => f.write_str("ws_connect"),
            Subject::WsMessage => f.write_str("ws_message"),
            Subject::WsChunk => f.write_str("ws_chunk"),
            Subject::Trend { name, .. } => write!(f, "trend({name})"),
            Subject::Counter(name) => write!(f, "counter({name})"),
            Subject::Gauge(name) => write!(f, "gauge({name})"),
            Subject::Prom(name) => write!(f, "prom({name})"),
        }
    }
}

/// The subjects written as one word.
const WORD_SUBJECTS: [(&str, Subject); 3] = [
    ("ws_connect", Subject::WsConnect),
    ("ws_message", Subject::WsMessage),
    ("ws_chunk", Subject::WsChunk),
];

/// The subjects written `KIND(NAME)`.
const NAMED_SUBJECTS: [&str; 4] = ["trend", "counter", "gauge", "prom"];

impl Subject {
    /// The metrics a threshold on this subject may use, for parsing and for the error that
    /// lists them.
    fn accepts(&self, metric: Metric) -> bool {
        match self {
            Subject::Http => !matches!(metric, Metric::Count | Metric::Value),
            Subject::WsConnect | Subject::WsMessage => {
                metric.is_statistic() || matches!(metric, Metric::ErrorRate | Metric::Count)
            }
            Subject::WsChunk | Subject::Trend { .. } => {
                metric.is_statistic() || metric == Metric::Count
            }
            Subject::Gauge(_) => {
                matches!(
                    metric,
                    Metric::Value | Metric::Min | Metric::Max | Metric::Avg
                )
            }
            Subject::Counter(_) | Subject::Prom(_) => metric == Metric::Value,
        }
    }

    /// What to write instead when [`Self::accepts`] refuses a metric.
    fn accepted_text(&self) -> &'static str {
        match self {
            Subject::Http => {
                "p(N), avg, med, min, max, error_rate, checks, rps, requests, \
                             iterations and dropped_iterations"
            }
            Subject::WsConnect | Subject::WsMessage => {
                "p(N), avg, med, min, max, error_rate and count"
            }
            Subject::WsChunk | Subject::Trend { .. } => "p(N), avg, med, min, max and count",
            Subject::Gauge(_) => {
                "min, max, avg, or nothing for its last value (`gauge(NAME) < 10`)"
            }
            Subject::Counter(_) | Subject::Prom(_) => {
                "no metric: compare it directly, like `counter(NAME) > 0` or `prom(NAME) < 100`"
            }
        }
    }
}

/// The quantity `metric` of `subject` is, which decides units, display and exactness.
fn quantity_of(subject: &Subject, metric: Metric) -> Quantity {
    match subject {
        Subject::Http => metric.quantity(),
        Subject::WsConnect | Subject::WsMessage | Subject::WsChunk => match metric {
            Metric::ErrorRate => Quantity::Ratio,
            Metric::Count => Quantity::Count,
            _ => Quantity::Latency,
        },
        Subject::Trend { time_unit, .. } => match metric {
            Metric::Count => Quantity::Count,
            _ if *time_unit => Quantity::Latency,
            _ => Quantity::Plain,
        },
        Subject::Counter(_) | Subject::Gauge(_) | Subject::Prom(_) => Quantity::Plain,
    }
}

/// The subject and metric as written, e.g. `p(95)`, `ws_connect p(95)`, `counter(retries)`.
fn head_text(subject: &Subject, metric: Metric) -> String {
    match (subject, metric) {
        (Subject::Http, m) => m.to_string(),
        (s, Metric::Value) => s.to_string(),
        (s, m) => format!("{s} {m}"),
    }
}

/// How the measured value must relate to the threshold's value for it to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
}

impl Comparison {
    /// The operator as written in a threshold, e.g. `<=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Eq => "==",
        }
    }

    /// The relation that holds when this one does not. `!=` has no
    /// `Comparison` of its own because it is only ever shown, never parsed.
    fn negated_symbol(self) -> &'static str {
        match self {
            Comparison::Lt => ">=",
            Comparison::Le => ">",
            Comparison::Gt => "<=",
            Comparison::Ge => "<",
            Comparison::Eq => "!=",
        }
    }

    /// Whether `actual <op> limit` holds. Unless `exact`, values within a
    /// relative 1e-9 of each other count as equal, for every operator alike:
    /// `3 / 1000` and `0.3%` should satisfy `<=` even if they differ in the
    /// last bit, and by the same token must not satisfy `<`.
    fn holds(self, actual: f64, limit: f64, exact: bool) -> bool {
        let equal = if exact {
            actual == limit
        } else {
            (actual - limit).abs() <= 1e-9 * actual.abs().max(limit.abs())
        };
        match self {
            Comparison::Lt => actual < limit && !equal,
            Comparison::Le => actual < limit || equal,
            Comparison::Gt => actual > limit && !equal,
            Comparison::Ge => actual > limit || equal,
            Comparison::Eq => equal,
        }
    }
}

/// The operator as written in a threshold, e.g. `<=`.
impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// How a baseline threshold makes its limit from the baseline's figure `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineOp {
    /// `baseline * value` (`baseline` alone is `baseline * 1`).
    Times,
    /// `baseline + value`.
    Plus,
    /// `baseline - value`.
    Minus,
}

impl BaselineOp {
    /// The limit made from the baseline's figure and the threshold's operand.
    pub fn apply(self, baseline: f64, operand: f64) -> f64 {
        match self {
            BaselineOp::Times => baseline * operand,
            BaselineOp::Plus => baseline + operand,
            BaselineOp::Minus => baseline - operand,
        }
    }
}

/// One parsed threshold, such as `p(95) < 500ms` or `p(95) < baseline * 1.1`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdExpr {
    /// Whose metric: HTTP requests unless the threshold names another subject.
    pub subject: Subject,
    /// What is measured.
    pub metric: Metric,
    /// How the measurement must relate to the limit to pass.
    pub comparison: Comparison,
    /// Without `baseline`: the limit in the metric's canonical unit: milliseconds for
    /// latencies, a fraction for `error_rate` and `checks`, per second for `rps`, and a
    /// plain count for `requests`, `iterations` and `dropped_iterations`. With `baseline`:
    /// the operand, a plain factor for [`BaselineOp::Times`], else an offset in that unit.
    pub value: f64,
    /// `Some` when the limit is made from a baseline run's figure ([`Self::limit`]).
    pub baseline: Option<BaselineOp>,
    /// The threshold as written, with surrounding whitespace trimmed, so
    /// reports can quote the user's own words.
    pub source: String,
}

/// Parses one threshold such as `p(95) < 500ms`; see the [module docs](self)
/// for the grammar.
///
/// ```
/// use volley_core::threshold::{parse_threshold, Comparison, Metric};
///
/// let t = parse_threshold("p(95) < 1.5s")?;
/// assert_eq!(t.metric, Metric::Percentile(95.0));
/// assert_eq!(t.comparison, Comparison::Lt);
/// assert_eq!(t.value, 1500.0); // milliseconds
/// assert_eq!(t.to_string(), "p(95) < 1.5s");
/// # Ok::<(), volley_core::threshold::ThresholdParseError>(())
/// ```
pub fn parse_threshold(input: &str) -> Result<ThresholdExpr, ThresholdParseError> {
    Parser::new(input.trim()).threshold()
}

/// Same as [`parse_threshold`].
impl FromStr for ThresholdExpr {
    type Err = ThresholdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_threshold(s)
    }
}

/// The canonical spelling, e.g. `p(95) < 500ms` or `error_rate < 1%`. It
/// always parses back to an equal metric, comparison and value.
impl fmt::Display for ThresholdExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.head(), self.comparison)?;
        let quantity = self.quantity();
        match self.baseline {
            None => f.write_str(&exact_text(quantity, self.value)),
            Some(BaselineOp::Times) if self.value == 1.0 => f.write_str("baseline"),
            Some(BaselineOp::Times) => write!(f, "baseline * {}", self.value),
            Some(BaselineOp::Plus) => write!(f, "baseline + {}", exact_text(quantity, self.value)),
            Some(BaselineOp::Minus) => {
                write!(f, "baseline - {}", exact_text(quantity, self.value))
            }
        }
    }
}

/// The figures a threshold is evaluated against, for one scope: all
/// requests, one scenario, or one step.
#[derive(Debug, Clone, Copy)]
pub struct ScopeMetrics<'a> {
    /// Request latency, in microseconds.
    pub latency_us: &'a Histogram<u64>,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Iterations completed.
    pub iterations: u64,
    /// Iterations that were due but could not start.
    pub dropped_iterations: u64,
    /// Checks that passed.
    pub checks_passed: u64,
    /// Checks that failed.
    pub checks_failed: u64,
    /// How long the scope ran, to turn `requests` into `rps`.
    pub elapsed: Duration,
    /// The figures of the threshold's subject in this scope when it is not HTTP requests
    /// (`None`: the subject recorded nothing here, so the threshold has no data).
    pub subject: Option<SubjectFigures<'a>>,
}

/// What a subject other than HTTP requests recorded in one scope, for its thresholds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubjectFigures<'a> {
    /// The recorded values, times 1000 in the canonical unit: microseconds for durations,
    /// thousandths for plain numbers. Statistics and `count` read it.
    pub histogram: Option<&'a Histogram<u64>>,
    /// Attempts that failed, for `error_rate` (`failures / attempts`).
    pub failures: u64,
    /// Attempts, for `error_rate`; zero means `error_rate` has no data.
    pub attempts: u64,
    /// The subject's single value for [`Metric::Value`]: a counter's total, a gauge's last
    /// value, a query's result.
    pub value: Option<f64>,
}

/// The result of evaluating one threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdOutcome {
    /// Whether the threshold held. Always `false` when there was no data.
    pub passed: bool,
    /// The measured value in the metric's canonical unit (see
    /// [`ThresholdExpr::value`]), or `None` when there was nothing to measure.
    pub actual: Option<f64>,
    /// The measured value for people, e.g. `612ms`, `0.42%`, `123.4/s`,
    /// `1000`, or `no data`.
    pub actual_display: String,
}

impl ThresholdOutcome {
    /// A verdict must never pass on nothing: an empty run is a failed run.
    fn no_data() -> Self {
        ThresholdOutcome {
            passed: false,
            actual: None,
            actual_display: "no data".to_owned(),
        }
    }
}

impl ThresholdExpr {
    /// Measures this threshold's metric in `m` and compares it with the limit.
    ///
    /// Latency metrics with an empty histogram, `error_rate` and `rps` with no
    /// requests (or, for `rps`, no elapsed time) and `checks` with no checks
    /// have no data, and fail. Counts always have data: zero is a count.
    ///
    /// A baseline threshold has no limit of its own and never passes here: judge it with
    /// [`Self::evaluate_on_baseline`].
    pub fn evaluate(&self, m: &ScopeMetrics<'_>) -> ThresholdOutcome {
        match self.limit(None) {
            Some(limit) => self.evaluate_with_limit(m, limit),
            None => ThresholdOutcome {
                passed: false,
                actual: self.measure(m),
                actual_display: "no baseline".to_owned(),
            },
        }
    }

    /// [`Self::evaluate`] against the limit made from `baseline`, the same metric's figure
    /// in the baseline run (canonical unit). A threshold without `baseline` ignores it.
    pub fn evaluate_on_baseline(&self, m: &ScopeMetrics<'_>, baseline: f64) -> ThresholdOutcome {
        let limit = self.limit(Some(baseline)).unwrap_or(self.value);
        self.evaluate_with_limit(m, limit)
    }

    /// The limit to compare with: `value`, or for a baseline threshold the limit made from
    /// the baseline's figure (`None` without one).
    pub fn limit(&self, baseline: Option<f64>) -> Option<f64> {
        match self.baseline {
            None => Some(self.value),
            Some(op) => baseline.map(|b| op.apply(b, self.value)),
        }
    }

    fn evaluate_with_limit(&self, m: &ScopeMetrics<'_>, limit: f64) -> ThresholdOutcome {
        let Some(actual) = self.measure(m) else {
            return ThresholdOutcome::no_data();
        };
        // A limit made from a baseline is a computed float: compare counts with the same
        // tolerance as everything else.
        let exact = self.quantity() == Quantity::Count && self.baseline.is_none();
        ThresholdOutcome {
            passed: self.comparison.holds(actual, limit, exact),
            actual: Some(actual),
            actual_display: self.format_value(actual),
        }
    }

    /// A sentence for a status message, e.g. `p(95) 612ms >= 500ms` (the
    /// measured value, the relation that actually held, and the limit) or
    /// `p(95) has no data`. Given a passing outcome it states the relation
    /// that held, e.g. `p(95) 412ms < 500ms`.
    pub fn failure_message(&self, outcome: &ThresholdOutcome) -> String {
        let quantity = self.quantity();
        let limit = with_rate_suffix(quantity, exact_text(quantity, self.value));
        self.sentence(outcome, self.value, &limit, "")
    }

    /// [`Self::failure_message`] for an outcome of [`Self::evaluate_on_baseline`]: the limit
    /// with how it was made, e.g. `p(95) 612ms >= 550ms (baseline 500ms * 1.1)`.
    pub fn baseline_failure_message(&self, outcome: &ThresholdOutcome, baseline: f64) -> String {
        let quantity = self.quantity();
        let limit = self.limit(Some(baseline)).unwrap_or(self.value);
        let operand = match self.baseline {
            None | Some(BaselineOp::Times) if self.value == 1.0 => String::new(),
            None | Some(BaselineOp::Times) => format!(" * {}", self.value),
            Some(BaselineOp::Plus) => format!(" + {}", exact_text(quantity, self.value)),
            Some(BaselineOp::Minus) => format!(" - {}", exact_text(quantity, self.value)),
        };
        let how = format!(" (baseline {}{operand})", self.format_value(baseline));
        self.sentence(outcome, limit, &self.format_value(limit), &how)
    }

    /// `METRIC ACTUAL RELATION LIMIT` and `after`, or `METRIC has no data`.
    fn sentence(
        &self,
        outcome: &ThresholdOutcome,
        limit_value: f64,
        limit: &str,
        after: &str,
    ) -> String {
        let Some(actual) = outcome.actual else {
            return format!("{} has no data", self.head());
        };
        let quantity = self.quantity();
        let mut shown = self.format_value(actual);
        // Rounding for display can make a failing value look like the limit
        // ("500ms > 500ms"); show it in full then, so the sentence makes sense.
        if shown == limit && actual != limit_value {
            shown = with_rate_suffix(quantity, exact_text(quantity, actual));
        }
        let relation = if outcome.passed {
            self.comparison.symbol()
        } else {
            self.comparison.negated_symbol()
        };
        format!("{} {shown} {relation} {limit}{after}", self.head())
    }

    /// A value in this metric's canonical unit, shown in its natural unit and
    /// rounded to 4 significant digits for people: `612ms`, `1.2s`, `500us`,
    /// `0.42%`, `123.4/s`, `1000`.
    pub fn format_value(&self, v: f64) -> String {
        match self.quantity() {
            Quantity::Latency => {
                if v > 0.0 && v < 1.0 {
                    format!("{}us", significant(v * 1000.0, 4))
                } else if v < 1000.0 {
                    format!("{}ms", significant(v, 4))
                } else {
                    format!("{}s", significant(v / 1000.0, 4))
                }
            }
            Quantity::Ratio => format!("{}%", significant(v * 100.0, 4)),
            Quantity::Rate => format!("{}/s", significant(v, 4)),
            Quantity::Count => format!("{v:.0}"),
            Quantity::Plain => significant(v, 6),
        }
    }

    /// The subject and metric as written, e.g. `p(95)`, `ws_connect p(95)` or
    /// `counter(retries)`: what the threshold is about, for messages.
    pub fn head(&self) -> String {
        head_text(&self.subject, self.metric)
    }

    fn quantity(&self) -> Quantity {
        quantity_of(&self.subject, self.metric)
    }

    /// The metric's value in `m`, in its canonical unit, or `None` if there is nothing to
    /// measure.
    fn measure(&self, m: &ScopeMetrics<'_>) -> Option<f64> {
        if self.subject == Subject::Http {
            return measure_http(self.metric, m);
        }
        let figures = m.subject?;
        let histogram = || figures.histogram.filter(|h| !h.is_empty());
        match self.metric {
            Metric::Percentile(p) => {
                histogram().map(|h| h.value_at_quantile(p / 100.0) as f64 / 1000.0)
            }
            Metric::Med => histogram().map(|h| h.value_at_quantile(0.5) as f64 / 1000.0),
            Metric::Avg => histogram().map(|h| h.mean() / 1000.0),
            Metric::Min => histogram().map(|h| h.min() as f64 / 1000.0),
            Metric::Max => histogram().map(|h| h.max() as f64 / 1000.0),
            Metric::ErrorRate => {
                (figures.attempts > 0).then(|| figures.failures as f64 / figures.attempts as f64)
            }
            Metric::Count => Some(figures.histogram.map_or(0, |h| h.len()) as f64),
            Metric::Value => figures.value,
            // Parsing refuses these for every subject but HTTP.
            Metric::Checks
            | Metric::Rps
            | Metric::Requests
            | Metric::Iterations
            | Metric::DroppedIterations => None,
        }
    }
}

/// An HTTP metric's value in `m`, in its canonical unit, or `None` if there is
/// nothing to measure.
fn measure_http(metric: Metric, m: &ScopeMetrics<'_>) -> Option<f64> {
    let h = m.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    match metric.quantity() {
        Quantity::Latency if h.is_empty() => None,
        _ => match metric {
            Metric::Percentile(p) => Some(ms(h.value_at_quantile(p / 100.0))),
            Metric::Med => Some(ms(h.value_at_quantile(0.5))),
            Metric::Avg => Some(h.mean() / 1000.0),
            Metric::Min => Some(ms(h.min())),
            Metric::Max => Some(ms(h.max())),
            Metric::ErrorRate => ratio(m.failures, m.requests),
            Metric::Checks => ratio(
                m.checks_passed,
                m.checks_passed.saturating_add(m.checks_failed),
            ),
            Metric::Rps => (m.requests > 0 && !m.elapsed.is_zero())
                .then(|| m.requests as f64 / m.elapsed.as_secs_f64()),
            Metric::Requests => Some(m.requests as f64),
            Metric::Iterations => Some(m.iterations as f64),
            Metric::DroppedIterations => Some(m.dropped_iterations as f64),
            // Parsing refuses these for HTTP requests.
            Metric::Count | Metric::Value => None,
        },
    }
}

/// The latency units a threshold may use.
#[derive(Debug, Clone, Copy)]
enum LatencyUnit {
    Micros,
    Millis,
    Seconds,
    Minutes,
}

impl LatencyUnit {
    /// The one conversion the parser uses. [`exact_text`] checks its output
    /// against this same function, which is what makes Display round-trip.
    fn to_ms(self, x: f64) -> f64 {
        match self {
            LatencyUnit::Micros => x / 1000.0,
            LatencyUnit::Millis => x,
            LatencyUnit::Seconds => x * 1000.0,
            LatencyUnit::Minutes => x * 60_000.0,
        }
    }

    /// An approximate inverse of [`Self::to_ms`], refined by [`shortest`].
    fn of_ms(self, ms: f64) -> f64 {
        match self {
            LatencyUnit::Micros => ms * 1000.0,
            LatencyUnit::Millis => ms,
            LatencyUnit::Seconds => ms / 1000.0,
            LatencyUnit::Minutes => ms / 60_000.0,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            LatencyUnit::Micros => "us",
            LatencyUnit::Millis => "ms",
            LatencyUnit::Seconds => "s",
            LatencyUnit::Minutes => "m",
        }
    }
}

/// The percent conversion, shared by the parser and [`exact_text`] so that
/// Display round-trips.
fn percent_to_fraction(p: f64) -> f64 {
    p / 100.0
}

/// Text for `value` that the parser reads back as exactly `value`: the
/// shortest such text in a natural unit, for Display and for limits.
fn exact_text(quantity: Quantity, value: f64) -> String {
    match quantity {
        Quantity::Latency => {
            // Bigger units only when the number stays at least 1 (`500ms`,
            // not `0.5s`), microseconds only below a millisecond.
            let candidates = [
                (LatencyUnit::Minutes, value >= 60_000.0),
                (LatencyUnit::Seconds, value >= 1000.0),
                (LatencyUnit::Micros, value > 0.0 && value < 1.0),
            ];
            let mut best = format!("{value}ms");
            for (unit, fits) in candidates {
                if !fits {
                    continue;
                }
                if let Some(x) = shortest(value, unit.of_ms(value), |x| unit.to_ms(x)) {
                    let text = format!("{x}{}", unit.suffix());
                    if text.len() < best.len() {
                        best = text;
                    }
                }
            }
            best
        }
        // Every ratio limit was parsed from `p%`, so some percentage reads back as exactly
        // `value`; `value * 100` can be an ulp away from that `p`, so its neighbours are tried.
        Quantity::Ratio => {
            let approx = value * 100.0;
            let up = approx.next_up();
            let down = approx.next_down();
            [approx, up, down, up.next_up(), down.next_down()]
                .into_iter()
                .find_map(|a| shortest(value, a, percent_to_fraction))
                .map_or_else(|| format!("{approx}%"), |p| format!("{p}%"))
        }
        Quantity::Rate | Quantity::Count | Quantity::Plain => format!("{value}"),
    }
}

/// The shortest decimal `x` near `approx` for which `back(x) == target`, if
/// any. Needed because e.g. `0.07 * 100.0` is `7.000000000000001`, yet `7`
/// is the percentage that parses back to `0.07`.
fn shortest(target: f64, approx: f64, back: impl Fn(f64) -> f64) -> Option<f64> {
    (1..=17).find_map(|digits: usize| {
        let x: f64 = format!("{approx:.*e}", digits - 1).parse().ok()?;
        (back(x) == target).then_some(x)
    })
}

/// Rates read better as `100/s` in sentences, though a threshold is written
/// `rps > 100`.
fn with_rate_suffix(quantity: Quantity, text: String) -> String {
    if quantity == Quantity::Rate {
        format!("{text}/s")
    } else {
        text
    }
}

/// The units a value may carry; any other word after whitespace is left for
/// the trailing-text error, which explains it better than "unknown unit".
const KNOWN_UNITS: [&str; 7] = ["us", "µs", "μs", "ms", "s", "m", "%"];

/// Hand-written recursive-descent parser over the characters of one threshold.
/// Positions are character indexes, so errors point at the right place even
/// after a `µ`.
struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        self.text(start, self.pos)
    }

    fn text(&self, start: usize, end: usize) -> String {
        self.chars
            .get(start..end)
            .map(|c| c.iter().collect())
            .unwrap_or_default()
    }

    /// The non-blank word at `at`, to quote what was found instead.
    fn word_at(&self, at: usize) -> String {
        let end = (at..self.chars.len())
            .find(|&i| self.chars.get(i).is_some_and(|c| c.is_whitespace()))
            .unwrap_or(self.chars.len());
        self.text(at, end)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// Whether only whitespace is left.
    fn rest_is_blank(&self) -> bool {
        self.chars
            .get(self.pos..)
            .is_none_or(|rest| rest.iter().all(|c| c.is_whitespace()))
    }

    fn error<T>(&self, at: usize, message: impl Into<String>) -> Result<T, ThresholdParseError> {
        Err(ThresholdParseError {
            input: self.input.to_owned(),
            position: at + 1,
            message: message.into(),
        })
    }

    fn threshold(mut self) -> Result<ThresholdExpr, ThresholdParseError> {
        if self.at_end() {
            return self.error(
                0,
                "the threshold is empty: write `metric operator value`, like `p(95) < 500ms`",
            );
        }
        let (mut subject, metric) = self.subject_and_metric()?;
        if let Subject::Trend { time_unit, .. } = &mut subject {
            *time_unit = metric.is_statistic() && self.limit_has_time_unit();
        }
        let head = head_text(&subject, metric);
        let quantity = quantity_of(&subject, metric);
        self.skip_whitespace();
        let comparison = self.comparison(&head)?;
        self.skip_whitespace();
        let (value, baseline) = self.limit(quantity, &head, comparison)?;
        self.skip_whitespace();
        if !self.at_end() {
            let rest = self.text(self.pos, self.chars.len());
            return self.error(
                self.pos,
                format!(
                    "unexpected `{rest}` after the value: a threshold is a single comparison, \
                     like `p(95) < 500ms`"
                ),
            );
        }
        Ok(ThresholdExpr {
            subject,
            metric,
            comparison,
            value,
            baseline,
            source: self.input.to_owned(),
        })
    }

    /// The limit after the operator: a value, or `baseline` with an optional factor or offset.
    fn limit(
        &mut self,
        quantity: Quantity,
        metric: &str,
        comparison: Comparison,
    ) -> Result<(f64, Option<BaselineOp>), ThresholdParseError> {
        let start = self.pos;
        if self.eat_while(|c| c.is_alphanumeric() || c == '_') != "baseline" {
            // Not `baseline`: the value's own errors say what is wrong.
            self.pos = start;
            let prefix = format!("{metric} {comparison}");
            return Ok((self.value(quantity, metric, &prefix)?, None));
        }
        self.skip_whitespace();
        let op = match self.peek() {
            Some('*') => BaselineOp::Times,
            Some('+') => BaselineOp::Plus,
            Some('-') => BaselineOp::Minus,
            // `baseline` alone, or trailing text for the caller to report.
            _ => return Ok((1.0, Some(BaselineOp::Times))),
        };
        self.pos += 1;
        self.skip_whitespace();
        if op != BaselineOp::Times {
            let prefix = format!(
                "{metric} {comparison} baseline {}",
                if op == BaselineOp::Plus { '+' } else { '-' }
            );
            return Ok((self.value(quantity, metric, &prefix)?, Some(op)));
        }
        let (factor, _) =
            self.number("a factor after `baseline *`, like the 1.10 in `baseline * 1.10`")?;
        if let Some((unit, at)) = self.unit() {
            let hint = if unit == "%" {
                format!(
                    " (`{}%` is `baseline * {}`)",
                    significant(factor, 15),
                    significant(factor / 100.0, 15)
                )
            } else {
                String::new()
            };
            return self.error(
                at,
                format!("the factor after `baseline *` is a plain number like 1.10, without `{unit}`{hint}"),
            );
        }
        Ok((factor, Some(BaselineOp::Times)))
    }

    /// The subject, when one is written before the metric, and the metric.
    fn subject_and_metric(&mut self) -> Result<(Subject, Metric), ThresholdParseError> {
        let start = self.pos;
        let word = self.eat_while(|c| c.is_alphanumeric() || c == '_' || c == '.');
        let subject = if let Some((_, s)) = WORD_SUBJECTS.iter().find(|(w, _)| *w == word) {
            s.clone()
        } else if NAMED_SUBJECTS.contains(&word.as_str()) && self.next_non_blank() == Some('(') {
            let name = self.subject_name(&word)?;
            match word.as_str() {
                "trend" => Subject::Trend {
                    name,
                    time_unit: false,
                },
                "counter" => Subject::Counter(name),
                "gauge" => Subject::Gauge(name),
                _ => Subject::Prom(name),
            }
        } else {
            self.pos = start;
            let metric = self.metric()?;
            if !Subject::Http.accepts(metric) {
                return self.error(
                    start,
                    format!(
                        "`{metric}` needs a subject, like `ws_connect {metric}` or \
                         `trend(NAME) {metric}`; for HTTP requests write `requests`"
                    ),
                );
            }
            return Ok((Subject::Http, metric));
        };
        self.skip_whitespace();
        let at = self.pos;
        let comparison_next = self.peek().is_none_or(|c| "<>=!≤≥≠".contains(c));
        if comparison_next && subject.accepts(Metric::Value) {
            return Ok((subject, Metric::Value));
        }
        let metric = self.metric()?;
        if !subject.accepts(metric) {
            return self.error(
                at,
                format!(
                    "`{subject}` has no `{metric}`: it takes {}",
                    subject.accepted_text()
                ),
            );
        }
        Ok((subject, metric))
    }

    /// The `(NAME)` after `trend`, `counter`, `gauge` or `prom`.
    fn subject_name(&mut self, kind: &str) -> Result<String, ThresholdParseError> {
        self.skip_whitespace();
        self.pos += 1; // the `(` the caller saw
        self.skip_whitespace();
        let at = self.pos;
        let name = self.eat_while(|c| c.is_alphanumeric() || "_.:-".contains(c));
        if name.is_empty() {
            return self.error(
                at,
                format!("expected the name of the {kind} in parentheses, like `{kind}(my_metric)`"),
            );
        }
        self.skip_whitespace();
        if self.peek() != Some(')') {
            return self.error(self.pos, format!("expected `)` to close `{kind}({name}`"));
        }
        self.pos += 1;
        Ok(name)
    }

    /// The next character that is not whitespace, without moving.
    fn next_non_blank(&self) -> Option<char> {
        self.chars
            .get(self.pos..)
            .and_then(|rest| rest.iter().find(|c| !c.is_whitespace()).copied())
    }

    /// Whether the limit ahead carries a time unit (`200ms`, `baseline + 5ms`), which makes a
    /// trend's statistics durations rather than plain numbers. Only a guess from the text:
    /// the value's own parsing reports anything malformed.
    fn limit_has_time_unit(&self) -> bool {
        let rest: String = self
            .chars
            .get(self.pos..)
            .unwrap_or_default()
            .iter()
            .collect();
        let rest = rest.trim_start_matches(|c: char| "<>=!≤≥≠".contains(c) || c.is_whitespace());
        let rest = rest
            .strip_prefix("baseline")
            .unwrap_or(rest)
            .trim_start_matches(|c: char| "+-*".contains(c) || c.is_whitespace());
        let unit = rest
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
            .trim_start();
        let word: String = unit.chars().take_while(|c| c.is_alphabetic()).collect();
        matches!(word.as_str(), "us" | "µs" | "μs" | "ms" | "s" | "m")
    }

    fn metric(&mut self) -> Result<Metric, ThresholdParseError> {
        let start = self.pos;
        if !self.peek().is_some_and(|c| c.is_alphabetic() || c == '_') {
            return self.error(
                start,
                format!(
                    "expected a metric such as p(95), avg or error_rate, found `{}`",
                    self.word_at(start)
                ),
            );
        }
        // Dots are taken so that `p99.9` is reported as one unknown word.
        let name = self.eat_while(|c| c.is_alphanumeric() || c == '_' || c == '.');
        if name == "p" {
            return self.percentile();
        }
        if let Some((_, metric)) = NAMED_METRICS.iter().find(|(known, _)| *known == name) {
            return Ok(*metric);
        }
        let known = "Known metrics are p(N), avg, med, min, max, error_rate, checks, rps, \
                     requests, iterations and dropped_iterations";
        let message = match suggestion(&name) {
            Some(s) => format!("unknown metric `{name}`: did you mean {s}? {known}"),
            None => format!(
                "unknown metric `{}`. {known}",
                volley_crds::text::shorten(&name, 60)
            ),
        };
        self.error(start, message)
    }

    /// The `(N)` of `p(N)`; the `p` has been read.
    fn percentile(&mut self) -> Result<Metric, ThresholdParseError> {
        self.skip_whitespace();
        if self.peek() != Some('(') {
            return self.error(
                self.pos,
                "`p` needs the percentile in parentheses, like p(95)",
            );
        }
        self.pos += 1;
        self.skip_whitespace();
        let (n, n_at) = self.number("a percentile, like the 95 in p(95)")?;
        if n <= 0.0 {
            return self.error(
                n_at,
                "the percentile must be above 0: use `min` for the fastest request",
            );
        }
        if n > 100.0 {
            return self.error(
                n_at,
                format!(
                    "the percentile must be at most 100, not {n}: use `max` for the slowest request"
                ),
            );
        }
        self.skip_whitespace();
        if self.peek() != Some(')') {
            return self.error(self.pos, format!("expected `)` to close p({n})"));
        }
        self.pos += 1;
        Ok(Metric::Percentile(n))
    }

    fn comparison(&mut self, metric: &str) -> Result<Comparison, ThresholdParseError> {
        let start = self.pos;
        let op = self.eat_while(|c| "<>=!≤≥≠".contains(c));
        let advice = "use <, <=, >, >= or ==";
        match op.as_str() {
            "<" => Ok(Comparison::Lt),
            "<=" => Ok(Comparison::Le),
            ">" => Ok(Comparison::Gt),
            ">=" => Ok(Comparison::Ge),
            "==" => Ok(Comparison::Eq),
            "" if self.at_end() => self.error(
                start,
                format!("expected a comparison after `{metric}` ({advice}), but the threshold ends there"),
            ),
            "" => self.error(
                start,
                format!(
                    "expected a comparison after `{metric}` ({advice}), found `{}`",
                    self.word_at(start)
                ),
            ),
            "=" => self.error(start, "`=` is not a comparison: write `==` to test equality"),
            "=<" | "≤" => self.error(start, format!("write `<=` instead of `{op}`")),
            "=>" | "≥" => self.error(start, format!("write `>=` instead of `{op}`")),
            "!=" | "≠" => self.error(start, format!("`{op}` is not supported: {advice}")),
            _ => self.error(start, format!("`{op}` is not a comparison: {advice}")),
        }
    }

    /// An unsigned decimal number and where it starts. `what` names the
    /// number expected, for the error when there is none.
    fn number(&mut self, what: &str) -> Result<(f64, usize), ThresholdParseError> {
        let start = self.pos;
        match self.peek() {
            None => {
                return self.error(
                    start,
                    format!("expected {what}, but the threshold ends there"),
                );
            }
            Some('-') => {
                return self.error(
                    start,
                    "negative numbers are not allowed: latencies, rates and counts are never below zero",
                );
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {}
            Some(_) => {
                return self.error(
                    start,
                    format!("expected {what}, found `{}`", self.word_at(start)),
                );
            }
        }
        self.eat_while(|c| c.is_ascii_digit());
        if self.peek() == Some('.') {
            self.pos += 1;
            if self.eat_while(|c| c.is_ascii_digit()).is_empty() {
                return self.error(self.pos, "expected a digit after the decimal point");
            }
        }
        let text = self.text(start, self.pos);
        // The text is digits with at most one inner dot, so only a value too
        // big for f64 can go wrong here.
        let value = match text.parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => return self.error(start, format!("`{text}` is too large")),
        };
        let mut after = self.chars.get(self.pos..).unwrap_or_default().iter();
        if matches!(after.next(), Some('e' | 'E'))
            && after
                .next()
                .is_some_and(|c| c.is_ascii_digit() || *c == '+' || *c == '-')
        {
            return self.error(
                self.pos,
                "exponents are not supported: write the number out in full",
            );
        }
        Ok((value, start))
    }

    /// The optional unit after a number: `%` or a word. A word separated by
    /// whitespace only counts if it is a real unit (`500 ms`), so that
    /// `rps > 100 and more` is reported as trailing text.
    fn unit(&mut self) -> Option<(String, usize)> {
        let before = self.pos;
        self.skip_whitespace();
        let spaced = self.pos > before;
        let at = self.pos;
        let unit = if self.peek() == Some('%') {
            self.pos += 1;
            "%".to_owned()
        } else {
            self.eat_while(char::is_alphabetic)
        };
        if unit.is_empty() || (spaced && !KNOWN_UNITS.contains(&unit.as_str())) {
            self.pos = before;
            return None;
        }
        Some((unit, at))
    }

    /// The value after the operator, converted to the metric's canonical unit.
    /// `prefix` is what comes before the value (`p(95) <`), to show in messages what to write.
    fn value(
        &mut self,
        quantity: Quantity,
        metric: &str,
        prefix: &str,
    ) -> Result<f64, ThresholdParseError> {
        let after = prefix.strip_prefix(metric).unwrap_or(prefix).trim();
        let (number, number_at) = self.number(&format!("a number after `{after}`"))?;
        let number_text = self.text(number_at, self.pos);
        let unit = self.unit();
        let unit_str = unit.as_ref().map(|(u, _)| u.as_str());
        let unit_at = unit.as_ref().map_or(self.pos, |(_, at)| *at);
        // `p(95) < 500 parsecs`: the unknown word is what is wrong, and the trailing-text
        // error after this says so better than "needs a unit"; the value is never used.
        if unit.is_none()
            && matches!(quantity, Quantity::Latency | Quantity::Ratio)
            && !self.rest_is_blank()
        {
            return Ok(0.0);
        }
        match quantity {
            Quantity::Latency => {
                let unit = match unit_str {
                    // A bare number was once read as milliseconds; `p(95) < 2` meaning 2ms
                    // (not 2s) passed silently, so the unit is required.
                    None => {
                        return self.error(
                            unit_at,
                            format!(
                                "{metric} is a latency and needs a unit: write \
                                 `{prefix} {number_text}ms` (or us, s, m)"
                            ),
                        );
                    }
                    Some("ms") => LatencyUnit::Millis,
                    Some("us" | "µs" | "μs") => LatencyUnit::Micros,
                    Some("s") => LatencyUnit::Seconds,
                    Some("m") => LatencyUnit::Minutes,
                    Some("%") => {
                        return self.error(
                            unit_at,
                            format!(
                                "{metric} is a latency: write a duration like 500ms or 1s, not a percentage"
                            ),
                        );
                    }
                    Some(other) => {
                        return self.error(
                            unit_at,
                            format!(
                                "unknown unit `{other}` for {metric}: use us, ms, s or m"
                            ),
                        );
                    }
                };
                Ok(unit.to_ms(number))
            }
            Quantity::Ratio => {
                let fraction = match unit_str {
                    // A bare number was once a fraction: `error_rate < 1` meant 100% and
                    // let every run pass, so the `%` is required.
                    None => {
                        return self.error(unit_at, bare_ratio_message(metric, prefix, number, &number_text));
                    }
                    Some("%") => percent_to_fraction(number),
                    Some(_) => {
                        return self.error(
                            unit_at,
                            format!(
                                "{metric} is a percentage: write it like `{prefix} 1%`"
                            ),
                        );
                    }
                };
                if fraction > 1.0 {
                    return self.error(number_at, format!("{metric} cannot be more than 100%"));
                }
                Ok(fraction)
            }
            Quantity::Rate => match unit_str {
                None => Ok(number),
                Some(u) => self.error(
                    unit_at,
                    format!(
                        "{metric} is requests per second: write a plain number like 100, without `{u}`"
                    ),
                ),
            },
            Quantity::Plain => match unit_str {
                None => Ok(number),
                Some(u) => self.error(
                    unit_at,
                    format!("{metric} is a plain number: write it like `{prefix} {number_text}`, without `{u}`"),
                ),
            },
            Quantity::Count => {
                if let Some(u) = unit_str {
                    return self.error(
                        unit_at,
                        format!("{metric} is a count: write a whole number like 1000, without `{u}`"),
                    );
                }
                if number.fract() != 0.0 {
                    return self.error(
                        number_at,
                        format!("{metric} is a count: write a whole number, not {number_text}"),
                    );
                }
                Ok(number)
            }
        }
    }
}

/// Why `error_rate < 0.01` is refused, with what to write instead: the number as a
/// percentage, and, when it could have been meant as a fraction, that fraction as one.
fn bare_ratio_message(metric: &str, prefix: &str, number: f64, text: &str) -> String {
    let as_percent = format!("`{prefix} {text}%`");
    let percent_of_fraction = number * 100.0;
    if number > 0.0 && number <= 1.0 {
        format!(
            "{metric} is a percentage and needs the `%`: write {as_percent}, or \
             `{prefix} {}%` if {text} was meant as a fraction",
            significant(percent_of_fraction, 15)
        )
    } else {
        format!("{metric} is a percentage and needs the `%`: write {as_percent}")
    }
}

/// A known metric that `name` was probably meant to be, written as it should be.
fn suggestion(name: &str) -> Option<String> {
    let lower = name.to_lowercase();
    // Prometheus and Grafana spell percentiles `p95` or `p99.9`.
    if let Some(digits) = lower.strip_prefix('p')
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return Some(format!("p({digits})"));
    }
    let alias = match lower.as_str() {
        "p" => Some("p(N)"),
        "mean" | "average" => Some("avg"),
        "median" | "p50" => Some("med"),
        "minimum" => Some("min"),
        "maximum" => Some("max"),
        "http_req_failed" | "errors" | "error" | "failures" | "failure_rate" | "failed" => {
            Some("error_rate")
        }
        "http_reqs" | "reqs" => Some("requests"),
        "throughput" | "rate" | "qps" | "req_per_sec" => Some("rps"),
        "http_req_duration" | "latency" | "duration" => Some("p(95)"),
        "iters" | "iteration" => Some("iterations"),
        "dropped" | "dropped_iteration" => Some("dropped_iterations"),
        _ => None,
    };
    if let Some(alias) = alias {
        return Some(alias.to_owned());
    }
    let len = lower.chars().count();
    NAMED_METRICS
        .iter()
        // The distance is at least the difference in length; skipping the rest keeps a
        // megabyte-long word from costing ten megabyte-sized tables.
        .filter(|(known, _)| len.abs_diff(known.len()) <= 2)
        .map(|(known, _)| (edit_distance(&lower, known), *known))
        .filter(|&(d, _)| d <= 2 && d < len)
        .min_by_key(|&(d, _)| d)
        .map(|(_, known)| known.to_owned())
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent swaps, since
/// `rsp` for `rps` is the typo people actually make.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        d[at(i, 0)] = i;
    }
    for j in 0..=b.len() {
        d[at(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[at(i - 1, j)] + 1)
                .min(d[at(i, j - 1)] + 1)
                .min(d[at(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[at(i - 2, j - 2)] + 1);
            }
            d[at(i, j)] = best;
        }
    }
    d[at(a.len(), b.len())]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(input: &str) -> ThresholdExpr {
        parse_threshold(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
    }

    fn err(input: &str) -> ThresholdParseError {
        match parse_threshold(input) {
            Ok(t) => panic!("{input:?} should not parse, got {t:?}"),
            Err(e) => e,
        }
    }

    /// Asserts that `input` fails at 1-based character `position` with a
    /// message containing each of `fragments`.
    #[track_caller]
    fn assert_err(input: &str, position: usize, fragments: &[&str]) {
        let e = err(input);
        assert_eq!(e.position, position, "position for {input:?}: {e}");
        for fragment in fragments {
            assert!(
                e.message.contains(fragment),
                "{input:?}: expected {fragment:?} in: {e}"
            );
        }
    }

    #[track_caller]
    fn assert_parses(input: &str, metric: Metric, comparison: Comparison, value: f64) {
        let t = parse(input);
        assert_eq!(
            (t.metric, t.comparison, t.value),
            (metric, comparison, value),
            "{input:?}"
        );
    }

    fn histogram(values_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in values_us {
            h.record(v).unwrap();
        }
        h
    }

    /// A scope with plenty of data; tests override the figures they are about.
    fn scope(h: &Histogram<u64>) -> ScopeMetrics<'_> {
        ScopeMetrics {
            latency_us: h,
            requests: 1000,
            failures: 0,
            iterations: 100,
            dropped_iterations: 0,
            checks_passed: 10,
            checks_failed: 0,
            elapsed: Duration::from_secs(10),
            subject: None,
        }
    }

    #[track_caller]
    fn assert_verdicts(m: &ScopeMetrics<'_>, cases: &[(&str, bool)]) {
        for (input, expected) in cases {
            let outcome = parse(input).evaluate(m);
            assert_eq!(outcome.passed, *expected, "{input:?} gave {outcome:?}");
        }
    }

    #[track_caller]
    fn assert_close(actual: f64, expected: f64, relative: f64) {
        assert!(
            (actual - expected).abs() <= relative * expected.abs(),
            "{actual} is not within {relative} of {expected}"
        );
    }

    // ---- parsing: metrics, units, operators, whitespace ----

    #[test]
    fn parses_every_latency_metric() {
        use Comparison::*;
        assert_parses("p(95) < 500ms", Metric::Percentile(95.0), Lt, 500.0);
        assert_parses("p(99.9) <= 1s", Metric::Percentile(99.9), Le, 1000.0);
        assert_parses("p(100) <= 3s", Metric::Percentile(100.0), Le, 3000.0);
        assert_parses("p(0.1) < 1ms", Metric::Percentile(0.1), Lt, 1.0);
        assert_parses("avg < 200ms", Metric::Avg, Lt, 200.0);
        assert_parses("min > 1ms", Metric::Min, Gt, 1.0);
        assert_parses("max < 2s", Metric::Max, Lt, 2000.0);
        assert_parses("med < 100ms", Metric::Med, Lt, 100.0);
        assert_parses("p(50) >= 0ms", Metric::Percentile(50.0), Ge, 0.0);
    }

    #[test]
    fn latency_units_convert_to_milliseconds() {
        let cases = [
            ("p(95) < 250us", 0.25),
            ("p(95) < 250µs", 0.25), // micro sign U+00B5
            ("p(95) < 250μs", 0.25), // Greek mu U+03BC, which keyboards often produce
            ("p(95) < 250ms", 250.0),
            ("p(95) < 250 ms", 250.0),
            ("p(95) < 2s", 2000.0),
            ("p(95) < 1.5s", 1500.0),
            ("p(95) < .5s", 500.0),
            ("p(95) < 0.5m", 30_000.0),
            ("p(95) < 2m", 120_000.0),
            ("p(95) < 12.75ms", 12.75),
        ];
        for (input, ms) in cases {
            assert_eq!(parse(input).value, ms, "{input:?}");
        }
    }

    #[test]
    fn ratios_are_percentages() {
        use Comparison::*;
        assert_parses("error_rate < 1%", Metric::ErrorRate, Lt, 0.01);
        assert_parses("error_rate < 0.5 %", Metric::ErrorRate, Lt, 0.005);
        assert_parses("error_rate <= 0%", Metric::ErrorRate, Le, 0.0);
        assert_parses("error_rate <= 100%", Metric::ErrorRate, Le, 1.0);
        assert_parses("checks > 99%", Metric::Checks, Gt, 0.99);
        assert_parses("checks > 99.95%", Metric::Checks, Gt, 0.9995);
    }

    /// `error_rate < 1` once meant 100% and `p(95) < 500` meant milliseconds: a number
    /// without its unit is refused, with the threshold to write instead.
    #[test]
    fn a_bare_number_needs_its_unit() {
        assert_eq!(
            err("error_rate < 1").message,
            "error_rate is a percentage and needs the `%`: write `error_rate < 1%`, \
             or `error_rate < 100%` if 1 was meant as a fraction"
        );
        assert_eq!(err("error_rate < 1").position, 15);
        assert_err(
            "error_rate < 0.01",
            18,
            &[
                "write `error_rate < 0.01%`",
                "`error_rate < 1%` if 0.01 was meant as a fraction",
            ],
        );
        assert_err("checks >= 99", 13, &["write `checks >= 99%`"]);
        assert_err("error_rate <= 0", 16, &["write `error_rate <= 0%`"]);
        assert_eq!(
            err("p(95) < 500").message,
            "p(95) is a latency and needs a unit: write `p(95) < 500ms` (or us, s, m)"
        );
        assert_err("avg<2", 6, &["write `avg < 2ms`"]);
        // The unit-less metrics stay unit-less.
        assert_parses("rps > 100", Metric::Rps, Comparison::Gt, 100.0);
    }

    #[test]
    fn rates_and_counts_take_plain_numbers() {
        use Comparison::*;
        assert_parses("rps > 100", Metric::Rps, Gt, 100.0);
        assert_parses("rps >= 12.5", Metric::Rps, Ge, 12.5);
        assert_parses("requests >= 1000", Metric::Requests, Ge, 1000.0);
        assert_parses("iterations > 10", Metric::Iterations, Gt, 10.0);
        assert_parses(
            "dropped_iterations == 0",
            Metric::DroppedIterations,
            Eq,
            0.0,
        );
        assert_parses("requests > 1000.0", Metric::Requests, Gt, 1000.0);
    }

    #[test]
    fn parses_every_operator_with_and_without_spaces() {
        let operators = [
            ("<", Comparison::Lt),
            ("<=", Comparison::Le),
            (">", Comparison::Gt),
            (">=", Comparison::Ge),
            ("==", Comparison::Eq),
        ];
        for (symbol, comparison) in operators {
            assert_eq!(parse(&format!("avg {symbol} 1ms")).comparison, comparison);
            assert_eq!(parse(&format!("avg{symbol}1ms")).comparison, comparison);
            assert_eq!(comparison.symbol(), symbol);
            assert_eq!(comparison.to_string(), symbol);
        }
    }

    #[test]
    fn whitespace_is_flexible() {
        let reference = parse("p(95) < 500ms");
        for input in [
            "p(95)<500ms",
            "  p(95) < 500ms  ",
            "p( 95 ) <500 ms",
            "p (95)\t<\t500ms",
            "\np(95)   <   500ms\n",
        ] {
            let t = parse(input);
            assert_eq!(
                (t.metric, t.comparison, t.value),
                (reference.metric, reference.comparison, reference.value),
                "{input:?}"
            );
            assert_eq!(
                t.source,
                input.trim(),
                "source keeps the user's words, trimmed"
            );
        }
    }

    #[test]
    fn from_str_is_parse_threshold() {
        let parsed: ThresholdExpr = " error_rate < 1% ".parse().unwrap();
        assert_eq!(parsed, parse_threshold(" error_rate < 1% ").unwrap());
        assert_eq!(parsed.source, "error_rate < 1%");
        assert_eq!(
            "error_rate < 1ms".parse::<ThresholdExpr>(),
            Err(err("error_rate < 1ms"))
        );
    }

    // ---- parse errors ----

    #[test]
    fn empty_threshold_is_an_error() {
        assert_err("", 1, &["empty"]);
        assert_err("   \t ", 1, &["empty"]);
    }

    #[test]
    fn unknown_metrics_suggest_the_closest_name() {
        assert_err(
            "error_rat < 1%",
            1,
            &["unknown metric `error_rat`", "did you mean error_rate?"],
        );
        assert_err("eror_rate < 1%", 1, &["did you mean error_rate?"]);
        assert_err("Error_Rate < 1%", 1, &["did you mean error_rate?"]);
        assert_err("rsp > 10", 1, &["did you mean rps?"]);
        assert_err("requets > 10", 1, &["did you mean requests?"]);
        assert_err("p95 < 500ms", 1, &["did you mean p(95)?"]);
        assert_err("p99.9 < 1s", 1, &["did you mean p(99.9)?"]);
        assert_err(
            "P(99) < 1s",
            1,
            &["unknown metric `P`", "did you mean p(N)?"],
        );
        assert_err("mean < 1s", 1, &["did you mean avg?"]);
        assert_err("median < 1s", 1, &["did you mean med?"]);
        assert_err("http_req_failed < 1%", 1, &["did you mean error_rate?"]);
        assert_err("http_reqs > 10", 1, &["did you mean requests?"]);
        let e = err("banana < 1");
        assert!(!e.message.contains("did you mean"), "{e}");
        assert!(e.message.contains("Known metrics are p(N), avg"), "{e}");
    }

    #[test]
    fn a_threshold_must_start_with_a_metric() {
        assert_err("500ms > p(95)", 1, &["expected a metric", "found `500ms`"]);
        assert_err("< 500ms", 1, &["expected a metric", "found `<`"]);
    }

    #[test]
    fn missing_operator_is_an_error() {
        assert_err(
            "p(95) 500ms",
            7,
            &["expected a comparison after `p(95)`", "found `500ms`"],
        );
        assert_err("p(95)", 6, &["expected a comparison", "ends there"]);
        assert_err("avg", 4, &["expected a comparison after `avg`"]);
    }

    #[test]
    fn unsupported_operators_say_what_to_write() {
        assert_err("avg = 1ms", 5, &["write `==`"]);
        assert_err("avg =< 1ms", 5, &["write `<=` instead of `=<`"]);
        assert_err("avg => 1ms", 5, &["write `>=` instead of `=>`"]);
        assert_err("avg ≤ 1ms", 5, &["write `<=` instead of `≤`"]);
        assert_err("avg ≥ 1ms", 5, &["write `>=` instead of `≥`"]);
        assert_err("avg != 1ms", 5, &["`!=` is not supported"]);
        assert_err("avg << 1ms", 5, &["`<<` is not a comparison"]);
        assert_err("avg <> 1ms", 5, &["`<>` is not a comparison"]);
        assert_err("avg === 1ms", 5, &["`===` is not a comparison"]);
    }

    #[test]
    fn the_value_must_be_a_plain_number() {
        assert_err("p(95) <", 8, &["expected a number after `<`", "ends there"]);
        assert_err("p(95) <=  ", 9, &["expected a number after `<=`"]);
        assert_err(
            "p(95) < fast",
            9,
            &["expected a number after `<`", "found `fast`"],
        );
        assert_err("p(95) < NaN", 9, &["found `NaN`"]);
        assert_err("error_rate < inf", 14, &["found `inf`"]);
        assert_err("requests > +5", 12, &["found `+5`"]);
        assert_err("p(95) < 1.", 11, &["digit after the decimal point"]);
        assert_err("p(95) < .", 10, &["digit after the decimal point"]);
        assert_err("requests > 1e3", 13, &["exponents are not supported"]);
        assert_err("requests > 1E+3", 13, &["exponents are not supported"]);
        assert_err(
            &format!("requests > {}", "9".repeat(400)),
            12,
            &["too large"],
        );
    }

    #[test]
    fn negative_numbers_are_errors() {
        assert_err("p(95) < -5ms", 9, &["negative numbers are not allowed"]);
        assert_err("p(95) <-5ms", 8, &["negative"]);
        assert_err("error_rate > -1%", 14, &["negative"]);
        assert_err("p(-5) < 1s", 3, &["negative"]);
    }

    #[test]
    fn percentiles_must_be_in_range_and_parenthesised() {
        assert_err("p(0) < 1ms", 3, &["above 0", "min"]);
        assert_err("p(0.0) < 1ms", 3, &["above 0"]);
        assert_err("p(101) < 1s", 3, &["at most 100", "max"]);
        assert_err("p(100.01) < 1s", 3, &["at most 100"]);
        assert_err("p() < 1s", 3, &["expected a percentile", "found `)`"]);
        assert_err("p(95 < 1s", 6, &["expected `)` to close p(95)"]);
        assert_err("p(95%) < 1s", 5, &["expected `)`"]);
        assert_err("p < 1s", 3, &["parentheses", "p(95)"]);
        assert_err("p", 2, &["parentheses"]);
    }

    #[test]
    fn units_must_fit_the_metric() {
        let e = err("error_rate < 5ms");
        assert_eq!(
            e.message,
            "error_rate is a percentage: write it like `error_rate < 1%`"
        );
        assert_eq!(e.position, 15);
        assert_err("checks > 1s", 11, &["checks is a percentage"]);
        assert_err(
            "rps > 10%",
            9,
            &["rps is requests per second", "without `%`"],
        );
        assert_err("rps > 10ms", 9, &["rps is requests per second"]);
        assert_err(
            "p(95) < 5%",
            10,
            &["p(95) is a latency", "not a percentage"],
        );
        assert_err("avg < 5 %", 9, &["avg is a latency"]);
        assert_err("requests > 5s", 13, &["requests is a count", "without `s`"]);
        assert_err("iterations > 10%", 16, &["iterations is a count"]);
        assert_err(
            "dropped_iterations == 0ms",
            24,
            &["dropped_iterations is a count"],
        );
        assert_err("p(95) < 5ns", 10, &["unknown unit `ns`", "us, ms, s or m"]);
        assert_err("p(95) < 5h", 10, &["unknown unit `h`"]);
        assert_err("p(95) < 500msx", 12, &["unknown unit `msx`"]);
    }

    #[test]
    fn ratios_cannot_exceed_one() {
        assert_err("checks > 150%", 10, &["cannot be more than 100%"]);
        assert_err("error_rate < 100.0001%", 14, &["cannot be more than 100%"]);
    }

    #[test]
    fn counts_must_be_whole() {
        assert_err(
            "requests >= 10.5",
            13,
            &["requests is a count", "whole number", "10.5"],
        );
        assert_err("dropped_iterations == 0.1", 23, &["whole number"]);
    }

    #[test]
    fn trailing_text_is_an_error() {
        assert_err(
            "p(95) < 500ms and avg < 200ms",
            15,
            &[
                "unexpected `and avg < 200ms` after the value",
                "single comparison",
            ],
        );
        assert_err("p(95) < 500ms)", 14, &["unexpected `)`"]);
        assert_err("rps > 100 and more", 11, &["unexpected `and more`"]);
        assert_err("p(95) < 1.2.3", 12, &["unexpected `.3`"]);
        assert_err("p(95) < 5 ms ms", 14, &["unexpected `ms`"]);
        assert_err("error_rate < 1%%", 16, &["unexpected `%`"]);
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        // `µ` is two bytes; a byte offset would say 13.
        assert_err("p(95) < 5µs!", 12, &["unexpected `!`"]);
        assert_err("p(95) < 5µs µs", 13, &["unexpected `µs`"]);
    }

    #[test]
    fn errors_read_as_one_sentence_about_the_trimmed_input() {
        assert_eq!(
            err("p(95) < 5%").to_string(),
            "p(95) is a latency: write a duration like 500ms or 1s, not a percentage \
             (at character 10 of `p(95) < 5%`)"
        );
        let e = err("  avg = 1ms ");
        assert_eq!((e.input.as_str(), e.position), ("avg = 1ms", 5));
    }

    // ---- Display ----

    #[test]
    fn display_is_canonical() {
        let cases = [
            ("p(95)<500ms", "p(95) < 500ms"),
            ("p(99.9) <= 1s", "p(99.9) <= 1s"),
            ("p(95.0) < 0.5s", "p(95) < 500ms"),
            ("avg < 1500ms", "avg < 1.5s"),
            ("med < 1234ms", "med < 1234ms"),
            ("max < 90s", "max < 90s"),
            ("max < 120s", "max < 2m"),
            ("max < 1.5m", "max < 90s"),
            ("min > 0.25ms", "min > 250us"),
            ("min > 250µs", "min > 250us"),
            ("min > 0.5ms", "min > 0.5ms"),
            ("p(95) < 0s", "p(95) < 0ms"),
            ("error_rate < 1.0%", "error_rate < 1%"),
            ("error_rate<5%", "error_rate < 5%"),
            ("checks > 99.9%", "checks > 99.9%"),
            ("checks >= 100.00%", "checks >= 100%"),
            ("rps > 100", "rps > 100"),
            ("rps >= 12.50", "rps >= 12.5"),
            ("requests >= 1000", "requests >= 1000"),
            ("iterations > 10.0", "iterations > 10"),
            ("dropped_iterations==0", "dropped_iterations == 0"),
        ];
        for (input, canonical) in cases {
            assert_eq!(parse(input).to_string(), canonical, "{input:?}");
        }
        assert_eq!(Metric::Percentile(99.9).to_string(), "p(99.9)");
        assert_eq!(Metric::DroppedIterations.to_string(), "dropped_iterations");
    }

    #[test]
    fn baseline_limits_parse_like_values() {
        let cases: [(&str, Metric, Comparison, f64, BaselineOp, &str); 7] = [
            (
                "p(95) < baseline * 1.10",
                Metric::Percentile(95.0),
                Comparison::Lt,
                1.1,
                BaselineOp::Times,
                "p(95) < baseline * 1.1",
            ),
            (
                "error_rate <= baseline + 0.5%",
                Metric::ErrorRate,
                Comparison::Le,
                0.005,
                BaselineOp::Plus,
                "error_rate <= baseline + 0.5%",
            ),
            (
                "rps > baseline * 0.95",
                Metric::Rps,
                Comparison::Gt,
                0.95,
                BaselineOp::Times,
                "rps > baseline * 0.95",
            ),
            (
                "rps>baseline-10",
                Metric::Rps,
                Comparison::Gt,
                10.0,
                BaselineOp::Minus,
                "rps > baseline - 10",
            ),
            (
                "p(99) <= baseline + 1.5 s",
                Metric::Percentile(99.0),
                Comparison::Le,
                1500.0,
                BaselineOp::Plus,
                "p(99) <= baseline + 1.5s",
            ),
            (
                "avg < baseline",
                Metric::Avg,
                Comparison::Lt,
                1.0,
                BaselineOp::Times,
                "avg < baseline",
            ),
            (
                "requests >= baseline * 0.9",
                Metric::Requests,
                Comparison::Ge,
                0.9,
                BaselineOp::Times,
                "requests >= baseline * 0.9",
            ),
        ];
        for (input, metric, comparison, value, op, shown) in cases {
            let t = parse(input);
            assert_eq!(
                (t.metric, t.comparison, t.value, t.baseline),
                (metric, comparison, value, Some(op)),
                "{input}"
            );
            assert_eq!(t.to_string(), shown);
            assert_eq!(
                parse(shown),
                ThresholdExpr {
                    source: shown.to_owned(),
                    ..t
                }
            );
        }
        assert_eq!(parse("p(95) < 1s").baseline, None);
        assert_eq!(
            parse("p(95) < baseline * 1.1").limit(Some(200.0)),
            Some(220.00000000000003)
        );
        assert_eq!(parse("p(95) < baseline * 1.1").limit(None), None);
        assert_eq!(
            parse("error_rate < baseline + 1%").limit(Some(0.02)),
            Some(0.03)
        );
        assert_eq!(parse("p(95) < 1s").limit(None), Some(1000.0));
    }

    #[test]
    fn baseline_limits_reject_what_does_not_fit() {
        assert_err(
            "p(95) < baseline * 110%",
            23,
            &[
                "the factor after `baseline *` is a plain number like 1.10, without `%`",
                "`baseline * 1.1`",
            ],
        );
        assert_err(
            "p(95) < baseline + 50",
            22,
            &["p(95) is a latency and needs a unit: write `p(95) < baseline + 50ms`"],
        );
        assert_err(
            "error_rate <= baseline + 0.5",
            29,
            &["write `error_rate <= baseline + 0.5%`"],
        );
        assert_err(
            "rps > baseline * ",
            17,
            &["expected a factor after `baseline *`"],
        );
        assert_err(
            "rps > baseline / 2",
            16,
            &["unexpected `/ 2` after the value"],
        );
        assert_err(
            "p(95) < baselin * 2",
            9,
            &["expected a number after `<`, found `baselin`"],
        );
        assert_err(
            "error_rate <= baseline + 101%",
            26,
            &["cannot be more than 100%"],
        );
    }

    #[test]
    fn baseline_thresholds_evaluate_on_the_baseline_figure() {
        let h = histogram((1..=100).map(|ms| ms * 1000));
        let m = scope(&h);
        let t = parse("p(95) < baseline * 1.1");
        let slower = t.evaluate_on_baseline(&m, 80.0);
        assert!(!slower.passed, "95ms is more than 88ms");
        assert_eq!(
            t.baseline_failure_message(&slower, 80.0),
            "p(95) 95.04ms >= 88ms (baseline 80ms * 1.1)"
        );
        assert!(t.evaluate_on_baseline(&m, 90.0).passed, "95ms < 99ms");
        // Without its baseline there is no limit: it never passes on its own.
        let alone = t.evaluate(&m);
        assert!(!alone.passed);
        assert_eq!(alone.actual_display, "no baseline");
        // A fixed threshold ignores a baseline.
        assert!(parse("p(95) < 1s").evaluate_on_baseline(&m, 1.0).passed);
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "p(95) < 500ms",
            "p(99.99) <= 1.234567s",
            "p(33.333) > 0.001ms",
            "avg < 1234.5678ms",
            "min >= 0.1us",
            "max == 17m",
            "med < 0.3ms",
            "error_rate < 0.3%",
            "error_rate < 12.3456789%",
            "checks > 99.99%",
            "checks >= 33.3333333333%",
            "rps > 1234.5678",
            "requests >= 9007199254740992",
            "iterations > 0",
            "dropped_iterations == 0",
        ] {
            let t = parse(input);
            let again = parse(&t.to_string());
            assert_eq!(
                (again.metric, again.comparison, again.value),
                (t.metric, t.comparison, t.value),
                "{input:?} displayed as {t}"
            );
        }
    }

    fn round_trips(metric: Metric, value: f64) -> Result<(), TestCaseError> {
        let t = ThresholdExpr {
            subject: Subject::Http,
            metric,
            comparison: Comparison::Le,
            value,
            baseline: None,
            source: String::new(),
        };
        let text = t.to_string();
        let again = parse_threshold(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.metric, metric, "{}", text);
        prop_assert_eq!(again.value, value, "{}", text);
        Ok(())
    }

    proptest! {
        #[test]
        fn any_latency_round_trips(ms in 0.0f64..1e9, metric in 0usize..5, p in 0.001f64..=100.0) {
            let metric = [Metric::Avg, Metric::Min, Metric::Max, Metric::Med, Metric::Percentile(p)][metric];
            round_trips(metric, ms)?;
        }

        #[test]
        fn whole_millisecond_and_microsecond_latencies_round_trip(us in 0u64..10_000_000_000) {
            round_trips(Metric::Max, us as f64 / 1000.0)?;
            round_trips(Metric::Max, us as f64)?;
        }

        #[test]
        fn any_ratio_round_trips(percent_f in 0.0f64..=100.0, percent in 0u32..=10_000) {
            // Every ratio limit is parsed from a percentage.
            round_trips(Metric::ErrorRate, percent_to_fraction(percent_f))?;
            round_trips(Metric::Checks, percent_to_fraction(f64::from(percent) / 100.0))?;
        }

        #[test]
        fn any_rate_and_count_round_trips(rate in 0.0f64..1e9, count in 0u64..(1 << 53)) {
            round_trips(Metric::Rps, rate)?;
            round_trips(Metric::Requests, count as f64)?;
        }

        #[test]
        fn any_baseline_limit_round_trips(
            operand in 0.0f64..1e6,
            op in 0usize..3,
            metric in prop::sample::select(vec![Metric::Percentile(95.0), Metric::Avg, Metric::Rps]),
        ) {
            let baseline = [BaselineOp::Times, BaselineOp::Plus, BaselineOp::Minus][op];
            let t = ThresholdExpr {
                subject: Subject::Http,
                metric,
                comparison: Comparison::Lt,
                value: operand,
                baseline: Some(baseline),
                source: String::new(),
            };
            let text = t.to_string();
            let again = parse_threshold(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again.baseline, Some(baseline), "{}", text);
            prop_assert_eq!(again.value.to_bits(), operand.to_bits(), "{}", text);
        }

        #[test]
        fn parsing_never_panics(input in "\\PC{0,40}") {
            let _ = parse_threshold(&input);
        }

        #[test]
        fn near_misses_never_panic(input in "[pavgmedxrtsqun_(). <>=!0-9%µ-]{0,24}") {
            if let Err(e) = parse_threshold(&input) {
                prop_assert!(e.position >= 1 && e.position <= e.input.chars().count() + 1, "{}", e);
            }
        }
    }

    // ---- evaluation ----

    #[test]
    fn latency_from_a_real_histogram() {
        // 1..=1000 ms, recorded in microseconds as the runner does.
        let h = histogram((1..=1000).map(|ms| ms * 1000));
        let m = scope(&h);
        let actual = |input: &str| parse(input).evaluate(&m).actual.unwrap();
        // 3 significant digits: values are within 0.1% of the truth.
        assert_close(actual("p(95) < 1s"), 950.0, 1e-3);
        assert_close(actual("p(99) < 1s"), 990.0, 1e-3);
        assert_close(actual("p(99.9) < 1s"), 999.0, 2e-3);
        assert_close(actual("p(100) < 1s"), 1000.0, 1e-3);
        assert_close(actual("p(50) < 1s"), 500.0, 1e-3);
        assert_close(actual("med < 1s"), 500.0, 1e-3);
        assert_close(actual("avg < 1s"), 500.5, 1e-3);
        assert_close(actual("min < 1s"), 1.0, 1e-3);
        assert_close(actual("max < 1s"), 1000.0, 1e-3);
        assert_eq!(actual("med < 1s"), actual("p(50) < 1s"));
        assert_verdicts(
            &m,
            &[
                ("p(95) < 960ms", true),
                ("p(95) < 940ms", false),
                ("p(95) > 940ms", true),
                ("p(95) > 0.96s", false),
                ("p(99) <= 1s", true),
                ("avg < 510ms", true),
                ("avg > 510ms", false),
                ("med < 490ms", false),
                ("min > 500us", true),
                ("max < 2s", true),
                ("max < 900ms", false),
            ],
        );
    }

    #[test]
    fn latency_boundaries_with_exact_samples() {
        // Below 2048 µs a 3-significant-digit histogram is exact, so each
        // operator can be checked right at its edge.
        let h = histogram((1..=10).map(|i| i * 100));
        let m = scope(&h);
        assert_verdicts(
            &m,
            &[
                ("max < 1ms", false),
                ("max <= 1ms", true),
                ("max == 1ms", true),
                ("max >= 1ms", true),
                ("max > 1ms", false),
                ("max < 1.001ms", true),
                ("max > 999us", true),
                ("max == 1001us", false),
                ("min == 100us", true),
                ("min > 100us", false),
                ("min >= 0.1ms", true),
                ("min < 0.1ms", false),
                ("min < 101us", true),
                ("med == 500us", true),
                ("p(90) == 900us", true),
                ("p(91) == 1ms", true),
                ("avg == 0.55ms", true),
                ("avg < 550us", false),
                ("avg <= 550us", true),
                ("avg > 549.999us", true),
            ],
        );
    }

    #[test]
    fn error_rate_is_failures_over_requests() {
        let h = histogram([1000]);
        let m = ScopeMetrics {
            requests: 100,
            failures: 1,
            ..scope(&h)
        };
        assert_verdicts(
            &m,
            &[
                ("error_rate < 1%", false),
                ("error_rate <= 1%", true),
                ("error_rate == 1%", true),
                ("error_rate < 1.1%", true),
                ("error_rate > 0.9%", true),
                ("error_rate > 1%", false),
                ("error_rate >= 1%", true),
            ],
        );
        let outcome = parse("error_rate < 1%").evaluate(&m);
        assert_eq!(outcome.actual, Some(0.01));
        assert_eq!(outcome.actual_display, "1%");

        let clean = ScopeMetrics { failures: 0, ..m };
        assert_verdicts(
            &clean,
            &[("error_rate == 0%", true), ("error_rate < 0.0001%", true)],
        );
    }

    #[test]
    fn ratios_are_compared_with_a_tolerance() {
        // 7 / 1000 and 0.7 / 100 differ in the last bit as f64s; they are the same rate.
        assert_ne!(7.0 / 1000.0, parse("error_rate <= 0.7%").value);
        let h = histogram([1000]);
        let m = ScopeMetrics {
            requests: 1000,
            failures: 7,
            ..scope(&h)
        };
        assert_verdicts(
            &m,
            &[
                ("error_rate <= 0.7%", true),
                ("error_rate == 0.7%", true),
                ("error_rate >= 0.7%", true),
                ("error_rate < 0.7%", false),
                ("error_rate > 0.7%", false),
                ("error_rate <= 0.70%", true),
            ],
        );
        let outcome = parse("error_rate < 1%").evaluate(&ScopeMetrics {
            failures: 42,
            requests: 10_000,
            ..m
        });
        assert_eq!(outcome.actual_display, "0.42%");
    }

    #[test]
    fn checks_is_the_pass_rate() {
        let h = histogram([1000]);
        let m = ScopeMetrics {
            checks_passed: 99,
            checks_failed: 1,
            ..scope(&h)
        };
        assert_verdicts(
            &m,
            &[
                ("checks > 99%", false),
                ("checks >= 99%", true),
                ("checks > 98.9%", true),
                ("checks == 99%", true),
                ("checks < 99%", false),
                ("checks <= 99.0%", true),
            ],
        );
        assert_eq!(parse("checks > 99%").evaluate(&m).actual_display, "99%");
    }

    #[test]
    fn rps_is_requests_over_elapsed_seconds() {
        let h = histogram([1000]);
        let m = ScopeMetrics {
            requests: 1000,
            elapsed: Duration::from_secs(10),
            ..scope(&h)
        };
        assert_verdicts(
            &m,
            &[
                ("rps > 100", false),
                ("rps >= 100", true),
                ("rps == 100", true),
                ("rps <= 100", true),
                ("rps < 100", false),
                ("rps < 100.1", true),
                ("rps > 99.9", true),
            ],
        );
        assert_eq!(parse("rps > 1").evaluate(&m).actual_display, "100/s");
        let fractional = ScopeMetrics {
            requests: 150,
            elapsed: Duration::from_millis(1500),
            ..m
        };
        assert_eq!(parse("rps > 1").evaluate(&fractional).actual, Some(100.0));
        let odd = ScopeMetrics {
            requests: 1234,
            ..m
        };
        assert_eq!(parse("rps > 1").evaluate(&odd).actual_display, "123.4/s");
    }

    #[test]
    fn counts_are_compared_exactly() {
        let h = histogram([1000]);
        let m = ScopeMetrics {
            requests: 1000,
            iterations: 11,
            dropped_iterations: 0,
            ..scope(&h)
        };
        assert_verdicts(
            &m,
            &[
                ("requests >= 1000", true),
                ("requests > 1000", false),
                ("requests == 1000", true),
                ("requests <= 1000", true),
                ("requests < 1000", false),
                ("requests < 1001", true),
                ("requests > 999", true),
                ("iterations > 10", true),
                ("iterations > 11", false),
                ("dropped_iterations == 0", true),
                ("dropped_iterations > 0", false),
            ],
        );
        let dropped = ScopeMetrics {
            dropped_iterations: 3,
            ..m
        };
        let outcome = parse("dropped_iterations == 0").evaluate(&dropped);
        assert_eq!(
            outcome,
            ThresholdOutcome {
                passed: false,
                actual: Some(3.0),
                actual_display: "3".to_owned()
            }
        );
    }

    #[test]
    fn zero_is_a_count_not_missing_data() {
        let empty = histogram([]);
        let m = ScopeMetrics {
            requests: 0,
            iterations: 0,
            dropped_iterations: 0,
            ..scope(&empty)
        };
        for input in [
            "requests == 0",
            "iterations <= 0",
            "dropped_iterations == 0",
        ] {
            let outcome = parse(input).evaluate(&m);
            assert_eq!(
                outcome,
                ThresholdOutcome {
                    passed: true,
                    actual: Some(0.0),
                    actual_display: "0".to_owned()
                },
                "{input:?}"
            );
        }
    }

    #[test]
    fn no_data_never_passes() {
        let no_data = ThresholdOutcome {
            passed: false,
            actual: None,
            actual_display: "no data".to_owned(),
        };
        let empty = histogram([]);
        let full = histogram([1000]);
        // Thresholds that would hold for any value: only the missing data fails them.
        let cases: Vec<(&str, ScopeMetrics<'_>)> = vec![
            ("p(95) >= 0ms", scope(&empty)),
            ("p(95) < 1m", scope(&empty)),
            ("avg >= 0ms", scope(&empty)),
            ("min >= 0us", scope(&empty)),
            ("max >= 0s", scope(&empty)),
            ("med >= 0ms", scope(&empty)),
            (
                "error_rate <= 100%",
                ScopeMetrics {
                    requests: 0,
                    failures: 0,
                    ..scope(&full)
                },
            ),
            (
                "rps >= 0",
                ScopeMetrics {
                    requests: 0,
                    ..scope(&full)
                },
            ),
            (
                "rps >= 0",
                ScopeMetrics {
                    elapsed: Duration::ZERO,
                    ..scope(&full)
                },
            ),
            (
                "checks >= 0%",
                ScopeMetrics {
                    checks_passed: 0,
                    checks_failed: 0,
                    ..scope(&full)
                },
            ),
        ];
        for (input, m) in cases {
            assert_eq!(parse(input).evaluate(&m), no_data, "{input:?}");
        }
    }

    // ---- formatting and messages ----

    #[test]
    fn format_value_uses_the_natural_unit() {
        let latency = parse("p(95) < 1s");
        for (ms, text) in [
            (612.0, "612ms"),
            (612.863, "612.9ms"),
            (1200.0, "1.2s"),
            (1234.0, "1.234s"),
            (125_300.0, "125.3s"),
            (0.5, "500us"),
            (0.0, "0ms"),
        ] {
            assert_eq!(latency.format_value(ms), text);
        }
        let ratio = parse("error_rate < 1%");
        for (fraction, text) in [
            (0.0042, "0.42%"),
            (1.0, "100%"),
            (0.0, "0%"),
            (0.123_456, "12.35%"),
        ] {
            assert_eq!(ratio.format_value(fraction), text);
        }
        let rate = parse("rps > 1");
        for (per_second, text) in [(123.4, "123.4/s"), (1234.56, "1235/s"), (0.5, "0.5/s")] {
            assert_eq!(rate.format_value(per_second), text);
        }
        let count = parse("requests > 1");
        assert_eq!(count.format_value(1000.0), "1000");
        assert_eq!(count.format_value(0.0), "0");
    }

    #[test]
    fn failure_messages_state_actual_relation_and_limit() {
        let failed = |input: &str, actual: f64| {
            let t = parse(input);
            let outcome = ThresholdOutcome {
                passed: false,
                actual: Some(actual),
                actual_display: t.format_value(actual),
            };
            t.failure_message(&outcome)
        };
        assert_eq!(failed("p(95) < 500ms", 612.0), "p(95) 612ms >= 500ms");
        assert_eq!(failed("p(99.9) <= 1s", 1500.0), "p(99.9) 1.5s > 1s");
        assert_eq!(failed("min > 1ms", 0.25), "min 250us <= 1ms");
        assert_eq!(failed("error_rate < 1%", 0.025), "error_rate 2.5% >= 1%");
        assert_eq!(failed("checks > 99%", 0.98), "checks 98% <= 99%");
        assert_eq!(failed("rps > 100", 80.0), "rps 80/s <= 100/s");
        assert_eq!(failed("requests >= 1000", 999.0), "requests 999 < 1000");
        assert_eq!(
            failed("dropped_iterations == 0", 3.0),
            "dropped_iterations 3 != 0"
        );
        // Rounded, 500.01 would read "500ms > 500ms".
        assert_eq!(failed("avg <= 500ms", 500.01), "avg 500.01ms > 500ms");

        let t = parse("p(95) < 500ms");
        let no_data = ThresholdOutcome {
            passed: false,
            actual: None,
            actual_display: "no data".to_owned(),
        };
        assert_eq!(t.failure_message(&no_data), "p(95) has no data");
        let passed = ThresholdOutcome {
            passed: true,
            actual: Some(412.0),
            actual_display: "412ms".to_owned(),
        };
        assert_eq!(t.failure_message(&passed), "p(95) 412ms < 500ms");
    }

    #[test]
    fn failure_message_from_a_real_evaluation() {
        let h = histogram((1..=1000).map(|ms| ms * 1000));
        let t = parse("p(95) < 500ms");
        let outcome = t.evaluate(&scope(&h));
        assert!(!outcome.passed);
        let message = t.failure_message(&outcome);
        assert!(message.starts_with("p(95) 95"), "{message}");
        assert!(message.ends_with("ms >= 500ms"), "{message}");
        assert_eq!(
            message,
            format!("p(95) {} >= 500ms", outcome.actual_display)
        );
    }

    // ---- subjects: WebSocket, custom metrics, Prometheus ----

    #[test]
    fn parses_subjects_before_the_metric() {
        let cases: [(&str, Subject, Metric, f64); 10] = [
            (
                "ws_connect p(95) < 100ms",
                Subject::WsConnect,
                Metric::Percentile(95.0),
                100.0,
            ),
            (
                "ws_connect error_rate < 5%",
                Subject::WsConnect,
                Metric::ErrorRate,
                0.05,
            ),
            (
                "ws_message avg < 1s",
                Subject::WsMessage,
                Metric::Avg,
                1000.0,
            ),
            (
                "ws_chunk count >= 1000",
                Subject::WsChunk,
                Metric::Count,
                1000.0,
            ),
            (
                "trend( inference_latency ) p(99) < 200ms",
                Subject::Trend {
                    name: "inference_latency".into(),
                    time_unit: true,
                },
                Metric::Percentile(99.0),
                200.0,
            ),
            (
                "trend(tokens) avg > 20.5",
                Subject::Trend {
                    name: "tokens".into(),
                    time_unit: false,
                },
                Metric::Avg,
                20.5,
            ),
            (
                "counter(crisis_detections) > 0",
                Subject::Counter("crisis_detections".into()),
                Metric::Value,
                0.0,
            ),
            (
                "gauge(queue_depth)<10",
                Subject::Gauge("queue_depth".into()),
                Metric::Value,
                10.0,
            ),
            (
                "gauge(queue_depth) max < 100",
                Subject::Gauge("queue_depth".into()),
                Metric::Max,
                100.0,
            ),
            (
                "prom(worker_p95_s) < 0.5",
                Subject::Prom("worker_p95_s".into()),
                Metric::Value,
                0.5,
            ),
        ];
        for (input, subject, metric, value) in cases {
            let t = parse(input);
            assert_eq!(
                (&t.subject, t.metric, t.value),
                (&subject, metric, value),
                "{input:?}"
            );
            // The canonical text names the subject and parses back to the same threshold.
            let again = parse(&t.to_string());
            assert_eq!(
                (again.subject, again.metric, again.value),
                (subject, metric, value),
                "{t}"
            );
        }
        assert_eq!(parse("prom(q) < 100").to_string(), "prom(q) < 100");
        assert_eq!(
            parse("ws_connect p(95)<0.1s").to_string(),
            "ws_connect p(95) < 100ms"
        );
        assert_eq!(
            parse("trend(x) p(95) < baseline * 1.1").to_string(),
            "trend(x) p(95) < baseline * 1.1"
        );
        // Without a subject nothing changes.
        assert_eq!(parse("p(95) < 500ms").subject, Subject::Http);
    }

    #[test]
    fn refuses_metrics_a_subject_does_not_have() {
        assert_err(
            "ws_chunk error_rate < 1%",
            10,
            &["`ws_chunk` has no `error_rate`", "count"],
        );
        assert_err(
            "prom(q) p(95) < 1",
            9,
            &["`prom(q)` has no `p(95)`", "compare it directly"],
        );
        assert_err("counter(c) rps > 1", 12, &["has no `rps`"]);
        assert_err("ws_connect rps > 1", 12, &["`ws_connect` has no `rps`"]);
        assert_err("ws_connect < 1ms", 12, &["expected a metric"]);
        assert_err("count > 5", 1, &["`count` needs a subject", "requests"]);
        assert_err(
            "trend() avg < 1ms",
            7,
            &["name of the trend", "trend(my_metric)"],
        );
        assert_err("trend(x avg < 1ms", 9, &["expected `)`"]);
        // Units follow the subject's quantity.
        assert_err("prom(q) < 5ms", 12, &["plain number", "without `ms`"]);
        assert_err("gauge(g) max < 1%", 17, &["plain number"]);
        assert_err("ws_message p(95) < 500", 23, &["needs a unit"]);
        assert_err("ws_connect count > 1.5", 20, &["whole number"]);
        // `trend` without parentheses is just an unknown metric, as before.
        assert_err("trend < 5", 1, &["unknown metric `trend`"]);
    }

    #[test]
    fn subjects_are_measured_on_their_own_figures() {
        let requests = histogram([1_000; 10]);
        let mut connect = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in [400, 600, 800, 2000] {
            connect.record(us).unwrap();
        }
        let mut m = scope(&requests);
        // No figures for the subject: no data, which fails.
        let none = parse("ws_connect p(50) < 1s").evaluate(&m);
        assert!(!none.passed);
        assert_eq!(none.actual_display, "no data");
        assert_eq!(
            parse("ws_connect p(50) < 1s").failure_message(&none),
            "ws_connect p(50) has no data"
        );
        m.subject = Some(SubjectFigures {
            histogram: Some(&connect),
            failures: 1,
            attempts: 5,
            value: Some(7.0),
        });
        assert_verdicts(
            &m,
            &[
                ("ws_connect max < 1.5ms", false),
                ("ws_connect max < 2.5ms", true),
                ("ws_connect min == 400us", true),
                ("ws_connect count == 4", true),
                ("ws_connect error_rate <= 20%", true),
                ("ws_connect error_rate < 20%", false),
                ("counter(c) == 7", true),
                ("gauge(g) > 7", false),
                ("trend(t) max < 2.5", true),
            ],
        );
        let t = parse("ws_connect p(99) < 1ms");
        let outcome = t.evaluate(&m);
        assert_eq!(outcome.actual, Some(2.0));
        assert_eq!(t.failure_message(&outcome), "ws_connect p(99) 2ms >= 1ms");
        let plain = parse("trend(tokens) avg < 10");
        assert_eq!(plain.format_value(95.0), "95");
        // No attempts: error_rate has no data rather than 0%.
        m.subject = Some(SubjectFigures::default());
        assert_eq!(
            parse("ws_message error_rate < 1%").evaluate(&m).actual,
            None
        );
        assert_eq!(
            parse("ws_message count == 0").evaluate(&m).actual,
            Some(0.0)
        );
    }
}
