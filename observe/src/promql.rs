//! Filling a query with the run's window, and choosing the step of a range query.

use std::time::Duration;

use volley_core::observe::Window;

/// The most samples a `series: true` query keeps: one per second up to this, coarser for
/// longer runs, so a day-long soak's chart stays a few tens of kilobytes in the summary.
pub const MAX_SERIES_POINTS: u64 = 2_000;

/// `query` with `$__range` replaced by the window's length (`93412ms`, exact to the
/// millisecond; at least `1ms`), and `$__start` / `$__end` by its edges in Unix seconds with
/// milliseconds (`1767225600.250`, what PromQL's `@` modifier takes).
pub fn substitute(query: &str, window: Window) -> String {
    query
        .replace("$__range", &format!("{}ms", window.length_ms().max(1)))
        .replace("$__start", &unix_seconds(window.start_unix_ms))
        .replace("$__end", &unix_seconds(window.end_unix_ms))
}

/// Unix milliseconds as the seconds Prometheus reads: `1767225600.250`.
pub fn unix_seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The step of a window's range query: one second, or the whole seconds that keep it within
/// [`MAX_SERIES_POINTS`] samples.
pub fn series_step(window: Window) -> Duration {
    let seconds = window.length_ms().div_ceil(1000);
    Duration::from_secs(seconds.div_ceil(MAX_SERIES_POINTS).max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const WINDOW: Window = Window {
        start_unix_ms: 1_767_225_600_250,
        end_unix_ms: 1_767_225_693_662,
    };

    #[test]
    fn the_window_fills_the_placeholders_exactly() {
        assert_eq!(
            substitute("max_over_time(app_queue_depth[$__range])", WINDOW),
            "max_over_time(app_queue_depth[93412ms])"
        );
        assert_eq!(
            substitute("sum(x @ $__end) - sum(x @ $__start) + y[$__range]", WINDOW),
            "sum(x @ 1767225693.662) - sum(x @ 1767225600.250) + y[93412ms]"
        );
        // A query without placeholders is sent as written.
        assert_eq!(substitute("sum(up)", WINDOW), "sum(up)");
    }

    #[test]
    fn an_empty_window_is_still_a_valid_range() {
        let empty = Window {
            start_unix_ms: 5_000,
            end_unix_ms: 5_000,
        };
        assert_eq!(substitute("x[$__range]", empty), "x[1ms]");
        assert_eq!(unix_seconds(5), "0.005");
    }

    #[test]
    fn the_step_is_a_second_until_the_series_would_grow_past_its_bound() {
        assert_eq!(series_step(WINDOW), Duration::from_secs(1));
        let hour = Window {
            start_unix_ms: 0,
            end_unix_ms: 3_600_000,
        };
        assert_eq!(series_step(hour), Duration::from_secs(2));
        let day = Window {
            start_unix_ms: 0,
            end_unix_ms: 86_400_000,
        };
        assert_eq!(series_step(day), Duration::from_secs(44));
        assert!(86_400 / series_step(day).as_secs() <= MAX_SERIES_POINTS);
    }
}
