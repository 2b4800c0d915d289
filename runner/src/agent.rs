//! `volley agent`: one runner of a distributed run, inside a runner pod (or a process of
//! `volley run --runners N`), speaking the protocol of `docs/reference.md` §3 "Runner
//! protocol" ([`volley_core::protocol`]).
//!
//! The agent:
//!
//! 1. registers (`ready`), retrying while the aggregator cannot be reached (it may come up
//!    after the pod); a refused call (401, 404, 409, ...) is fatal and says what was refused;
//! 2. compiles its share of the test ([`Engine::prepare`]); a problem is reported to the
//!    aggregator as a final report carrying the error, and the agent exits 1;
//! 3. long-polls `start`: runs `setup` when told to (runner 0) and posts the values, then
//!    waits for the common `startAt`; an `abort` answer ends the agent (exit 0: the run
//!    decided, nothing failed here);
//! 4. runs its share while reporting cumulative snapshots every `reportIntervalMs`, each with
//!    the next sequence number; a lost report is made up for by the next one; an answer with
//!    `stop` stops scheduling new iterations at once (in-flight ones get their
//!    `gracefulStop`);
//! 5. sends a final report (`done`), retried with backoff because it carries the last figures,
//!    and exits 0 (1 if it could not be delivered).
//!
//! A runner that has had no report accepted for [`LOST_RUN_LIMIT`] (the aggregator unreachable,
//! or answering that it does not know the run, e.g. a run forgotten while this runner was cut
//! off) stops its load the same way: a run nobody measures any more must not go on loading the
//! target.
//!
//! SIGTERM or Ctrl-C (a pod being deleted) during the run acts like a `stop` answer: graceful
//! stop, final report, exit 0. Before the load starts it ends the agent with a final report
//! carrying the reason, and exit 1 (this runner's share did not run). A second signal exits at
//! once.
//!
//! The HTTP side (paths, bearer token, timeouts, retry policy) is [`AggregatorClient`]; the
//! run logic is [`Agent`]. The token is this runner's own credential (derived from the run's
//! secret and the runner's index: it lets the runner speak only for itself); it comes from an
//! environment variable, never from the command line (which `ps` shows), and is never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use volley_core::metrics::model::RunMetrics;
use volley_core::protocol::report::Report;
use volley_core::protocol::{
    self, PROTOCOL_VERSION, ReadyRequest, ReadyResponse, ReportResponse, RunnerReport,
    START_POLL_HOLD_MS, SetupResult, StartResponse, TOKEN_ENV,
};
use volley_core::target_policy::{ALLOWED_TARGETS_ENV, TargetPolicy};

use crate::engine::{Engine, FileRoots, RunnerPlace};
use crate::local::{EXIT_ERROR, EXIT_PASSED};

/// Report interval used when the aggregator answers 0.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest report interval the agent accepts (a smaller answer is raised to it).
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// Longest report interval the agent accepts (a larger answer is lowered to it).
pub const MAX_REPORT_INTERVAL: Duration = Duration::from_secs(60);

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
/// Least time between two start polls, in case an aggregator answers `wait` without holding.
const MIN_POLL_SPACING: Duration = Duration::from_millis(100);
/// How long a runner sending load goes on without any report accepted (the aggregator
/// unreachable, or saying it does not know the run) before it stops its load by itself. An
/// aggregator that restarts, or a new operator leader, registers the run again within seconds
/// and the reports go on; past this, the aggregator has counted the runner as failed anyway
/// (its silence timeout is as long), so more load would only reach a target nobody measures
/// and that may have been meant to be spared (a run that was aborted, or whose LoadTest was
/// deleted, while the operator was away).
pub const LOST_RUN_LIMIT: Duration = Duration::from_secs(30);
/// How much of an answer's body goes into an error message.
const ANSWER_EXCERPT_CHARS: usize = 300;

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// Arguments of `volley agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// Base URL of the aggregator, e.g. `http://volley-operator.volley-system.svc:8080`.
    #[arg(long, value_name = "URL")]
    pub aggregator: String,
    /// The run's id, as the aggregator knows it (letters, digits, `-`, `.`, `_`, `~`).
    #[arg(long, value_name = "RUN")]
    pub run: String,
    /// This runner's index among the run's runners, 0-based.
    #[arg(long, value_name = "N")]
    pub index: u32,
    /// Environment variable holding this runner's bearer token (its own credential, from the
    /// run's Secret). The token itself is never a command-line argument: `ps` would show it.
    #[arg(long, value_name = "NAME", default_value = TOKEN_ENV)]
    pub token_env: String,
    /// Directory that `file:` paths in the spec are relative to.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub manifest_dir: PathBuf,
    /// Where ConfigMaps are mounted (`DIR/NAME/KEY`).
    #[arg(long, value_name = "DIR")]
    pub configmaps: Option<PathBuf>,
    /// The only targets this runner may send requests to, set by the cluster administrator:
    /// comma-separated host names (`api.example.com`, `api.example.com:8443`), wildcards
    /// (`*.staging.example.com`), IP addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`).
    /// Host names are matched as written, never resolved. Empty or unset: any target.
    #[arg(
        long,
        value_name = "LIST",
        env = ALLOWED_TARGETS_ENV,
        value_parser = TargetPolicy::parse,
    )]
    pub allowed_targets: Option<TargetPolicy>,
}

/// `volley agent`: runs one runner to the end. Exit code 0 when the runner did its part (the
/// run finished, was stopped by the aggregator or a signal, or was aborted before the start),
/// 1 when it could not (refused, unreachable, a spec it cannot run, a final report that could
/// not be delivered).
pub fn run_cli(args: AgentArgs) -> ExitCode {
    let prefix = format!("volley agent (run {}, runner {})", args.run, args.index);
    let fail = |message: String| {
        eprintln!("{prefix}: {message}");
        ExitCode::from(EXIT_ERROR)
    };
    let token = match read_token(&args.token_env) {
        Ok(token) => token,
        Err(message) => return fail(message),
    };
    let client = match AggregatorClient::new(&args.aggregator, &args.run, args.index, &token) {
        Ok(client) => client,
        Err(e) => return fail(e.to_string()),
    };
    drop(token);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let agent = Agent::new(
        client,
        FileRoots {
            manifest_dir: args.manifest_dir,
            configmaps: args.configmaps,
        },
        host_name(),
    )
    .with_allowed_targets(args.allowed_targets.unwrap_or_default());
    let ended = runtime.block_on(async {
        let shutdown = watch_signals(prefix.clone());
        agent.run(shutdown).await
    });
    match ended {
        Ok(outcome) => {
            eprintln!("{prefix}: {outcome}");
            ExitCode::from(EXIT_PASSED)
        }
        Err(e) => {
            let hint = match &e {
                AgentError::Aggregator(c) if c.status() == Some(StatusCode::UNAUTHORIZED) => {
                    format!(
                        " (the token is read from the environment variable {}; \
                         --token-env names another)",
                        args.token_env
                    )
                }
                _ => String::new(),
            };
            fail(format!("{e}{hint}"))
        }
    }
}

/// Reads the bearer token from the environment variable `name`.
fn read_token(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(format!(
            "this runner's bearer token is missing: the environment variable {name} is not set \
             (in a runner pod it comes from the run's Secret)"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "this runner's bearer token in the environment variable {name} is not valid UTF-8"
        )),
    }
}

/// The pod or host name, for the aggregator's messages about this runner.
pub fn host_name() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_files = || {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
    };
    from_env
        .or_else(from_files)
        .map(|h| h.trim().chars().take(253).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

/// Turns SIGTERM and Ctrl-C into a shutdown request for [`Agent::run`]; a second signal exits
/// the process at once (exit 1).
fn watch_signals(prefix: String) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut seen = 0;
        loop {
            #[cfg(unix)]
            let name = tokio::select! {
                () = ctrl_c() => "Ctrl-C",
                () = sigterm(&mut term) => "SIGTERM",
            };
            #[cfg(not(unix))]
            let name = {
                ctrl_c().await;
                "Ctrl-C"
            };
            seen += 1;
            if seen == 1 {
                let _ = tx.send(Some(name.to_string()));
            } else {
                eprintln!("{prefix}: second signal ({name}): exiting at once");
                std::process::exit(i32::from(EXIT_ERROR));
            }
        }
    });
    rx
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(unix)]
async fn sigterm(term: &mut Option<tokio::signal::unix::Signal>) {
    let received = match term {
        Some(signal) => signal.recv().await.is_some(),
        None => false,
    };
    if !received {
        std::future::pending::<()>().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol client
// ---------------------------------------------------------------------------------------------

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
pub struct RetryPolicy {
    /// Pause after the first failure; it doubles after each further failure.
    pub first_delay: Duration,
    /// Longest pause.
    pub max_delay: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub budget: Duration,
}

impl RetryPolicy {
    /// Registering, polling for the start, posting setup: the aggregator may come up after
    /// the pod, or restart; about a minute of patience.
    pub const CONNECT: RetryPolicy = RetryPolicy {
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        budget: Duration::from_secs(60),
    };
    /// The final report: a few attempts over about ten seconds (a pod being deleted has 30 s).
    pub const FINAL_REPORT: RetryPolicy = RetryPolicy {
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
    connect_retry: RetryPolicy,
    final_retry: RetryPolicy,
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
            .user_agent(crate::step::USER_AGENT)
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
            connect_retry: RetryPolicy::CONNECT,
            final_retry: RetryPolicy::FINAL_REPORT,
            log_prefix: format!("volley agent (run {run}, runner {index})"),
        })
    }

    /// Replaces the retry policies (tests use short ones).
    pub fn with_retry(mut self, connect: RetryPolicy, final_report: RetryPolicy) -> Self {
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
        policy: RetryPolicy,
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

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// How an agent ended when it did its part (exit code 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentOutcome {
    /// The load ran and the final report was delivered. `stopped` says why it ended early,
    /// if it did (the aggregator's `stop` reason, or a signal).
    Finished {
        /// Why the run was stopped before its plan ended.
        stopped: Option<String>,
        /// Requests this runner sent (in its final report).
        requests: u64,
    },
    /// The aggregator aborted the run before it started.
    Aborted {
        /// The aggregator's reason.
        reason: String,
    },
}

impl fmt::Display for AgentOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentOutcome::Finished {
                stopped: None,
                requests,
            } => write!(f, "done: {requests} requests; final report delivered"),
            AgentOutcome::Finished {
                stopped: Some(why),
                requests,
            } => write!(
                f,
                "stopped early ({why}): {requests} requests; final report delivered"
            ),
            AgentOutcome::Aborted { reason } => write!(
                f,
                "the run was aborted before the start ({reason}); nothing ran here"
            ),
        }
    }
}

/// Why an agent could not do its part (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A call to the aggregator failed for good.
    #[error(transparent)]
    Aggregator(#[from] ClientError),
    /// This runner cannot run the test it was given (reported to the aggregator).
    #[error("cannot run this test: {0}")]
    Prepare(String),
    /// A signal arrived before the load started.
    #[error("interrupted ({0}) before the load started")]
    Interrupted(String),
    /// The load ran, but its final report could not be delivered.
    #[error(
        "the final report could not be delivered, so the aggregator misses this runner's last figures: {0}"
    )]
    FinalReport(ClientError),
}

/// One runner of a distributed run: [`Agent::run`] takes it from registration to the final
/// report.
#[derive(Debug)]
pub struct Agent {
    client: AggregatorClient,
    roots: FileRoots,
    host: String,
    allowed_targets: TargetPolicy,
}

/// What the start long-poll ended with.
enum Begin {
    Start {
        at: Instant,
        setup: BTreeMap<String, String>,
    },
    Abort(String),
}

impl Agent {
    /// An agent speaking through `client`, finding files under `roots`, calling itself `host`.
    pub fn new(client: AggregatorClient, roots: FileRoots, host: String) -> Agent {
        Agent {
            client,
            roots,
            host,
            allowed_targets: TargetPolicy::allow_all(),
        }
    }

    /// Limits the requests this runner sends to `policy`'s targets (`--allowed-targets`); a
    /// spec with a URL outside it fails before the load, and is reported to the aggregator as
    /// this runner's error. See [`Engine::prepare_with_policy`].
    pub fn with_allowed_targets(mut self, policy: TargetPolicy) -> Agent {
        self.allowed_targets = policy;
        self
    }

    fn say(&self, message: impl fmt::Display) {
        eprintln!("{}: {message}", self.client.log_prefix);
    }

    /// Runs this runner to the end. `shutdown` turning `Some(why)` (a signal) stops the run
    /// gracefully, like the aggregator's `stop`; before the load starts it ends the agent
    /// with an error.
    pub async fn run(
        &self,
        mut shutdown: watch::Receiver<Option<String>>,
    ) -> Result<AgentOutcome, AgentError> {
        let index = self.client.index();
        let request = ReadyRequest {
            protocol: PROTOCOL_VERSION,
            host: self.host.clone(),
        };
        let ready = tokio::select! {
            ready = self.client.ready(&request) => ready?,
            why = requested(&mut shutdown) => return Err(AgentError::Interrupted(why)),
        };
        let interval = report_interval(ready.report_interval_ms);
        self.say(format_args!(
            "registered: LoadTest `{}`, runner {index} of {}, reports every {}ms",
            ready.name,
            ready.runners,
            interval.as_millis()
        ));

        let engine = match self.prepare(&ready) {
            Ok(engine) => engine,
            Err(message) => {
                let run = RunMetrics::for_spec(&ready.spec);
                self.report_failure(1, &run, message.clone()).await;
                return Err(AgentError::Prepare(message));
            }
        };

        let begin = tokio::select! {
            begin = self.wait_for_start(&engine) => begin?,
            why = requested(&mut shutdown) => {
                let message = format!("interrupted ({why}) before the load started");
                self.report_failure(1, &engine.snapshot(), message).await;
                return Err(AgentError::Interrupted(why));
            }
        };
        let (start, setup) = match begin {
            Begin::Start { at, setup } => (at, setup),
            Begin::Abort(reason) => return Ok(AgentOutcome::Aborted { reason }),
        };
        let wait = start.saturating_duration_since(Instant::now());
        self.say(format_args!(
            "starting in {}ms (setup values: {})",
            wait.as_millis(),
            if setup.is_empty() {
                "none".to_string()
            } else {
                setup.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        ));

        let (stop_tx, stop_rx) = watch::channel(false);
        let (finished_tx, mut finished_rx) = watch::channel(false);
        let load = async {
            let summaries = engine.run(setup, start, stop_rx).await;
            let _ = finished_tx.send(true);
            summaries
        };
        let reports = self.report_loop(
            &engine,
            start,
            interval,
            &stop_tx,
            &mut finished_rx,
            &mut shutdown,
        );
        let (summaries, (last_seq, stopped, signalled)) = tokio::join!(load, reports);
        let interrupted: u64 = summaries.iter().map(|s| s.interrupted).sum();
        if interrupted > 0 {
            self.say(format_args!(
                "{interrupted} in-flight iteration(s) did not finish within gracefulStop"
            ));
        }

        let snapshot = engine.snapshot();
        let requests = snapshot.overall().counters.requests;
        let report =
            match Report::from_metrics(index, last_seq + 1, start.elapsed(), true, &snapshot) {
                Ok(report) => RunnerReport {
                    report,
                    first_request_unix_ms: engine.first_request_unix_ms(),
                    // A signal (the pod deleted or evicted) cut this runner's share short: the
                    // aggregator must count it as a runner failure, not a runner that finished.
                    error: signalled.map(|why| {
                        format!(
                            "stopped by {why} before its share was done (pod deleted or \
                             evicted?); its figures so far are kept"
                        )
                    }),
                },
                Err(e) => {
                    let message = format!("cannot encode the final figures: {e}");
                    let run = RunMetrics::for_spec(&ready.spec);
                    self.report_failure(last_seq + 1, &run, message.clone())
                        .await;
                    return Err(AgentError::FinalReport(ClientError::Config(message)));
                }
            };
        self.client
            .final_report(&report)
            .await
            .map_err(AgentError::FinalReport)?;
        Ok(AgentOutcome::Finished { stopped, requests })
    }

    /// Checks the plan the aggregator sent and compiles this runner's share.
    fn prepare(&self, ready: &ReadyResponse) -> Result<Engine, String> {
        let index = self.client.index();
        if index >= ready.runners {
            return Err(format!(
                "runner index {index} is outside the run's {} runner(s)",
                ready.runners
            ));
        }
        if let Err(errors) = volley_core::validate::validate(&ready.spec) {
            let listed = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(format!("the spec is invalid: {listed}"));
        }
        let place = RunnerPlace {
            index,
            count: ready.runners,
        };
        Engine::prepare_with_policy(&ready.spec, place, &self.roots, &self.allowed_targets)
            .map_err(|e| e.to_string())
    }

    /// Sends a final report number `seq` carrying `message` as this runner's error (best
    /// effort, with retries), and says so.
    async fn report_failure(&self, seq: u64, run: &RunMetrics, message: String) {
        self.say("sending an error report to the aggregator");
        let index = self.client.index();
        // Figures that cannot be encoded are left out: the error is what matters here.
        let report =
            Report::from_metrics(index, seq, Duration::ZERO, true, run).unwrap_or(Report {
                runner: index,
                seq,
                elapsed_ms: 0,
                done: true,
                scenarios: Vec::new(),
            });
        let report = RunnerReport {
            report,
            first_request_unix_ms: None,
            error: Some(message),
        };
        if let Err(e) = self.client.final_report(&report).await {
            self.say(format_args!("the error report was not delivered: {e}"));
        }
    }

    /// Long-polls the start; runs setup when asked (once: a repeated ask gets the same result).
    async fn wait_for_start(&self, engine: &Engine) -> Result<Begin, AgentError> {
        let mut setup_result: Option<SetupResult> = None;
        loop {
            let asked = Instant::now();
            match self.client.poll_start().await? {
                StartResponse::Wait => {
                    tokio::time::sleep_until(asked + MIN_POLL_SPACING).await;
                }
                StartResponse::RunSetup => {
                    let result = match &setup_result {
                        Some(result) => result.clone(),
                        None => {
                            let result = self.run_setup(engine).await;
                            setup_result = Some(result.clone());
                            result
                        }
                    };
                    self.client.post_setup(&result).await?;
                }
                StartResponse::Start {
                    start_at_unix_ms,
                    setup,
                } => {
                    let at = start_instant(start_at_unix_ms, SystemTime::now(), Instant::now());
                    return Ok(Begin::Start { at, setup });
                }
                StartResponse::Abort { reason } => return Ok(Begin::Abort(reason)),
            }
        }
    }

    async fn run_setup(&self, engine: &Engine) -> SetupResult {
        self.say("running setup");
        let outcome = engine.run_setup().await;
        let report = Report::from_metrics(
            self.client.index(),
            0,
            Duration::ZERO,
            false,
            &engine.snapshot(),
        )
        .map_err(|e| self.say(format_args!("cannot encode the setup figures: {e}")))
        .ok();
        match outcome {
            Ok(values) => SetupResult {
                values,
                error: None,
                report,
            },
            Err(e) => {
                self.say(format_args!(
                    "setup failed: {e}; waiting for the aggregator to end the run"
                ));
                SetupResult {
                    values: BTreeMap::new(),
                    error: Some(e.to_string()),
                    report,
                }
            }
        }
    }

    /// Reports every `interval` from `start` until the load is `finished`; turns a `stop`
    /// answer or a shutdown request into `stop_tx`. Returns the last sequence number used, why
    /// the run was stopped early, if it was, and the signal that stopped it, if one did before
    /// the aggregator said stop.
    async fn report_loop(
        &self,
        engine: &Engine,
        start: Instant,
        interval: Duration,
        stop_tx: &watch::Sender<bool>,
        finished: &mut watch::Receiver<bool>,
        shutdown: &mut watch::Receiver<Option<String>>,
    ) -> (u64, Option<String>, Option<String>) {
        let index = self.client.index();
        let timeout = post_timeout(interval);
        let mut ticker = tokio::time::interval_at(start + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let mut stopped: Option<String> = None;
        let mut signalled: Option<String> = None;
        // Since when no report has been accepted (none yet: the start).
        let mut last_accepted = start;
        loop {
            tokio::select! {
                biased;
                () = is_true(finished) => break,
                why = requested(shutdown), if stopped.is_none() => {
                    self.say(format_args!(
                        "{why}: stopping; in-flight iterations get their gracefulStop"
                    ));
                    stopped = Some(format!("interrupted ({why})"));
                    signalled = Some(why);
                    let _ = stop_tx.send(true);
                }
                _ = ticker.tick() => {
                    let snapshot = engine.snapshot();
                    let report = match Report::from_metrics(
                        index, seq + 1, start.elapsed(), false, &snapshot,
                    ) {
                        Ok(report) => report,
                        Err(e) => {
                            self.say(format_args!("cannot encode a report: {e}"));
                            continue;
                        }
                    };
                    seq += 1;
                    let report = RunnerReport {
                        report,
                        first_request_unix_ms: engine.first_request_unix_ms(),
                        error: None,
                    };
                    let answer = self.client.report(&report, timeout).await;
                    if answer.is_ok() {
                        last_accepted = Instant::now();
                    }
                    match answer {
                        Ok(ReportResponse { stop: true, reason }) if stopped.is_none() => {
                            let why = reason.unwrap_or_else(|| "no reason given".into());
                            self.say(format_args!(
                                "the aggregator says stop ({why}); in-flight iterations get \
                                 their gracefulStop"
                            ));
                            stopped = Some(why);
                            let _ = stop_tx.send(true);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let lost = lost_run(&e, last_accepted.elapsed());
                            match lost {
                                Some(why) if stopped.is_none() => {
                                    self.say(format_args!(
                                        "{why}; stopping, in-flight iterations get their \
                                         gracefulStop"
                                    ));
                                    stopped = Some(why);
                                    let _ = stop_tx.send(true);
                                }
                                _ => self.say(format_args!(
                                    "report {seq} not delivered ({e}); the next one makes up for it"
                                )),
                            }
                        }
                    }
                }
            }
        }
        (seq, stopped, signalled)
    }
}

/// Whether a runner whose report just failed with `error`, `since` its last accepted one, has
/// lost its run and must stop its load: no report went through for [`LOST_RUN_LIMIT`], whatever
/// the failure (the aggregator unreachable, a run it does not know: one that restarted
/// re-learns its runs within seconds, so a shorter loss is ridden out). Says why, for the log.
pub fn lost_run(error: &ClientError, since: Duration) -> Option<String> {
    (since >= LOST_RUN_LIMIT).then(|| {
        format!(
            "no report accepted for {}s ({error}): the run is lost, its load stops here",
            since.as_secs()
        )
    })
}

/// Waits until `rx` holds `true`; never returns if its sender is gone without sending it.
async fn is_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for a shutdown request and returns its reason; never returns if none can come.
async fn requested(rx: &mut watch::Receiver<Option<String>>) -> String {
    let why = match rx.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        Err(_) => None,
    };
    match why {
        Some(why) => why,
        None => std::future::pending().await,
    }
}

/// The report interval for the aggregator's `reportIntervalMs`: 0 means the default (1 s);
/// others are kept within [`MIN_REPORT_INTERVAL`] and [`MAX_REPORT_INTERVAL`].
pub fn report_interval(ms: u64) -> Duration {
    if ms == 0 {
        DEFAULT_REPORT_INTERVAL
    } else {
        Duration::from_millis(ms).clamp(MIN_REPORT_INTERVAL, MAX_REPORT_INTERVAL)
    }
}

/// How long a periodic report may take: less than the interval, so reports never pile up.
pub fn post_timeout(interval: Duration) -> Duration {
    interval.mul_f64(0.8)
}

/// The local instant of the wall-clock `startAt`, given the wall clock and the instant now; a
/// moment already past means now.
pub fn start_instant(start_at_unix_ms: u64, now_wall: SystemTime, now: Instant) -> Instant {
    let start_at = UNIX_EPOCH + Duration::from_millis(start_at_unix_ms);
    match start_at.duration_since(now_wall) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_lost_after_the_limit_without_an_accepted_report_whatever_the_failure() {
        let unknown = ClientError::Unavailable {
            call: Call::Report,
            detail: "the aggregator answered 404 Not Found".into(),
            status: Some(StatusCode::NOT_FOUND),
        };
        let refused = ClientError::Refused {
            call: Call::Report,
            status: StatusCode::UNAUTHORIZED,
            hint: String::new(),
            body: String::new(),
        };
        for e in [&unknown, &refused] {
            // An aggregator that restarted re-learns its runs within seconds: ridden out.
            assert_eq!(lost_run(e, Duration::from_secs(5)), None);
            assert_eq!(lost_run(e, LOST_RUN_LIMIT - Duration::from_millis(1)), None);
            let why = lost_run(e, LOST_RUN_LIMIT).unwrap();
            assert!(why.contains("no report accepted for 30s"), "{why}");
        }
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let p = RetryPolicy {
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
        let p = RetryPolicy::CONNECT;
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
    fn start_at_becomes_a_local_instant_saturating_at_now() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        assert_eq!(
            start_instant(1_700_000_000_750, wall, now),
            now + Duration::from_millis(750)
        );
        assert_eq!(start_instant(1_699_999_999_000, wall, now), now);
        assert_eq!(start_instant(0, wall, now), now);
    }

    #[test]
    fn report_intervals_are_bounded_and_posts_time_out_before_the_next() {
        assert_eq!(report_interval(0), DEFAULT_REPORT_INTERVAL);
        assert_eq!(report_interval(1), MIN_REPORT_INTERVAL);
        assert_eq!(report_interval(1000), Duration::from_secs(1));
        assert_eq!(report_interval(u64::MAX), MAX_REPORT_INTERVAL);
        assert!(post_timeout(Duration::from_secs(1)) < Duration::from_secs(1));
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
