//! The operator's HTTP side and process wiring: the aggregator's port (runner protocol and
//! `/healthz`), the observability port (`/metrics`, `/healthz`, `/readyz`), the admission
//! webhook's HTTPS port when configured ([`crate::webhook`]), and [`run`], which
//! starts everything, takes part in leader election (labelling its pod while it leads, see
//! [`crate::leader`]) and shuts down on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use volley_aggregator::Aggregator;

use crate::aggregator_registry::AggregatorRegistry;
use crate::config::Config;
use crate::controller;
use crate::leader::{Elector, LeaseConfig, LeaseLock, OwnPod, Term};
use crate::telemetry::{self, OperatorMetrics};
use crate::webhook::{self, CertSource, Certificates};

/// Liveness: the process serves HTTP.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness: the process serves and its elector loop runs (campaigning, or leading with the
/// controller). Every replica is ready, so rolling updates progress; the aggregator Service
/// routes runner traffic by the leader label instead ([`crate::leader::LEADER_LABEL`]).
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

#[derive(Clone)]
struct Observability {
    metrics: Arc<OperatorMetrics>,
    registry: Arc<AggregatorRegistry>,
    ready: Arc<AtomicBool>,
}

/// `/metrics` (refreshing the per-run gauges from the aggregator first), `/healthz` and
/// `/readyz` (200 once `ready` is set, 503 before).
pub fn observability_router(
    metrics: Arc<OperatorMetrics>,
    registry: Arc<AggregatorRegistry>,
    ready: Arc<AtomicBool>,
) -> Router {
    Router::new()
        .route(METRICS_PATH, get(serve_metrics))
        .route(HEALTHZ_PATH, get(|| async { "ok" }))
        .route(READYZ_PATH, get(readyz))
        .with_state(Observability {
            metrics,
            registry,
            ready,
        })
}

async fn serve_metrics(State(o): State<Observability>) -> impl IntoResponse {
    o.registry.refresh_metrics();
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        o.metrics.encode(),
    )
}

async fn readyz(State(o): State<Observability>) -> impl IntoResponse {
    if o.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not running")
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve_until(listener: TcpListener, router: Router, stop: watch::Receiver<bool>) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stopped(stop))
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for {what}: {e}"))
}

/// How the operator process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or Ctrl-C.
    Signalled,
    /// Another replica took the Lease; restart as a follower.
    LostLeadership,
}

/// The whole operator: servers, ticker, leader election, controller, graceful shutdown.
pub async fn run(config: Config, client: kube::Client) -> anyhow::Result<Exit> {
    let metrics = Arc::new(OperatorMetrics::new());
    let aggregator = Aggregator::new();
    let registry = Arc::new(AggregatorRegistry::new(aggregator.clone(), metrics.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

    let agg_listener = bind(config.aggregator_listen, "the aggregator").await?;
    let obs_listener = bind(config.metrics_listen, "metrics and probes").await?;
    tracing::info!(aggregator = %config.aggregator_listen, metrics = %config.metrics_listen, "listening");
    let servers = [
        // The runner protocol faces untrusted pods: its own server bounds connections, header
        // and body time (see volley_aggregator::server::serve).
        tokio::spawn(volley_aggregator::server::serve(
            agg_listener,
            aggregator.router(),
            stopped(stop_rx.clone()),
        )),
        tokio::spawn(serve_until(
            obs_listener,
            observability_router(metrics.clone(), registry.clone(), ready.clone())
                .merge(crate::report_http::reports_router(client.clone())),
            stop_rx.clone(),
        )),
    ];
    let ticker = tokio::spawn(aggregator.clone().run_ticker());

    let namespace = config
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    // Set while this replica leads: only the leader writes a generated CA into the webhook
    // configuration (the Service routes webhook calls to the leader).
    let leading = Arc::new(AtomicBool::new(false));
    let publish_ca = match config.webhook_listen {
        Some(addr) => start_webhook(&config, &client, &namespace, addr, &leading, &stop_rx).await?,
        None => None,
    };
    let identity = config.identity.clone().unwrap_or_else(default_identity);
    let lock = LeaseLock::new(
        client.clone(),
        &namespace,
        LeaseConfig::new(&config.lease_name, &identity),
    );
    // The leader labels its own pod (POD_NAME in POD_NAMESPACE) so the aggregator Service routes
    // runners to it.
    let own_pod = match (&config.identity, &config.lease_namespace) {
        (Some(pod), Some(pod_namespace)) => Some(OwnPod::new(client.clone(), pod_namespace, pod)),
        _ => {
            tracing::warn!(
                "POD_NAME or POD_NAMESPACE is not set (not running in a pod?): this replica will not label its pod when it leads, so no Service selecting the leader label routes runners to it"
            );
            None
        }
    };
    let elector = Elector::new(lock, own_pod);
    let (signalled_tx, signalled_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = signalled_tx.send(true);
    });
    tracing::info!(%identity, lease = %config.lease_name, %namespace, "waiting for leadership");
    ready.store(true, Ordering::SeqCst);
    let term = elector
        .run(signalled_rx, |stop_controller| async {
            leading.store(true, Ordering::SeqCst);
            if let Some((name, ca)) = &publish_ca {
                webhook::publish_logged(&client, name, ca).await;
            }
            let result = controller::run(
                client.clone(),
                &config,
                registry.clone(),
                metrics,
                stop_controller,
            )
            .await;
            leading.store(false, Ordering::SeqCst);
            result
        })
        .await;
    ready.store(false, Ordering::SeqCst);
    let exit = match term {
        Term::NeverLed => Exit::Signalled,
        Term::Led { lost, result } => {
            result?;
            if lost {
                Exit::LostLeadership
            } else {
                Exit::Signalled
            }
        }
    };
    let _ = stop_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    ticker.abort();
    Ok(exit)
}

/// The webhook's ValidatingWebhookConfiguration and generated CA, for the leader to publish.
type PublishCa = (String, Arc<std::sync::RwLock<Option<String>>>);

/// Starts the admission webhook on `addr`: its certificate (mounted files, or generated for
/// the Service in `namespace`), the HTTPS server and the certificate's upkeep. Returns what
/// the leader publishes when the certificate is generated.
async fn start_webhook(
    config: &Config,
    client: &kube::Client,
    namespace: &str,
    addr: SocketAddr,
    leading: &Arc<AtomicBool>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<PublishCa>> {
    let source = match &config.webhook_cert_dir {
        Some(dir) => CertSource::Dir(dir.clone()),
        None => CertSource::Generated {
            names: webhook::service_dns_names(&config.webhook_service, namespace),
            configuration: config.webhook_configuration.clone(),
        },
    };
    let certs = Certificates::start(source)?;
    let listener = bind(addr, "the admission webhook").await?;
    tracing::info!(webhook = %addr, "listening");
    let publish = certs
        .configuration()
        .map(|name| (name.to_string(), certs.ca_pem.clone()));
    tokio::spawn(webhook::serve_tls(
        listener,
        webhook::router(client.clone(), config.runner_defaults()),
        certs.store.clone(),
        stop.clone(),
    ));
    tokio::spawn(certs.maintain(client.clone(), leading.clone(), stop.clone()));
    Ok(publish)
}

/// This replica's identity when `POD_NAME` is not set: the host name, or a random id.
fn default_identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("volley-operator-{}", rand::random::<u32>()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_and_metrics_are_served() {
        let metrics = Arc::new(OperatorMetrics::new());
        metrics.reconciled(true, std::time::Duration::from_millis(1));
        let registry = Arc::new(AggregatorRegistry::new(Aggregator::new(), metrics.clone()));
        let ready = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_until(
            listener,
            observability_router(metrics, registry, ready.clone()),
            stop_rx,
        ));
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{base}{path}")).send();
        assert_eq!(get(HEALTHZ_PATH).await.unwrap().status(), 200);
        assert_eq!(get(READYZ_PATH).await.unwrap().status(), 503);
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get(READYZ_PATH).await.unwrap().status(), 200);
        let m = get(METRICS_PATH).await.unwrap();
        assert_eq!(m.status(), 200);
        assert!(
            m.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = m.text().await.unwrap();
        assert!(text.contains("volley_operator_reconciles_total{result=\"ok\"} 1"));
        stop_tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
