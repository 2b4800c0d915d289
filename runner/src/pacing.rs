//! A timer precise to tens of microseconds, for the arrival-rate schedule.
//!
//! Tokio's timer wheel has 1 ms slots and rounds every deadline *up* to the next slot, so an
//! iteration woken by `sleep_until(due)` starts up to ~1 ms after its slot (about 1.4 ms at p99
//! measured at 200/s). Latency "from the schedule" would then measure our timer, not the
//! server. [`Pacer::sleep_until`] gets within tens of microseconds instead, in three stages:
//!
//! 1. while more than [`COARSE_MARGIN`] away: tokio's timer, which costs nothing while waiting;
//! 2. down to [`SPIN_WINDOW`] before the deadline: a `std::thread::sleep` on the blocking pool
//!    (`nanosleep`, accurate to the thread's timer slack: 50 µs by default, 1 ns on the agent's
//!    threads, see [`tighten_timer_slack`]), awaited without blocking the runtime;
//! 3. the last stretch: yielding to the runtime in a loop until the deadline passes, so other
//!    tasks (iterations in flight) keep running while we wait.
//!
//! The cost is one blocking-pool hand-off per wait that is between [`SPIN_WINDOW`] and
//! [`COARSE_MARGIN`] long and at most [`SPIN_WINDOW`] of yielding per iteration; at high
//! rates the gaps are shorter than the window and the timer is mostly not needed at all.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How far before the deadline tokio's 1 ms timer hands over to the precise stages: one timer
/// slot (the rounding) plus room for a busy runtime to wake late.
pub(crate) const COARSE_MARGIN: Duration = Duration::from_micros(2_000);

/// How far before the deadline the thread sleep hands over to yielding: the nap's lateness
/// (its thread's timer slack, see [`tighten_timer_slack`]) plus the hand-off back to the
/// runtime. Yielding costs CPU for as long as it lasts (an `epoll_wait` per turn when nothing
/// else runs), once per iteration: with 150 µs the 5,000/s case spent most of its CPU
/// yielding. With the slack at 1 ns (Linux) the hand-off is what is left to cover.
#[cfg(target_os = "linux")]
pub(crate) const SPIN_WINDOW: Duration = Duration::from_micros(20);
/// Elsewhere the default timer slack (50 µs on most kernels) stays, and the window covers it.
#[cfg(not(target_os = "linux"))]
pub(crate) const SPIN_WINDOW: Duration = Duration::from_micros(60);

/// Lets this thread's sleeps end within about a microsecond of their deadline: Linux's default
/// timer slack lets a `nanosleep` end up to 50 µs late, which [`SPIN_WINDOW`] would otherwise
/// have to cover by yielding, at a CPU cost per iteration. Called on the agent runtime's
/// threads, where the naps run; a failure only makes the timer spin longer.
pub(crate) fn tighten_timer_slack() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
        tracing::debug!(%error, "cannot set the timer slack; arrival-rate waits spin longer");
    }
}

/// Waits for deadlines precisely; one per scheduling loop.
///
/// It keeps its thread sleep across calls for the same deadline, so a caller that `select!`s
/// on [`Pacer::sleep_until`] against other events (and so drops and re-creates the future)
/// does not start a second sleep.
#[derive(Default)]
pub(crate) struct Pacer {
    nap: Option<(Instant, JoinHandle<()>)>,
}

impl Pacer {
    /// Returns at `deadline` (within tens of microseconds on an idle runtime), never before.
    /// Cancel-safe.
    pub(crate) async fn sleep_until(&mut self, deadline: Instant) {
        if let Some(coarse) = deadline.checked_sub(COARSE_MARGIN)
            && coarse > Instant::now()
        {
            tokio::time::sleep_until(coarse).await;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining > SPIN_WINDOW {
            if !matches!(&self.nap, Some((d, _)) if *d == deadline) {
                let nap = remaining - SPIN_WINDOW;
                let handle = tokio::task::spawn_blocking(move || std::thread::sleep(nap));
                self.nap = Some((deadline, handle));
            }
            if let Some((_, handle)) = &mut self.nap {
                // A failed nap (the runtime is shutting down) only makes the wait less precise.
                let _ = handle.await;
            }
            self.nap = None;
        }
        // The rest against the system clock: tokio's stands still under a paused test clock.
        let spin_until =
            std::time::Instant::now() + deadline.saturating_duration_since(Instant::now());
        while std::time::Instant::now() < spin_until {
            tokio::task::yield_now().await;
        }
        // On a real clock the deadline has passed and this is skipped; a paused test clock did
        // not move while we spun, so let it reach the deadline.
        if Instant::now() < deadline {
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Never early, whatever the distance: far (coarse + nap + spin), within the nap range,
    /// within the spin window, and already past.
    #[tokio::test]
    async fn never_returns_before_the_deadline() {
        let mut pacer = Pacer::default();
        for micros in [5_000, 1_000, 300, 100, 10, 0] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            pacer.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline, "{micros} µs");
        }
        let past = Instant::now();
        pacer.sleep_until(past).await;
        assert!(Instant::now() >= past);
    }

    /// The agent runtime's threads sleep with a 1 ns slack, so the nap ends where it should.
    #[cfg(target_os = "linux")]
    #[allow(clippy::unwrap_used)]
    #[test]
    fn runtime_threads_get_a_tight_timer_slack() {
        let runtime = crate::engine::runtime().unwrap();
        let slack = runtime
            .block_on(async {
                tokio::task::spawn_blocking(|| rustix::thread::current_timer_slack().unwrap()).await
            })
            .unwrap();
        assert_eq!(slack, 1);
    }

    /// Under a paused clock (the executor's tests) the wait ends exactly at the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_reaches_the_deadline_exactly() {
        let mut pacer = Pacer::default();
        let start = Instant::now();
        for ms in [10, 11, 50] {
            let deadline = start + Duration::from_millis(ms);
            pacer.sleep_until(deadline).await;
            assert_eq!(Instant::now(), deadline);
        }
    }
}
