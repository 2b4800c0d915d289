//! JUnit XML for CI servers (Jenkins, GitLab, GitHub test reporters): one `<testsuite>` per
//! LoadTest and one `<testcase>` per threshold, named with its scope, failing with a
//! `<failure>` that carries the actual value. A run that did not succeed for another reason
//! than its thresholds (a runner died, a timeout, an error) adds a `run` testcase with an
//! `<error>`, so such a run never shows green.
//!
//! The attributes are those of the common JUnit schema: `testsuites@{name,tests,failures,
//! errors,time}`, `testsuite@{name,tests,failures,errors,skipped,time}`, `testcase@{name,
//! classname,time}`, `failure@{message,type}`, `error@{message,type}`.

use std::fmt::Write as _;

use volley_crds::status::Phase;

use crate::{Summary, escape, outcome};

/// The reason a run ends with when thresholds failed (then the threshold testcases say it).
const THRESHOLDS_FAILED: &str = "ThresholdsFailed";

/// The report as JUnit XML.
pub fn render(s: &Summary) -> String {
    let run_error = match s.phase {
        Phase::Succeeded => false,
        Phase::Failed => s.reason.as_deref() != Some(THRESHOLDS_FAILED),
        _ => true,
    };
    // Skipped thresholds (a baseline threshold without a baseline) are JUnit's skipped cases.
    let skipped = s.thresholds.iter().filter(|t| t.skipped.is_some()).count();
    let failures = s
        .thresholds
        .iter()
        .filter(|t| !t.passed && t.skipped.is_none())
        .count();
    let errors = usize::from(run_error);
    let tests = s.thresholds.len() + errors;
    let time = format!("{:.3}", s.duration_seconds);
    let name = escape(&s.name);
    let classname = escape(&format!("volley.{}", s.name));

    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"volley\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time}\">"
    );
    out.push_str("    <properties>\n");
    let mut props = vec![
        ("phase", format!("{:?}", s.phase)),
        ("outcome", outcome(s).to_string()),
        ("runners", s.runners.to_string()),
        ("requests", s.metrics.requests.to_string()),
        ("failures", s.metrics.failures.to_string()),
        ("rps", format!("{:.3}", s.metrics.rps)),
        ("p95_ms", format!("{}", s.metrics.latency_ms.p95)),
    ];
    if let Some(reason) = &s.reason {
        props.push(("reason", reason.clone()));
    }
    for (k, v) in props {
        let _ = writeln!(
            out,
            "      <property name=\"{k}\" value=\"{}\"/>",
            escape(&v)
        );
    }
    out.push_str("    </properties>\n");
    for t in &s.thresholds {
        let case = escape(&format!("[{}] {}", t.scope, t.expr));
        if let Some(why) = &t.skipped {
            let _ = writeln!(
                out,
                "    <testcase name=\"{case}\" classname=\"{classname}\" time=\"{time}\">\n      <skipped message=\"{}\"/>\n    </testcase>",
                escape(why)
            );
        } else if t.passed {
            let _ = writeln!(
                out,
                "    <testcase name=\"{case}\" classname=\"{classname}\" time=\"{time}\"/>"
            );
        } else {
            let message = format!(
                "{} failed: actual {}{}",
                t.expr,
                t.actual,
                if t.aborted { " (aborted the run)" } else { "" }
            );
            let _ = writeln!(
                out,
                "    <testcase name=\"{case}\" classname=\"{classname}\" time=\"{time}\">\n      <failure message=\"{m}\" type=\"threshold\">scope: {scope}\nthreshold: {expr}\nactual: {actual}</failure>\n    </testcase>",
                m = escape(&message),
                scope = escape(&t.scope),
                expr = escape(&t.expr),
                actual = escape(&t.actual),
            );
        }
    }
    if run_error {
        let message = format!(
            "run {}: {}",
            outcome(s),
            s.message
                .as_deref()
                .or(s.reason.as_deref())
                .unwrap_or("no reason given")
        );
        let _ = writeln!(
            out,
            "    <testcase name=\"run\" classname=\"{classname}\" time=\"{time}\">\n      <error message=\"{m}\" type=\"{ty}\">{m}</error>\n    </testcase>",
            m = escape(&message),
            ty = escape(s.reason.as_deref().unwrap_or("RunFailed")),
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
