//! The pause between retries of a step (HTTP or WebSocket): exponential from `retry.backoff`,
//! capped, so a failing target is not hammered and a long run is not stalled.

use std::time::Duration;

/// Longest pause between retries, unless `retry.backoff` itself is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The pause before retry number `attempt` (1-based: after the first attempt): `base`,
/// doubled each time, capped at 10 s (or `base` if that is longer).
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(MAX_BACKOFF.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(100), 1), ms(100));
        assert_eq!(backoff(ms(100), 2), ms(200));
        assert_eq!(backoff(ms(100), 4), ms(800));
        assert_eq!(backoff(ms(100), 10), MAX_BACKOFF);
        assert_eq!(backoff(ms(100), u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(30), 3), Duration::from_secs(30));
    }
}
