//! Latency and failure knobs: per-request query parameters, the process-wide
//! config, and the `/admin/config` API that changes it at runtime.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::DemoConfig;
use crate::routes::error;
use crate::state::{AppState, bump};

/// Applies the query knobs and the process-wide `delay`/`fail_rate` before
/// the handler runs. A failure short-circuits the handler, so e.g. a failed
/// `POST /api/process` creates no job.
pub(crate) async fn inject_faults(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let knobs = match RequestKnobs::from_uri(req.uri()) {
        Ok(knobs) => knobs,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let config = state.config();

    let delay = config.delay.saturating_add(knobs.delay);
    if !delay.is_zero() && !state.sleep(delay).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    }

    if let Some(status) = knobs.status {
        if status.is_client_error() || status.is_server_error() {
            bump(&state.stats.failures_injected);
        }
        return error(
            status,
            format!("status {} forced by ?status=", status.as_u16()),
        );
    }

    let api = req.uri().path().starts_with("/api/");
    if let Some(capacity) = config.capacity.filter(|_| api)
        && !state.within_capacity(capacity)
    {
        bump(&state.stats.failures_injected);
        return error(StatusCode::SERVICE_UNAVAILABLE, "over capacity");
    }

    // The process-wide rate is documented as applying to /api/* only, so
    // logins keep working while the API is degraded.
    let config_rate = if api { config.fail_rate } else { 0.0 };
    // Independent chances: a request fails if either knob says so.
    let fail_rate = 1.0 - (1.0 - config_rate) * (1.0 - knobs.fail);
    if fail_rate > 0.0 && rand::random::<f64>() < fail_rate {
        bump(&state.stats.failures_injected);
        return error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
    }

    next.run(req).await
}

/// The validated query knobs of one request.
#[derive(Debug, Default, PartialEq)]
struct RequestKnobs {
    delay: Duration,
    fail: f64,
    status: Option<StatusCode>,
}

impl RequestKnobs {
    fn from_uri(uri: &Uri) -> Result<Self, String> {
        // Strings, not typed fields, so a bad value gets our error message
        // rather than serde's. Other query parameters are ignored.
        #[derive(Deserialize)]
        struct Raw {
            delay: Option<String>,
            fail: Option<String>,
            status: Option<String>,
        }
        let Query(raw) =
            Query::<Raw>::try_from_uri(uri).map_err(|err| format!("bad query string: {err}"))?;
        let mut knobs = RequestKnobs::default();
        if let Some(delay) = raw.delay {
            knobs.delay = parse_duration(&delay).map_err(|err| format!("bad ?delay=: {err}"))?;
        }
        if let Some(fail) = raw.fail {
            let fail = fail
                .parse()
                .map_err(|_| format!("bad ?fail=: {fail:?} is not a number"))?;
            knobs.fail = check_fail_rate(fail).map_err(|err| format!("bad ?fail=: {err}"))?;
        }
        if let Some(status) = raw.status {
            knobs.status = Some(
                status
                    .parse::<u16>()
                    .ok()
                    .filter(|code| (200..=599).contains(code))
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or_else(|| {
                        format!("bad ?status=: {status:?} is not a status in 200..=599")
                    })?,
            );
        }
        Ok(knobs)
    }
}

/// Parses durations like `20ms`, `1s`, `250us`, `1.5s`, `1m 30s` or `0`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|err| format!("{text:?}: {err}"))
}

/// Checks that a failure rate is a fraction.
pub(crate) fn check_fail_rate(rate: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("failure rate {rate} is not within 0.0..=1.0"))
    }
}

/// The config as `/admin/config` shows it: durations in human form, so they
/// can be posted back unchanged.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigView {
    delay: String,
    fail_rate: f64,
    job_delay: String,
}

impl From<DemoConfig> for ConfigView {
    fn from(config: DemoConfig) -> Self {
        Self {
            delay: humantime::format_duration(config.delay).to_string(),
            fail_rate: config.fail_rate,
            job_delay: humantime::format_duration(config.job_delay).to_string(),
        }
    }
}

/// `GET /admin/config`.
pub(crate) async fn get_config(State(state): State<Arc<AppState>>) -> Response {
    Json(ConfigView::from(state.config())).into_response()
}

/// `POST /admin/config`: a partial update such as `{"delay": "1s"}` or
/// `{"failRate": 0.5}`; answers with the resulting config. Nothing changes
/// unless every given field is valid.
pub(crate) async fn set_config(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    // Unknown fields are rejected so a typo like `fail_rate` is not silently
    // ignored mid-test.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Update {
        delay: Option<String>,
        fail_rate: Option<f64>,
        job_delay: Option<String>,
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(err) => return error(StatusCode::BAD_REQUEST, format!("bad JSON body: {err}")),
    };
    let changed = state.update_config(|config| {
        if let Some(delay) = &update.delay {
            config.delay = parse_duration(delay).map_err(|err| format!("bad delay: {err}"))?;
        }
        if let Some(rate) = update.fail_rate {
            config.fail_rate = check_fail_rate(rate)?;
        }
        if let Some(delay) = &update.job_delay {
            config.job_delay =
                parse_duration(delay).map_err(|err| format!("bad jobDelay: {err}"))?;
        }
        Ok(())
    });
    let config = match changed {
        Ok(config) => config,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    tracing::info!(?config, "config changed");
    Json(ConfigView::from(config)).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn knobs(query: &str) -> Result<RequestKnobs, String> {
        RequestKnobs::from_uri(&format!("/api/items?{query}").parse().unwrap())
    }

    #[test]
    fn parses_durations() {
        for (text, millis) in [
            ("20ms", 20),
            ("1s", 1000),
            ("1.5s", 1500),
            ("0", 0),
            ("0ms", 0),
            (" 2s ", 2000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn parses_query_knobs() {
        assert_eq!(knobs("").unwrap(), RequestKnobs::default());
        assert_eq!(
            knobs("delay=20ms&fail=0.25&status=503&other=x").unwrap(),
            RequestKnobs {
                delay: Duration::from_millis(20),
                fail: 0.25,
                status: Some(StatusCode::SERVICE_UNAVAILABLE),
            }
        );
        for bad in [
            "delay=soon",
            "fail=2",
            "fail=NaN",
            "fail=x",
            "status=99",
            "status=600",
        ] {
            assert!(knobs(bad).is_err(), "{bad}");
        }
    }
}
