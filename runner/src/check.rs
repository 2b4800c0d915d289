//! Checks: conditions a response must meet, each counted as passed or failed.
//!
//! Each condition that is set counts once per step execution: `status`, `bodyContains`,
//! `jsonPath` (exists, or equals), `maxDuration`. Without a response (connection error or
//! timeout) every condition counts as failed, so a `checks > 99%` threshold notices a dead
//! target. The default "2xx or 3xx" status rule is not a check: without `check.status`, a 4xx
//! or 5xx is reported as a status error (kinds `4xx`/`5xx`), not counted in the checks rate.

use std::time::Duration;

use serde_json_path::JsonPath;
use volley_crds::spec::{self, ErrorKind};

use crate::extract::{Received, compile_json_path, json_text};
use crate::render::TemplateCompiler;
use crate::step_error::StepError;

/// The compiled `check` of a step (empty when the step has none).
#[derive(Clone, Debug, Default)]
pub(crate) struct Checks {
    /// Accepted statuses; empty means "any 2xx or 3xx" and is then not a counted condition.
    status: Vec<u16>,
    /// A literal substring search, compiled as an escaped regex for its fast literal search.
    body_contains: Option<regex::bytes::Regex>,
    /// A JSON path that must exist, or equal a text.
    json: Option<(JsonPath, Option<String>)>,
    max_duration: Option<Duration>,
}

/// Passed and failed check conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CheckTally {
    pub(crate) passed: u32,
    pub(crate) failed: u32,
}

impl Checks {
    /// Compiles a step's `check`.
    pub(crate) fn compile(
        check: Option<&spec::Check>,
        compiler: &TemplateCompiler<'_>,
    ) -> Result<Checks, StepError> {
        let Some(check) = check else {
            return Ok(Checks::default());
        };
        if let Some(code) = check.status.iter().find(|c| !(100..=999).contains(*c)) {
            return Err(
                compiler.invalid("check.status", format!("{code} is not an HTTP status code"))
            );
        }
        let body_contains = match &check.body_contains {
            Some(text) => Some(
                regex::bytes::Regex::new(&regex::escape(text))
                    .map_err(|e| compiler.invalid("check.bodyContains", e.to_string()))?,
            ),
            None => None,
        };
        let json = match (&check.json_path, &check.equals) {
            (Some(path), equals) => Some((
                compile_json_path(path, "check.jsonPath", compiler)?,
                equals.clone(),
            )),
            (None, Some(_)) => {
                return Err(compiler.invalid("check.equals", "`equals` needs `jsonPath`"));
            }
            (None, None) => None,
        };
        Ok(Checks {
            status: check.status.clone(),
            body_contains,
            json,
            max_duration: check.max_duration.map(|d| d.get()),
        })
    }

    /// Number of conditions counted per step execution.
    pub(crate) fn conditions(&self) -> u32 {
        u32::from(!self.status.is_empty())
            + u32::from(self.body_contains.is_some())
            + u32::from(self.json.is_some())
            + u32::from(self.max_duration.is_some())
    }

    /// True when a condition reads the body.
    pub(crate) fn needs_body(&self) -> bool {
        self.body_contains.is_some() || self.json.is_some()
    }

    /// The error a status is by itself: 4xx and 5xx are errors unless `check.status` lists
    /// them (then e.g. an expected 404 is a success).
    pub(crate) fn status_error(&self, status: u16) -> Option<ErrorKind> {
        if self.status.contains(&status) {
            return None;
        }
        match status {
            400..=499 => Some(ErrorKind::Status4xx),
            500.. => Some(ErrorKind::Status5xx),
            _ => None,
        }
    }

    /// Evaluates every condition; `elapsed` is what `maxDuration` is compared with.
    pub(crate) fn evaluate(&self, response: Option<&Received>, elapsed: Duration) -> CheckTally {
        let Some(response) = response else {
            return CheckTally {
                passed: 0,
                failed: self.conditions(),
            };
        };
        let mut tally = CheckTally::default();
        let mut count = |ok: bool| {
            if ok {
                tally.passed += 1;
            } else {
                tally.failed += 1;
            }
        };
        if !self.status.is_empty() {
            count(self.status.contains(&response.status.as_u16()));
        }
        if let Some(needle) = &self.body_contains {
            count(needle.is_match(&response.body));
        }
        if let Some((path, equals)) = &self.json {
            let found = response.json_first(path);
            count(match (found, equals) {
                (Some(value), Some(want)) => json_text(value) == want.as_str(),
                (Some(_), None) => true,
                (None, _) => false,
            });
        }
        if let Some(max) = self.max_duration {
            count(elapsed <= max);
        }
        tally
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    use super::*;

    fn no_env(_: &str) -> Result<String, std::env::VarError> {
        Err(std::env::VarError::NotPresent)
    }

    fn checks(check: spec::Check) -> Checks {
        Checks::compile(Some(&check), &TemplateCompiler::new("s", &no_env)).unwrap()
    }

    fn response(status: u16, body: &str) -> Received {
        Received::new(
            StatusCode::from_u16(status).unwrap(),
            HeaderMap::new(),
            body.as_bytes().to_vec(),
            false,
        )
    }

    #[test]
    fn status_errors_respect_the_status_list() {
        let none = Checks::default();
        assert_eq!(none.status_error(200), None);
        assert_eq!(none.status_error(302), None);
        assert_eq!(none.status_error(404), Some(ErrorKind::Status4xx));
        assert_eq!(none.status_error(503), Some(ErrorKind::Status5xx));
        let expect_404 = checks(spec::Check {
            status: vec![404],
            ..Default::default()
        });
        assert_eq!(expect_404.status_error(404), None);
        assert_eq!(expect_404.status_error(400), Some(ErrorKind::Status4xx));
        assert_eq!(expect_404.status_error(200), None);
        assert_eq!(none.conditions(), 0);
        assert_eq!(expect_404.conditions(), 1);
    }

    #[test]
    fn every_condition_counts() {
        let c = checks(spec::Check {
            status: vec![200, 201],
            body_contains: Some("\"ok\"".into()),
            json_path: Some("$.n".into()),
            equals: Some("3".into()),
            max_duration: Some(volley_crds::Duration::from_millis(100)),
        });
        assert_eq!(c.conditions(), 4);
        assert!(c.needs_body());
        let fast = Duration::from_millis(10);
        let slow = Duration::from_millis(101);
        assert_eq!(
            c.evaluate(Some(&response(200, r#"{"s":"ok","n":3}"#)), fast),
            CheckTally {
                passed: 4,
                failed: 0
            }
        );
        assert_eq!(
            c.evaluate(Some(&response(202, r#"{"s":"no","n":"3"}"#)), slow),
            // "3" (a string) equals "3" as text.
            CheckTally {
                passed: 1,
                failed: 3
            }
        );
        assert_eq!(
            c.evaluate(None, fast),
            CheckTally {
                passed: 0,
                failed: 4
            }
        );
    }

    #[test]
    fn json_path_exists_and_equals_as_text() {
        let exists = checks(spec::Check {
            json_path: Some("$.items[0]".into()),
            ..Default::default()
        });
        assert_eq!(
            exists
                .evaluate(Some(&response(200, r#"{"items":[{}]}"#)), Duration::ZERO)
                .passed,
            1
        );
        assert_eq!(
            exists
                .evaluate(Some(&response(200, r#"{"items":[]}"#)), Duration::ZERO)
                .failed,
            1
        );
        for (body, equals, ok) in [
            (r#"{"v":"done"}"#, "done", true),
            (r#"{"v":"done"}"#, "\"done\"", false),
            (r#"{"v":true}"#, "true", true),
            (r#"{"v":1.5}"#, "1.5", true),
            (r#"{"v":{"a":1}}"#, r#"{"a":1}"#, true),
            (r#"{"v":null}"#, "null", true),
            ("not json", "x", false),
        ] {
            let c = checks(spec::Check {
                json_path: Some("$.v".into()),
                equals: Some(equals.into()),
                ..Default::default()
            });
            let t = c.evaluate(Some(&response(200, body)), Duration::ZERO);
            assert_eq!(t.passed == 1, ok, "{body} vs {equals}");
        }
    }

    #[test]
    fn compile_errors() {
        let c = TemplateCompiler::new("s", &no_env);
        for (check, needle) in [
            (
                spec::Check {
                    equals: Some("x".into()),
                    ..Default::default()
                },
                "check.equals",
            ),
            (
                spec::Check {
                    json_path: Some("nope".into()),
                    ..Default::default()
                },
                "check.jsonPath",
            ),
            (
                spec::Check {
                    status: vec![42],
                    ..Default::default()
                },
                "check.status",
            ),
        ] {
            let msg = Checks::compile(Some(&check), &c).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
        }
    }
}
