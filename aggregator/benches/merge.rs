//! How big a runner's report is and what merging them costs the aggregator: the figures of
//! the README's performance section. Run with `cargo bench -p volley-aggregator --bench merge`.
//!
//! Reports are made like a runner makes them: a scenario of 10 request steps whose latencies
//! spread over three orders of magnitude (a log-normal around 20 ms with a slow tail), recorded
//! into the runner's histograms, encoded as the wire format. Sizes are for cumulative reports
//! after 1 s, 1 min and 10 min at 100 requests/s per step. The merge figure is the time to
//! decode and apply one round of reports from 100 runners and merge them into one result: the
//! aggregator's work per second of a 100-runner test.

use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use volley_aggregator::run::{DecodedReport, RunConfig, RunState};
use volley_core::metrics::histogram::record_latency;
use volley_core::metrics::model::RunMetrics;
use volley_core::protocol::report::Report;
use volley_core::protocol::{PROTOCOL_VERSION, ReadyRequest, RunnerReport};
use volley_crds::spec::LoadTestSpec;

const STEPS: usize = 10;
const RUNNERS: u32 = 100;
const ROUNDS: u32 = 10;

fn spec() -> Result<LoadTestSpec, Box<dyn std::error::Error>> {
    let steps: String = (0..STEPS)
        .map(|i| format!("    - {{name: step{i}, request: {{url: /s/{i}}}}}\n"))
        .collect();
    let yaml = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: bench}}\nspec:\n  \
         target: {{baseUrl: 'http://127.0.0.1:1'}}\n  scenarios:\n  \
         - name: main\n    executor: constant-vus\n    vus: 10\n    duration: 10m\n    \
         steps:\n{steps}"
    );
    Ok(volley_core::manifest::parse_manifest(&yaml)?.spec)
}

/// A runner's cumulative metrics after `seconds` at `per_step_rps` on every step.
fn measured(
    spec: &LoadTestSpec,
    seconds: u64,
    per_step_rps: u64,
    rng: &mut impl Rng,
) -> RunMetrics {
    let mut run = RunMetrics::for_spec(spec);
    for step in 0..STEPS {
        let Some(m) = run.step_mut(0, step) else {
            continue;
        };
        for _ in 0..seconds * per_step_rps {
            // Log-normal around 20 ms (sigma 0.8), 1% slow tail up to 2 s.
            let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            let mut ms = 20.0 * (0.8 * z).exp();
            if rng.random::<f64>() < 0.01 {
                ms = rng.random_range(200.0..2000.0);
            }
            let d = Duration::from_secs_f64(ms / 1000.0);
            record_latency(&mut m.latency, d);
            record_latency(&mut m.latency_sent, d);
            m.counters.requests += 1;
        }
    }
    run
}

fn wire(runner: u32, seq: u64, run: &RunMetrics) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let report = RunnerReport {
        report: Report::from_metrics(runner, seq, Duration::from_secs(seq), false, run)?,
        first_request_unix_ms: None,
        error: None,
    };
    Ok(serde_json::to_vec(&report)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = spec()?;
    let mut rng = rand::rng();

    println!("report size, one runner, {STEPS} request steps, 100 req/s per step, cumulative:");
    for seconds in [1u64, 60, 600] {
        let bytes = wire(0, seconds, &measured(&spec, seconds, 100, &mut rng))?;
        println!(
            "  after {:>4}s: {:>7} bytes ({:.1} kB per report, {:.1} kB/s at 1 report/s)",
            seconds,
            bytes.len(),
            bytes.len() as f64 / 1000.0,
            bytes.len() as f64 / 1000.0
        );
    }

    // One round of 100 runners' reports after a minute of load, as bytes on the wire.
    let bodies: Vec<Vec<u8>> = (0..RUNNERS)
        .map(|i| wire(i, 60, &measured(&spec, 60, 10, &mut rng)))
        .collect::<Result<_, _>>()?;
    let config = RunConfig {
        runners: RUNNERS,
        ..RunConfig::new("bench", "t", "bench", spec.clone())
    };
    let t0 = Instant::now();
    let mut state = RunState::new(config, t0, SystemTime::now());
    let shape = state.shape();
    let ready = ReadyRequest {
        protocol: PROTOCOL_VERSION,
        host: String::new(),
    };
    for i in 0..RUNNERS {
        state.ready(i, &ready, t0)?;
    }
    let mut decode = Duration::ZERO;
    let mut apply = Duration::ZERO;
    let mut merge = Duration::ZERO;
    for round in 0..ROUNDS {
        let now = t0 + Duration::from_secs(u64::from(round) + 2);
        for (i, body) in bodies.iter().enumerate() {
            let t = Instant::now();
            let mut report: RunnerReport = serde_json::from_slice(body)?;
            report.report.seq = u64::from(round) + 1;
            let decoded = DecodedReport::decode(&report, &shape)?;
            decode += t.elapsed();
            let t = Instant::now();
            state.report(i as u32, decoded, now)?;
            apply += t.elapsed();
        }
        let t = Instant::now();
        let view = state.view();
        merge += t.elapsed();
        assert_eq!(
            view.merged.overall().counters.requests,
            u64::from(RUNNERS) * 60 * 10 * STEPS as u64
        );
    }
    let per_round = (decode + apply + merge) / ROUNDS;
    let kb: usize = bodies.iter().map(Vec::len).sum::<usize>() / 1000;
    println!("\naggregator, {RUNNERS} runners x {STEPS} steps, one round of reports ({kb} kB):");
    println!(
        "  decode {:?} + apply {:?} + merge {:?} = {:?} per round, i.e. {:.1}% of one core at 1 round/s",
        decode / ROUNDS,
        apply / ROUNDS,
        merge / ROUNDS,
        per_round,
        per_round.as_secs_f64() * 100.0
    );
    Ok(())
}
