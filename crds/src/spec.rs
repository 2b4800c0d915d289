//! The `LoadTest` custom resource: what a user writes in `spec`.
//!
//! Every doc comment here becomes `kubectl explain` text, so they are written for the person
//! authoring a manifest. `docs/reference.md` §1 "Manifest fields" describes every field;
//! cross-field rules that a schema cannot express live in `volley_core::validate`.
//!
//! Some of those rules are also in the schema, so the API server refuses a bad manifest at
//! `kubectl apply` with the field's path (docs/reference.md, "What the API server checks"):
//! ranges, lengths and patterns as OpenAPI keywords, and CEL `x-kubernetes-validations` for
//! the cross-field ones. Each is a copy of a `validate` rule that may only refuse what
//! `validate` refuses (core/tests/schema_rules.rs holds them to it). CEL rules use only `rule`
//! and `message` (Kubernetes 1.25 knows no `fieldPath`, `reason` or `messageExpression`), so a
//! rule sits on the node whose path the error should name, and rules under lists stay a few
//! operations long: the API server multiplies a rule's cost by how often its node can occur,
//! about a million times under a list without `maxItems`, against a budget of 10^7 per rule and
//! 10^8 per CRD (the same test estimates it and fails past either).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, ResourceRequirements, Toleration,
};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::status::LoadTestStatus;

/// A load test: HTTP scenarios run by N runner pods whose results are merged into one verdict.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "volley.dev",
    version = "v1alpha1",
    kind = "LoadTest",
    plural = "loadtests",
    shortname = "lt",
    category = "volley",
    namespaced,
    status = "LoadTestStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Where the run is: Pending, Starting, Running, Succeeded, Failed, Aborted or Error"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.verdict","description":"Passed or Failed once the thresholds are known"}"#,
    printcolumn = r#"{"name":"Runners","type":"string","jsonPath":".status.runners.summary","description":"Runner pods, e.g. 4/4"}"#,
    printcolumn = r#"{"name":"RPS","type":"string","jsonPath":".status.metrics.throughput","description":"Requests per second, all runners merged, to 3 significant digits"}"#,
    printcolumn = r#"{"name":"P95","type":"string","jsonPath":".status.metrics.p95","description":"95th percentile latency, all runners merged"}"#,
    printcolumn = r#"{"name":"Errors","type":"string","jsonPath":".status.metrics.errors","description":"Share of failed requests"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason","description":"Why the run is in its phase, e.g. ThresholdsFailed, RunnerFailed, InvalidSpec"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","priority":1,"jsonPath":".status.metrics.duration","description":"How long the load has run"}"#,
    printcolumn = r#"{"name":"Started","type":"date","priority":1,"jsonPath":".status.startTime","description":"When load started"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message","description":"What happened, in a sentence: the failed threshold, the runner error, the field to fix"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LoadTestSpec {
    /// The system under test: base URL, default timeout and headers for every request.
    pub target: Target,
    /// Steps run once per test, before any load, by runner 0 (e.g. log in). Values they
    /// extract are available to every virtual user on every runner as `${setup.NAME}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<Step>,
    /// Data feeders: CSV tables whose columns are available as `${FEEDER.COLUMN}`, one row per
    /// iteration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub data: Vec<DataFeeder>,
    /// One or more workloads that run side by side.
    // A list keyed by name: the API server refuses a second scenario of the same name
    // ("Duplicate value"), at no CEL cost.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub scenarios: Vec<Scenario>,
    /// Pass/fail criteria evaluated on the merged results of all runners, e.g.
    /// `"p(95) < 500ms"` or `{expr: "error_rate < 1%", scenario: checkout, abortOnFail: true}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "thresholds_schema")]
    pub thresholds: Vec<ThresholdSpec>,
    /// The run that baseline thresholds (`p(95) < baseline * 1.10`) compare with. Without it
    /// (or when its ConfigMap cannot be read) baseline thresholds are skipped, with the reason
    /// in their status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSpec>,
    /// How many runner pods share the load, and how they are scheduled.
    #[serde(default)]
    pub runners: Runners,
    /// Upper bound for the whole run, start barrier included. Default: the longest scenario's
    /// planned duration (start time, duration and graceful stop) plus 10 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Set to true (e.g. with `kubectl patch`) to stop a running test; partial results are kept
    /// and the phase becomes Aborted.
    #[serde(default)]
    pub abort: bool,
    /// What to delete once the run has finished. The LoadTest and its report are never deleted.
    #[serde(default)]
    pub cleanup: Cleanup,
    /// What the system under test measured during the run, read after it: Prometheus queries
    /// over the run's exact window, shown in the report and judged by `prom(NAME)` thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observe: Option<Observe>,
}

/// The system under test.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Base URL that relative step URLs are resolved against, e.g. `http://checkout.team-a.svc:8080`.
    pub base_url: String,
    /// Timeout for each request unless a step sets its own.
    #[serde(default = "default_request_timeout")]
    pub timeout: Duration,
    /// Headers sent with every request (a step's headers override these).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Accept any TLS certificate. Only for staging targets with self-signed certificates.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A CSV table that feeds one row per iteration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.configMapRef) != has(self.file)",
    "message": "set exactly one of configMapRef (in the cluster) and file (for volley run)",
}]))]
pub struct DataFeeder {
    /// Name used in templates: column `email` of feeder `users` is `${users.email}`.
    #[schemars(length(max = 63), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self != 'setup' && self != 'env'",
        "message": "`setup` and `env` are reserved; pick another feeder name",
    }]))]
    pub name: String,
    /// The CSV in a ConfigMap (in the cluster). The first line holds the column names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
    /// The CSV in a local file (for `volley run`), relative to the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Row order: sequential (wraps around), random, or unique (each row used at most once
    /// across all runners; iterations stop when rows run out).
    #[serde(default)]
    pub order: FeederOrder,
}

/// A key in a ConfigMap in the LoadTest's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    pub name: String,
    /// Key within the ConfigMap.
    pub key: String,
}

/// Where a baseline run's summary is.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineSpec {
    /// A ConfigMap in the LoadTest's namespace holding a finished run's `summary.json`: the
    /// report ConfigMap of an earlier run (`{loadtest}-report`), or one made with
    /// `kubectl create configmap NAME --from-file=summary.json`.
    pub config_map_ref: BaselineConfigMapRef,
}

/// A ConfigMap key holding a summary.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineConfigMapRef {
    /// ConfigMap name.
    pub name: String,
    /// Key within the ConfigMap. Default: `summary.json`, the report ConfigMap's key.
    #[serde(default = "default_baseline_key")]
    pub key: String,
}

fn default_baseline_key() -> String {
    "summary.json".to_owned()
}

/// Row order of a data feeder.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeederOrder {
    /// Rows in file order, wrapping around at the end.
    #[default]
    Sequential,
    /// A uniformly random row each time.
    Random,
    /// Each row at most once across the whole test.
    Unique,
}

/// How a scenario schedules iterations (same semantics as k6's executors).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Executor {
    /// Open model: `rate` iterations per `timeUnit` for `duration`, up to `maxVUs` at once.
    #[default]
    ConstantArrivalRate,
    /// Open model: the rate moves linearly between `stages` targets, from `startRate`.
    RampingArrivalRate,
    /// Closed model: `vus` virtual users loop for `duration`.
    ConstantVus,
    /// Closed model: the VU count moves linearly between `stages` targets, from `startVUs`.
    RampingVus,
    /// `iterations` in total, shared by `vus` virtual users.
    SharedIterations,
    /// Each of `vus` virtual users runs `iterations` iterations.
    PerVuIterations,
}

impl Executor {
    /// Every executor, in declaration order (a test checks it against the schema's list).
    pub const ALL: [Executor; 6] = [
        Executor::ConstantArrivalRate,
        Executor::RampingArrivalRate,
        Executor::ConstantVus,
        Executor::RampingVus,
        Executor::SharedIterations,
        Executor::PerVuIterations,
    ];

    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::ConstantArrivalRate => "constant-arrival-rate",
            Executor::RampingArrivalRate => "ramping-arrival-rate",
            Executor::ConstantVus => "constant-vus",
            Executor::RampingVus => "ramping-vus",
            Executor::SharedIterations => "shared-iterations",
            Executor::PerVuIterations => "per-vu-iterations",
        }
    }
}

/// One workload: an executor that schedules iterations of a list of steps.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
// The fields each executor needs (`volley_core::scenario::Workload::of`), one rule per executor
// and field: a rule naming two executors would cost more than the API server allows under an
// unbounded list (see the module comment).
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.rate) || self.executor != 'constant-arrival-rate'",
     "message": "executor constant-arrival-rate needs `rate`"},
    {"rule": "has(self.duration) || self.executor != 'constant-arrival-rate'",
     "message": "executor constant-arrival-rate needs `duration`"},
    {"rule": "has(self.stages) || self.executor != 'ramping-arrival-rate'",
     "message": "executor ramping-arrival-rate needs `stages`"},
    {"rule": "has(self.vus) || self.executor != 'constant-vus'",
     "message": "executor constant-vus needs `vus`"},
    {"rule": "has(self.duration) || self.executor != 'constant-vus'",
     "message": "executor constant-vus needs `duration`"},
    {"rule": "has(self.stages) || self.executor != 'ramping-vus'",
     "message": "executor ramping-vus needs `stages`"},
    {"rule": "has(self.iterations) || self.executor != 'shared-iterations'",
     "message": "executor shared-iterations needs `iterations`"},
    {"rule": "has(self.iterations) || self.executor != 'per-vu-iterations'",
     "message": "executor per-vu-iterations needs `iterations`"},
]))]
pub struct Scenario {
    /// Unique name, used in metrics, thresholds and status.
    #[schemars(length(max = 63), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self != 'setup'",
        "message": "`setup` is reserved for the results of spec.setup; pick another scenario name",
    }]))]
    pub name: String,
    /// How iterations are scheduled.
    // The longest name's length: it bounds the cost the API server estimates for the
    // `self.executor` comparisons of the rules above (an enum alone does not, before 1.26).
    #[schemars(extend("maxLength" = 21))]
    pub executor: Executor,
    /// Iterations per `timeUnit`, in total across all runners (constant-arrival-rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub rate: Option<u64>,
    /// Starting rate of ramping-arrival-rate (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10_000_000))]
    pub start_rate: Option<u64>,
    /// The period `rate` and stage targets of arrival-rate executors refer to (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_unit: Option<Duration>,
    /// How long the scenario runs (constant-arrival-rate, constant-vus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Virtual users, in total across all runners (constant-vus, shared-iterations,
    /// per-vu-iterations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub vus: Option<u64>,
    /// Starting VU count of ramping-vus (default 1).
    #[serde(rename = "startVUs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub start_vus: Option<u64>,
    /// Concurrency cap of arrival-rate executors, in total across all runners. Iterations that
    /// find no free VU are counted as dropped. Default: twice the peak rate per second.
    #[serde(rename = "maxVUs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_vus: Option<u64>,
    /// Iterations: in total (shared-iterations) or per VU (per-vu-iterations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000u64))]
    pub iterations: Option<u64>,
    /// Targets to move to linearly, each over its duration (ramping executors). Targets are
    /// totals across all runners: VUs for ramping-vus, iterations per `timeUnit` for
    /// ramping-arrival-rate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
    /// Cap on the run time of iteration-based executors (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Duration>,
    /// Delay from the common start before this scenario begins.
    #[serde(default)]
    pub start_time: Duration,
    /// Time in-flight iterations get to finish once the scenario's time is up; after it they
    /// are interrupted.
    #[serde(default = "default_graceful_stop")]
    pub graceful_stop: Duration,
    /// What one iteration does, in order.
    pub steps: Vec<Step>,
}

fn default_graceful_stop() -> Duration {
    Duration::from_secs(30)
}

/// One stage of a ramping executor.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Time to move from the previous target to this one.
    pub duration: Duration,
    /// Target at the end of the stage (VUs, or iterations per timeUnit), total across runners.
    // The higher of the two executors' limits (ramping-arrival-rate's); ramping-vus's lower
    // one is checked by `volley_core::validate` only.
    #[schemars(range(max = 10_000_000))]
    pub target: u64,
}

/// One step of an iteration (or of `setup`): an HTTP request with optional check, extraction,
/// retry and polling, a WebSocket session, or a sleep. Exactly one of `request`, `websocket`
/// and `sleep` is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
// Exactly one of three, in the forms the cost estimate knows: an odd count (`!=` chains as
// exclusive or) that is not all three (not all equal).
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.request) != has(self.websocket) != has(self.sleep)",
    "message": "a step is either a request, a websocket or a sleep: set exactly one of them",
}, {
    "rule": "has(self.request) != has(self.websocket) || has(self.request) != has(self.sleep)",
    "message": "a step is either a request, a websocket or a sleep: set exactly one of them",
}]))]
pub struct Step {
    /// Name used in metrics, thresholds and status. Default for requests: `METHOD url`.
    // `validate` counts bytes and Unicode whitespace; the schema counts characters and
    // matches ASCII whitespace, so it refuses a subset of what `validate` refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r"\S"))]
    pub name: Option<String>,
    /// The HTTP request to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// Conditions the response must meet; a failed check counts as an error of kind `check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// Values to take from the response, usable as `${NAME}` in later steps of the iteration
    /// (or as `${setup.NAME}` when extracted in `setup`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extract: BTreeMap<String, Extractor>,
    /// Resend the request on the listed error kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Repeat the request until the response matches; the step's latency is then the
    /// end-to-end time from the first send to the matching response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Until>,
    /// Pause instead of a request: `1s`, or `{min: 1s, max: 3s}` for a uniformly random pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "sleep_schema")]
    pub sleep: Option<Sleep>,
    /// A WebSocket session instead of a request: connect, send messages (each may wait for a
    /// reply), hold the connection open, close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocket>,
    /// Custom metrics this step records from each response it judges: trends (distributions
    /// such as a server-reported `inference_latency`), counters and gauges, read with a JSON
    /// path, a header or a regex. Thresholds address them as `trend(NAME)`, `counter(NAME)`
    /// and `gauge(NAME)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<CustomMetric>,
}

/// A custom metric a step records from its responses. Exactly one of `trend`, `counter` and
/// `gauge` is set. Steps may share a name (their values are merged) if they declare the same
/// kind (and, for trends, a time unit or not alike).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetric {
    /// The metric's name in thresholds, status and reports, e.g. `inference_latency`.
    #[schemars(length(max = 63), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub name: String,
    /// A distribution (percentiles, avg, min, max) of a number read from each response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<TrendMetric>,
    /// A running total: 1 per response matching `when`, or the number read from each one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<CounterMetric>,
    /// A value that goes up and down (e.g. a queue depth): the last one read, min, max and
    /// the distribution of every reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gauge: Option<ValueSource>,
}

/// Where a custom metric reads its number. Exactly one source is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValueSource {
    /// A JSON path into the body, e.g. `$.latency_ms` (a JSON number, or a string holding one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// A response header name, e.g. `X-Queue-Depth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A regular expression over the body; the first capture group (or the whole match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A trend: the value source and its unit.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrendMetric {
    /// A JSON path into the body, e.g. `$.latency_ms` (a JSON number, or a string holding one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// A response header name, e.g. `X-Queue-Depth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A regular expression over the body; the first capture group (or the whole match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The number's unit. A time unit (`us`, `ms`, `s`) makes a time trend, kept like
    /// latencies (microseconds, thresholds in `ms`/`s`); anything else (e.g. `tokens`) or
    /// nothing makes a plain-number trend, the unit a label only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A counter: either `when` (adds 1 per matching response) or a value source (adds the number
/// read).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CounterMetric {
    /// Add 1 for each response where this holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<CounterWhen>,
    /// Add the number read with this JSON path into the body (instead of `when`), e.g. `$.latency_ms` (a JSON number, or a string holding one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// Add the number in this response header (instead of `when`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Add the number this regular expression finds in the body (instead of `when`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The condition of a counting counter.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CounterWhen {
    /// A JSON path into the body, e.g. `$.crisis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// A response header name, e.g. `X-Cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A regular expression over the body; the first capture group (or the whole match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The value that counts (compared as text: `true`, `42`, `done`). Without it, any value
    /// found counts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar_text"
    )]
    #[schemars(schema_with = "scalar_schema")]
    pub equals: Option<String>,
}

macro_rules! value_source_of {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// Where the value is read, as one [`ValueSource`].
            pub fn source(&self) -> ValueSource {
                ValueSource {
                    json_path: self.json_path.clone(),
                    header: self.header.clone(),
                    regex: self.regex.clone(),
                }
            }
        }
    )*};
}

// The three source fields are repeated in each struct rather than `#[serde(flatten)]`ed: a
// flattened struct hides misspelt keys from the unknown-field check.
value_source_of!(TrendMetric, CounterMetric, CounterWhen);

/// Reads a YAML/JSON scalar (string, number or boolean) as its text, so `equals: true` and
/// `equals: "true"` mean the same.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        v @ (serde_json::Value::Bool(_) | serde_json::Value::Number(_)) => Ok(Some(v.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, number or boolean, not {other}"
        ))),
    }
}

/// A string, number or boolean: no structural schema names all three, so the API server
/// accepts any value here and Volley's own reading checks it.
fn scalar_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "The value that counts (compared as text: `true`, `42`, `done`). Without it, any value found counts.",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl Scenario {
    /// What a rate is per: `timeUnit`, or one second when unset (or zero, which validation
    /// refuses).
    pub fn rate_unit(&self) -> std::time::Duration {
        self.time_unit
            .map(|u| u.get())
            .filter(|u| !u.is_zero())
            .unwrap_or(std::time::Duration::from_secs(1))
    }
}

impl Step {
    /// The name metrics and thresholds use for this step.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match (&self.request, &self.websocket, &self.sleep) {
            (Some(req), _, _) => format!("{} {}", req.method.to_uppercase(), req.url),
            (None, Some(ws), _) => format!("WS {}", ws.url),
            (None, None, Some(sleep)) => format!("sleep {sleep}"),
            (None, None, None) => "(empty step)".to_string(),
        }
    }
}

/// An HTTP request. Strings may use templates: `${env:NAME}`, `${setup.NAME}`, extracted
/// values `${NAME}`, feeder columns `${FEEDER.COLUMN}`, `${uuid}`, `${vu}`, `${iteration}`,
/// `${runner}`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// HTTP method (default GET).
    #[serde(default = "default_method")]
    #[schemars(regex(pattern = r"^(?i:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)$"))]
    pub method: String,
    /// Path relative to `target.baseUrl`, or an absolute URL.
    #[schemars(length(max = 8192), regex(pattern = r"\S"))]
    pub url: String,
    /// Extra headers for this request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A JSON body (any JSON value); sets `Content-Type: application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub json: Option<serde_json::Value>,
    /// A raw body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A multipart/form-data body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multipart: Vec<MultipartPart>,
    /// Timeout for this request (default `target.timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl Request {
    /// Every string of the request that may hold `${...}` templates: URL, header values, raw
    /// body, JSON string values at any depth, multipart values.
    pub fn texts(&self) -> Vec<&str> {
        fn json_strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::String(s) => out.push(s),
                serde_json::Value::Array(items) => items.iter().for_each(|i| json_strings(i, out)),
                serde_json::Value::Object(map) => map.values().for_each(|i| json_strings(i, out)),
                _ => {}
            }
        }
        let mut out = vec![self.url.as_str()];
        out.extend(self.headers.values().map(String::as_str));
        out.extend(self.body.as_deref());
        if let Some(json) = &self.json {
            json_strings(json, &mut out);
        }
        out.extend(self.multipart.iter().filter_map(|p| p.value.as_deref()));
        out
    }
}

impl Default for Request {
    fn default() -> Self {
        Self {
            method: default_method(),
            url: String::new(),
            headers: BTreeMap::new(),
            json: None,
            body: None,
            multipart: Vec::new(),
            timeout: None,
        }
    }
}

fn default_method() -> String {
    "GET".to_string()
}

/// A WebSocket session: connect (the handshake is checked against the allowed targets first),
/// send `messages` in order, each optionally waiting for a reply, keep receiving for `hold`,
/// then close. Strings may use the same templates as requests.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebSocket {
    /// `ws://` or `wss://` URL, or a path relative to `target.baseUrl` (whose `http` becomes
    /// `ws` and `https` becomes `wss`).
    #[schemars(length(max = 8192), regex(pattern = r"\S"))]
    pub url: String,
    /// Extra headers of the handshake request (the target's headers are sent too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub subprotocols: Vec<String>,
    /// Text messages sent in order once connected; each may wait for a matching reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub messages: Vec<WsMessage>,
    /// How long to keep the connection open after the messages, receiving (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Duration>,
    /// Handshake timeout (default `target.timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// One message of a WebSocket session.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WsMessage {
    /// The text to send (templates allowed).
    pub send: String,
    /// Wait for a received message that matches; the time from the send to it is the
    /// message latency. Messages that do not match are counted and timed as chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<WsExpect>,
}

/// What a reply must look like. Exactly one of `jsonPath`, `contains` and `regex` is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WsExpect {
    /// A JSON path into the received message; with `equals`, the value it must have
    /// (compared as text: `true`, `42` and `"done"` all work), otherwise it must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// The value `jsonPath` must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub equals: Option<serde_json::Value>,
    /// Text the received message must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// A regular expression the received message must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// How long to wait for the reply (default 10s); past it the step fails with an
    /// `expect timeout`.
    #[serde(default = "default_expect_timeout")]
    pub timeout: Duration,
}

fn default_expect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl WebSocket {
    /// Every string of the session that may hold `${...}` templates: URL, header values,
    /// messages.
    pub fn texts(&self) -> Vec<&str> {
        let mut out = vec![self.url.as_str()];
        out.extend(self.headers.values().map(String::as_str));
        out.extend(self.messages.iter().map(|m| m.send.as_str()));
        out
    }
}

/// One part of a multipart body: a text value, a local file, or a ConfigMap key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MultipartPart {
    /// Form field name.
    pub name: String,
    /// A text value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A local file (for `volley run`), relative to the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A ConfigMap key holding the content (in the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
    /// File name sent in the part's Content-Disposition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The part's Content-Type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// Conditions a response must meet. All that are set must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Accepted status codes. Default: any 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 100, max = 599)))]
    pub status: Vec<u16>,
    /// Text the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// A JSON path (e.g. `$.status`) into the body; with `equals`, the value it must have,
    /// otherwise it must merely exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// The value `jsonPath` must have (compared as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// Slowest acceptable response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Duration>,
}

/// Where to take an extracted value from. Exactly one source is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Extractor {
    /// A JSON path into the body, e.g. `$.token` or `$.items[0].id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// A response header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie set by the response (e.g. a CSRF token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// A regular expression over the body; the first capture group (or the whole match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Error kinds a request can fail with.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection could not be established (refused, reset, DNS, TLS).
    #[serde(rename = "connect")]
    Connect,
    /// No complete response within the timeout.
    #[serde(rename = "timeout")]
    Timeout,
    /// A 4xx status.
    #[serde(rename = "4xx")]
    Status4xx,
    /// A 5xx status.
    #[serde(rename = "5xx")]
    Status5xx,
    /// A check did not hold.
    #[serde(rename = "check")]
    Check,
    /// An extraction found nothing.
    #[serde(rename = "extract")]
    Extract,
    /// The request was not sent: its host is outside the cluster administrator's allowed
    /// targets (`--allowed-targets`, see `volley_core::target_policy`). Only runners produce it;
    /// it cannot be written in a manifest (`retry.on`), and it is left out of the schema.
    #[serde(rename = "blocked", skip_deserializing)]
    #[schemars(skip)]
    Blocked,
}

impl ErrorKind {
    /// Every kind. Error counters are keyed by these alone (the aggregator refuses a report
    /// naming another), so a new kind goes here too.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Status4xx,
        ErrorKind::Status5xx,
        ErrorKind::Check,
        ErrorKind::Extract,
        ErrorKind::Blocked,
    ];
}

/// Retry policy of a request step.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Maximum attempts, the first one included.
    #[schemars(range(min = 1, max = 100))]
    pub attempts: u32,
    /// Error kinds that cause a retry (default: connect, timeout, 5xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<ErrorKind>,
    /// Pause before the first retry, doubled after each further one.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
}

fn default_backoff() -> Duration {
    Duration::from_millis(100)
}

/// Polling: repeat the request until a JSON path has a value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Until {
    /// A JSON path into the body, e.g. `$.status`.
    pub json_path: String,
    /// The value that ends polling (compared as text).
    pub equals: String,
    /// Pause between polls.
    #[serde(default = "default_poll_every")]
    pub every: Duration,
    /// Give up after this long; the step then fails with kind `timeout`.
    #[serde(default = "default_poll_timeout")]
    pub timeout: Duration,
}

fn default_poll_every() -> Duration {
    Duration::from_secs(1)
}

fn default_poll_timeout() -> Duration {
    Duration::from_secs(60)
}

/// A pause: fixed, or uniformly random between `min` and `max`.
#[derive(Clone, Debug, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum Sleep {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly random in `[min, max]`.
    Range {
        /// Shortest pause.
        min: Duration,
        /// Longest pause.
        max: Duration,
    },
}

impl std::fmt::Display for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sleep::Fixed(d) => write!(f, "{d}"),
            Sleep::Range { min, max } => write!(f, "{min}..{max}"),
        }
    }
}

/// A threshold: an expression string, or an object with a scope and abort settings.
#[derive(Clone, Debug, Serialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum ThresholdSpec {
    /// `"p(95) < 500ms"`: evaluated over all requests.
    Expr(String),
    /// An expression with a scope and abort settings.
    Detailed(Threshold),
}

impl ThresholdSpec {
    /// The threshold in its object form.
    pub fn to_threshold(&self) -> Threshold {
        match self {
            ThresholdSpec::Expr(expr) => Threshold {
                expr: expr.clone(),
                ..Threshold::default()
            },
            ThresholdSpec::Detailed(t) => t.clone(),
        }
    }
}

/// A threshold in object form.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Threshold {
    /// The expression, e.g. `p(99) < 1s`, `error_rate < 1%`, `rps > 100`, `checks > 99%`.
    pub expr: String,
    /// Only this scenario's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// Only this step's requests (needs `scenario`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Stop the whole test as soon as this threshold fails on the merged data.
    #[serde(default)]
    pub abort_on_fail: bool,
    /// Do not evaluate for abortOnFail until the test has run this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_abort_eval: Option<Duration>,
}

/// Runner pods: how many, and how they are scheduled.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Runners {
    /// Number of runner pods; rates, VUs and iterations are split exactly between them.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallelism: u32,
    /// Runner image. Default: the operator's configured runner image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy (Always, IfNotPresent, Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == 'Always' || self == 'IfNotPresent' || self == 'Never'",
        "message": "must be one of Always, IfNotPresent, Never",
    }]))]
    pub image_pull_policy: Option<String>,
    /// CPU and memory for each runner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels runner pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for runner pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules for runner pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Environment variables for runners (use `valueFrom.secretKeyRef` for credentials
    /// referenced as `${env:NAME}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Whole ConfigMaps or Secrets as runner environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Service account of runner pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra labels on runner pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on runner pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Priority class of runner pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// One runner per node (required pod anti-affinity), so runners do not share a NIC.
    #[serde(default)]
    pub separate: bool,
    /// What a runner failure means for the run: Fail (default) ends it Failed; Continue keeps
    /// the survivors' verdict.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

impl Default for Runners {
    fn default() -> Self {
        Self {
            parallelism: default_parallelism(),
            image: None,
            image_pull_policy: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            env: Vec::new(),
            env_from: Vec::new(),
            service_account_name: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            priority_class_name: None,
            separate: false,
            failure_policy: FailurePolicy::default(),
        }
    }
}

fn default_parallelism() -> u32 {
    1
}

/// What a runner failure means for the run.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The run ends Failed with a reason naming the runner.
    #[default]
    Fail,
    /// The run finishes with the survivors, whose merged results decide the verdict.
    Continue,
}

/// Cleanup after the run.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Cleanup {
    /// When to delete runner pods and the run's Secret: Always, OnSuccess (default) or Never.
    #[serde(default)]
    pub runners: CleanupPolicy,
    /// Delete the runner pods and the Secret that the policy kept (Never, or OnSuccess after a run that did not succeed) this long after the run finished. A policy that deletes (Always, or OnSuccess after a success) deletes at the finish, without waiting for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u32>,
    /// How many earlier runs `status.history` keeps (default 10; more than 50 counts as 50).
    /// The report ConfigMap of a run leaves with its history entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<u32>,
}

/// When to delete runner pods.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// As soon as the run finishes.
    Always,
    /// When the run succeeded; failed runs keep their pods for `kubectl logs`.
    #[default]
    OnSuccess,
    /// Never (until the LoadTest is deleted).
    Never,
}

/// Server-side metrics read over the run's window.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Observe {
    /// Prometheus queries run after the load, over the run's window (start barrier and setup
    /// excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusObserve>,
}

/// A Prometheus server and the queries to run on it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusObserve {
    /// The server's base URL, e.g. `http://prometheus.monitoring.svc:9090` (the HTTP API is
    /// under `/api/v1/`). Checked against the operator's allowed targets like any address
    /// Volley contacts; `volley run --prometheus-url` overrides it.
    #[schemars(length(max = 2048), regex(pattern = r"^https?://\S+$"))]
    pub url: String,
    /// Credentials, from Secrets in the LoadTest's namespace. Never copied into the status,
    /// the logs or the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PrometheusAuth>,
    /// Accept any TLS certificate from the server (staging only), like
    /// `target.insecureSkipTlsVerify`.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// The queries (at most 50). `$__range` (the window's length, e.g. `93412ms`), `$__start`
    /// and `$__end` (its edges in Unix seconds) are replaced with the run's window.
    #[schemars(length(min = 1, max = 50))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub queries: Vec<PrometheusQuery>,
    /// Upper bound for each query's HTTP request. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Credentials for the Prometheus server: exactly one of a bearer token and basic auth.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.bearerTokenSecretRef) != has(self.basicAuth)",
    "message": "set exactly one of bearerTokenSecretRef and basicAuth",
}]))]
pub struct PrometheusAuth {
    /// A Secret key holding a bearer token, sent as `Authorization: Bearer ...`. For `volley
    /// run`, the token comes from the `VOLLEY_PROMETHEUS_TOKEN` environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// HTTP basic auth. For `volley run`, from `VOLLEY_PROMETHEUS_USERNAME` and
    /// `VOLLEY_PROMETHEUS_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
}

/// HTTP basic auth from two Secret keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// The user name.
    pub username_secret_ref: SecretKeyRef,
    /// The password.
    pub password_secret_ref: SecretKeyRef,
}

/// A key in a Secret in the LoadTest's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// One PromQL query, judged by `prom(NAME)` thresholds and shown in the report.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusQuery {
    /// Name used in thresholds (`prom(NAME) < 100`) and the report.
    #[schemars(length(max = 63), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub name: String,
    /// PromQL, evaluated once at the window's end (an instant query). It must return one
    /// series (or a scalar): several series are an error naming their labels, so aggregate
    /// them (`sum(...)`, `max(...)`), or name the label to report by in `by`.
    #[schemars(length(max = 8192), regex(pattern = r"\S"))]
    pub query: String,
    /// Also read it over the window (a range query, one sample per second, or coarser for long
    /// runs) for the report's chart.
    #[serde(default)]
    pub series: bool,
    /// A label to report by: the query may return several series, one value per value of
    /// this label (at most 50, in label order; the rest are counted). A `prom(NAME)`
    /// threshold judges every one of them. A series without the label, or two with the same
    /// value of it, is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub by: Option<String>,
    /// The window the query covers: `run` (default) the whole run's, once; `scenario` each
    /// scenario's own (from its `startTime` to its planned end, capped at the run's end), one
    /// result per scenario, which thresholds scoped to that scenario judge.
    #[serde(default, skip_serializing_if = "QueryWindow::is_run")]
    pub window: QueryWindow,
}

/// The window a Prometheus query covers.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueryWindow {
    /// The whole run's window, one result.
    #[default]
    Run,
    /// Each scenario's own window, one result per scenario.
    Scenario,
}

impl QueryWindow {
    /// Whether this is the default, the whole run's window.
    pub fn is_run(&self) -> bool {
        *self == QueryWindow::Run
    }
}

/// Any JSON value. `x-kubernetes-preserve-unknown-fields` keeps the schema structural.
fn any_json_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Any JSON value.",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// `1s` or `{min: 1s, max: 3s}`: a string-or-object has no structural schema, so the API
/// server accepts any value here and Volley's own validation checks the shape.
fn sleep_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Pause instead of a request: a duration such as `1s`, or `{min: 1s, max: 3s}` for a uniformly random pause.",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// String-or-object items, like [`sleep_schema`]: the API server accepts any value and
/// Volley's validation parses each entry.
fn thresholds_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "description": "An expression such as `p(95) < 500ms`, or an object {expr, scenario, step, abortOnFail, delayAbortEval}.",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// The bounds of a random sleep, in object form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepRange {
    min: Duration,
    max: Duration,
}

// Hand-written instead of `#[serde(untagged)]`: untagged enums report only "did not match any
// variant", while these say which key or value is wrong.
impl<'de> Deserialize<'de> for Sleep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SleepVisitor;
        impl<'de> serde::de::Visitor<'de> for SleepVisitor {
            type Value = Sleep;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as `1s`, or `{min: 1s, max: 3s}`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sleep, E> {
                v.parse().map(Sleep::Fixed).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Sleep, A::Error> {
                let range =
                    SleepRange::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Sleep::Range {
                    min: range.min,
                    max: range.max,
                })
            }
        }
        d.deserialize_any(SleepVisitor)
    }
}

impl<'de> Deserialize<'de> for ThresholdSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ThresholdVisitor;
        impl<'de> serde::de::Visitor<'de> for ThresholdVisitor {
            type Value = ThresholdSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an expression such as `p(95) < 500ms`, or an object with `expr`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ThresholdSpec, E> {
                Ok(ThresholdSpec::Expr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ThresholdSpec, A::Error> {
                Threshold::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ThresholdSpec::Detailed)
            }
        }
        d.deserialize_any(ThresholdVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn executor_all_lists_every_executor_the_schema_accepts() {
        // The schema lists each variant, as `enum` values or `const` alternatives.
        fn names(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        match (k.as_str(), v) {
                            ("const", serde_json::Value::String(s)) => out.push(s.clone()),
                            ("enum", serde_json::Value::Array(items)) => out
                                .extend(items.iter().filter_map(|i| i.as_str().map(String::from))),
                            _ => names(v, out),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|i| names(i, out)),
                _ => {}
            }
        }
        let schema = serde_json::to_value(schemars::schema_for!(Executor)).unwrap();
        let mut in_schema = Vec::new();
        names(&schema, &mut in_schema);
        let all: Vec<String> = Executor::ALL.iter().map(|e| e.as_str().into()).collect();
        assert_eq!(all, in_schema);
    }
}
