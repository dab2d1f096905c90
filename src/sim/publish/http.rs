//! The HTTP transport: a few blocking `ureq` workers pulling requests from a
//! bounded queue, so a slow server costs queue room, not ticker time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ACK_GRACE, Counters, HttpFormat, HttpTarget, Message, bump};

/// Per-request time limit, so shutdown is never stuck behind a dead server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Distinct failures remembered for "log once"; beyond it, failures are only counted.
const LOGGED_MAX: usize = 64;

/// Longest response body read (and thrown away) to keep the connection reusable.
const RESPONSE_MAX: u64 = 64 * 1024;

/// One request for a worker.
struct Job {
    url: String,
    body: Vec<u8>,
}

/// What the workers share.
struct Shared {
    agent: ureq::Agent,
    authorization: Option<String>,
    content_type: &'static str,
    counters: Arc<Counters>,
    /// Failures already logged (statuses and error texts).
    logged: Mutex<HashSet<String>>,
    /// Set when shutdown gave up waiting: workers stop after their request.
    stop: AtomicBool,
}

/// The request queue and its workers.
pub(super) struct Pool {
    tx: mpsc::Sender<Job>,
    endpoint: String,
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts `target.workers` workers behind a queue of `capacity` requests.
    pub(super) fn start(target: &HttpTarget, capacity: usize, counters: Arc<Counters>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .max_idle_connections_per_host(target.workers)
            .user_agent(concat!("fixgate-simulate/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let shared = Arc::new(Shared {
            agent,
            authorization: target.token.as_ref().map(|t| format!("Bearer {t}")),
            content_type: match target.format {
                HttpFormat::Osmand => "text/plain",
                HttpFormat::Json => "application/json",
            },
            counters,
            logged: Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..target.workers)
            .map(|_| {
                let (rx, shared) = (rx.clone(), shared.clone());
                tokio::task::spawn_blocking(move || work(&rx, &shared))
            })
            .collect();
        Self {
            tx,
            endpoint: format!(
                "{}{}",
                target.url.trim_end_matches('/'),
                target.format.path()
            ),
            workers,
            shared,
        }
    }

    /// Queues one request; false if the queue is full.
    pub(super) fn send(&self, _index: usize, message: Message) -> bool {
        let url = if message.query.is_empty() {
            self.endpoint.clone()
        } else {
            format!("{}?{}", self.endpoint, message.query)
        };
        self.tx
            .try_send(Job {
                url,
                body: message.body,
            })
            .is_ok()
    }

    /// Lets the workers finish the queue for up to [`ACK_GRACE`], then stops them.
    pub(super) async fn close(self) {
        let Self {
            tx,
            workers,
            shared,
            ..
        } = self;
        drop(tx);
        let all = futures_util::future::join_all(workers);
        if tokio::time::timeout(ACK_GRACE, all).await.is_err() {
            tracing::warn!("HTTP requests still pending at shutdown; giving up on them");
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A worker: takes requests until the queue is closed and empty (or stop is set).
fn work(rx: &Mutex<mpsc::Receiver<Job>>, shared: &Shared) {
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        // One worker waits on the queue while the others wait on the lock.
        let job = rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else {
            return;
        };
        post(shared, job);
    }
}

fn post(shared: &Shared, job: Job) {
    let mut request = shared.agent.post(&job.url);
    if let Some(auth) = &shared.authorization {
        request = request.header("Authorization", auth);
    }
    let result = if job.body.is_empty() {
        request.send_empty()
    } else {
        request
            .content_type(shared.content_type)
            .send(&job.body[..])
    };
    let counters = &shared.counters;
    match result {
        Ok(response) => {
            bump(&counters.published);
            let status = response.status();
            // Drain the body so the connection goes back to the pool.
            let _ = response
                .into_body()
                .into_with_config()
                .limit(RESPONSE_MAX)
                .read_to_vec();
            if status.is_success() {
                bump(&counters.acked);
            } else {
                bump(&counters.errors);
                log_once(shared, format!("HTTP {status}"), &job.url);
            }
        }
        Err(error) => {
            bump(&counters.errors);
            log_once(shared, error.to_string(), &job.url);
        }
    }
}

/// Logs a failure the first time it is seen.
fn log_once(shared: &Shared, failure: String, url: &str) {
    let mut logged = shared.logged.lock().unwrap_or_else(PoisonError::into_inner);
    if logged.len() < LOGGED_MAX && logged.insert(failure.clone()) {
        let url = url.split('?').next().unwrap_or_default();
        tracing::warn!(%failure, url, "HTTP request failed (logged once per kind of failure)");
    }
}
