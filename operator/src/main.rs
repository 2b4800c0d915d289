//! `volley-operator`: the Kubernetes controller for LoadTests, with the runner aggregator,
//! Prometheus metrics, probes and leader election ([`volley_operator::serve::run`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use volley_operator::config::{Config, LogFormat};
use volley_operator::serve::{self, Exit};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stdout; colours only when a person reads them on a terminal.
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(
        volley_crds::text::colour_logs(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ),
    );
    match config.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Plain => subscriber.init(),
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "volley-operator starting"
    );
    match config.allowed_targets.as_ref().filter(|p| !p.is_empty()) {
        Some(list) => tracing::info!(
            allowed_targets = %list,
            "load targets are limited; LoadTests aimed elsewhere or with their own runner image end in Error"
        ),
        None => tracing::info!("no --allowed-targets: LoadTests may send load to any host"),
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot configure a Kubernetes client (in-cluster or KUBECONFIG)");
            return ExitCode::FAILURE;
        }
    };
    match serve::run(config, client).await {
        Ok(Exit::Signalled) => ExitCode::SUCCESS,
        Ok(Exit::LostLeadership) => {
            tracing::error!("lost leadership; exiting so that this replica restarts as a follower");
            ExitCode::from(3)
        }
        Err(e) => {
            tracing::error!(error = %e, "volley-operator failed");
            ExitCode::FAILURE
        }
    }
}
