//! The HTTP edge: a Prometheus server's instant and range queries, and [`observe`], which runs
//! a spec's queries over a window.

use std::time::Duration;

use reqwest::Url;
use volley_core::observe::{Observation, ObservedSeries, Window};
use volley_crds::spec::{PrometheusQuery, QueryWindow};
use volley_crds::status::PrometheusResult;

use crate::promql::{series_step, substitute, unix_seconds};
use crate::response::{
    ByValues, MAX_BY_VALUES, QueryError, instant_value, instant_values_by, range_points,
};

/// The query timeout when the spec sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of an answer read: a query returning thousands of series is an error
/// anyway, and a run must not hold an unbounded body in memory.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Credentials for the server. `Debug` shows which kind, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// HTTP basic auth.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer(redacted)"),
            Credentials::Basic { .. } => f.write_str("Basic(redacted)"),
        }
    }
}

/// Why a Prometheus client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL does not parse or is not http(s).
    #[error("prometheus url: {0}")]
    Url(String),
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client for Prometheus: {0}")]
    Build(String),
}

/// A Prometheus server's HTTP API.
#[derive(Clone, Debug)]
pub struct Prometheus {
    http: reqwest::Client,
    base: Url,
    /// The base URL without credentials, for messages.
    shown: String,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl Prometheus {
    /// A client for the server at `url` (its API under `url/api/v1/`). Credentials in the URL
    /// itself (`http://user:pass@host`) are used as basic auth and, like `credentials`, never
    /// shown. `insecure` accepts any TLS certificate. Proxy variables are ignored, as for the
    /// load: requests go to the host the allow-list checked.
    pub fn new(
        url: &str,
        credentials: Option<Credentials>,
        insecure: bool,
        timeout: Duration,
    ) -> Result<Prometheus, ClientError> {
        let mut base = Url::parse(url).map_err(|e| ClientError::Url(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(ClientError::Url(format!(
                "{} is not an http(s) URL with a host",
                shown_url(&base)
            )));
        }
        let mut credentials = credentials;
        if !base.username().is_empty() && credentials.is_none() {
            credentials = Some(Credentials::Basic {
                username: base.username().to_string(),
                password: base.password().unwrap_or_default().to_string(),
            });
        }
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let http = reqwest::Client::builder()
            .no_proxy()
            .user_agent(concat!("volley/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(insecure)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Prometheus {
            http,
            shown: shown_url(&base),
            base,
            credentials,
            timeout,
        })
    }

    /// The server's URL as messages show it (no credentials, no query string).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `query` evaluated at `at_unix_ms` (`/api/v1/query`).
    pub async fn instant(&self, query: &str, at_unix_ms: u64) -> Result<f64, QueryError> {
        let (status, body) = self
            .get(
                "query",
                &[("query", query), ("time", &unix_seconds(at_unix_ms))],
            )
            .await?;
        instant_value(status, &body)
    }

    /// `query` evaluated at `at_unix_ms`, one value per value of `label` (a `by` query).
    pub async fn instant_by(
        &self,
        query: &str,
        at_unix_ms: u64,
        label: &str,
    ) -> Result<ByValues, QueryError> {
        let (status, body) = self
            .get(
                "query",
                &[("query", query), ("time", &unix_seconds(at_unix_ms))],
            )
            .await?;
        instant_values_by(status, &body, label)
    }

    /// `query` over `window` every `step` (`/api/v1/query_range`), as seconds since the
    /// window's start.
    pub async fn range(
        &self,
        query: &str,
        window: Window,
        step: Duration,
    ) -> Result<Vec<volley_core::observe::ObservedPoint>, QueryError> {
        let start = unix_seconds(window.start_unix_ms);
        let (status, body) = self
            .get(
                "query_range",
                &[
                    ("query", query),
                    ("start", &start),
                    ("end", &unix_seconds(window.end_unix_ms)),
                    ("step", &format!("{}s", step.as_secs().max(1))),
                ],
            )
            .await?;
        range_points(status, &body, window.start_unix_ms as f64 / 1000.0)
    }

    /// GET `api/v1/{endpoint}` with `params`: the status and the body (at most
    /// [`MAX_BODY_BYTES`]).
    async fn get(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>), QueryError> {
        let mut url = self.base.clone();
        {
            let Ok(mut path) = url.path_segments_mut() else {
                return Err(QueryError::Malformed("the URL cannot have a path".into()));
            };
            path.pop_if_empty().extend(["api", "v1", endpoint]);
        }
        url.query_pairs_mut().extend_pairs(params);
        let mut request = self.http.get(url).timeout(self.timeout);
        request = match &self.credentials {
            Some(Credentials::Bearer(token)) => request.bearer_auth(token),
            Some(Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            None => request,
        };
        let mut response = request.send().await.map_err(|e| self.failed(e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.failed(e))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(QueryError::Malformed(format!(
                    "the answer is larger than {} MiB",
                    MAX_BODY_BYTES / (1024 * 1024)
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// A transport error as a [`QueryError`], without the URL (it would carry the query and
    /// could carry credentials).
    fn failed(&self, e: reqwest::Error) -> QueryError {
        if e.is_timeout() {
            return QueryError::Timeout {
                at: self.shown.clone(),
                after: volley_crds::Duration::from(self.timeout).to_string(),
            };
        }
        // reqwest's own text is generic ("error sending request"); its causes say what failed
        // (connection refused, a TLS error).
        let e = e.without_url();
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            why = format!("{why}: {cause}");
            source = cause.source();
        }
        QueryError::Unreachable {
            at: self.shown.clone(),
            why,
        }
    }
}

/// Runs every query of a spec over `window`: an instant query at the window's end for each
/// (at each scenario's window's end, once per scenario of `scenarios`, for a `window:
/// scenario` query), and a range query over the run's window for those with `series: true`,
/// all at once. Never fails: a query that fails is a result with its error.
pub async fn observe(
    prometheus: &Prometheus,
    queries: &[PrometheusQuery],
    window: Window,
    scenarios: &[(String, Window)],
) -> Observation {
    let step = series_step(window);
    let planned: Vec<(&PrometheusQuery, Option<&str>, Window)> = queries
        .iter()
        .flat_map(|q| match q.window {
            QueryWindow::Run => vec![(q, None, window)],
            QueryWindow::Scenario => scenarios
                .iter()
                .map(|(name, w)| (q, Some(name.as_str()), *w))
                .collect(),
        })
        .collect();
    let instants = planned
        .into_iter()
        .map(|(q, scenario, window)| instant_results(prometheus, q, scenario, window));
    let ranges = queries.iter().filter(|q| q.series).map(|q| async move {
        let query = substitute(&q.query, window);
        let outcome = prometheus.range(&query, window, step).await;
        ObservedSeries {
            name: q.name.clone(),
            step_seconds: step.as_secs_f64(),
            error: outcome.as_ref().err().map(|e| e.to_string()),
            points: outcome.unwrap_or_default(),
        }
    });
    let (results, series) = futures::join!(
        futures::future::join_all(instants),
        futures::future::join_all(ranges)
    );
    Observation {
        window,
        results: results.into_iter().flatten().collect(),
        series,
    }
}

/// The results of query `q` over `window` (of `scenario`, when it covers one): one, or one
/// per label value for a `by` query plus a row counting the series beyond those kept.
async fn instant_results(
    prometheus: &Prometheus,
    q: &PrometheusQuery,
    scenario: Option<&str>,
    window: Window,
) -> Vec<PrometheusResult> {
    let query = substitute(&q.query, window);
    let row = |label_value: Option<String>, outcome: Result<f64, String>| PrometheusResult {
        name: q.name.clone(),
        query: query.clone(),
        value: outcome.as_ref().ok().copied(),
        error: outcome.err(),
        scenario: scenario.map(String::from),
        by: q.by.clone(),
        label_value,
    };
    let warn = |e: &QueryError| {
        tracing::warn!(query = %q.name, scenario = ?scenario, error = %e, "prometheus query failed");
    };
    let Some(label) = &q.by else {
        let outcome = prometheus.instant(&query, window.end_unix_ms).await;
        if let Err(e) = &outcome {
            warn(e);
        }
        return vec![row(None, outcome.map_err(|e| e.to_string()))];
    };
    match prometheus
        .instant_by(&query, window.end_unix_ms, label)
        .await
    {
        Err(e) => {
            warn(&e);
            vec![row(None, Err(e.to_string()))]
        }
        Ok(by) => {
            let mut rows: Vec<PrometheusResult> = by
                .values
                .into_iter()
                .map(|(key, value)| row(Some(key), value.map_err(|e| e.to_string())))
                .collect();
            if by.more > 0 {
                rows.push(row(
                    None,
                    Err(format!(
                        "{} more series not kept (at most {MAX_BY_VALUES} per query); narrow \
                         the query to judge them",
                        by.more
                    )),
                ));
            }
            rows
        }
    }
}

/// `scheme://host:port/path` of `url`, without credentials, query or fragment.
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string().trim_end_matches('/').to_string()
}
