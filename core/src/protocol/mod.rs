//! The runner ↔ aggregator protocol (`docs/reference.md` §3): HTTP/JSON messages, shared by
//! `volley agent` (the client), the aggregator (the server, inside `volley run` and the
//! operator), and their tests.
//!
//! Every request carries `Authorization: Bearer CREDENTIAL`, the calling runner's own
//! credential: HMAC-SHA256 of `runner/INDEX` keyed with the run's secret token, in hex (see
//! `volley_aggregator::server::runner_credential`). The aggregator checks it against the runner
//! index of the call (the path's `{index}`, the start poll's `runner`, runner 0 for `setup`),
//! before reading the body; a missing or wrong credential, or a run the aggregator does not
//! know, is answered 401 alike. So a runner can speak only for itself, and the run's token
//! itself never reaches a runner. Paths:
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | POST | `/v1/runs/{run}/runners/{index}/ready` | [`ReadyRequest`] → [`ReadyResponse`] |
//! | GET  | `/v1/runs/{run}/start?runner={index}` (long-poll) | → [`StartResponse`] |
//! | POST | `/v1/runs/{run}/setup` | [`SetupResult`] → `204` |
//! | POST | `/v1/runs/{run}/runners/{index}/report` | [`RunnerReport`] → [`ReportResponse`] |
//!
//! This module holds the messages and paths; [`report`] holds the metrics report a runner
//! sends ([`report::Report`]) and its histogram codec.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::report::Report;
use volley_crds::spec::LoadTestSpec;

pub mod custom;
pub mod histogram;
pub mod report;

/// Version of these messages; a runner and an aggregator must agree on it.
pub const PROTOCOL_VERSION: u32 = 1;

/// Environment variable carrying a runner's bearer token (its own credential, see the module
/// documentation) into the runner.
pub const TOKEN_ENV: &str = "VOLLEY_TOKEN";

/// How long a start long-poll is held before the aggregator answers [`StartResponse::Wait`].
pub const START_POLL_HOLD_MS: u64 = 20_000;

/// Path of the ready call.
pub fn ready_path(run: &str, index: u32) -> String {
    format!("/v1/runs/{run}/runners/{index}/ready")
}

/// Path of the start long-poll.
pub fn start_path(run: &str, index: u32) -> String {
    format!("/v1/runs/{run}/start?runner={index}")
}

/// Path where runner 0 posts the setup result.
pub fn setup_path(run: &str) -> String {
    format!("/v1/runs/{run}/setup")
}

/// Path of the report call.
pub fn report_path(run: &str, index: u32) -> String {
    format!("/v1/runs/{run}/runners/{index}/report")
}

/// A runner announces itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyRequest {
    /// The runner's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Where the runner runs (pod or host name), for status messages about it.
    #[serde(default)]
    pub host: String,
}

/// The answer to [`ReadyRequest`]: what to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyResponse {
    /// The LoadTest's name, for logs and the summary.
    pub name: String,
    /// How many runners share the load.
    pub runners: u32,
    /// The whole spec. Each runner takes its exact share with
    /// [`crate::split::split_spec`] and its own index, so the plan is computed once, the
    /// same way, everywhere.
    pub spec: LoadTestSpec,
    /// How often to report, in ms.
    pub report_interval_ms: u64,
}

/// The answer to the start long-poll.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum StartResponse {
    /// Not everyone is ready yet: poll again.
    Wait,
    /// Runner 0 only: run `spec.setup` now and post a [`SetupResult`].
    RunSetup,
    /// Start the load at `startAtUnixMs` (wall clock, a moment shortly in the future so all
    /// runners start within milliseconds of each other), with the setup values.
    #[serde(rename_all = "camelCase")]
    Start {
        /// Common start, milliseconds since the Unix epoch.
        start_at_unix_ms: u64,
        /// Values extracted by setup, for `${setup.NAME}`.
        setup: BTreeMap<String, String>,
    },
    /// The run is over before it started (setup failed, aborted, timed out): exit.
    #[serde(rename_all = "camelCase")]
    Abort {
        /// Why, as a sentence.
        reason: String,
    },
}

/// Runner 0's setup outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupResult {
    /// Extracted values on success.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Why setup failed, if it did; the run then ends in Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The setup requests' measurements (scenario `setup`), so they appear in the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
}

/// A runner's cumulative report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerReport {
    /// Cumulative metrics since the start, with sequence number and `done`.
    #[serde(flatten)]
    pub report: Report,
    /// When this runner sent its first request, ms since the Unix epoch (start skew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_request_unix_ms: Option<u64>,
    /// A fatal problem that ended this runner (it stops after this report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to a report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResponse {
    /// Stop now (abort, abortOnFail, timeout): finish in-flight work, send a final report.
    pub stop: bool,
    /// Why, when `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn start_responses_are_tagged() {
        let start = StartResponse::Start {
            start_at_unix_ms: 1_700_000_000_000,
            setup: BTreeMap::from([("token".to_string(), "t".to_string())]),
        };
        let json = serde_json::to_value(&start).unwrap();
        assert_eq!(json["action"], "start");
        assert_eq!(json["startAtUnixMs"], 1_700_000_000_000u64);
        assert_eq!(
            serde_json::from_value::<StartResponse>(json).unwrap(),
            start
        );
        let wait: StartResponse = serde_json::from_str(r#"{"action":"wait"}"#).unwrap();
        assert_eq!(wait, StartResponse::Wait);
        let setup: StartResponse = serde_json::from_str(r#"{"action":"runSetup"}"#).unwrap();
        assert_eq!(setup, StartResponse::RunSetup);
    }

    #[test]
    fn a_runner_report_is_a_report_with_extras() {
        let report = RunnerReport {
            report: Report {
                runner: 2,
                seq: 7,
                elapsed_ms: 7000,
                done: false,
                scenarios: Vec::new(),
            },
            first_request_unix_ms: Some(5),
            error: None,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["runner"], 2);
        assert_eq!(json["seq"], 7);
        assert_eq!(json["firstRequestUnixMs"], 5);
        assert_eq!(
            serde_json::from_value::<RunnerReport>(json).unwrap(),
            report
        );
    }

    #[test]
    fn paths() {
        assert_eq!(ready_path("r1", 3), "/v1/runs/r1/runners/3/ready");
        assert_eq!(start_path("r1", 0), "/v1/runs/r1/start?runner=0");
        assert_eq!(setup_path("r1"), "/v1/runs/r1/setup");
        assert_eq!(report_path("r1", 1), "/v1/runs/r1/runners/1/report");
    }
}
