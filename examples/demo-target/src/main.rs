//! `volley-demo-target`: runs the demo server until Ctrl-C or SIGTERM.
//!
//! Prints `listening on http://HOST:PORT` to stdout once bound (tests read it
//! to find an ephemeral port); logs go to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use volley_demo_target::{DemoConfig, DemoTarget};

/// A small HTTP service to point Volley load tests at.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How long jobs stay pending before they are done.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    job_delay: Duration,
    /// Latency added to every /auth and /api request.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Fraction (0.0 to 1.0) of /api requests answered with a 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fail_rate)]
    fail_rate: f64,
    /// /api requests per second the server takes; the excess is answered 503 (unlimited when
    /// unset). What a rate probe such as examples/sustainable-rps.yaml looks for.
    #[arg(long)]
    capacity: Option<f64>,
}

fn parse_fail_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not within 0.0..=1.0"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let config = DemoConfig {
        job_delay: args.job_delay,
        delay: args.delay,
        fail_rate: args.fail_rate,
        capacity: args.capacity,
    };
    let target = DemoTarget::start(args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // Watch the signals before saying we listen: a harness may send SIGTERM as soon as it reads
    // that line, and a signal with no handler yet would kill the process instead.
    let stop = stop_signal()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", target.base_url())?;
    stdout.flush()?;
    drop(stdout);

    let signal = stop.await;
    tracing::info!("stopping");
    target.shutdown().await;
    signal
}

/// Resolves on Ctrl-C, or SIGTERM (what Kubernetes and test harnesses send). The handlers are
/// in place when this returns, before the future is first polled.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch Ctrl-C")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            Ok(())
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async { tokio::signal::ctrl_c().await.context("cannot watch Ctrl-C") })
    }
}
