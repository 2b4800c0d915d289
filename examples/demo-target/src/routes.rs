//! The router and the application handlers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::knobs;
use crate::state::{AppState, InferKnobs, LatencyField, bump};

/// Builds the whole application.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    // Layers run outside-in: count → knobs → credentials → handler.
    let api = Router::new()
        .route("/api/process", post(process))
        .route("/api/jobs/{id}", get(job))
        .route("/api/items", get(items))
        .route("/api/infer", get(infer))
        .route("/api/items/{id}", get(item))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            check_credentials,
        ));
    // /health, /stats and /admin stay outside the knobs: probes and test
    // harnesses must be able to reach (and un-stall) a degraded server.
    let with_knobs = Router::new()
        .route("/auth/login", post(login))
        .route("/ws/echo", get(crate::websocket::echo))
        .route("/ws/stream", get(crate::websocket::stream))
        .merge(api)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            knobs::inject_faults,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), queue));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_stats))
        .route(
            "/admin/config",
            get(knobs::get_config).post(knobs::set_config),
        )
        .merge(with_knobs)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// A JSON error response: `{"error": msg}`.
pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// Counts requests, except to the observer routes, so that reading or
/// resetting the stats (or reconfiguring) does not change what is measured.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let observer = path == "/stats"
        || path.starts_with("/stats/")
        || path.starts_with("/admin/")
        || path == "/metrics";
    if !observer {
        bump(&state.stats.requests);
    }
    let method = req.method().clone();
    let path = path.to_owned();
    let response = next.run(req).await;
    tracing::debug!(%method, path, status = response.status().as_u16(), "request");
    response
}

/// On `/api/*`: credentials are optional, but if present they must be valid.
async fn check_credentials(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    if let Some(auth) = headers.get(AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .and_then(|(_, token)| Uuid::try_parse(token.trim()).ok());
        if !token.is_some_and(|token| state.token_known(&token)) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Authorization must be `Bearer <token from /auth/login>`",
            );
        }
    }
    // CSRF only matters for state-changing requests, as in real services.
    if !req.method().is_safe()
        && let Some(cookie) = csrf_cookie(headers)
    {
        let header = headers.get("x-csrf-token").map(|value| value.as_bytes());
        if header != Some(cookie.as_bytes()) {
            return error(
                StatusCode::FORBIDDEN,
                "X-CSRF-Token header must match the csrf_token cookie",
            );
        }
    }
    next.run(req).await
}

/// The value of the `csrf_token` cookie, if the request has one.
fn csrf_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("csrf_token="))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    Json(state.stats()).into_response()
}

/// The Prometheus text format of [`crate::metrics::ServerMetrics`].
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        ),
    }
}

/// Around every `/auth/*` and `/api/*` request (injected delays included): the queue depth
/// and processing time `/metrics` exports.
async fn queue(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let _in_flight = state.metrics.enter();
    next.run(req).await
}

async fn reset_stats(State(state): State<Arc<AppState>>) -> Response {
    state.stats.reset();
    Json(state.stats.snapshot()).into_response()
}

/// `POST /auth/login`: any non-empty email and password are accepted.
async fn login(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    // Parsed by hand (and without requiring a Content-Type) so every bad
    // request gets a JSON 400 rather than axum's plain-text rejection.
    #[derive(Deserialize)]
    struct Login {
        email: Option<String>,
        password: Option<String>,
    }
    let login: Login = match serde_json::from_slice(&body) {
        Ok(login) => login,
        Err(err) => return error(StatusCode::BAD_REQUEST, format!("bad JSON body: {err}")),
    };
    let filled = |field: &Option<String>| field.as_deref().is_some_and(|s| !s.trim().is_empty());
    if !filled(&login.email) || !filled(&login.password) {
        return error(StatusCode::BAD_REQUEST, "email and password are required");
    }
    let token = state.issue_token();
    let csrf = Uuid::new_v4();
    bump(&state.stats.logins);
    (
        [(SET_COOKIE, format!("csrf_token={}; Path=/", csrf.simple()))],
        Json(json!({ "token": token.simple().to_string() })),
    )
        .into_response()
}

/// `POST /api/process`: starts a job; the body is ignored.
async fn process(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let key = match headers.get("idempotency-key").map(|key| key.to_str()) {
        None | Some(Ok("")) => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be visible ASCII",
            );
        }
    };
    let created = state.create_job(key);
    if created.duplicate {
        bump(&state.stats.duplicates);
    } else {
        bump(&state.stats.jobs_created);
    }
    let body = json!({ "id": created.id.to_string(), "status": created.status });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// `GET /api/jobs/{id}`.
async fn job(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    bump(&state.stats.polls);
    let status = Uuid::try_parse(&id)
        .ok()
        .and_then(|uuid| state.job_status(&uuid));
    match status {
        Some(status) => Json(json!({ "id": id, "status": status })).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no job {id:?}")),
    }
}

async fn items() -> Json<serde_json::Value> {
    Json(json!({
        "items": [
            { "id": 1, "name": "anvil", "price": 1999 },
            { "id": 2, "name": "rocket skates", "price": 4999 },
            { "id": 3, "name": "bird seed", "price": 299 },
        ]
    }))
}

/// Any id is found, so rate tests can use arbitrary ids.
async fn item(Path(id): Path<String>) -> Json<serde_json::Value> {
    Json(json!({ "id": id, "name": format!("item {id}"), "price": 100 }))
}

/// `GET /api/infer?omit=K&garble=K&crisis=C`: values for custom metrics to read, derived from
/// the response number (see the crate docs) and tallied in `/stats`.
async fn infer(State(state): State<Arc<AppState>>, Query(q): Query<InferQuery>) -> Response {
    let sent = state.stats.next_inference(InferKnobs {
        omit: q.omit.unwrap_or(0),
        garble: q.garble.unwrap_or(0),
        crisis: q.crisis.unwrap_or(0),
    });
    let mut body = json!({ "crisis": sent.crisis, "tokens": sent.tokens });
    match sent.latency_ms {
        Some(LatencyField::Number(ms)) => body["latency_ms"] = json!(ms),
        Some(LatencyField::Garbled) => body["latency_ms"] = json!("n/a"),
        None => {}
    }
    ([("x-queue-depth", sent.depth.to_string())], Json(body)).into_response()
}

/// The query of `GET /api/infer`.
#[derive(Deserialize)]
struct InferQuery {
    omit: Option<u64>,
    garble: Option<u64>,
    crisis: Option<u64>,
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}
