//! Volley's API: the `LoadTest` custom resource and the pure logic that reads it.
//!
//! - [`spec`] and [`status`]: the resource types (group `volley.dev`, version `v1alpha1`).
//! - [`manifest`]: reading a LoadTest from YAML with errors that name the field.
//! - [`validate`]: rules the CRD schema cannot express, as field errors.
//! - [`threshold`]: the threshold language, its parser and evaluator.
//! - [`template`]: the `${...}` references steps use.
//! - [`protocol`]: the runner ↔ aggregator messages.
//! - [`plan`]: how long a run is planned to take, and its default timeout.
//! - [`split`]: each runner's exact share of the load.
//! - [`metrics`]: the metrics model (recording, exact merging, the runner report wire format,
//!   status summaries and threshold evaluation on merged data).
//! - [`crd`]: the CRD YAML generated from these types.
//! - [`text`]: quoting user text in messages.
//! - [`target_policy`]: the cluster administrator's allow-list of load targets (hosts, wildcards,
//!   IPs, CIDR blocks) and the static check of a spec's URLs against it.

pub mod crd;
pub mod duration;
pub mod manifest;
pub mod metrics;
pub mod plan;
pub mod plateau;
pub mod protocol;
pub mod spec;
pub mod split;
pub mod status;
pub mod target_policy;
pub mod template;
pub mod text;
pub mod threshold;
pub mod validate;

pub use duration::Duration;
pub use spec::{LoadTest, LoadTestSpec};
pub use status::LoadTestStatus;
