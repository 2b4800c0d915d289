//! The `websocket` step: connect, send messages (each may wait for a matching reply), hold
//! the connection open while receiving, close; measured per step into
//! [`WsMeasurements`] beside the step's HTTP-level figures.
//!
//! # Client
//! tokio-tungstenite over a TCP connection this module opens itself, so a refused connection
//! (`refused`) is told apart from a handshake that failed (`handshake`: a non-101 answer, TLS,
//! a broken upgrade, or no handshake within the timeout). `wss://` goes through rustls with the
//! platform verifier, as reqwest does for HTTPS, or with no verification at all under
//! `target.insecureSkipTlsVerify`.
//!
//! # URLs and allowed targets
//! `ws://`/`wss://` URLs are used as they are; anything else is joined to `target.baseUrl`
//! like a request URL ([`volley_core::target_policy::join_url`]), with `http` turned into `ws` and `https`
//! into `wss`. The URL (and a `Host` header) is checked against the allowed targets before the
//! TCP connection is opened: once compiled when it is known then, else per execution. A
//! refused session is not started and fails the step with kind `blocked`.
//!
//! # What counts as what
//! - The handshake is the step's HTTP request: `requests` counts connection attempts, the
//!   latency histograms hold connect times, the status is the handshake's.
//! - Message latency: from a send to the received message its `expect` matched. Chunk
//!   interval: time between consecutive data frames received on one connection (the first
//!   frame after a send is timed from the send). Bytes: payload bytes of data frames, both
//!   ways (no framing, no handshake).
//! - Errors by WebSocket kind ([`volley_core::metrics::websocket::WS_ERROR_KINDS`]) and, for
//!   the step's verdict and `retry.on`, by request kind: `refused` is `connect`, `handshake`
//!   is `4xx`/`5xx` for such an answer, `timeout` when it did not finish in time, else
//!   `connect`; `closed` (the connection ended without a close frame, with a close code
//!   other than 1000/1001, or while a reply was still expected) is `connect`;
//!   `expect_timeout` is `timeout`.
//! - `check` and `extract` read the last reply an `expect` matched (else the last message
//!   received) as a body, with status 101 and the handshake response's headers.
//! - `retry` re-runs the connection attempt only: once a session has sent messages, they are
//!   not sent again (they need not be idempotent).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use reqwest::Url;
use reqwest::header::{HOST, HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use serde_json_path::JsonPath;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use volley_core::metrics::histogram::record_latency;
use volley_core::metrics::websocket::{WsCounters, WsMeasurements};
use volley_core::target_policy::{PolicyError, TargetPolicy};
use volley_crds::spec::{ErrorKind, Step, Target, WebSocket, WsExpect};

use crate::check::{CheckTally, Checks};
use crate::custom_metrics::{CompiledCustomMetrics, Observed};
use crate::extract::json_text;
use crate::extract::{BODY_CAP, CompiledExtractor, Received, compile_json_path, compile_regex};
use crate::render::{TemplateCompiler, Text};
use crate::retry::RetryPolicy;
use crate::step_error::StepError;
use crate::vu::VuContext;

/// Bytes tungstenite reads from the socket at a time. Its default (128 KiB per connection)
/// would cost 1.3 GB at 10,000 open connections; streamed replies are small frames.
const READ_BUFFER: usize = 4 * 1024;

/// How long a normal close waits for the server's close frame before the connection is
/// dropped anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Longest message kept for `check` and `extract` (as for HTTP bodies).
const KEEP_CAP: usize = BODY_CAP;

/// What a refusal shows instead of a host that holds an `${env:...}` value.
const HIDDEN_HOST: &str = "(a host holding an ${env:...} value, not shown)";

/// Connections of one step open right now, and the most open at once.
#[derive(Debug, Default)]
pub(crate) struct OpenGauge {
    open: AtomicU64,
    max: AtomicU64,
}

impl OpenGauge {
    /// (open now, most open at once).
    pub(crate) fn read(&self) -> (u64, u64) {
        (
            self.open.load(Ordering::Relaxed),
            self.max.load(Ordering::Relaxed),
        )
    }

    fn opened(self: &Arc<Self>) -> OpenGuard {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        OpenGuard(self.clone())
    }
}

/// Counts a connection as open until dropped (also when the VU's future is cancelled).
struct OpenGuard(Arc<OpenGauge>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one execution of a `websocket` step measured, recorded into the step's
/// [`WsMeasurements`] with [`record`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WsOutcome {
    /// Connect time of each attempt whose handshake completed.
    pub connect: Vec<Duration>,
    /// Latency of each expected reply that came.
    pub messages: Vec<Duration>,
    /// Intervals between consecutive received data frames.
    pub chunks: Vec<Duration>,
    /// Counted figures (the gauges are left at 0; they are read live).
    pub counters: WsCounters,
}

/// Adds one execution's figures to the step's WebSocket measurements.
pub fn record(m: &mut WsMeasurements, outcome: &WsOutcome) {
    for d in &outcome.connect {
        record_latency(&mut m.connect, *d);
    }
    for d in &outcome.messages {
        record_latency(&mut m.message, *d);
    }
    for d in &outcome.chunks {
        record_latency(&mut m.chunk, *d);
    }
    let (open, open_max) = (m.counters.open, m.counters.open_max);
    m.counters.add(&outcome.counters);
    m.counters.open = open;
    m.counters.open_max = open_max;
}

/// One connection attempt, as the step's HTTP-level sample.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Attempt {
    /// Connect time (to the handshake's end or failure); from `not_before` for the first.
    pub(crate) latency: Duration,
    /// Connect time from the actual start of the attempt.
    pub(crate) latency_sent: Duration,
    /// The handshake response's status, if one came.
    pub(crate) status: Option<u16>,
    /// What went wrong with the attempt, if anything.
    pub(crate) error: Option<ErrorKind>,
}

/// What running a `websocket` step produced; `crate::step` turns it into a step outcome.
pub(crate) struct WsRun {
    /// One per connection attempt; empty when nothing was attempted (render or allow-list).
    pub(crate) attempts: Vec<Attempt>,
    /// Payload bytes sent and received over the session.
    pub(crate) bytes: (u64, u64),
    /// From `not_before` to the end of the session.
    pub(crate) step_latency: Duration,
    /// Check conditions.
    pub(crate) checks: CheckTally,
    /// The step's verdict.
    pub(crate) error: Option<ErrorKind>,
    /// The WebSocket figures.
    pub(crate) outcome: WsOutcome,
    /// The step's custom metrics, read from the message its checks judged (the handshake
    /// response's headers for `header` sources).
    pub(crate) custom: Observed,
}

/// How a received message is matched.
enum Matcher {
    Json(JsonPath, Option<String>),
    Contains(Vec<u8>),
    Regex(regex::bytes::Regex),
}

impl Matcher {
    fn matches(&self, message: &Received) -> bool {
        match self {
            Matcher::Json(path, None) => message.json_first(path).is_some(),
            Matcher::Json(path, Some(equals)) => message
                .json_first(path)
                .is_some_and(|v| json_text(v) == equals.as_str()),
            Matcher::Contains(needle) => {
                needle.is_empty() || message.body.windows(needle.len()).any(|w| w == needle)
            }
            Matcher::Regex(re) => re.is_match(&message.body),
        }
    }
}

struct CompiledMessage {
    send: Text,
    expect: Option<(Matcher, Duration)>,
}

enum WsUrl {
    Static(Url),
    Dynamic { base: String, path: Text },
}

/// A `websocket` step prepared once per run.
pub(crate) struct CompiledWebSocket {
    /// The URL template, for `Debug` (redacted) and for hiding secret hosts.
    pub(crate) url_text: Text,
    url: WsUrl,
    headers: Vec<(HeaderName, Text)>,
    subprotocols: Option<HeaderValue>,
    messages: Vec<CompiledMessage>,
    hold: Duration,
    timeout: Duration,
    checks: Checks,
    extract: Vec<(String, CompiledExtractor)>,
    custom: CompiledCustomMetrics,
    retry: RetryPolicy,
    tls: Arc<rustls::ClientConfig>,
    policy: Option<Arc<TargetPolicy>>,
    gauge: Arc<OpenGauge>,
}

/// The rustls client config of `wss://`: the platform's verifier (as reqwest), or none at all
/// with `insecureSkipTlsVerify`. aws-lc-rs, the provider the rest of the tree uses.
fn tls_config(insecure: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous();
    let config = if insecure {
        builder.with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let verifier =
            rustls_platform_verifier::Verifier::new(provider).map_err(|e| e.to_string())?;
        builder.with_custom_certificate_verifier(Arc::new(verifier))
    };
    Ok(config.with_no_client_auth())
}

/// `insecureSkipTlsVerify`: any certificate is accepted (signatures are still checked, so the
/// handshake itself is sound).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `http(s)://…` base URL as the WebSocket base: `ws(s)://…`, without trailing slashes.
fn ws_base(base: &str) -> Result<String, String> {
    let trimmed = base.trim_end_matches('/');
    let lower = trimmed.get(..8).unwrap_or(trimmed).to_ascii_lowercase();
    if lower.starts_with("https://") {
        Ok(format!("wss://{}", &trimmed[8..]))
    } else if lower.starts_with("http://") {
        Ok(format!("ws://{}", &trimmed[7..]))
    } else {
        Err(format!("`{base}` is not an http(s) URL"))
    }
}

/// Parses an absolute ws(s) URL.
fn parse_ws_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL ({e})"))?;
    match url.scheme() {
        "ws" | "wss" => Ok(url),
        other => Err(format!(
            "`{text}` uses scheme `{other}`; a websocket step needs ws or wss"
        )),
    }
}

impl CompiledWebSocket {
    /// Compiles the `websocket` of `step` for `target`.
    pub(crate) fn compile(
        step: &Step,
        ws: &WebSocket,
        target: &Target,
        compiler: &mut TemplateCompiler<'_>,
    ) -> Result<CompiledWebSocket, StepError> {
        let base =
            ws_base(&target.base_url).map_err(|why| compiler.invalid("target.baseUrl", why))?;
        let url_text = compiler.text(&ws.url, "websocket.url")?;
        let url = match compiler.static_url(&base, &url_text, "websocket.url", parse_ws_url)? {
            Some(parsed) => WsUrl::Static(parsed),
            None => WsUrl::Dynamic {
                base,
                path: url_text.clone(),
            },
        };
        let headers: Vec<(HeaderName, Text)> = compiler
            .header_texts(&target.headers, &ws.headers, "websocket.headers")?
            .into_iter()
            .map(|h| (h.name, h.text))
            .collect();
        let subprotocols = if ws.subprotocols.is_empty() {
            None
        } else {
            Some(
                HeaderValue::from_str(&ws.subprotocols.join(", "))
                    .map_err(|_| compiler.invalid("websocket.subprotocols", "not valid tokens"))?,
            )
        };
        let mut messages = Vec::with_capacity(ws.messages.len());
        for (i, m) in ws.messages.iter().enumerate() {
            let field = format!("websocket.messages[{i}]");
            let send = compiler.text(&m.send, &format!("{field}.send"))?;
            let expect = match &m.expect {
                Some(e) => Some((
                    compile_matcher(e, &format!("{field}.expect"), compiler)?,
                    e.timeout.get(),
                )),
                None => None,
            };
            if let Some((_, timeout)) = &expect
                && timeout.is_zero()
            {
                return Err(
                    compiler.invalid(&format!("{field}.expect.timeout"), "must be longer than 0s")
                );
            }
            messages.push(CompiledMessage { send, expect });
        }
        let checks = Checks::compile(step.check.as_ref(), compiler)?;
        let extract = CompiledExtractor::compile_all(&step.extract, compiler)?;
        let custom = CompiledCustomMetrics::compile(&step.metrics, compiler)?;
        let timeout = ws.timeout.unwrap_or(target.timeout).get();
        if timeout.is_zero() {
            return Err(compiler.invalid("websocket.timeout", "must be longer than 0s"));
        }
        let tls = tls_config(target.insecure_skip_tls_verify)
            .map_err(|why| compiler.invalid("target", format!("cannot set up TLS: {why}")))?;
        Ok(CompiledWebSocket {
            url_text,
            url,
            headers,
            subprotocols,
            messages,
            hold: ws.hold.map(|h| h.get()).unwrap_or_default(),
            timeout,
            checks,
            extract,
            custom,
            retry: RetryPolicy::new(step.retry.as_ref()),
            tls: Arc::new(tls),
            policy: None,
            gauge: Arc::new(OpenGauge::default()),
        })
    }

    /// The step's open-connection gauge.
    pub(crate) fn gauge(&self) -> &OpenGauge {
        &self.gauge
    }

    /// Limits the step to `policy`'s targets: a URL known now is checked now (`Err`: the run
    /// must not start), others before each session.
    pub(crate) fn restrict(&mut self, policy: &Arc<TargetPolicy>) -> Result<(), PolicyError> {
        if policy.is_empty() {
            self.policy = None;
            return Ok(());
        }
        if let WsUrl::Static(url) = &self.url {
            policy
                .check_url(url)
                .map_err(|e| hide(e, self.url_text.has_secret()))?;
        }
        self.policy = Some(policy.clone());
        Ok(())
    }

    /// Runs one session (see the module documentation).
    pub(crate) async fn run(
        &self,
        step_name: &str,
        ctx: &mut VuContext,
        not_before: Instant,
    ) -> WsRun {
        let start = Instant::now();
        let origin = not_before.min(start);
        let mut run = WsRun {
            attempts: Vec::new(),
            bytes: (0, 0),
            step_latency: Duration::ZERO,
            checks: CheckTally::default(),
            error: None,
            custom: Observed::default(),
            outcome: WsOutcome::default(),
        };
        let rendered = match self.render(ctx) {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(step = step_name, %why, "websocket session not started");
                run.error = Some(ErrorKind::Extract);
                run.step_latency = origin.elapsed();
                return run;
            }
        };
        if let Err(refused) = self.allowed(&rendered) {
            tracing::debug!(step = step_name, "websocket session not started: {refused}");
            run.error = Some(ErrorKind::Blocked);
            run.step_latency = origin.elapsed();
            return run;
        }

        // Connect, retrying per the policy.
        let mut attempt = 1;
        let (mut socket, handshake_headers) = loop {
            let began = Instant::now();
            let from = if attempt == 1 { origin } else { began };
            run.outcome.counters.connections += 1;
            let result = self.connect(&rendered).await;
            let done = Instant::now();
            let (status, error) = match result {
                Ok((socket, status, headers)) => {
                    run.outcome.connect.push(done - began);
                    run.outcome.counters.connected += 1;
                    run.attempts.push(Attempt {
                        latency: done - from,
                        latency_sent: done - began,
                        status: Some(status),
                        error: None,
                    });
                    break (socket, headers);
                }
                Err(failure) => {
                    run.outcome.counters.count_error(failure.ws_kind);
                    (failure.status, failure.kind)
                }
            };
            run.attempts.push(Attempt {
                latency: done - from,
                latency_sent: done - began,
                status,
                error: Some(error),
            });
            if !self.retry.retries(attempt, error) {
                run.error = Some(error);
                run.checks = self.checks.evaluate(None, origin.elapsed());
                run.step_latency = origin.elapsed();
                return run;
            }
            tokio::time::sleep(self.retry.pause(attempt)).await;
            attempt += 1;
        };

        let open_guard = self.gauge.opened();
        let mut session = Session {
            socket: &mut socket,
            last_frame: None,
            last_message: None,
            out: &mut run.outcome,
        };
        let mut error = None;
        let mut reply: Option<Vec<u8>> = None;
        for (message, text) in self.messages.iter().zip(&rendered.messages) {
            let sent_at = Instant::now();
            session.out.counters.messages_sent += 1;
            session.out.counters.bytes_sent += text.len() as u64;
            if session
                .socket
                .send(Message::text(text.as_str()))
                .await
                .is_err()
            {
                error = Some(("closed", ErrorKind::Connect));
                break;
            }
            // A reply is timed from its send, not from a frame of an earlier exchange.
            session.last_frame = Some(sent_at);
            let Some((matcher, timeout)) = &message.expect else {
                continue;
            };
            session.out.counters.messages_expecting += 1;
            match session
                .receive_until(sent_at + *timeout, Some(matcher))
                .await
            {
                Waited::Matched(body) => {
                    session.out.messages.push(sent_at.elapsed());
                    reply = Some(body);
                }
                Waited::TimedOut => {
                    error = Some(("expect_timeout", ErrorKind::Timeout));
                    break;
                }
                Waited::Closed { .. } => {
                    // Whatever the close code: the reply this session waits for cannot come.
                    error = Some(("closed", ErrorKind::Connect));
                    break;
                }
            }
        }
        let mut closed_by_server = false;
        if error.is_none() && !self.hold.is_zero() {
            match session
                .receive_until(Instant::now() + self.hold, None)
                .await
            {
                Waited::Closed { normal: true } => closed_by_server = true,
                Waited::Closed { normal: false } => error = Some(("closed", ErrorKind::Connect)),
                Waited::TimedOut | Waited::Matched(_) => {}
            }
        }
        let last_message = session.last_message.take();
        if let Some((ws_kind, _)) = error {
            session.out.counters.count_error(ws_kind);
        }
        if !closed_by_server && !matches!(error, Some(("closed", _))) {
            session.close().await;
        }
        drop(open_guard);

        run.bytes = (
            run.outcome.counters.bytes_sent,
            run.outcome.counters.bytes_received,
        );
        let body = reply.or(last_message);
        let response = body.map(|body| {
            Received::new(
                StatusCode::SWITCHING_PROTOCOLS,
                handshake_headers.clone(),
                body,
                false,
            )
        });
        let elapsed = origin.elapsed();
        run.checks = self.checks.evaluate(response.as_ref(), elapsed);
        run.custom = self.custom.observe(response.as_ref());
        let values: Vec<(String, Option<String>)> = self
            .extract
            .iter()
            .map(|(name, ex)| (name.clone(), response.as_ref().and_then(|r| ex.extract(r))))
            .collect();
        run.error = match error {
            Some((_, kind)) => Some(kind),
            None if run.checks.failed > 0 => Some(ErrorKind::Check),
            None if values.iter().any(|(_, v)| v.is_none()) => Some(ErrorKind::Extract),
            None => None,
        };
        for (name, value) in values {
            match value {
                Some(v) => {
                    ctx.extracted.insert(name, v);
                }
                None => {
                    ctx.extracted.remove(&name);
                }
            }
        }
        run.step_latency = elapsed;
        run
    }

    fn render(&self, ctx: &VuContext) -> Result<Rendered, String> {
        let url = match &self.url {
            WsUrl::Static(url) => url.clone(),
            WsUrl::Dynamic { base, path } => {
                let path = path
                    .render(ctx)
                    .map_err(|e| format!("no value for {}", e.missing))?;
                parse_ws_url(&volley_core::target_policy::join_url(base, &path))
                    .map_err(|_| "the rendered URL is not an absolute ws(s) URL".to_string())?
            }
        };
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 1);
        for (name, text) in &self.headers {
            let value = text
                .render(ctx)
                .map_err(|e| format!("no value for {}", e.missing))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("the rendered `{name}` header is not a valid header value"))?;
            value.set_sensitive(text.has_secret());
            headers.insert(name.clone(), value);
        }
        if let Some(protocols) = &self.subprotocols {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, protocols.clone());
        }
        let messages = self
            .messages
            .iter()
            .map(|m| {
                m.send
                    .render(ctx)
                    .map_err(|e| format!("no value for {}", e.missing))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rendered {
            url,
            headers,
            messages,
        })
    }

    fn allowed(&self, rendered: &Rendered) -> Result<(), PolicyError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        if !matches!(self.url, WsUrl::Static(_)) {
            policy
                .check_url(&rendered.url)
                .map_err(|e| hide(e, self.url_text.has_secret()))?;
        }
        if let Some(host) = rendered.headers.get(HOST) {
            let text = host.to_str().unwrap_or("\u{fffd}");
            policy
                .check_host_header(&rendered.url, text)
                .map_err(|e| hide(e, host.is_sensitive()))?;
        }
        Ok(())
    }

    /// Opens the TCP connection and runs the handshake, within the step's timeout.
    async fn connect(&self, rendered: &Rendered) -> Result<Connected, ConnectFailure> {
        let deadline = Instant::now() + self.timeout;
        let failure = |ws_kind, kind, status| ConnectFailure {
            ws_kind,
            kind,
            status,
        };
        let host = rendered
            .url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .ok_or_else(|| failure("refused", ErrorKind::Connect, None))?;
        let port = rendered
            .url
            .port_or_known_default()
            .ok_or_else(|| failure("refused", ErrorKind::Connect, None))?;
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect((host, port))).await {
            Err(_) => return Err(failure("refused", ErrorKind::Timeout, None)),
            Ok(Err(_)) => return Err(failure("refused", ErrorKind::Connect, None)),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let mut request = rendered
            .url
            .as_str()
            .into_client_request()
            .map_err(|_| failure("handshake", ErrorKind::Connect, None))?;
        for (name, value) in &rendered.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        request
            .headers_mut()
            .entry(reqwest::header::USER_AGENT)
            .or_insert(HeaderValue::from_static(crate::transport::USER_AGENT));
        let connector = match rendered.url.scheme() {
            "wss" => Connector::Rustls(self.tls.clone()),
            _ => Connector::Plain,
        };
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let handshake = tokio_tungstenite::client_async_tls_with_config(
            request,
            tcp,
            Some(config),
            Some(connector),
        );
        match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => Err(failure("handshake", ErrorKind::Timeout, None)),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let kind = match status {
                    400..=499 => ErrorKind::Status4xx,
                    500.. => ErrorKind::Status5xx,
                    _ => ErrorKind::Connect,
                };
                Err(failure("handshake", kind, Some(status)))
            }
            Ok(Err(_)) => Err(failure("handshake", ErrorKind::Connect, None)),
            Ok(Ok((socket, response))) => Ok((
                socket,
                response.status().as_u16(),
                response.headers().clone(),
            )),
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Connected = (Socket, u16, HeaderMap);

struct ConnectFailure {
    ws_kind: &'static str,
    kind: ErrorKind,
    status: Option<u16>,
}

struct Rendered {
    url: Url,
    headers: HeaderMap,
    messages: Vec<String>,
}

fn hide(mut refused: PolicyError, secret: bool) -> PolicyError {
    if secret {
        refused.target = HIDDEN_HOST.to_string();
    }
    refused
}

fn compile_matcher(
    expect: &WsExpect,
    field: &str,
    compiler: &TemplateCompiler<'_>,
) -> Result<Matcher, StepError> {
    let set = usize::from(expect.json_path.is_some())
        + usize::from(expect.contains.is_some())
        + usize::from(expect.regex.is_some());
    if set != 1 {
        return Err(compiler.invalid(field, "set exactly one of jsonPath, contains, regex"));
    }
    if expect.equals.is_some() && expect.json_path.is_none() {
        return Err(compiler.invalid(&format!("{field}.equals"), "`equals` needs `jsonPath`"));
    }
    if let Some(path) = &expect.json_path {
        let path = compile_json_path(path, &format!("{field}.jsonPath"), compiler)?;
        return Ok(Matcher::Json(
            path,
            expect.equals.as_ref().map(|v| json_text(v).into_owned()),
        ));
    }
    if let Some(text) = &expect.contains {
        return Ok(Matcher::Contains(text.as_bytes().to_vec()));
    }
    match &expect.regex {
        Some(re) => compile_regex(re, &format!("{field}.regex"), compiler).map(Matcher::Regex),
        None => Err(compiler.invalid(field, "set exactly one of jsonPath, contains, regex")),
    }
}

/// How waiting for messages ended.
enum Waited {
    /// A message matched; its payload.
    Matched(Vec<u8>),
    /// The deadline passed.
    TimedOut,
    /// The connection ended; `normal` for a close frame with code 1000 or 1001.
    Closed { normal: bool },
}

/// An open connection and what it has received so far.
struct Session<'a> {
    socket: &'a mut Socket,
    /// When the last data frame came (or the last message was sent).
    last_frame: Option<Instant>,
    /// The last data frame's payload (up to [`KEEP_CAP`]), for `check` and `extract`.
    last_message: Option<Vec<u8>>,
    out: &'a mut WsOutcome,
}

impl Session<'_> {
    /// Receives until `deadline`, counting and timing every data frame; with a matcher, stops
    /// at the first frame that matches.
    async fn receive_until(&mut self, deadline: Instant, matcher: Option<&Matcher>) -> Waited {
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Waited::TimedOut,
                Ok(None) | Ok(Some(Err(_))) => return Waited::Closed { normal: false },
                Ok(Some(Ok(frame))) => frame,
            };
            let payload: Vec<u8> = match frame {
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Close(frame) => {
                    return Waited::Closed {
                        normal: is_normal_close(frame.as_ref()),
                    };
                }
                // Pings are answered by tungstenite; neither is a message.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            let now = Instant::now();
            self.out.counters.messages_received += 1;
            self.out.counters.bytes_received += payload.len() as u64;
            if let Some(previous) = self.last_frame.replace(now) {
                self.out.chunks.push(now - previous);
            }
            let kept: Vec<u8> = if payload.len() > KEEP_CAP {
                payload[..KEEP_CAP].to_vec()
            } else {
                payload
            };
            if let Some(matcher) = matcher {
                // Matchers read the payload only: no copy of the handshake headers per frame.
                let message = Received::new(
                    StatusCode::SWITCHING_PROTOCOLS,
                    HeaderMap::new(),
                    kept,
                    false,
                );
                if matcher.matches(&message) {
                    return Waited::Matched(message.body);
                }
                self.last_message = Some(message.body);
            } else {
                self.last_message = Some(kept);
            }
        }
    }

    /// Closes normally: a close frame, then the server's answer for up to [`CLOSE_WAIT`],
    /// counting what still arrives.
    async fn close(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if self.socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, self.socket.next()).await
        {
            if let Message::Text(_) | Message::Binary(_) = &frame {
                self.out.counters.messages_received += 1;
                self.out.counters.bytes_received += frame.len() as u64;
            }
        }
    }
}

fn is_normal_close(frame: Option<&CloseFrame>) -> bool {
    match frame {
        // A close frame without a code is a normal close (RFC 6455 §7.1.5: 1005).
        None => true,
        Some(f) => matches!(f.code, CloseCode::Normal | CloseCode::Away),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_turn_into_websocket_urls() {
        assert_eq!(ws_base("http://h:1/api/").unwrap(), "ws://h:1/api");
        assert_eq!(ws_base("HTTPS://h").unwrap(), "wss://h");
        assert!(ws_base("ftp://h").is_err());
        assert!(parse_ws_url("http://h/x").is_err());
        assert_eq!(
            parse_ws_url(&volley_core::target_policy::join_url(
                "ws://h:1/api",
                "/ws/echo"
            ))
            .unwrap()
            .as_str(),
            "ws://h:1/api/ws/echo"
        );
    }

    #[test]
    fn the_gauge_counts_open_connections_and_their_peak() {
        let gauge = Arc::new(OpenGauge::default());
        let a = gauge.opened();
        let b = gauge.opened();
        drop(a);
        let c = gauge.opened();
        assert_eq!(gauge.read(), (2, 2));
        drop((b, c));
        assert_eq!(gauge.read(), (0, 2));
    }

    #[test]
    fn closes_with_1000_1001_or_no_code_are_normal() {
        assert!(is_normal_close(None));
        let frame = |code| CloseFrame {
            code,
            reason: "".into(),
        };
        assert!(is_normal_close(Some(&frame(CloseCode::Normal))));
        assert!(is_normal_close(Some(&frame(CloseCode::Away))));
        assert!(!is_normal_close(Some(&frame(CloseCode::Error))));
    }
}
