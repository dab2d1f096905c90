//! `fixgate-receive`: the reference receiver of upstream batches, over MQTT
//! or HTTP. It prints every record once as a JSON line on stdout, reports
//! gaps and refused batches on stderr, and acknowledges a batch only once its
//! lines are flushed, so that nothing a gateway sent is lost by a receiver
//! that stops halfway.
//!
//! [`dedupe`] is the pure core; [`sink`] owns it and stdout; [`mqtt`] and
//! [`http`] only carry bytes to the sink and answers back.

pub mod database;
pub mod dedupe;
pub mod http;
pub mod landing;
pub mod metrics;
pub mod mqtt;
pub mod output;
pub mod sink;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use http::HttpSource;
pub use mqtt::MqttSource;
use sink::Sink;

use crate::land::{self, Lander, PgOptions};

/// How long a stopping receiver waits for the output thread to finish
/// what it is writing.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// Where batches come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Subscribed on an MQTT broker.
    Mqtt(MqttSource),
    /// POSTed to our own HTTP server.
    Http(HttpSource),
}

/// Everything `fixgate-receive` is told.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// Where batches come from.
    pub source: Source,
    /// Print the summary this often too, not only at the end.
    pub summary_every: Option<Duration>,
    /// Land batches in PostgreSQL instead of printing them.
    pub postgres: Option<PgOptions>,
    /// Serve `/metrics` and `/healthz` here.
    pub metrics: Option<SocketAddr>,
}

/// Receives until SIGINT or SIGTERM, then prints the summary. An error is
/// a receiver that cannot go on: stdout closed, the broker refusing the
/// subscription, the address taken.
pub async fn run(options: ReceiveOptions) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::signal::cancel_on_signal(
        shutdown.clone(),
        "stop the receiver with SIGKILL",
    ));
    let handle = match options.metrics {
        Some(_) => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("cannot install the metrics recorder")?,
        ),
        None => None,
    };
    // Without a database there is nothing to be unhealthy about.
    let health = Arc::new(AtomicBool::new(options.postgres.is_none()));
    let (sink, running) = match &options.postgres {
        None => Sink::start(std::io::stdout(), shutdown.clone()),
        Some(pg) => {
            let pool = land::pool(pg)?;
            if !migrate(&pool, &shutdown).await {
                return Ok(());
            }
            tokio::spawn(metrics::check(
                pool.clone(),
                health.clone(),
                shutdown.clone(),
            ));
            Sink::start_postgres(Arc::new(Lander::new(pool)))
        }
    };
    if let (Some(addr), Some(handle)) = (options.metrics, handle) {
        metrics::serve(addr, handle, health, shutdown.clone()).await?;
    }
    if let Some(every) = options.summary_every {
        tokio::spawn(print_summaries(sink.clone(), every, shutdown.clone()));
    }
    let received = match &options.source {
        Source::Mqtt(source) => mqtt::run(source, &sink, shutdown.clone()).await,
        Source::Http(source) => http::run(source, &sink, shutdown.clone()).await,
    };
    sink.stop().await;
    // A reader that stopped reading (a pager) would otherwise hold the
    // receiver forever after Ctrl-C.
    let summary = tokio::time::timeout(OUTPUT_GRACE, running)
        .await
        .context("standard output is not being read: stopping without a summary")?
        .context("the output thread failed")?
        .context("cannot write to standard output")?;
    report(&output::summary_line(&summary));
    received
}

/// Applies the schema, trying again (capped exponential back-off) while
/// the database is unavailable; `false` when stopped first.
async fn migrate(pool: &deadpool_postgres::Pool, shutdown: &CancellationToken) -> bool {
    let mut back_off = database::BACKOFF_MIN;
    let mut warned = false;
    loop {
        let tried = async {
            let mut client = pool.get().await.map_err(anyhow::Error::from)?;
            land::migrate(&mut client)
                .await
                .map_err(anyhow::Error::from)
        };
        match tried.await {
            Ok(_) => {
                if warned {
                    tracing::info!("database available, schema up to date");
                }
                return true;
            }
            Err(err) => {
                if !warned {
                    tracing::warn!("cannot apply the schema, retrying: {err:#}");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(back_off) => {}
        }
        back_off = (back_off * 2).min(database::BACKOFF_MAX);
    }
}

async fn print_summaries(sink: Sink, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => sink.print_summary().await,
        }
    }
}

/// Writes one line to stderr. Errors are ignored: stderr is for people and
/// logs, and a receiver that cannot report must still deliver.
fn report(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}
