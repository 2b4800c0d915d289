//! The aggregator's HTTP side: the routes of `DESIGN.md` §4 over every registered run, with
//! bearer-token checks, body limits and the start long-poll. Each handler decodes, takes the
//! lock briefly, calls [`RunState`] and answers; histogram decoding happens outside the lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use volley_crds::protocol::{
    ReadyRequest, RunnerReport, START_POLL_HOLD_MS, SetupResult, StartResponse,
};

use crate::run::{DecodedReport, ProtocolError, RunConfig, RunState, RunView, Stage};

/// Largest request body accepted: a report of [`volley_crds::metrics::MAX_REPORT_STEPS`]
/// steps with three histograms each fits; anything larger is answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How often [`Aggregator::run_ticker`] moves every run's time forward.
pub const TICK_INTERVAL: Duration = Duration::from_millis(200);

/// Every run's state behind one endpoint; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Aggregator {
    inner: Arc<Inner>,
    hold: Duration,
}

#[derive(Debug)]
struct Inner {
    runs: Mutex<HashMap<String, RunState>>,
    /// Bumped whenever some run's stage changes, to wake start long-polls.
    changed: watch::Sender<u64>,
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator::new()
    }
}

impl Aggregator {
    /// An aggregator with no runs.
    pub fn new() -> Aggregator {
        Aggregator {
            inner: Arc::new(Inner {
                runs: Mutex::new(HashMap::new()),
                changed: watch::Sender::new(0),
            }),
            hold: Duration::from_millis(START_POLL_HOLD_MS),
        }
    }

    /// The same aggregator holding start polls for `hold` instead of
    /// [`START_POLL_HOLD_MS`] (tests).
    pub fn with_poll_hold(mut self, hold: Duration) -> Aggregator {
        self.hold = hold;
        self
    }

    /// Registers a run; a run already registered under that id is kept as it is (so a
    /// controller can register on every reconcile). Returns whether it was new.
    pub fn add_run(&self, config: RunConfig) -> bool {
        let mut runs = self.lock();
        if runs.contains_key(&config.run) {
            return false;
        }
        tracing::info!(run = %config.run, runners = config.runners, "run registered");
        let run = config.run.clone();
        runs.insert(
            run,
            RunState::new(config, Instant::now(), SystemTime::now()),
        );
        true
    }

    /// Forgets a run; false when it was not known.
    pub fn remove_run(&self, run: &str) -> bool {
        self.lock().remove(run).is_some()
    }

    /// The ids of the registered runs.
    pub fn runs(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// A run as it stands.
    pub fn view(&self, run: &str) -> Option<RunView> {
        self.lock().get_mut(run).map(RunState::view)
    }

    /// Where a run is, cheaply (see [`RunState::glance`]).
    pub fn glance(&self, run: &str) -> Option<(Stage, Duration)> {
        self.lock().get(run).map(RunState::glance)
    }

    /// Stops a run (see [`RunState::abort`]).
    pub fn abort(&self, run: &str, reason: &str, message: &str) {
        self.with_run(run, |s, now| s.abort(reason, message, now));
    }

    /// Stops a run whose LoadTest is gone and drops it once drained (see
    /// [`RunState::retire`]); the ticker drops it.
    pub fn retire(&self, run: &str, reason: &str, message: &str) {
        self.with_run(run, |s, now| s.retire(reason, message, now));
    }

    /// Records that a runner died (see [`RunState::runner_failed`]).
    pub fn runner_failed(&self, run: &str, index: u32, reason: &str) {
        self.with_run(run, |s, now| s.runner_failed(index, reason, now));
    }

    /// Moves every run's time forward (see [`RunState::tick`]).
    pub fn tick(&self) {
        let now = Instant::now();
        let changed = {
            let mut runs = self.lock();
            let changed = runs.values_mut().fold(false, |changed, s| {
                let before = s.version();
                s.tick(now);
                changed | (s.version() != before)
            });
            runs.retain(|_, s| !s.retired());
            changed
        };
        if changed {
            self.wake();
        }
    }

    /// Ticks every [`TICK_INTERVAL`] until dropped (spawn it).
    pub async fn run_ticker(self) {
        let mut ticker = tokio::time::interval(TICK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.tick();
        }
    }

    /// The protocol routes plus `GET /healthz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/v1/runs/{run}/runners/{index}/ready", post(ready))
            .route("/v1/runs/{run}/start", get(start))
            .route("/v1/runs/{run}/setup", post(setup))
            .route("/v1/runs/{run}/runners/{index}/report", post(report))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RunState>> {
        self.inner
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        self.inner.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Calls `f` on the run, waking long-polls if its stage changed.
    fn with_run<T>(&self, run: &str, f: impl FnOnce(&mut RunState, Instant) -> T) -> Option<T> {
        let (out, changed) = {
            let mut runs = self.lock();
            let state = runs.get_mut(run)?;
            let before = state.version();
            let out = f(state, Instant::now());
            (out, state.version() != before)
        };
        if changed {
            self.wake();
        }
        Some(out)
    }

    /// Like [`Aggregator::with_run`] after checking the caller's token.
    fn authorized<T>(
        &self,
        run: &str,
        headers: &HeaderMap,
        f: impl FnOnce(&mut RunState, Instant) -> Result<T, ProtocolError>,
    ) -> Result<T, ProtocolError> {
        self.with_run(run, |state, now| {
            check_token(state.config(), headers)?;
            f(state, now)
        })
        .unwrap_or_else(|| Err(ProtocolError::UnknownRun(run.to_owned())))
    }
}

fn check_token(config: &RunConfig, headers: &HeaderMap) -> Result<(), ProtocolError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !config.token.is_empty() && constant_time_eq(given.as_bytes(), config.token.as_bytes()) {
        Ok(())
    } else {
        Err(ProtocolError::Unauthorized(config.run.clone()))
    }
}

/// Compares without stopping at the first difference, so response times do not tell how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl IntoResponse for ProtocolError {
    fn into_response(self) -> Response {
        let status = match &self {
            ProtocolError::UnknownRun(_) | ProtocolError::UnknownRunner { .. } => {
                StatusCode::NOT_FOUND
            }
            ProtocolError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProtocolError::ProtocolMismatch { .. }
            | ProtocolError::NotInSetup
            | ProtocolError::StaleReport { .. } => StatusCode::CONFLICT,
            ProtocolError::WrongRunner { .. }
            | ProtocolError::BadReport(_)
            | ProtocolError::BadBody(_) => StatusCode::BAD_REQUEST,
        };
        if status != StatusCode::CONFLICT {
            tracing::debug!(status = status.as_u16(), error = %self, "protocol call refused");
        }
        (status, self.to_string()).into_response()
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(body).map_err(|e| ProtocolError::BadBody(e.to_string()))
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

async fn ready(
    State(agg): State<Aggregator>,
    Path((run, index)): Path<(String, u32)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProtocolError> {
    agg.authorized(&run, &headers, |_, _| Ok(()))?;
    let request: ReadyRequest = parse(&body)?;
    let answer = agg.authorized(&run, &headers, |s, now| s.ready(index, &request, now))?;
    tracing::info!(run = %run, runner = index, host = %request.host, "runner registered");
    Ok(json(&answer))
}

#[derive(Deserialize)]
struct StartQuery {
    runner: u32,
}

async fn start(
    State(agg): State<Aggregator>,
    Path(run): Path<String>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
) -> Result<Response, ProtocolError> {
    let deadline = tokio::time::Instant::now() + agg.hold;
    let mut changed = agg.inner.changed.subscribe();
    loop {
        drop(changed.borrow_and_update());
        let answer = agg.authorized(&run, &headers, |s, now| s.poll_start(query.runner, now))?;
        if answer != StartResponse::Wait {
            return Ok(json(&answer));
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(json(&StartResponse::Wait)),
        }
    }
}

async fn setup(
    State(agg): State<Aggregator>,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProtocolError> {
    let shape = agg.authorized(&run, &headers, |s, _| Ok(s.shape()))?;
    let result: SetupResult = parse(&body)?;
    let report = match &result.report {
        Some(report) => {
            let wrapped = RunnerReport {
                report: report.clone(),
                first_request_unix_ms: None,
                error: None,
            };
            Some(DecodedReport::decode(&wrapped, &shape)?)
        }
        None => None,
    };
    agg.authorized(&run, &headers, |s, now| s.setup(&result, report, now))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn report(
    State(agg): State<Aggregator>,
    Path((run, index)): Path<(String, u32)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProtocolError> {
    let shape = agg.authorized(&run, &headers, |s, _| Ok(s.shape()))?;
    let report: RunnerReport = parse(&body)?;
    let decoded = DecodedReport::decode(&report, &shape)?;
    let answer = agg.authorized(&run, &headers, |s, now| s.report(index, decoded, now))?;
    Ok(json(&answer))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
