//! Volley's Kubernetes API: the `LoadTest` custom resource (group `volley.dev`, version
//! `v1alpha1`), its status, and the CRD generated from them.
//!
//! Only the types live here, so what the API server stores is readable in one place; the rules
//! that read them (validation, thresholds, the load split, metrics) are in `volley-core`.
//!
//! - [`spec`] and [`status`]: the resource types.
//! - [`schedule`]: the `LoadTestSchedule` resource (runs on a cron schedule).
//! - [`duration`]: the `30s` / `1m30s` durations the spec is written in.
//! - [`crd`]: the CRD YAML generated from these types.
//! - [`text`]: quoting user text in messages and logs.

pub mod crd;
pub mod duration;
pub mod schedule;
pub mod spec;
pub mod status;
pub mod text;

pub use duration::Duration;
pub use spec::{LoadTest, LoadTestSpec};
pub use status::LoadTestStatus;
