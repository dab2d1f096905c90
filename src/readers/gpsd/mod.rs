//! gpsd's JSON protocol on its own TCP port (`[gpsd]`, off by default), so
//! that tools written for gpsd — `gpspipe`, `cgps`, libgps programs, the
//! Python `gps` module — read the gateway's receivers without a gpsd of
//! their own holding the serial port.
//!
//! A reader of the store like the others: one task ([`table::follow`])
//! follows the writer's head, reads each new event once, turns each live
//! position of a served device into a `TPV` (and `SKY`) line once, keeps
//! the latest per device for `?POLL;`, and hands the lines to every
//! watching client through one bounded broadcast queue. A client task
//! ([`client`]) per connection answers requests and writes what it is
//! sent; a client that falls behind the queue skips what it missed (counted,
//! logged once), and one whose socket takes nothing for `stall_timeout` is
//! closed. Memory is the queue's and a line buffer per client, whatever the
//! clients do. The protocol itself is [`protocol`], plain functions.
//!
//! Which devices: the receivers — each `[[serial]]` (gpsd's `path` is its
//! port, `bps` its speed), each `[[replay]]` (the log file) and the NMEA
//! `[demo]` fleet (the device id) — and, when `gpsd.trackers` names them by
//! pattern, MQTT and HTTP devices (the device id; at most
//! [`table::MAX_TRACKERS`] of them).

mod client;
pub mod protocol;
mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{Config, DemoVia, Gpsd};
use crate::store::Reader;
use crate::telemetry;
use crate::util::log_limit::{LogLimit, Verdict};
use crate::util::tasks::Tasks;

pub use table::{BpsSource, Port, Served};

/// Binds `[gpsd].listen` when the server is on: before anything accepts
/// data, so that a busy port stops the start.
pub async fn bind(gpsd: &Gpsd) -> anyhow::Result<Option<TcpListener>> {
    if !gpsd.enabled {
        return Ok(None);
    }
    let listener = TcpListener::bind(gpsd.listen)
        .await
        .with_context(|| format!("cannot listen on {} (gpsd.listen)", gpsd.listen))?;
    Ok(Some(listener))
}

/// The devices `config` serves, with each serial port's configured speed.
pub fn served(config: &Config) -> Served {
    let mut ports: Vec<Port> = config
        .serial
        .iter()
        .map(|s| Port {
            device: s.device.clone(),
            path: s.path.display().to_string(),
            driver: Some("NMEA0183"),
            // A hunted speed is known only once found (see `with_bps`).
            bps: s.hunt.is_none().then_some(s.baud),
        })
        .collect();
    ports.extend(config.replay.iter().map(|r| Port {
        device: r.device.clone(),
        path: r.path.display().to_string(),
        driver: Some("NMEA0183"),
        bps: None,
    }));
    if let Some(demo) = config.demo.as_ref().filter(|d| d.via == DemoVia::Nmea) {
        ports.extend(demo.device_ids().into_iter().map(|id| Port {
            path: id.as_str().to_owned(),
            device: id,
            driver: Some("NMEA0183"),
            bps: None,
        }));
    }
    Served::new(ports, config.gpsd.trackers.clone())
}

/// Starts the follower and the server on `listener` (from [`bind`]), on
/// `tasks`, reading `reader` as the writer's `head` moves; both end with
/// `tasks`' shutdown token. `bps` gives a serial port's
/// speed as DEVICE objects report it (the configured one, from [`served`],
/// until the receivers report what they found).
pub fn start(
    listener: TcpListener,
    config: &Config,
    served: Served,
    (reader, head): (Reader, watch::Receiver<u64>),
    tasks: &Tasks,
) {
    let release = format!("fixgate {}", env!("CARGO_PKG_VERSION"));
    let shared = table::Shared::new(served, release);
    tasks.spawn(table::follow(
        shared.clone(),
        reader,
        head,
        tasks.shutdown().clone(),
    ));
    let limits = Limits {
        max_clients: config.gpsd.max_clients,
        stall_timeout: config.gpsd.stall_timeout,
        allow_from: config.gpsd.allow_from.clone(),
    };
    tracing::info!(listen = %config.gpsd.listen, "gpsd protocol server listening");
    tasks.spawn(serve(listener, shared, limits, tasks.clone()));
}

/// What bounds the clients.
struct Limits {
    max_clients: usize,
    stall_timeout: Duration,
    allow_from: Vec<crate::access::rate::Net>,
}

/// Accepts clients until shutdown, each on a task of its own.
async fn serve(listener: TcpListener, shared: Arc<table::Shared>, limits: Limits, tasks: Tasks) {
    let slots = Arc::new(Semaphore::new(limits.max_clients));
    let mut refusals: LogLimit<&'static str> = LogLimit::new(Duration::from_secs(60), 4);
    let shutdown = tasks.shutdown().clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!("gpsd: accepting a connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let refusal = if !limits.allow_from.iter().any(|n| n.contains(peer.ip())) {
            Some("not_allowed")
        } else {
            None
        };
        let permit = match refusal {
            Some(_) => None,
            None => slots.clone().try_acquire_owned().ok(),
        };
        let Some(permit) = permit else {
            let reason = refusal.unwrap_or("full");
            telemetry::GPSD_DROPPED.with([reason]).increment(1);
            refused(&mut refusals, reason, peer, limits.max_clients);
            continue;
        };
        let client = client::Client::new(shared.clone(), limits.stall_timeout);
        tasks.spawn(client.run(stream, peer, shutdown.clone(), permit));
    }
}

/// Logs a refused connection, at most once a minute per reason.
fn refused(
    refusals: &mut LogLimit<&'static str>,
    reason: &'static str,
    peer: SocketAddr,
    max: usize,
) {
    if let Verdict::Log { suppressed } = refusals.check(&reason, Instant::now()) {
        match reason {
            "not_allowed" => tracing::warn!(
                %peer,
                suppressed,
                "gpsd: connection refused: the address is not in gpsd.allow_from"
            ),
            _ => tracing::warn!(
                %peer,
                suppressed,
                "gpsd: connection refused: {max} clients are connected (gpsd.max_clients)"
            ),
        }
    }
}
