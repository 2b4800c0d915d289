//! The decisions of a `LoadTestSchedule` as pure functions: [`parse`] checks the schedule, time
//! zone and template before anything is created, and [`decide`] says, from the facts at `now`,
//! which run to create, which runs to delete and when to look again. The kube wiring is
//! [`crate::schedule_controller`].
//!
//! Missed times behave like a CronJob's (docs/reference.md § "LoadTestSchedule"):
//!
//! - the times due since the later of `status.lastScheduleTime` (or the schedule's creation)
//!   and `now - startingDeadlineSeconds` are the *unmet* ones; only the most recent is started,
//!   however many there are (after an operator restart, one run, not a burst);
//! - more than [`MAX_MISSED`] unmet times are reported (the condition `MissedSchedules` and a
//!   Warning event `TooManyMissedTimes`), as Kubernetes does, and the most recent is still
//!   started;
//! - `lastScheduleTime` only moves when a run is created: under `Forbid` a time skipped because
//!   a run was still going starts late when that run finishes, unless `startingDeadlineSeconds`
//!   has passed by then (set it to avoid late runs), exactly like a CronJob.

use std::collections::BTreeMap;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use volley_crds::schedule::{
    ConcurrencyPolicy, LoadTestScheduleSpec, LoadTestScheduleStatus, MAX_RECENT_RUNS, RunReference,
    RunSummary,
};
use volley_crds::status::Phase;
use volley_crds::text::shorten;

use crate::config::RunnerDefaults;
use crate::names::{MAX_LABEL_VALUE, bounded};
use crate::phase::{EventKind, EventNote};

/// More unmet times than this are reported, like a CronJob's "too many missed start times".
pub const MAX_MISSED: usize = 100;
/// Condition: whether the schedule, time zone and template are valid.
pub const READY: &str = "Ready";
/// Condition: whether more than [`MAX_MISSED`] times were missed.
pub const MISSED_SCHEDULES: &str = "MissedSchedules";
/// Reason of `Ready=False` for an invalid spec (the message names the field).
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Reason (event and condition) for more than [`MAX_MISSED`] unmet times.
pub const TOO_MANY_MISSED: &str = "TooManyMissedTimes";
/// Annotation on each run: the time it was scheduled for (RFC 3339).
pub const SCHEDULED_AT_ANNOTATION: &str = "volley.dev/scheduled-at";
/// Label on each run: the schedule's name (bounded to a label value).
pub const SCHEDULE_LABEL: &str = "volley.dev/schedule";

/// A valid schedule: the cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    zone: TimeZone,
}

/// The spec field that is wrong and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// e.g. `spec.schedule`, `spec.template.spec.scenarios[0].rate`.
    pub path: String,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks `spec` before any run exists: the schedule (five fields or a macro such as
/// `@daily`, no `TZ=` prefix), the time zone (an IANA name), and the template with every rule
/// a LoadTest must pass in this cluster ([`crate::spec_check::check`] and
/// [`crate::spec_check::admit`] under `defaults`).
pub fn parse(spec: &LoadTestScheduleSpec, defaults: &RunnerDefaults) -> Result<Schedule, Invalid> {
    let invalid = |path: &str, message: String| Invalid {
        path: path.to_string(),
        message,
    };
    let text = spec.schedule.trim();
    if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
        return Err(invalid(
            "spec.schedule",
            "a time zone in the schedule is not supported; set spec.timeZone".into(),
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let cron = parser.parse(text).map_err(|e| {
        invalid(
            "spec.schedule",
            format!("`{}` is not a cron schedule: {e}", shorten(text, 100)),
        )
    })?;
    let zone = match spec.time_zone.as_deref() {
        None | Some("") => TimeZone::UTC,
        Some(name) => TimeZone::get(name).map_err(|_| {
            invalid(
                "spec.timeZone",
                format!(
                    "`{}` is not a known time zone (an IANA name such as Europe/Berlin)",
                    shorten(name, 100)
                ),
            )
        })?,
    };
    if let Err(errors) = crate::spec_check::check(&spec.template.spec) {
        let first = errors.into_iter().next();
        return Err(match first {
            Some(e) => Invalid {
                path: format!("spec.template.{}", e.path),
                message: e.message,
            },
            None => invalid("spec.template.spec", "invalid".into()),
        });
    }
    if let Err(refusal) = crate::spec_check::admit(&spec.template.spec, defaults) {
        // The refusal names `spec.…` of the LoadTest; here that is the template's spec.
        return Err(invalid(
            "spec.template.spec",
            format!("{}: {}", refusal.reason, refusal.message),
        ));
    }
    Ok(Schedule { cron, zone })
}

impl Schedule {
    /// The first scheduled time after `t`; `None` when there is none.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&t.to_zoned(self.zone.clone()), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last scheduled time at or before `t`; `None` when there is none.
    fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&t.to_zoned(self.zone.clone()), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The scheduled times in `(after, until]`: the most recent, and how many (counted up to
    /// `MAX_MISSED + 1`).
    fn unmet(&self, after: Timestamp, until: Timestamp) -> (Option<Timestamp>, usize) {
        let latest = self.latest_at_or_before(until).filter(|t| *t > after);
        if latest.is_none() {
            return (None, 0);
        }
        let mut count = 0;
        let mut t = after;
        while count <= MAX_MISSED {
            match self.next_after(t) {
                Some(next) if next <= until => {
                    count += 1;
                    t = next;
                }
                _ => break,
            }
        }
        (latest, count)
    }
}

/// Name of the run for scheduled time `t`: `{schedule}-{minutes since the epoch}` (as a CronJob
/// names its Jobs), at most 63 characters so its pods' names stay readable.
pub fn run_name(schedule: &str, t: Timestamp) -> String {
    bounded(
        schedule,
        &format!("-{}", t.as_second().div_euclid(60)),
        MAX_LABEL_VALUE,
    )
}

/// A LoadTest the schedule owns, as [`decide`] needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedRun {
    /// Its name.
    pub name: String,
    /// When it was scheduled for (its annotation, else its creation).
    pub schedule_time: Timestamp,
    /// Its phase; `None` before the LoadTest controller wrote one.
    pub phase: Option<Phase>,
    /// Its outcome, for the trend once finished.
    pub summary: RunSummary,
}

impl OwnedRun {
    fn finished(&self) -> bool {
        self.phase.is_some_and(Phase::is_finished)
    }
}

/// What [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The schedule's name (its runs are named after it).
    pub name: &'a str,
    /// Now.
    pub now: Timestamp,
    /// The schedule's spec.
    pub spec: &'a LoadTestScheduleSpec,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`.
    pub created: Timestamp,
    /// The status as read.
    pub status: LoadTestScheduleStatus,
    /// The LoadTests the schedule owns.
    pub runs: Vec<OwnedRun>,
    /// The checked schedule, or why the spec is invalid.
    pub schedule: Result<Schedule, Invalid>,
}

/// A run to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    /// The LoadTest's name ([`run_name`]).
    pub name: String,
    /// The time it is scheduled for.
    pub schedule_time: Timestamp,
}

/// What to do, in order: delete, create, write the status, record events, requeue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Runs to delete: the active ones under `Replace`, finished ones beyond the history
    /// limits.
    pub delete: Vec<String>,
    /// The run to create.
    pub create: Option<NewRun>,
    /// The status to write (always: it carries the trend and the active runs).
    pub status: LoadTestScheduleStatus,
    /// Events to record on the schedule.
    pub events: Vec<EventNote>,
    /// Look again after this long (the next scheduled time); `None`: only on a change.
    pub requeue: Option<Duration>,
}

fn event(kind: EventKind, reason: &str, action: &str, note: String) -> EventNote {
    EventNote {
        kind,
        reason: reason.into(),
        action: action.into(),
        note: shorten(&note, crate::conditions::MAX_MESSAGE_CHARS),
    }
}

/// The decision at `facts.now`; see the module documentation for missed times.
pub fn decide(facts: &Facts<'_>) -> Decision {
    let spec = facts.spec;
    let now = facts.now;
    let mut d = Decision::default();
    let previous = &facts.status;
    // A run created before a failed status write still counts as scheduled.
    let last_scheduled = previous
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .into_iter()
        .chain(facts.runs.iter().map(|r| r.schedule_time))
        .max();
    let mut active: Vec<&OwnedRun> = facts.runs.iter().filter(|r| !r.finished()).collect();
    let mut finished: Vec<&OwnedRun> = facts.runs.iter().filter(|r| r.finished()).collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.schedule_time));

    // History limits: the newest finished runs of each kind are kept.
    let (mut kept_ok, mut kept_failed) = (0u32, 0u32);
    for run in &finished {
        let (kept, limit) = if run.phase == Some(Phase::Succeeded) {
            (&mut kept_ok, spec.successful_runs_history_limit)
        } else {
            (&mut kept_failed, spec.failed_runs_history_limit)
        };
        if *kept < limit {
            *kept += 1;
        } else {
            d.delete.push(run.name.clone());
        }
    }

    let mut ready = (
        "True",
        "Scheduled",
        "runs are created on schedule".to_string(),
    );
    let mut missed = (
        "False",
        "NoneMissed",
        "no more than 100 times missed".to_string(),
    );
    let mut last_schedule_time = last_scheduled;
    match &facts.schedule {
        Err(invalid) => {
            ready = ("False", INVALID_SPEC, invalid.to_string());
            // A condition that did not change needs no event again.
            let known = previous
                .conditions
                .iter()
                .any(|c| c.type_ == READY && c.message == ready.2);
            if !known {
                d.events.push(event(
                    EventKind::Warning,
                    INVALID_SPEC,
                    "Validate",
                    format!("no run is created: {invalid}"),
                ));
            }
        }
        Ok(_) if spec.suspend => {
            ready = ("False", "Suspended", "spec.suspend is true".to_string());
        }
        Ok(schedule) => {
            let mut earliest = last_scheduled.unwrap_or(facts.created);
            if let Some(deadline) = spec.starting_deadline_seconds
                && let Ok(limit) = now.checked_sub(jiff::SignedDuration::from_secs(deadline.max(0)))
                && limit > earliest
            {
                earliest = limit;
            }
            let (due, count) = schedule.unmet(earliest, now);
            if count > MAX_MISSED {
                missed = (
                    "True",
                    TOO_MANY_MISSED,
                    format!(
                        "more than {MAX_MISSED} scheduled times were missed; only the most \
                         recent is started. Set or decrease spec.startingDeadlineSeconds, or \
                         check the clock"
                    ),
                );
                // Once per episode, not at every reconcile while it lasts.
                let known = previous
                    .conditions
                    .iter()
                    .any(|c| c.type_ == MISSED_SCHEDULES && c.status == "True");
                if !known {
                    d.events.push(event(
                        EventKind::Warning,
                        TOO_MANY_MISSED,
                        "Schedule",
                        missed.2.clone(),
                    ));
                }
            }
            if let Some(due) = due {
                let name = run_name(facts.name, due);
                if !active.is_empty() && spec.concurrency_policy == ConcurrencyPolicy::Forbid {
                    // The time stays unmet: started when the active run ends, if still within
                    // the starting deadline (as a CronJob).
                    let running: Vec<&str> = active.iter().map(|r| r.name.as_str()).collect();
                    if !previous.conditions.iter().any(|c| {
                        c.type_ == READY && c.reason == "Skipped" && c.message.contains(&name)
                    }) {
                        d.events.push(event(
                            EventKind::Normal,
                            "Skipped",
                            "Schedule",
                            format!(
                                "run {name} not started: {} still running (concurrencyPolicy \
                                 Forbid)",
                                running.join(", ")
                            ),
                        ));
                    }
                    ready = (
                        "True",
                        "Skipped",
                        format!("run {name} waits for {}", running.join(", ")),
                    );
                } else if facts.runs.iter().any(|r| r.name == name) {
                    // Created already (the status write after it failed).
                    last_schedule_time = Some(due);
                } else {
                    if spec.concurrency_policy == ConcurrencyPolicy::Replace {
                        for run in active.drain(..) {
                            d.delete.push(run.name.clone());
                            d.events.push(event(
                                EventKind::Normal,
                                "Replaced",
                                "Delete",
                                format!(
                                    "run {} deleted: run {name} replaces it (concurrencyPolicy \
                                     Replace)",
                                    run.name
                                ),
                            ));
                        }
                    }
                    d.events.push(event(
                        EventKind::Normal,
                        "RunCreated",
                        "Create",
                        format!("run {name} created for {due}"),
                    ));
                    d.create = Some(NewRun {
                        name,
                        schedule_time: due,
                    });
                    last_schedule_time = Some(due);
                }
            }
            d.requeue = schedule.next_after(now).map(|next| {
                let wait = next.duration_since(now).as_secs().max(0) as u64;
                // A second late rather than early: an early wake-up finds nothing due.
                Duration::from_secs(wait.saturating_add(1))
            });
        }
    }

    let mut active_refs: Vec<RunReference> = active
        .iter()
        .map(|r| RunReference {
            name: r.name.clone(),
        })
        .collect();
    if let Some(new) = &d.create {
        active_refs.push(RunReference {
            name: new.name.clone(),
        });
    }
    active_refs.sort_by(|a, b| a.name.cmp(&b.name));
    let recent = trend(
        &previous.recent_runs,
        finished.iter().map(|r| r.summary.clone()),
    );
    let conditions = [
        (READY, ready.0, ready.1.to_string(), ready.2),
        (MISSED_SCHEDULES, missed.0, missed.1.to_string(), missed.2),
    ]
    .into_iter()
    .map(|(type_, status, reason, message)| {
        let kept = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason,
            message: shorten(&message, crate::conditions::MAX_MESSAGE_CHARS),
            observed_generation: facts.generation,
            last_transition_time: kept.unwrap_or(Time(now)),
        }
    })
    .collect();
    d.status = LoadTestScheduleStatus {
        observed_generation: facts.generation,
        last_schedule_time: last_schedule_time.map(Time),
        active_count: u32::try_from(active_refs.len()).unwrap_or(u32::MAX),
        active: active_refs,
        last_run: recent.first().cloned(),
        recent_runs: recent,
        conditions,
    };
    d
}

/// The trend: the runs of `previous` and the `finished` ones, one entry per run (the newer
/// reading wins), newest scheduled first, at most [`MAX_RECENT_RUNS`]. Runs deleted by the
/// history limits stay in the trend until newer ones push them out.
pub fn trend(
    previous: &[RunSummary],
    finished: impl IntoIterator<Item = RunSummary>,
) -> Vec<RunSummary> {
    let mut by_name: BTreeMap<String, RunSummary> = previous
        .iter()
        .map(|r| (r.name.clone(), r.clone()))
        .collect();
    for run in finished {
        by_name.insert(run.name.clone(), run);
    }
    let mut runs: Vec<RunSummary> = by_name.into_values().collect();
    runs.sort_by(|a, b| {
        let key = |r: &RunSummary| r.schedule_time.as_ref().map(|t| t.0);
        key(b).cmp(&key(a)).then_with(|| b.name.cmp(&a.name))
    });
    runs.truncate(MAX_RECENT_RUNS);
    runs
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures::{self, at, t0};
    use volley_crds::schedule::LoadTestTemplate;
    use volley_crds::status::Verdict;

    /// A schedule spec: `schedule`, everything else default, the fixture LoadTest as template.
    fn spec(schedule: &str) -> LoadTestScheduleSpec {
        LoadTestScheduleSpec {
            schedule: schedule.into(),
            time_zone: None,
            concurrency_policy: ConcurrencyPolicy::Forbid,
            starting_deadline_seconds: None,
            suspend: false,
            successful_runs_history_limit: 3,
            failed_runs_history_limit: 1,
            template: LoadTestTemplate {
                metadata: Default::default(),
                spec: fixtures::loadtest("web", 1).spec,
            },
        }
    }

    fn minutes(m: i64) -> Timestamp {
        at(m * 60)
    }

    fn run(name: &str, scheduled: Timestamp, phase: Option<Phase>) -> OwnedRun {
        OwnedRun {
            name: name.into(),
            schedule_time: scheduled,
            phase,
            summary: RunSummary {
                name: name.into(),
                schedule_time: Some(Time(scheduled)),
                phase,
                verdict: (phase == Some(Phase::Succeeded)).then_some(Verdict::Passed),
                p95_ms: Some(12.5),
                rps: Some(100.0),
                error_rate: Some(0.0),
            },
        }
    }

    /// The decision at `now` (the controllable clock) for `spec`, created at `t0`, last
    /// scheduled at `last`, owning `runs`.
    fn decide_at(
        spec: &LoadTestScheduleSpec,
        now: Timestamp,
        last: Option<Timestamp>,
        runs: Vec<OwnedRun>,
    ) -> Decision {
        let facts = Facts {
            name: "nightly",
            now,
            spec,
            generation: Some(1),
            created: t0(),
            status: LoadTestScheduleStatus {
                last_schedule_time: last.map(Time),
                ..Default::default()
            },
            runs,
            schedule: parse(spec, &fixtures::defaults()),
        };
        decide(&facts)
    }

    fn created(d: &Decision) -> Option<Timestamp> {
        d.create.as_ref().map(|c| c.schedule_time)
    }

    fn reasons(d: &Decision) -> Vec<&str> {
        d.events.iter().map(|e| e.reason.as_str()).collect()
    }

    fn condition<'a>(d: &'a Decision, type_: &str) -> &'a Condition {
        d.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn invalid_fields_are_named_before_anything_is_created() {
        let defaults = fixtures::defaults();
        let path = |s: &LoadTestScheduleSpec| parse(s, &defaults).unwrap_err().path;
        assert_eq!(path(&spec("61 * * * *")), "spec.schedule");
        assert_eq!(path(&spec("every night")), "spec.schedule");
        assert_eq!(
            path(&spec("0 0 2 * * *")),
            "spec.schedule",
            "no seconds field"
        );
        assert_eq!(path(&spec("TZ=Europe/Berlin 0 2 * * *")), "spec.schedule");
        let mut zoned = spec("0 2 * * *");
        zoned.time_zone = Some("Mars/Olympus".into());
        assert_eq!(path(&zoned), "spec.timeZone");
        let mut local_file = spec("0 2 * * *");
        local_file.template.spec =
            fixtures::loadtest_yaml("web", "data: [{name: users, file: users.csv}]").spec;
        assert_eq!(path(&local_file), "spec.template.spec.data[0].file");
        let guarded = fixtures::guarded("*.prod.svc");
        let refused = parse(&spec("0 2 * * *"), &guarded).unwrap_err();
        assert_eq!(refused.path, "spec.template.spec");
        assert!(
            refused.message.starts_with("TargetNotAllowed"),
            "{}",
            refused.message
        );
        for ok in ["0 2 * * *", "@daily", "@hourly", "*/15 8-18 * * MON-FRI"] {
            assert!(parse(&spec(ok), &defaults).is_ok(), "{ok}");
        }
        let mut berlin = spec("0 2 * * *");
        berlin.time_zone = Some("Europe/Berlin".into());
        assert!(parse(&berlin, &defaults).is_ok());
    }

    #[test]
    fn an_invalid_schedule_creates_nothing_and_says_which_field() {
        let d = decide_at(&spec("0 25 * * *"), minutes(600), None, Vec::new());
        assert_eq!(d.create, None);
        assert_eq!(d.requeue, None);
        let ready = condition(&d, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", INVALID_SPEC)
        );
        assert!(
            ready.message.starts_with("spec.schedule: "),
            "{}",
            ready.message
        );
        assert_eq!(reasons(&d), [INVALID_SPEC]);
    }

    #[test]
    fn the_first_run_is_created_at_the_first_scheduled_time() {
        let every5 = spec("*/5 * * * *");
        let d = decide_at(&every5, minutes(4), None, Vec::new());
        assert_eq!(d.create, None);
        assert_eq!(
            d.requeue,
            Some(Duration::from_secs(61)),
            "a second after 00:05"
        );
        let d = decide_at(&every5, minutes(5), None, Vec::new());
        let t = minutes(5);
        assert_eq!(
            d.create,
            Some(NewRun {
                name: format!("nightly-{}", t.as_second() / 60),
                schedule_time: t
            })
        );
        assert_eq!(d.status.last_schedule_time, Some(Time(t)));
        assert_eq!(d.status.active_count, 1);
        assert_eq!(reasons(&d), ["RunCreated"]);
        // The same time is never started twice.
        let d = decide_at(&every5, minutes(5), Some(t), Vec::new());
        assert_eq!(d.create, None);
    }

    /// Table: missed times after an operator restart, with and without a starting deadline.
    #[test]
    fn only_the_most_recent_missed_time_starts_within_the_deadline() {
        // (schedule, last scheduled, now, deadline) -> (run for, TooManyMissed)
        let cases = [
            // 3 times missed: one run, for the latest.
            ("*/5 * * * *", 0, 17, None, Some(15), false),
            // The latest is 2 minutes old: too late for a 60 s deadline.
            ("*/5 * * * *", 0, 17, Some(60), None, false),
            ("*/5 * * * *", 0, 17, Some(300), Some(15), false),
            // 200 missed: the latest, and reported.
            ("* * * * *", 0, 200, None, Some(200), true),
            // 101 missed is more than 100; 100 is not.
            ("* * * * *", 0, 101, None, Some(101), true),
            ("* * * * *", 0, 100, None, Some(100), false),
            // A deadline bounds the count, as in Kubernetes: never too many.
            ("* * * * *", 0, 200, Some(600), Some(200), false),
        ];
        for (schedule, last, now, deadline, want, too_many) in cases {
            let mut s = spec(schedule);
            s.starting_deadline_seconds = deadline;
            let d = decide_at(&s, minutes(now), Some(minutes(last)), Vec::new());
            let case = format!("{schedule} last {last} now {now} deadline {deadline:?}");
            assert_eq!(created(&d), want.map(minutes), "{case}");
            let missed = condition(&d, MISSED_SCHEDULES);
            assert_eq!(missed.status == "True", too_many, "{case}");
            assert_eq!(reasons(&d).contains(&TOO_MANY_MISSED), too_many, "{case}");
        }
    }

    #[test]
    fn suspend_starts_nothing_and_resuming_starts_the_latest_missed_time() {
        let mut s = spec("*/5 * * * *");
        s.suspend = true;
        let d = decide_at(&s, minutes(12), None, Vec::new());
        assert_eq!(d.create, None);
        assert_eq!(d.requeue, None);
        assert_eq!(condition(&d, READY).reason, "Suspended");
        s.suspend = false;
        let d = decide_at(&s, minutes(12), None, Vec::new());
        assert_eq!(created(&d), Some(minutes(10)));
    }

    /// Table: the concurrency policies with one run still going when the next is due.
    #[test]
    fn concurrency_policies() {
        let going = || vec![run("nightly-old", minutes(0), Some(Phase::Running))];
        for (policy, creates, deletes, active) in [
            (ConcurrencyPolicy::Forbid, false, vec![], 1),
            (ConcurrencyPolicy::Replace, true, vec!["nightly-old"], 1),
            (ConcurrencyPolicy::Allow, true, vec![], 2),
        ] {
            let mut s = spec("*/5 * * * *");
            s.concurrency_policy = policy;
            let d = decide_at(&s, minutes(5), Some(minutes(0)), going());
            assert_eq!(d.create.is_some(), creates, "{policy:?}");
            assert_eq!(d.delete, deletes, "{policy:?}");
            assert_eq!(d.status.active_count, active, "{policy:?}");
        }
        // Forbid: the skipped time starts when the run ends (as a CronJob), unless the
        // starting deadline passed meanwhile.
        let mut s = spec("*/5 * * * *");
        let d = decide_at(&s, minutes(5), Some(minutes(0)), going());
        assert_eq!(reasons(&d), ["Skipped"]);
        assert_eq!(d.status.last_schedule_time, Some(Time(minutes(0))));
        let ended = vec![run("nightly-old", minutes(0), Some(Phase::Succeeded))];
        let d = decide_at(&s, minutes(7), Some(minutes(0)), ended.clone());
        assert_eq!(created(&d), Some(minutes(5)));
        s.starting_deadline_seconds = Some(60);
        let d = decide_at(&s, minutes(7), Some(minutes(0)), ended);
        assert_eq!(d.create, None);
        // A run that has no phase yet counts as going.
        let fresh = vec![run("nightly-old", minutes(0), None)];
        let d = decide_at(&spec("*/5 * * * *"), minutes(5), Some(minutes(0)), fresh);
        assert_eq!(d.create, None);
    }

    #[test]
    fn finished_runs_beyond_the_history_limits_are_deleted_oldest_first() {
        let mut runs = Vec::new();
        for i in 0..5 {
            runs.push(run(&format!("ok-{i}"), minutes(i), Some(Phase::Succeeded)));
        }
        for (i, phase) in [Phase::Failed, Phase::Error, Phase::Aborted]
            .into_iter()
            .enumerate()
        {
            let i = i as i64;
            runs.push(run(&format!("bad-{i}"), minutes(10 + i), Some(phase)));
        }
        runs.push(run("going", minutes(20), Some(Phase::Running)));
        let d = decide_at(
            &spec("0 0 1 1 *"),
            minutes(21),
            Some(minutes(20)),
            runs.clone(),
        );
        let mut deleted = d.delete.clone();
        deleted.sort();
        assert_eq!(deleted, ["bad-0", "bad-1", "ok-0", "ok-1"]);
        assert_eq!(
            d.status.active,
            [RunReference {
                name: "going".into()
            }]
        );
        // Limits of 0 keep none; a running run is never deleted.
        let mut s = spec("0 0 1 1 *");
        s.successful_runs_history_limit = 0;
        s.failed_runs_history_limit = 0;
        let d = decide_at(&s, minutes(21), Some(minutes(20)), runs);
        assert_eq!(d.delete.len(), 8);
        assert!(!d.delete.contains(&"going".to_string()));
    }

    #[test]
    fn a_run_created_before_a_failed_status_write_is_not_created_again() {
        let t = minutes(5);
        let name = run_name("nightly", t);
        let d = decide_at(
            &spec("*/5 * * * *"),
            minutes(6),
            None,
            vec![run(&name, t, None)],
        );
        assert_eq!(d.create, None);
        assert_eq!(d.status.last_schedule_time, Some(Time(t)));
        assert!(d.events.is_empty());
    }

    #[test]
    fn the_schedule_is_read_in_its_time_zone() {
        // 02:00 in Berlin on 1 January 2030 is 01:00 UTC.
        let mut s = spec("0 2 * * *");
        s.time_zone = Some("Europe/Berlin".into());
        let d = decide_at(&s, minutes(59), None, Vec::new());
        assert_eq!(d.create, None);
        assert_eq!(d.requeue, Some(Duration::from_secs(61)));
        let d = decide_at(&s, minutes(60), None, Vec::new());
        assert_eq!(created(&d), Some(minutes(60)));
        // Summer time: 02:00 Berlin on 1 July 2030 is 00:00 UTC.
        let july: Timestamp = "2030-07-01T00:00:30Z".parse().unwrap();
        let d = decide_at(
            &s,
            july,
            Some(
                july.checked_sub(jiff::SignedDuration::from_hours(1))
                    .unwrap(),
            ),
            Vec::new(),
        );
        assert_eq!(created(&d), Some("2030-07-01T00:00:00Z".parse().unwrap()));
    }

    #[test]
    fn run_names_fit_in_63_characters() {
        let t = minutes(5);
        assert_eq!(
            run_name("nightly", t),
            format!("nightly-{}", t.as_second() / 60)
        );
        let long = "a".repeat(80);
        let name = run_name(&long, t);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with(&format!("-{}", t.as_second() / 60)));
        assert_ne!(run_name(&long, t), run_name(&long, minutes(10)));
    }

    #[test]
    fn the_trend_keeps_the_ten_newest_runs_newest_first() {
        let previous: Vec<RunSummary> = (0..10)
            .map(|i| run(&format!("r-{i:02}"), minutes(i), Some(Phase::Succeeded)).summary)
            .collect();
        let mut newer = run("r-10", minutes(10), Some(Phase::Failed)).summary;
        newer.p95_ms = Some(99.0);
        // A run already in the trend, read again, is not duplicated.
        let again = previous[9].clone();
        let t = trend(&previous, [newer, again]);
        let names: Vec<&str> = t.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), MAX_RECENT_RUNS);
        assert_eq!(names[0], "r-10");
        assert_eq!(names[1], "r-09");
        assert_eq!(names[9], "r-01");
        // Through decide: lastRun is the newest finished run, and the trend outlives the
        // history limit that deleted it.
        let runs = vec![
            run("a", minutes(1), Some(Phase::Succeeded)),
            run("b", minutes(2), Some(Phase::Failed)),
            run("c", minutes(3), Some(Phase::Failed)),
        ];
        let d = decide_at(&spec("0 0 1 1 *"), minutes(4), Some(minutes(3)), runs);
        assert_eq!(d.delete, ["b"]);
        assert_eq!(d.status.last_run.as_ref().unwrap().name, "c");
        let names: Vec<&str> = d
            .status
            .recent_runs
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["c", "b", "a"]);
    }

    /// The example users copy is accepted by the operator as it is.
    #[test]
    fn the_example_schedule_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/nightly-soak-schedule.yaml"
        );
        let lts: volley_crds::schedule::LoadTestSchedule =
            serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        parse(&lts.spec, &fixtures::defaults()).unwrap();
        assert_eq!(lts.spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(lts.spec.successful_runs_history_limit, 7);
    }

    /// Daylight saving in Europe/Berlin: on 31 March 2030 the clocks jump from 02:00 to 03:00,
    /// on 27 October 2030 from 03:00 back to 02:00.
    #[test]
    fn daylight_saving_changes() {
        let mut s = spec("30 2 * * *");
        s.time_zone = Some("Europe/Berlin".into());
        let schedule = parse(&s, &fixtures::defaults()).unwrap();
        let t = |text: &str| text.parse::<Timestamp>().unwrap();
        // 02:30 does not exist on 31 March.
        // 02:30 does not exist on 31 March: that night's run starts at 03:00 CEST, once.
        let spring = schedule.next_after(t("2030-03-30T01:30:00Z")).unwrap();
        assert_eq!(spring, t("2030-03-31T01:00:00Z"));
        assert_eq!(
            schedule.next_after(spring).unwrap(),
            t("2030-04-01T00:30:00Z")
        );
        // 02:30 exists twice on 27 October: one run, at the first (CEST).
        let autumn = schedule.next_after(t("2030-10-26T23:00:00Z")).unwrap();
        assert_eq!(autumn, t("2030-10-27T00:30:00Z"));
        assert_eq!(
            schedule.next_after(autumn).unwrap(),
            t("2030-10-28T01:30:00Z")
        );
    }

    #[test]
    fn too_many_missed_times_are_reported_once_per_episode() {
        let mut s = spec("* * * * *");
        s.concurrency_policy = ConcurrencyPolicy::Forbid;
        let going = vec![run("nightly-old", minutes(0), Some(Phase::Running))];
        let first = decide_at(&s, minutes(200), Some(minutes(0)), going.clone());
        assert_eq!(reasons(&first), [TOO_MANY_MISSED, "Skipped"]);
        // The next reconcile reads the status the first wrote: no event again.
        let facts = Facts {
            name: "nightly",
            now: minutes(201),
            spec: &s,
            generation: Some(1),
            created: t0(),
            status: first.status.clone(),
            runs: going,
            schedule: parse(&s, &fixtures::defaults()),
        };
        let again = decide(&facts);
        assert_eq!(condition(&again, MISSED_SCHEDULES).status, "True");
        assert_eq!(reasons(&again), ["Skipped"], "a new time is skipped, once");
        assert_eq!(
            condition(&again, MISSED_SCHEDULES).last_transition_time,
            Time(minutes(200))
        );
    }
}
