//! Volley's engine-independent logic: everything the runner, the aggregator and the operator
//! agree on, as plain functions over the API types of `volley-crds`.
//!
//! - [`manifest`]: reading a LoadTest from YAML with errors that name the field.
//! - [`validate`]: rules the CRD schema cannot express, as field errors.
//! - [`threshold`]: the threshold language, its parser, and threshold evaluation on a run's
//!   merged metrics.
//! - [`template`]: the `${...}` references steps use.
//! - [`target_policy`]: the cluster administrator's allow-list of load targets (hosts, wildcards,
//!   IPs, CIDR blocks) and the static check of a spec's URLs against it.
//! - [`scenario`]: a step's kind and a scenario's executor as typed data, turned once from the
//!   manifest's shape.
//! - [`plan`]: how long a run is planned to take, and its default timeout.
//! - [`split`]: each runner's exact share of the load.
//! - [`plateau`]: the rate probe's plateau search.
//! - [`metrics`]: the metrics model (recording, exact merging, status summaries and the
//!   per-second series).
//! - [`protocol`]: the runner ↔ aggregator messages, and the metrics report's wire format.

pub mod compare;
pub mod manifest;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod plateau;
pub mod protocol;
pub mod scenario;
pub mod split;
pub mod target_policy;
pub mod template;
pub mod threshold;
pub mod validate;
