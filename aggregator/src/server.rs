//! The aggregator's HTTP side: the routes of `docs/reference.md` §3 over every registered run,
//! with per-runner credentials, body limits and the start long-poll. Each handler checks the
//! caller's credential before it reads a byte of the body, decodes, takes the lock briefly,
//! calls [`RunState`] and answers; histogram decoding happens outside the lock.
//!
//! The peers are untrusted (any pod of a shared cluster can reach the port), so what one
//! costs is bounded before it is known who it is: [`serve`] holds at most
//! [`MAX_CONNECTIONS`] connections and closes one that does not send a request's headers
//! within [`HEADER_READ_TIMEOUT`]; a request without a valid credential is answered 401
//! whatever the run (existing or not) without its body being read; an authorized body is
//! read only within [`BODY_READ_TIMEOUT`], up to [`MAX_BODY_BYTES`], and at most
//! [`MAX_BODIES_IN_FLIGHT`] at once. Every peer-supplied string reaching a log line is
//! escaped and bounded ([`volley_crds::text::for_log`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::hmac;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use volley_core::protocol::{
    ReadyRequest, RunnerReport, START_POLL_HOLD_MS, SetupResult, StartResponse,
};
use volley_crds::text::for_log;

use crate::run::{DecodedReport, ProtocolError, RunConfig, RunLifecycle, RunState, RunView};

/// Largest request body accepted: a report of [`volley_core::protocol::report::MAX_REPORT_STEPS`]
/// steps with three histograms each fits; anything larger is answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long a client may take to send a request's headers, and how long an idle keep-alive
/// connection is kept: a connection that sends nothing (or headers a byte at a time) is
/// closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an authorized client may take to send a request's body (a report of the largest
/// size over a slow link takes a fraction of it). Slower: 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Most connections [`serve`] holds at once; further ones wait in the listen backlog until
/// one closes. With [`HEADER_READ_BUFFER`] this bounds what idle or slow clients can hold
/// (about 32 MiB), while leaving room for a thousand runners' long-polls and reports.
pub const MAX_CONNECTIONS: usize = 2048;

/// Largest buffer a connection reads headers into (hyper's `max_buf_size`): the protocol's
/// headers take a few hundred bytes.
pub const HEADER_READ_BUFFER: usize = 16 * 1024;

/// Most authorized request bodies read at once; a further request waits (up to
/// [`BODY_READ_TIMEOUT`], then 503) before its body is read. With [`MAX_BODY_BYTES`] this
/// bounds the memory held by bodies.
pub const MAX_BODIES_IN_FLIGHT: usize = 8;

/// How often [`Aggregator::run_ticker`] moves every run's time forward.
pub const TICK_INTERVAL: Duration = Duration::from_millis(200);

/// Longest peer-supplied string (host name, run id, error text) written to a log line.
const MAX_LOGGED_CHARS: usize = 200;

/// The credential runner `index` of a run presents (`Authorization: Bearer CREDENTIAL`):
/// HMAC-SHA256 of `runner/INDEX` keyed with the run's token, as 64 hex digits. Each runner
/// gets only its own, so it can speak only for itself; the run's token never leaves the
/// operator (or `volley run`).
pub fn runner_credential(token: &str, index: u32) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let tag = hmac::sign(&key, format!("runner/{index}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every run's state behind one endpoint; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Aggregator {
    inner: Arc<Inner>,
    hold: Duration,
}

#[derive(Debug)]
struct Inner {
    runs: Mutex<HashMap<String, RunState>>,
    /// Bumped whenever some run moves on in its lifecycle, to wake start long-polls.
    changed: watch::Sender<u64>,
    /// One permit per request body being read ([`MAX_BODIES_IN_FLIGHT`]).
    bodies: Semaphore,
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
                bodies: Semaphore::new(MAX_BODIES_IN_FLIGHT),
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
    pub fn glance(&self, run: &str) -> Option<(RunLifecycle, Duration)> {
        self.lock().get(run).map(RunState::glance)
    }

    /// Gives a finished run its Prometheus results (see [`RunState::observe`]).
    pub fn observe(&self, run: &str, observation: volley_core::observe::Observation) {
        if let Some(state) = self.lock().get_mut(run) {
            state.observe(observation);
        }
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

    /// Calls `f` on the run, waking long-polls if it moved on in its lifecycle.
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

    /// Like [`Aggregator::with_run`] after checking that the caller holds runner `index`'s
    /// credential. A run that does not exist is answered like a wrong credential (401), so
    /// whether a run exists cannot be probed without one.
    fn authorized<T>(
        &self,
        run: &str,
        index: u32,
        headers: &HeaderMap,
        f: impl FnOnce(&mut RunState, Instant) -> Result<T, ProtocolError>,
    ) -> Result<T, ProtocolError> {
        self.with_run(run, |state, now| {
            check_credential(state.config(), index, headers)?;
            f(state, now)
        })
        .unwrap_or_else(|| {
            // The same work as for a known run, so the answer's timing does not tell either.
            drop(runner_credential("", index));
            Err(unauthorized(run))
        })
    }

    /// Reads an authorized request's body within the limits of the module documentation.
    async fn read_body(&self, body: Body) -> Result<Bytes, BodyError> {
        let _permit = tokio::time::timeout(BODY_READ_TIMEOUT, self.inner.bodies.acquire())
            .await
            .map_err(|_| BodyError::Busy)?
            .map_err(|_| BodyError::Busy)?;
        match tokio::time::timeout(
            BODY_READ_TIMEOUT,
            axum::body::to_bytes(body, MAX_BODY_BYTES),
        )
        .await
        {
            Err(_) => Err(BodyError::TooSlow),
            Ok(Err(_)) => Err(BodyError::TooLarge),
            Ok(Ok(bytes)) => Ok(bytes),
        }
    }
}

fn unauthorized(run: &str) -> ProtocolError {
    ProtocolError::Unauthorized(for_log(run, MAX_LOGGED_CHARS))
}

fn check_credential(
    config: &RunConfig,
    index: u32,
    headers: &HeaderMap,
) -> Result<(), ProtocolError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = runner_credential(&config.token, index);
    if !config.token.is_empty() && constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(unauthorized(&config.run))
    }
}

/// Why a body was not read.
#[derive(Debug)]
enum BodyError {
    /// [`MAX_BODIES_IN_FLIGHT`] bodies were being read for all of [`BODY_READ_TIMEOUT`].
    Busy,
    /// Not all of it within [`BODY_READ_TIMEOUT`].
    TooSlow,
    /// Larger than [`MAX_BODY_BYTES`] (or cut short).
    TooLarge,
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            BodyError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bodies are being read; try again".to_string(),
            ),
            BodyError::TooSlow => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}",
                    volley_crds::Duration::from(BODY_READ_TIMEOUT)
                ),
            ),
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY_BYTES} bytes (or was cut short)"),
            ),
        };
        tracing::debug!(status = status.as_u16(), "request body refused");
        (status, message).into_response()
    }
}

/// A refused call: by the protocol, or before its body was read.
#[derive(Debug)]
enum RouteRefusal {
    Protocol(ProtocolError),
    Body(BodyError),
}

impl From<ProtocolError> for RouteRefusal {
    fn from(e: ProtocolError) -> Self {
        RouteRefusal::Protocol(e)
    }
}

impl From<BodyError> for RouteRefusal {
    fn from(e: BodyError) -> Self {
        RouteRefusal::Body(e)
    }
}

impl IntoResponse for RouteRefusal {
    fn into_response(self) -> Response {
        match self {
            RouteRefusal::Protocol(e) => e.into_response(),
            RouteRefusal::Body(e) => e.into_response(),
        }
    }
}

/// Serves `router` (the aggregator's, see [`Aggregator::router`]) on `listener` until
/// `shutdown` resolves, then lets open requests finish. Unlike `axum::serve` it bounds what a
/// client can hold before it says who it is: at most [`MAX_CONNECTIONS`] connections, each
/// closed when its request headers do not arrive within [`HEADER_READ_TIMEOUT`] and limited
/// to a [`HEADER_READ_BUFFER`] of them. HTTP/1.1 only, as the runners speak it.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(HEADER_READ_BUFFER);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    let _ = closing_tx.send(true);
    // Every connection holds a permit until it ends: all of them back means all ended.
    let _ = connections.acquire_many(MAX_CONNECTIONS as u32).await;
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
            | ProtocolError::NotStarted
            | ProtocolError::StaleReport { .. } => StatusCode::CONFLICT,
            ProtocolError::WrongRunner { .. }
            | ProtocolError::BadReport(_)
            | ProtocolError::NotInSpec(_)
            | ProtocolError::BadBody(_) => StatusCode::BAD_REQUEST,
        };
        if status != StatusCode::CONFLICT {
            // The message quotes what the peer sent (names, JSON errors): escaped and bounded.
            let error = for_log(&self.to_string(), MAX_LOGGED_CHARS);
            tracing::debug!(status = status.as_u16(), %error, "protocol call refused");
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
    body: Body,
) -> Result<Response, RouteRefusal> {
    agg.authorized(&run, index, &headers, |_, _| Ok(()))?;
    let body = agg.read_body(body).await?;
    let request: ReadyRequest = parse(&body)?;
    let answer = agg.authorized(&run, index, &headers, |s, now| {
        s.ready(index, &request, now)
    })?;
    tracing::info!(
        run = %for_log(&run, MAX_LOGGED_CHARS),
        runner = index,
        host = %for_log(&request.host, MAX_LOGGED_CHARS),
        "runner registered"
    );
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
        let answer = agg.authorized(&run, query.runner, &headers, |s, now| {
            s.poll_start(query.runner, now)
        })?;
        if answer != StartResponse::Wait {
            return Ok(json(&answer));
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(json(&StartResponse::Wait)),
        }
    }
}

/// Setup runs on runner 0: only its credential may post the result.
async fn setup(
    State(agg): State<Aggregator>,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RouteRefusal> {
    let shape = agg.authorized(&run, 0, &headers, |s, _| Ok(s.shape()))?;
    let body = agg.read_body(body).await?;
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
    agg.authorized(&run, 0, &headers, |s, now| s.setup(&result, report, now))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn report(
    State(agg): State<Aggregator>,
    Path((run, index)): Path<(String, u32)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RouteRefusal> {
    let shape = agg.authorized(&run, index, &headers, |s, _| Ok(s.shape()))?;
    let body = agg.read_body(body).await?;
    let report: RunnerReport = parse(&body)?;
    let decoded = DecodedReport::decode(&report, &shape)?;
    let answer = agg.authorized(&run, index, &headers, |s, now| {
        s.report(index, decoded, now)
    })?;
    Ok(json(&answer))
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, runner_credential};

    #[test]
    fn each_runner_has_its_own_credential() {
        let a0 = runner_credential("token-a", 0);
        assert_eq!(a0.len(), 64);
        assert!(a0.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a0, runner_credential("token-a", 0), "derived, not random");
        assert_ne!(a0, runner_credential("token-a", 1));
        assert_ne!(a0, runner_credential("token-b", 0));
        assert!(!a0.contains("token-a"));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
