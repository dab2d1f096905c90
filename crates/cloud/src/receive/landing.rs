//! The sink's PostgreSQL side: each batch is checked, then landed in its
//! own transaction by a task of its own (as many at once as the pool has
//! connections), and answered only once COMMIT has returned.
//!
//! A batch that cannot be trusted is refused and acknowledged (sending it
//! again cannot help). One that did not land is not acknowledged: an HTTP
//! client is told 503 and when to retry; an MQTT batch is tried again here,
//! after the database's back-off, until it lands (the broker holds back
//! further batches while its in-flight window is full).

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::database::Database;
use super::dedupe::Summary;
use super::output::{self, Origin};
use super::report;
use super::sink::{Msg, QUEUE, Running, Sink, Verdict};
use crate::land::{self, Lander};
use crate::wire::{self, MAX_BATCH_BYTES};

/// How long a stopping receiver waits for transactions under way.
const STOP_GRACE: Duration = Duration::from_secs(4);

/// The totals for the summary line (gaps are in `fixgate.gaps`).
#[derive(Debug, Default)]
struct Counts {
    gateways: HashSet<String>,
    batches: u64,
    records: u64,
    duplicates: u64,
    malformed: u64,
}

impl Counts {
    fn summary(&self) -> Summary {
        Summary {
            gateways: self.gateways.len(),
            batches: self.batches,
            records: self.records,
            duplicates: self.duplicates,
            malformed: self.malformed,
            open_gaps: 0,
            missing: 0,
            gaps: Vec::new(),
        }
    }
}

/// What every landing task shares.
struct Shared {
    lander: Arc<Lander>,
    database: Database,
    counts: Mutex<Counts>,
    /// Cancelled when the receiver stops: retries end, unanswered.
    stopping: CancellationToken,
}

impl Shared {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse(&self, origin: &Origin, reason: &'static str, why: String) -> Verdict {
        self.counts().malformed += 1;
        metrics::counter!("fixgate_receive_batches_total", "result" => "refused").increment(1);
        metrics::counter!("fixgate_receive_errors_total", "reason" => reason).increment(1);
        report(&output::error_line(origin, &why));
        Verdict::Refused(why)
    }
}

impl Sink {
    /// Starts landing batches with `lander` (the schema migrated).
    pub fn start_postgres(lander: Arc<Lander>) -> (Sink, Running) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            lander,
            database: Database::new(),
            counts: Mutex::default(),
            stopping: CancellationToken::new(),
        });
        metrics::gauge!("fixgate_receive_db_up").set(1.0);
        let running = tokio::spawn(serve(rx, shared));
        (Sink { tx }, running)
    }
}

async fn serve(mut rx: mpsc::Receiver<Msg>, shared: Arc<Shared>) -> io::Result<Summary> {
    let slots = Arc::new(Semaphore::new(QUEUE));
    let mut tasks = JoinSet::new();
    loop {
        // A slot first: batches wait in the channel, not in tasks.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        match msg {
            Some(Msg::Batch {
                bytes,
                origin,
                reply,
            }) => {
                let shared = shared.clone();
                tasks.spawn(async move {
                    let _slot = slot;
                    if let Some(verdict) = take(&shared, bytes, &origin).await {
                        // An HTTP client that hung up: landed all the same.
                        let _ = reply.send(verdict);
                    }
                });
            }
            Some(Msg::Refused { origin, why }) => {
                shared.refuse(&origin, "oversized", why);
            }
            Some(Msg::Summary) => report(&output::summary_line(&shared.counts().summary())),
            Some(Msg::Stop) | None => break,
        }
    }
    shared.stopping.cancel();
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, drained).await.is_err() {
        tasks.abort_all();
    }
    Ok(shared.counts().summary())
}

/// Checks and lands one batch; `None` when the receiver stopped first.
async fn take(shared: &Shared, bytes: Bytes, origin: &Origin) -> Option<Verdict> {
    if bytes.len() > MAX_BATCH_BYTES {
        let why = format!("batch of {} bytes exceeds {MAX_BATCH_BYTES}", bytes.len());
        return Some(shared.refuse(origin, "oversized", why));
    }
    let batch = match wire::decode(&bytes) {
        Ok(batch) => batch,
        Err(err) => return Some(shared.refuse(origin, "decode", err.to_string())),
    };
    if let Origin::Topic(topic) = origin {
        // A gateway publishes on a topic of its own (`{gateway}` a whole
        // level of the uplink's topic): a batch naming another gateway is
        // one login writing for another, and sending it again cannot help.
        if !topic.split('/').any(|level| level == batch.gateway) {
            let why = format!(
                "batch {} names gateway {:?}, which its topic {topic:?} does not",
                batch.id, batch.gateway
            );
            return Some(shared.refuse(origin, "gateway_mismatch", why));
        }
    }
    let rows = match land::rows(&batch) {
        Ok(rows) => rows,
        Err(err) => {
            let why = format!("batch {} refused: {err}", batch.id);
            return Some(shared.refuse(origin, err.reason(), why));
        }
    };
    // MQTT batches wait here for the database; HTTP clients are told to retry.
    let patient = matches!(origin, Origin::Topic(_));
    let db = &shared.database;
    loop {
        if let Some(wait) = db.wait() {
            if !patient {
                return Some(unavailable("the database is unavailable".into(), wait));
            }
            tokio::select! {
                _ = shared.stopping.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if shared.stopping.is_cancelled() {
            return None;
        }
        let started = Instant::now();
        match shared.lander.land(&batch.gateway, &rows).await {
            Ok(landed) => {
                metrics::histogram!("fixgate_receive_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                db.succeeded(&batch.gateway, batch.id);
                let result = if landed.new == 0 && landed.duplicates > 0 {
                    "duplicate"
                } else {
                    "landed"
                };
                metrics::counter!("fixgate_receive_batches_total", "result" => result).increment(1);
                metrics::counter!("fixgate_receive_records_total", "result" => "new")
                    .increment(landed.new);
                metrics::counter!("fixgate_receive_records_total", "result" => "duplicate")
                    .increment(landed.duplicates);
                let mut counts = shared.counts();
                counts.gateways.insert(batch.gateway.clone());
                counts.batches += 1;
                counts.records += landed.new;
                counts.duplicates += landed.duplicates;
                return Some(Verdict::Written {
                    new: landed.new as usize,
                    duplicates: landed.duplicates as usize,
                });
            }
            Err(err) => {
                metrics::counter!("fixgate_receive_batches_total", "result" => "failed")
                    .increment(1);
                metrics::counter!("fixgate_receive_errors_total", "reason" => err.reason())
                    .increment(1);
                db.failed(&batch.gateway, batch.id, &err);
                if !patient {
                    let wait = db.wait().unwrap_or(Duration::from_secs(1));
                    return Some(unavailable(err.to_string(), wait));
                }
            }
        }
    }
}

fn unavailable(why: String, retry_after: Duration) -> Verdict {
    Verdict::Unavailable { why, retry_after }
}
