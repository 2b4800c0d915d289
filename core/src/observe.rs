//! What the system under test measured during a run, as Prometheus saw it: the results of the
//! `spec.observe.prometheus` queries over the run's window. Plain data shared by the summary
//! document, the report, `prom(NAME)` thresholds and `volley compare`; the queries themselves
//! are run by the `volley-observe` crate.

use serde::{Deserialize, Serialize};
use volley_crds::spec::PrometheusQuery;
use volley_crds::status::PrometheusResult;

/// The run's load window in Unix milliseconds: from the common start (after the start barrier
/// and setup) to the end of the merged data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// When the load started.
    pub start_unix_ms: u64,
    /// When the load ended.
    pub end_unix_ms: u64,
}

impl Window {
    /// The window's length in milliseconds (zero for a reversed window).
    pub fn length_ms(&self) -> u64 {
        self.end_unix_ms.saturating_sub(self.start_unix_ms)
    }
}

/// The Prometheus queries' results for one run: in `summary.json` as `prometheus`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The window the queries covered.
    pub window: Window,
    /// One result per query, in the spec's order.
    pub results: Vec<PrometheusResult>,
    /// The `series: true` queries over the window, for the report's charts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<ObservedSeries>,
}

impl Observation {
    /// The results of queries that could not be run at all, each failed with `why`.
    pub fn unavailable(queries: &[PrometheusQuery], window: Window, why: &str) -> Observation {
        Observation {
            window,
            results: queries
                .iter()
                .map(|q| PrometheusResult {
                    name: q.name.clone(),
                    query: q.query.clone(),
                    value: None,
                    error: Some(why.to_string()),
                })
                .collect(),
            series: Vec::new(),
        }
    }

    /// The value of query `name`, or why there is none (the query's error, or that no query
    /// of that name ran).
    pub fn value(&self, name: &str) -> Result<f64, String> {
        match self.results.iter().find(|r| r.name == name) {
            None => Err(format!("no Prometheus query named {name} ran")),
            Some(r) => match (r.value, &r.error) {
                (Some(v), _) => Ok(v),
                (None, Some(e)) => Err(e.clone()),
                (None, None) => Err("no data".to_string()),
            },
        }
    }
}

/// One query sampled over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSeries {
    /// The query's name.
    pub name: String,
    /// Seconds between samples.
    pub step_seconds: f64,
    /// The samples, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<ObservedPoint>,
    /// Why there are no samples, when the range query failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One sample of an [`ObservedSeries`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedPoint {
    /// Seconds since the window's start.
    pub t: f64,
    /// The value.
    pub v: f64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn result(name: &str, value: Option<f64>, error: Option<&str>) -> PrometheusResult {
        PrometheusResult {
            name: name.into(),
            query: "q".into(),
            value,
            error: error.map(String::from),
        }
    }

    #[test]
    fn a_value_or_why_there_is_none() {
        let o = Observation {
            results: vec![
                result("depth", Some(3.0), None),
                result("p95", None, Some("Prometheus timed out after 10s")),
                result("empty", None, None),
            ],
            ..Observation::default()
        };
        assert_eq!(o.value("depth"), Ok(3.0));
        assert_eq!(
            o.value("p95"),
            Err("Prometheus timed out after 10s".to_string())
        );
        assert_eq!(o.value("empty"), Err("no data".to_string()));
        assert_eq!(
            o.value("other"),
            Err("no Prometheus query named other ran".to_string())
        );
    }
}
