//! What a `websocket` step measures beyond its handshake: [`WsMeasurements`], three
//! HdrHistograms (connect time, message latency, chunk interval) and [`WsCounters`]. They ride
//! along a step's [`crate::metrics::model::Measurements`] (`websocket`), so they merge, subtract
//! and sum into scenario and run totals exactly as the HTTP figures do.
//!
//! Open connections are a gauge, not a counter: `open` is how many are open at the snapshot,
//! `open_max` the most this runner (or, merged, these runners) held at once. Merging adds both:
//! `open` is then exactly the sum of the runners' current connections, and `open_max` the sum of
//! each runner's own peak, an upper bound of the simultaneous peak (runners do not peak at the
//! same instant, and nothing finer is reported).

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::error::MetricsError;
use crate::metrics::histogram::{
    HistogramSummary, add_checked, add_clamped, fits, histogram_since, new_latency_histogram,
    same_histogram,
};

/// The WebSocket error kinds, as counted in [`WsCounters::errors`]: the connection was refused
/// (or the TCP/TLS connection failed), the handshake got a non-101 answer or broke, the
/// connection closed abnormally (no close frame, or a close code other than 1000/1001), or a
/// reply expected by `messages[].expect` did not come in time.
pub const WS_ERROR_KINDS: [&str; 4] = ["refused", "handshake", "closed", "expect_timeout"];

/// Counted WebSocket figures of a step (or a merge of steps). Additions saturate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsCounters {
    /// Connection attempts (each retry counts).
    #[serde(default)]
    pub connections: u64,
    /// Attempts whose handshake completed.
    #[serde(default)]
    pub connected: u64,
    /// Messages sent.
    #[serde(default)]
    pub messages_sent: u64,
    /// Messages sent that waited for a reply (`expect`).
    #[serde(default)]
    pub messages_expecting: u64,
    /// Data frames received (text and binary).
    #[serde(default)]
    pub messages_received: u64,
    /// Payload bytes sent.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Payload bytes received.
    #[serde(default)]
    pub bytes_received: u64,
    /// Errors by kind ([`WS_ERROR_KINDS`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
    /// Connections open at the snapshot (a gauge).
    #[serde(default)]
    pub open: u64,
    /// Most connections open at once (see the module documentation for merged figures).
    #[serde(default)]
    pub open_max: u64,
}

impl WsCounters {
    /// Adds `other`: counters and both gauges (saturating).
    pub fn add(&mut self, other: &WsCounters) {
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.connections, other.connections);
        add(&mut self.connected, other.connected);
        add(&mut self.messages_sent, other.messages_sent);
        add(&mut self.messages_expecting, other.messages_expecting);
        add(&mut self.messages_received, other.messages_received);
        add(&mut self.bytes_sent, other.bytes_sent);
        add(&mut self.bytes_received, other.bytes_received);
        add(&mut self.open, other.open);
        add(&mut self.open_max, other.open_max);
        for (kind, n) in &other.errors {
            add(self.errors.entry(kind.clone()).or_insert(0), *n);
        }
    }

    /// Counts one error of `kind` (one of [`WS_ERROR_KINDS`]).
    pub fn count_error(&mut self, kind: &str) {
        let c = self.errors.entry(kind.to_owned()).or_insert(0);
        *c = c.saturating_add(1);
    }

    /// Errors of `kind` so far.
    pub fn error_count(&self, kind: &str) -> u64 {
        self.errors.get(kind).copied().unwrap_or(0)
    }

    /// Connection attempts that failed: refused or a failed handshake.
    pub fn connect_failures(&self) -> u64 {
        self.error_count("refused")
            .saturating_add(self.error_count("handshake"))
    }

    /// What happened between `earlier` and `self`; the gauges keep `self`'s values.
    pub fn since(&self, earlier: &WsCounters) -> Result<WsCounters, MetricsError> {
        let diff = |what: &'static str, prev: u64, cur: u64| {
            cur.checked_sub(prev)
                .ok_or(MetricsError::NotCumulative { what, prev, cur })
        };
        let mut errors = BTreeMap::new();
        for (kind, prev) in &earlier.errors {
            diff("websocket errors of a kind", *prev, self.error_count(kind))?;
        }
        for (kind, cur) in &self.errors {
            let n = diff(
                "websocket errors of a kind",
                earlier.error_count(kind),
                *cur,
            )?;
            if n > 0 {
                errors.insert(kind.clone(), n);
            }
        }
        Ok(WsCounters {
            connections: diff(
                "websocket connections",
                earlier.connections,
                self.connections,
            )?,
            connected: diff("websocket handshakes", earlier.connected, self.connected)?,
            messages_sent: diff(
                "websocket messages sent",
                earlier.messages_sent,
                self.messages_sent,
            )?,
            messages_expecting: diff(
                "websocket messages expecting a reply",
                earlier.messages_expecting,
                self.messages_expecting,
            )?,
            messages_received: diff(
                "websocket messages received",
                earlier.messages_received,
                self.messages_received,
            )?,
            bytes_sent: diff("websocket bytes sent", earlier.bytes_sent, self.bytes_sent)?,
            bytes_received: diff(
                "websocket bytes received",
                earlier.bytes_received,
                self.bytes_received,
            )?,
            errors,
            open: self.open,
            open_max: self.open_max,
        })
    }
}

/// Everything a `websocket` step measured besides its HTTP-level figures. Times in
/// microseconds, like every latency histogram.
#[derive(Clone)]
pub struct WsMeasurements {
    /// Connect time: from the start of the connection to the completed handshake (TCP, TLS and
    /// the HTTP upgrade).
    pub connect: Histogram<u64>,
    /// Message latency: from a send to the received message its `expect` matched.
    pub message: Histogram<u64>,
    /// Chunk interval: time between consecutive received data frames of one connection.
    pub chunk: Histogram<u64>,
    /// Connections, messages, bytes, errors by kind, open connections.
    pub counters: WsCounters,
}

impl Default for WsMeasurements {
    fn default() -> Self {
        WsMeasurements {
            connect: new_latency_histogram(),
            message: new_latency_histogram(),
            chunk: new_latency_histogram(),
            counters: WsCounters::default(),
        }
    }
}

impl PartialEq for WsMeasurements {
    fn eq(&self, other: &Self) -> bool {
        self.counters == other.counters
            && same_histogram(&self.connect, &other.connect)
            && same_histogram(&self.message, &other.message)
            && same_histogram(&self.chunk, &other.chunk)
    }
}

impl fmt::Debug for WsMeasurements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsMeasurements")
            .field("connect", &HistogramSummary(&self.connect))
            .field("message", &HistogramSummary(&self.message))
            .field("chunk", &HistogramSummary(&self.chunk))
            .field("counters", &self.counters)
            .finish()
    }
}

impl WsMeasurements {
    /// The exact difference of two cumulative snapshots (gauges: the later value).
    pub fn since(&self, earlier: &WsMeasurements) -> Result<WsMeasurements, MetricsError> {
        Ok(WsMeasurements {
            connect: histogram_since(&earlier.connect, &self.connect)?,
            message: histogram_since(&earlier.message, &self.message)?,
            chunk: histogram_since(&earlier.chunk, &self.chunk)?,
            counters: self.counters.since(&earlier.counters)?,
        })
    }

    /// Whether [`WsMeasurements::add_checked`] would take `other`.
    pub fn check_addable(&self, other: &WsMeasurements) -> Result<(), MetricsError> {
        fits(&self.connect, &other.connect)?;
        fits(&self.message, &other.message)?;
        fits(&self.chunk, &other.chunk)
    }

    /// Adds `other` exactly; fails when a histogram of `other` holds values out of range.
    pub fn add_checked(&mut self, other: &WsMeasurements) -> Result<(), MetricsError> {
        self.check_addable(other)?;
        add_checked(&mut self.connect, &other.connect)?;
        add_checked(&mut self.message, &other.message)?;
        add_checked(&mut self.chunk, &other.chunk)?;
        self.counters.add(&other.counters);
        Ok(())
    }

    /// Adds `other`, clamping out-of-range values.
    pub fn add_clamped(&mut self, other: &WsMeasurements) {
        add_clamped(&mut self.connect, &other.connect);
        add_clamped(&mut self.message, &other.message);
        add_clamped(&mut self.chunk, &other.chunk);
        self.counters.add(&other.counters);
    }
}

/// `a + b` for optional WebSocket figures: `None` stays `None` only when both are.
pub(crate) fn add_optional(
    target: &mut Option<Box<WsMeasurements>>,
    other: Option<&WsMeasurements>,
) {
    if let Some(other) = other {
        target
            .get_or_insert_with(Default::default)
            .add_clamped(other);
    }
}

/// `self - earlier` for optional WebSocket figures: figures that appeared since count whole.
pub(crate) fn since_optional(
    current: Option<&WsMeasurements>,
    earlier: Option<&WsMeasurements>,
) -> Result<Option<Box<WsMeasurements>>, MetricsError> {
    match (current, earlier) {
        (None, None) => Ok(None),
        (Some(cur), None) => Ok(Some(Box::new(cur.clone()))),
        (Some(cur), Some(prev)) => Ok(Some(Box::new(cur.since(prev)?))),
        (None, Some(_)) => Err(MetricsError::NotCumulative {
            what: "websocket figures",
            prev: 1,
            cur: 0,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::histogram::record_latency;

    fn ws(connects_ms: &[u64], errors: &[&str]) -> WsMeasurements {
        let mut m = WsMeasurements::default();
        for ms in connects_ms {
            record_latency(&mut m.connect, Duration::from_millis(*ms));
            record_latency(&mut m.message, Duration::from_millis(ms * 2));
            m.counters.connections += 1;
            m.counters.connected += 1;
            m.counters.open += 1;
            m.counters.open_max += 1;
        }
        for kind in errors {
            m.counters.count_error(kind);
        }
        m
    }

    #[test]
    fn adding_is_exact_and_since_undoes_it() {
        let a = ws(&[1, 2, 3], &["refused"]);
        let b = ws(&[10, 20], &["refused", "closed"]);
        let mut sum = a.clone();
        sum.add_checked(&b).unwrap();
        assert_eq!(sum.connect.len(), 5);
        assert_eq!(sum.counters.connections, 5);
        assert_eq!(sum.counters.error_count("refused"), 2);
        assert_eq!(sum.counters.connect_failures(), 2);
        assert_eq!(sum.counters.open_max, 5);
        let back = sum.since(&a).unwrap();
        assert_eq!(back.connect.len(), 2);
        assert_eq!(back.counters.connections, 2);
        assert_eq!(back.counters.error_count("closed"), 1);
        // Gauges keep the later value.
        assert_eq!(back.counters.open, 5);
        assert!(a.since(&sum).is_err());
    }

    #[test]
    fn optional_figures_add_and_subtract() {
        let mut none = None;
        add_optional(&mut none, None);
        assert!(none.is_none());
        add_optional(&mut none, Some(&ws(&[5], &[])));
        assert_eq!(none.as_ref().unwrap().connect.len(), 1);
        let appeared = since_optional(none.as_deref(), None).unwrap().unwrap();
        assert_eq!(appeared.counters.connections, 1);
        assert!(since_optional(None, none.as_deref()).is_err());
    }
}
