//! `GET /metrics`: what the server itself measured, in the Prometheus text format, so that a
//! load test can read the server side of its run from Prometheus (`spec.observe.prometheus`).
//!
//! Every `/auth/*` and `/api/*` request is one unit of work: it is "queued" while it is being
//! handled (injected delays included), so the queue depth rises with the load and with the
//! `delay` knob, and its processing time goes into a histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Bucket bounds of `demo_processing_seconds`, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The server's own metrics.
pub(crate) struct ServerMetrics {
    registry: Registry,
    queue_depth: Gauge,
    processing: Histogram,
    processed: Counter,
    /// The deepest the queue has been (not exported: what a test compares Prometheus with).
    max_depth: AtomicU64,
}

impl ServerMetrics {
    pub(crate) fn new() -> ServerMetrics {
        let mut registry = Registry::default();
        let queue_depth = Gauge::default();
        let processing = Histogram::new(BUCKETS);
        let processed = Counter::default();
        registry.register(
            "demo_queue_depth",
            "Requests being handled right now (/auth and /api)",
            queue_depth.clone(),
        );
        registry.register(
            "demo_processing_seconds",
            "Time each /auth and /api request took to handle, injected delays included",
            processing.clone(),
        );
        registry.register(
            "demo_processed",
            "/auth and /api requests handled",
            processed.clone(),
        );
        ServerMetrics {
            registry,
            queue_depth,
            processing,
            processed,
            max_depth: AtomicU64::new(0),
        }
    }

    /// A request enters the queue; the guard takes it out and records it when dropped (also
    /// when the client goes away mid-request).
    pub(crate) fn enter(&self) -> InFlight<'_> {
        let depth = self.queue_depth.inc() + 1;
        self.max_depth
            .fetch_max(u64::try_from(depth).unwrap_or(0), Ordering::Relaxed);
        InFlight {
            metrics: self,
            since: Instant::now(),
        }
    }

    /// Requests handled so far.
    pub(crate) fn processed(&self) -> u64 {
        self.processed.get()
    }

    /// The deepest the queue has been.
    pub(crate) fn max_queue_depth(&self) -> u64 {
        self.max_depth.load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// One request in the queue.
pub(crate) struct InFlight<'a> {
    metrics: &'a ServerMetrics,
    since: Instant,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics
            .processing
            .observe(self.since.elapsed().as_secs_f64());
        self.metrics.processed.inc();
        self.metrics.queue_depth.dec();
    }
}
