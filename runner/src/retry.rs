//! A step's retry policy (HTTP or WebSocket): how many attempts, on which error kinds, and the
//! pause between them, exponential from `retry.backoff` and capped, so a failing target is not
//! hammered and a long run is not stalled.

use std::time::Duration;

use volley_crds::spec::{ErrorKind, Retry};

/// Longest pause between retries, unless `retry.backoff` itself is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A step's `retry`, defaults resolved.
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    attempts: u32,
    on: Vec<ErrorKind>,
    backoff: Duration,
}

impl RetryPolicy {
    /// The policy of a step's `retry`: without one, a single attempt; `on` defaults to
    /// connect, timeout and 5xx.
    pub(crate) fn new(retry: Option<&Retry>) -> RetryPolicy {
        match retry {
            Some(retry) => RetryPolicy {
                attempts: retry.attempts.max(1),
                on: if retry.on.is_empty() {
                    vec![ErrorKind::Connect, ErrorKind::Timeout, ErrorKind::Status5xx]
                } else {
                    retry.on.clone()
                },
                backoff: retry.backoff.get(),
            },
            None => RetryPolicy {
                attempts: 1,
                on: Vec::new(),
                backoff: Duration::ZERO,
            },
        }
    }

    /// Whether attempt number `attempt` (1-based), which ended in `error`, is tried again.
    pub(crate) fn retries(&self, attempt: u32, error: ErrorKind) -> bool {
        attempt < self.attempts && self.on.contains(&error)
    }

    /// The pause before the retry that follows attempt number `attempt` (1-based).
    pub(crate) fn pause(&self, attempt: u32) -> Duration {
        backoff(self.backoff, attempt)
    }
}

/// The pause before retry number `attempt` (1-based: after the first attempt): `base`,
/// doubled each time, capped at 10 s (or `base` if that is longer).
fn backoff(base: Duration, attempt: u32) -> Duration {
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

    /// Without `retry` a step is tried once; with it, up to `attempts` times on the listed
    /// kinds (connect, timeout and 5xx when none are listed), pausing by the backoff.
    #[test]
    fn a_policy_retries_the_listed_kinds_up_to_its_attempts() {
        let once = RetryPolicy::new(None);
        assert!(!once.retries(1, ErrorKind::Connect));
        let retry = |on: Vec<ErrorKind>| Retry {
            attempts: 3,
            on,
            backoff: Duration::from_millis(50).into(),
        };
        let default = RetryPolicy::new(Some(&retry(Vec::new())));
        assert!(default.retries(1, ErrorKind::Status5xx));
        assert!(default.retries(2, ErrorKind::Timeout));
        assert!(
            !default.retries(3, ErrorKind::Connect),
            "the third attempt is the last"
        );
        assert!(!default.retries(1, ErrorKind::Check));
        let checks = RetryPolicy::new(Some(&retry(vec![ErrorKind::Check])));
        assert!(checks.retries(1, ErrorKind::Check));
        assert!(!checks.retries(1, ErrorKind::Connect));
        assert_eq!(checks.pause(2), Duration::from_millis(100));
    }
}
