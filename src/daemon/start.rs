//! The start-up phase: open the store, load what can refuse a start (access
//! tokens, TLS keys, the listening ports), then start the writer, the store's
//! own tasks, the uplink, the sources and the feed, in that order, each on
//! the tracker its shutdown stage waits for.

use std::sync::Arc;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Running, Stages, disk, warn};
use crate::config::{Broker, Config, DemoVia};
use crate::daemon::health::Pulses;
use crate::fix::{Observed, SourceKind};
use crate::groups::Groups;
use crate::pipeline::{Checks, Settings, WriterHealth};
use crate::readers::feed::body::BodyLimits;
use crate::readers::feed::{self, FeedOptions, FeedState, server};
use crate::sources::http::HttpIntake;
use crate::sources::intake::Rejects;
use crate::store::budget::{self, Budget};
use crate::store::{OpenReport, Store, StoreOptions, flusher};
use crate::telemetry;

/// Bytes of request bodies being received at once, across all intake
/// requests (at least one `http.max_body`).
const BODY_BUDGET: usize = 16 * 1024 * 1024;

/// What start-up is given.
pub struct Inputs {
    /// The configuration in force.
    pub config: Config,
    /// Its file, re-read on SIGHUP.
    pub config_path: Option<std::path::PathBuf>,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// The writer's side of the channel and its watches, between the steps.
struct Wiring {
    tx: mpsc::Sender<Observed>,
    head: watch::Receiver<u64>,
    durable: watch::Receiver<u64>,
    /// The flusher's, once it starts.
    durable_tx: Option<watch::Sender<u64>>,
    health: Arc<WriterHealth>,
    groups: Arc<Groups>,
}

/// Starts everything; on an error nothing that accepts data has started.
pub async fn start(inputs: Inputs, stages: &Stages) -> anyhow::Result<Running> {
    let Inputs {
        config,
        config_path,
        metrics,
    } = inputs;
    if let Some(handle) = metrics.clone() {
        stages
            .background
            .spawn(metrics_upkeep(handle, stages.shutdown().clone()));
    }
    // First: it takes over SIGHUP, which would otherwise end the process.
    let geofences =
        super::fence_watch::start(config_path.clone(), config.clone(), &stages.background);
    let (store, report) = open_store(&config).await?;
    raise_fd_limit(&config);
    let (access, tls, listener) = prepare_network(&config).await?;
    let gpsd = crate::readers::gpsd::bind(&config.gpsd).await?;
    let (mut wiring, writer) =
        start_writer(&config, &store, report, geofences.clone(), stages).await?;
    let (flusher, reopen) = start_store_tasks(&config, &store, &mut wiring, stages);
    let uplink = crate::readers::uplink::start(
        &config.uplink,
        config.gateway.id.as_str(),
        store.clone(),
        wiring.head.clone(),
        wiring.durable.clone(),
        &stages.background,
    )
    .await
    .context("cannot start the uplink")?;

    let pulses = Arc::new(Pulses::default());
    let context = crate::sources::Context {
        tx: wiring.tx.clone(),
        shutdown: stages.shutdown().clone(),
        clock: config.gateway.clock,
        max_devices: config.devices.max_devices,
        rejects: Arc::new(Rejects::new(config.devices.max_devices)),
        groups: wiring.groups.clone(),
    };
    // The serial receivers' port and line speed, for the gpsd-protocol
    // server's `?DEVICES`.
    let receivers = super::sources::start(&config, &context, &pulses, &stages.intake, &store)?;
    let feed = Feed {
        listener,
        tls,
        access,
        geofences,
        metrics,
        config_path,
    };
    let server = start_feed(&config, feed, (&store, &wiring, &context), stages);
    if let Some(listener) = gpsd {
        let follow = (store.reader(), wiring.head.clone());
        start_gpsd(listener, &config, receivers, follow, stages);
    }
    start_operations(&wiring, pulses, uplink.as_ref(), stages);
    tracing::info!(
        listen = %config.feed.listen,
        sources = stages.intake.len(),
        "fixgate running"
    );
    super::systemd::ready(&format!(
        "running: {} sources, feed on {}",
        stages.intake.len(),
        config.feed.listen
    ));
    Ok(Running {
        tx: wiring.tx,
        writer,
        flusher,
        uplink,
        store,
        head: wiring.head,
        server,
        reopen,
    })
}

/// Starts the gpsd-protocol server on its bound `listener`; `?DEVICES`
/// gives each receiver's speed from `receivers`.
fn start_gpsd(
    listener: tokio::net::TcpListener,
    config: &Config,
    receivers: crate::sources::receivers::Receivers,
    follow: (crate::store::Reader, watch::Receiver<u64>),
    stages: &Stages,
) {
    // The speed a receiver is read at now; a closed port's configured one.
    let bps = move |port: &crate::readers::gpsd::Port| {
        receivers
            .iter()
            .find(|r| r.device() == &port.device)
            .and_then(|r| r.bps())
            .or(port.bps)
    };
    let served = crate::readers::gpsd::served(config).with_bps(Arc::new(bps));
    crate::readers::gpsd::start(listener, config, served, follow, &stages.background);
}

/// What the feed is started with, prepared before anything accepted data.
struct Feed {
    listener: tokio::net::TcpListener,
    tls: Option<Arc<feed::tls::ServerTls>>,
    access: crate::access::Shared,
    geofences: watch::Receiver<Option<Arc<crate::pipeline::geofence::Rules>>>,
    metrics: Option<PrometheusHandle>,
    config_path: Option<std::path::PathBuf>,
}

/// Starts the feed's fan-out, its access watch and the HTTP server; returns
/// the server's task (shutdown waits for it last).
fn start_feed(
    config: &Config,
    feed_parts: Feed,
    (store, wiring, context): (&Store, &Wiring, &crate::sources::Context),
    stages: &Stages,
) -> tokio::task::JoinHandle<()> {
    let Feed {
        listener,
        tls,
        access,
        geofences,
        metrics,
        config_path,
    } = feed_parts;
    let state = FeedState::new(
        store.reader(),
        wiring.head.clone(),
        FeedOptions {
            keepalive: config.feed.keepalive,
            retry: config.feed.retry,
            max_clients: config.feed.max_clients,
            max_snapshots: config.feed.max_snapshots,
        },
        wiring.health.clone(),
        metrics,
        stages.shutdown().clone(),
    )
    .with_geofences(geofences)
    .with_map(&config.map, config.gateway.id.as_str())
    .with_groups(wiring.groups.clone());
    stages.background.spawn(state.fan_out());
    let app = routes(config, state, context, access.clone());
    stages.background.spawn(feed::access::watch(
        config_path,
        config.http.clone(),
        access,
        tls.clone(),
        stages.shutdown().clone(),
    ));
    let limits = server::Limits {
        max_connections: config.feed.max_connections,
        header_timeout: config.feed.header_timeout,
        stall_timeout: config.feed.stall_timeout,
    };
    tokio::spawn(server::serve(
        listener,
        app,
        limits,
        tls,
        stages.shutdown().clone(),
    ))
}

/// Tokens, TLS keys and the port, before anything accepts data: a token
/// that cannot be read, a key that is not its certificate's or a busy port
/// stops the start here, not after fixes were taken in.
async fn prepare_network(
    config: &Config,
) -> anyhow::Result<(
    crate::access::Shared,
    Option<Arc<feed::tls::ServerTls>>,
    tokio::net::TcpListener,
)> {
    let access = crate::access::load(&config.access, &config.http)
        .map_err(|e| anyhow::anyhow!("cannot load the access tokens:\n{e}"))?;
    warn::warn_if_open(config, &access);
    let access = crate::access::Shared::new(access);
    let tls = match &config.feed.tls {
        Some(files) => Some(feed::tls::ServerTls::load(files).context(
            "cannot load the feed's TLS certificate and key (feed.tls_cert, feed.tls_key)",
        )?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.feed.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.feed.listen))?;
    Ok((access, tls, listener))
}

/// Opens the store, saying loudly what it had to do.
async fn open_store(config: &Config) -> anyhow::Result<(Store, OpenReport)> {
    let options = StoreOptions {
        path: config.store.path.clone(),
        cache_bytes: config.store.cache_mb * 1024 * 1024,
        flush_interval: config.store.flush_interval,
    };
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(&options))
        .await?
        .with_context(|| format!("cannot open the store at {}", config.store.path.display()))?;
    if let Some((aside, cause)) = &report.quarantined {
        telemetry::STORE_QUARANTINED.increment(1);
        tracing::error!(
            moved_to = %aside.display(),
            "THE STORE WAS DAMAGED and has been moved aside; starting with an empty store. Cause: {cause}"
        );
    }
    if let Some(problem) = &report.mark_problem {
        telemetry::STORE_MARK_DAMAGED.increment(1);
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
    Ok((store, report))
}

/// Every connection the limits allow must find a file descriptor, with room
/// for the store, the serial ports and the logs: else the limits would not
/// hold and the process would stop accepting anything at all.
fn raise_fd_limit(config: &Config) {
    let mqtt_connections = match &config.mqtt.broker {
        Broker::Embedded(e) => e.max_connections,
        _ => 0,
    };
    crate::util::fd_limit::raise(
        (config.feed.max_connections + server::RESERVED + mqtt_connections + 256) as u64,
        "feed.max_connections and mqtt.max_connections",
    );
}

/// Seeds the writer's checks from the store and starts it on its own thread.
async fn start_writer(
    config: &Config,
    store: &Store,
    mut report: OpenReport,
    geofences: watch::Receiver<Option<Arc<crate::pipeline::geofence::Rules>>>,
    stages: &Stages,
) -> anyhow::Result<(Wiring, super::WriterThread)> {
    // Resuming reads the log's tail from sled: not on a runtime thread.
    let resuming = store.clone();
    let writer = tokio::task::spawn_blocking(move || resuming.writer()).await??;
    tracing::info!(
        path = %config.store.path.display(),
        head = writer.head(),
        created = report.created,
        "store open"
    );
    let (head_tx, head) = watch::channel(writer.head());
    // What was read back at open is on disk already.
    let (durable_tx, durable) = watch::channel(writer.head());
    let (tx, rx) = mpsc::channel(config.pipeline.queue);
    let health = Arc::new(WriterHealth::default());
    let groups = Arc::new(Groups::new(
        config.groups.clone(),
        config.devices.max_devices,
    ));
    groups.seed(report.devices.iter().filter_map(|d| {
        d.reported_group
            .clone()
            .map(|group| (d.device.clone(), group))
    }));
    let settings = Settings {
        filters: config.filter.clone(),
        offline_after: config.devices.offline_after,
        max_devices: config.devices.max_devices,
        trust: config.gateway.clock,
    };
    let checks = Checks::seeded(
        settings,
        store.reader(),
        // Taken, not kept: only the checks need them, once.
        &std::mem::take(&mut report.devices),
        geofences,
    )
    .with_groups(groups.clone());
    let checks = own_configured_devices(config, checks);
    let writer = super::WriterThread::start(
        rx,
        writer,
        checks,
        head_tx,
        (health.clone(), stages.shutdown().clone()),
    )?;
    let wiring = Wiring {
        tx,
        head,
        durable,
        durable_tx: Some(durable_tx),
        health,
        groups,
    };
    Ok((wiring, writer))
}

/// Reserves the names of configured receivers to their own sources.
fn own_configured_devices(config: &Config, mut checks: Checks) -> Checks {
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
    checks
}

/// The store's own tasks: the group commit, the disk budget and the watch
/// for a full disk that has room again (cancels the returned token).
fn start_store_tasks(
    config: &Config,
    store: &Store,
    wiring: &mut Wiring,
    stages: &Stages,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let (durable_tx, _) = watch::channel(0);
    let flusher = tokio::spawn(flusher::run(
        store.clone(),
        config.store.flush_interval,
        wiring.head.clone(),
        wiring.durable_tx.take().unwrap_or(durable_tx),
        stages.shutdown().clone(),
    ));
    let policy = disk::budget_policy(&config.store, &config.uplink);
    stages.background.spawn(budget::run(
        Budget::new(store.clone(), policy),
        disk::BUDGET_INTERVAL,
        wiring.head.clone(),
        stages.shutdown().clone(),
    ));
    let reopen = CancellationToken::new();
    stages.background.spawn(disk::reopen_when_room(
        config.store.path.clone(),
        policy.limits.min_free_bytes,
        wiring.health.clone(),
        reopen.clone(),
        stages.shutdown().clone(),
    ));
    (flusher, reopen)
}

/// The feed's routes with the HTTP intake, behind the access gate.
fn routes(
    config: &Config,
    state: FeedState,
    context: &crate::sources::Context,
    access: crate::access::Shared,
) -> axum::Router {
    let mut app = feed::router(state);
    if config.http.enabled {
        let bodies = BodyLimits::new(
            config.http.max_body,
            config.feed.body_timeout,
            BODY_BUDGET.max(config.http.max_body),
            context.rejects.clone(),
        );
        let intake = HttpIntake::new(
            &config.http,
            &context.tx,
            context.rejects.clone(),
            access.clone(),
        )
        .router()
        .layer(axum::middleware::from_fn_with_state(
            bodies,
            feed::body::read_whole,
        ));
        app = app.merge(intake);
    }
    // In front of every route: CORS, the token, the intake's rate limit.
    app.layer(axum::middleware::from_fn_with_state(
        feed::access::Gate::new(access, &config.http),
        feed::access::guard,
    ))
}

/// The operations around the pipeline: the watchdog fed by its health, and
/// the status line.
fn start_operations(
    wiring: &Wiring,
    pulses: Arc<Pulses>,
    uplink: Option<&crate::readers::uplink::Running>,
    stages: &Stages,
) {
    stages.background.spawn(super::systemd::watchdog(
        wiring.health.clone(),
        pulses,
        stages.shutdown().clone(),
    ));
    stages.background.spawn(super::status::run(
        wiring.health.clone(),
        uplink.map(|u| u.report.clone()),
        stages.shutdown().clone(),
    ));
}

/// Histograms in the Prometheus exporter need periodic upkeep when no HTTP
/// listener of its own drives it.
async fn metrics_upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}
