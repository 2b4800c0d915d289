//! The HTTP side of the runner protocol ([`volley_core::protocol`], `docs/reference.md` §3
//! "Runner protocol") for one runner of one run: [`AggregatorClient`] knows the paths, the
//! bearer token, the timeouts and how each call is retried ([`AggregatorRetry`]); what the
//! calls mean for the run is the agent's business ([`crate::agent`]). The token is never
//! shown: not in `Debug` output, not in errors.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use volley_core::protocol::{
    self, PROTOCOL_VERSION, ReadyRequest, ReadyResponse, ReportResponse, RunnerReport,
    START_POLL_HOLD_MS, SetupResult, StartResponse,
};

use crate::step::USER_AGENT;

/// Largest answer body the agent reads (a ready answer carries the whole spec).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Time to establish a connection to the aggregator.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole ready or setup call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for one attempt at the final report (a pod being deleted has 30 s in all).
const FINAL_REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole start long-poll: the aggregator's hold plus a margin.
const START_POLL_TIMEOUT: Duration = Duration::from_millis(START_POLL_HOLD_MS + 15_000);
/// How much of an answer's body goes into an error message.
const ANSWER_EXCERPT_CHARS: usize = 300;

/// Which protocol call something is about, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `POST .../ready`.
    Ready,
    /// `GET .../start`.
    Start,
    /// `POST .../setup`.
    Setup,
    /// `POST .../report` during the run.
    Report,
    /// The last `POST .../report` (`done`).
    FinalReport,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Ready => "the ready call",
            Call::Start => "the start poll",
            Call::Setup => "the setup result",
            Call::Report => "a report",
            Call::FinalReport => "the final report",
        })
    }
}

/// How a call is retried while the aggregator cannot be reached (connection errors, timeouts,
/// 5xx, 408, 429). Refusals are never retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggregatorRetry {
    /// Pause after the first failure; it doubles after each further failure.
    pub first_delay: Duration,
    /// Longest pause.
    pub max_delay: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub budget: Duration,
}

impl AggregatorRetry {
    /// Registering, polling for the start, posting setup: the aggregator may come up after
    /// the pod, or restart; about a minute of patience.
    pub const CONNECT: AggregatorRetry = AggregatorRetry {
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        budget: Duration::from_secs(60),
    };
    /// The final report: a few attempts over about ten seconds (a pod being deleted has 30 s).
    pub const FINAL_REPORT: AggregatorRetry = AggregatorRetry {
        first_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(2),
        budget: Duration::from_secs(10),
    };

    /// The pause after the `failures`-th consecutive failure (1-based), before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Why a call to the aggregator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The aggregator refused the call (401, 403, 404, 409 or another 4xx): retrying cannot
    /// help.
    #[error(
        "the aggregator refused {call} with {status}: {hint}{}",
        answer_note(body)
    )]
    Refused {
        /// The call.
        call: Call,
        /// The answer's status.
        status: StatusCode,
        /// What the status means for this runner.
        hint: String,
        /// The start of the answer's body (the aggregator may say why).
        body: String,
    },
    /// The aggregator could not be reached, timed out, or answered 5xx, 408 or 429; worth
    /// retrying.
    #[error("{call}: {detail}")]
    Unavailable {
        /// The call.
        call: Call,
        /// What happened.
        detail: String,
        /// The answer's status, when there was one.
        status: Option<StatusCode>,
    },
    /// Retried for as long as the policy allows, without success.
    #[error("{last} (gave up after {attempts} attempts over {}s)", waited.as_secs())]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// How long they took.
        waited: Duration,
        /// The last failure.
        last: Box<ClientError>,
    },
    /// The answer is not what the protocol says (a different protocol version, or not an
    /// aggregator at all).
    #[error("{call}: the aggregator's answer is not understood: {detail}")]
    BadAnswer {
        /// The call.
        call: Call,
        /// What is wrong with it.
        detail: String,
    },
    /// The client could not be set up.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }

    /// The HTTP status of the answer that caused this error, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            ClientError::Unavailable { status, .. } => *status,
            ClientError::GaveUp { last, .. } => last.status(),
            ClientError::BadAnswer { .. } | ClientError::Config(_) => None,
        }
    }
}

fn answer_note(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(" (the aggregator says: {body})")
    }
}

/// The HTTP side of the protocol for one runner of one run: paths, the bearer token, timeouts
/// and retries. Its `Debug` output never contains the token.
#[derive(Clone)]
pub struct AggregatorClient {
    http: reqwest::Client,
    /// Base URL without a trailing `/`.
    base: String,
    run: String,
    index: u32,
    auth: HeaderValue,
    connect_retry: AggregatorRetry,
    final_retry: AggregatorRetry,
    log_prefix: String,
}

impl fmt::Debug for AggregatorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatorClient")
            .field("base", &self.base)
            .field("run", &self.run)
            .field("index", &self.index)
            .field("connect_retry", &self.connect_retry)
            .field("final_retry", &self.final_retry)
            .finish_non_exhaustive()
    }
}

impl AggregatorClient {
    /// A client for runner `index` of run `run` at the aggregator `base_url`
    /// (`http://host:port`, optionally with a path prefix), with the default retry policies.
    pub fn new(
        base_url: &str,
        run: &str,
        index: u32,
        token: &str,
    ) -> Result<AggregatorClient, ClientError> {
        let url = reqwest::Url::parse(base_url).map_err(|e| {
            ClientError::Config(format!(
                "--aggregator {base_url:?} is not a URL ({e}); e.g. http://volley-operator:8080"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(ClientError::Config(format!(
                "--aggregator {base_url:?} must be an http(s) URL with a host and no query, \
                 e.g. http://volley-operator:8080"
            )));
        }
        if run.is_empty()
            || !run
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
        {
            return Err(ClientError::Config(format!(
                "--run {run:?} is not a run id (letters, digits, `-`, `.`, `_`, `~`)"
            )));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::Config(
                "the bearer token contains characters an HTTP header cannot carry".into(),
            )
        })?;
        auth.set_sensitive(true);
        // No proxy: the run's bearer token goes to the aggregator and nowhere else.
        let http = reqwest::Client::builder()
            .no_proxy()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(AggregatorClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            run: run.to_string(),
            index,
            auth,
            connect_retry: AggregatorRetry::CONNECT,
            final_retry: AggregatorRetry::FINAL_REPORT,
            log_prefix: format!("volley agent (run {run}, runner {index})"),
        })
    }

    /// Replaces the retry policies (tests use short ones).
    pub fn with_retry(mut self, connect: AggregatorRetry, final_report: AggregatorRetry) -> Self {
        self.connect_retry = connect;
        self.final_retry = final_report;
        self
    }

    /// The run's id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// This runner's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// What this runner's messages start with: `volley agent (run RUN, runner N)`.
    pub fn log_prefix(&self) -> &str {
        &self.log_prefix
    }

    /// Registers this runner; retried while the aggregator cannot be reached.
    pub async fn ready(&self, request: &ReadyRequest) -> Result<ReadyResponse, ClientError> {
        let path = protocol::ready_path(&self.run, self.index);
        let body = encode(Call::Ready, request)?;
        self.retrying(Call::Ready, self.connect_retry, || async {
            let answer = self
                .exchange(
                    Call::Ready,
                    Method::POST,
                    &path,
                    Some(body.clone()),
                    CALL_TIMEOUT,
                )
                .await?;
            decode(Call::Ready, &answer)
        })
        .await
    }

    /// One start long-poll (held by the aggregator up to [`START_POLL_HOLD_MS`]); retried
    /// while the aggregator cannot be reached.
    pub async fn poll_start(&self) -> Result<StartResponse, ClientError> {
        let path = protocol::start_path(&self.run, self.index);
        self.retrying(Call::Start, self.connect_retry, || async {
            let answer = self
                .exchange(Call::Start, Method::GET, &path, None, START_POLL_TIMEOUT)
                .await?;
            decode(Call::Start, &answer)
        })
        .await
    }

    /// Posts runner 0's setup outcome; retried while the aggregator cannot be reached.
    pub async fn post_setup(&self, result: &SetupResult) -> Result<(), ClientError> {
        let path = protocol::setup_path(&self.run);
        let body = encode(Call::Setup, result)?;
        self.retrying(Call::Setup, self.connect_retry, || async {
            self.exchange(
                Call::Setup,
                Method::POST,
                &path,
                Some(body.clone()),
                CALL_TIMEOUT,
            )
            .await
            .map(|_| ())
        })
        .await
    }

    /// Posts one report, once, within `timeout`: reports are cumulative, so the next one
    /// makes up for a lost one.
    pub async fn report(
        &self,
        report: &RunnerReport,
        timeout: Duration,
    ) -> Result<ReportResponse, ClientError> {
        let path = protocol::report_path(&self.run, self.index);
        let body = encode(Call::Report, report)?;
        let answer = self
            .exchange(Call::Report, Method::POST, &path, Some(body), timeout)
            .await?;
        decode(Call::Report, &answer)
    }

    /// Posts the final report (or any report that must arrive), retried while the aggregator
    /// cannot be reached: it carries the last figures.
    pub async fn final_report(&self, report: &RunnerReport) -> Result<ReportResponse, ClientError> {
        let path = protocol::report_path(&self.run, self.index);
        let body = encode(Call::FinalReport, report)?;
        self.retrying(Call::FinalReport, self.final_retry, || async {
            let answer = self
                .exchange(
                    Call::FinalReport,
                    Method::POST,
                    &path,
                    Some(body.clone()),
                    FINAL_REPORT_TIMEOUT,
                )
                .await?;
            decode(Call::FinalReport, &answer)
        })
        .await
    }

    /// Repeats `attempt` while it fails transiently, pausing per `policy` (with a little
    /// jitter, so runners started together do not retry in lockstep).
    async fn retrying<T, F, Fut>(
        &self,
        call: Call,
        policy: AggregatorRetry,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let began = Instant::now();
        let mut failures = 0u32;
        loop {
            match attempt().await {
                Ok(value) => {
                    if failures > 0 {
                        eprintln!(
                            "{}: {call} went through after {failures} failed attempt(s)",
                            self.log_prefix
                        );
                    }
                    return Ok(value);
                }
                Err(e) if e.is_transient() => {
                    failures += 1;
                    let pause = policy.delay(failures);
                    let waited = began.elapsed();
                    if waited + pause > policy.budget {
                        return Err(ClientError::GaveUp {
                            attempts: failures,
                            waited,
                            last: Box::new(e),
                        });
                    }
                    let pause = pause.mul_f64(rand::random_range(0.8..=1.0));
                    eprintln!(
                        "{}: {e}; retrying in {:.1}s",
                        self.log_prefix,
                        pause.as_secs_f64()
                    );
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One HTTP exchange: the answer's body on 2xx, a classified error otherwise.
    async fn exchange(
        &self,
        call: Call,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(timeout);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let unavailable = |e: reqwest::Error| ClientError::Unavailable {
            call,
            detail: describe_http_error(&e, &self.base),
            status: None,
        };
        let mut response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ClientError::BadAnswer {
                    call,
                    detail: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            answer.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(answer);
        }
        let body = excerpt(&answer);
        // A report for a run the aggregator does not know comes from an aggregator that has
        // just restarted and not yet re-registered its runs (the operator does that within
        // seconds): worth retrying, unlike a refusal at registration. The aggregator answers
        // an unknown run like a wrong credential (401, so runs cannot be probed); after this
        // credential was accepted at registration, a 401 means the run is unknown.
        let restarted = matches!(status, StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED)
            && matches!(call, Call::Report | Call::FinalReport);
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || restarted
        {
            return Err(ClientError::Unavailable {
                call,
                detail: format!("the aggregator answered {status}{}", answer_note(&body)),
                status: Some(status),
            });
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED => format!(
                "the bearer token was not accepted: it is not runner {}'s credential for run `{}`",
                self.index, self.run
            ),
            StatusCode::FORBIDDEN => "this runner may not make this call".to_string(),
            StatusCode::NOT_FOUND => format!(
                "the aggregator at {} does not know run `{}` or its runner {}",
                self.base, self.run, self.index
            ),
            StatusCode::CONFLICT => format!(
                "runner {} of run `{}` conflicts with the run's state (another runner with the \
                 same index, another protocol version than {PROTOCOL_VERSION}, or a run that \
                 is over)",
                self.index, self.run
            ),
            _ => format!("the aggregator at {} does not accept it", self.base),
        };
        Err(ClientError::Refused {
            call,
            status,
            hint,
            body,
        })
    }
}

fn encode<T: serde::Serialize>(call: Call, value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Config(format!("cannot encode {call}: {e}")))
}

fn decode<T: DeserializeOwned>(call: Call, answer: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(answer).map_err(|e| ClientError::BadAnswer {
        call,
        detail: format!("{e}{}", answer_note(&excerpt(answer))),
    })
}

/// A printable start of an answer body: control characters blanked, at most
/// [`ANSWER_EXCERPT_CHARS`] characters.
fn excerpt(body: &[u8]) -> String {
    volley_crds::text::shorten(&String::from_utf8_lossy(body), ANSWER_EXCERPT_CHARS)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// A transport error in a few words, with its root cause (e.g. "connection refused").
fn describe_http_error(e: &reqwest::Error, base: &str) -> String {
    let what = if e.is_timeout() {
        format!("the aggregator at {base} did not answer in time")
    } else if e.is_connect() {
        format!("cannot connect to the aggregator at {base}")
    } else {
        format!("the exchange with the aggregator at {base} failed")
    };
    let mut root: &dyn std::error::Error = e;
    while let Some(source) = root.source() {
        root = source;
    }
    if std::ptr::addr_eq(root, e as &dyn std::error::Error) {
        what
    } else {
        format!("{what}: {root}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let p = AggregatorRetry {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            budget: Duration::from_secs(60),
        };
        let delays: Vec<u128> = (1..=7).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(p.delay(100), Duration::from_secs(5));
        assert_eq!(p.delay(0), Duration::from_millis(200));
    }

    #[test]
    fn the_default_connect_policy_gives_about_a_minute() {
        let p = AggregatorRetry::CONNECT;
        let mut total = Duration::ZERO;
        let mut attempts = 0;
        while total + p.delay(attempts + 1) <= p.budget {
            attempts += 1;
            total += p.delay(attempts);
        }
        assert!(attempts >= 10, "{attempts}");
        assert!(total > Duration::from_secs(50), "{total:?}");
    }

    #[test]
    fn the_client_checks_its_settings_and_never_shows_the_token() {
        let token = "s3cr3t-token-value";
        let client = AggregatorClient::new("http://127.0.0.1:9/", "r-1", 2, token).unwrap();
        assert_eq!(client.base, "http://127.0.0.1:9");
        assert!(!format!("{client:?}").contains(token));
        assert!(format!("{:?}", client.auth).contains("Sensitive"));
        for bad in ["127.0.0.1:9", "ftp://x", "http://x/?a=b", "nonsense"] {
            let e = AggregatorClient::new(bad, "r", 0, token).unwrap_err();
            assert!(e.to_string().contains("--aggregator"), "{e}");
        }
        for bad in ["", "a/b", "a b", "a?b"] {
            let e = AggregatorClient::new("http://x", bad, 0, token).unwrap_err();
            assert!(e.to_string().contains("--run"), "{e}");
        }
        let e = AggregatorClient::new("http://x", "r", 0, "bad\ntoken").unwrap_err();
        assert!(!e.to_string().contains("bad"), "{e}");
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(excerpt(b"  run not found\n"), "run not found");
        assert_eq!(excerpt(b"a\x1b[2Jb"), "a [2Jb");
        let long = "x".repeat(1000);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), ANSWER_EXCERPT_CHARS + 1);
    }

    #[test]
    fn only_unavailability_is_transient() {
        let unavailable = ClientError::Unavailable {
            call: Call::Ready,
            detail: "x".into(),
            status: Some(StatusCode::BAD_GATEWAY),
        };
        assert!(unavailable.is_transient());
        assert_eq!(unavailable.status(), Some(StatusCode::BAD_GATEWAY));
        let refused = ClientError::Refused {
            call: Call::Ready,
            status: StatusCode::UNAUTHORIZED,
            hint: "h".into(),
            body: String::new(),
        };
        assert!(!refused.is_transient());
        let gave_up = ClientError::GaveUp {
            attempts: 3,
            waited: Duration::from_secs(2),
            last: Box::new(unavailable),
        };
        assert!(!gave_up.is_transient());
        assert!(gave_up.to_string().contains("gave up after 3 attempts"));
    }
}
