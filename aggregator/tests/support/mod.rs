//! The harness of the aggregator's HTTP tests (`server.rs`, `hostile.rs`): an aggregator
//! served on 127.0.0.1 by its own server, a client speaking the protocol, and the process's
//! memory as the kernel counts it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use volley_aggregator::server::runner_credential;
use volley_aggregator::{Aggregator, RunConfig};
use volley_core::manifest::parse_manifest;
use volley_core::metrics::histogram::record_latency;
use volley_core::metrics::model::RunMetrics;
use volley_core::protocol::report::Report;
use volley_core::protocol::{self, PROTOCOL_VERSION, ReadyRequest, RunnerReport};
use volley_crds::spec::LoadTestSpec;

pub fn spec() -> LoadTestSpec {
    let yaml = "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {name: t}\n\
        spec:\n  target: {baseUrl: 'http://127.0.0.1:1'}\n  scenarios:\n  \
        - {name: main, executor: constant-vus, vus: 1, duration: 10s,\n     \
        steps: [{name: get, request: {url: /}}]}\n";
    parse_manifest(yaml).unwrap().spec
}

pub struct Served {
    pub agg: Aggregator,
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
}

pub async fn serve(runs: &[(&str, &str, u32)]) -> Served {
    let agg = Aggregator::new().with_poll_hold(Duration::from_millis(300));
    for (run, token, runners) in runs {
        agg.add_run(RunConfig {
            runners: *runners,
            ..RunConfig::new(run, token, "t", spec())
        });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(volley_aggregator::server::serve(
        listener,
        agg.router(),
        std::future::pending(),
    ));
    Served {
        agg,
        addr,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    }
}

/// Runner `index`'s credential in the run of `token`.
pub fn cred(token: &str, index: u32) -> String {
    runner_credential(token, index)
}

impl Served {
    /// Posts `body` with `credential` as the bearer token (none: no `Authorization`).
    pub async fn post(
        &self,
        path: &str,
        credential: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(c) = credential {
            req = req.bearer_auth(c);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap_or_default())
    }

    pub async fn ready(&self, run: &str, token: &str, index: u32) -> StatusCode {
        let body = serde_json::to_vec(&ReadyRequest {
            protocol: PROTOCOL_VERSION,
            host: format!("h{index}"),
        })
        .unwrap();
        self.post(
            &protocol::ready_path(run, index),
            Some(&cred(token, index)),
            body,
        )
        .await
        .0
    }

    pub async fn report(
        &self,
        run: &str,
        token: Option<&str>,
        index: u32,
        seq: u64,
        requests: u64,
    ) -> (StatusCode, String) {
        let body = serde_json::to_vec(&runner_report(index, seq, requests)).unwrap();
        let credential = token.map(|t| cred(t, index));
        self.post(
            &protocol::report_path(run, index),
            credential.as_deref(),
            body,
        )
        .await
    }

    pub fn requests(&self, run: &str) -> u64 {
        self.agg
            .view(run)
            .unwrap()
            .merged
            .overall()
            .counters
            .requests
    }
}

pub fn runner_report(index: u32, seq: u64, requests: u64) -> RunnerReport {
    let mut run = RunMetrics::for_spec(&spec());
    let m = &mut run.scenarios[0].steps[0].m;
    m.counters.requests = requests;
    for _ in 0..requests {
        record_latency(&mut m.latency, Duration::from_millis(3));
    }
    RunnerReport {
        report: Report::from_metrics(index, seq, Duration::from_secs(seq), false, &run).unwrap(),
        first_request_unix_ms: None,
        error: None,
    }
}

/// The process's resident memory (`VmRSS` of `/proc/self/status`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}
