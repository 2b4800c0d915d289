//! The `LoadTestSchedule` custom resource: a LoadTest run again and again on a cron schedule,
//! like a CronJob runs Jobs.
//!
//! The operator creates one LoadTest per scheduled time from `spec.template`, owned by the
//! schedule, and keeps a short trend of the runs in the status. `docs/reference.md` §
//! "LoadTestSchedule" describes every field and how missed times are handled.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::LoadTestSpec;
use crate::status::{Phase, Verdict};

/// Runs kept in `status.recentRuns`.
pub const MAX_RECENT_RUNS: usize = 10;

/// A schedule of load tests: a new LoadTest from `template` at every time `schedule` names.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "volley.dev",
    version = "v1alpha1",
    kind = "LoadTestSchedule",
    plural = "loadtestschedules",
    shortname = "lts",
    category = "volley",
    namespaced,
    status = "LoadTestScheduleStatus",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule","description":"The cron schedule"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend","description":"Whether new runs are held back"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.activeCount","description":"Runs not finished yet"}"#,
    printcolumn = r#"{"name":"Last run","type":"string","jsonPath":".status.lastRun.name","description":"The newest finished run"}"#,
    printcolumn = r#"{"name":"Last verdict","type":"string","jsonPath":".status.lastRun.verdict","description":"Passed or Failed: the newest finished run's verdict"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Last schedule","type":"date","priority":1,"jsonPath":".status.lastScheduleTime","description":"When the newest run was scheduled"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LoadTestScheduleSpec {
    /// When to run, in cron format (`minute hour day-of-month month day-of-week`, e.g.
    /// `0 2 * * *` for 02:00 every night), as a CronJob's schedule; `@hourly`, `@daily`,
    /// `@weekly`, `@monthly` and `@yearly` are accepted too.
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What to do when a run is due while an earlier one has not finished: `Forbid` (skip the
    /// new run), `Replace` (delete the running one, start the new one) or `Allow` (run both).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// How late, in seconds, a run may still start after its scheduled time (e.g. after the
    /// operator was down). Later runs are skipped. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// Set to true to start no new runs; running ones carry on.
    #[serde(default)]
    pub suspend: bool,
    /// Finished runs that passed (phase Succeeded) to keep; older ones are deleted with their
    /// reports.
    #[serde(default = "default_successful_limit")]
    pub successful_runs_history_limit: u32,
    /// Finished runs that did not pass (Failed, Aborted, Error) to keep; older ones are
    /// deleted with their reports.
    #[serde(default = "default_failed_limit")]
    pub failed_runs_history_limit: u32,
    /// The LoadTest each run is created from.
    pub template: LoadTestTemplate,
}

fn default_successful_limit() -> u32 {
    3
}

fn default_failed_limit() -> u32 {
    1
}

/// What to do with a run that is due while an earlier one is still going.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ConcurrencyPolicy {
    /// Skip the new run while an earlier one is going.
    #[default]
    Forbid,
    /// Delete the runs still going and start the new one.
    Replace,
    /// Start the new run beside the ones still going.
    Allow,
}

/// The LoadTest a run is created from.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadTestTemplate {
    /// Labels and annotations every run gets.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// The spec of every run, exactly as a LoadTest's `spec`.
    pub spec: LoadTestSpec,
}

/// Labels and annotations of the runs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of every run (the operator adds `volley.dev/schedule`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of every run (the operator adds `volley.dev/scheduled-at`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of a LoadTestSchedule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadTestScheduleStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The scheduled time of the newest run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// Runs not finished yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<RunReference>,
    /// How many runs are not finished yet, for `kubectl get`.
    #[serde(default)]
    pub active_count: u32,
    /// The newest finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// The newest finished runs still in the cluster (at most 10), newest first: whether p95
    /// crept up over the last nights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<RunSummary>,
    /// `Ready`: whether the schedule, time zone and template are valid (False names the
    /// field); `MissedSchedules`: whether more than 100 scheduled times were missed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A run of the schedule: a LoadTest it owns.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunReference {
    /// Name of the LoadTest.
    pub name: String,
}

/// The outcome of one finished run.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Name of the LoadTest.
    pub name: String,
    /// When the run was due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_time: Option<Time>,
    /// The run's final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Passed or Failed; empty when the thresholds gave no verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// 95th percentile latency in milliseconds, all runners merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    /// failures / requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
}
