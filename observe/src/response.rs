//! Mapping a Prometheus HTTP API answer (`/api/v1/query`, `/api/v1/query_range`) to what a
//! run reports: one value, or one series of samples, or a [`QueryError`] a person can act on.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use volley_core::observe::ObservedPoint;

/// How many series' labels a "several series" error names before it says "and N more".
const NAMED_SERIES: usize = 5;
/// The most series a `by` query keeps (in label-value order); the rest are counted.
pub const MAX_BY_VALUES: usize = 50;

/// Why a query has no value. The messages go into the status, the summary and the report, so
/// they name the server only by its address without credentials.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// No connection: the server is down, the name does not resolve, TLS failed.
    #[error("cannot reach Prometheus at {at}: {why}")]
    Unreachable {
        /// The server's address, without credentials.
        at: String,
        /// What failed.
        why: String,
    },
    /// The server did not answer within the timeout.
    #[error("Prometheus at {at} did not answer within {after}")]
    Timeout {
        /// The server's address, without credentials.
        at: String,
        /// The timeout, e.g. `10s`.
        after: String,
    },
    /// Prometheus answered with an error document (a parse error, a timeout of its own).
    #[error("Prometheus refused the query ({kind}): {message}")]
    Refused {
        /// Its `errorType`, e.g. `bad_data`.
        kind: String,
        /// Its `error`.
        message: String,
    },
    /// A non-success HTTP status without a Prometheus error document (a proxy, a 401).
    #[error("Prometheus answered HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The query matched nothing in the window.
    #[error("no data: the query returned no series")]
    NoData,
    /// The query's value is NaN, e.g. a rate or a quantile over no samples.
    #[error("no data: the query's value is NaN (e.g. a rate or quantile over no samples)")]
    NotANumber,
    /// The query's value is infinite.
    #[error("the query's value is {0}")]
    Infinite(String),
    /// Several series where one value was expected.
    #[error(
        "the query returned {count} series where one was expected: {labels}; aggregate them \
         (e.g. sum(...) or max(...)) or narrow the selector"
    )]
    SeveralSeries {
        /// How many.
        count: usize,
        /// The first few, as `name{label="value", ...}`.
        labels: String,
    },
    /// A `by` query's series without the label it reports by.
    #[error(
        "a series has no label {label} to report by: {series}; keep the label in the query's \
         result (e.g. sum by ({label}) (...))"
    )]
    MissingLabel {
        /// The `by` label.
        label: String,
        /// The series, as `name{label="value", ...}`.
        series: String,
    },
    /// A `by` query's two series with the same value of the label.
    #[error(
        "two series have {label}={value:?}: {series}; aggregate the others away \
         (e.g. sum by ({label}) (...))"
    )]
    DuplicateLabel {
        /// The `by` label.
        label: String,
        /// The value both have.
        value: String,
        /// The two series.
        series: String,
    },
    /// Not a Prometheus API answer.
    #[error("unexpected answer from Prometheus: {0}")]
    Malformed(String),
}

/// A `by` query's answer: each series' value (or why it has none) by its value of the label,
/// at most [`MAX_BY_VALUES`] in label-value order.
#[derive(Clone, Debug, PartialEq)]
pub struct ByValues {
    /// `(label value, value)`, ordered by label value.
    pub values: Vec<(String, Result<f64, QueryError>)>,
    /// How many series beyond the kept ones the query returned.
    pub more: usize,
}

/// The envelope of every API answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Value,
}

/// One series of a vector (`value`) or matrix (`values`) result.
#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// The value of an instant query's answer: `status` is the HTTP status, `body` the bytes. A
/// scalar, or a vector of exactly one series, has a value; anything else is an error.
pub fn instant_value(status: u16, body: &[u8]) -> Result<f64, QueryError> {
    let data = success_data(status, body)?;
    let value = match data.result_type.as_str() {
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| QueryError::Malformed(format!("scalar result: {e}")))?;
            v
        }
        "vector" => {
            let series = one_series(data.result)?;
            series
                .value
                .ok_or_else(|| QueryError::Malformed("vector sample without a value".into()))?
                .1
        }
        other => {
            return Err(QueryError::Malformed(format!(
                "result type {other} where an instant value was expected"
            )));
        }
    };
    sample_value(&value)
}

/// The values of an instant query's answer reported by `label`: one per series, keyed by its
/// value of the label. No series is [`QueryError::NoData`]; a series without the label, or two
/// with the same value of it, fail the whole answer (the values could not be told apart).
pub fn instant_values_by(status: u16, body: &[u8], label: &str) -> Result<ByValues, QueryError> {
    let data = success_data(status, body)?;
    if data.result_type != "vector" {
        return Err(QueryError::Malformed(format!(
            "result type {} where a vector was expected (a `by` query returns series)",
            data.result_type
        )));
    }
    let series: Vec<Series> = serde_json::from_value(data.result)
        .map_err(|e| QueryError::Malformed(format!("series list: {e}")))?;
    if series.is_empty() {
        return Err(QueryError::NoData);
    }
    let mut keyed: BTreeMap<String, &Series> = BTreeMap::new();
    for s in &series {
        let Some(value) = s.metric.get(label) else {
            return Err(QueryError::MissingLabel {
                label: label.to_string(),
                series: labelled(&s.metric),
            });
        };
        if let Some(other) = keyed.insert(value.clone(), s) {
            return Err(QueryError::DuplicateLabel {
                label: label.to_string(),
                value: value.clone(),
                series: format!("{}, {}", labelled(&other.metric), labelled(&s.metric)),
            });
        }
    }
    let more = keyed.len().saturating_sub(MAX_BY_VALUES);
    let values = keyed
        .into_iter()
        .take(MAX_BY_VALUES)
        .map(|(key, s)| {
            let value = match &s.value {
                Some((_, v)) => sample_value(v),
                None => Err(QueryError::Malformed(
                    "vector sample without a value".into(),
                )),
            };
            (key, value)
        })
        .collect();
    Ok(ByValues { values, more })
}

/// The samples of a range query's answer, as seconds since `start_seconds`: a matrix of
/// exactly one series (none is [`QueryError::NoData`]). NaN samples are left out.
pub fn range_points(
    status: u16,
    body: &[u8],
    start_seconds: f64,
) -> Result<Vec<ObservedPoint>, QueryError> {
    let data = success_data(status, body)?;
    if data.result_type != "matrix" {
        return Err(QueryError::Malformed(format!(
            "result type {} where a range was expected",
            data.result_type
        )));
    }
    let series = one_series(data.result)?;
    Ok(series
        .values
        .iter()
        .filter_map(|(t, v)| {
            let v = sample_value(v).ok()?;
            Some(ObservedPoint {
                t: ((t - start_seconds) * 1000.0).round() / 1000.0,
                v,
            })
        })
        .collect())
}

/// The `data` of a success answer, or the error the answer carries.
fn success_data(status: u16, body: &[u8]) -> Result<Data, QueryError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) if (200..300).contains(&status) => {
            return Err(QueryError::Malformed(format!("not JSON: {e}")));
        }
        Err(_) => {
            return Err(QueryError::Http {
                status,
                body: volley_crds::text::shorten(String::from_utf8_lossy(body).trim(), 200),
            });
        }
    };
    if envelope.status != "success" {
        return Err(QueryError::Refused {
            kind: envelope.error_type.unwrap_or_else(|| "error".into()),
            message: envelope.error.unwrap_or_else(|| "no message".into()),
        });
    }
    envelope
        .data
        .ok_or_else(|| QueryError::Malformed("a success without data".into()))
}

/// The only series of a vector or matrix result.
fn one_series(result: Value) -> Result<Series, QueryError> {
    let mut series: Vec<Series> = serde_json::from_value(result)
        .map_err(|e| QueryError::Malformed(format!("series list: {e}")))?;
    match series.len() {
        0 => Err(QueryError::NoData),
        1 => Ok(series.remove(0)),
        count => {
            let mut labels: Vec<String> = series
                .iter()
                .take(NAMED_SERIES)
                .map(|s| labelled(&s.metric))
                .collect();
            if count > NAMED_SERIES {
                labels.push(format!("and {} more", count - NAMED_SERIES));
            }
            Err(QueryError::SeveralSeries {
                count,
                labels: labels.join(", "),
            })
        }
    }
}

/// A series as Prometheus writes it: `name{label="value", ...}`, `{}` without labels.
fn labelled(metric: &BTreeMap<String, String>) -> String {
    let name = metric.get("__name__").map(String::as_str).unwrap_or("");
    let labels: Vec<String> = metric
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", labels.join(", "))
}

/// A sample's value (Prometheus sends numbers as strings: `"3"`, `"NaN"`, `"+Inf"`).
fn sample_value(text: &str) -> Result<f64, QueryError> {
    let v: f64 = text
        .parse()
        .map_err(|_| QueryError::Malformed(format!("sample value {text:?}")))?;
    if v.is_nan() {
        Err(QueryError::NotANumber)
    } else if v.is_infinite() {
        Err(QueryError::Infinite(text.to_string()))
    } else {
        Ok(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn vector(series: &str) -> Vec<u8> {
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#)
            .into_bytes()
    }

    #[test]
    fn one_series_is_a_value() {
        let body = vector(r#"{"metric":{"job":"demo"},"value":[1767225693.662,"42.5"]}"#);
        assert_eq!(instant_value(200, &body), Ok(42.5));
        // Aggregations have no labels at all.
        let body = vector(r#"{"metric":{},"value":[1767225693.662,"7"]}"#);
        assert_eq!(instant_value(200, &body), Ok(7.0));
    }

    #[test]
    fn a_scalar_is_a_value() {
        let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1767225693.662,"0.25"]}}"#;
        assert_eq!(instant_value(200, body), Ok(0.25));
    }

    #[test]
    fn no_series_is_no_data() {
        let err = instant_value(200, &vector("")).unwrap_err();
        assert_eq!(err, QueryError::NoData);
        assert_eq!(err.to_string(), "no data: the query returned no series");
    }

    #[test]
    fn several_series_are_an_error_naming_their_labels() {
        let body = vector(
            r#"{"metric":{"__name__":"demo_queue_depth","instance":"a:1","job":"demo"},"value":[1,"1"]},
               {"metric":{"__name__":"demo_queue_depth","instance":"b:1","job":"demo"},"value":[1,"2"]}"#,
        );
        let err = instant_value(200, &body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the query returned 2 series where one was expected: \
             demo_queue_depth{instance=\"a:1\", job=\"demo\"}, \
             demo_queue_depth{instance=\"b:1\", job=\"demo\"}; \
             aggregate them (e.g. sum(...) or max(...)) or narrow the selector"
        );
        let many: Vec<String> = (0..8)
            .map(|i| format!(r#"{{"metric":{{"pod":"p{i}"}},"value":[1,"1"]}}"#))
            .collect();
        let err = instant_value(200, &vector(&many.join(","))).unwrap_err();
        let QueryError::SeveralSeries { count, labels } = err else {
            panic!("{err:?}")
        };
        assert_eq!(count, 8);
        assert!(labels.ends_with(r#"{pod="p4"}, and 3 more"#), "{labels}");
    }

    #[test]
    fn a_by_query_is_one_value_per_label_value_in_label_order() {
        let body = vector(
            r#"{"metric":{"pod":"b","job":"demo"},"value":[1,"2"]},
               {"metric":{"pod":"a","job":"demo"},"value":[1,"1.5"]},
               {"metric":{"pod":"c"},"value":[1,"NaN"]}"#,
        );
        assert_eq!(
            instant_values_by(200, &body, "pod"),
            Ok(ByValues {
                values: vec![
                    ("a".into(), Ok(1.5)),
                    ("b".into(), Ok(2.0)),
                    ("c".into(), Err(QueryError::NotANumber)),
                ],
                more: 0,
            })
        );
        assert_eq!(
            instant_values_by(200, &vector(""), "pod"),
            Err(QueryError::NoData)
        );
    }

    #[test]
    fn a_by_query_keeps_its_first_values_and_counts_the_rest() {
        let many: Vec<String> = (0..MAX_BY_VALUES + 7)
            .map(|i| format!(r#"{{"metric":{{"pod":"p{i:03}"}},"value":[1,"{i}"]}}"#))
            .collect();
        let by = instant_values_by(200, &vector(&many.join(",")), "pod").unwrap();
        assert_eq!(by.values.len(), MAX_BY_VALUES);
        assert_eq!(by.more, 7);
        assert_eq!(by.values[0], ("p000".to_string(), Ok(0.0)));
        assert_eq!(
            by.values[MAX_BY_VALUES - 1].0,
            format!("p{:03}", MAX_BY_VALUES - 1)
        );
    }

    #[test]
    fn a_series_without_the_by_label_or_a_repeated_value_is_an_error_naming_it() {
        let body = vector(
            r#"{"metric":{"pod":"a"},"value":[1,"1"]},
               {"metric":{"__name__":"depth","instance":"x:1"},"value":[1,"2"]}"#,
        );
        assert_eq!(
            instant_values_by(200, &body, "pod")
                .unwrap_err()
                .to_string(),
            "a series has no label pod to report by: depth{instance=\"x:1\"}; keep the label \
             in the query's result (e.g. sum by (pod) (...))"
        );
        let body = vector(
            r#"{"metric":{"pod":"a","c":"1"},"value":[1,"1"]},
               {"metric":{"pod":"a","c":"2"},"value":[1,"2"]}"#,
        );
        assert_eq!(
            instant_values_by(200, &body, "pod")
                .unwrap_err()
                .to_string(),
            "two series have pod=\"a\": {c=\"1\", pod=\"a\"}, {c=\"2\", pod=\"a\"}; \
             aggregate the others away (e.g. sum by (pod) (...))"
        );
    }

    #[test]
    fn an_error_document_says_what_prometheus_said() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"1:14: parse error: unexpected right parenthesis ')'"}"#;
        assert_eq!(
            instant_value(400, body).unwrap_err().to_string(),
            "Prometheus refused the query (bad_data): 1:14: parse error: unexpected right parenthesis ')'"
        );
    }

    #[test]
    fn a_status_without_a_document_is_shown_with_its_body() {
        assert_eq!(
            instant_value(401, b"Unauthorized\n").unwrap_err(),
            QueryError::Http {
                status: 401,
                body: "Unauthorized".into()
            }
        );
        assert!(matches!(
            instant_value(200, b"<html>"),
            Err(QueryError::Malformed(_))
        ));
    }

    #[test]
    fn nan_is_no_data_and_infinity_is_an_error() {
        let nan = vector(r#"{"metric":{},"value":[1,"NaN"]}"#);
        assert_eq!(instant_value(200, &nan), Err(QueryError::NotANumber));
        let inf = vector(r#"{"metric":{},"value":[1,"+Inf"]}"#);
        assert_eq!(
            instant_value(200, &inf).unwrap_err().to_string(),
            "the query's value is +Inf"
        );
    }

    #[test]
    fn a_range_is_samples_since_the_window_start() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[100.25,"1"],[101.25,"NaN"],[102.25,"3"]]}]}}"#;
        assert_eq!(
            range_points(200, body, 100.0),
            Ok(vec![
                ObservedPoint { t: 0.25, v: 1.0 },
                ObservedPoint { t: 2.25, v: 3.0 },
            ])
        );
        let none = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(range_points(200, none, 0.0), Err(QueryError::NoData));
    }
}
