//! A step's custom metrics (`metrics:`): compiled once per run, then read from each response
//! the step judges, the same response its checks and extractors see (the last attempt of a
//! retried step, the last poll of an `until` step). One step execution gives one observation per
//! metric; a request that was never sent (blocked, or not renderable) gives none, and one that
//! got no response gives "missing".
//!
//! The values are taken with the step's extraction machinery ([`CompiledExtractor`]: JSON path,
//! header, regex) and turned into numbers by [`Reading::parse`]; recording and merging are
//! `volley_core::metrics::custom`'s. A `websocket` step reads them from the message its checks
//! judge, with the handshake response's headers.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use volley_core::metrics::custom::{
    CustomMetrics, Observation, PLAIN_SCALE, Reading, time_unit_micros,
};
use volley_crds::spec::{self, ValueSource};

use crate::extract::{CompiledExtractor, Received};
use crate::render::TemplateCompiler;
use crate::step_error::StepError;

/// A step's custom metrics, ready to read responses.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledCustomMetrics {
    metrics: Vec<(Arc<str>, Reader)>,
}

/// How one metric reads a response.
#[derive(Clone, Debug)]
enum Reader {
    /// A number times `scale` (µs per unit for time trends, 1000 for plain numbers).
    Trend {
        source: CompiledExtractor,
        scale: f64,
    },
    /// Adds the number read.
    CounterAdd(CompiledExtractor),
    /// Adds 1 when the value is there (and equals `equals`, if set).
    CounterWhen {
        source: CompiledExtractor,
        equals: Option<String>,
    },
    /// A reading of a number.
    Gauge(CompiledExtractor),
}

/// What one step execution observed: one entry per custom metric of the step (none for a
/// step without `metrics`, which allocates nothing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed(Vec<(Arc<str>, Observation)>);

impl Observed {
    /// Records every observation into a step's custom metrics.
    pub fn record_into(&self, m: &mut CustomMetrics) {
        m.record_all(self.0.iter().map(|(name, o)| (&**name, o)));
    }

    /// The observations, by metric name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Observation)> {
        self.0.iter().map(|(name, o)| (&**name, o))
    }
}

impl CompiledCustomMetrics {
    /// Compiles a step's `metrics` list; errors name the field (`metrics[2].trend.jsonPath`).
    pub(crate) fn compile(
        metrics: &[spec::CustomMetric],
        compiler: &TemplateCompiler<'_>,
    ) -> Result<CompiledCustomMetrics, StepError> {
        let source = |field: String, src: ValueSource| {
            let extractor = spec::Extractor {
                json_path: src.json_path,
                header: src.header,
                cookie: None,
                regex: src.regex,
            };
            CompiledExtractor::compile_at(&field, &extractor, compiler)
        };
        let mut out = Vec::with_capacity(metrics.len());
        for (i, m) in metrics.iter().enumerate() {
            let field = format!("metrics[{i}]");
            let reader = match (&m.trend, &m.counter, &m.gauge) {
                (Some(t), None, None) => Reader::Trend {
                    source: source(format!("{field}.trend"), t.source())?,
                    scale: t
                        .unit
                        .as_deref()
                        .and_then(time_unit_micros)
                        .unwrap_or(PLAIN_SCALE),
                },
                (None, Some(c), None) => match &c.when {
                    Some(when) => Reader::CounterWhen {
                        source: source(format!("{field}.counter.when"), when.source())?,
                        equals: when.equals.clone(),
                    },
                    None => Reader::CounterAdd(source(format!("{field}.counter"), c.source())?),
                },
                (None, None, Some(g)) => {
                    Reader::Gauge(source(format!("{field}.gauge"), g.clone())?)
                }
                _ => {
                    return Err(
                        compiler.invalid(&field, "set exactly one of trend, counter, gauge")
                    );
                }
            };
            out.push((Arc::from(m.name.as_str()), reader));
        }
        Ok(CompiledCustomMetrics { metrics: out })
    }

    /// Whether any metric reads the body (so the step must keep it).
    pub(crate) fn needs_body(&self) -> bool {
        self.metrics.iter().any(|(_, r)| match r {
            Reader::Trend { source, .. }
            | Reader::CounterAdd(source)
            | Reader::CounterWhen { source, .. }
            | Reader::Gauge(source) => source.needs_body(),
        })
    }

    /// Reads every metric from `response` (`None`: the request got no response, so every
    /// value is missing).
    pub(crate) fn observe(&self, response: Option<&Received>) -> Observed {
        if self.metrics.is_empty() {
            return Observed::default();
        }
        let at_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Observed(
            self.metrics
                .iter()
                .map(|(name, reader)| (name.clone(), reader.read(response, at_us)))
                .collect(),
        )
    }
}

impl Reader {
    fn read(&self, response: Option<&Received>, at_us: u64) -> Observation {
        let value = |source: &CompiledExtractor| response.and_then(|r| source.extract(r));
        match self {
            Reader::Trend { source, scale } => {
                Observation::Trend(Reading::parse(value(source).as_deref(), *scale))
            }
            Reader::CounterAdd(source) => {
                Observation::Counter(Reading::parse(value(source).as_deref(), PLAIN_SCALE))
            }
            Reader::CounterWhen { source, equals } => {
                let reading = match value(source) {
                    None => Reading::Missing,
                    Some(v) if equals.as_deref().is_none_or(|e| e == v) => Reading::Value(1000),
                    Some(_) => Reading::Value(0),
                };
                Observation::Counter(reading)
            }
            Reader::Gauge(source) => Observation::Gauge {
                at_us,
                reading: Reading::parse(value(source).as_deref(), PLAIN_SCALE),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    fn no_env(_: &str) -> Result<String, std::env::VarError> {
        Err(std::env::VarError::NotPresent)
    }

    fn compile(yaml: &str) -> Result<CompiledCustomMetrics, StepError> {
        let metrics: Vec<spec::CustomMetric> = serde_norway::from_str(yaml).unwrap();
        CompiledCustomMetrics::compile(&metrics, &TemplateCompiler::new("s", &no_env))
    }

    fn response(body: &str, depth: Option<&str>) -> Received {
        let mut headers = HeaderMap::new();
        if let Some(d) = depth {
            headers.insert("x-queue-depth", HeaderValue::from_str(d).unwrap());
        }
        Received::new(StatusCode::OK, headers, body.as_bytes().to_vec(), false)
    }

    const METRICS: &str = r#"
- {name: lat, trend: {jsonPath: "$.latency_ms", unit: ms}}
- {name: tokens, trend: {regex: "tokens=(\\d+)"}}
- {name: crisis, counter: {when: {jsonPath: "$.crisis", equals: true}}}
- {name: cost, counter: {jsonPath: "$.cost"}}
- {name: depth, gauge: {header: X-Queue-Depth}}
"#;

    fn values(o: &Observed) -> Vec<(String, Observation)> {
        o.iter().map(|(n, o)| (n.to_owned(), *o)).collect()
    }

    #[test]
    fn every_kind_reads_its_value_or_says_why_not() {
        let m = compile(METRICS).unwrap();
        assert!(m.needs_body());
        let o = m.observe(Some(&response(
            r#"{"latency_ms": 12.5, "crisis": true, "cost": 0.25, "note": "tokens=42"}"#,
            Some("7"),
        )));
        let gauge_at = match o.iter().last().unwrap().1 {
            Observation::Gauge { at_us, .. } => *at_us,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            values(&o),
            vec![
                ("lat".into(), Observation::Trend(Reading::Value(12_500))),
                ("tokens".into(), Observation::Trend(Reading::Value(42_000))),
                ("crisis".into(), Observation::Counter(Reading::Value(1000))),
                ("cost".into(), Observation::Counter(Reading::Value(250))),
                (
                    "depth".into(),
                    Observation::Gauge {
                        at_us: gauge_at,
                        reading: Reading::Value(7000)
                    }
                ),
            ]
        );
        // Not numbers, not matching, absent.
        let o = m.observe(Some(&response(
            r#"{"latency_ms": "fast", "crisis": false, "cost": -1}"#,
            Some("lots"),
        )));
        let readings: Vec<Reading> = o
            .iter()
            .map(|(_, o)| match o {
                Observation::Trend(r) | Observation::Counter(r) => *r,
                Observation::Gauge { reading, .. } => *reading,
            })
            .collect();
        assert_eq!(
            readings,
            [
                Reading::Invalid,
                Reading::Missing,
                Reading::Value(0),
                Reading::Invalid,
                Reading::Invalid
            ]
        );
        // No response at all: everything is missing.
        assert!(m.observe(None).iter().all(|(_, o)| matches!(
            o,
            Observation::Trend(Reading::Missing)
                | Observation::Counter(Reading::Missing)
                | Observation::Gauge {
                    reading: Reading::Missing,
                    ..
                }
        )));
        // A body without the header a gauge reads: that one is missing.
        let message = Received::new(
            StatusCode::OK,
            HeaderMap::new(),
            br#"{"latency_ms": 3}"#.to_vec(),
            false,
        );
        let o = m.observe(Some(&message));
        assert_eq!(values(&o)[0].1, Observation::Trend(Reading::Value(3000)));
        let mut into = CustomMetrics::default();
        o.record_into(&mut into);
        assert_eq!(into.metrics["depth"].faults().missing, 1);
    }

    #[test]
    fn no_metrics_cost_nothing_and_bad_sources_name_their_field() {
        let none = compile("[]").unwrap();
        assert!(!none.needs_body());
        assert_eq!(none.observe(None), Observed::default());
        for (yaml, needle) in [
            (
                r#"[{name: a, trend: {jsonPath: "x["}}]"#,
                "metrics[0].trend.jsonPath",
            ),
            (
                r#"[{name: a, gauge: {header: "a b"}}]"#,
                "metrics[0].gauge.header",
            ),
            (
                r#"[{name: a, counter: {when: {regex: "("}}}]"#,
                "metrics[0].counter.when.regex",
            ),
            (
                "[{name: a}]",
                "metrics[0]: set exactly one of trend, counter, gauge",
            ),
        ] {
            let err = compile(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
