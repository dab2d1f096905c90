//! The one owner of the dedupe state and of stdout: a blocking thread that
//! takes batches in arrival order, prints their new records, flushes, and
//! only then answers, so that a transport acknowledges nothing that is not
//! written yet.

use std::io::{self, Write};

use axum::body::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dedupe::{Dedupe, Summary};
use super::output::{self, Origin};
use super::report;
use crate::wire::{self, MAX_BATCH_BYTES};

/// Batches waiting for the thread. The broker's in-flight window (QoS 1
/// messages go unacknowledged until answered) and the HTTP clients waiting
/// for their answers keep the queue short; past this many, senders wait.
pub(super) const QUEUE: usize = 64;

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its new records are written and flushed.
    Written {
        /// Records printed.
        new: usize,
        /// Records dropped as seen before.
        duplicates: usize,
    },
    /// It is not a batch, or not one that can be trusted (reported on stderr).
    Refused(String),
    /// Not landed now (the database is down, a transaction failed, or its
    /// COMMIT went unanswered): not to be acknowledged; send it again later.
    Unavailable {
        /// What went wrong.
        why: String,
        /// When trying again makes sense.
        retry_after: std::time::Duration,
    },
}

/// The thread has stopped: stdout failed, or the receiver is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the output is closed")]
pub struct Closed;

pub(super) enum Msg {
    Batch {
        bytes: Bytes,
        origin: Origin,
        reply: oneshot::Sender<Verdict>,
    },
    Refused {
        origin: Origin,
        why: String,
    },
    Summary,
    Stop,
}

/// A handle to the thread; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    pub(super) tx: mpsc::Sender<Msg>,
}

/// The running thread: ends with the totals, or with the error that stopped it.
pub type Running = tokio::task::JoinHandle<io::Result<Summary>>;

impl Sink {
    /// Starts the thread writing records to `out`. A write error stops it
    /// and cancels `failed`, so that the transports stop too.
    pub fn start<W: Write + Send + 'static>(out: W, failed: CancellationToken) -> (Sink, Running) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let running = tokio::task::spawn_blocking(move || {
            let result = serve(rx, out);
            if let Err(err) = &result {
                tracing::error!("cannot write to standard output: {err}");
                failed.cancel();
            }
            result
        });
        (Sink { tx }, running)
    }

    /// Queues a batch; the answer comes once it is written (or refused).
    pub async fn submit(
        &self,
        bytes: Bytes,
        origin: Origin,
    ) -> Result<oneshot::Receiver<Verdict>, Closed> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Batch {
            bytes,
            origin,
            reply,
        };
        self.tx.send(msg).await.map_err(|_| Closed)?;
        Ok(answer)
    }

    /// Reports and counts a batch the transport refused before reading it.
    pub async fn refused(&self, origin: Origin, why: String) {
        let _ = self.tx.send(Msg::Refused { origin, why }).await;
    }

    /// Prints the summary so far.
    pub async fn print_summary(&self) {
        let _ = self.tx.send(Msg::Summary).await;
    }

    /// Asks the thread to end once what is queued before this is done.
    pub async fn stop(&self) {
        let _ = self.tx.send(Msg::Stop).await;
    }
}

fn serve<W: Write>(mut rx: mpsc::Receiver<Msg>, out: W) -> io::Result<Summary> {
    // Records go out in large writes; the flush after each batch is what
    // the acknowledgement waits for.
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let mut dedupe = Dedupe::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Batch {
                bytes,
                origin,
                reply,
            } => {
                let verdict = take(&mut dedupe, &bytes, &origin, &mut out)?;
                // The sender may have gone (an HTTP client that hung up):
                // the batch is written all the same, and a resend is a duplicate.
                let _ = reply.send(verdict);
            }
            Msg::Refused { origin, why } => {
                dedupe.refused();
                report(&output::error_line(&origin, &why));
            }
            Msg::Summary => report(&output::summary_line(&dedupe.summary())),
            Msg::Stop => break,
        }
    }
    Ok(dedupe.summary())
}

/// Decodes one batch, prints its new records and flushes; refusals and gaps
/// are reported on stderr.
fn take(
    dedupe: &mut Dedupe,
    bytes: &[u8],
    origin: &Origin,
    out: &mut impl Write,
) -> io::Result<Verdict> {
    let refuse = |why: String| {
        report(&output::error_line(origin, &why));
        Ok(Verdict::Refused(why))
    };
    if bytes.len() > MAX_BATCH_BYTES {
        dedupe.refused();
        return refuse(format!(
            "batch of {} bytes exceeds {MAX_BATCH_BYTES}",
            bytes.len()
        ));
    }
    let batch = match wire::decode(bytes) {
        Ok(batch) => batch,
        Err(err) => {
            dedupe.refused();
            return refuse(err.to_string());
        }
    };
    let accepted = match dedupe.accept(&batch) {
        Ok(accepted) => accepted,
        Err(err) => return refuse(format!("inconsistent batch {}: {err}", batch.id)),
    };
    for record in &accepted.new {
        let line = output::record_line(&batch, record).map_err(io::Error::other)?;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    for hole in &accepted.opened {
        report(&output::gap_line(&batch.gateway, batch.id, hole));
    }
    for part in &accepted.filled {
        report(&output::filled_line(&batch.gateway, batch.id, part));
    }
    Ok(Verdict::Written {
        new: accepted.new.len(),
        duplicates: accepted.duplicates,
    })
}
