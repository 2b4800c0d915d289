//! Rules a LoadTest must follow that the CRD schema cannot express, as errors that name the
//! field path and say what is wrong in a sentence.
//!
//! Shared by `volley validate`, `volley run` and the operator, so a manifest is judged the same
//! way everywhere.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use crate::metrics::custom::CustomKind;
use crate::protocol::TOKEN_ENV;
use crate::protocol::custom::MAX_REPORT_CUSTOM_METRICS;
use crate::scenario::{StepKind, is_measured};
use crate::template::{Reference, Template, is_identifier};
use crate::threshold::{Metric, Subject, ThresholdExpr, parse_threshold};
use volley_crds::duration::Duration;
use volley_crds::spec::{
    CustomMetric, DataFeeder, Executor, LoadTestSpec, PrometheusObserve, QueryWindow, Request,
    Runners, Scenario, Sleep, Step, Threshold, ValueSource, WebSocket,
};
use volley_crds::text::shorten;

/// Whether `spec` records what the threshold's subject needs (a declared custom metric, a
/// Prometheus query, WebSocket steps), with the reason when it does not.
fn check_threshold_subject(expr: &ThresholdExpr, spec: &LoadTestSpec) -> Result<(), String> {
    let _ = spec;
    match &expr.subject {
        Subject::Http => Ok(()),
        Subject::WsConnect | Subject::WsMessage | Subject::WsChunk => {
            let any = spec
                .scenarios
                .iter()
                .flat_map(|sc| &sc.steps)
                .any(|st| st.websocket.is_some());
            if any {
                Ok(())
            } else {
                Err(format!(
                    "`{}` thresholds judge WebSocket steps, and no scenario has a `websocket` step",
                    expr.subject
                ))
            }
        }
        Subject::Trend { name, .. } | Subject::Counter(name) | Subject::Gauge(name) => {
            check_custom_subject(expr, name, spec)
        }
        Subject::Prom(name) => {
            let queries = spec
                .observe
                .as_ref()
                .and_then(|o| o.prometheus.as_ref())
                .map(|p| p.queries.as_slice())
                .unwrap_or_default();
            if queries.iter().any(|q| &q.name == name) {
                Ok(())
            } else {
                let names: BTreeSet<String> = queries.iter().map(|q| q.name.clone()).collect();
                Err(format!(
                    "`{}` names no query of spec.observe.prometheus.queries{}",
                    expr.subject,
                    known_list(&names, "queries")
                ))
            }
        }
    }
}

/// A threshold on a custom metric: the name is declared in some scenario step's `metrics`,
/// with the subject's kind, and a trend's time unit matches the threshold's limit.
fn check_custom_subject(
    expr: &ThresholdExpr,
    name: &str,
    spec: &LoadTestSpec,
) -> Result<(), String> {
    let declared = spec
        .scenarios
        .iter()
        .flat_map(|sc| &sc.steps)
        .flat_map(|st| &st.metrics)
        .filter(|m| m.name == name)
        .find_map(CustomKind::of);
    let Some(kind) = declared else {
        let mut names: Vec<&str> = spec
            .scenarios
            .iter()
            .flat_map(|sc| &sc.steps)
            .flat_map(|st| &st.metrics)
            .map(|m| m.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        let known: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
        return Err(format!(
            "`{}`: no scenario step declares a custom metric `{name}` in its `metrics`{}",
            expr.subject,
            known_list(&known, "declared custom metrics")
        ));
    };
    let wanted = match &expr.subject {
        Subject::Trend { .. } => "trend",
        Subject::Counter(_) => "counter",
        _ => "gauge",
    };
    if kind.name() != wanted {
        return Err(format!(
            "`{}`: custom metric `{name}` is a {kind}; write `{}({name})`",
            expr.subject,
            kind.name()
        ));
    }
    if let (Subject::Trend { time_unit, .. }, CustomKind::Trend { time }) = (&expr.subject, kind)
        && expr.metric != Metric::Count
        && *time_unit != time
    {
        return Err(if time {
            format!(
                "`{}` is a time trend (its unit is a time unit): write the limit with a time \
                 unit, e.g. `{} < 200ms`",
                expr.subject, expr.metric
            )
        } else {
            format!(
                "`{}` is a plain-number trend (its unit is not us, ms or s): write the limit as \
                 a plain number, e.g. `{} < 20`",
                expr.subject, expr.metric
            )
        });
    }
    Ok(())
}

/// The compiled size a regular expression (extraction, checks, custom metrics) may reach: a
/// pattern like `a{1000}{1000}` must be refused, not compiled into gigabytes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A WebSocket threshold scoped to a scenario or step: that scope must hold a `websocket`
/// step, or the threshold could only ever say "no data". Says which field is at fault.
fn check_ws_scope(
    expr: &ThresholdExpr,
    t: &Threshold,
    spec: &LoadTestSpec,
) -> Result<(), (&'static str, String)> {
    if !matches!(
        expr.subject,
        Subject::WsConnect | Subject::WsMessage | Subject::WsChunk
    ) {
        return Ok(());
    }
    let Some(sc) = t
        .scenario
        .as_ref()
        .and_then(|name| spec.scenarios.iter().find(|s| &s.name == name))
    else {
        return Ok(());
    };
    match &t.step {
        Some(step) => match sc.steps.iter().find(|s| &s.display_name() == step) {
            Some(s) if s.websocket.is_none() => Err((
                "step",
                format!(
                    "`{}` thresholds judge WebSocket steps, and step `{step}` is not one",
                    expr.subject
                ),
            )),
            _ => Ok(()),
        },
        None if !sc.steps.iter().any(|s| s.websocket.is_some()) => Err((
            "scenario",
            format!(
                "`{}` thresholds judge WebSocket steps, and scenario `{}` has none",
                expr.subject, sc.name
            ),
        )),
        None => Ok(()),
    }
}

/// Most runner pods one LoadTest may ask for.
pub const MAX_PARALLELISM: u32 = 1_000;
/// Most VUs (or maxVUs) one scenario may ask for, in total.
pub const MAX_VUS: u64 = 1_000_000;
/// Highest rate (iterations per timeUnit) one scenario may ask for, in total.
pub const MAX_RATE: u64 = 10_000_000;
/// Most iterations one scenario may ask for.
pub const MAX_ITERATIONS: u64 = 1_000_000_000_000;
/// Longest duration any field may hold.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest string accepted in a name.
pub const MAX_NAME_LEN: usize = 63;
/// Longest request URL template, in bytes (servers commonly refuse request lines over 8 KiB).
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Longest header name, and longest header value template, in bytes.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most `spec.observe.prometheus.queries` (each is one request to Prometheus after the run).
pub const MAX_PROMETHEUS_QUERIES: usize = 50;
/// Most custom metrics one step may declare.
pub const MAX_STEP_CUSTOM_METRICS: usize = 32;
/// Most errors [`validate`] or [`validate_for_cluster`] lists; one more entry counts the rest. A
/// manifest with 100 000 broken thresholds must not become a status message larger than etcd
/// accepts.
pub const MAX_ERRORS: usize = 100;

/// One problem with a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where, e.g. `spec.scenarios[1].steps[0].request.url`.
    pub path: String,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks every rule and returns all violations, not just the first.
pub fn validate(spec: &LoadTestSpec) -> Result<(), Vec<FieldError>> {
    run(spec).finish()
}

/// Everything that keeps `spec` from running in a cluster: [`validate`]'s rules, then the
/// cluster-only ones: no local `file:` sources (runner pods have no manifest directory; use a
/// `configMapRef`), no user variable named [`TOKEN_ENV`] (reserved for the run's token), and no
/// `${env:NAME}` that runner pods will not have (NAME not in `runners.env`, no `envFrom`). The
/// operator admits LoadTests with it; the manifest corpus tests it.
///
/// One walk of the spec, and one [`MAX_ERRORS`] cap over all of it.
pub fn validate_for_cluster(spec: &LoadTestSpec) -> Result<(), Vec<FieldError>> {
    // CLUSTER_RULES below names these rules for `volley validate`; keep the two together.
    let mut v = run(spec);
    v.cluster(spec);
    v.finish()
}

/// The rules [`validate_for_cluster`] adds to [`validate`], as `volley validate` names them
/// when it skips them (without `--cluster`).
pub const CLUSTER_RULES: &str = "no local `file:` sources (data, multipart; a cluster uses \
     configMapRef), no runners.env named VOLLEY_TOKEN, every ${env:NAME} declared in \
     runners.env (unless runners.envFrom is set)";

/// Walks `spec` once, checking every rule of [`validate`] and noting every `${env:NAME}`.
fn run(spec: &LoadTestSpec) -> Validator {
    let mut v = Validator::default();
    v.spec(spec);
    v
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
    /// Errors past [`MAX_ERRORS`], counted but not kept.
    suppressed: usize,
    /// Every `${env:NAME}` seen, with the field it is in.
    env_refs: Vec<(String, String)>,
    /// Every custom metric declared so far: its kind and where it was first declared.
    custom_metrics: BTreeMap<String, (CustomKind, String)>,
    /// Custom metric declarations in all steps.
    custom_declarations: usize,
}

/// The extracted names visible to a step: what earlier steps of the same list extract.
struct Scope<'a> {
    feeders: &'a BTreeSet<String>,
    setup_values: &'a BTreeSet<String>,
    /// True inside `setup`, where per-iteration values (feeders, `${vu}`) do not exist.
    in_setup: bool,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        // Paths and messages quote user text (keys, names, expressions); a hostile manifest
        // must not turn one error into megabytes of output, nor many errors into thousands.
        if self.errors.len() >= MAX_ERRORS {
            self.suppressed += 1;
            return;
        }
        self.errors.push(FieldError {
            path: shorten(&path.into(), 200),
            message: shorten(&message.into(), 400),
        });
    }

    /// The result: every error kept, then one more entry counting those past [`MAX_ERRORS`].
    fn finish(mut self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            if self.suppressed > 0 {
                self.errors.push(FieldError {
                    path: "spec".to_string(),
                    message: format!("… and {} more problems", self.suppressed),
                });
            }
            Err(self.errors)
        }
    }

    /// The cluster-only rules of [`validate_for_cluster`], after [`Validator::spec`] has
    /// walked the same `spec` (their `${env:NAME}` references are its `env_refs`).
    fn cluster(&mut self, spec: &LoadTestSpec) {
        let local = "a local file works with `volley run` only; in the cluster use configMapRef";
        for (i, feeder) in spec.data.iter().enumerate() {
            if feeder.file.is_some() {
                self.err(format!("spec.data[{i}].file"), local);
            }
        }
        let steps = spec
            .setup
            .iter()
            .enumerate()
            .map(|(j, s)| (format!("spec.setup[{j}]"), s))
            .chain(spec.scenarios.iter().enumerate().flat_map(|(i, sc)| {
                sc.steps
                    .iter()
                    .enumerate()
                    .map(move |(j, s)| (format!("spec.scenarios[{i}].steps[{j}]"), s))
            }));
        for (path, step) in steps {
            let parts = match StepKind::of(step) {
                Ok(StepKind::Request(r)) => r.multipart.as_slice(),
                Ok(StepKind::Sleep(_) | StepKind::WebSocket(_)) | Err(_) => &[],
            };
            for (k, part) in parts.iter().enumerate() {
                if part.file.is_some() {
                    self.err(format!("{path}.request.multipart[{k}].file"), local);
                }
            }
        }
        for (i, var) in spec.runners.env.iter().enumerate() {
            if var.name == TOKEN_ENV {
                self.err(
                    format!("spec.runners.env[{i}].name"),
                    format!("{TOKEN_ENV} is reserved for the run's token; pick another name"),
                );
            }
        }
        // `${env:NAME}` a runner pod cannot resolve: NAME is not in runners.env, so the run
        // would fail after its pods started. Cluster-only: `volley run` resolves it from the
        // shell's environment. With any envFrom source the names cannot be known offline.
        if spec.runners.env_from.is_empty() {
            let declared: BTreeSet<String> =
                spec.runners.env.iter().map(|e| e.name.clone()).collect();
            for (path, name) in std::mem::take(&mut self.env_refs) {
                if !declared.contains(&name) && name != TOKEN_ENV {
                    self.err(
                        path,
                        format!(
                            "${{env:{name}}} is not declared in spec.runners.env and spec.runners.envFrom is empty, so runner pods will not have it; add it to runners.env (e.g. with valueFrom.secretKeyRef)"
                        ),
                    );
                }
            }
        }
    }

    fn spec(&mut self, spec: &LoadTestSpec) {
        let setup_values: BTreeSet<String> = spec
            .setup
            .iter()
            .flat_map(|s| s.extract.keys().cloned())
            .collect();
        self.target(spec, &setup_values);
        let feeders = self.feeders(&spec.data);
        if let Some(b) = &spec.baseline {
            let path = "spec.baseline.configMapRef";
            if b.config_map_ref.name.is_empty() {
                self.err(format!("{path}.name"), "must not be empty");
            }
            if b.config_map_ref.key.is_empty() {
                self.err(
                    format!("{path}.key"),
                    "must not be empty (default: summary.json)",
                );
            }
        }
        let no_setup_values = BTreeSet::new();
        let setup_scope = Scope {
            feeders: &feeders,
            setup_values: &no_setup_values,
            in_setup: true,
        };
        self.steps(&spec.setup, "spec.setup", &setup_scope);

        if spec.scenarios.is_empty() {
            self.err("spec.scenarios", "at least one scenario is required");
        }
        let mut names = HashSet::new();
        let scope = Scope {
            feeders: &feeders,
            setup_values: &setup_values,
            in_setup: false,
        };
        for (i, sc) in spec.scenarios.iter().enumerate() {
            let path = format!("spec.scenarios[{i}]");
            self.name(&sc.name, &format!("{path}.name"), "scenario");
            if sc.name == crate::metrics::model::SETUP_SCENARIO {
                self.err(
                    format!("{path}.name"),
                    "`setup` is reserved for the results of spec.setup; pick another scenario name",
                );
            }
            if !names.insert(sc.name.as_str()) {
                self.err(
                    format!("{path}.name"),
                    format!("scenario name `{}` is used twice", sc.name),
                );
            }
            self.scenario(sc, &path, spec.runners.parallelism);
            if sc.steps.is_empty() {
                self.err(
                    format!("{path}.steps"),
                    "a scenario needs at least one step",
                );
            }
            self.steps(&sc.steps, &format!("{path}.steps"), &scope);
        }
        if self.custom_declarations > MAX_REPORT_CUSTOM_METRICS {
            self.err(
                "spec",
                format!(
                    "{} custom metrics are declared over all steps; at most \
                     {MAX_REPORT_CUSTOM_METRICS} are supported",
                    self.custom_declarations
                ),
            );
        }
        for (i, t) in spec.thresholds.iter().enumerate() {
            self.threshold(&t.to_threshold(), &format!("spec.thresholds[{i}]"), spec);
        }
        self.runners(&spec.runners);
        if let Some(timeout) = spec.timeout {
            self.positive_duration(timeout, "spec.timeout");
        }
        if let Some(prom) = spec.observe.as_ref().and_then(|o| o.prometheus.as_ref()) {
            self.prometheus(prom);
        }
    }

    /// `spec.observe.prometheus`: an http(s) URL with a host, one kind of credentials, and
    /// queries with unique names and some PromQL.
    fn prometheus(&mut self, prom: &PrometheusObserve) {
        let p = "spec.observe.prometheus";
        match url::Url::parse(&prom.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if u.host_str().is_none_or(str::is_empty) {
                    self.err(format!("{p}.url"), "the URL has no host");
                }
            }
            Ok(u) => self.err(
                format!("{p}.url"),
                format!(
                    "scheme `{}` is not supported; use http:// or https://",
                    u.scheme()
                ),
            ),
            // The URL may carry credentials: say what is wrong without repeating it.
            Err(e) => self.err(format!("{p}.url"), format!("not a URL: {e}")),
        }
        if let Some(auth) = &prom.auth
            && auth.bearer_token_secret_ref.is_some() == auth.basic_auth.is_some()
        {
            self.err(
                format!("{p}.auth"),
                "set exactly one of bearerTokenSecretRef and basicAuth",
            );
        }
        if prom.queries.is_empty() {
            self.err(format!("{p}.queries"), "at least one query is required");
        } else if prom.queries.len() > MAX_PROMETHEUS_QUERIES {
            self.err(
                format!("{p}.queries"),
                format!("at most {MAX_PROMETHEUS_QUERIES} queries"),
            );
        }
        let mut names = HashSet::new();
        for (i, q) in prom.queries.iter().enumerate() {
            let path = format!("{p}.queries[{i}]");
            self.name(&q.name, &format!("{path}.name"), "query");
            if !names.insert(q.name.as_str()) {
                self.err(
                    format!("{path}.name"),
                    format!("query name `{}` is used twice", q.name),
                );
            }
            if let Some(by) = &q.by {
                let valid = by.len() <= 128
                    && by.chars().enumerate().all(|(i, c)| {
                        c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                    })
                    && !by.is_empty();
                if !valid {
                    self.err(
                        format!("{path}.by"),
                        format!("`{by}` is not a Prometheus label name"),
                    );
                }
                if q.series {
                    self.err(
                        format!("{path}.series"),
                        "a `by` query is not sampled over time; chart a single series instead",
                    );
                }
            }
            if q.query.trim().is_empty() {
                self.err(format!("{path}.query"), "the query is empty");
            } else if q.query.len() > MAX_URL_BYTES {
                self.err(
                    format!("{path}.query"),
                    format!("the query is longer than {MAX_URL_BYTES} bytes"),
                );
            }
        }
        if let Some(timeout) = prom.timeout {
            self.positive_duration(timeout, &format!("{p}.timeout"));
        }
    }

    fn target(&mut self, spec: &LoadTestSpec, setup_values: &BTreeSet<String>) {
        let t = &spec.target;
        match url::Url::parse(&t.base_url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if u.host_str().is_none_or(str::is_empty) {
                    self.err("spec.target.baseUrl", "the URL has no host");
                }
            }
            Ok(u) => self.err(
                "spec.target.baseUrl",
                format!(
                    "scheme `{}` is not supported; use http:// or https://",
                    u.scheme()
                ),
            ),
            Err(e) => self.err(
                "spec.target.baseUrl",
                format!(
                    "`{}` is not a URL ({e}); write e.g. http://checkout.team-a.svc:8080",
                    shorten(&t.base_url, 60)
                ),
            ),
        }
        self.positive_duration(t.timeout, "spec.target.timeout");
        self.headers(&t.headers, "spec.target.headers");
        for (name, value) in &t.headers {
            let p = format!("spec.target.headers.{name}");
            let tpl = match Template::parse(value) {
                Ok(tpl) => tpl,
                Err(e) => {
                    self.err(p, e.message);
                    continue;
                }
            };
            for r in tpl.references() {
                let problem = match r {
                    Reference::Env(env) => self.env_reference(&p, env),
                    Reference::Setup(value) if !setup_values.contains(value) => {
                        Some(not_extracted_by_setup(r, setup_values))
                    }
                    Reference::Setup(_) | Reference::Uuid | Reference::Runner => None,
                    _ => Some(format!(
                        "{r} cannot be used in target headers; only ${{env:NAME}}, ${{setup.NAME}}, ${{uuid}} and ${{runner}} can"
                    )),
                };
                if let Some(message) = problem {
                    self.err(p.clone(), message);
                }
            }
        }
    }

    fn feeders(&mut self, data: &[DataFeeder]) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (i, f) in data.iter().enumerate() {
            let path = format!("spec.data[{i}]");
            self.name(&f.name, &format!("{path}.name"), "feeder");
            if is_identifier(&f.name) && !names.insert(f.name.clone()) {
                self.err(
                    format!("{path}.name"),
                    format!("feeder name `{}` is used twice", f.name),
                );
            }
            if f.name == "setup" || f.name == "env" {
                self.err(
                    format!("{path}.name"),
                    format!("`{}` is reserved; pick another feeder name", f.name),
                );
            }
            match (&f.config_map_ref, &f.file) {
                (Some(_), Some(_)) => {
                    self.err(path.clone(), "set either configMapRef or file, not both")
                }
                (None, None) => self.err(
                    path.clone(),
                    "a feeder needs configMapRef (in the cluster) or file (for volley run)",
                ),
                _ => {}
            }
            if let Some(cm) = &f.config_map_ref {
                if cm.name.is_empty() {
                    self.err(format!("{path}.configMapRef.name"), "must not be empty");
                }
                if cm.key.is_empty() {
                    self.err(format!("{path}.configMapRef.key"), "must not be empty");
                }
            }
            if f.file.as_deref() == Some("") {
                self.err(format!("{path}.file"), "must not be empty");
            }
        }
        names
    }

    fn scenario(&mut self, sc: &Scenario, path: &str, parallelism: u32) {
        let ex = sc.executor;
        let fields = executor_fields(ex);
        for (field, is_set) in SCENARIO_FIELDS {
            let set = is_set(sc);
            if set && !fields.reads.contains(&field) {
                self.err(
                    format!("{path}.{field}"),
                    format!(
                        "`{field}` does not apply to executor {}; it is for {}",
                        ex.as_str(),
                        executors_reading(field)
                    ),
                );
            }
            if !set && fields.needs.contains(&field) {
                self.err(
                    format!("{path}.{field}"),
                    format!("executor {} needs `{field}`", ex.as_str()),
                );
            }
        }
        // Whether `iterations` is a total (split across runners) and `vus` defaults to 1.
        let (total_iterations, default_one_vu) = match ex {
            Si => (true, true),
            Pvi => (false, true),
            Car | Rar | Cv | Rv => (false, false),
        };

        // An out-of-range parallelism has its own error; splitting by it would only add noise.
        let n = if (1..=MAX_PARALLELISM).contains(&parallelism) {
            u64::from(parallelism)
        } else {
            1
        };
        let split_err = |what: &str, total: u64| {
            format!(
                "{what} {total} cannot be split across {n} runners (each runner needs at least 1); raise it to {n} or lower runners.parallelism"
            )
        };
        if let Some(rate) = sc.rate {
            self.bounded(rate, 1, MAX_RATE, &format!("{path}.rate"), "rate");
            if rate >= 1 && rate < n {
                self.err(format!("{path}.rate"), split_err("rate", rate));
            }
        }
        if let Some(r) = sc.start_rate {
            self.bounded(r, 0, MAX_RATE, &format!("{path}.startRate"), "startRate");
        }
        if let Some(vus) = sc.vus {
            self.bounded(vus, 1, MAX_VUS, &format!("{path}.vus"), "vus");
            if vus >= 1 && vus < n {
                self.err(format!("{path}.vus"), split_err("vus", vus));
            }
        }
        if let Some(v) = sc.start_vus {
            self.bounded(v, 0, MAX_VUS, &format!("{path}.startVUs"), "startVUs");
        }
        if let Some(m) = sc.max_vus {
            self.bounded(m, 1, MAX_VUS, &format!("{path}.maxVUs"), "maxVUs");
            if m >= 1 && m < n {
                self.err(format!("{path}.maxVUs"), split_err("maxVUs", m));
            }
        }
        if let Some(it) = sc.iterations {
            self.bounded(
                it,
                1,
                MAX_ITERATIONS,
                &format!("{path}.iterations"),
                "iterations",
            );
            if total_iterations && it >= 1 && it < n {
                self.err(format!("{path}.iterations"), split_err("iterations", it));
            }
            if total_iterations
                && let Some(vus) = sc.vus
                && vus > it
            {
                self.err(
                    format!("{path}.vus"),
                    format!("{vus} VUs for {it} shared iterations leaves VUs with nothing to do; use at most {it} VUs"),
                );
            }
        }
        // Iteration executors default to 1 VU, which cannot be split across several runners.
        if default_one_vu && sc.vus.is_none() && n > 1 {
            self.err(format!("{path}.vus"), split_err("the default of 1 VU", 1));
        }
        if let Some(tu) = sc.time_unit {
            self.positive_duration(tu, &format!("{path}.timeUnit"));
        }
        if let Some(d) = sc.duration {
            self.positive_duration(d, &format!("{path}.duration"));
        }
        if let Some(d) = sc.max_duration {
            self.positive_duration(d, &format!("{path}.maxDuration"));
        }
        self.bounded_duration(sc.start_time, &format!("{path}.startTime"));
        self.bounded_duration(sc.graceful_stop, &format!("{path}.gracefulStop"));
        self.stages(sc, path, n);
    }

    fn stages(&mut self, sc: &Scenario, path: &str, n: u64) {
        let (max, what) = match sc.executor {
            Rv => (MAX_VUS, "VUs"),
            Rar => (MAX_RATE, "iterations per timeUnit"),
            Car | Cv | Si | Pvi => return,
        };
        let mut total = std::time::Duration::ZERO;
        let mut peak = 0;
        for (i, st) in sc.stages.iter().enumerate() {
            let p = format!("{path}.stages[{i}]");
            self.bounded_duration(st.duration, &format!("{p}.duration"));
            total = total.saturating_add(st.duration.get());
            if st.target > max {
                self.err(
                    format!("{p}.target"),
                    format!("{} {what} is more than the limit of {max}", st.target),
                );
            }
            peak = peak.max(st.target);
        }
        if !sc.stages.is_empty() && total.is_zero() {
            self.err(
                format!("{path}.stages"),
                "the stages add up to 0s; at least one stage needs a duration",
            );
        }
        if !sc.stages.is_empty() && peak < n {
            self.err(
                format!("{path}.stages"),
                format!("the highest stage target is {peak} {what}, fewer than the {n} runners: some runners would never send load; raise a target to {n} or lower runners.parallelism"),
            );
        }
    }

    fn steps(&mut self, steps: &[Step], path: &str, scope: &Scope<'_>) {
        let mut extracted: BTreeSet<String> = BTreeSet::new();
        let mut names = HashSet::new();
        for (i, step) in steps.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(name) = &step.name {
                if name.trim().is_empty() {
                    self.err(format!("{p}.name"), "must not be empty");
                } else if name.len() > 128 {
                    self.err(format!("{p}.name"), "is longer than 128 characters");
                }
            }
            if !names.insert(step.display_name()) {
                self.err(
                    format!("{p}.name"),
                    format!(
                        "step name `{}` is used twice in this list; give the steps distinct names",
                        shorten(&step.display_name(), 60)
                    ),
                );
            }
            match StepKind::of(step) {
                // The step itself is at fault, not the field the error names.
                Err(e) => self.err(p.clone(), e.message),
                Ok(StepKind::Sleep(sleep)) => {
                    self.sleep(sleep, &format!("{p}.sleep"));
                    for (field, set) in [
                        ("check", step.check.is_some()),
                        ("extract", !step.extract.is_empty()),
                        ("retry", step.retry.is_some()),
                        ("until", step.until.is_some()),
                        ("metrics", !step.metrics.is_empty()),
                    ] {
                        if set {
                            self.err(
                                format!("{p}.{field}"),
                                format!("`{field}` needs a request; a sleep step has none"),
                            );
                        }
                    }
                }
                Ok(StepKind::Request(req)) => {
                    self.request(req, &format!("{p}.request"), scope, &extracted);
                    self.step_options(step, &p);
                    self.custom_metrics(&step.metrics, &format!("{p}.metrics"));
                }
                Ok(StepKind::WebSocket(ws)) => {
                    self.websocket(ws, &format!("{p}.websocket"), scope, &extracted);
                    self.step_options(step, &p);
                    self.custom_metrics(&step.metrics, &format!("{p}.metrics"));
                    // Polling resends a request; a session is not resent until a value shows.
                    if step.until.is_some() {
                        self.err(
                            format!("{p}.until"),
                            "`until` polls a request; a websocket step waits with `messages[].expect` instead",
                        );
                    }
                    if let Some(check) = &step.check
                        && !check.status.is_empty()
                    {
                        self.err(
                            format!("{p}.check.status"),
                            "a websocket step has no response status to check (a failed handshake is an error of its own)",
                        );
                    }
                    for (name, ex) in &step.extract {
                        if ex.cookie.is_some() {
                            self.err(
                                format!("{p}.extract.{name}.cookie"),
                                "a websocket step has no cookies to extract; use jsonPath, regex or header (of the handshake response)",
                            );
                        }
                    }
                }
            }
            for name in step.extract.keys() {
                if !is_identifier(name) {
                    self.err(
                        format!("{p}.extract.{name}"),
                        "extracted names are letters, digits, `_` and `-`, not starting with a digit",
                    );
                }
                if ["uuid", "vu", "iteration", "runner", "setup", "env"].contains(&name.as_str()) {
                    self.err(
                        format!("{p}.extract.{name}"),
                        format!("`{name}` is a reserved name"),
                    );
                }
            }
            extracted.extend(step.extract.keys().cloned());
        }
    }

    fn step_options(&mut self, step: &Step, p: &str) {
        if let Some(check) = &step.check {
            for (j, code) in check.status.iter().enumerate() {
                if !(100..=599).contains(code) {
                    self.err(
                        format!("{p}.check.status[{j}]"),
                        format!("{code} is not an HTTP status code (100-599)"),
                    );
                }
            }
            if check.equals.is_some() && check.json_path.is_none() {
                self.err(format!("{p}.check.equals"), "`equals` needs `jsonPath`");
            }
            if let Some(jp) = &check.json_path {
                self.json_path(jp, &format!("{p}.check.jsonPath"));
            }
            if let Some(d) = check.max_duration {
                self.positive_duration(d, &format!("{p}.check.maxDuration"));
            }
        }
        for (name, ex) in &step.extract {
            let ep = format!("{p}.extract.{name}");
            let sources = [
                ex.json_path.is_some(),
                ex.header.is_some(),
                ex.cookie.is_some(),
                ex.regex.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                self.err(
                    ep.clone(),
                    "set exactly one of jsonPath, header, cookie, regex",
                );
            }
            if let Some(jp) = &ex.json_path {
                self.json_path(jp, &format!("{ep}.jsonPath"));
            }
            if let Some(re) = &ex.regex {
                self.regex(re, &format!("{ep}.regex"));
            }
        }
        if let Some(retry) = &step.retry {
            if retry.attempts < 1 || retry.attempts > 100 {
                self.err(
                    format!("{p}.retry.attempts"),
                    format!(
                        "{} is out of range; use 1 to 100 attempts (the first one included)",
                        retry.attempts
                    ),
                );
            }
            self.bounded_duration(retry.backoff, &format!("{p}.retry.backoff"));
        }
        if let Some(until) = &step.until {
            self.json_path(&until.json_path, &format!("{p}.until.jsonPath"));
            self.positive_duration(until.every, &format!("{p}.until.every"));
            self.positive_duration(until.timeout, &format!("{p}.until.timeout"));
            if until.timeout < until.every {
                self.err(
                    format!("{p}.until.timeout"),
                    format!(
                        "timeout {} is shorter than the poll interval {}",
                        until.timeout, until.every
                    ),
                );
            }
        }
    }

    /// A step's `metrics` list: names, one kind each, one source each, and one kind per name
    /// across the whole spec (values of one name are merged).
    fn custom_metrics(&mut self, metrics: &[CustomMetric], p: &str) {
        if metrics.len() > MAX_STEP_CUSTOM_METRICS {
            self.err(
                p.to_string(),
                format!(
                    "{} custom metrics in one step; at most {MAX_STEP_CUSTOM_METRICS}",
                    metrics.len()
                ),
            );
        }
        self.custom_declarations += metrics.len();
        let mut names = HashSet::new();
        for (i, m) in metrics.iter().enumerate() {
            let mp = format!("{p}[{i}]");
            self.name(&m.name, &format!("{mp}.name"), "custom metric");
            let repeated = !names.insert(m.name.as_str());
            if repeated {
                self.err(
                    format!("{mp}.name"),
                    format!(
                        "custom metric `{}` is declared twice in this step",
                        shorten(&m.name, 60)
                    ),
                );
            }
            if let Some(t) = &m.trend {
                self.value_source(&t.source(), &format!("{mp}.trend"));
                if let Some(unit) = &t.unit
                    && (unit.trim().is_empty()
                        || unit.len() > 32
                        || control_char(unit, false).is_some())
                {
                    self.err(
                        format!("{mp}.trend.unit"),
                        "a unit is up to 32 characters, e.g. ms, s, us (time) or tokens (a label)",
                    );
                }
            }
            if let Some(c) = &m.counter {
                let cp = format!("{mp}.counter");
                match &c.when {
                    Some(when) => {
                        if source_count(&c.source()) > 0 {
                            self.err(
                                cp.clone(),
                                "set either `when` (count matching responses) or a value source \
                                 (jsonPath, header or regex: add the number), not both",
                            );
                        }
                        self.value_source(&when.source(), &format!("{cp}.when"));
                    }
                    None => self.value_source(&c.source(), &cp),
                }
            }
            if let Some(g) = &m.gauge {
                self.value_source(g, &format!("{mp}.gauge"));
            }
            let Some(kind) = CustomKind::of(m) else {
                self.err(mp, "set exactly one of trend, counter, gauge");
                continue;
            };
            match self.custom_metrics.get(&m.name) {
                // Said above; one message per mistake.
                _ if repeated => {}
                Some((first, at)) if *first != kind => {
                    let message = format!(
                        "custom metric `{}` is a {first} at {at}; one name has one kind (a \
                         trend's unit is a time unit everywhere or nowhere)",
                        shorten(&m.name, 60)
                    );
                    self.err(format!("{mp}.name"), message);
                }
                Some(_) => {}
                None => {
                    self.custom_metrics
                        .insert(m.name.clone(), (kind, mp.clone()));
                }
            }
        }
    }

    /// Exactly one of jsonPath, header, regex, each well formed.
    fn value_source(&mut self, src: &ValueSource, p: &str) {
        if source_count(src) != 1 {
            self.err(p.to_string(), "set exactly one of jsonPath, header, regex");
        }
        if let Some(jp) = &src.json_path {
            self.json_path(jp, &format!("{p}.jsonPath"));
        }
        if let Some(h) = &src.header {
            let valid = !h.is_empty()
                && h.len() <= MAX_HEADER_BYTES
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                self.err(format!("{p}.header"), "not a valid HTTP header name");
            }
        }
        if let Some(re) = &src.regex {
            self.regex(re, &format!("{p}.regex"));
        }
    }

    fn request(&mut self, req: &Request, p: &str, scope: &Scope<'_>, extracted: &BTreeSet<String>) {
        const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
        if !METHODS.contains(&req.method.to_ascii_uppercase().as_str()) {
            self.err(
                format!("{p}.method"),
                format!(
                    "`{}` is not a supported method; use one of {}",
                    shorten(&req.method, 60),
                    METHODS.join(", ")
                ),
            );
        }
        if req.url.trim().is_empty() {
            self.err(format!("{p}.url"), "must not be empty");
        }
        if req.url.len() > MAX_URL_BYTES {
            self.err(
                format!("{p}.url"),
                format!(
                    "is {} bytes long; a URL may be at most {MAX_URL_BYTES} bytes",
                    req.url.len()
                ),
            );
        } else if let Some(c) = control_char(&req.url, false) {
            self.err(
                format!("{p}.url"),
                format!(
                    "contains the control character U+{:04X}; URLs cannot",
                    u32::from(c)
                ),
            );
        }
        self.template(&req.url, &format!("{p}.url"), scope, extracted);
        self.headers(&req.headers, &format!("{p}.headers"));
        for (name, value) in &req.headers {
            self.template(value, &format!("{p}.headers.{name}"), scope, extracted);
        }
        let bodies = [
            req.json.is_some(),
            req.body.is_some(),
            !req.multipart.is_empty(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            self.err(p.to_string(), "set at most one of json, body, multipart");
        }
        if let Some(body) = &req.body {
            self.template(body, &format!("{p}.body"), scope, extracted);
        }
        if let Some(json) = &req.json {
            self.json_templates(json, &format!("{p}.json"), scope, extracted, 0);
        }
        for (j, part) in req.multipart.iter().enumerate() {
            let pp = format!("{p}.multipart[{j}]");
            if part.name.is_empty() {
                self.err(format!("{pp}.name"), "must not be empty");
            }
            let sources = [
                part.value.is_some(),
                part.file.is_some(),
                part.config_map_ref.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                self.err(pp.clone(), "set exactly one of value, file, configMapRef");
            }
            if let Some(v) = &part.value {
                self.template(v, &format!("{pp}.value"), scope, extracted);
            }
        }
        if let Some(t) = req.timeout {
            self.positive_duration(t, &format!("{p}.timeout"));
        }
    }

    /// A `websocket` step: URL scheme, headers, subprotocols, messages and their expectations.
    fn websocket(
        &mut self,
        ws: &WebSocket,
        p: &str,
        scope: &Scope<'_>,
        extracted: &BTreeSet<String>,
    ) {
        if ws.url.trim().is_empty() {
            self.err(format!("{p}.url"), "must not be empty");
        } else if ws.url.len() > MAX_URL_BYTES {
            self.err(
                format!("{p}.url"),
                format!(
                    "is {} bytes long; a URL may be at most {MAX_URL_BYTES} bytes",
                    ws.url.len()
                ),
            );
        } else if let Some(c) = control_char(&ws.url, false) {
            self.err(
                format!("{p}.url"),
                format!(
                    "contains the control character U+{:04X}; URLs cannot",
                    u32::from(c)
                ),
            );
        } else if let Some((scheme, _)) = ws.url.split_once("://")
            && !scheme.contains(['$', '/', '{'])
            && !["ws", "wss"].contains(&scheme.to_ascii_lowercase().as_str())
        {
            self.err(
                format!("{p}.url"),
                format!(
                    "scheme `{}` is not a WebSocket scheme; write ws:// or wss://, or a path relative to target.baseUrl",
                    shorten(scheme, 20)
                ),
            );
        }
        self.template(&ws.url, &format!("{p}.url"), scope, extracted);
        self.headers(&ws.headers, &format!("{p}.headers"));
        for (name, value) in &ws.headers {
            self.template(value, &format!("{p}.headers.{name}"), scope, extracted);
        }
        for (i, proto) in ws.subprotocols.iter().enumerate() {
            let token = !proto.is_empty()
                && proto.len() <= 256
                && proto
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                self.err(
                    format!("{p}.subprotocols[{i}]"),
                    "a subprotocol is a non-empty token (letters, digits and !#$%&'*+-.^_`|~)",
                );
            }
        }
        for (i, message) in ws.messages.iter().enumerate() {
            let mp = format!("{p}.messages[{i}]");
            self.template(&message.send, &format!("{mp}.send"), scope, extracted);
            let Some(expect) = &message.expect else {
                continue;
            };
            let ep = format!("{mp}.expect");
            let matchers = [
                expect.json_path.is_some(),
                expect.contains.is_some(),
                expect.regex.is_some(),
            ];
            if matchers.iter().filter(|m| **m).count() != 1 {
                self.err(ep.clone(), "set exactly one of jsonPath, contains, regex");
            }
            if expect.equals.is_some() && expect.json_path.is_none() {
                self.err(format!("{ep}.equals"), "`equals` needs `jsonPath`");
            }
            if let Some(equals) = &expect.equals
                && (equals.is_array() || equals.is_object())
            {
                self.err(
                    format!("{ep}.equals"),
                    "compare with a string, number, boolean or null (values are compared as text)",
                );
            }
            if let Some(jp) = &expect.json_path {
                self.json_path(jp, &format!("{ep}.jsonPath"));
            }
            if let Some(re) = &expect.regex
                && let Err(e) = regex::RegexBuilder::new(re).size_limit(1 << 20).build()
            {
                self.err(
                    format!("{ep}.regex"),
                    format!(
                        "not a valid regular expression: {}",
                        first_line(&e.to_string())
                    ),
                );
            }
            self.positive_duration(expect.timeout, &format!("{ep}.timeout"));
        }
        if let Some(hold) = ws.hold {
            self.bounded_duration(hold, &format!("{p}.hold"));
        }
        if let Some(t) = ws.timeout {
            self.positive_duration(t, &format!("{p}.timeout"));
        }
    }

    fn json_templates(
        &mut self,
        v: &serde_json::Value,
        p: &str,
        scope: &Scope<'_>,
        extracted: &BTreeSet<String>,
        depth: usize,
    ) {
        const MAX_DEPTH: usize = 64;
        if depth > MAX_DEPTH {
            self.err(
                p.to_string(),
                format!("the JSON body is nested deeper than {MAX_DEPTH} levels"),
            );
            return;
        }
        match v {
            serde_json::Value::String(s) => self.template(s, p, scope, extracted),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.json_templates(item, &format!("{p}[{i}]"), scope, extracted, depth + 1);
                }
            }
            serde_json::Value::Object(map) => {
                for (k, item) in map {
                    self.json_templates(item, &format!("{p}.{k}"), scope, extracted, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// Notes `${env:NAME}` at `p` for the cluster check; the operator's token variable is
    /// refused.
    fn env_reference(&mut self, p: &str, name: &str) -> Option<String> {
        self.env_refs.push((p.to_string(), name.to_string()));
        (name == TOKEN_ENV).then(token_message)
    }

    fn template(&mut self, text: &str, p: &str, scope: &Scope<'_>, extracted: &BTreeSet<String>) {
        let tpl = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => {
                self.err(p.to_string(), e.message);
                return;
            }
        };
        for r in tpl.references() {
            let problem = match r {
                Reference::Env(name) => self.env_reference(p, name),
                Reference::Uuid | Reference::Runner => None,
                Reference::Vu | Reference::Iteration if scope.in_setup => Some(format!(
                    "{r} does not exist in setup, which runs once outside any VU"
                )),
                Reference::Vu | Reference::Iteration => None,
                Reference::Setup(name) if scope.in_setup => Some(format!(
                    "{r} is not available inside setup itself; refer to a value extracted by an earlier setup step as ${{{name}}}"
                )),
                Reference::Setup(name) if !scope.setup_values.contains(name) => {
                    Some(not_extracted_by_setup(r, scope.setup_values))
                }
                Reference::Setup(_) => None,
                Reference::Extracted(name) if !extracted.contains(name) => Some(format!(
                    "{r} is used before any earlier step extracts `{name}`{}",
                    known_list(extracted, "extracted so far")
                )),
                Reference::Extracted(_) => None,
                Reference::Feeder { .. } if scope.in_setup => Some(format!(
                    "{r}: data feeders are per iteration and do not exist in setup"
                )),
                Reference::Feeder { feeder, .. } if !scope.feeders.contains(feeder) => {
                    Some(format!(
                        "{r} refers to feeder `{feeder}`, which spec.data does not declare{}",
                        known_list(scope.feeders, "feeders")
                    ))
                }
                Reference::Feeder { .. } => None,
            };
            if let Some(message) = problem {
                self.err(p.to_string(), message);
            }
        }
    }

    fn threshold(&mut self, t: &Threshold, p: &str, spec: &LoadTestSpec) {
        match parse_threshold(&t.expr) {
            Ok(expr) => {
                if let Err(why) = check_threshold_subject(&expr, spec) {
                    self.err(p.to_string(), why);
                } else if let Err((field, why)) = check_ws_scope(&expr, t, spec) {
                    self.err(format!("{p}.{field}"), why);
                }
                // Prometheus is read after the run, over the whole window unless the query asks
                // for each scenario's.
                if let Subject::Prom(name) = &expr.subject {
                    let per_scenario = spec
                        .observe
                        .as_ref()
                        .and_then(|o| o.prometheus.as_ref())
                        .and_then(|prom| prom.queries.iter().find(|q| &q.name == name))
                        .is_some_and(|q| q.window == QueryWindow::Scenario);
                    if t.scenario.is_some() && !per_scenario {
                        self.err(
                            format!("{p}.scenario"),
                            format!(
                                "query {name} covers the whole run's window; a prom() threshold \
                                 can be scoped to a scenario only when its query has \
                                 `window: scenario`"
                            ),
                        );
                    }
                    if t.abort_on_fail {
                        self.err(
                            format!("{p}.abortOnFail"),
                            "a prom() threshold is judged after the run, so it cannot abort it",
                        );
                    }
                }
            }
            Err(e) => self.err(p.to_string(), e.to_string()),
        }
        match (&t.scenario, &t.step) {
            (None, Some(_)) => self.err(
                format!("{p}.step"),
                "`step` needs `scenario` (step names are per scenario)",
            ),
            (Some(name), step) => match spec.scenarios.iter().find(|s| &s.name == name) {
                None => {
                    let names: BTreeSet<String> =
                        spec.scenarios.iter().map(|s| s.name.clone()).collect();
                    self.err(
                        format!("{p}.scenario"),
                        format!(
                            "no scenario is named `{name}`{}",
                            known_list(&names, "scenarios")
                        ),
                    );
                }
                Some(sc) => {
                    if let Some(step) = step {
                        let steps: BTreeSet<String> = sc
                            .steps
                            .iter()
                            .filter(|s| is_measured(s))
                            .map(Step::display_name)
                            .collect();
                        if !steps.contains(step) {
                            self.err(
                                format!("{p}.step"),
                                format!(
                                    "scenario `{name}` has no request step named `{step}`{}",
                                    known_list(&steps, "its steps")
                                ),
                            );
                        }
                    }
                }
            },
            (None, None) => {}
        }
        if let Some(d) = t.delay_abort_eval {
            self.bounded_duration(d, &format!("{p}.delayAbortEval"));
            if !t.abort_on_fail {
                self.err(
                    format!("{p}.delayAbortEval"),
                    "delayAbortEval only matters with abortOnFail: true",
                );
            }
        }
    }

    fn runners(&mut self, r: &Runners) {
        if r.parallelism < 1 || r.parallelism > MAX_PARALLELISM {
            self.err(
                "spec.runners.parallelism",
                format!(
                    "{} is out of range; use 1 to {MAX_PARALLELISM} runners",
                    r.parallelism
                ),
            );
        }
        if let Some(image) = &r.image
            && (image.trim().is_empty() || image.contains(char::is_whitespace))
        {
            self.err(
                "spec.runners.image",
                "must be an image reference without spaces",
            );
        }
        if let Some(policy) = &r.image_pull_policy
            && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str())
        {
            self.err(
                "spec.runners.imagePullPolicy",
                format!(
                    "`{}` is not one of Always, IfNotPresent, Never",
                    shorten(policy, 60)
                ),
            );
        }
    }

    fn sleep(&mut self, sleep: &Sleep, p: &str) {
        match sleep {
            Sleep::Fixed(d) => self.bounded_duration(*d, p),
            Sleep::Range { min, max } => {
                self.bounded_duration(*min, &format!("{p}.min"));
                self.bounded_duration(*max, &format!("{p}.max"));
                if min > max {
                    self.err(
                        format!("{p}.min"),
                        format!("min {min} is longer than max {max}"),
                    );
                }
            }
        }
    }

    fn headers(&mut self, headers: &BTreeMap<String, String>, p: &str) {
        for (name, value) in headers {
            let valid = !name.is_empty()
                && name.len() <= MAX_HEADER_BYTES
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                self.err(format!("{p}.{name}"), "not a valid HTTP header name");
            }
            // A newline in a header value would be header injection; HTTP refuses it anyway,
            // but only when the first request is built, after the pods started.
            if value.len() > MAX_HEADER_BYTES {
                self.err(
                    format!("{p}.{name}"),
                    format!(
                        "the value is {} bytes long; a header value may be at most {MAX_HEADER_BYTES} bytes",
                        value.len()
                    ),
                );
            } else if let Some(c) = control_char(value, true) {
                self.err(
                    format!("{p}.{name}"),
                    format!(
                        "the value contains the control character U+{:04X}; header values cannot",
                        u32::from(c)
                    ),
                );
            }
        }
    }

    /// A regular expression as the runner compiles it (same size limit), so what validates runs.
    fn regex(&mut self, re: &str, p: &str) {
        if let Err(e) = regex::RegexBuilder::new(re)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            self.err(
                p.to_string(),
                format!(
                    "not a valid regular expression: {}",
                    first_line(&e.to_string())
                ),
            );
        }
    }

    fn json_path(&mut self, jp: &str, p: &str) {
        if let Err(e) = serde_json_path::JsonPath::parse(jp) {
            self.err(
                p.to_string(),
                format!(
                    "`{}` is not a valid JSON path ({}); write e.g. $.token or $.items[0].id",
                    shorten(jp, 60),
                    first_line(&e.to_string())
                ),
            );
        }
    }

    fn name(&mut self, name: &str, p: &str, what: &str) {
        if name.is_empty() {
            self.err(p.to_string(), format!("a {what} needs a name"));
        } else if name.len() > MAX_NAME_LEN || !is_identifier(name) {
            self.err(p.to_string(), format!("`{}` is not a valid {what} name: use up to {MAX_NAME_LEN} letters, digits, `_` and `-`, starting with a letter", shorten(name, 60)));
        }
    }

    fn bounded(&mut self, value: u64, min: u64, max: u64, p: &str, what: &str) {
        if value < min {
            self.err(p.to_string(), format!("{what} must be at least {min}"));
        } else if value > max {
            self.err(
                p.to_string(),
                format!("{what} {value} is more than the limit of {max}"),
            );
        }
    }

    fn positive_duration(&mut self, d: Duration, p: &str) {
        if d.is_zero() {
            self.err(p.to_string(), "must be longer than 0s");
        }
        self.bounded_duration(d, p);
    }

    fn bounded_duration(&mut self, d: Duration, p: &str) {
        if d > MAX_DURATION {
            self.err(
                p.to_string(),
                format!("{d} is longer than the limit of {MAX_DURATION}"),
            );
        }
    }
}

/// The scenario fields an executor reads, and those of them it needs (no default).
struct ExecutorFields {
    reads: &'static [&'static str],
    needs: &'static [&'static str],
}

use Executor::{
    ConstantArrivalRate as Car, ConstantVus as Cv, PerVuIterations as Pvi,
    RampingArrivalRate as Rar, RampingVus as Rv, SharedIterations as Si,
};

/// The fields of `ex`; `volley_core::scenario::Workload::of` reads the same ones.
fn executor_fields(ex: Executor) -> ExecutorFields {
    let (reads, needs): (&[&str], &[&str]) = match ex {
        Car => (
            &["rate", "timeUnit", "duration", "maxVUs"],
            &["rate", "duration"],
        ),
        Rar => (&["startRate", "timeUnit", "maxVUs", "stages"], &["stages"]),
        Cv => (&["duration", "vus"], &["duration", "vus"]),
        Rv => (&["startVUs", "stages"], &["stages"]),
        Si | Pvi => (&["vus", "iterations", "maxDuration"], &["iterations"]),
    };
    ExecutorFields { reads, needs }
}

/// Whether a scenario sets a field.
type IsSet = fn(&Scenario) -> bool;

/// Every executor-specific scenario field, in the order errors are listed, and whether a
/// scenario sets it.
const SCENARIO_FIELDS: [(&str, IsSet); 10] = [
    ("rate", |s| s.rate.is_some()),
    ("startRate", |s| s.start_rate.is_some()),
    ("timeUnit", |s| s.time_unit.is_some()),
    ("duration", |s| s.duration.is_some()),
    ("vus", |s| s.vus.is_some()),
    ("startVUs", |s| s.start_vus.is_some()),
    ("maxVUs", |s| s.max_vus.is_some()),
    ("iterations", |s| s.iterations.is_some()),
    ("stages", |s| !s.stages.is_empty()),
    ("maxDuration", |s| s.max_duration.is_some()),
];

/// The executors that read `field`, e.g. `constant-arrival-rate, ramping-arrival-rate`.
fn executors_reading(field: &str) -> String {
    Executor::ALL
        .iter()
        .filter(|ex| executor_fields(**ex).reads.contains(&field))
        .map(|ex| ex.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `${setup.NAME}` that no setup step extracts.
fn not_extracted_by_setup(r: &Reference, setup_values: &BTreeSet<String>) -> String {
    format!(
        "{r} is not extracted by any setup step{}",
        known_list(setup_values, "setup extracts")
    )
}

fn known_list(names: &BTreeSet<String>, label: &str) -> String {
    if names.is_empty() {
        String::new()
    } else {
        let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
        format!(" ({label}: {})", shown.join(", "))
    }
}

/// The first control character of `s` (tab allowed when `tab_ok`).
fn control_char(s: &str, tab_ok: bool) -> Option<char> {
    s.chars()
        .find(|c| c.is_control() && !(tab_ok && *c == '\t'))
}

fn token_message() -> String {
    format!(
        "${{env:{TOKEN_ENV}}} is the run's token for the aggregator; it must never be sent to the target"
    )
}

/// How many of jsonPath, header, regex are set.
fn source_count(src: &ValueSource) -> usize {
    [
        src.json_path.is_some(),
        src.header.is_some(),
        src.regex.is_some(),
    ]
    .into_iter()
    .filter(|s| *s)
    .count()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::scenario::Workload;
    use volley_crds::spec::Stage;

    #[test]
    fn a_baseline_names_its_config_map() {
        let with = |baseline: &str| {
            let yaml = format!(
                "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: t}}\nspec:\n  \
                 target: {{baseUrl: 'http://127.0.0.1:1'}}\n  scenarios:\n  - {{name: s, \
                 executor: shared-iterations, vus: 1, iterations: 1, \
                 steps: [{{request: {{url: /}}}}]}}\n  baseline: {baseline}\n"
            );
            let lt = crate::manifest::parse_manifest(&yaml).unwrap();
            validate(&lt.spec)
                .err()
                .unwrap_or_default()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        };
        assert!(with("{configMapRef: {name: before}}").is_empty());
        let errors = with("{configMapRef: {name: '', key: ''}}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.baseline.configMapRef.name"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("spec.baseline.configMapRef.key"),
            "{errors:?}"
        );
    }

    #[test]
    fn prom_thresholds_name_a_declared_query_and_judge_the_whole_run() {
        let yaml = "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {name: t}\nspec:\n  \
             target: {baseUrl: 'http://127.0.0.1:1'}\n  scenarios:\n  - {name: s, \
             executor: shared-iterations, vus: 1, iterations: 1, steps: [{request: {url: /}}]}\n  \
             observe: {prometheus: {url: 'http://127.0.0.1:9090', queries: [{name: depth, query: q}, {name: p95, query: q}, \
             {name: each, query: q, window: scenario, by: pod}]}}\n  \
             thresholds: ['prom(depth) < 100', 'prom(p95) < baseline * 1.1', 'prom(other) < 1', \
             {expr: 'prom(depth) < 5', scenario: s, abortOnFail: true}, {expr: 'prom(each) < 5', scenario: s}, \
             {expr: 'prom(each) < 5', abortOnFail: true}]\n";
        let lt = crate::manifest::parse_manifest(yaml).unwrap();
        let errors: Vec<String> = validate(&lt.spec)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errors,
            vec![
                "spec.thresholds[2]: `prom(other)` names no query of spec.observe.prometheus.queries \
                 (queries: depth, each, p95)",
                "spec.thresholds[3].scenario: query depth covers the whole run's window; a prom() \
                 threshold can be scoped to a scenario only when its query has `window: scenario`",
                "spec.thresholds[3].abortOnFail: a prom() threshold is judged after the run, so it cannot abort it",
                "spec.thresholds[5].abortOnFail: a prom() threshold is judged after the run, so it cannot abort it",
            ]
        );
    }

    #[test]
    fn prometheus_queries_are_named_once_and_say_something() {
        let with = |prometheus: &str| {
            let yaml = format!(
                "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: t}}\nspec:\n  \
                 target: {{baseUrl: 'http://127.0.0.1:1'}}\n  scenarios:\n  - {{name: s, \
                 executor: shared-iterations, vus: 1, iterations: 1, \
                 steps: [{{request: {{url: /}}}}]}}\n  observe: {{prometheus: {prometheus}}}\n"
            );
            let lt = crate::manifest::parse_manifest(&yaml).unwrap();
            validate(&lt.spec)
                .err()
                .unwrap_or_default()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            with("{url: 'http://127.0.0.1:9090', queries: [{name: depth, query: 'sum(q)'}]}"),
            Vec::<String>::new()
        );
        assert_eq!(
            with(
                "{url: 'ftp://u:secret@prom', timeout: 0s, auth: {}, queries: [{name: depth, query: 'sum(q)'}, \
                 {name: depth, query: ' '}, {name: 'p 95', query: 'x'}, {name: pods, query: 'x', by: '1pod', series: true}]}"
            ),
            vec![
                "spec.observe.prometheus.url: scheme `ftp` is not supported; use http:// or https://",
                "spec.observe.prometheus.auth: set exactly one of bearerTokenSecretRef and basicAuth",
                "spec.observe.prometheus.queries[1].name: query name `depth` is used twice",
                "spec.observe.prometheus.queries[1].query: the query is empty",
                "spec.observe.prometheus.queries[2].name: `p 95` is not a valid query name: use up to 63 \
                 letters, digits, `_` and `-`, starting with a letter",
                "spec.observe.prometheus.queries[3].by: `1pod` is not a Prometheus label name",
                "spec.observe.prometheus.queries[3].series: a `by` query is not sampled over time; \
                 chart a single series instead",
                "spec.observe.prometheus.timeout: must be longer than 0s",
            ]
        );
        assert_eq!(
            with("{url: 'http://127.0.0.1:9090', queries: []}"),
            vec!["spec.observe.prometheus.queries: at least one query is required"]
        );
    }

    /// Validation and `Workload::of` judge the executor fields alike: a workload can be built
    /// exactly when no needed field is missing.
    #[test]
    fn workloads_need_the_fields_validation_needs() {
        type Clear = fn(&mut Scenario);
        let unset: [(&str, Clear); 10] = [
            ("rate", |s| s.rate = None),
            ("startRate", |s| s.start_rate = None),
            ("timeUnit", |s| s.time_unit = None),
            ("duration", |s| s.duration = None),
            ("vus", |s| s.vus = None),
            ("startVUs", |s| s.start_vus = None),
            ("maxVUs", |s| s.max_vus = None),
            ("iterations", |s| s.iterations = None),
            ("stages", |s| s.stages.clear()),
            ("maxDuration", |s| s.max_duration = None),
        ];
        for ex in Executor::ALL {
            let full = Scenario {
                executor: ex,
                rate: Some(10),
                start_rate: Some(1),
                time_unit: Some(Duration::from_secs(1)),
                duration: Some(Duration::from_secs(5)),
                vus: Some(2),
                start_vus: Some(1),
                max_vus: Some(4),
                iterations: Some(3),
                stages: vec![Stage {
                    duration: Duration::from_secs(1),
                    target: 2,
                }],
                max_duration: Some(Duration::from_secs(60)),
                ..Scenario::default()
            };
            assert!(Workload::of(&full).is_ok(), "{}", ex.as_str());
            for (field, clear) in unset {
                let mut sc = full.clone();
                clear(&mut sc);
                let needed = executor_fields(ex).needs.contains(&field);
                match Workload::of(&sc) {
                    Ok(_) => assert!(!needed, "{} without {field}", ex.as_str()),
                    Err(e) => assert!(needed && e.field == field, "{}: {e}", ex.as_str()),
                }
            }
        }
    }
}
