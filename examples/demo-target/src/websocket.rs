//! WebSocket endpoints: an echo and a streaming reply, with knobs like the HTTP routes'.
//!
//! | Route | Behaviour |
//! |---|---|
//! | `GET /ws/echo` | sends every text or binary message back |
//! | `GET /ws/stream` | answers every text message with `chunks` messages `{"chunk":i,"id":…}`, one per `interval`, then `{"done":true,"id":…}` (`id` is the request's `id` field when it is JSON with one) |
//!
//! Query knobs (besides the HTTP ones, which apply to the handshake: `?delay=` delays it,
//! `?status=` refuses it): `?replyDelay=20ms` before each reply (echo, or the first chunk),
//! `?chunks=5` and `?interval=20ms` (stream), `?dropAfter=N` drops the connection without a
//! close frame once N messages have been received (an abnormal close), `?silent=true` never
//! replies (so expectations time out).
//!
//! A client offering the subprotocol `json` gets it.
//!
//! The server counts connections, messages both ways and open connections in
//! [`crate::DemoStats`], so tests can compare what a client measured with what the server saw.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::json;

use crate::knobs::parse_duration;
use crate::routes::error;
use crate::state::{AppState, bump};

/// Bytes read from a socket at a time: small, so that ten thousand idle connections stay
/// cheap (axum's default is 128 KiB each).
const READ_BUFFER: usize = 4 * 1024;

/// Most chunks one `/ws/stream` reply may ask for.
const MAX_CHUNKS: u32 = 10_000;

/// The WebSocket query knobs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WsKnobs {
    reply_delay: Option<String>,
    chunks: Option<u32>,
    interval: Option<String>,
    drop_after: Option<u64>,
    #[serde(default)]
    silent: bool,
}

/// Parsed knobs.
#[derive(Clone, Copy, Debug)]
struct Behaviour {
    reply_delay: Duration,
    chunks: u32,
    interval: Duration,
    drop_after: Option<u64>,
    silent: bool,
}

impl WsKnobs {
    fn parse(self) -> Result<Behaviour, String> {
        let duration = |text: Option<String>, default| match text {
            Some(t) => parse_duration(&t),
            None => Ok(default),
        };
        let chunks = self.chunks.unwrap_or(5);
        if chunks > MAX_CHUNKS {
            return Err(format!("?chunks= is at most {MAX_CHUNKS}"));
        }
        Ok(Behaviour {
            reply_delay: duration(self.reply_delay, Duration::ZERO)
                .map_err(|e| format!("bad ?replyDelay=: {e}"))?,
            chunks,
            interval: duration(self.interval, Duration::from_millis(20))
                .map_err(|e| format!("bad ?interval=: {e}"))?,
            drop_after: self.drop_after,
            silent: self.silent,
        })
    }
}

/// Which endpoint.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Echo,
    Stream,
}

/// `GET /ws/echo`.
pub(crate) async fn echo(
    State(state): State<Arc<AppState>>,
    Query(knobs): Query<WsKnobs>,
    upgrade: WebSocketUpgrade,
) -> Response {
    accept(state, knobs, upgrade, Mode::Echo)
}

/// `GET /ws/stream`.
pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
    Query(knobs): Query<WsKnobs>,
    upgrade: WebSocketUpgrade,
) -> Response {
    accept(state, knobs, upgrade, Mode::Stream)
}

fn accept(state: Arc<AppState>, knobs: WsKnobs, upgrade: WebSocketUpgrade, mode: Mode) -> Response {
    let behaviour = match knobs.parse() {
        Ok(b) => b,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    upgrade
        .read_buffer_size(READ_BUFFER)
        // Picked when the client offers it (clients that offer a subprotocol need one back).
        .protocols(["json"])
        .on_upgrade(move |socket| serve(state, socket, behaviour, mode))
        .into_response()
}

async fn serve(state: Arc<AppState>, socket: WebSocket, b: Behaviour, mode: Mode) {
    let stats = &state.stats;
    bump(&stats.ws_connections);
    let open = stats.ws_open.fetch_add(1, Ordering::Relaxed) + 1;
    stats.ws_open_max.fetch_max(open, Ordering::Relaxed);
    let (mut tx, mut rx) = socket.split();
    let mut received = 0u64;
    while let Some(Ok(message)) = rx.next().await {
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        bump(&stats.ws_messages_received);
        received += 1;
        if b.drop_after.is_some_and(|n| received >= n) {
            // Dropping both halves without a close frame: an abnormal close for the client.
            bump(&stats.ws_dropped);
            stats.ws_open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if b.silent {
            continue;
        }
        if !b.reply_delay.is_zero() && !state.sleep(b.reply_delay).await {
            break;
        }
        let replies: Vec<String> = match mode {
            Mode::Echo => vec![text],
            Mode::Stream => {
                let id = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(serde_json::Value::Null);
                let mut out: Vec<String> = (0..b.chunks)
                    .map(|i| json!({"chunk": i, "id": id}).to_string())
                    .collect();
                out.push(json!({"done": true, "id": id, "chunks": b.chunks}).to_string());
                out
            }
        };
        let last = replies.len().saturating_sub(1);
        for (i, reply) in replies.into_iter().enumerate() {
            if tx.send(Message::Text(reply.into())).await.is_err() {
                stats.ws_open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            bump(&stats.ws_messages_sent);
            if matches!(mode, Mode::Stream) && i < last && !state.sleep(b.interval).await {
                break;
            }
        }
    }
    let _ = tx.close().await;
    stats.ws_open.fetch_sub(1, Ordering::Relaxed);
}
