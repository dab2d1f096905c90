//! Wiring: opens the store, starts the writer, the flusher, the sources and the
//! feed, and shuts them down in order on SIGTERM/SIGINT.
//!
//! Shutdown order is the durability contract: stop intake (sources end and
//! drop their senders), let the writer drain the channel, flush once more,
//! then let the HTTP server finish. Nothing accepted is lost.

pub mod fence_watch;
pub mod health;
pub mod logging;
pub mod reload;
pub mod status;
pub mod systemd;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use std::net::SocketAddr;

use crate::config::{Broker, Config, Demo, DemoVia};
use crate::daemon::health::{Pulse, Pulses};
use crate::fix::SourceKind;
use crate::groups::Groups;
use crate::pipeline::{self, Checks, WriterHealth};
use crate::readers::feed::body::BodyLimits;
use crate::readers::feed::{self, FeedOptions, FeedState, server};
use crate::sim::publish::{MqttTarget, SimulateOptions, Target};
use crate::sources::http::HttpIntake;
use crate::sources::intake::Rejects;
use crate::sources::mqtt::{self, Messages};
use crate::sources::{demo, replay, serial};
use crate::store::budget::{self, Budget, Limits, Policy};
use crate::store::{Store, StoreOptions, flusher};

/// Runs the daemon until SIGTERM or SIGINT; returns once everything accepted
/// is durable. `config_path` is re-read on SIGHUP (for the geofences).
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::signal::cancel_on_signal(
        shutdown.clone(),
        "stop the daemon with SIGKILL",
    ));
    if let Some(handle) = metrics.clone() {
        tokio::spawn(metrics_upkeep(handle, shutdown.clone()));
    }
    // First: it takes over SIGHUP, which would otherwise end the process.
    let (geofences, _fence_watch) =
        crate::daemon::fence_watch::start(config_path.clone(), config.clone(), shutdown.clone());

    let options = StoreOptions {
        path: config.store.path.clone(),
        cache_bytes: config.store.cache_mb * 1024 * 1024,
        flush_interval: config.store.flush_interval,
    };
    let (store, mut report) = tokio::task::spawn_blocking(move || Store::open(&options))
        .await?
        .with_context(|| format!("cannot open the store at {}", config.store.path.display()))?;
    if let Some((aside, cause)) = &report.quarantined {
        metrics::counter!("fixgate_store_quarantined_total").increment(1);
        tracing::error!(
            moved_to = %aside.display(),
            "THE STORE WAS DAMAGED and has been moved aside; starting with an empty store. Cause: {cause}"
        );
    }
    if let Some(problem) = &report.mark_problem {
        metrics::counter!("fixgate_store_mark_damaged_total").increment(1);
        tracing::error!("store: {problem}");
    }
    if report.skipped > 0 {
        // After a crash: numbers the last run may have handed out to the feed
        // before they were durable are not handed out again.
        tracing::info!(
            skipped = report.skipped,
            "store: numbering goes on past the last run's reservation"
        );
    }
    let writer = store.writer()?;
    tracing::info!(
        path = %config.store.path.display(),
        head = writer.head(),
        created = report.created,
        "store open"
    );

    // Every connection we allow must find a file descriptor, with room for
    // the store, the serial ports and the logs: else the limits would not
    // hold and the process would stop accepting anything at all.
    let mqtt_connections = match &config.mqtt.broker {
        Broker::Embedded(e) => e.max_connections,
        _ => 0,
    };
    crate::util::fd_limit::raise(
        (config.feed.max_connections + server::RESERVED + mqtt_connections + 256) as u64,
        "feed.max_connections and mqtt.max_connections",
    );

    // Tokens and TLS keys before anything accepts data: a token that cannot
    // be read, or a key that is not its certificate's, stops the start here.
    let access = crate::access::load(&config.access, &config.http)
        .map_err(|e| anyhow::anyhow!("cannot load the access tokens:\n{e}"))?;
    warn_if_open(&config, &access);
    let access = crate::access::Shared::new(access);
    let tls = match &config.feed.tls {
        Some(files) => Some(feed::tls::ServerTls::load(files).context(
            "cannot load the feed's TLS certificate and key (feed.tls_cert, feed.tls_key)",
        )?),
        None => None,
    };

    // Bind before starting anything that accepts data: a busy port is a
    // configuration error to report now, not after fixes were taken in.
    let listener = tokio::net::TcpListener::bind(config.feed.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.feed.listen))?;

    let (head_tx, head_rx) = watch::channel(writer.head());
    // Read after the writer has stopped: the last number it handed out.
    let final_head = head_rx.clone();
    // What was read back at open is on disk already.
    let (durable_tx, durable_rx) = watch::channel(writer.head());
    let (tx, rx) = mpsc::channel(config.pipeline.queue);
    let health = Arc::new(WriterHealth::default());
    let writer_health = health.clone();
    let groups = Arc::new(Groups::new(
        config.groups.clone(),
        config.devices.max_devices,
    ));
    groups.seed(report.devices.iter().filter_map(|d| {
        d.reported_group
            .clone()
            .map(|group| (d.device.clone(), group))
    }));
    let mut checks = Checks::seeded(
        config.filter.clone(),
        config.devices.offline_after,
        config.devices.max_devices,
        config.gateway.clock,
        store.reader(),
        // Taken, not kept: only the checks need them, once.
        &std::mem::take(&mut report.devices),
        geofences.clone(),
    )
    .with_groups(groups.clone());
    for s in &config.serial {
        checks.own(s.device.clone(), SourceKind::Serial);
    }
    for r in &config.replay {
        checks.own(r.device.clone(), SourceKind::Replay);
    }
    if let Some(d) = config.demo.as_ref().filter(|d| d.via == DemoVia::Nmea) {
        for id in d.device_ids() {
            checks.own(id, SourceKind::Demo);
        }
    }
    let (writer_done_tx, writer_done) = tokio::sync::oneshot::channel::<()>();
    let writer_thread = {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("fixgate-writer".into())
            .spawn(move || {
                // Dropped when the thread ends, panic or not.
                let _done = writer_done_tx;
                pipeline::run(rx, writer, checks, head_tx, health, shutdown, runtime)
            })
            .context("cannot start the writer thread")?
    };
    let flusher = tokio::spawn(flusher::run(
        store.clone(),
        config.store.flush_interval,
        head_rx.clone(),
        durable_tx,
        shutdown.clone(),
    ));
    let policy = budget_policy(&config.store, &config.uplink);
    tokio::spawn(budget::run(
        Budget::new(store.clone(), policy),
        BUDGET_INTERVAL,
        head_rx.clone(),
        shutdown.clone(),
    ));
    // Cancelled once a full disk has room again: sled must be reopened.
    let reopen = CancellationToken::new();
    tokio::spawn(reopen_when_room(
        config.store.path.clone(),
        policy.limits.min_free_bytes,
        health.clone(),
        reopen.clone(),
        shutdown.clone(),
    ));

    let uplink = crate::readers::uplink::start(
        &config.uplink,
        config.gateway.id.as_str(),
        store.clone(),
        head_rx.clone(),
        durable_rx,
        shutdown.clone(),
    )
    .context("cannot start the uplink")?;

    let mut sources = JoinSet::new();
    // The sources' loops, as the watchdog sees them.
    let pulses = Arc::new(Pulses::default());
    let rejects = Arc::new(Rejects::new(config.devices.max_devices));
    let mqtt_pulse = pulses.register("the MQTT intake");
    // First: the demo fleet over MQTT connects to this server's port.
    let intake = Intake {
        tx: &tx,
        rejects: &rejects,
        groups: &groups,
    };
    start_mqtt(&config, &intake, &mqtt_pulse, &shutdown, &mut sources)?;
    start_sources(&config, &tx, &pulses, &shutdown, &mut sources);

    let state = FeedState::new(
        store.reader(),
        head_rx,
        FeedOptions {
            keepalive: config.feed.keepalive,
            retry: config.feed.retry,
            max_clients: config.feed.max_clients,
            max_snapshots: config.feed.max_snapshots,
        },
        health,
        metrics,
        shutdown.clone(),
    )
    .with_geofences(geofences)
    .with_map(&config.map, config.gateway.id.as_str())
    .with_groups(groups.clone());
    tokio::spawn(state.fan_out());
    let mut app = feed::router(state);
    if config.http.enabled {
        let bodies = BodyLimits::new(
            config.http.max_body,
            config.feed.body_timeout,
            BODY_BUDGET.max(config.http.max_body),
            rejects.clone(),
        );
        let intake = HttpIntake::new(&config.http, &tx, rejects, access.clone())
            .router()
            .layer(axum::middleware::from_fn_with_state(
                bodies,
                feed::body::read_whole,
            ));
        app = app.merge(intake);
    }
    // In front of every route: CORS, the token, the intake's rate limit.
    let app = app.layer(axum::middleware::from_fn_with_state(
        feed::access::Gate::new(access.clone(), &config.http),
        feed::access::guard,
    ));
    tokio::spawn(feed::access::watch(
        config_path.clone(),
        config.http.clone(),
        access,
        tls.clone(),
        shutdown.clone(),
    ));
    let server = tokio::spawn(feed::server::serve(
        listener,
        app,
        server::Limits {
            max_connections: config.feed.max_connections,
            header_timeout: config.feed.header_timeout,
            stall_timeout: config.feed.stall_timeout,
        },
        tls,
        shutdown.clone(),
    ));
    tracing::info!(listen = %config.feed.listen, sources = sources.len(), "fixgate running");
    tokio::spawn(crate::daemon::systemd::watchdog(
        writer_health.clone(),
        pulses,
        shutdown.clone(),
    ));
    tokio::spawn(crate::daemon::status::run(
        writer_health.clone(),
        uplink.as_ref().map(|u| u.report.clone()),
        shutdown.clone(),
    ));
    crate::daemon::systemd::ready(&format!(
        "running: {} sources, feed on {}",
        sources.len(),
        config.feed.listen
    ));

    let fatal = tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = writer_done => Some("the writer stopped unexpectedly"),
        _ = reopen.cancelled() => Some("the store failed on a full disk and must be reopened now that there is room"),
    };
    if let Some(why) = fatal {
        // Exit with an error so that the service manager restarts the daemon.
        tracing::error!("{why}; shutting down");
        shutdown.cancel();
    }
    tracing::info!("shutting down: stopping intake");
    crate::daemon::systemd::stopping();
    while sources.join_next().await.is_some() {}
    // Held until now so that the writer (and the feed's head) outlive sources
    // that end on their own, such as a replay played once, or none at all.
    drop(tx);
    // The writer ends once the last sender is gone and the channel is drained.
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    let _ = flusher.await;
    if let Some(uplink) = uplink {
        // It records what was acknowledged before the last flush.
        let _ = uplink.task.await;
    }
    let final_store = store.clone();
    let head = *final_head.borrow();
    tokio::task::spawn_blocking(move || final_store.close(head))
        .await?
        .context("final store flush failed")?;
    tracing::info!(head, "store flushed");
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!("feed server task: {err}"),
        Err(_) => tracing::warn!("feed server did not stop within 10 s"),
    }
    tracing::info!("stopped");
    match fatal {
        Some(why) => Err(anyhow::anyhow!("{why}")),
        None => Ok(()),
    }
}

/// Bytes of request bodies being received at once, across all intake
/// requests (at least one `http.max_body`).
const BODY_BUDGET: usize = 16 * 1024 * 1024;

/// How often the disk budget measures the store when the writer is quiet.
const BUDGET_INTERVAL: Duration = Duration::from_secs(5);

/// The disk budget's policy from `[store]`.
fn budget_policy(store: &crate::config::Store, uplink: &crate::config::Uplink) -> Policy {
    const MIB: u64 = 1024 * 1024;
    Policy {
        limits: Limits {
            max_bytes: store.max_size_mb * MIB,
            high_water: store.high_water,
            min_free_bytes: store.min_free_mb * MIB,
        },
        thin: store.thin,
        // Without an uplink nothing waits for an acknowledgement: every
        // record is history, the oldest deleted first.
        keep_unacked: !matches!(uplink.transport, crate::config::UplinkTransport::Off),
    }
}

/// Watches a store that failed on a full disk, and cancels `reopen` once its
/// file system has room again (at least `min_free` and 1 MiB): sled refuses
/// every write after an I/O error until it is reopened, so the daemon exits
/// with an error and the service manager starts it again on what is on disk.
/// Until then the writer drops and counts fixes and the feed serves reads.
async fn reopen_when_room(
    path: std::path::PathBuf,
    min_free: u64,
    health: Arc<WriterHealth>,
    reopen: CancellationToken,
    shutdown: CancellationToken,
) {
    let want = min_free.max(1024 * 1024);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !health.disk_full.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        if budget::free_bytes(&path).is_some_and(|free| free >= want) {
            tracing::warn!(
                "the store's file system has room again: restarting to reopen the store"
            );
            reopen.cancel();
            return;
        }
    }
}

fn start_sources(
    config: &Config,
    tx: &mpsc::Sender<crate::fix::Observed>,
    pulses: &Pulses,
    shutdown: &CancellationToken,
    sources: &mut JoinSet<()>,
) {
    let clock = config.gateway.clock;
    for s in &config.serial {
        let pulse = pulses.register(format!("serial receiver {}", s.device));
        sources.spawn(serial::run(
            s.clone(),
            clock,
            tx.clone(),
            pulse,
            shutdown.clone(),
        ));
    }
    for r in &config.replay {
        sources.spawn(replay::run(r.clone(), clock, tx.clone(), shutdown.clone()));
    }
    match (&config.demo, &config.mqtt.broker) {
        (Some(d), Broker::Embedded(broker)) if d.via == DemoVia::Mqtt => {
            sources.spawn(demo_over_mqtt(d.clone(), broker.listen, shutdown.clone()));
        }
        (Some(d), _) => {
            sources.spawn(demo::run(d.clone(), tx.clone(), shutdown.clone()));
        }
        (None, _) => {}
    }
}

/// The demo fleet as real MQTT trackers: `fixgate simulate` in process,
/// publishing fixgate JSON to our own broker, one connection per vehicle.
async fn demo_over_mqtt(demo: Demo, listen: SocketAddr, shutdown: CancellationToken) {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    let options = SimulateOptions {
        target: Target::Mqtt(MqttTarget {
            host,
            port: listen.port(),
            topic: "fleet/demo/device/{device}/fix".into(),
            client_id_prefix: "fixgate-demo-".into(),
            ..MqttTarget::default()
        }),
        devices: demo.vehicles as usize,
        rate_hz: demo.rate_hz,
        center: (demo.center[0], demo.center[1]),
        seed: Some(1),
        prefix: "demo-".into(),
        ..SimulateOptions::default()
    };
    // The server's port is bound before the sources start.
    if let Err(err) = crate::sim::publish::run_until(options, shutdown).await {
        tracing::error!("demo fleet over MQTT stopped: {err:#}");
    }
}

/// Says loudly at start-up when anyone on the network may post positions,
/// and what the feed's port serves to whom.
fn warn_if_open(config: &Config, policy: &crate::access::Policy) {
    if let Broker::Embedded(e) = &config.mqtt.broker {
        warn_if_broker_open(e);
    }
    if config.http.token.is_some() || !config.http.tokens.is_empty() {
        tracing::warn!(
            "http.token and [http.tokens] are deprecated: use [[access.token]] (README \"Access\")"
        );
    }
    if config.feed.listen.ip().is_loopback() {
        return;
    }
    let anonymous = policy.anonymous_scopes();
    if !anonymous.is_empty() {
        tracing::warn!(
            listen = %config.feed.listen,
            scopes = %anonymous,
            "anyone on the network may use these scopes without a token (access.anonymous)"
        );
    } else if policy.tokens() == 0 {
        tracing::warn!(
            listen = %config.feed.listen,
            "no access token is configured and access.anonymous is empty: beyond loopback the feed's port serves only /healthz; add [[access.token]] (fixgate token makes one)"
        );
    }
}

/// The embedded broker's part of [`warn_if_open`]: anonymous clients, what
/// they may read, and logins that may publish for any device, on an
/// address others can reach.
fn warn_if_broker_open(e: &crate::config::Embedded) {
    if e.listen.ip().is_loopback() {
        return;
    }
    if e.logins.is_empty() {
        tracing::warn!(
            listen = %e.listen,
            "the MQTT broker accepts anonymous clients: anyone on the network can publish positions for any device; set [[mqtt.login]] (or [mqtt.users])"
        );
        if !e.anonymous.subscribe.is_empty() {
            tracing::warn!(
                listen = %e.listen,
                filters = ?e.anonymous.subscribe,
                "anonymous MQTT clients may subscribe (mqtt.anonymous_subscribe): anyone on the network can read what is published to these topics"
            );
        }
        return;
    }
    let any: Vec<&str> = e
        .logins
        .iter()
        .filter(|(_, login)| login.scope.publishes_for_any())
        .map(|(user, _)| user.as_str())
        .collect();
    if !any.is_empty() {
        // Names from the configuration, not from clients; still, a long
        // list is cut.
        const SHOWN: usize = 10;
        let more = any.len().saturating_sub(SHOWN);
        tracing::warn!(
            listen = %e.listen,
            logins = ?&any[..any.len().min(SHOWN)],
            more,
            "MQTT logins that may publish for any device: each can spoof every other device's positions; give each device its own [[mqtt.login]] (publish = [\"{{user}}\"] by default), and \"*\" only to a login that needs it"
        );
    }
}

/// What the network intakes share.
struct Intake<'a> {
    /// The way into the pipeline.
    tx: &'a mpsc::Sender<crate::fix::Observed>,
    /// Counts and logs what they refuse.
    rejects: &'a Arc<Rejects>,
    /// Learns devices' groups from where they report.
    groups: &'a Arc<Groups>,
}

/// Starts the MQTT intake the configuration asks for.
fn start_mqtt(
    config: &Config,
    intake: &Intake<'_>,
    pulse: &Arc<Pulse>,
    shutdown: &CancellationToken,
    sources: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let messages = || {
        Messages::new(
            config.mqtt.topics.clone(),
            config.mqtt.max_payload,
            config.gateway.clock,
            config.devices.max_devices,
            intake.rejects.clone(),
            intake.tx.clone(),
        )
        .with_pulse(pulse.clone())
        .with_groups(intake.groups.clone())
    };
    match &config.mqtt.broker {
        Broker::Off => {}
        Broker::Embedded(embedded) => {
            let task = mqtt::embedded::start(
                embedded,
                config.mqtt.max_payload,
                messages(),
                shutdown.clone(),
            )?;
            sources.spawn(task);
        }
        Broker::External(external) => {
            let task = mqtt::external::start(
                external,
                config.gateway.id.as_str(),
                messages(),
                shutdown.clone(),
            )
            .context("cannot set up the MQTT connection")?;
            sources.spawn(task);
        }
    }
    Ok(())
}

/// Histograms in the Prometheus exporter need periodic upkeep when no HTTP
/// listener of its own drives it.
async fn metrics_upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}
