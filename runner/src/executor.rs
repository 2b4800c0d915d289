//! Executors: *when* iterations start, independent of what an iteration does.
//!
//! A runner receives its share of each scenario (see `volley_core::split`), turns it into a
//! typed [`Workload`] and hands both to [`run_scenario`] together with a factory of virtual
//! users ([`Vu`]). The executor decides when each iteration starts, with k6's semantics:
//!
//! | executor | model | what is scheduled |
//! |---|---|---|
//! | `constant-arrival-rate` | open | `rate` iterations per `timeUnit` for `duration` |
//! | `ramping-arrival-rate` | open | a rate moving linearly through `stages`, from `startRate` |
//! | `constant-vus` | closed | `vus` VUs looping for `duration` |
//! | `ramping-vus` | closed | a VU count moving linearly through `stages`, from `startVUs` |
//! | `shared-iterations` | closed | `iterations` in total, shared by `vus` VUs, within `maxDuration` |
//! | `per-vu-iterations` | closed | `iterations` for each of `vus` VUs, within `maxDuration` |
//!
//! Open-model executors start iterations on a fixed schedule whether or not earlier ones have
//! finished; an iteration that finds no free VU (and the pool at `maxVUs`) is counted as
//! dropped rather than delayed, and every iteration carries the time it was *due*, so latency
//! measured from it includes any time the system under test made us wait (no coordinated
//! omission). Closed-model executors loop VUs back to back.
//!
//! Every scenario has the same timeline: wait until `start + startTime`; schedule iterations
//! until the scenario's time is up (or the `stop` signal, or an [`IterationEnd::Exhausted`]);
//! give in-flight iterations `gracefulStop` to finish; cancel the rest and count them as
//! interrupted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::{Instant, sleep_until};
use volley_core::scenario::{Workload, peak};
use volley_crds::spec::{Scenario, Stage};

use crate::pacing::Pacer;

/// Offsets are capped here so that adding them to an [`Instant`] cannot overflow; no load test
/// runs for a century.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// One virtual user's state lives in the type implementing this; the executor owns VUs and
/// reuses them.
pub trait Vu: Send + 'static {
    /// Run one iteration. `scheduled` is when the iteration was due (arrival-rate: its slot on
    /// the schedule; closed model: when the VU became free), so latency can be measured from
    /// the schedule (no coordinated omission).
    fn iterate(&mut self, ticket: Ticket) -> impl Future<Output = IterationEnd> + Send;
}

/// What an iteration is told about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The VU running it, 0-based within this runner's scenario.
    pub vu: u64,
    /// This VU's iteration counter, 0-based.
    pub iteration: u64,
    /// Counter across the scenario on this runner, 0-based, in the order iterations started.
    pub scenario_iteration: u64,
    /// When the iteration was due. Arrival-rate executors: its slot on the schedule, even when
    /// it actually started later. Closed model: when the VU became free.
    pub scheduled: Instant,
}

/// How an iteration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IterationEnd {
    /// Every step ran and passed.
    Completed,
    /// The iteration ran but something failed (request error, check, extraction).
    Failed,
    /// The iteration could not run at all, e.g. a unique feeder ran out of rows. The scenario
    /// stops starting new iterations; this attempt is not counted as started.
    Exhausted,
}

/// Live counters the executor updates (read by the progress line / reports while running).
///
/// Several scenarios may share one instance to show combined figures; [`run_scenario`]'s
/// returned summary always covers that one scenario only.
#[derive(Debug, Default)]
pub struct ExecutorCounters {
    /// Iterations started (an [`IterationEnd::Exhausted`] attempt is taken back out).
    pub started: AtomicU64,
    /// Iterations that ended [`IterationEnd::Completed`].
    pub completed: AtomicU64,
    /// Iterations that ended [`IterationEnd::Failed`].
    pub failed: AtomicU64,
    /// Arrival-rate iterations that were due but found no free VU with the pool at `maxVUs`.
    pub dropped: AtomicU64,
    /// Iterations cancelled because they outlived `gracefulStop` (or a ramp-down's grace).
    pub interrupted: AtomicU64,
    /// VUs busy right now: running an iteration (arrival-rate) or alive (closed model).
    pub active_vus: AtomicU64,
}

/// What one scenario did on this runner, once it has finished.
///
/// `started == completed + failed + interrupted`; for arrival-rate executors that ran to the
/// end of their schedule, `started + dropped` is the number of iterations the schedule held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutorSummary {
    /// Iterations started.
    pub started: u64,
    /// Iterations that completed.
    pub completed: u64,
    /// Iterations that failed.
    pub failed: u64,
    /// Arrival-rate iterations dropped for lack of a free VU.
    pub dropped: u64,
    /// Iterations cancelled after the graceful window.
    pub interrupted: u64,
    /// Highest number of VUs busy at once (see [`ExecutorCounters::active_vus`]).
    pub max_active_vus: u64,
}

/// The instantaneous target rate in iterations per second at time `t` since the scenario
/// started (i.e. after its `startTime`), for arrival-rate executors: `rate / timeUnit`, or the
/// stages interpolated linearly from `startRate`, a 0s stage jumping straight to its target.
/// Past the last stage the last target holds (the scenario is over by then). Closed-model
/// executors have no rate: 0.
pub fn rate_at(workload: &Workload, t: Duration) -> f64 {
    match workload {
        Workload::ConstantArrivalRate {
            rate, time_unit, ..
        } => *rate as f64 / time_unit.as_secs_f64(),
        Workload::RampingArrivalRate {
            start_rate,
            time_unit,
            stages,
            ..
        } => ramp_f64(*start_rate, stages, t) / time_unit.as_secs_f64(),
        Workload::ConstantVus { .. }
        | Workload::RampingVus { .. }
        | Workload::SharedIterations { .. }
        | Workload::PerVuIterations { .. } => 0.0,
    }
}

/// The target VU count at time `t` since the scenario started (after its `startTime`).
///
/// ramping-vus: the stages interpolated linearly from `startVUs`; like k6, the count only
/// moves once the line has fully reached the next whole VU (ramping up it is rounded down,
/// ramping down rounded up), and a 0s stage jumps. Past the last stage the last target holds.
/// constant-vus and the iteration executors: `vus`. Arrival-rate executors size their pool on
/// demand: 0.
pub fn vus_at(workload: &Workload, t: Duration) -> u64 {
    match workload {
        Workload::RampingVus { start_vus, stages } => ramp_u64(*start_vus, stages, t),
        Workload::ConstantVus { vus, .. }
        | Workload::SharedIterations { vus, .. }
        | Workload::PerVuIterations { vus, .. } => *vus,
        Workload::ConstantArrivalRate { .. } | Workload::RampingArrivalRate { .. } => 0,
    }
}

/// The most VUs the scenario may use at once on this runner.
///
/// Arrival-rate executors: `maxVUs` (whose default `volley_core::scenario::default_max_vus`
/// resolves). VUs are created lazily, so an unused cap costs nothing. Closed-model executors:
/// their peak VU count.
pub fn max_vus(workload: &Workload) -> u64 {
    match workload {
        Workload::ConstantArrivalRate { max_vus, .. }
        | Workload::RampingArrivalRate { max_vus, .. } => *max_vus,
        Workload::RampingVus { start_vus, stages } => peak(*start_vus, stages),
        Workload::ConstantVus { vus, .. }
        | Workload::SharedIterations { vus, .. }
        | Workload::PerVuIterations { vus, .. } => *vus,
    }
}

/// Runs one scenario share: waits until `start + scenario.startTime`, schedules iterations per
/// `workload` (the scenario's executor, from [`Workload::of`]), stops starting new ones when its time is up (or `stop` flips to true, or
/// iterations are exhausted), gives in-flight iterations `gracefulStop` to finish, then drops
/// (cancels) the rest and counts them as interrupted.
///
/// `make_vu(n)` creates VU `n` (0-based); arrival-rate executors call it lazily, from the
/// scheduling loop, the first time they need an extra VU. Dropping the sender of `stop`
/// without sending `true` does not stop the scenario.
pub async fn run_scenario<V: Vu, F: FnMut(u64) -> V + Send>(
    scenario: &Scenario,
    workload: &Workload,
    start: Instant,
    make_vu: F,
    counters: Arc<ExecutorCounters>,
    mut stop: watch::Receiver<bool>,
) -> ExecutorSummary {
    let tally = Arc::new(IterationTally::new(counters));
    let begin = at(start, scenario.start_time.get());
    tokio::select! {
        biased;
        // A stop before the start time means the scenario never runs.
        () = stop_requested(&mut stop) => return tally.summary(),
        () = sleep_until(begin) => {}
    }
    let timeline = Timeline {
        begin,
        end: at(begin, workload.run_length()),
        grace: scenario.graceful_stop.get(),
    };
    tracing::debug!(
        scenario = %scenario.name,
        executor = scenario.executor.as_str(),
        "scenario started"
    );
    match workload {
        Workload::ConstantArrivalRate {
            rate,
            time_unit,
            duration,
            max_vus,
        } => {
            let schedule = Schedule::Constant {
                unit_nanos: time_unit.as_nanos(),
                rate: u128::from(*rate),
                length: *duration,
            };
            run_open(schedule, *max_vus, timeline, make_vu, &tally, &mut stop).await;
        }
        Workload::RampingArrivalRate {
            start_rate,
            time_unit,
            stages,
            max_vus,
        } => {
            let schedule = Schedule::ramping(*start_rate, *time_unit, stages);
            run_open(schedule, *max_vus, timeline, make_vu, &tally, &mut stop).await;
        }
        Workload::ConstantVus { vus, .. } => {
            let vus = ClosedVus::Fixed(*vus, Quota::Time);
            run_closed(vus, timeline, make_vu, &tally, &mut stop).await;
        }
        Workload::RampingVus { start_vus, stages } => {
            let vus = ClosedVus::Ramping(*start_vus, stages);
            run_closed(vus, timeline, make_vu, &tally, &mut stop).await;
        }
        Workload::SharedIterations {
            vus, iterations, ..
        } => {
            let vus = ClosedVus::Fixed(*vus, Quota::Shared(*iterations));
            run_closed(vus, timeline, make_vu, &tally, &mut stop).await;
        }
        Workload::PerVuIterations {
            vus, iterations, ..
        } => {
            let vus = ClosedVus::Fixed(*vus, Quota::PerVu(*iterations));
            run_closed(vus, timeline, make_vu, &tally, &mut stop).await;
        }
    }
    let summary = tally.summary();
    tracing::debug!(scenario = %scenario.name, ?summary, "scenario finished");
    summary
}

/// When a scenario runs.
#[derive(Clone, Copy)]
struct Timeline {
    /// `start + startTime`: offset 0 of the schedule.
    begin: Instant,
    /// No iteration starts at or after this moment.
    end: Instant,
    /// `gracefulStop`.
    grace: Duration,
}

// ---------------------------------------------------------------------------------------------
// Open model: constant-arrival-rate and ramping-arrival-rate.
// ---------------------------------------------------------------------------------------------

/// What the scheduler hands an idle pooled VU: when its iteration was due, and its number in
/// the scenario (taken in the order iterations start).
struct Start {
    scheduled: Instant,
    scenario_iteration: u64,
}

/// The scheduling loop of arrival-rate executors: start iteration `i` at its due time with a
/// free VU (at most `cap` of them), or count it dropped.
///
/// Each VU is a long-lived task ([`pooled_vu`]) fed by this loop over its own channel, rather
/// than a task spawned per iteration: a profile of the 20,000/s case had the per-iteration
/// spawn (allocating and moving the iteration's future, the `JoinSet`'s lock and list) among
/// the scheduler's top costs, and the scheduler is what must keep up with the schedule.
async fn run_open<V: Vu, F: FnMut(u64) -> V + Send>(
    mut schedule: Schedule,
    cap: u64,
    timeline: Timeline,
    mut make_vu: F,
    tally: &Arc<IterationTally>,
    stop: &mut watch::Receiver<bool>,
) {
    let mut pool = Pool {
        idle: Vec::new(),
        starts: Vec::new(),
        live: 0,
        exhausted: false,
    };
    // Finished iterations come back here as (VU id, how it ended).
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, IterationEnd)>();
    // The VU tasks; they only end when their channel closes (or on a panic).
    let mut tasks: JoinSet<()> = JoinSet::new();
    // Tokio's own timer would start iterations up to ~1 ms late (see `crate::pacing`).
    let mut pacer = Pacer::default();
    let mut i: u64 = 0;
    // When the last iteration started was due: the gap to the next tells the pacer the rate.
    let mut last_offset = Duration::ZERO;
    let grace_from = loop {
        // Take back VUs whose iterations finished, so they can serve the iterations due now.
        while let Ok(done) = done_rx.try_recv() {
            pool.take_back(done);
        }
        while let Some(res) = tasks.try_join_next() {
            pool.lost(res);
        }
        if pool.exhausted || *stop.borrow() {
            break Instant::now();
        }
        let Some(offset) = schedule.due(i) else {
            // The schedule is over; in-flight iterations get their grace from the planned end.
            break timeline.end;
        };
        let due = at(timeline.begin, offset);
        if due > Instant::now() {
            pacer.set_gap(offset.saturating_sub(last_offset));
            tokio::select! {
                biased;
                () = stop_requested(stop) => {}
                // Wake for finished iterations too: an `Exhausted` must stop the scenario now,
                // not at the next due time, which may be far away.
                Some(done) = done_rx.recv() => pool.take_back(done),
                Some(res) = tasks.join_next(), if !tasks.is_empty() => pool.lost(res),
                () = pacer.sleep_until(due) => {}
            }
            continue;
        }
        // Iteration `i` is due (or overdue: iterations due while we were busy are started in one
        // batch, each keeping its own due time).
        i += 1;
        last_offset = offset;
        let id = match pool.idle.pop() {
            Some(id) => Some(id),
            None if pool.live < cap => {
                let id = pool.starts.len();
                let (start_tx, start_rx) = mpsc::channel(1);
                let vu = make_vu(id as u64);
                tasks.spawn(pooled_vu(
                    id,
                    vu,
                    start_rx,
                    done_tx.clone(),
                    Arc::clone(tally),
                ));
                pool.starts.push(start_tx);
                pool.live += 1;
                Some(id)
            }
            // Open model: never wait for a VU, that would shift the schedule.
            None => None,
        };
        let start = Start {
            scheduled: due,
            scenario_iteration: tally.next_iteration.fetch_add(1, Ordering::Relaxed),
        };
        // An idle VU's channel is empty, so the send only fails if its task is gone (a panic
        // not yet seen by `lost`); the iteration then has no VU and is dropped.
        let sent = id.is_some_and(|id| pool.starts[id].try_send(start).is_ok());
        if !sent {
            tally.add(|c| &c.dropped);
        }
        // A long overdue batch must not starve the iterations it starts (nor anything else on a
        // current-thread runtime): yield once the task budget is used up.
        tokio::task::consume_budget().await;
    };
    // Closing the channels ends idle VUs now and busy ones after their iteration.
    pool.starts.clear();
    drop(done_rx);
    finish(&mut tasks, at(grace_from, timeline.grace)).await;
}

/// One VU of an arrival-rate scenario: runs an iteration for each [`Start`] it is sent and
/// reports back, until its channel closes.
async fn pooled_vu<V: Vu>(
    id: usize,
    mut vu: V,
    mut starts: mpsc::Receiver<Start>,
    done: mpsc::UnboundedSender<(usize, IterationEnd)>,
    tally: Arc<IterationTally>,
) {
    let mut iteration = 0;
    while let Some(start) = starts.recv().await {
        let ticket = Ticket {
            vu: id as u64,
            iteration,
            scenario_iteration: start.scenario_iteration,
            scheduled: start.scheduled,
        };
        iteration += 1;
        let end = {
            let _busy = ActiveVu::new(&tally);
            let flight = InFlight::start(&tally);
            let end = vu.iterate(ticket).await;
            flight.finish(end);
            end
        };
        // The scheduler is gone once the schedule is over; nobody needs the VU back then.
        let _ = done.send((id, end));
    }
}

/// Free VUs of an arrival-rate scenario and what the scheduler learnt from finished iterations.
struct Pool {
    /// Ids of idle VUs; last in, first out (the warmest VU, whose connection is still open).
    idle: Vec<usize>,
    /// Each VU's channel, by id.
    starts: Vec<mpsc::Sender<Start>>,
    /// VUs in existence (idle or busy); at most `max_vus`.
    live: u64,
    exhausted: bool,
}

impl Pool {
    fn take_back(&mut self, (id, end): (usize, IterationEnd)) {
        self.exhausted |= end == IterationEnd::Exhausted;
        self.idle.push(id);
    }

    /// A VU task ended: before the schedule's end that is a panic, which took its iteration
    /// (counted interrupted) and its VU with it; a fresh one may take its place in the cap.
    fn lost(&mut self, res: Result<(), JoinError>) {
        self.live = self.live.saturating_sub(1);
        if let Err(err) = res {
            log_join_error(&err);
        }
    }
}

/// Due times of an arrival-rate schedule, as offsets from the scenario's begin.
enum Schedule {
    /// Iteration `i` is due at exactly `i × unit / rate`, computed from `i` so nothing drifts.
    Constant {
        unit_nanos: u128,
        rate: u128,
        length: Duration,
    },
    /// Iteration `i` is due when the integral of the rate reaches `i`.
    Ramping {
        segments: Vec<RampSegment>,
        /// The segment the last due time fell in; due times only move forward.
        cursor: usize,
    },
}

/// One stage of a ramping-arrival-rate schedule, with a positive duration.
struct RampSegment {
    /// Offset of the segment's start from the scenario's begin.
    start: Duration,
    length: Duration,
    /// Rate (iterations per second) at the start and the end of the segment.
    from: f64,
    to: f64,
    /// Iterations due before the segment (the integral of the rate up to its start) and before
    /// its end.
    before: f64,
    through: f64,
}

impl Schedule {
    /// ramping-arrival-rate: the rate moves linearly through `stages` (targets per
    /// `time_unit`), from `start_rate`.
    fn ramping(start_rate: u64, time_unit: Duration, stages: &[Stage]) -> Self {
        let per_sec = |per_unit: u64| per_unit as f64 / time_unit.as_secs_f64();
        let mut segments = Vec::new();
        let mut from = per_sec(start_rate);
        let mut start = Duration::ZERO;
        let mut before = 0.0;
        for stage in stages {
            let length = stage.duration.get();
            let to = per_sec(stage.target);
            // A 0s stage adds no segment: the rate simply jumps to its target.
            if !length.is_zero() {
                let through = before + (from + to) / 2.0 * length.as_secs_f64();
                segments.push(RampSegment {
                    start,
                    length,
                    from,
                    to,
                    before,
                    through,
                });
                before = through;
            }
            start = start.saturating_add(length);
            from = to;
        }
        Schedule::Ramping {
            segments,
            cursor: 0,
        }
    }

    /// Offset at which iteration `i` is due, or `None` once the schedule has no more
    /// iterations. Must be called with increasing `i`.
    fn due(&mut self, i: u64) -> Option<Duration> {
        match self {
            Schedule::Constant {
                unit_nanos,
                rate,
                length,
            } => {
                if *rate == 0 {
                    return None;
                }
                let nanos = u128::from(i) * *unit_nanos / *rate;
                let offset = Duration::from_nanos(u64::try_from(nanos).ok()?);
                (offset < *length).then_some(offset)
            }
            Schedule::Ramping { segments, cursor } => {
                let target = i as f64;
                // Skip segments whose iterations are all due before `i`; zero-rate segments hold
                // none, so they are skipped whole and the next iteration lands at the start of
                // the next segment with a positive rate.
                while segments.get(*cursor).is_some_and(|s| target >= s.through) {
                    *cursor += 1;
                }
                let seg = segments.get(*cursor)?;
                let secs = seg.time_to(target - seg.before);
                let into = Duration::try_from_secs_f64(secs)
                    .unwrap_or(seg.length)
                    .min(seg.length);
                let offset = seg.start.saturating_add(into);
                (offset < seg.start.saturating_add(seg.length)).then_some(offset)
            }
        }
    }
}

impl RampSegment {
    /// Seconds from the segment's start until `k` more iterations are due: the root of
    /// `from·x + (to − from)/(2·length)·x² = k`.
    fn time_to(&self, k: f64) -> f64 {
        if k <= 0.0 {
            return 0.0;
        }
        let slope = (self.to - self.from) / self.length.as_secs_f64();
        // 2k / (from + √(from² + 2·slope·k)) is the usual root, rewritten so that a flat
        // segment (slope 0) needs no special case and a small slope loses no precision. Within
        // the segment the discriminant is at least `to²`, so it is only negative by rounding.
        let disc = (self.from * self.from + 2.0 * slope * k).max(0.0);
        let denominator = self.from + disc.sqrt();
        if denominator > 0.0 {
            2.0 * k / denominator
        } else {
            0.0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Closed model: constant-vus, ramping-vus, shared-iterations, per-vu-iterations.
// ---------------------------------------------------------------------------------------------

/// A closed-model VU between its runs.
struct VuState<V> {
    vu: V,
    iterations: u64,
}

/// A closed-model VU slot, indexed by VU number.
enum VuSlot<V> {
    /// Never created, or lost with an aborted task: created again if needed.
    Empty,
    /// Stopped after a ramp-down, kept for a later ramp-up.
    Idle(VuState<V>),
    /// Its task is looping iterations.
    Running {
        task: AbortHandle,
        /// Set while the slot is above the target VU count: when its current iteration must
        /// have finished.
        ramp_down_deadline: Option<Instant>,
    },
}

/// Besides time and the halt flag, what stops a closed-model VU's loop.
enum Quota {
    /// constant-vus: nothing else.
    Time,
    /// ramping-vus: VUs at or above the current target stop after their iteration.
    Target(Arc<AtomicU64>),
    /// shared-iterations: the scenario-wide counter reaches this total.
    Shared(u64),
    /// per-vu-iterations: the VU has run this many.
    PerVu(u64),
}

/// The VUs of a closed-model executor.
enum ClosedVus<'a> {
    /// constant-vus, shared-iterations, per-vu-iterations: this many VUs, each started once,
    /// that stop by themselves (time up, or their quota).
    Fixed(u64, Quota),
    /// ramping-vus: the count moves linearly through the stages from the start count, and VUs
    /// above it stop after their iteration.
    Ramping(u64, &'a [Stage]),
}

/// What every closed-model VU task shares.
struct LoopContext {
    tally: Arc<IterationTally>,
    /// Set by the controller (stop, time up) or a VU (exhausted): start no more iterations.
    halt: watch::Sender<bool>,
    end: Instant,
    quota: Quota,
}

impl LoopContext {
    fn halted(&self) -> bool {
        *self.halt.borrow()
    }
}

/// The loop of one closed-model VU: iterations back to back until its quota, time, or a halt.
async fn vu_loop<V: Vu>(
    index: u64,
    mut state: VuState<V>,
    ctx: Arc<LoopContext>,
) -> (u64, VuState<V>) {
    let _alive = ActiveVu::new(&ctx.tally);
    loop {
        if ctx.halted() || Instant::now() >= ctx.end {
            break;
        }
        let scenario_iteration = match &ctx.quota {
            Quota::Shared(total) => {
                // The counter hands out the shared iterations; overshooting it is harmless.
                let n = ctx.tally.next_iteration.fetch_add(1, Ordering::Relaxed);
                if n >= *total {
                    break;
                }
                n
            }
            Quota::PerVu(per_vu) if state.iterations >= *per_vu => break,
            Quota::Target(target) if index >= target.load(Ordering::Relaxed) => break,
            Quota::Time | Quota::PerVu(_) | Quota::Target(_) => {
                ctx.tally.next_iteration.fetch_add(1, Ordering::Relaxed)
            }
        };
        let ticket = Ticket {
            vu: index,
            iteration: state.iterations,
            scenario_iteration,
            scheduled: Instant::now(),
        };
        state.iterations += 1;
        let flight = InFlight::start(&ctx.tally);
        let end = state.vu.iterate(ticket).await;
        flight.finish(end);
        if end == IterationEnd::Exhausted {
            ctx.halt.send_replace(true);
            break;
        }
        // An iteration that never waits would otherwise hog its worker thread until `end`.
        tokio::task::consume_budget().await;
    }
    (index, state)
}

/// The controller of closed-model executors: starts the VU tasks, follows the ramping-vus
/// target, and waits for the end.
async fn run_closed<V: Vu, F: FnMut(u64) -> V + Send>(
    vus: ClosedVus<'_>,
    timeline: Timeline,
    mut make_vu: F,
    tally: &Arc<IterationTally>,
    stop: &mut watch::Receiver<bool>,
) {
    let target = Arc::new(AtomicU64::new(0));
    let (fixed, ramp, quota) = match vus {
        ClosedVus::Fixed(n, quota) => (n, None, quota),
        ClosedVus::Ramping(start, stages) => {
            (0, Some((start, stages)), Quota::Target(Arc::clone(&target)))
        }
    };
    let (halt, mut halted) = watch::channel(false);
    let ctx = Arc::new(LoopContext {
        tally: Arc::clone(tally),
        halt,
        end: timeline.end,
        quota,
    });
    let mut slots: Vec<VuSlot<V>> = Vec::new();
    let mut tasks: JoinSet<(u64, VuState<V>)> = JoinSet::new();
    let spawn = |tasks: &mut JoinSet<(u64, VuState<V>)>, index: usize, state: VuState<V>| {
        let task = tasks.spawn(vu_loop(index as u64, state, Arc::clone(&ctx)));
        VuSlot::Running {
            task,
            ramp_down_deadline: None,
        }
    };
    if ramp.is_none() {
        // A fixed set of VUs, each started once; they stop by themselves.
        for index in 0..fixed {
            let state = VuState {
                vu: make_vu(index),
                iterations: 0,
            };
            let slot = spawn(&mut tasks, slots.len(), state);
            slots.push(slot);
        }
    }
    let grace_from = loop {
        let now = Instant::now();
        if *stop.borrow() || *halted.borrow() {
            break now;
        }
        if now >= timeline.end {
            break timeline.end;
        }
        let mut wake = timeline.end;
        if let Some((start, stages)) = ramp {
            let t = now.saturating_duration_since(timeline.begin);
            let want = ramp_u64(start, stages, t);
            target.store(want, Ordering::Relaxed);
            let want = usize::try_from(want).unwrap_or(usize::MAX);
            while slots.len() < want {
                slots.push(VuSlot::Empty);
            }
            for (index, slot) in slots.iter_mut().enumerate() {
                let wanted = index < want;
                match slot {
                    VuSlot::Empty if wanted => {
                        let state = VuState {
                            vu: make_vu(index as u64),
                            iterations: 0,
                        };
                        *slot = spawn(&mut tasks, index, state);
                    }
                    VuSlot::Idle(_) if wanted => {
                        if let VuSlot::Idle(state) = std::mem::replace(slot, VuSlot::Empty) {
                            *slot = spawn(&mut tasks, index, state);
                        }
                    }
                    VuSlot::Running {
                        ramp_down_deadline, ..
                    } if wanted => *ramp_down_deadline = None,
                    VuSlot::Running {
                        task,
                        ramp_down_deadline,
                    } => {
                        // Ramped down: the VU stops after its current iteration, which gets
                        // the same grace as at the end of the scenario.
                        let deadline = *ramp_down_deadline.get_or_insert(at(now, timeline.grace));
                        if deadline <= now {
                            task.abort();
                        } else {
                            wake = wake.min(deadline);
                        }
                    }
                    VuSlot::Empty | VuSlot::Idle(_) => {}
                }
            }
            if let Some(change) = next_vus_change(start, stages, t) {
                wake = wake.min(at(timeline.begin, change));
            }
        } else if tasks.is_empty() {
            // Every VU has used up its iterations.
            break now;
        }
        tokio::select! {
            biased;
            () = stop_requested(stop) => {}
            _ = halted.wait_for(|h| *h) => {}
            Some(res) = tasks.join_next(), if !tasks.is_empty() => match res {
                Ok((index, state)) => {
                    if let Some(slot) = usize::try_from(index).ok().and_then(|i| slots.get_mut(i)) {
                        *slot = VuSlot::Idle(state);
                    }
                }
                Err(err) => {
                    log_join_error(&err);
                    for slot in &mut slots {
                        if matches!(slot, VuSlot::Running { task, .. } if task.id() == err.id()) {
                            *slot = VuSlot::Empty;
                        }
                    }
                }
            },
            () = sleep_until(wake) => {}
        }
    };
    // VUs check the halt flag before each iteration; the time limit they check themselves.
    ctx.halt.send_replace(true);
    finish(&mut tasks, at(grace_from, timeline.grace)).await;
}

/// The offset after `t` at which [`vus_at`] next changes for a ramping-vus scenario starting
/// at `start` VUs (or a stage boundary, where it may), so the controller sleeps exactly until
/// then instead of polling.
fn next_vus_change(start: u64, stages: &[Stage], t: Duration) -> Option<Duration> {
    let mut from = start;
    let mut stage_start = Duration::ZERO;
    for stage in stages {
        let stage_end = stage_start.saturating_add(stage.duration.get());
        if t < stage_end {
            let span = stage.duration.get().as_nanos();
            let into = t.saturating_sub(stage_start).as_nanos();
            let diff = u128::from(stage.target.abs_diff(from));
            if diff == 0 {
                return Some(stage_end);
            }
            // The count has moved by `m` whole VUs; it moves again when `diff·into/span`
            // reaches `m + 1`.
            let moved = diff * into / span;
            let next = ((moved + 1) * span).div_ceil(diff);
            let next = u64::try_from(next).unwrap_or(u64::MAX);
            return Some(
                stage_start
                    .saturating_add(Duration::from_nanos(next))
                    .min(stage_end),
            );
        }
        from = stage.target;
        stage_start = stage_end;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Shared pieces.
// ---------------------------------------------------------------------------------------------

/// Waits for in-flight tasks until `deadline`, then cancels the rest. Their [`InFlight`]
/// guards count them as interrupted when they are dropped.
async fn finish<T: 'static>(tasks: &mut JoinSet<T>, deadline: Instant) {
    let grace = sleep_until(deadline);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            res = tasks.join_next() => match res {
                None => return,
                Some(Ok(_)) => {}
                Some(Err(err)) => log_join_error(&err),
            },
            () = &mut grace => break,
        }
    }
    tasks.abort_all();
    // Wait until the cancelled futures are dropped, so the counts are final.
    while tasks.join_next().await.is_some() {}
}

/// Resolves once `stop` is true; never, if its sender is gone without saying so.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn log_join_error(err: &JoinError) {
    if err.is_panic() {
        tracing::error!(error = %err, "a virtual user panicked; its iteration counts as interrupted");
    }
}

/// `begin + offset`, saturating far in the future instead of overflowing.
fn at(begin: Instant, offset: Duration) -> Instant {
    begin + offset.min(FAR_FUTURE)
}

/// Linear interpolation through stages, as a real number (rates).
fn ramp_f64(start: u64, stages: &[Stage], t: Duration) -> f64 {
    let mut from = start as f64;
    let mut stage_start = Duration::ZERO;
    for stage in stages {
        let length = stage.duration.get();
        let to = stage.target as f64;
        // `t < end` is never true for a 0s stage once `t` has reached it: the value jumps.
        if t < stage_start.saturating_add(length) {
            let fraction = (t - stage_start).as_secs_f64() / length.as_secs_f64();
            return from + (to - from) * fraction;
        }
        from = to;
        stage_start = stage_start.saturating_add(length);
    }
    from
}

/// Linear interpolation through stages in whole units, moving away from the previous target
/// only by units fully reached (exact integer arithmetic, so tables are predictable).
fn ramp_u64(start: u64, stages: &[Stage], t: Duration) -> u64 {
    let mut from = start;
    let mut stage_start = Duration::ZERO;
    for stage in stages {
        let length = stage.duration.get();
        if t < stage_start.saturating_add(length) {
            let diff = u128::from(stage.target.abs_diff(from));
            let moved = diff * (t - stage_start).as_nanos() / length.as_nanos();
            // `moved < diff`, which fits in u64.
            let moved = u64::try_from(moved).unwrap_or(u64::MAX);
            return if stage.target >= from {
                from.saturating_add(moved)
            } else {
                from.saturating_sub(moved)
            };
        }
        from = stage.target;
        stage_start = stage_start.saturating_add(length);
    }
    from
}

/// This scenario's own counts, mirrored into the caller's live counters.
struct IterationTally {
    shared: Arc<ExecutorCounters>,
    own: ExecutorCounters,
    max_active: AtomicU64,
    /// Source of [`Ticket::scenario_iteration`] (and the shared-iterations hand-out).
    next_iteration: AtomicU64,
}

impl IterationTally {
    fn new(shared: Arc<ExecutorCounters>) -> Self {
        Self {
            shared,
            own: ExecutorCounters::default(),
            max_active: AtomicU64::new(0),
            next_iteration: AtomicU64::new(0),
        }
    }

    fn add(&self, field: fn(&ExecutorCounters) -> &AtomicU64) {
        field(&self.shared).fetch_add(1, Ordering::Relaxed);
        field(&self.own).fetch_add(1, Ordering::Relaxed);
    }

    fn sub(&self, field: fn(&ExecutorCounters) -> &AtomicU64) {
        field(&self.shared).fetch_sub(1, Ordering::Relaxed);
        field(&self.own).fetch_sub(1, Ordering::Relaxed);
    }

    fn summary(&self) -> ExecutorSummary {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExecutorSummary {
            started: get(&self.own.started),
            completed: get(&self.own.completed),
            failed: get(&self.own.failed),
            dropped: get(&self.own.dropped),
            interrupted: get(&self.own.interrupted),
            max_active_vus: get(&self.max_active),
        }
    }
}

/// Counts a VU as active for as long as it lives; dropping works for aborted tasks too.
struct ActiveVu(Arc<IterationTally>);

impl ActiveVu {
    fn new(tally: &Arc<IterationTally>) -> Self {
        tally.shared.active_vus.fetch_add(1, Ordering::Relaxed);
        let now = tally.own.active_vus.fetch_add(1, Ordering::Relaxed) + 1;
        tally.max_active.fetch_max(now, Ordering::Relaxed);
        Self(Arc::clone(tally))
    }
}

impl Drop for ActiveVu {
    fn drop(&mut self) {
        self.0.sub(|c| &c.active_vus);
    }
}

/// One started iteration. Dropped without [`InFlight::finish`] means its task was cancelled
/// mid-iteration: it counts as interrupted.
struct InFlight {
    tally: Arc<IterationTally>,
    finished: bool,
}

impl InFlight {
    fn start(tally: &Arc<IterationTally>) -> Self {
        tally.add(|c| &c.started);
        Self {
            tally: Arc::clone(tally),
            finished: false,
        }
    }

    fn finish(mut self, end: IterationEnd) {
        match end {
            IterationEnd::Completed => self.tally.add(|c| &c.completed),
            IterationEnd::Failed => self.tally.add(|c| &c.failed),
            // Nothing ran: take the start back so `started` stays the sum of the outcomes.
            IterationEnd::Exhausted => self.tally.sub(|c| &c.started),
        }
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            self.tally.add(|c| &c.interrupted);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;

    use volley_crds::Duration as SpecDuration;
    use volley_crds::spec::Executor;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A scenario of `executor` whose required fields hold what the engine used to default
    /// them to (rate 0, duration 0s, 1 VU, 0 iterations); tests set what they exercise.
    fn scenario(executor: Executor) -> Scenario {
        let sc = Scenario {
            name: "test".into(),
            executor,
            graceful_stop: SpecDuration::from_secs(30),
            ..Scenario::default()
        };
        match executor {
            Executor::ConstantArrivalRate => Scenario {
                rate: Some(0),
                duration: Some(SpecDuration::from_secs(0)),
                ..sc
            },
            Executor::ConstantVus => Scenario {
                vus: Some(1),
                duration: Some(SpecDuration::from_secs(0)),
                ..sc
            },
            Executor::SharedIterations | Executor::PerVuIterations => Scenario {
                iterations: Some(0),
                ..sc
            },
            Executor::RampingArrivalRate | Executor::RampingVus => sc,
        }
    }

    /// The typed workload of a test scenario.
    fn typed(sc: &Scenario) -> Workload {
        Workload::of(sc).unwrap()
    }

    /// Stages from `(milliseconds, target)` pairs.
    fn stages(list: &[(u64, u64)]) -> Vec<Stage> {
        list.iter()
            .map(|&(ms, target)| Stage {
                duration: SpecDuration::from_millis(ms),
                target,
            })
            .collect()
    }

    #[derive(Clone, Copy, Debug)]
    struct Run {
        ticket: Ticket,
        started: Instant,
    }

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<Run>>>);

    impl Log {
        /// Every recorded iteration, in the order they started on the schedule.
        fn runs(&self) -> Vec<Run> {
            let mut runs = self.0.lock().unwrap().clone();
            runs.sort_by_key(|r| r.ticket.scenario_iteration);
            runs
        }
    }

    /// A VU that records its tickets, then "works" (sleeps) for `work(ticket)` and ends with
    /// `end(ticket)` (returning `Exhausted` at once, as a drained feeder would).
    struct FakeVu {
        log: Log,
        work: fn(&Ticket) -> Duration,
        end: fn(&Ticket) -> IterationEnd,
    }

    impl Vu for FakeVu {
        fn iterate(&mut self, ticket: Ticket) -> impl Future<Output = IterationEnd> + Send {
            let log = self.log.clone();
            let work = (self.work)(&ticket);
            let end = (self.end)(&ticket);
            async move {
                log.0.lock().unwrap().push(Run {
                    ticket,
                    started: Instant::now(),
                });
                if end != IterationEnd::Exhausted {
                    tokio::time::sleep(work).await;
                }
                end
            }
        }
    }

    fn completed(_: &Ticket) -> IterationEnd {
        IterationEnd::Completed
    }

    fn fake(
        log: &Log,
        work: fn(&Ticket) -> Duration,
        end: fn(&Ticket) -> IterationEnd,
    ) -> impl FnMut(u64) -> FakeVu + Send + 'static {
        let log = log.clone();
        move |_| FakeVu {
            log: log.clone(),
            work,
            end,
        }
    }

    struct Outcome {
        summary: ExecutorSummary,
        runs: Vec<Run>,
        start: Instant,
        /// How long `run_scenario` took.
        took: Duration,
        counters: Arc<ExecutorCounters>,
    }

    impl Outcome {
        fn offsets(&self) -> Vec<Duration> {
            self.runs
                .iter()
                .map(|r| r.ticket.scheduled - self.start)
                .collect()
        }

        fn per_vu(&self, vu: u64) -> Vec<Ticket> {
            self.runs
                .iter()
                .map(|r| r.ticket)
                .filter(|t| t.vu == vu)
                .collect()
        }
    }

    async fn run(
        sc: &Scenario,
        work: fn(&Ticket) -> Duration,
        end: fn(&Ticket) -> IterationEnd,
    ) -> Outcome {
        let log = Log::default();
        let counters = Arc::new(ExecutorCounters::default());
        // The sender goes away at once: that alone must not stop the scenario.
        let (_, stop) = watch::channel(false);
        let start = Instant::now();
        let summary = run_scenario(
            sc,
            &typed(sc),
            start,
            fake(&log, work, end),
            Arc::clone(&counters),
            stop,
        )
        .await;
        Outcome {
            summary,
            runs: log.runs(),
            start,
            took: Instant::now() - start,
            counters,
        }
    }

    // --- constant-arrival-rate ------------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn constant_arrival_rate_starts_rate_times_duration_evenly_spaced() {
        let sc = Scenario {
            rate: Some(50),
            duration: Some(SpecDuration::from_secs(2)),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let out = run(&sc, |_| ms(10), completed).await;
        assert_eq!(
            out.summary,
            ExecutorSummary {
                started: 100,
                completed: 100,
                max_active_vus: 1,
                ..ExecutorSummary::default()
            }
        );
        let expected: Vec<Duration> = (0..100).map(|i| ms(20 * i)).collect();
        assert_eq!(out.offsets(), expected);
        for (i, r) in out.runs.iter().enumerate() {
            assert_eq!(r.ticket.scenario_iteration, i as u64);
            assert_eq!(
                r.started, r.ticket.scheduled,
                "iteration {i} started on time"
            );
        }
        // The last iteration is due at 1.98s and works 10ms.
        assert_eq!(out.took, ms(1990));
        assert_eq!(out.counters.started.load(Ordering::Relaxed), 100);
        assert_eq!(out.counters.active_vus.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn constant_arrival_rate_honours_time_unit() {
        let sc = Scenario {
            rate: Some(30),
            time_unit: Some(SpecDuration::from_secs(60)),
            duration: Some(SpecDuration::from_secs(60)),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let out = run(&sc, |_| ms(100), completed).await;
        assert_eq!(out.summary.started, 30);
        let expected: Vec<Duration> = (0..30).map(|i| secs(2 * i)).collect();
        assert_eq!(out.offsets(), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_vus_and_a_small_pool_drop_iterations_instead_of_delaying_them() {
        let sc = Scenario {
            rate: Some(10),
            duration: Some(SpecDuration::from_secs(2)),
            max_vus: Some(5),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let out = run(&sc, |_| ms(950), completed).await;
        // Due every 100ms; each VU is busy 950ms: 0-400ms start, 500-900ms drop, 1.0-1.4s start
        // (the first VUs are free again), 1.5-1.9s drop.
        assert_eq!(
            out.summary,
            ExecutorSummary {
                started: 10,
                completed: 10,
                dropped: 10,
                max_active_vus: 5,
                ..ExecutorSummary::default()
            }
        );
        assert_eq!(out.summary.started + out.summary.dropped, 20);
        let expected: Vec<Duration> = [0, 100, 200, 300, 400, 1000, 1100, 1200, 1300, 1400]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(out.offsets(), expected);
        assert!(out.runs.iter().all(|r| r.ticket.vu < 5));
        // VUs are reused: each of the 5 ran two iterations, counted per VU.
        for vu in 0..5 {
            let iterations: Vec<u64> = out.per_vu(vu).iter().map(|t| t.iteration).collect();
            assert_eq!(iterations, [0, 1], "vu {vu}");
        }
        assert_eq!(out.counters.dropped.load(Ordering::Relaxed), 10);
    }

    /// Blocks its worker thread during the first iteration, so the scheduler falls behind.
    struct BlockingVu(Log);

    impl Vu for BlockingVu {
        fn iterate(&mut self, ticket: Ticket) -> impl Future<Output = IterationEnd> + Send {
            let log = self.0.clone();
            async move {
                log.0.lock().unwrap().push(Run {
                    ticket,
                    started: Instant::now(),
                });
                if ticket.scenario_iteration == 0 {
                    std::thread::sleep(ms(100));
                }
                IterationEnd::Completed
            }
        }
    }

    /// Real time: a stalled runtime delays the start of iterations, not their schedule.
    #[tokio::test]
    async fn late_iterations_keep_their_scheduled_time() {
        let sc = Scenario {
            rate: Some(100),
            duration: Some(SpecDuration::from_millis(300)),
            max_vus: Some(50),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let log = Log::default();
        let (_stop_tx, stop) = watch::channel(false);
        let start = Instant::now();
        let vu_log = log.clone();
        let summary = run_scenario(
            &sc,
            &typed(&sc),
            start,
            move |_| BlockingVu(vu_log.clone()),
            Arc::default(),
            stop,
        )
        .await;
        assert_eq!(summary.started, 30);
        assert_eq!(summary.dropped, 0);
        let runs = log.runs();
        for (i, r) in runs.iter().enumerate() {
            assert_eq!(r.ticket.scheduled - start, ms(10 * i as u64));
        }
        // Iterations 1..=5 were due at 10-50ms but could only start after the 100ms stall.
        for r in &runs[1..=5] {
            let late = r.started - r.ticket.scheduled;
            assert!(late >= ms(40), "{:?} started only {late:?} late", r.ticket);
        }
    }

    // --- ramping-arrival-rate -------------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn ramping_arrival_rate_follows_the_integral_of_the_rate() {
        let sc = Scenario {
            stages: stages(&[(2000, 100)]),
            ..scenario(Executor::RampingArrivalRate)
        };
        let out = run(&sc, |_| ms(5), completed).await;
        // 0 → 100/s over 2s: 100 iterations, 25 of them in the first second.
        assert!(
            (99..=101).contains(&out.summary.started),
            "{:?}",
            out.summary
        );
        assert_eq!(out.summary.dropped, 0);
        let offsets = out.offsets();
        let first_second = offsets.iter().filter(|o| **o < secs(1)).count();
        assert!((24..=26).contains(&first_second), "{first_second}");
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "strictly increasing"
        );
        assert!(offsets.iter().all(|o| *o < secs(2)));
        // The gaps shrink as the rate grows: iteration i is due at sqrt(i/25) s.
        for (i, o) in offsets.iter().enumerate() {
            let exact = (i as f64 / 25.0).sqrt();
            assert!(
                (o.as_secs_f64() - exact).abs() < 1e-6,
                "iteration {i} at {o:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ramping_arrival_rate_jumps_on_zero_second_stages_and_skips_zero_rates() {
        let sc = Scenario {
            // Nothing for 1s, then straight to 50/s for 1s.
            stages: stages(&[(1000, 0), (0, 50), (1000, 50)]),
            ..scenario(Executor::RampingArrivalRate)
        };
        let out = run(&sc, |_| ms(5), completed).await;
        assert_eq!(out.summary.started, 50);
        for (i, o) in out.offsets().iter().enumerate() {
            let exact = secs(1) + ms(20 * i as u64);
            assert!(
                o.abs_diff(exact) < Duration::from_micros(1),
                "iteration {i} at {o:?}"
            );
        }
    }

    #[test]
    fn ramping_schedule_solves_each_segment_in_closed_form() {
        // 0 → 1/s over 10s holds 5 iterations, due where t²/20 = i.
        let sc = Scenario {
            stages: stages(&[(10_000, 1)]),
            ..scenario(Executor::RampingArrivalRate)
        };
        let mut schedule = Schedule::ramping(sc.start_rate.unwrap_or(0), secs(1), &sc.stages);
        for i in 0..5 {
            let due = schedule.due(i).unwrap().as_secs_f64();
            assert!((due - (20.0 * i as f64).sqrt()).abs() < 1e-6, "{i}: {due}");
        }
        assert_eq!(schedule.due(5), None);

        // Ramping down 4 → 0/s over 2s holds 4 iterations, due where 4t − t² = i.
        let sc = Scenario {
            start_rate: Some(4),
            stages: stages(&[(2000, 0)]),
            ..scenario(Executor::RampingArrivalRate)
        };
        let mut schedule = Schedule::ramping(sc.start_rate.unwrap_or(0), secs(1), &sc.stages);
        for i in 0..4 {
            let due = schedule.due(i).unwrap().as_secs_f64();
            let exact = 2.0 - (4.0 - i as f64).sqrt();
            assert!((due - exact).abs() < 1e-6, "{i}: {due}");
        }
        assert_eq!(schedule.due(4), None);

        // Zero everywhere: nothing at all.
        let sc = Scenario {
            stages: stages(&[(1000, 0)]),
            ..scenario(Executor::RampingArrivalRate)
        };
        assert_eq!(
            Schedule::ramping(sc.start_rate.unwrap_or(0), secs(1), &sc.stages).due(0),
            None
        );
    }

    // --- closed model -----------------------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn constant_vus_loop_back_to_back_until_the_duration() {
        let sc = Scenario {
            vus: Some(3),
            duration: Some(SpecDuration::from_secs(1)),
            ..scenario(Executor::ConstantVus)
        };
        let out = run(&sc, |_| ms(100), completed).await;
        assert_eq!(
            out.summary,
            ExecutorSummary {
                started: 30,
                completed: 30,
                max_active_vus: 3,
                ..ExecutorSummary::default()
            }
        );
        for vu in 0..3 {
            let tickets = out.per_vu(vu);
            let iterations: Vec<u64> = tickets.iter().map(|t| t.iteration).collect();
            assert_eq!(iterations, (0..10).collect::<Vec<_>>(), "vu {vu}");
            // Closed model: due when the VU became free.
            for (k, t) in tickets.iter().enumerate() {
                assert_eq!(t.scheduled - out.start, ms(100 * k as u64));
            }
        }
        assert_eq!(out.took, secs(1));
        assert_eq!(out.counters.active_vus.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ramping_vus_follows_the_target_count() {
        let sc = Scenario {
            start_vus: Some(0),
            stages: stages(&[(1000, 4), (1000, 4), (1000, 0)]),
            ..scenario(Executor::RampingVus)
        };
        let counters = Arc::new(ExecutorCounters::default());
        let (stop_tx, stop) = watch::channel(false);
        let log = Log::default();
        let start = Instant::now();
        let task = tokio::spawn({
            let counters = Arc::clone(&counters);
            let make = fake(&log, |_| ms(30), completed);
            async move { run_scenario(&sc, &typed(&sc), start, make, counters, stop).await }
        });
        // Up one VU every 250ms, hold, down one every 250ms; a VU ramped down finishes its
        // 30ms iteration first.
        for (at_ms, want) in [
            (100, 0),
            (300, 1),
            (550, 2),
            (800, 3),
            (1500, 4),
            (2300, 3),
            (2600, 2),
            (2900, 1),
        ] {
            sleep_until(start + ms(at_ms)).await;
            assert_eq!(
                counters.active_vus.load(Ordering::Relaxed),
                want,
                "at {at_ms}ms"
            );
        }
        let summary = task.await.unwrap();
        assert_eq!(summary.max_active_vus, 4);
        assert_eq!(summary.interrupted, 0);
        assert_eq!(summary.started, summary.completed);
        assert!(log.runs().iter().all(|r| r.ticket.vu < 4));
        // The stages end at 3s; the last VU's iteration in flight then (30ms long) finishes.
        let took = Instant::now() - start;
        assert!((secs(3)..=ms(3030)).contains(&took), "{took:?}");
        drop(stop_tx);
    }

    #[tokio::test(start_paused = true)]
    async fn ramping_vus_reuse_vus_after_ramping_down() {
        let sc = Scenario {
            stages: stages(&[(0, 2), (500, 2), (0, 0), (500, 0), (0, 2), (500, 2)]),
            ..scenario(Executor::RampingVus)
        };
        let out = run(&sc, |_| ms(30), completed).await;
        assert_eq!(out.summary.max_active_vus, 2);
        assert!(out.runs.iter().all(|r| r.ticket.vu < 2));
        for vu in 0..2 {
            let tickets = out.per_vu(vu);
            // The same VU state came back: its iteration counter carries on.
            let iterations: Vec<u64> = tickets.iter().map(|t| t.iteration).collect();
            assert_eq!(iterations, (0..tickets.len() as u64).collect::<Vec<_>>());
            // Nothing between 0.5s (plus the last iteration) and 1s.
            assert!(
                tickets
                    .iter()
                    .all(|t| !(ms(500)..secs(1)).contains(&(t.scheduled - out.start)))
            );
            assert!(tickets.iter().any(|t| t.scheduled - out.start >= secs(1)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shared_iterations_are_shared_across_vus() {
        let sc = Scenario {
            vus: Some(4),
            iterations: Some(37),
            ..scenario(Executor::SharedIterations)
        };
        let out = run(&sc, |_| ms(10), completed).await;
        assert_eq!(out.summary.started, 37);
        assert_eq!(out.summary.completed, 37);
        let numbers: Vec<u64> = out
            .runs
            .iter()
            .map(|r| r.ticket.scenario_iteration)
            .collect();
        assert_eq!(numbers, (0..37).collect::<Vec<_>>());
        for vu in 0..4 {
            assert!(!out.per_vu(vu).is_empty(), "vu {vu} took part");
        }
        // Done as soon as the iterations are: 10 rounds of 10ms, not maxDuration.
        assert_eq!(out.took, ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn per_vu_iterations_run_exactly_that_many_on_each_vu() {
        let sc = Scenario {
            vus: Some(3),
            iterations: Some(4),
            ..scenario(Executor::PerVuIterations)
        };
        let out = run(&sc, |t| ms(10 * (t.vu + 1)), completed).await;
        assert_eq!(out.summary.started, 12);
        assert_eq!(out.summary.max_active_vus, 3);
        for vu in 0..3 {
            let iterations: Vec<u64> = out.per_vu(vu).iter().map(|t| t.iteration).collect();
            assert_eq!(iterations, [0, 1, 2, 3], "vu {vu}");
        }
        // The slowest VU: 4 × 30ms.
        assert_eq!(out.took, ms(120));
    }

    #[tokio::test(start_paused = true)]
    async fn max_duration_cuts_iteration_executors() {
        let sc = Scenario {
            vus: Some(2),
            iterations: Some(1000),
            max_duration: Some(SpecDuration::from_secs(1)),
            ..scenario(Executor::SharedIterations)
        };
        let out = run(&sc, |_| ms(100), completed).await;
        assert_eq!(out.summary.started, 20);
        assert_eq!(out.summary.completed, 20);
        assert_eq!(out.took, secs(1));

        let sc = Scenario {
            vus: Some(1),
            iterations: Some(1000),
            max_duration: Some(SpecDuration::from_millis(500)),
            ..scenario(Executor::PerVuIterations)
        };
        let out = run(&sc, |_| ms(100), completed).await;
        assert_eq!(out.summary.started, 5);
    }

    // --- timeline: startTime, gracefulStop, stop, exhaustion --------------------------------

    #[tokio::test(start_paused = true)]
    async fn start_time_delays_the_first_iteration() {
        let sc = Scenario {
            rate: Some(10),
            duration: Some(SpecDuration::from_secs(1)),
            start_time: SpecDuration::from_millis(500),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let out = run(&sc, |_| ms(10), completed).await;
        assert_eq!(out.summary.started, 10);
        assert_eq!(out.offsets()[0], ms(500));
        assert_eq!(out.offsets()[9], ms(1400));

        let sc = Scenario {
            vus: Some(2),
            duration: Some(SpecDuration::from_secs(1)),
            start_time: SpecDuration::from_secs(2),
            ..scenario(Executor::ConstantVus)
        };
        let out = run(&sc, |_| ms(250), completed).await;
        assert_eq!(out.summary.started, 8);
        assert!(out.runs.iter().all(|r| r.started - out.start >= secs(2)));
        assert_eq!(out.took, secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_stop_lets_short_iterations_finish_and_interrupts_long_ones() {
        let sc = Scenario {
            vus: Some(2),
            duration: Some(SpecDuration::from_secs(1)),
            graceful_stop: SpecDuration::from_secs(1),
            ..scenario(Executor::ConstantVus)
        };
        // VU 0: 0s, 0.4s, 0.8s (finishes at 1.2s, within the grace). VU 1: one 5s iteration.
        let out = run(
            &sc,
            |t| if t.vu == 0 { ms(400) } else { secs(5) },
            completed,
        )
        .await;
        assert_eq!(
            out.summary,
            ExecutorSummary {
                started: 4,
                completed: 3,
                interrupted: 1,
                max_active_vus: 2,
                ..ExecutorSummary::default()
            }
        );
        // End of the duration plus the grace.
        assert_eq!(out.took, secs(2));
        assert_eq!(out.counters.interrupted.load(Ordering::Relaxed), 1);
        assert_eq!(out.counters.active_vus.load(Ordering::Relaxed), 0);

        // The same for an arrival-rate scenario: the 2s iteration due at 1s outlives the
        // 0.5s grace after the 2s duration.
        let sc = Scenario {
            rate: Some(1),
            duration: Some(SpecDuration::from_secs(2)),
            graceful_stop: SpecDuration::from_millis(500),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let out = run(
            &sc,
            |t| {
                if t.scenario_iteration == 0 {
                    secs(1)
                } else {
                    secs(2)
                }
            },
            completed,
        )
        .await;
        assert_eq!(out.summary.started, 2);
        assert_eq!(out.summary.completed, 1);
        assert_eq!(out.summary.interrupted, 1);
        assert_eq!(out.took, ms(2500));
    }

    /// Real time: the next iteration is due in a minute, the stop must not wait for it.
    #[tokio::test]
    async fn stop_signal_halts_a_long_scenario_promptly() {
        let sc = Scenario {
            rate: Some(1),
            time_unit: Some(SpecDuration::from_secs(60)),
            duration: Some(SpecDuration::from_secs(3600)),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let (stop_tx, stop) = watch::channel(false);
        let log = Log::default();
        let make = fake(&log, |_| ms(1), completed);
        let task = tokio::spawn(async move {
            run_scenario(&sc, &typed(&sc), Instant::now(), make, Arc::default(), stop).await
        });
        tokio::time::sleep(ms(100)).await;
        let stopped_at = std::time::Instant::now();
        stop_tx.send_replace(true);
        let summary = tokio::time::timeout(secs(2), task)
            .await
            .expect("stopped")
            .unwrap();
        let reaction = stopped_at.elapsed();
        assert!(reaction < ms(250), "took {reaction:?} to stop");
        assert_eq!(summary.started, 1);
        assert_eq!(summary.completed, 1);
    }

    /// Real time, closed model: VUs stop after their current iteration.
    #[tokio::test]
    async fn stop_signal_halts_closed_model_vus() {
        let sc = Scenario {
            vus: Some(2),
            duration: Some(SpecDuration::from_secs(3600)),
            ..scenario(Executor::ConstantVus)
        };
        let (stop_tx, stop) = watch::channel(false);
        let log = Log::default();
        let make = fake(&log, |_| ms(10), completed);
        let task = tokio::spawn(async move {
            run_scenario(&sc, &typed(&sc), Instant::now(), make, Arc::default(), stop).await
        });
        tokio::time::sleep(ms(100)).await;
        let stopped_at = std::time::Instant::now();
        stop_tx.send_replace(true);
        let summary = tokio::time::timeout(secs(2), task)
            .await
            .expect("stopped")
            .unwrap();
        let reaction = stopped_at.elapsed();
        assert!(reaction < ms(250), "took {reaction:?} to stop");
        assert!(summary.started >= 2);
        assert_eq!(summary.started, summary.completed);
        assert_eq!(summary.interrupted, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_signal_uses_the_graceful_window_for_in_flight_iterations() {
        let sc = Scenario {
            vus: Some(2),
            duration: Some(SpecDuration::from_secs(3600)),
            ..scenario(Executor::ConstantVus)
        };
        let (stop_tx, stop) = watch::channel(false);
        let log = Log::default();
        let start = Instant::now();
        let make = fake(&log, |_| ms(20), completed);
        let task = tokio::spawn(async move {
            run_scenario(&sc, &typed(&sc), start, make, Arc::default(), stop).await
        });
        sleep_until(start + ms(150)).await;
        stop_tx.send_replace(true);
        let summary = task.await.unwrap();
        // Iterations at 0, 20, ..., 140ms on both VUs; the last ones finish at 160ms.
        assert_eq!(Instant::now() - start, ms(160));
        assert_eq!(summary.started, 16);
        assert_eq!(summary.completed, 16);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_before_the_start_time_runs_nothing() {
        let sc = Scenario {
            rate: Some(10),
            duration: Some(SpecDuration::from_secs(10)),
            start_time: SpecDuration::from_secs(10),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let (stop_tx, stop) = watch::channel(false);
        let log = Log::default();
        let start = Instant::now();
        let make = fake(&log, |_| ms(20), completed);
        let task = tokio::spawn(async move {
            run_scenario(&sc, &typed(&sc), start, make, Arc::default(), stop).await
        });
        sleep_until(start + secs(1)).await;
        stop_tx.send_replace(true);
        assert_eq!(task.await.unwrap(), ExecutorSummary::default());
        assert_eq!(Instant::now() - start, secs(1));
        assert!(log.runs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_stops_scheduling() {
        fn exhausted_from_5(t: &Ticket) -> IterationEnd {
            if t.scenario_iteration >= 5 {
                IterationEnd::Exhausted
            } else {
                IterationEnd::Completed
            }
        }
        let sc = Scenario {
            rate: Some(10),
            duration: Some(SpecDuration::from_secs(10)),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let out = run(&sc, |_| ms(10), exhausted_from_5).await;
        assert_eq!(out.summary.started, 5);
        assert_eq!(out.summary.completed, 5);
        // One attempt found nothing to do; none after it.
        assert_eq!(out.runs.len(), 6);
        assert_eq!(out.took, ms(500));

        fn exhausted_from_7(t: &Ticket) -> IterationEnd {
            if t.scenario_iteration >= 7 {
                IterationEnd::Exhausted
            } else {
                IterationEnd::Completed
            }
        }
        let sc = Scenario {
            vus: Some(2),
            iterations: Some(100),
            ..scenario(Executor::SharedIterations)
        };
        let out = run(&sc, |_| ms(10), exhausted_from_7).await;
        assert_eq!(out.summary.started, 7);
        assert_eq!(out.summary.completed, 7);
        assert!(out.took <= ms(40));
    }

    #[test]
    fn run_scenario_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let sc = scenario(Executor::ConstantVus);
        let (_tx, rx) = watch::channel(false);
        let log = Log::default();
        let workload = typed(&sc);
        let future = run_scenario(
            &sc,
            &workload,
            Instant::now(),
            fake(&log, |_| ms(1), completed),
            Arc::default(),
            rx,
        );
        assert_send(&future);
    }

    // --- pure functions -------------------------------------------------------------------

    #[test]
    fn planned_duration_table() {
        let d = SpecDuration::from_secs;
        let cases = [
            (
                Scenario {
                    duration: Some(d(60)),
                    start_time: d(5),
                    ..scenario(Executor::ConstantArrivalRate)
                },
                secs(65),
            ),
            (
                Scenario {
                    duration: Some(d(30)),
                    ..scenario(Executor::ConstantVus)
                },
                secs(30),
            ),
            (
                Scenario {
                    stages: stages(&[(10_000, 5), (0, 9), (20_000, 0)]),
                    ..scenario(Executor::RampingVus)
                },
                secs(30),
            ),
            (
                Scenario {
                    stages: stages(&[(1500, 5)]),
                    start_time: d(1),
                    ..scenario(Executor::RampingArrivalRate)
                },
                ms(2500),
            ),
            (scenario(Executor::SharedIterations), secs(600)),
            (
                Scenario {
                    max_duration: Some(d(60)),
                    start_time: d(1),
                    ..scenario(Executor::PerVuIterations)
                },
                secs(61),
            ),
        ];
        for (sc, want) in cases {
            assert_eq!(
                volley_core::plan::scenario_duration(&sc),
                want,
                "{}",
                sc.executor.as_str()
            );
        }
    }

    #[test]
    fn rate_at_table() {
        let car = Scenario {
            rate: Some(50),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let per_minute = Scenario {
            rate: Some(30),
            time_unit: Some(SpecDuration::from_secs(60)),
            ..scenario(Executor::ConstantArrivalRate)
        };
        let rar = Scenario {
            start_rate: Some(10),
            stages: stages(&[(10_000, 110), (0, 20), (10_000, 20)]),
            ..scenario(Executor::RampingArrivalRate)
        };
        let rar_minute = Scenario {
            time_unit: Some(SpecDuration::from_secs(60)),
            stages: stages(&[(60_000, 120)]),
            ..scenario(Executor::RampingArrivalRate)
        };
        let cases: [(&Scenario, Duration, f64); 11] = [
            (&car, secs(0), 50.0),
            (&car, secs(100), 50.0),
            (&per_minute, secs(3), 0.5),
            (&rar, secs(0), 10.0),
            (&rar, secs(5), 60.0),
            (&rar, ms(9_990), 109.9),
            (&rar, secs(10), 20.0), // the 0s stage jumps
            (&rar, secs(15), 20.0),
            (&rar, secs(99), 20.0), // past the end: the last target holds
            (&rar_minute, secs(30), 1.0),
            (&scenario(Executor::ConstantVus), secs(1), 0.0),
        ];
        for (sc, t, want) in cases {
            let got = rate_at(&typed(sc), t);
            assert!(
                (got - want).abs() < 1e-9,
                "{} at {t:?}: {got} != {want}",
                sc.executor.as_str()
            );
        }
    }

    #[test]
    fn vus_at_table() {
        let up = Scenario {
            stages: stages(&[(10_000, 11)]),
            ..scenario(Executor::RampingVus)
        };
        let down = Scenario {
            start_vus: Some(4),
            stages: stages(&[(4_000, 0)]),
            ..scenario(Executor::RampingVus)
        };
        let jump = Scenario {
            start_vus: Some(0),
            stages: stages(&[(1_000, 2), (0, 10), (1_000, 10)]),
            ..scenario(Executor::RampingVus)
        };
        let cv = Scenario {
            vus: Some(7),
            ..scenario(Executor::ConstantVus)
        };
        let cases: [(&Scenario, Duration, u64); 17] = [
            (&up, secs(0), 1), // startVUs defaults to 1
            (&up, ms(999), 1),
            (&up, secs(1), 2),
            (&up, secs(5), 6),
            (&up, secs(10), 11),
            (&up, secs(20), 11),
            (&down, secs(0), 4),
            (&down, ms(999), 4), // ramping down only drops a VU once the line reaches it
            (&down, secs(1), 3),
            (&down, ms(3_999), 1),
            (&down, secs(4), 0),
            (&jump, ms(999), 1),
            (&jump, secs(1), 10),
            (&cv, secs(3), 7),
            (&scenario(Executor::SharedIterations), secs(1), 1),
            (&scenario(Executor::PerVuIterations), secs(1), 1),
            (&scenario(Executor::ConstantArrivalRate), secs(1), 0),
        ];
        for (sc, t, want) in cases {
            assert_eq!(
                vus_at(&typed(sc), t),
                want,
                "{} at {t:?}",
                sc.executor.as_str()
            );
        }
    }

    #[test]
    fn next_vus_change_is_exact() {
        let up = Scenario {
            start_vus: Some(0),
            stages: stages(&[(1_000, 4), (1_000, 4), (1_000, 0)]),
            ..scenario(Executor::RampingVus)
        };
        let cases = [
            (ms(0), Some(ms(250))),
            (ms(250), Some(ms(500))),
            (ms(999), Some(ms(1000))),
            (ms(1000), Some(ms(2000))), // a flat stage: its end
            (ms(2000), Some(ms(2250))),
            (ms(2999), Some(ms(3000))),
            (ms(3000), None),
        ];
        for (t, want) in cases {
            assert_eq!(next_vus_change(0, &up.stages, t), want, "at {t:?}");
            if let Some(next) = want {
                // The count really is constant until then.
                assert_eq!(
                    vus_at(&typed(&up), next - Duration::from_nanos(1)),
                    vus_at(&typed(&up), t)
                );
            }
        }
    }

    #[test]
    fn max_vus_defaults_to_twice_the_peak_rate() {
        let cases = [
            (
                Scenario {
                    rate: Some(50),
                    ..scenario(Executor::ConstantArrivalRate)
                },
                100,
            ),
            (
                Scenario {
                    rate: Some(30),
                    time_unit: Some(SpecDuration::from_secs(60)),
                    ..scenario(Executor::ConstantArrivalRate)
                },
                1,
            ),
            (
                Scenario {
                    rate: Some(1),
                    time_unit: Some(SpecDuration::from_secs(3600)),
                    ..scenario(Executor::ConstantArrivalRate)
                },
                1,
            ),
            (
                Scenario {
                    rate: Some(50),
                    max_vus: Some(7),
                    ..scenario(Executor::ConstantArrivalRate)
                },
                7,
            ),
            (
                Scenario {
                    start_rate: Some(10),
                    stages: stages(&[(1000, 100), (1000, 20)]),
                    ..scenario(Executor::RampingArrivalRate)
                },
                200,
            ),
            (
                Scenario {
                    stages: stages(&[(1000, 3), (1000, 9), (1000, 0)]),
                    ..scenario(Executor::RampingVus)
                },
                9,
            ),
        ];
        for (sc, want) in cases {
            assert_eq!(max_vus(&typed(&sc)), want, "{:?}", sc);
        }
    }
}
