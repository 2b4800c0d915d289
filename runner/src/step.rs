//! One step for one virtual user: compile once per run, run many times.
//!
//! [`CompiledStep::compile`] does everything that does not depend on a VU: templates are
//! parsed, `${env:...}` resolved, JSON paths and regexes compiled, the URL joined with the
//! base URL, multipart files read, and static parts (URL, headers, bodies) rendered once.
//! [`run_step`] then renders what is left **once per step execution** — retries and polls
//! resend the very same request, so an `Idempotency-Key: ${uuid}` stays the same across the
//! retries of one execution and the server can deduplicate them.
//!
//! # URLs
//! A step URL starting with `http://` or `https://` is used as is (any other `scheme://` is
//! rejected). Anything else is relative
//! to `target.baseUrl` *including its path*: `http://h:1/api` + `/items` is
//! `http://h:1/api/items` (not `http://h:1/items` as RFC 3986 resolution would give), without
//! a doubled slash when the base ends with `/`. A URL starting with `?` or `#` is appended to
//! the base as is; any other relative URL gets a `/` in between. See [`join_url`].
//!
//! # Outcome
//! Each HTTP exchange (every retry attempt, every poll) is one [`RequestSample`]. A sample's
//! `error` describes that exchange: transport (`connect`, `timeout`), status (`4xx`, `5xx`),
//! and — on the exchange whose response the checks and extractors were evaluated on — `check`
//! or `extract`. [`StepOutcome::error`] is the step's verdict and is the only place an
//! `until` timeout shows. Precedence: transport or status error of the final exchange, then
//! `until` timeout, then `check`, then `extract`.
//!
//! # Allowed targets
//! With a [`TargetPolicy`] (`--allowed-targets`, see [`volley_core::target_policy`]) set by
//! [`CompiledStep::restrict`], a URL known once compiled (literal, or templated only with
//! `${env:...}`) is checked then, and a refusal fails the run before any load. A URL rendered
//! per execution and every redirect hop are checked right before they would be sent: a refused
//! request is not sent and fails the step with kind `blocked` (never retried). Sending nothing
//! to a host the administrator did not allow is the point, so the check sits in front of the
//! client, not in a DNS resolver. A `Host` header is checked before each send too
//! ([`TargetPolicy::check_host_header`]): a host-based router would deliver the request to
//! the host it names. A refusal whose host comes from `${env:...}` does not show the host.
//!
//! # Byte counts (approximate)
//! Sent: request line, the headers Volley sets plus `host`, `accept` and `user-agent`, a
//! `content-length` line, and the body. Received: status line, headers and body bytes as
//! delivered (chunked framing excluded; there is no decompression). TLS records, TCP/IP
//! overhead, and the hops of followed redirects are not counted.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, HeaderMap, HeaderName, HeaderValue, LOCATION,
    SET_COOKIE,
};
use reqwest::{Method, Url};
use serde_json_path::JsonPath;
use tokio::time::Instant;
use volley_core::scenario::StepKind;
use volley_core::target_policy::{PolicyError, TargetPolicy, join_url};
use volley_core::template::Reference;
use volley_crds::spec::{ErrorKind, MultipartPart, Request, Sleep, Step, Target};

use crate::check::{CheckTally, Checks};
use crate::cookies::CookieJar;
use crate::custom_metrics::CompiledCustomMetrics;
pub use crate::custom_metrics::Observed;
use crate::extract::{BODY_CAP, CompiledExtractor, Received, compile_json_path, json_text};
use crate::render::{EnvLookup, HeaderText, JsonText, RenderError, TemplateCompiler, Text};
use crate::retry::RetryPolicy;
use crate::transport::{Connections, Endpoint, Response};
use crate::websocket::{CompiledWebSocket, WsOutcome};

// Defined below `check`, `extract` and `render`, which use them too; part of this module's API.
pub use crate::step_error::StepError;
pub use crate::vu::VuContext;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = crate::transport::USER_AGENT;

/// Redirects [`run_step`] follows before a request fails (kind `connect`).
const MAX_REDIRECTS: usize = 10;

/// How long idle pooled connections are kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What a refusal shows instead of a host that holds an `${env:...}` value.
const HIDDEN_HOST: &str = "(a host holding an ${env:...} value, not shown)";

/// `refused` with its host hidden when `secret`: environment values are never printed, and
/// the host of `http://${env:KEY}.example.com` is one.
fn hide_host(mut refused: PolicyError, secret: bool) -> PolicyError {
    if secret {
        refused.target = HIDDEN_HOST.to_string();
    }
    refused
}

/// Builds the HTTP client a runner shares between all its VUs: connection pool, TLS
/// (`insecureSkipTlsVerify` accepts any certificate), `TCP_NODELAY`, no cookie store
/// (cookies are per VU, see [`VuContext::cookies`]), no client-wide timeout (each request gets
/// the step's or target's), and no automatic redirects: [`run_step`] follows up to 10 itself,
/// so redirect responses' cookies reach the VU's jar.
///
/// Proxy variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, any case) are ignored: requests
/// go straight to the host the allow-list checked. Through a proxy every request would reach
/// the proxy's host instead, whatever the list says (issue #19).
pub fn build_client(target: &Target) -> Result<reqwest::Client, StepError> {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(USER_AGENT)
        .tls_danger_accept_invalid_certs(target.insecure_skip_tls_verify)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build()
        .map_err(StepError::Client)
}

/// One HTTP exchange (each retry attempt and each poll is one).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSample {
    /// Response time. For the first exchange of a step it is measured from the step's
    /// `not_before` (so time spent waiting for a VU counts: no coordinated omission); for the
    /// others from their own send.
    pub latency: Duration,
    /// Response time from the actual send.
    pub latency_sent: Duration,
    /// Approximate bytes sent (see the module documentation).
    pub bytes_sent: u64,
    /// Approximate bytes received (see the module documentation).
    pub bytes_received: u64,
    /// The response status, if a response head arrived.
    pub status: Option<u16>,
    /// What went wrong with this exchange, if anything.
    pub error: Option<ErrorKind>,
}

/// What running a step produced.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutcome {
    /// One per HTTP exchange; empty for a sleep, or when the request could not be rendered.
    pub samples: Vec<RequestSample>,
    /// End to end, retries and polls included, from `not_before`.
    pub step_latency: Duration,
    /// Check conditions that held.
    pub checks_passed: u32,
    /// Check conditions that did not hold.
    pub checks_failed: u32,
    /// The step's verdict.
    pub error: Option<ErrorKind>,
    /// The step's custom metrics, read from the response the verdict was made on.
    pub custom: Observed,
    /// A `websocket` step's own figures (its handshakes are the samples above).
    pub websocket: Option<Box<WsOutcome>>,
}

/// A step prepared once per run: templates parsed, JSON paths and regexes compiled, URL base
/// resolved.
pub struct CompiledStep {
    name: String,
    kind: StepAction,
}

/// What a compiled step does when run.
enum StepAction {
    Sleep(Duration, Duration),
    Request(Box<CompiledRequest>),
    WebSocket(Box<CompiledWebSocket>),
}

impl fmt::Debug for CompiledStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written: compiled parts may hold environment values, which must never be printed.
        let mut d = f.debug_struct("CompiledStep");
        d.field("name", &self.name);
        match &self.kind {
            StepAction::Sleep(min, max) => d.field("sleep", &(min, max)),
            StepAction::Request(r) => d.field("method", &r.method).field("url", &r.url_text),
            StepAction::WebSocket(ws) => d.field("websocket", &ws.url_text),
        };
        d.finish_non_exhaustive()
    }
}

struct CompiledRequest {
    method: Method,
    /// The URL template, for `Debug` (redacted).
    url_text: Text,
    url: UrlTemplate,
    /// A literal plain-HTTP URL's endpoint, derived once (see [`crate::transport`]).
    endpoint: Option<Endpoint>,
    headers: Vec<(HeaderName, HeaderTemplate)>,
    /// A `Cookie` header given in the manifest; the jar's cookies are appended to it.
    cookie: Option<Text>,
    body: BodyTemplate,
    timeout: Duration,
    checks: Checks,
    extract: Vec<(String, CompiledExtractor)>,
    custom: CompiledCustomMetrics,
    retry: RetryPolicy,
    until: Option<UntilPolicy>,
    /// Whether the body must be kept (checks, extractors or polling read it).
    keep_body: bool,
    /// The allowed targets, checked before each send; `None` allows everything.
    policy: Option<Arc<TargetPolicy>>,
    /// Whether a refused send has been logged (once per step, not once per request).
    warned: AtomicBool,
}

enum UrlTemplate {
    Static(Url),
    /// Rendered per execution, then joined with the base URL.
    Dynamic {
        base: String,
        path: Text,
    },
}

enum HeaderTemplate {
    Static(HeaderValue),
    Dynamic { text: Text, sensitive: bool },
}

enum BodyTemplate {
    None,
    Static(Bytes),
    Text(Text),
    Json(JsonText),
    Multipart(Vec<MultipartPiece>),
}

enum MultipartPiece {
    Bytes(Bytes),
    Text(Text),
}

struct UntilPolicy {
    path: JsonPath,
    equals: String,
    every: Duration,
    timeout: Duration,
}

impl CompiledStep {
    /// Prepares `step` for `target`. `manifest_dir` resolves multipart `file` parts, which are
    /// read here, once. Fails on anything that would make every execution fail: bad templates,
    /// unset `${env:...}` variables (all listed), bad URLs, methods, header names, JSON paths,
    /// regexes, unreadable files, and `configMapRef` parts (cluster only).
    pub fn compile(
        step: &Step,
        target: &Target,
        manifest_dir: &Path,
    ) -> Result<CompiledStep, StepError> {
        compile_with_env(step, target, manifest_dir, &|name| std::env::var(name))
    }

    /// The name metrics use ([`Step::display_name`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for an HTTP request or WebSocket step, false for a sleep.
    pub fn is_request(&self) -> bool {
        match self.kind {
            StepAction::Request(_) | StepAction::WebSocket(_) => true,
            StepAction::Sleep(..) => false,
        }
    }

    /// A `websocket` step's connections: (open now, most open at once).
    pub fn websocket_open(&self) -> Option<(u64, u64)> {
        match &self.kind {
            StepAction::WebSocket(ws) => Some(ws.gauge().read()),
            StepAction::Request(_) | StepAction::Sleep(..) => None,
        }
    }

    /// Limits the step to `policy`'s targets. A URL already known (literal, or templated with
    /// `${env:...}` only) is checked now: `Err` means every execution would be refused, so the
    /// run must not start. Otherwise the rendered URL and every redirect hop are checked before
    /// each send (see the module documentation). An empty policy changes nothing.
    pub fn restrict(&mut self, policy: &Arc<TargetPolicy>) -> Result<(), PolicyError> {
        let request = match &mut self.kind {
            StepAction::Request(request) => request,
            StepAction::WebSocket(ws) => return ws.restrict(policy),
            StepAction::Sleep(..) => return Ok(()),
        };
        if policy.is_empty() {
            request.policy = None;
            return Ok(());
        }
        if let UrlTemplate::Static(url) = &request.url {
            policy
                .check_url(url)
                .map_err(|e| hide_host(e, request.url_text.has_secret()))?;
        }
        request.policy = Some(policy.clone());
        Ok(())
    }
}

/// [`CompiledStep::compile`] with an injectable environment.
pub(crate) fn compile_with_env(
    step: &Step,
    target: &Target,
    manifest_dir: &Path,
    env: EnvLookup<'_>,
) -> Result<CompiledStep, StepError> {
    let name = step.display_name();
    let mut compiler = TemplateCompiler::new(&name, env);
    let step_kind = StepKind::of(step).map_err(|e| compiler.invalid(e.field, e.message))?;
    let kind = match step_kind {
        StepKind::Sleep(sleep) => {
            let (min, max) = match sleep {
                Sleep::Fixed(d) => (d.get(), d.get()),
                Sleep::Range { min, max } => (min.get(), max.get()),
            };
            if min > max {
                return Err(compiler.invalid(
                    "sleep.min",
                    format!(
                        "min {} is longer than max {}",
                        sleep_text(min),
                        sleep_text(max)
                    ),
                ));
            }
            StepAction::Sleep(min, max)
        }
        StepKind::Request(request) => StepAction::Request(Box::new(compile_request(
            step,
            request,
            target,
            manifest_dir,
            &mut compiler,
        )?)),
        StepKind::WebSocket(ws) => StepAction::WebSocket(Box::new(CompiledWebSocket::compile(
            step,
            ws,
            target,
            &mut compiler,
        )?)),
    };
    if !compiler.missing_env.is_empty() {
        let names = compiler.missing_env.into_iter().collect();
        return Err(StepError::MissingEnv { step: name, names });
    }
    Ok(CompiledStep { name, kind })
}

fn sleep_text(d: Duration) -> String {
    volley_crds::Duration(d).to_string()
}

fn compile_request(
    step: &Step,
    request: &Request,
    target: &Target,
    manifest_dir: &Path,
    compiler: &mut TemplateCompiler<'_>,
) -> Result<CompiledRequest, StepError> {
    let method =
        Method::from_bytes(request.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            compiler.invalid(
                "request.method",
                format!("`{}` is not an HTTP method", request.method),
            )
        })?;

    // URL.
    let base = compile_base_url(&target.base_url, compiler)?;
    let url_text = compiler.text(&request.url, "request.url")?;
    let url = match compiler.static_url(&base, &url_text, "request.url", parse_http_url)? {
        Some(parsed) => UrlTemplate::Static(parsed),
        None => UrlTemplate::Dynamic {
            base,
            path: url_text.clone(),
        },
    };

    // Headers: the target's, then the step's (a step header replaces a target header of the
    // same name, whatever the case).
    let mut headers: Vec<(HeaderName, HeaderTemplate)> = Vec::new();
    let mut cookie = None;
    for HeaderText { name, text, field } in
        compiler.header_texts(&target.headers, &request.headers, "request.headers")?
    {
        if name == COOKIE {
            cookie = Some(text);
            continue;
        }
        let template = match text.static_value() {
            Some(value) => {
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    compiler.invalid(
                        &field,
                        "not a valid header value (control characters or non-ASCII text)",
                    )
                })?;
                value.set_sensitive(text.has_secret());
                HeaderTemplate::Static(value)
            }
            None => HeaderTemplate::Dynamic {
                sensitive: text.has_secret(),
                text,
            },
        };
        headers.push((name, template));
    }

    // Body.
    let bodies = usize::from(request.json.is_some())
        + usize::from(request.body.is_some())
        + usize::from(!request.multipart.is_empty());
    if bodies > 1 {
        return Err(compiler.invalid("request", "set at most one of json, body, multipart"));
    }
    let has_content_type = headers.iter().any(|(n, _)| *n == CONTENT_TYPE);
    let body = if let Some(json) = &request.json {
        if !has_content_type {
            headers.push((
                CONTENT_TYPE,
                HeaderTemplate::Static(HeaderValue::from_static("application/json")),
            ));
        }
        let json = JsonText::compile(json, "request.json", compiler)?;
        match json.static_value() {
            Some(raw) => BodyTemplate::Static(Bytes::from(raw.to_owned())),
            None => BodyTemplate::Json(json),
        }
    } else if let Some(body) = &request.body {
        let text = compiler.text(body, "request.body")?;
        match text.static_value() {
            Some(raw) => BodyTemplate::Static(Bytes::from(raw)),
            None => BodyTemplate::Text(text),
        }
    } else if !request.multipart.is_empty() {
        let (pieces, content_type) = compile_multipart(&request.multipart, manifest_dir, compiler)?;
        // Ours always wins: the boundary must match the body.
        headers.retain(|(n, _)| *n != CONTENT_TYPE);
        headers.push((CONTENT_TYPE, HeaderTemplate::Static(content_type)));
        match pieces.as_slice() {
            [MultipartPiece::Bytes(all)] => BodyTemplate::Static(all.clone()),
            _ => BodyTemplate::Multipart(pieces),
        }
    } else {
        BodyTemplate::None
    };

    let checks = Checks::compile(step.check.as_ref(), compiler)?;
    let extract = CompiledExtractor::compile_all(&step.extract, compiler)?;
    let retry = RetryPolicy::new(step.retry.as_ref());
    let until = match &step.until {
        Some(until) => Some(UntilPolicy {
            path: compile_json_path(&until.json_path, "until.jsonPath", compiler)?,
            equals: until.equals.clone(),
            every: until.every.get(),
            timeout: until.timeout.get(),
        }),
        None => None,
    };
    let custom = CompiledCustomMetrics::compile(&step.metrics, compiler)?;
    let keep_body = checks.needs_body()
        || extract.iter().any(|(_, e)| e.needs_body())
        || custom.needs_body()
        || until.is_some();
    let timeout = request.timeout.unwrap_or(target.timeout).get();
    if timeout.is_zero() {
        return Err(compiler.invalid("request.timeout", "must be longer than 0s"));
    }
    let endpoint = match &url {
        UrlTemplate::Static(url) => Endpoint::of(url),
        UrlTemplate::Dynamic { .. } => None,
    };
    Ok(CompiledRequest {
        method,
        url_text,
        url,
        endpoint,
        headers,
        cookie,
        body,
        timeout,
        checks,
        extract,
        custom,
        retry,
        until,
        keep_body,
        policy: None,
        warned: AtomicBool::new(false),
    })
}

/// Checks `target.baseUrl` and returns it without trailing slashes.
fn compile_base_url(base: &str, compiler: &TemplateCompiler<'_>) -> Result<String, StepError> {
    let url = parse_http_url(base).map_err(|why| compiler.invalid("target.baseUrl", why))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(compiler.invalid(
            "target.baseUrl",
            format!("`{base}` has a query or fragment; the base URL is a prefix that step URLs are appended to"),
        ));
    }
    Ok(base.trim_end_matches('/').to_string())
}

/// Parses an absolute http(s) URL.
fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "`{text}` uses scheme `{other}`; only http and https are supported"
        )),
    }
}

/// Builds the multipart body as pieces (static bytes and per-execution templates) and its
/// `Content-Type`. Built by hand rather than with `reqwest::multipart`, so the body is a
/// single `Bytes` whose length is known (for byte counting and `Content-Length`) and static
/// bodies — the common file upload — are built once per run and shared by every request.
fn compile_multipart(
    parts: &[MultipartPart],
    manifest_dir: &Path,
    compiler: &mut TemplateCompiler<'_>,
) -> Result<(Vec<MultipartPiece>, HeaderValue), StepError> {
    let mut contents = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let field = format!("request.multipart[{i}]");
        if part.name.is_empty() {
            return Err(compiler.invalid(&format!("{field}.name"), "must not be empty"));
        }
        let sources = usize::from(part.value.is_some())
            + usize::from(part.file.is_some())
            + usize::from(part.config_map_ref.is_some());
        if sources != 1 {
            return Err(compiler.invalid(&field, "set exactly one of value, file, configMapRef"));
        }
        let (content, default_filename) = if let Some(value) = &part.value {
            let text = compiler.text(value, &format!("{field}.value"))?;
            match text.static_value() {
                Some(v) => (MultipartPiece::Bytes(Bytes::from(v)), None),
                None => (MultipartPiece::Text(text), None),
            }
        } else if let Some(file) = &part.file {
            let path = manifest_dir.join(file);
            let data = std::fs::read(&path).map_err(|source| StepError::File {
                step: compiler.step.to_string(),
                part: part.name.clone(),
                path: path.clone(),
                source,
            })?;
            let filename = Path::new(file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            (MultipartPiece::Bytes(Bytes::from(data)), filename)
        } else {
            return Err(StepError::ConfigMapPart {
                step: compiler.step.to_string(),
                part: part.name.clone(),
            });
        };
        contents.push((content, default_filename));
    }

    // A boundary that occurs in no static content (templated values are random-safe: a
    // 128-bit random boundary).
    let boundary = loop {
        let candidate = format!("volley-{}", uuid::Uuid::new_v4().simple());
        let clashes = contents.iter().any(|(c, _)| match c {
            MultipartPiece::Bytes(b) => b
                .windows(candidate.len())
                .any(|w| w == candidate.as_bytes()),
            MultipartPiece::Text(_) => false,
        });
        if !clashes {
            break candidate;
        }
    };

    let mut pieces: Vec<MultipartPiece> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for (part, (content, default_filename)) in parts.iter().zip(contents) {
        pending.extend_from_slice(b"--");
        pending.extend_from_slice(boundary.as_bytes());
        pending.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        pending.extend_from_slice(escape_disposition(&part.name).as_bytes());
        pending.push(b'"');
        if let Some(filename) = part.filename.clone().or(default_filename) {
            pending.extend_from_slice(b"; filename=\"");
            pending.extend_from_slice(escape_disposition(&filename).as_bytes());
            pending.push(b'"');
        }
        pending.extend_from_slice(b"\r\n");
        let content_type = match (&part.content_type, part.file.is_some()) {
            (Some(ct), _) => Some(ct.as_str()),
            (None, true) => Some("application/octet-stream"),
            (None, false) => None,
        };
        if let Some(ct) = content_type {
            if ct.bytes().any(|b| b.is_ascii_control()) {
                return Err(compiler.invalid(
                    &format!("request.multipart part `{}`.contentType", part.name),
                    "must not contain control characters",
                ));
            }
            pending.extend_from_slice(b"Content-Type: ");
            pending.extend_from_slice(ct.as_bytes());
            pending.extend_from_slice(b"\r\n");
        }
        pending.extend_from_slice(b"\r\n");
        match content {
            MultipartPiece::Bytes(b) => pending.extend_from_slice(&b),
            MultipartPiece::Text(t) => {
                pieces.push(MultipartPiece::Bytes(Bytes::from(std::mem::take(
                    &mut pending,
                ))));
                pieces.push(MultipartPiece::Text(t));
            }
        }
        pending.extend_from_slice(b"\r\n");
    }
    pending.extend_from_slice(b"--");
    pending.extend_from_slice(boundary.as_bytes());
    pending.extend_from_slice(b"--\r\n");
    pieces.push(MultipartPiece::Bytes(Bytes::from(pending)));

    let content_type = HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
        .map_err(|_| compiler.invalid("request.multipart", "cannot build the Content-Type"))?;
    Ok((pieces, content_type))
}

/// Quotes, CR and LF in a Content-Disposition parameter, percent-encoded as browsers do.
fn escape_disposition(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Runs the step. For a sleep step: sleeps (fixed or uniform random) and returns an outcome
/// with no samples.
///
/// `not_before` is when this step was due: for the first step of an arrival-rate iteration it
/// is the scheduled start (so a stalled server shows up in latency — no coordinated
/// omission); otherwise the caller passes `Instant::now()`.
///
/// Values extracted by the step are written to `ctx.extracted` (a name whose extraction fails
/// is removed, so later steps never see a stale value), and `Set-Cookie` headers update
/// `ctx.cookies`. A request that cannot be rendered (a referenced value is missing, or a
/// rendered header or URL is not valid) is not sent: the outcome has no samples and error
/// `extract`. Nor is one whose URL is outside the step's allowed targets
/// ([`CompiledStep::restrict`]): no samples, error `blocked`.
pub async fn run_step(
    step: &CompiledStep,
    client: &reqwest::Client,
    ctx: &mut VuContext,
    not_before: Instant,
) -> StepOutcome {
    match &step.kind {
        StepAction::Sleep(min, max) => {
            let start = Instant::now();
            let pause = if min < max {
                rand::Rng::random_range(&mut rand::rng(), *min..=*max)
            } else {
                *min
            };
            tokio::time::sleep(pause).await;
            StepOutcome {
                samples: Vec::new(),
                step_latency: Instant::now().saturating_duration_since(not_before.min(start)),
                checks_passed: 0,
                checks_failed: 0,
                error: None,
                custom: Observed::default(),
                websocket: None,
            }
        }
        StepAction::Request(request) => request.run(&step.name, client, ctx, not_before).await,
        StepAction::WebSocket(ws) => {
            let run = ws.run(&step.name, ctx, not_before).await;
            let last = run.attempts.len().saturating_sub(1);
            let samples = run
                .attempts
                .iter()
                .enumerate()
                .map(|(i, a)| RequestSample {
                    latency: a.latency,
                    latency_sent: a.latency_sent,
                    // The session's payload bytes go with the attempt that connected.
                    bytes_sent: if i == last { run.bytes.0 } else { 0 },
                    bytes_received: if i == last { run.bytes.1 } else { 0 },
                    status: a.status,
                    error: a.error,
                })
                .collect();
            StepOutcome {
                samples,
                step_latency: run.step_latency,
                checks_passed: run.checks.passed,
                checks_failed: run.checks.failed,
                error: run.error,
                custom: run.custom,
                websocket: Some(Box::new(run.outcome)),
            }
        }
    }
}

/// A request rendered for one step execution, reused by its retries and polls.
struct Rendered<'a> {
    /// Borrowed from the step for a literal URL: no copy per request.
    url: Cow<'a, Url>,
    headers: HeaderMap,
    /// The manifest's `Cookie` header, rendered.
    cookie: Option<String>,
    body: Option<Bytes>,
    /// Approximate size of everything but the `Cookie` header.
    bytes: u64,
}

/// Why a rendered request cannot be sent. Printing it never shows a value.
#[derive(Debug)]
enum Unsendable {
    Missing(Reference),
    Header(HeaderName),
    Url,
}

impl fmt::Display for Unsendable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsendable::Missing(r) => write!(f, "no value for {r}"),
            Unsendable::Header(name) => write!(
                f,
                "the rendered `{name}` header is not a valid header value"
            ),
            Unsendable::Url => f.write_str("the rendered URL is not an absolute http(s) URL"),
        }
    }
}

impl From<RenderError> for Unsendable {
    fn from(e: RenderError) -> Self {
        Unsendable::Missing(e.missing)
    }
}

/// One exchange's result.
struct Exchange {
    sample: RequestSample,
    /// The complete response; `None` after a transport error (even if the head arrived).
    response: Option<Received>,
}

/// What a redirect chain has sent and received so far; kept when the deadline cuts it short.
#[derive(Default)]
struct ChainTally {
    bytes_sent: u64,
    bytes_received: u64,
    /// Status of the last response head.
    status: Option<u16>,
    /// The final response, once read to the end.
    response: Option<Received>,
}

/// What checks and extractors made of a response.
struct ResponseEvaluation {
    tally: CheckTally,
    error: Option<ErrorKind>,
    values: Vec<(String, Option<String>)>,
    custom: Observed,
}

/// The last exchange of a retry sequence.
struct Attempted {
    response: Option<Received>,
    error: Option<ErrorKind>,
    verdict: Option<ResponseEvaluation>,
}

impl CompiledRequest {
    async fn run(
        &self,
        step_name: &str,
        client: &reqwest::Client,
        ctx: &mut VuContext,
        not_before: Instant,
    ) -> StepOutcome {
        let start = Instant::now();
        let origin = not_before.min(start);
        let rendered = match self.render(ctx) {
            Ok(rendered) => rendered,
            Err(why) => {
                tracing::debug!(step = step_name, %why, "request not sent");
                return StepOutcome {
                    samples: Vec::new(),
                    step_latency: Instant::now().saturating_duration_since(origin),
                    checks_passed: 0,
                    checks_failed: 0,
                    error: Some(ErrorKind::Extract),
                    custom: Observed::default(),
                    websocket: None,
                };
            }
        };
        // A literal URL was checked once, in `restrict`; a rendered one is checked per send.
        let check_url = !matches!(self.url, UrlTemplate::Static(_));
        let secret_url = self.url_text.has_secret();
        if let Err(refused) = self.allowed(
            &rendered.url,
            check_url.then_some(secret_url),
            &rendered.headers,
        ) {
            self.warn_refused(step_name, &refused);
            return StepOutcome {
                samples: Vec::new(),
                step_latency: Instant::now().saturating_duration_since(origin),
                checks_passed: 0,
                checks_failed: 0,
                error: Some(ErrorKind::Blocked),
                custom: Observed::default(),
                websocket: None,
            };
        }
        let mut samples = Vec::with_capacity(1);
        let mut first = Some(origin);

        let (step_error, verdict) = match &self.until {
            None => {
                let attempted = self
                    .send_with_retry(
                        client,
                        ctx,
                        &rendered,
                        &mut first,
                        origin,
                        None,
                        &mut samples,
                    )
                    .await;
                (attempted.error, attempted.verdict)
            }
            Some(until) => {
                let deadline = start + until.timeout;
                let mut until_error = None;
                let last = loop {
                    let attempted = self
                        .send_with_retry(
                            client,
                            ctx,
                            &rendered,
                            &mut first,
                            origin,
                            Some(deadline),
                            &mut samples,
                        )
                        .await;
                    if let Some(error) = attempted.error {
                        until_error = Some(error);
                        break attempted.response;
                    }
                    let done = attempted.response.as_ref().is_some_and(|r| {
                        r.json_first(&until.path)
                            .is_some_and(|v| json_text(v) == until.equals.as_str())
                    });
                    if done {
                        break attempted.response;
                    }
                    if Instant::now() + until.every >= deadline {
                        tracing::debug!(step = step_name, "until: gave up polling");
                        until_error = Some(ErrorKind::Timeout);
                        break attempted.response;
                    }
                    tokio::time::sleep(until.every).await;
                };
                let verdict = self.evaluate(
                    last.as_ref(),
                    Instant::now().saturating_duration_since(origin),
                );
                if let Some(sample) = samples.last_mut()
                    && sample.error.is_none()
                {
                    sample.error = verdict.error;
                }
                (until_error, Some(verdict))
            }
        };
        // Always set without `until` (evaluated per attempt) and with it (evaluated above).
        let verdict = verdict.unwrap_or(ResponseEvaluation {
            tally: CheckTally::default(),
            error: None,
            values: Vec::new(),
            custom: Observed::default(),
        });
        for (name, value) in verdict.values {
            match value {
                Some(value) => {
                    ctx.extracted.insert(name, value);
                }
                None => {
                    ctx.extracted.remove(&name);
                }
            }
        }
        StepOutcome {
            samples,
            step_latency: Instant::now().saturating_duration_since(origin),
            checks_passed: verdict.tally.passed,
            checks_failed: verdict.tally.failed,
            error: step_error.or(verdict.error),
            custom: verdict.custom,
            websocket: None,
        }
    }

    /// Whether a request to `url` with `headers` may be sent: the URL, when `check_url` is set
    /// (`Some(secret)`: whether its host may hold an `${env:...}` value, not to be shown), and
    /// the `Host` header, if any.
    fn allowed(
        &self,
        url: &Url,
        check_url: Option<bool>,
        headers: &HeaderMap,
    ) -> Result<(), PolicyError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        if let Some(secret) = check_url {
            policy.check_url(url).map_err(|e| hide_host(e, secret))?;
        }
        if let Some(host) = headers.get(HOST) {
            // A value that is not visible ASCII is no host: refused like one.
            let text = host.to_str().unwrap_or("\u{fffd}");
            policy
                .check_host_header(url, text)
                .map_err(|e| hide_host(e, host.is_sensitive()))?;
        }
        Ok(())
    }

    /// Says once per step that a request was refused (the host is no secret; the rest of the
    /// URL may carry one and is not shown).
    fn warn_refused(&self, step_name: &str, refused: &PolicyError) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                step = step_name,
                "request not sent: {refused}; counted as error kind `blocked` (further refusals \
                 of this step are counted without a message)"
            );
        }
    }

    /// Sends the request, retrying per the policy. Without `until`, checks and extractors run
    /// on every attempt (so `retry.on` may list `check` and `extract`); with `until`, the
    /// caller runs them once polling ends. `hard_deadline` (polling) stops retries that could
    /// not finish in time and bounds every attempt.
    #[allow(clippy::too_many_arguments)]
    async fn send_with_retry(
        &self,
        client: &reqwest::Client,
        ctx: &mut VuContext,
        rendered: &Rendered<'_>,
        first: &mut Option<Instant>,
        origin: Instant,
        hard_deadline: Option<Instant>,
        samples: &mut Vec<RequestSample>,
    ) -> Attempted {
        let mut attempt = 1;
        loop {
            let Exchange {
                mut sample,
                response,
            } = self
                .exchange(
                    client,
                    &mut ctx.cookies,
                    &mut ctx.connections,
                    rendered,
                    first.take(),
                    hard_deadline,
                )
                .await;
            let mut error = sample.error;
            let verdict = if self.until.is_none() {
                let verdict = self.evaluate(
                    response.as_ref(),
                    Instant::now().saturating_duration_since(origin),
                );
                error = error.or(verdict.error);
                Some(verdict)
            } else {
                None
            };
            sample.error = error;
            samples.push(sample);
            let retry = error.is_some_and(|e| self.retry.retries(attempt, e));
            if !retry {
                return Attempted {
                    response,
                    error,
                    verdict,
                };
            }
            let pause = self.retry.pause(attempt);
            if hard_deadline.is_some_and(|d| Instant::now() + pause >= d) {
                return Attempted {
                    response,
                    error,
                    verdict,
                };
            }
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// Renders what depends on the VU: once per step execution.
    fn render(&self, ctx: &VuContext) -> Result<Rendered<'_>, Unsendable> {
        let url = match &self.url {
            UrlTemplate::Static(url) => Cow::Borrowed(url),
            UrlTemplate::Dynamic { base, path } => {
                let path = path.render(ctx)?;
                // The URL text may carry values that must not be logged: no details.
                Cow::Owned(parse_http_url(&join_url(base, &path)).map_err(|_| Unsendable::Url)?)
            }
        };
        // Empty (no allocation) for a step without headers of its own: the map that is sent is
        // built per exchange anyway, see `exchange`.
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        let mut scratch = String::new();
        for (name, template) in &self.headers {
            let value = match template {
                HeaderTemplate::Static(value) => value.clone(),
                HeaderTemplate::Dynamic { text, sensitive } => {
                    scratch.clear();
                    text.render_into(ctx, &mut scratch)?;
                    let mut value = HeaderValue::from_str(&scratch)
                        .map_err(|_| Unsendable::Header(name.clone()))?;
                    value.set_sensitive(*sensitive);
                    value
                }
            };
            headers.insert(name.clone(), value);
        }
        let cookie = match &self.cookie {
            Some(text) => Some(text.render(ctx)?),
            None => None,
        };
        let body = match &self.body {
            BodyTemplate::None => None,
            BodyTemplate::Static(bytes) => Some(bytes.clone()),
            BodyTemplate::Text(text) => Some(Bytes::from(text.render(ctx)?)),
            BodyTemplate::Json(json) => {
                let mut out = String::new();
                json.render_into(ctx, &mut out, &mut scratch)?;
                Some(Bytes::from(out))
            }
            BodyTemplate::Multipart(pieces) => {
                let mut out = Vec::new();
                for piece in pieces {
                    match piece {
                        MultipartPiece::Bytes(b) => out.extend_from_slice(b),
                        MultipartPiece::Text(t) => {
                            scratch.clear();
                            t.render_into(ctx, &mut scratch)?;
                            out.extend_from_slice(scratch.as_bytes());
                        }
                    }
                }
                Some(Bytes::from(out))
            }
        };
        let bytes = request_head_bytes(
            &self.method,
            &url,
            &headers,
            body.as_ref().map_or(0, Bytes::len),
        );
        Ok(Rendered {
            url,
            headers,
            cookie,
            body,
            bytes,
        })
    }

    /// One HTTP exchange, redirects included. `origin` is the latency origin of the step's
    /// first exchange.
    ///
    /// Redirects are followed here rather than by the client, so that `Set-Cookie` headers of
    /// redirect responses (a login answering `302` + session cookie) reach the VU's jar and
    /// cookie extractors, and every hop's bytes are counted. Up to 10 hops; more is an error
    /// of kind `connect`. 303 (and 301/302 after a POST) continue as a body-less GET, 307/308
    /// resend method and body. A hop to another origin (scheme, host, port) carries neither
    /// `Authorization` nor `Cookie`. One deadline covers the whole chain.
    async fn exchange(
        &self,
        client: &reqwest::Client,
        jar: &mut CookieJar,
        connections: &mut Connections,
        rendered: &Rendered<'_>,
        origin: Option<Instant>,
        hard_deadline: Option<Instant>,
    ) -> Exchange {
        let sent = Instant::now();
        let deadline = match hard_deadline {
            Some(hard) => hard.min(sent + self.timeout),
            None => sent + self.timeout,
        };
        let mut tally = ChainTally::default();
        // One timer for the whole chain, rather than one per await: a timer entry per send and
        // per body frame was a measurable share of a small request's cost.
        let chain = self.follow(client, jar, connections, rendered, &mut tally);
        let error = tokio::time::timeout_at(deadline, chain)
            .await
            .unwrap_or(Some(ErrorKind::Timeout));
        let end = Instant::now();
        let latency_sent = end.saturating_duration_since(sent);
        let latency = match origin {
            Some(origin) => end.saturating_duration_since(origin.min(sent)),
            None => latency_sent,
        };
        Exchange {
            sample: RequestSample {
                latency,
                latency_sent,
                bytes_sent: tally.bytes_sent,
                bytes_received: tally.bytes_received,
                status: tally.status,
                error,
            },
            response: tally.response,
        }
    }

    /// Sends the rendered request and follows its redirects (see [`CompiledRequest::exchange`],
    /// which bounds the time), counting into `tally` as it goes; returns the error that ended
    /// the chain, if any.
    async fn follow(
        &self,
        client: &reqwest::Client,
        jar: &mut CookieJar,
        connections: &mut Connections,
        rendered: &Rendered<'_>,
        tally: &mut ChainTally,
    ) -> Option<ErrorKind> {
        let mut method = self.method.clone();
        // Borrowed until a redirect changes them: most exchanges send the rendered request as is.
        let mut url = Cow::Borrowed(&*rendered.url);
        let mut headers = Cow::Borrowed(&rendered.headers);
        let mut body = rendered.body.as_ref();
        // Set-Cookie headers of redirect responses, handed to the final response.
        let mut redirect_cookies: Vec<HeaderValue> = Vec::new();
        let mut hops = 0;
        loop {
            let same_origin = hops == 0 || url.origin() == rendered.url.origin();
            // Sized for what is added below and in `Connections::send` (`Cookie`, `Host`,
            // `Accept`, `User-Agent`): a plain clone is exactly full and would reallocate.
            let mut request_headers = HeaderMap::with_capacity(headers.len() + 4);
            request_headers.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            if !same_origin {
                request_headers.remove(AUTHORIZATION);
            }
            tally.bytes_sent += if hops == 0 {
                rendered.bytes
            } else {
                request_head_bytes(&method, &url, &request_headers, body.map_or(0, Bytes::len))
            };
            if same_origin {
                let mut cookie = rendered.cookie.clone().unwrap_or_default();
                jar.write_header(&mut cookie);
                if !cookie.is_empty() {
                    match HeaderValue::from_str(&cookie) {
                        Ok(mut value) => {
                            value.set_sensitive(true);
                            tally.bytes_sent += header_line_bytes(&COOKIE, &value);
                            request_headers.insert(COOKIE, value);
                        }
                        Err(_) => {
                            tracing::debug!("cookie header is not a valid header value; not sent")
                        }
                    }
                }
            }
            // A literal URL's endpoint was derived once, at compile time; others per hop.
            let derived;
            let endpoint = match (&self.endpoint, hops) {
                (Some(endpoint), 0) => Some(endpoint),
                _ => {
                    derived = Endpoint::of(&url);
                    derived.as_ref()
                }
            };
            let send = connections.send(client, endpoint, &method, &url, request_headers, body);
            let mut response = match send.await {
                Err(kind) => break Some(kind),
                Ok(response) => response,
            };
            let code = response.status();
            tally.status = Some(code.as_u16());
            let response_headers = response.take_headers();
            tally.bytes_received += response_head_bytes(code, &response_headers);
            jar.store_from(&response_headers);

            let next = code
                .is_redirection()
                .then(|| response_headers.get(LOCATION))
                .flatten()
                .and_then(|location| location.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .filter(|next| matches!(next.scheme(), "http" | "https"));
            if let Some(next) = next {
                // Drain the redirect's body so the connection can be reused.
                if let Err(e) = read_body(&mut response, None, &mut tally.bytes_received).await {
                    break Some(e);
                }
                connections.finished();
                if hops == MAX_REDIRECTS {
                    tracing::debug!("more than {MAX_REDIRECTS} redirects");
                    break Some(ErrorKind::Connect);
                }
                // An allowed host must not be able to bounce the load to a forbidden one.
                if let Err(refused) = self.allowed(&next, Some(false), headers.as_ref()) {
                    self.warn_refused("(redirect)", &refused);
                    break Some(ErrorKind::Blocked);
                }
                hops += 1;
                redirect_cookies.extend(response_headers.get_all(SET_COOKIE).iter().cloned());
                let to_get = match code.as_u16() {
                    303 => method != Method::HEAD,
                    301 | 302 => method == Method::POST,
                    _ => false,
                };
                if to_get {
                    method = Method::GET;
                    body = None;
                    headers.to_mut().remove(CONTENT_TYPE);
                }
                url = Cow::Owned(next);
                continue;
            }

            let mut kept = self.keep_body.then(|| {
                let hint = response.content_length().unwrap_or(0).min(BODY_CAP as u64);
                Vec::with_capacity(usize::try_from(hint).unwrap_or(0))
            });
            match read_body(&mut response, kept.as_mut(), &mut tally.bytes_received).await {
                Err(e) => break Some(e),
                Ok(truncated) => {
                    connections.finished();
                    let mut final_headers = response_headers;
                    if !redirect_cookies.is_empty() {
                        // Earlier hops first, so the final response's own cookies win.
                        let own: Vec<HeaderValue> =
                            final_headers.get_all(SET_COOKIE).iter().cloned().collect();
                        final_headers.remove(SET_COOKIE);
                        for value in redirect_cookies.drain(..).chain(own) {
                            final_headers.append(SET_COOKIE, value);
                        }
                    }
                    tally.response = Some(Received::new(
                        code,
                        final_headers,
                        kept.unwrap_or_default(),
                        truncated,
                    ));
                    break self.checks.status_error(code.as_u16());
                }
            }
        }
    }

    /// Runs checks and extractors on the final response (`None`: no usable response).
    fn evaluate(&self, response: Option<&Received>, elapsed: Duration) -> ResponseEvaluation {
        let tally = self.checks.evaluate(response, elapsed);
        let values: Vec<(String, Option<String>)> = self
            .extract
            .iter()
            .map(|(name, extractor)| (name.clone(), response.and_then(|r| extractor.extract(r))))
            .collect();
        let error = if tally.failed > 0 {
            Some(ErrorKind::Check)
        } else if values.iter().any(|(_, v)| v.is_none()) {
            Some(ErrorKind::Extract)
        } else {
            None
        };
        ResponseEvaluation {
            tally,
            error,
            values,
            custom: self.custom.observe(response),
        }
    }
}

/// Reads a body to its end, counting its bytes into `received` and keeping up to [`BODY_CAP`]
/// of them in `keep`. Returns whether bytes were dropped.
async fn read_body(
    response: &mut Response,
    mut keep: Option<&mut Vec<u8>>,
    received: &mut u64,
) -> Result<bool, ErrorKind> {
    let mut truncated = false;
    loop {
        match response.chunk().await {
            Err(kind) => return Err(kind),
            Ok(None) => return Ok(truncated),
            Ok(Some(chunk)) => {
                *received += chunk.len() as u64;
                if let Some(body) = keep.as_deref_mut() {
                    let take = BODY_CAP.saturating_sub(body.len()).min(chunk.len());
                    body.extend_from_slice(&chunk[..take]);
                    truncated |= take < chunk.len();
                }
            }
        }
    }
}

/// `name: value\r\n`.
fn header_line_bytes(name: &HeaderName, value: &HeaderValue) -> u64 {
    (name.as_str().len() + 2 + value.len() + 2) as u64
}

/// Approximate request size: request line, headers (with what the client adds), body.
fn request_head_bytes(method: &Method, url: &Url, headers: &HeaderMap, body_len: usize) -> u64 {
    // `METHOD /path?query HTTP/1.1\r\n`
    let path = url.path().len() + url.query().map_or(0, |q| q.len() + 1);
    let mut total = method.as_str().len() + 1 + path + " HTTP/1.1\r\n".len();
    // `host: h:p\r\n`, `accept: */*\r\n`, `user-agent: ...\r\n`
    let host =
        url.host_str().map_or(0, str::len) + url.port().map_or(0, |p| 1 + digits(u64::from(p)));
    total += "host: \r\n".len() + host;
    if !headers.contains_key(reqwest::header::ACCEPT) {
        total += "accept: */*\r\n".len();
    }
    if !headers.contains_key(reqwest::header::USER_AGENT) {
        total += "user-agent: \r\n".len() + USER_AGENT.len();
    }
    let mut total = total as u64;
    for (name, value) in headers {
        total += header_line_bytes(name, value);
    }
    if body_len > 0 {
        total += ("content-length: \r\n".len() + digits(body_len as u64)) as u64;
    }
    total + 2 + body_len as u64
}

/// Approximate response head size: status line and headers.
fn response_head_bytes(status: reqwest::StatusCode, headers: &HeaderMap) -> u64 {
    let reason = status.canonical_reason().map_or(0, str::len);
    let mut total = ("HTTP/1.1 200 \r\n".len() + reason) as u64;
    for (name, value) in headers {
        total += header_line_bytes(name, value);
    }
    total + 2
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn digits_counts() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(65535), 5);
    }
}
