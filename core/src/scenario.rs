//! A scenario's executor and a step's kind as typed data.
//!
//! The manifest keeps the shape users write: a step is "whichever of `request` and `sleep` is
//! set", a scenario is an `executor` name plus optional fields (`rate`, `stages`, `vus`, ...)
//! that only some executors read. Code that acts on a step or a scenario turns that shape once
//! into the enums here, [`StepKind`] and [`Workload`], and matches on them exhaustively: a new
//! step kind or executor is a new variant, and the compiler lists every place that must handle
//! it. Defaults the manifest leaves out (`timeUnit`, `startVUs`, `maxVUs`, ...) are resolved
//! here too, so the engine reads plain values.
//!
//! Both conversions expect a spec that [`crate::validate`] accepted; for one it would refuse
//! they return a [`ShapeError`] naming the field instead of guessing.

use std::time::Duration;

use volley_crds::spec::{Executor, Request, Scenario, Sleep, Stage, Step, WebSocket};

/// `maxDuration` of iteration-based executors when a scenario does not set one (k6's 10m).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(10 * 60);

/// A step or scenario whose fields do not make one of the typed variants: a field that
/// validation requires is missing, or fields that exclude each other are both set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ShapeError {
    /// The offending field as written in the manifest, relative to the step or scenario,
    /// e.g. `sleep` or `rate`.
    pub field: &'static str,
    /// What is wrong, as a sentence.
    pub message: String,
}

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepKind<'a> {
    /// Send an HTTP request (with the step's check, extract, retry and until).
    Request(&'a Request),
    /// Pause.
    Sleep(&'a Sleep),
    /// A WebSocket session (with the step's check, extract and retry).
    WebSocket(&'a WebSocket),
}

impl<'a> StepKind<'a> {
    /// The kind of `step`: exactly one of `request`, `websocket` and `sleep` must be set.
    pub fn of(step: &'a Step) -> Result<StepKind<'a>, ShapeError> {
        match (&step.request, &step.websocket, &step.sleep) {
            (Some(request), None, None) => Ok(StepKind::Request(request)),
            (None, Some(ws), None) => Ok(StepKind::WebSocket(ws)),
            (None, None, Some(sleep)) => Ok(StepKind::Sleep(sleep)),
            (None, None, None) => Err(ShapeError {
                field: "request",
                message: "a step needs `request`, `websocket` or `sleep`".into(),
            }),
            (_, Some(_), _) => Err(ShapeError {
                field: "websocket",
                message: "a step is either a request, a websocket or a sleep; split it into \
                          several steps"
                    .into(),
            }),
            (Some(_), None, Some(_)) => Err(ShapeError {
                field: "sleep",
                message: "a step is either a request or a sleep; split it into two steps".into(),
            }),
        }
    }

    /// Whether the step sends requests, so metrics keep an entry for it and thresholds may
    /// name it.
    pub fn is_measured(self) -> bool {
        match self {
            StepKind::Request(_) | StepKind::WebSocket(_) => true,
            StepKind::Sleep(_) => false,
        }
    }
}

/// Whether `step` is a valid step that sends requests ([`StepKind::is_measured`]); a step of
/// no valid kind is not.
pub fn is_measured(step: &Step) -> bool {
    StepKind::of(step).is_ok_and(StepKind::is_measured)
}

/// How a scenario schedules iterations: its executor with the parameters that executor reads,
/// defaults resolved. Rates, VUs, iterations and stage targets are whatever the scenario holds
/// (totals in a manifest, one runner's share after `crate::split`).
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// Open model: `rate` iterations per `time_unit` for `duration`.
    ConstantArrivalRate {
        /// Iterations per `time_unit`.
        rate: u64,
        /// What `rate` is per (`timeUnit`, default 1s).
        time_unit: Duration,
        /// How long iterations are started.
        duration: Duration,
        /// Most VUs busy at once (`maxVUs`, default [`default_max_vus`]).
        max_vus: u64,
    },
    /// Open model: a rate moving linearly through `stages`, from `start_rate`.
    RampingArrivalRate {
        /// Rate at the start, per `time_unit` (`startRate`, default 0).
        start_rate: u64,
        /// What the rates are per (`timeUnit`, default 1s).
        time_unit: Duration,
        /// Rate targets, per `time_unit`.
        stages: Vec<Stage>,
        /// Most VUs busy at once (`maxVUs`, default [`default_max_vus`]).
        max_vus: u64,
    },
    /// Closed model: `vus` VUs looping for `duration`.
    ConstantVus {
        /// VUs.
        vus: u64,
        /// How long iterations are started.
        duration: Duration,
    },
    /// Closed model: a VU count moving linearly through `stages`, from `start_vus`.
    RampingVus {
        /// VUs at the start (`startVUs`, default 1).
        start_vus: u64,
        /// VU targets.
        stages: Vec<Stage>,
    },
    /// `iterations` in total, shared by `vus` VUs, within `max_duration`.
    SharedIterations {
        /// VUs (default 1).
        vus: u64,
        /// Iterations in total.
        iterations: u64,
        /// Cap on the run time (`maxDuration`, default [`DEFAULT_MAX_DURATION`]).
        max_duration: Duration,
    },
    /// `iterations` for each of `vus` VUs, within `max_duration`.
    PerVuIterations {
        /// VUs (default 1).
        vus: u64,
        /// Iterations per VU.
        iterations: u64,
        /// Cap on the run time (`maxDuration`, default [`DEFAULT_MAX_DURATION`]).
        max_duration: Duration,
    },
}

impl Workload {
    /// The workload of `sc`. Fields the executor does not read are ignored (validation reports
    /// them); a field it needs and has no default for is an error.
    pub fn of(sc: &Scenario) -> Result<Workload, ShapeError> {
        let needs = |field: &'static str| ShapeError {
            field,
            message: format!("executor {} needs `{field}`", sc.executor.as_str()),
        };
        let stages = || {
            if sc.stages.is_empty() {
                Err(needs("stages"))
            } else {
                Ok(sc.stages.clone())
            }
        };
        let time_unit = sc.rate_unit();
        let max_duration = sc.max_duration.map_or(DEFAULT_MAX_DURATION, |d| d.get());
        let max_vus = |peak_per_unit: u64| {
            sc.max_vus
                .unwrap_or_else(|| default_max_vus(peak_per_unit, time_unit))
        };
        Ok(match sc.executor {
            Executor::ConstantArrivalRate => {
                let rate = sc.rate.ok_or_else(|| needs("rate"))?;
                Workload::ConstantArrivalRate {
                    rate,
                    time_unit,
                    duration: sc.duration.ok_or_else(|| needs("duration"))?.get(),
                    max_vus: max_vus(rate),
                }
            }
            Executor::RampingArrivalRate => {
                let start_rate = sc.start_rate.unwrap_or(0);
                let stages = stages()?;
                Workload::RampingArrivalRate {
                    start_rate,
                    time_unit,
                    max_vus: max_vus(peak(start_rate, &stages)),
                    stages,
                }
            }
            Executor::ConstantVus => Workload::ConstantVus {
                vus: sc.vus.ok_or_else(|| needs("vus"))?,
                duration: sc.duration.ok_or_else(|| needs("duration"))?.get(),
            },
            Executor::RampingVus => Workload::RampingVus {
                start_vus: sc.start_vus.unwrap_or(1),
                stages: stages()?,
            },
            Executor::SharedIterations => Workload::SharedIterations {
                vus: sc.vus.unwrap_or(1),
                iterations: sc.iterations.ok_or_else(|| needs("iterations"))?,
                max_duration,
            },
            Executor::PerVuIterations => Workload::PerVuIterations {
                vus: sc.vus.unwrap_or(1),
                iterations: sc.iterations.ok_or_else(|| needs("iterations"))?,
                max_duration,
            },
        })
    }

    /// Open model (arrival-rate executors): iterations start on a schedule, whatever the VUs
    /// are doing, and latency is measured from when each was due.
    pub fn is_open_model(&self) -> bool {
        match self {
            Workload::ConstantArrivalRate { .. } | Workload::RampingArrivalRate { .. } => true,
            Workload::ConstantVus { .. }
            | Workload::RampingVus { .. }
            | Workload::SharedIterations { .. }
            | Workload::PerVuIterations { .. } => false,
        }
    }

    /// How long iterations may start, from the scenario's begin (after `startTime`):
    /// `duration`, the sum of the stages, or `maxDuration`.
    pub fn run_length(&self) -> Duration {
        match self {
            Workload::ConstantArrivalRate { duration, .. }
            | Workload::ConstantVus { duration, .. } => *duration,
            Workload::RampingArrivalRate { stages, .. } | Workload::RampingVus { stages, .. } => {
                stages.iter().fold(Duration::ZERO, |sum, s| {
                    sum.saturating_add(s.duration.get())
                })
            }
            Workload::SharedIterations { max_duration, .. }
            | Workload::PerVuIterations { max_duration, .. } => *max_duration,
        }
    }
}

/// `maxVUs` of an arrival-rate executor that does not set it: `max(1, ceil(2 × peak rate per
/// second))`, enough for iterations that take up to two seconds at the peak rate; slower ones
/// show up as dropped iterations.
pub fn default_max_vus(peak_per_unit: u64, time_unit: Duration) -> u64 {
    let per_sec = peak_per_unit as f64 / time_unit.as_secs_f64();
    // Float to int `as` saturates; the value is non-negative and finite.
    ((2.0 * per_sec).ceil() as u64).max(1)
}

/// The highest of `start` and the stage targets.
pub fn peak(start: u64, stages: &[Stage]) -> u64 {
    stages.iter().map(|s| s.target).fold(start, u64::max)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;

    fn scenario(yaml: &str) -> Scenario {
        let yaml = format!(
            "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: t}}\n\
             spec:\n  target: {{baseUrl: 'http://127.0.0.1:1'}}\n  scenarios:\n  - {yaml}\n"
        );
        parse_manifest(&yaml).unwrap().spec.scenarios.remove(0)
    }

    #[test]
    fn defaults_are_resolved_once() {
        let s = "name: a, executor: ramping-arrival-rate, timeUnit: 1m, steps: [{sleep: 1s}]";
        let w = Workload::of(&scenario(&format!(
            "{{{s}, stages: [{{duration: 1s, target: 120}}]}}"
        )))
        .unwrap();
        let Workload::RampingArrivalRate {
            start_rate,
            time_unit,
            max_vus,
            ..
        } = w
        else {
            panic!("{w:?}")
        };
        // 120 per minute is 2/s: twice that is 4 VUs.
        assert_eq!(
            (start_rate, time_unit, max_vus),
            (0, Duration::from_secs(60), 4)
        );
        let w = Workload::of(&scenario(
            "{name: a, executor: shared-iterations, iterations: 3, steps: [{sleep: 1s}]}",
        ))
        .unwrap();
        assert_eq!(
            w,
            Workload::SharedIterations {
                vus: 1,
                iterations: 3,
                max_duration: DEFAULT_MAX_DURATION
            }
        );
        assert_eq!(w.run_length(), DEFAULT_MAX_DURATION);
    }

    #[test]
    fn a_missing_field_is_named() {
        let err = Workload::of(&scenario(
            "{name: a, executor: constant-vus, vus: 2, steps: [{sleep: 1s}]}",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "duration: executor constant-vus needs `duration`"
        );
        let err = Workload::of(&scenario(
            "{name: a, executor: ramping-vus, steps: [{sleep: 1s}]}",
        ))
        .unwrap_err();
        assert_eq!(err.field, "stages");
    }

    #[test]
    fn a_step_is_exactly_one_kind() {
        let mut step = Step {
            sleep: Some(Sleep::Fixed(volley_crds::Duration::from_secs(1))),
            ..Step::default()
        };
        assert!(matches!(StepKind::of(&step), Ok(StepKind::Sleep(_))));
        assert!(!is_measured(&step));
        step.request = Some(Request::default());
        assert_eq!(StepKind::of(&step).unwrap_err().field, "sleep");
        step.sleep = None;
        assert!(is_measured(&step));
        step.request = None;
        assert_eq!(StepKind::of(&step).unwrap_err().field, "request");
        assert!(!is_measured(&step));
    }
}
