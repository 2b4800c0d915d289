//! A timer precise to tens of microseconds, for the arrival-rate schedule.
//!
//! Tokio's timer wheel has 1 ms slots and rounds every deadline *up* to the next slot, so an
//! iteration woken by `sleep_until(due)` starts up to ~1 ms after its slot (about 1.4 ms at p99
//! measured at 200/s). Latency "from the schedule" would then measure our timer, not the
//! server. [`Pacer::sleep_until`] gets within tens of microseconds instead, in three stages:
//!
//! 1. while more than [`COARSE_MARGIN`] away: tokio's timer, which costs nothing while waiting;
//! 2. down to [`SPIN_WINDOW`] before the deadline (Linux): a `timerfd` in the runtime's own
//!    epoll set. The kernel fires it on time (a timerfd's hrtimer has no slack) and the runtime
//!    thread wakes from the `epoll_wait` it was in anyway: no other thread, no hand-off.
//!    Elsewhere this stage is tokio's timer too, and waits are as precise as it is;
//! 3. the last stretch: yielding to the runtime in a loop until the deadline passes, so other
//!    tasks (iterations in flight) keep running while we wait.
//!
//! The cost is a `timerfd_settime` per deadline and at most [`SPIN_WINDOW`] of yielding per
//! iteration.
//!
//! # High rates: staying awake
//! When iterations are due at most [`BUSY_GAP`] apart the pacer does not sleep at all: it
//! yields through the whole gap ([`Pacer::set_gap`]). Sleeping that briefly saves almost no
//! CPU, and every sleep lets the CPU go idle, from which it must then wake for the next
//! iteration and for every response: on a virtual machine that wake-up costs tens of
//! microseconds of CPU and adds as much to each measured latency. Measured at 20,000/s on one
//! core (`benches/throughput.sh`'s case, the two builds in one session): latency p50 from the
//! schedule 0.04-0.05 ms awake against 0.21-0.25 ms with the 20 µs window; dropped iterations
//! 0 in eight runs of nine awake (658 in the ninth) against 35-163 in three runs of five; for
//! 10.0 against 9.5-9.7 CPU-s. At 5,000/s staying awake cost 12% more CPU and bought nothing,
//! hence the threshold.
//!
//! # Why not a thread nap
//! The stage 2 before this one was a `std::thread::sleep` on the blocking pool (with a 1 ns
//! timer slack), awaited from the runtime. Every wait then cost two thread hand-offs, and at
//! 5,000/s a profile had the kernel's task switching (`finish_task_switch`, futex waits of the
//! pool's threads) at the top. Measured side by side (`benches/throughput.sh`, one core, the
//! two builds in one session): at 5,000/s 4.1-4.5 CPU-s for 50,000 iterations against
//! 4.75-5.2 for the nap; at 200/s iterations started 150 µs late at p99 (68 µs at p50)
//! against 215 µs (101 µs). Most of what is left there is the virtual machine waking its idle
//! CPU: with the CPU kept out of idle both timers start iterations about 70 µs late at p99
//! and 20 µs at p50.

use std::time::Duration;

use tokio::time::Instant;

/// How far before the deadline tokio's 1 ms timer hands over to the precise stages: one timer
/// slot (the rounding) plus room for a busy runtime to wake late.
pub(crate) const COARSE_MARGIN: Duration = Duration::from_micros(2_000);

/// How far before the deadline the timerfd hands over to yielding: the wake-up of the runtime
/// thread and its turn through the ready tasks. Yielding costs CPU for as long as it lasts (an
/// `epoll_wait` per turn when nothing else runs), once per iteration: with 150 µs the
/// 5,000/s case spent most of its CPU yielding.
pub(crate) const SPIN_WINDOW: Duration = Duration::from_micros(20);

/// Iterations due at most this far apart keep the runtime awake between them (see the module
/// documentation): 60 µs is a rate of about 16,700/s on one runner.
pub(crate) const BUSY_GAP: Duration = Duration::from_micros(60);

/// How far before a deadline to stop sleeping and yield, when iterations are `gap` apart.
fn spin_window(gap: Duration) -> Duration {
    if gap <= BUSY_GAP {
        gap.max(SPIN_WINDOW)
    } else {
        SPIN_WINDOW
    }
}

/// Waits for deadlines precisely; one per scheduling loop.
///
/// It keeps its timer armed across calls for the same deadline, so a caller that `select!`s
/// on [`Pacer::sleep_until`] against other events (and so drops and re-creates the future)
/// does not re-arm it each time.
pub(crate) struct Pacer {
    /// The precise stage's timer: not made yet, made, or `Some(None)` where there is none
    /// (not Linux, or the kernel refused one).
    precise: Option<Option<timerfd::TimerFd>>,
    /// How far before a deadline the pacer stops sleeping and yields ([`spin_window`]).
    spin: Duration,
}

impl Default for Pacer {
    /// A pacer that sleeps to [`SPIN_WINDOW`] before each deadline until told the gap.
    fn default() -> Self {
        Pacer {
            precise: None,
            spin: SPIN_WINDOW,
        }
    }
}

impl Pacer {
    /// Tells the pacer how far apart iterations are due now, so that at gaps of up to
    /// [`BUSY_GAP`] it yields through them instead of sleeping.
    pub(crate) fn set_gap(&mut self, gap: Duration) {
        self.spin = spin_window(gap);
    }

    /// Returns at `deadline` (within tens of microseconds on an idle runtime on Linux), never
    /// before. Cancel-safe.
    pub(crate) async fn sleep_until(&mut self, deadline: Instant) {
        if let Some(coarse) = deadline.checked_sub(COARSE_MARGIN)
            && coarse > Instant::now()
        {
            tokio::time::sleep_until(coarse).await;
        }
        let spin = self.spin;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining > spin {
            let failed = match self.precise.get_or_insert_with(timerfd::TimerFd::new) {
                // No precise timer here: tokio's is as good as it gets.
                None => {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
                Some(timer) => tokio::select! {
                    // Under a paused test clock tokio's sleep is the one that ends, exactly at
                    // the deadline; on a real clock it ends a timer slot after the timerfd.
                    () = tokio::time::sleep_until(deadline) => return,
                    woke = timer.wait(deadline, remaining - spin) => woke.err(),
                },
            };
            if let Some(error) = failed {
                tracing::debug!(%error, "the precise timer failed; using tokio's");
                self.precise = Some(None);
            }
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

#[cfg(target_os = "linux")]
mod timerfd {
    //! A one-shot `timerfd` registered with the runtime's reactor.

    use std::io;
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    use tokio::time::Instant;

    /// Registers the timerfd with the runtime's reactor.
    ///
    /// Tokio 1.54 deprecated the safe registration in favour of an `unsafe` one, whose
    /// requirement is that the fd stays open and unchanged while registered. An `OwnedFd`
    /// moved into the `AsyncFd` meets it: nothing else holds it, and `AsyncFd` deregisters it
    /// before dropping it. The workspace forbids `unsafe`, so the safe, deprecated call stays.
    #[allow(deprecated)]
    fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
        AsyncFd::with_interest(fd, Interest::READABLE)
    }

    /// A monotonic timerfd and the deadline it is armed for.
    pub(crate) struct TimerFd {
        fd: AsyncFd<OwnedFd>,
        armed_for: Option<Instant>,
    }

    impl TimerFd {
        /// A new timer, or `None` (logged) when the kernel or the runtime refuses one.
        pub(crate) fn new() -> Option<TimerFd> {
            let made = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )
            .map_err(io::Error::from)
            .and_then(register);
            match made {
                Ok(fd) => Some(TimerFd {
                    fd,
                    armed_for: None,
                }),
                Err(error) => {
                    tracing::debug!(%error, "no timerfd; arrival-rate waits use tokio's timer");
                    None
                }
            }
        }

        /// Waits until `after` from now, the wait for `deadline`; a timer already armed for
        /// that deadline is not re-armed (the caller's future may have been dropped and
        /// re-created since).
        pub(crate) async fn wait(&mut self, deadline: Instant, after: Duration) -> io::Result<()> {
            if self.armed_for != Some(deadline) {
                let value = Itimerspec {
                    it_interval: Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    // A zero value would disarm the timer instead of firing it.
                    it_value: Timespec {
                        tv_sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                        tv_nsec: i64::from(after.subsec_nanos().max(1)),
                    },
                };
                // Re-arming also resets an expiry nobody read.
                timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &value)?;
                self.armed_for = Some(deadline);
            }
            loop {
                let mut ready = self.fd.readable().await?;
                let mut expirations = [0u8; 8];
                match rustix::io::read(self.fd.get_ref(), &mut expirations) {
                    Ok(_) => {
                        self.armed_for = None;
                        return Ok(());
                    }
                    Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod timerfd {
    //! No timerfd off Linux: the precise stage is tokio's timer.

    use std::io;
    use std::time::Duration;

    use tokio::time::Instant;

    /// Never made.
    pub(crate) enum TimerFd {}

    impl TimerFd {
        /// None here.
        pub(crate) fn new() -> Option<TimerFd> {
            None
        }

        /// Never called: there is no value to call it on.
        pub(crate) async fn wait(&mut self, _: Instant, _: Duration) -> io::Result<()> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Never early, whatever the distance: far (coarse + timerfd + spin), within the timerfd
    /// range, within the spin window, and already past.
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

    /// The timerfd fires once per arming and never early; a wait dropped and re-created for
    /// the same deadline keeps the timer armed rather than starting over.
    #[cfg(target_os = "linux")]
    #[allow(clippy::unwrap_used)]
    #[tokio::test]
    async fn the_timerfd_fires_once_per_deadline_and_survives_a_dropped_wait() {
        let mut timer = timerfd::TimerFd::new().unwrap();
        let start = std::time::Instant::now();
        let deadline = Instant::now() + Duration::from_millis(20);
        let dropped = tokio::time::timeout(
            Duration::from_millis(1),
            timer.wait(deadline, Duration::from_millis(20)),
        )
        .await;
        assert!(dropped.is_err(), "fired early");
        // Asked again for the same deadline with a later `after`: the first arming stands.
        timer
            .wait(deadline, Duration::from_millis(500))
            .await
            .unwrap();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        assert!(waited < Duration::from_millis(500), "re-armed: {waited:?}");
        // A new deadline arms it again.
        let again = std::time::Instant::now();
        timer
            .wait(
                deadline + Duration::from_millis(5),
                Duration::from_millis(5),
            )
            .await
            .unwrap();
        assert!(again.elapsed() >= Duration::from_millis(5));
    }

    /// Up to the busy gap the pacer yields through the whole gap (never less than the usual
    /// window); above it only the usual window.
    #[test]
    fn high_rates_keep_the_pacer_awake_through_the_gap() {
        let us = Duration::from_micros;
        assert_eq!(spin_window(Duration::ZERO), SPIN_WINDOW);
        assert_eq!(spin_window(us(50)), us(50));
        assert_eq!(spin_window(BUSY_GAP), BUSY_GAP);
        assert_eq!(spin_window(BUSY_GAP + us(1)), SPIN_WINDOW);
        assert_eq!(spin_window(Duration::from_secs(1)), SPIN_WINDOW);
    }

    /// A wait at a high rate never ends early either, and after the rate drops the pacer
    /// sleeps again rather than yielding through a long gap.
    #[tokio::test]
    async fn a_busy_pacer_is_never_early_either() {
        let mut pacer = Pacer::default();
        pacer.set_gap(Duration::from_micros(50));
        for _ in 0..100 {
            let deadline = Instant::now() + Duration::from_micros(50);
            pacer.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline);
        }
        pacer.set_gap(Duration::from_millis(5));
        assert_eq!(pacer.spin, SPIN_WINDOW);
        let deadline = Instant::now() + Duration::from_millis(5);
        pacer.sleep_until(deadline).await;
        assert!(Instant::now() >= deadline);
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
