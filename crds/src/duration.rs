//! The duration type used by every time field of a LoadTest (`500ms`, `2s`, `5m`, `1h30m`).
//!
//! Manifests and the CRD schema accept one compact form, so what the API server admits is
//! exactly what Volley can parse: one or more `<integer><unit>` groups with units `us`, `ms`,
//! `s`, `m`, `h`, `d`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::shorten;

/// The regular expression the CRD schema enforces on duration strings.
pub const DURATION_PATTERN: &str = r"^([0-9]+(us|ms|s|m|h|d))+$";

/// A non-negative duration written as `500ms`, `2s`, `5m` or `1h30m`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}")]
pub struct DurationError {
    /// The text that was rejected.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Duration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of whole milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// The standard-library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// True for `0s`.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| DurationError {
            input: shorten(input, 64),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(err("it is empty; write e.g. 500ms, 2s, 5m or 1h30m"));
        }
        if input.starts_with('-') {
            return Err(err("durations cannot be negative"));
        }
        if !matches_compact_form(input) {
            return Err(err(
                "expected <number><unit> groups with units us, ms, s, m, h or d (e.g. 500ms, 2s, 1h30m)",
            ));
        }
        // humantime does the arithmetic (and overflow checks); the shape check above keeps the
        // accepted language identical to the CRD schema's pattern.
        humantime::parse_duration(input)
            .map(Self)
            .map_err(|e| err(&e.to_string()))
    }
}

/// Checks `([0-9]+(us|ms|s|m|h|d))+` without pulling in a regex engine.
fn matches_compact_form(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits_start {
            return false;
        }
        let rest = &s[i..];
        let unit_len = ["us", "ms", "s", "m", "h", "d"]
            .iter()
            .find(|u| rest.starts_with(*u) && !(**u == "m" && rest.starts_with("ms")))
            .map(|u| u.len());
        match unit_len {
            Some(n) => i += n,
            None => return false,
        }
    }
    true
}

impl fmt::Display for Duration {
    /// Renders in the same compact form the parser accepts, e.g. `1h30m`, `250ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_us = self.0.as_micros();
        if total_us == 0 {
            return f.write_str("0s");
        }
        let units: [(&str, u128); 6] = [
            ("d", 86_400_000_000),
            ("h", 3_600_000_000),
            ("m", 60_000_000),
            ("s", 1_000_000),
            ("ms", 1_000),
            ("us", 1),
        ];
        let mut rest = total_us;
        for (name, size) in units {
            let n = rest / size;
            if n > 0 {
                write!(f, "{n}{name}")?;
                rest -= n * size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> std::time::Duration {
        s.parse::<Duration>().unwrap().get()
    }

    #[test]
    fn parses_every_unit_and_combinations() {
        assert_eq!(d("250us"), std::time::Duration::from_micros(250));
        assert_eq!(d("500ms"), std::time::Duration::from_millis(500));
        assert_eq!(d("2s"), std::time::Duration::from_secs(2));
        assert_eq!(d("5m"), std::time::Duration::from_secs(300));
        assert_eq!(d("1h30m"), std::time::Duration::from_secs(5400));
        assert_eq!(d("1d"), std::time::Duration::from_secs(86_400));
        assert_eq!(d("1m30s500ms"), std::time::Duration::from_millis(90_500));
        assert_eq!(d("0s"), std::time::Duration::ZERO);
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        for bad in [
            "",
            "-5s",
            "5",
            "s",
            "5 s",
            "1.5s",
            "5min",
            "5 minutes",
            "1h 30m",
            "ms5",
            "5sec",
        ] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(!err.reason.is_empty(), "{bad}");
        }
        assert!(
            "-5s"
                .parse::<Duration>()
                .unwrap_err()
                .reason
                .contains("negative")
        );
    }

    #[test]
    fn rejects_overflow_instead_of_wrapping() {
        assert!("99999999999999999999999s".parse::<Duration>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "0s",
            "250us",
            "500ms",
            "2s",
            "5m",
            "1h30m",
            "1d2h3m4s5ms6us",
        ] {
            let parsed: Duration = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
            assert_eq!(parsed.to_string().parse::<Duration>().unwrap(), parsed);
        }
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
    }

    #[test]
    fn long_input_is_truncated_in_errors() {
        let long = "x".repeat(10_000);
        let err = long.parse::<Duration>().unwrap_err();
        assert!(err.to_string().len() < 300);
    }
}
