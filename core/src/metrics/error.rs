//! [`MetricsError`]: why metrics could not be merged, compared, encoded or decoded. One type
//! for the model, the series and the report codec, because a report is decoded and merged in
//! one step and its callers handle every failure alike.

use hdrhistogram::serialization::{DeserializeError, V2DeflateSerializeError};

use volley_crds::text::shorten;

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
         latency histograms track {} µs to {} µs with {}",
        expected.0, expected.1, expected.2
    )]
    Bounds {
        /// Lowest discernible value of the histogram.
        low: u64,
        /// Highest trackable value of the histogram.
        high: u64,
        /// Its significant digits.
        sigfig: u8,
        /// Volley's bounds (low, high, significant digits), for the message: the constants of
        /// `metrics::histogram`, which returns this type and so cannot be imported here.
        expected: (u64, u64, u8),
    },
    /// A decoded histogram holds a value outside 1 µs to 1 h.
    #[error("the histogram holds a latency of {value} µs, outside the range of 1 µs to 1 h")]
    OutOfRange {
        /// The offending value, in microseconds.
        value: u64,
    },
    /// A decoded histogram holds more samples than the codec accepts.
    #[error("the histogram holds more than {limit} samples")]
    TooManySamples {
        /// The most samples a decoded histogram may hold
        /// (`metrics::histogram::MAX_HISTOGRAM_COUNT`).
        limit: u64,
    },
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
    /// A report carries more steps than the protocol accepts.
    #[error("the report has {steps} steps; at most {limit} are accepted")]
    TooManySteps {
        /// Steps in the report, over all scenarios.
        steps: usize,
        /// The most steps a report may carry (`protocol::report::MAX_REPORT_STEPS`).
        limit: usize,
    },
    /// A report carries more custom metrics than the protocol accepts.
    #[error("the report has {metrics} custom metrics; at most {limit} are accepted")]
    TooManyCustomMetrics {
        /// Custom metrics in the report, over all steps.
        metrics: usize,
        /// The most a report may carry (`protocol::custom::MAX_REPORT_CUSTOM_METRICS`).
        limit: usize,
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
    /// Two custom metrics of one name but different kinds were to be merged.
    #[error("a {theirs} cannot be merged into a {ours} of the same name")]
    CustomKind {
        /// The kind already held (`time trend`, `counter`, ...).
        ours: String,
        /// The kind of the one being added.
        theirs: String,
    },
    /// An error in one custom metric, with its name.
    #[error("custom metric `{name}`: {source}")]
    InCustomMetric {
        /// The metric's name (cut to 100 characters).
        name: String,
        /// What is wrong with it.
        #[source]
        source: Box<MetricsError>,
    },
}

impl MetricsError {
    /// This error, placed in one histogram of one step.
    pub(crate) fn in_step(self, scenario: &str, step: &str, field: &'static str) -> MetricsError {
        MetricsError::InStep {
            scenario: shorten(scenario, 100),
            step: shorten(step, 100),
            field,
            source: Box::new(self),
        }
    }

    /// This error, placed in one custom metric.
    pub(crate) fn in_custom_metric(self, name: &str) -> MetricsError {
        MetricsError::InCustomMetric {
            name: shorten(name, 100),
            source: Box::new(self),
        }
    }
}
