//! `volley-operator`: the Kubernetes controller for LoadTests (`docs/reference.md` §2.2
//! "Phases" and §4 "Semantics").
//!
//! The decisions are pure functions over plain data, tested without a cluster; the
//! [`controller`] gathers the facts from the API server and the aggregator and carries the
//! decisions out.
//!
//! - [`config`]: flags, runner defaults and time bounds.
//! - [`names`]: object names and labels within Kubernetes' limits, and a run's identity.
//! - [`pods`]: the runner pods.
//! - [`secret`]: the run's token Secret.
//! - [`observed`]: what a reconcile saw (pods, the aggregator's progress) as plain data.
//! - [`spec_check`]: spec rules that hold in the cluster only.
//! - [`conditions`]: the standard status conditions.
//! - [`phase`]: the phase machine, [`phase::next_step`].
//! - [`status_patch`]: the merge patch that writes a status.
//! - [`registry`]: the aggregator as the controller sees it.
//! - [`rbac`]: the operator's ClusterRole.
//! - [`controller`]: the kube-rs controller.
//! - [`aggregator_registry`]: [`registry::RunRegistry`] over the embedded aggregator.
//! - [`report`]: the report ConfigMap (`summary.json`) of a finished run.
//! - [`telemetry`]: the operator's own Prometheus metrics (`/metrics`).
//! - [`leader`]: leader election with a Lease.
//! - [`serve`]: the HTTP servers and the process wiring of `main`.
//! - [`admission`]: the validating admission webhook's decisions.
//! - [`webhook`]: the webhook's HTTPS server and its certificate.

pub mod admission;
pub mod aggregator_registry;
pub mod conditions;
pub mod config;
pub mod controller;
pub mod leader;
pub mod names;
pub mod observed;
pub mod phase;
pub mod pods;
pub mod rbac;
pub mod registry;
pub mod report;
pub mod report_http;
pub mod secret;
pub mod serve;
pub mod spec_check;
pub mod status_patch;
pub mod telemetry;
pub mod webhook;

#[cfg(test)]
mod fixtures;

/// Locks `m`, also after a panic elsewhere poisoned it: every lock here guards plain
/// bookkeeping (maps of runs and times) that a panic cannot leave half-written.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
