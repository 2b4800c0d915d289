//! Shared server state: counters, the runtime config, issued tokens and jobs.
//!
//! Every lock here is a `std::sync::Mutex` held only for a map lookup or
//! insert, never across an `.await`.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics::ServerMetrics;
use crate::{DemoConfig, DemoStats, InferStats};

/// How many tokens, jobs and idempotency keys are remembered (each). Beyond
/// this the oldest are forgotten, so a long soak test cannot grow memory
/// without bound; worst case is roughly 100 MB per full map. Forgotten tokens
/// get 401 and forgotten jobs 404, which at a million entries only happens to
/// clients that hold on to them for a very long time.
const MAX_ENTRIES: usize = 1_000_000;

/// State shared by all handlers.
pub(crate) struct AppState {
    pub(crate) stats: Counters,
    /// What `/metrics` exports.
    pub(crate) metrics: ServerMetrics,
    config: Mutex<DemoConfig>,
    tokens: Mutex<BoundedMap<Uuid, ()>>,
    jobs: Mutex<Jobs>,
    /// Tokens for `capacity`, and when they were last topped up.
    bucket: Mutex<(f64, Instant)>,
    stopped: watch::Receiver<bool>,
}

impl AppState {
    pub(crate) fn new(config: DemoConfig, stopped: watch::Receiver<bool>) -> Self {
        Self {
            stats: Counters::default(),
            metrics: ServerMetrics::new(),
            config: Mutex::new(config),
            tokens: Mutex::new(BoundedMap::new(MAX_ENTRIES)),
            jobs: Mutex::new(Jobs {
                by_id: BoundedMap::new(MAX_ENTRIES),
                by_key: BoundedMap::new(MAX_ENTRIES),
            }),
            bucket: Mutex::new((0.0, Instant::now())),
            stopped,
        }
    }

    /// The counters, with what the metrics counted.
    pub(crate) fn stats(&self) -> DemoStats {
        DemoStats {
            processed: self.metrics.processed(),
            max_queue_depth: self.metrics.max_queue_depth(),
            ..self.stats.snapshot()
        }
    }

    /// Whether a request fits `capacity` requests per second: a token bucket that fills at
    /// that rate and holds a tenth of a second's worth (at least one), so arrivals below the
    /// rate pass despite jitter and the excess above it is refused.
    pub(crate) fn within_capacity(&self, capacity: f64) -> bool {
        let burst = (capacity / 10.0).max(1.0);
        let mut bucket = lock(&self.bucket);
        let now = Instant::now();
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * capacity).min(burst);
        let allowed = tokens >= 1.0;
        *bucket = (if allowed { tokens - 1.0 } else { tokens }, now);
        allowed
    }

    /// The current config.
    pub(crate) fn config(&self) -> DemoConfig {
        lock(&self.config).clone()
    }

    /// Applies `update` to a copy of the config and, if it succeeds, makes
    /// the copy current; so a partly invalid update changes nothing.
    pub(crate) fn update_config(
        &self,
        update: impl FnOnce(&mut DemoConfig) -> Result<(), String>,
    ) -> Result<DemoConfig, String> {
        let mut config = lock(&self.config);
        let mut next = config.clone();
        update(&mut next)?;
        *config = next.clone();
        Ok(next)
    }

    /// Issues and remembers a new bearer token.
    pub(crate) fn issue_token(&self) -> Uuid {
        let token = Uuid::new_v4();
        lock(&self.tokens).insert(token, ());
        token
    }

    pub(crate) fn token_known(&self, token: &Uuid) -> bool {
        lock(&self.tokens).get(token).is_some()
    }

    /// Creates a job, or finds the one already created for `key`.
    pub(crate) fn create_job(&self, key: Option<&str>) -> Created {
        let now = Instant::now();
        let delay = self.config().job_delay;
        // One lock for both maps so two concurrent requests with the same key
        // cannot both create a job.
        let mut jobs = lock(&self.jobs);
        if let Some(key) = key
            && let Some(&id) = jobs.by_key.get(key)
        {
            // A job can be evicted before its key; by then it was long done.
            let status = jobs
                .by_id
                .get(&id)
                .map_or(JobStatus::Done, |job| job.status(now));
            return Created {
                id,
                status,
                duplicate: true,
            };
        }
        let id = Uuid::new_v4();
        let job = Job {
            created: now,
            delay,
        };
        let status = job.status(now);
        jobs.by_id.insert(id, job);
        if let Some(key) = key {
            jobs.by_key.insert(Arc::from(key), id);
        }
        Created {
            id,
            status,
            duplicate: false,
        }
    }

    pub(crate) fn job_status(&self, id: &Uuid) -> Option<JobStatus> {
        let now = Instant::now();
        lock(&self.jobs).by_id.get(id).map(|job| job.status(now))
    }

    /// Sleeps for `duration`, returning `false` early if the server is
    /// stopping, so a test that stalled the server can still shut it down
    /// promptly.
    pub(crate) async fn sleep(&self, duration: Duration) -> bool {
        let mut stopped = self.stopped.clone();
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = stopped.wait_for(|stop| *stop) => false,
        }
    }
}

/// Result of [`AppState::create_job`].
pub(crate) struct Created {
    pub(crate) id: Uuid,
    pub(crate) status: JobStatus,
    /// The idempotency key was seen before; `id` is the earlier job.
    pub(crate) duplicate: bool,
}

/// What `GET /api/jobs/{id}` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobStatus {
    Pending,
    Done,
}

struct Jobs {
    by_id: BoundedMap<Uuid, Job>,
    /// Idempotency key → job id. `Arc<str>` so the eviction queue shares the
    /// key's allocation instead of copying it.
    by_key: BoundedMap<Arc<str>, Uuid>,
}

struct Job {
    created: Instant,
    /// The job delay when the job was created, so a runtime config change
    /// only affects new jobs.
    delay: Duration,
}

impl Job {
    fn status(&self, now: Instant) -> JobStatus {
        if now.saturating_duration_since(self.created) >= self.delay {
            JobStatus::Done
        } else {
            JobStatus::Pending
        }
    }
}

/// The [`DemoStats`] counters, updated without locks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) logins: AtomicU64,
    pub(crate) jobs_created: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) failures_injected: AtomicU64,
    pub(crate) ws_connections: AtomicU64,
    pub(crate) ws_messages_received: AtomicU64,
    pub(crate) ws_messages_sent: AtomicU64,
    pub(crate) ws_dropped: AtomicU64,
    pub(crate) ws_open: AtomicU64,
    pub(crate) ws_open_max: AtomicU64,
    /// What `/api/infer` sent; one lock so the response number and the tallies agree.
    infer: Mutex<InferStats>,
}

/// The values of one `/api/infer` response.
pub(crate) struct Inference {
    /// `None`: left out (`?omit=`).
    pub(crate) latency_ms: Option<LatencyField>,
    pub(crate) crisis: bool,
    pub(crate) tokens: u64,
    pub(crate) depth: u64,
}

/// What `latency_ms` holds.
pub(crate) enum LatencyField {
    Number(u64),
    /// Text instead of a number (`?garble=`).
    Garbled,
}

/// The knobs of one `/api/infer` request: every K-th response is changed (0: never).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InferKnobs {
    pub(crate) omit: u64,
    pub(crate) garble: u64,
    pub(crate) crisis: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> DemoStats {
        DemoStats {
            requests: self.requests.load(Ordering::Relaxed),
            logins: self.logins.load(Ordering::Relaxed),
            jobs_created: self.jobs_created.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
            failures_injected: self.failures_injected.load(Ordering::Relaxed),
            ws_connections: self.ws_connections.load(Ordering::Relaxed),
            ws_messages_received: self.ws_messages_received.load(Ordering::Relaxed),
            ws_messages_sent: self.ws_messages_sent.load(Ordering::Relaxed),
            ws_dropped: self.ws_dropped.load(Ordering::Relaxed),
            ws_open: self.ws_open.load(Ordering::Relaxed),
            ws_open_max: self.ws_open_max.load(Ordering::Relaxed),
            processed: 0,
            max_queue_depth: 0,
            infer: lock(&self.infer).clone(),
        }
    }

    /// The next `/api/infer` response, tallied (see the crate docs for the formulas).
    pub(crate) fn next_inference(&self, knobs: InferKnobs) -> Inference {
        let every = |k: u64, n: u64| k > 0 && n.is_multiple_of(k);
        let mut t = lock(&self.infer);
        t.responses += 1;
        let n = t.responses;
        let latency = 10 + (37 * n) % 190;
        let latency_ms = if every(knobs.omit, n) {
            t.latency_omitted += 1;
            None
        } else if every(knobs.garble, n) {
            t.latency_garbled += 1;
            Some(LatencyField::Garbled)
        } else {
            t.latency_values += 1;
            t.latency_ms_sum += latency;
            t.latency_ms_min = Some(t.latency_ms_min.map_or(latency, |m| m.min(latency)));
            t.latency_ms_max = Some(t.latency_ms_max.map_or(latency, |m| m.max(latency)));
            Some(LatencyField::Number(latency))
        };
        let crisis = every(if knobs.crisis == 0 { 7 } else { knobs.crisis }, n);
        t.crisis += u64::from(crisis);
        let tokens = n % 100;
        t.tokens_sum += tokens;
        let depth = n % 50;
        t.depth_min = Some(t.depth_min.map_or(depth, |m| m.min(depth)));
        t.depth_max = Some(t.depth_max.map_or(depth, |m| m.max(depth)));
        t.depth_last = Some(depth);
        Inference {
            latency_ms,
            crisis,
            tokens,
            depth,
        }
    }

    /// Zeroes all counters (`ws_open` is a gauge of live connections and stays). Not atomic as a whole: a request racing the reset
    /// may be counted in some counters and not others.
    pub(crate) fn reset(&self) {
        for counter in [
            &self.requests,
            &self.logins,
            &self.jobs_created,
            &self.duplicates,
            &self.polls,
            &self.failures_injected,
            &self.ws_connections,
            &self.ws_messages_received,
            &self.ws_messages_sent,
            &self.ws_dropped,
            &self.ws_open_max,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        *lock(&self.infer) = InferStats::default();
    }
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data
/// consistent, so a panic elsewhere is no reason to fail requests forever.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A map that forgets its oldest entries beyond `cap`.
struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    /// Keys in insertion order, for eviction.
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Clone + Eq + Hash, V> BoundedMap<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key)
    }

    fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_some() {
            return; // already queued
        }
        self.order.push_back(key);
        while self.order.len() > self.cap {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_map_evicts_oldest() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("a", 10); // update: does not count twice
        map.insert("c", 3);
        assert_eq!(map.get("a"), None);
        assert_eq!(map.get("b"), Some(&2));
        assert_eq!(map.get("c"), Some(&3));
        assert_eq!(map.map.len(), 2);
        assert_eq!(map.order.len(), 2);
    }
}
