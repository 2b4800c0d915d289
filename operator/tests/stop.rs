//! A run that ends must stop its load, end to end and for real: the operator's aggregator
//! ([`AggregatorRegistry`]) and its HTTP server on 127.0.0.1, three real `volley agent`
//! processes standing in for runner pods, and the demo target counting what it served. The
//! operator's own decisions ([`phase::next_step`]) drive the run, as the controller does, with
//! the runner processes as the pods it observes; the LoadTest's status is what those decisions
//! wrote.
//!
//! For every early end (abort, timeout, a runner killed under `failurePolicy: Fail`, an
//! `abortOnFail` threshold, the LoadTest deleted) it checks that the target receives no request
//! later than [`STOP_BOUND`] after the run ended, where the runs would otherwise go on for 30 s,
//! and that the final status counts what the target served. A last test cuts the runners off
//! their run (the run forgotten under them) and checks that they stop by themselves within
//! [`LOST_RUN_LIMIT`]. One more re-runs an aborted LoadTest (issue 14) and checks that the
//! new run has its own identity: the first run's runners stay stopped and the new run's status
//! counts only what the new run served.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use volley_aggregator::Aggregator;
use volley_aggregator::run::RunLifecycle;
use volley_core::manifest::parse_manifest;
use volley_core::target_policy::TargetPolicy;
use volley_crds::LoadTest;
use volley_crds::status::Phase;
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_operator::aggregator_registry::AggregatorRegistry;
use volley_operator::config::{RunnerDefaults, Timing};
use volley_operator::observed::{PodPhase, RunnerPod, Terminated};
use volley_operator::phase::{self, Observed};
use volley_operator::registry::{RunRegistration, RunRegistry};
use volley_operator::secret::Token;
use volley_operator::telemetry::OperatorMetrics;

use common::{spawn_agent, volley_binary};

const RUNNERS: u32 = 3;
/// Iterations per second, all runners together.
const RATE: u64 = 30;
/// The planned duration: far longer than any early end, so load that goes on is seen.
const SECS: u64 = 30;
/// The stated worst case from the end of a run to the last request (docs/guide.md, "When a run
/// ends early"): one report interval (1 s) until every runner hears `stop`, plus the report's
/// own time (< 0.8 s), plus the `gracefulStop` of iterations already under way (here they take
/// milliseconds), plus a generous margin for a busy 2-core machine.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// `volley_runner::agent::LOST_RUN_LIMIT`: how long a runner goes on without any report
/// accepted before it stops its load by itself.
const LOST_RUN_LIMIT: Duration = Duration::from_secs(30);

/// The target's request count and when it last grew, sampled every 10 ms.
struct Served {
    count: Arc<AtomicU64>,
    last: Arc<Mutex<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    fn watch(target: &DemoTarget) -> Served {
        let base = target.base_url();
        let count = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(Instant::now()));
        let (c, l) = (count.clone(), last.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                if let Ok(r) = http.get(format!("{base}/stats")).send().await
                    && let Ok(stats) = r.json::<serde_json::Value>().await
                {
                    let n = stats["requests"].as_u64().unwrap_or(0);
                    if n > c.swap(n, Ordering::SeqCst) {
                        *l.lock().unwrap() = Instant::now();
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Served { count, last, task }
    }
    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
    fn last(&self) -> Instant {
        *self.last.lock().unwrap()
    }
}

struct Run {
    /// Kept alive for the run (dropping it stops the server).
    _target: DemoTarget,
    served: Served,
    registry: Arc<AggregatorRegistry>,
    aggregator: Aggregator,
    agents: Vec<tokio::process::Child>,
    exits: Vec<Option<i32>>,
    lt: LoadTest,
    run_id: String,
    /// The aggregator's URL, for the agents of a re-run.
    url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.served.task.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a run of `extra` (spec lines) with three agents, registered the way the controller
/// registers it.
async fn start(name: &str, extra: &str) -> Run {
    start_for(name, extra, SECS).await
}

/// [`start`] with a planned duration of `secs`.
async fn start_for(name: &str, extra: &str, secs: u64) -> Run {
    let volley = tokio::task::spawn_blocking(volley_binary).await.unwrap();
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let served = Served::watch(&target);
    let manifest = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: {name}}}\nspec:\n  \
         target: {{baseUrl: '{}'}}\n  \
         runners: {{parallelism: {RUNNERS}}}\n  \
         scenarios:\n  \
         - {{name: main, executor: constant-arrival-rate, rate: {RATE}, duration: {secs}s, \
         maxVUs: 30, steps: [{{name: items, request: {{url: /api/items}}}}]}}\n  {extra}\n",
        target.base_url(),
    );
    let mut lt = parse_manifest(&manifest).unwrap();
    let run_id = format!(
        "6f1c1d2e-0000-4000-8000-{:012}",
        name.len() * 1000 + RUNNERS as usize
    );
    lt.metadata.namespace = Some("team-a".into());
    lt.metadata.uid = Some(run_id.clone());
    lt.metadata.generation = Some(1);
    lt.metadata.creation_timestamp = Some(Time(Timestamp::now()));

    let metrics = Arc::new(OperatorMetrics::new());
    let aggregator = Aggregator::new();
    let registry = Arc::new(AggregatorRegistry::new(aggregator.clone(), metrics));
    let token = Token::generate();
    registry.register(RunRegistration {
        run_id: run_id.clone(),
        namespace: "team-a".into(),
        loadtest: name.into(),
        spec: lt.spec.clone(),
        token: token.clone(),
        started_at: None,
        start_timeout: None,
        baseline: Default::default(),
        prometheus_credentials: Ok(None),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = aggregator.router();
    let server = tokio::spawn(volley_aggregator::server::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let ticker = tokio::spawn(aggregator.clone().run_ticker());

    let agents = (0..RUNNERS)
        .map(|index| spawn_agent(&volley, &url, &run_id, index, token.expose()))
        .collect();
    Run {
        url,
        _target: target,
        served,
        registry,
        aggregator,
        agents,
        exits: vec![None; RUNNERS as usize],
        lt,
        run_id,
        tasks: vec![server, ticker],
    }
}

impl Run {
    /// Starts the run the status now describes (a re-run) the way the controller does: it is
    /// registered under its own id with a new token, and three new agents run it.
    async fn start_next(&mut self) {
        let volley = tokio::task::spawn_blocking(volley_binary).await.unwrap();
        let run = volley_operator::names::RunRef::of(&self.lt).unwrap();
        assert_ne!(run.run_id, self.run_id, "a re-run has an id of its own");
        let token = Token::generate();
        self.registry.register(RunRegistration {
            run_id: run.run_id.clone(),
            namespace: "team-a".into(),
            loadtest: run.loadtest.clone(),
            spec: self.lt.spec.clone(),
            token: token.clone(),
            started_at: None,
            start_timeout: None,
            baseline: Default::default(),
            prometheus_credentials: Ok(None),
        });
        self.agents = (0..RUNNERS)
            .map(|index| spawn_agent(&volley, &self.url, &run.run_id, index, token.expose()))
            .collect();
        self.exits = vec![None; RUNNERS as usize];
        self.run_id = run.run_id;
    }

    /// The runner processes as the pods the controller would see: Running while alive, then
    /// terminated with their exit code (137 when killed by a signal).
    fn pods(&mut self) -> Vec<RunnerPod> {
        let created = self.lt.metadata.creation_timestamp.clone().unwrap().0;
        (0..RUNNERS)
            .map(|i| {
                let slot = i as usize;
                if self.exits[slot].is_none()
                    && let Ok(Some(status)) = self.agents[slot].try_wait()
                {
                    self.exits[slot] = Some(status.code().unwrap_or(137));
                }
                let name = format!("{}-runner-{i}", self.lt.metadata.name.as_deref().unwrap());
                let pod = RunnerPod::pending(&name, i, created);
                match self.exits[slot] {
                    None => RunnerPod {
                        phase: PodPhase::Running,
                        ..pod
                    },
                    Some(code) => RunnerPod {
                        phase: if code == 0 {
                            PodPhase::Succeeded
                        } else {
                            PodPhase::Failed
                        },
                        terminated: Some(Terminated {
                            exit_code: code,
                            reason: if code == 0 { "Completed" } else { "Error" }.into(),
                            message: String::new(),
                        }),
                        ..pod
                    },
                }
            })
            .collect()
    }

    /// One reconcile: the operator's decision on what it observes, carried out on the
    /// aggregator and the LoadTest's status. Returns whether the run was forgotten.
    fn reconcile(&mut self, last_write: &mut Option<Timestamp>) -> bool {
        let now = Timestamp::now();
        let pods = self.pods();
        let facts = Observed {
            loadtest: &self.lt,
            now,
            pods,
            secret_exists: true,
            progress: self.registry.progress(&self.run_id),
            last_status_write: *last_write,
            timing: Timing {
                runner_start_timeout: Duration::from_secs(60),
                status_interval: Duration::from_secs(1),
            },
            defaults: RunnerDefaults {
                image: "volley:test".into(),
                image_pull_policy: None,
                aggregator_url: "http://127.0.0.1:1".into(),
                allowed_targets: TargetPolicy::allow_all(),
                resources: None,
                image_pull_secrets: Vec::new(),
                pod_security_context: None,
                security_context: None,
            },
        };
        let d = phase::next_step(&facts);
        if let Some(status) = d.status {
            self.lt.status = Some(status);
            *last_write = Some(now);
        }
        if let Some(reason) = &d.abort {
            self.registry.abort(&self.run_id, reason);
        }
        for (index, reason) in &d.runner_failures {
            self.registry.runner_failed(&self.run_id, *index, reason);
        }
        if d.forget_run {
            self.registry.forget(&self.run_id);
        }
        d.forget_run
    }

    fn phase(&self) -> Option<Phase> {
        self.lt.status.as_ref().and_then(|s| s.phase)
    }

    /// Reconciles every 100 ms until the run is forgotten, calling `during` before each
    /// reconcile with the seconds since the load started. Returns when the run ended: the
    /// aggregator's stop decision or the operator's finish, whichever came first.
    async fn drive(&mut self, mut during: impl FnMut(&mut Run, f64)) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_write = None;
        let mut started: Option<Instant> = None;
        let mut ended: Option<Instant> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "the run was not forgotten in 90 s"
            );
            if let Some((stage, _)) = self.aggregator.glance(&self.run_id) {
                if stage != RunLifecycle::Barrier && started.is_none() {
                    started = Some(Instant::now());
                }
                if matches!(stage, RunLifecycle::Stopping | RunLifecycle::Finished)
                    && ended.is_none()
                {
                    ended = Some(Instant::now());
                }
            }
            if let Some(s) = started {
                during(self, s.elapsed().as_secs_f64());
            }
            let was_finished = self.phase().is_some_and(Phase::is_finished);
            let forgotten = self.reconcile(&mut last_write);
            if !was_finished && self.phase().is_some_and(Phase::is_finished) && ended.is_none() {
                ended = Some(Instant::now());
            }
            if forgotten {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ended.expect("the run ended")
    }

    /// Waits for every agent to exit (bounded) and returns their exit codes.
    async fn exits(&mut self) -> Vec<i32> {
        let mut codes = Vec::new();
        for agent in &mut self.agents {
            let status = tokio::time::timeout(Duration::from_secs(60), agent.wait())
                .await
                .expect("the agent exits")
                .unwrap();
            codes.push(status.code().unwrap_or(137));
        }
        codes
    }

    /// Checks that nothing reached the target later than [`STOP_BOUND`] after `ended`, waiting
    /// long enough after it for load that goes on to show.
    async fn assert_stopped(&self, ended: Instant, case: &str) {
        let quiet_until = ended + STOP_BOUND + Duration::from_secs(3);
        tokio::time::sleep_until(quiet_until.into()).await;
        let last = self.served.last();
        let after = last.saturating_duration_since(ended);
        assert!(
            after <= STOP_BOUND,
            "{case}: the target received a request {:.1} s after the run ended (bound {:?})",
            after.as_secs_f64(),
            STOP_BOUND
        );
        eprintln!(
            "{case}: last request {:.2} s after the end of the run",
            after.as_secs_f64()
        );
    }

    fn status_requests(&self) -> u64 {
        self.lt
            .status
            .as_ref()
            .and_then(|s| s.metrics.as_ref())
            .map_or(0, |m| m.requests)
    }
}

/// Ends `name`'s run by `end` (called with the seconds since the load started, until it
/// returns true), drives it to the end, and checks the stop bound, the status and the exits.
async fn early_end(
    name: &str,
    extra: &str,
    want: (Phase, &str),
    mut end: impl FnMut(&mut Run, f64) -> bool,
) -> Run {
    let mut run = start(name, extra).await;
    let mut done = false;
    let ended = run
        .drive(|run, secs| {
            if !done {
                done = end(run, secs);
            }
        })
        .await;
    run.assert_stopped(ended, name).await;
    let status = run.lt.status.clone().unwrap();
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(want.0), Some(want.1)),
        "{name}: {:?}",
        status.message
    );
    let counts = status.runners.clone().unwrap();
    assert_eq!(counts.running, 0, "{name}: {counts:?}");
    assert_eq!(
        counts.succeeded + counts.failed,
        counts.desired,
        "{name}: the counts add up: {counts:?}"
    );
    let passed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ThresholdsPassed")
        .map(|c| c.status.clone());
    let all_passed = status.thresholds.iter().all(|t| t.passed);
    if !status.thresholds.is_empty() {
        assert_eq!(
            passed.as_deref(),
            Some(if all_passed { "True" } else { "False" }),
            "{name}: ThresholdsPassed agrees with status.thresholds"
        );
    }
    assert!(
        run.served.count() < RATE * SECS / 2,
        "{name}: the load stopped early ({} served)",
        run.served.count()
    );
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_stops_every_runner_within_the_bound_and_counts_all_it_served() {
    let mut run = early_end(
        "abort",
        "thresholds: ['error_rate < 1%']",
        (Phase::Aborted, "Aborted"),
        |run, secs| {
            if secs >= 3.0 {
                run.lt.spec.abort = true;
                return true;
            }
            false
        },
    )
    .await;
    assert_eq!(
        run.status_requests(),
        run.served.count(),
        "status counts what was served"
    );
    assert_eq!(run.exits().await, [0, 0, 0], "every runner stopped as told");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_stops_every_runner_within_the_bound_and_counts_all_it_served() {
    let mut run = early_end(
        "timeout",
        "timeout: 8s",
        (Phase::Failed, "Timeout"),
        |_, _| true,
    )
    .await;
    assert_eq!(
        run.status_requests(),
        run.served.count(),
        "status counts what was served"
    );
    assert_eq!(run.exits().await, [0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_under_fail_stops_the_survivors_within_the_bound() {
    let mut run = early_end(
        "killed",
        "",
        (Phase::Failed, "RunnerFailed"),
        |run, secs| {
            if secs >= 3.0 {
                run.agents[1].start_kill().unwrap();
                return true;
            }
            false
        },
    )
    .await;
    // What the killed runner sent after its last report is lost with it: at most one report
    // interval of its share.
    let (status, served) = (run.status_requests(), run.served.count());
    assert!(
        status <= served && served - status <= RATE,
        "status {status}, served {served}"
    );
    let exits = run.exits().await;
    assert_eq!(
        (exits[0], exits[2]),
        (0, 0),
        "the survivors stopped as told: {exits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_every_runner_within_the_bound_and_counts_all_it_served() {
    let mut run = early_end(
        "abortonfail",
        "thresholds: [{expr: 'requests < 90', abortOnFail: true}]",
        (Phase::Failed, "ThresholdAborted"),
        |_, _| true,
    )
    .await;
    assert_eq!(
        run.status_requests(),
        run.served.count(),
        "status counts what was served"
    );
    assert_eq!(run.exits().await, [0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_loadtest_stops_every_runner_within_the_bound_and_is_let_go() {
    let mut run = start("deleted", "").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_write = None;
    // Running for 3 s, reconciled as usual.
    let mut started = None;
    loop {
        assert!(Instant::now() < deadline, "the run did not start");
        run.reconcile(&mut last_write);
        if run.phase() == Some(Phase::Running) {
            let s = *started.get_or_insert_with(Instant::now);
            if s.elapsed() >= Duration::from_secs(3) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The LoadTest is deleted: no more reconciles, only the delete path.
    let ended = Instant::now();
    assert_eq!(
        run.registry
            .loadtest_gone("team-a", "deleted", Some(&run.run_id)),
        [run.run_id.clone()]
    );
    run.assert_stopped(ended, "deleted").await;
    assert!(
        run.registry.progress(&run.run_id).is_none(),
        "let go once drained"
    );
    assert_eq!(
        run.exits().await,
        [0, 0, 0],
        "every runner acknowledged the stop"
    );
    assert!(run.served.count() < RATE * SECS / 2);
}

/// The second line of defence: runners whose run is forgotten under them (no `stop` ever
/// reaches them) stop by themselves within [`LOST_RUN_LIMIT`] of their last accepted report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_cut_off_their_run_stop_by_themselves_within_the_lost_run_limit() {
    let planned = 60;
    let mut run = start_for("lost", "", planned).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_write = None;
    let mut started = None;
    loop {
        assert!(Instant::now() < deadline, "the run did not start");
        run.reconcile(&mut last_write);
        if run.phase() == Some(Phase::Running) {
            let s = *started.get_or_insert_with(Instant::now);
            if s.elapsed() >= Duration::from_secs(2) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.registry.forget(&run.run_id);
    let forgotten = Instant::now();
    let codes = run.exits().await;
    assert!(
        codes.iter().all(|c| *c == 1),
        "the final report could not be delivered: {codes:?}"
    );
    let after = run.served.last().saturating_duration_since(forgotten);
    assert!(
        after <= LOST_RUN_LIMIT + STOP_BOUND,
        "the last request came {:.1} s after the run was forgotten",
        after.as_secs_f64()
    );
    assert!(
        run.served.count() < RATE * planned * 2 / 3,
        "the load stopped well before its plan ended ({} served)",
        run.served.count()
    );
    eprintln!(
        "lost: last request {:.2} s after the run was forgotten",
        after.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_after_an_abort_runs_under_its_own_id_and_counts_only_its_own_load() {
    let abort_after = |after: f64| {
        move |run: &mut Run, secs: f64| {
            if secs >= after {
                run.lt.spec.abort = true;
                return true;
            }
            false
        }
    };
    let mut run = early_end(
        "rerun",
        "thresholds: ['error_rate < 1%']",
        (Phase::Aborted, "Aborted"),
        abort_after(2.0),
    )
    .await;
    assert_eq!(run.exits().await, [0, 0, 0], "run 1's runners stopped");
    let first = run.served.count();
    let first_status = run.status_requests();
    assert_eq!(first_status, first);

    // The spec is edited (abort cleared): a new generation, once run 1 was let go.
    run.lt.spec.abort = false;
    run.lt.metadata.generation = Some(2);
    let mut last_write = None;
    assert!(!run.reconcile(&mut last_write));
    let pending = run.lt.status.clone().unwrap();
    assert_eq!(pending.phase, Some(Phase::Pending));
    assert_eq!(pending.reason.as_deref(), Some("SpecChanged"));
    assert_eq!(
        (pending.run, pending.observed_generation),
        (Some(2), Some(2))
    );
    assert_eq!(
        pending.metrics, None,
        "run 1's figures are in the history only"
    );

    run.start_next().await;
    let ended = run
        .drive({
            let end = abort_after(2.0);
            let mut done = false;
            move |run, secs| {
                if !done {
                    done = end(run, secs);
                }
            }
        })
        .await;
    run.assert_stopped(ended, "rerun").await;
    let status = run.lt.status.clone().unwrap();
    assert_eq!(
        (status.phase, status.reason.as_deref(), status.run),
        (Some(Phase::Aborted), Some("Aborted"), Some(2))
    );
    assert!(run.served.count() > first, "run 2 sent load");
    assert_eq!(
        run.status_requests(),
        run.served.count() - first,
        "run 2's status counts run 2's requests, none of run 1's"
    );
    assert_eq!(status.history.len(), 1);
    let record = &status.history[0];
    assert_eq!(
        (record.run, record.generation, record.phase),
        (1, Some(1), Some(Phase::Aborted))
    );
    assert!(record.rps.is_some_and(|r| r > 0.0), "{record:?}");
    assert_eq!(run.exits().await, [0, 0, 0], "run 2's runners stopped");
}
