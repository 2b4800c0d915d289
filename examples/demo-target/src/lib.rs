//! A small HTTP service to point Volley load tests at.
//!
//! It models the shapes real services have — a login that hands out a bearer
//! token and a CSRF cookie, an asynchronous job API with idempotency keys, a
//! cheap read endpoint — plus knobs to add latency and errors, so examples and
//! end-to-end tests can exercise Volley without an external dependency.
//!
//! Endpoints (all JSON):
//!
//! | Route | Behaviour |
//! |---|---|
//! | `GET /health` | `{"status":"ok"}` |
//! | `POST /auth/login` | `{"email","password"}` → `{"token"}` + `Set-Cookie: csrf_token=…` |
//! | `POST /api/process` | 202 `{"id","status":"pending"}`; honours `Idempotency-Key` |
//! | `GET /api/jobs/{id}` | `pending` until the job delay has passed, then `done`; 404 if unknown |
//! | `GET /api/items`, `GET /api/items/{id}` | small fixed payloads |
//! | `GET /api/infer` | `{"latency_ms","crisis","tokens"}` + `X-Queue-Depth`: values to read as custom metrics ([`InferStats`] tallies what was sent) |
//! | `GET /stats`, `POST /stats/reset` | [`DemoStats`] counters |
//! | `GET /metrics` | Prometheus metrics: `demo_queue_depth` (requests being handled), `demo_processing_seconds` (histogram), `demo_processed_total` |
//! | `GET`/`POST /admin/config` | read or change `delay`, `failRate`, `jobDelay` at runtime |
//! | `GET /ws/echo`, `GET /ws/stream` | WebSocket echo and streaming replies, with knobs (`?replyDelay=`, `?chunks=`, `?interval=`, `?dropAfter=`, `?silent=`; see `src/websocket.rs`) |
//!
//! `/api/*` requests that carry `Authorization: Bearer X` need a token issued
//! by `/auth/login` (401 otherwise), and unsafe ones that carry a `csrf_token`
//! cookie need a matching `X-CSRF-Token` header (403 otherwise). Requests
//! without credentials are accepted so simple tests stay simple.
//!
//! With a `capacity`, `/api/*` requests past that many per second are answered
//! 503 (a token bucket holding a tenth of a second's worth).
//!
//! `GET /api/infer` derives its values from its own response number `n` (1, 2, …):
//! `latency_ms = 10 + 37n mod 190`, `crisis = (n mod C == 0)` (`?crisis=C`, default 7),
//! `tokens = n mod 100`, header `X-Queue-Depth: n mod 50`; `?omit=K` leaves `latency_ms` out of
//! every K-th response and `?garble=K` sends it as the text `"n/a"` in every K-th (omit wins
//! when both hit). `/stats` tallies exactly what was sent, so a test can compare.
//!
//! `/auth/*`, `/api/*` and `/ws/*` (the handshake) also take the query knobs `?delay=20ms` (extra
//! latency), `?fail=0.01` (fraction answered 500) and `?status=503` (force a
//! status).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use volley_demo_target::{DemoConfig, DemoTarget};
//! let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default()).await?;
//! println!("try {}/health", target.base_url());
//! target.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

mod knobs;
mod metrics;
mod routes;
mod state;
mod websocket;

use state::AppState;

/// How long [`DemoTarget::shutdown`] waits for in-flight requests before
/// abandoning them; bounded so a test can never hang on teardown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Server behaviour; process-wide defaults that `POST /admin/config` can change
/// at runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoConfig {
    /// How long a job created by `POST /api/process` stays `pending` before it
    /// reports `done`. Default 200ms.
    pub job_delay: Duration,
    /// Latency added to every `/auth/*` and `/api/*` request. Default 0.
    pub delay: Duration,
    /// Fraction (`0.0..=1.0`) of `/api/*` requests answered with an injected
    /// 500. Default 0.
    pub fail_rate: f64,
    /// `/api/*` requests per second the server can take; past it, the excess
    /// is answered 503, like a service out of workers. It is what a
    /// rate probe looks for. Default: unlimited.
    pub capacity: Option<f64>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            job_delay: Duration::from_millis(200),
            delay: Duration::ZERO,
            fail_rate: 0.0,
            capacity: None,
        }
    }
}

/// A snapshot of the server's counters, as served by `GET /stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DemoStats {
    /// Requests received, on every route except the observer routes `/stats*`,
    /// `/admin/*` and `/metrics` (so reading the stats does not change them).
    pub requests: u64,
    /// Successful logins.
    pub logins: u64,
    /// Jobs created by `POST /api/process` (idempotent repeats not included).
    pub jobs_created: u64,
    /// `POST /api/process` requests that repeated a known `Idempotency-Key`.
    pub duplicates: u64,
    /// `GET /api/jobs/{id}` requests, including those for unknown ids.
    pub polls: u64,
    /// Responses replaced by a failure from a knob (`fail_rate`, `?fail=`, or
    /// an error status forced with `?status=`).
    pub failures_injected: u64,
    /// WebSocket handshakes accepted (`/ws/*`).
    #[serde(default)]
    pub ws_connections: u64,
    /// WebSocket messages received from clients.
    #[serde(default)]
    pub ws_messages_received: u64,
    /// WebSocket messages sent to clients.
    #[serde(default)]
    pub ws_messages_sent: u64,
    /// WebSocket connections dropped on purpose (`?dropAfter=`).
    #[serde(default)]
    pub ws_dropped: u64,
    /// WebSocket connections open now.
    #[serde(default)]
    pub ws_open: u64,
    /// Most WebSocket connections open at once.
    #[serde(default)]
    pub ws_open_max: u64,
    /// `/auth/*` and `/api/*` requests handled since the start (what `/metrics` exports as
    /// `demo_processed_total`; `/stats/reset` leaves it, as Prometheus counters only grow).
    #[serde(default)]
    pub processed: u64,
    /// The most `/auth/*` and `/api/*` requests handled at once since the start (the peak of
    /// `demo_queue_depth`, which Prometheus only samples).
    #[serde(default)]
    pub max_queue_depth: u64,
    /// What `GET /api/infer` sent.
    #[serde(default)]
    pub infer: InferStats,
}

/// What `GET /api/infer` sent, to compare with custom metrics read from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InferStats {
    /// Responses sent.
    pub responses: u64,
    /// Responses whose `latency_ms` was a number.
    pub latency_values: u64,
    /// The sum of those numbers, in ms.
    pub latency_ms_sum: u64,
    /// The smallest of them.
    pub latency_ms_min: Option<u64>,
    /// The largest of them.
    pub latency_ms_max: Option<u64>,
    /// Responses without `latency_ms` (`?omit=`).
    pub latency_omitted: u64,
    /// Responses whose `latency_ms` was not a number (`?garble=`).
    pub latency_garbled: u64,
    /// Responses with `"crisis": true`.
    pub crisis: u64,
    /// The sum of `tokens` sent.
    pub tokens_sum: u64,
    /// The smallest `X-Queue-Depth` sent.
    pub depth_min: Option<u64>,
    /// The largest `X-Queue-Depth` sent.
    pub depth_max: Option<u64>,
    /// The `X-Queue-Depth` of the last response.
    pub depth_last: Option<u64>,
}

/// A running demo server; stop it with [`DemoTarget::shutdown`].
///
/// Dropping the handle also stops the server, in the background, so a test
/// that panics does not leave it running.
pub struct DemoTarget {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for DemoTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoTarget")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DemoTarget {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio
    /// runtime.
    ///
    /// Fails if the address cannot be bound, `config.fail_rate` is outside
    /// `0.0..=1.0` or `config.capacity` is not a positive number.
    pub async fn start(addr: SocketAddr, config: DemoConfig) -> std::io::Result<DemoTarget> {
        knobs::check_fail_rate(config.fail_rate)
            .map_err(|msg| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg))?;
        if let Some(capacity) = config.capacity
            && !(capacity.is_finite() && capacity > 0.0)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("capacity {capacity} is not a positive number of requests per second"),
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(AppState::new(config, stopped.clone()));
        let app = routes::router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let mut stopped = stopped;
                    // An error means the handle was dropped: stop as well.
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%addr, "demo target listening");
        Ok(DemoTarget {
            addr,
            state,
            stop,
            task,
        })
    }

    /// The address actually bound (with the real port if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to reach the server from this host, e.g. `http://127.0.0.1:8080`.
    ///
    /// A wildcard bind (`0.0.0.0`, `::`) is reported as the loopback address,
    /// since the wildcard itself is not a usable destination.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// A snapshot of the counters, without making a request (so it does not
    /// count one).
    pub fn stats(&self) -> DemoStats {
        self.state.stats()
    }

    /// Stops accepting connections, cuts short injected delays, and waits (up
    /// to a few seconds) for in-flight requests to finish.
    pub async fn shutdown(self) {
        let DemoTarget {
            addr,
            stop,
            mut task,
            ..
        } = self;
        stop.send_replace(true);
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => tracing::info!(%addr, "demo target stopped"),
            Ok(Ok(Err(err))) => tracing::warn!(%addr, %err, "demo target server failed"),
            Ok(Err(err)) => tracing::warn!(%addr, %err, "demo target task failed"),
            Err(_) => {
                tracing::warn!(%addr, "demo target did not stop in time; abandoning connections");
                task.abort();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn base_url_uses_loopback_for_wildcard_binds() {
        let target = DemoTarget::start(([0, 0, 0, 0], 0).into(), DemoConfig::default())
            .await
            .unwrap();
        let port = target.addr().port();
        assert_eq!(target.base_url(), format!("http://127.0.0.1:{port}"));
        target.shutdown().await;
    }

    #[tokio::test]
    async fn start_rejects_bad_fail_rate() {
        let config = DemoConfig {
            fail_rate: 1.5,
            ..DemoConfig::default()
        };
        let err = DemoTarget::start(([127, 0, 0, 1], 0).into(), config)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
