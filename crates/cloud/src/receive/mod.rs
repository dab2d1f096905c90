//! `fixgate-receive`: the reference receiver of upstream batches, over MQTT
//! or HTTP. It prints every record once as a JSON line on stdout, reports
//! gaps and refused batches on stderr, and acknowledges a batch only once its
//! lines are flushed, so that nothing a gateway sent is lost by a receiver
//! that stops halfway.
//!
//! [`dedupe`] is the pure core; [`sink`] owns it and stdout; [`mqtt`] and
//! [`http`] only carry bytes to the sink and answers back.

pub mod dedupe;
pub mod http;
pub mod mqtt;
pub mod output;
pub mod sink;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use http::HttpSource;
pub use mqtt::MqttSource;
use sink::Sink;

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
    let (sink, running) = Sink::start(std::io::stdout(), shutdown.clone());
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
