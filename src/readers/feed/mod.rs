//! The local HTTP feed for depot screens: SSE, a snapshot, health and
//! metrics, and the depot screen itself ([`assets`]).
//!
//! Every handler is a reader of the store; none of them touches the pipeline.

pub mod access;
pub mod assets;
pub mod body;
pub mod clients;
pub mod coalesce;
pub mod conn;
pub mod filter;
pub mod history;
pub mod map;
pub mod ring;
pub mod server;
pub mod snapshot;
pub mod sse;
#[cfg(test)]
mod sse_tests;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::groups::Groups;
use crate::pipeline::WriterHealth;
use crate::pipeline::geofence::Rules;
use crate::store::Reader;
use crate::telemetry;
use clients::Clients;
use snapshot::{Snapshots, permitted_body};

/// Tunables of the feed.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Interval of SSE keepalive comments (proxies and NAT drop idle connections).
    pub keepalive: Duration,
    /// The reconnect delay suggested to browsers (`retry:`).
    pub retry: Duration,
    /// Concurrent SSE clients allowed.
    pub max_clients: usize,
    /// Snapshot responses held at once (see [`snapshot`]).
    pub max_snapshots: usize,
}

/// What every handler shares.
#[derive(Clone)]
pub struct FeedState {
    /// Reads events and device states.
    pub reader: Reader,
    /// The newest sequence number appended; changes wake SSE clients.
    pub head: watch::Receiver<u64>,
    /// Tunables.
    pub options: FeedOptions,
    /// Health of the single writer.
    pub health: Arc<WriterHealth>,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Ends SSE streams so that a graceful shutdown completes.
    pub shutdown: CancellationToken,
    /// The geofence rules in force (`None` until a set has loaded).
    pub geofences: watch::Receiver<Option<Arc<Rules>>>,
    clients: Arc<Clients>,
    snapshots: Snapshots,
    /// Store scans for `/api/history` allowed at once.
    history: Arc<tokio::sync::Semaphore>,
    /// What the depot screen draws under the vehicles.
    map: Arc<map::MapInfo>,
    /// Devices' groups, for filters.
    groups: Arc<Groups>,
    /// Recent events, encoded once for every live client.
    ring: Arc<ring::Ring>,
}

impl FeedState {
    /// Shared state for the router.
    #[expect(
        clippy::too_many_arguments,
        reason = "the feed's shared state is built once from the daemon's parts, each a different type"
    )]
    pub fn new(
        reader: Reader,
        head: watch::Receiver<u64>,
        options: FeedOptions,
        health: Arc<WriterHealth>,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Self {
        let clients = Arc::new(Clients::new(options.max_clients));
        let ring = ring::Ring::new(*head.borrow());
        let geofences = watch::channel(None).1;
        let snapshots = Snapshots::new(
            reader.clone(),
            head.clone(),
            geofences.clone(),
            options.max_snapshots,
        );
        Self {
            reader,
            head,
            options,
            health,
            metrics,
            shutdown,
            geofences,
            clients,
            snapshots,
            history: history::permits(),
            map: map::info(&crate::config::Map::default(), "fixgate"),
            groups: Arc::new(Groups::default()),
            ring,
        }
    }

    /// Knows devices' groups from `groups`.
    pub fn with_groups(mut self, groups: Arc<Groups>) -> Self {
        self.groups = groups;
        self
    }

    /// The task that fills the shared ring of recent events from the store
    /// (spawn it once; it ends at shutdown).
    pub fn fan_out(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        ring::fill(
            self.ring.clone(),
            self.reader.clone(),
            self.groups.clone(),
            self.head.clone(),
            self.shutdown.clone(),
        )
    }

    /// A request's filter, checked against what the feed knows: a group
    /// that is neither configured nor seen names nothing.
    pub fn filter(
        &self,
        query: &filter::FilterQuery,
        grant: Option<&crate::access::Grant>,
    ) -> Result<filter::Filter, String> {
        let mut parsed = filter::parse(query)?;
        parsed.read_groups = grant.and_then(|g| g.read_groups()).map(Arc::from);
        if let Some(group) = &parsed.group {
            if !self.groups.knows(group) {
                return Err(format!(
                    "`group`: no group is named {group} (configured or seen on a topic)"
                ));
            }
        }
        Ok(parsed)
    }

    /// Serves `/api/map` and the tile archive from these settings.
    pub fn with_map(mut self, config: &crate::config::Map, gateway: &str) -> Self {
        self.map = map::info(config, gateway);
        self
    }

    /// Serves the fences and the devices' zones from these rules.
    pub fn with_geofences(mut self, rules: watch::Receiver<Option<Arc<Rules>>>) -> Self {
        self.snapshots = Snapshots::new(
            self.reader.clone(),
            self.head.clone(),
            rules.clone(),
            self.options.max_snapshots,
        );
        self.geofences = rules;
        self
    }
}

/// The feed's routes.
pub fn router(state: FeedState) -> Router {
    let page = assets::PageOptions {
        tile_origin: state.map.tile_origin(),
    };
    Router::new()
        .route("/events", get(sse::events))
        .route("/api/devices", get(devices))
        .route("/api/geofences", get(geofences))
        .route("/api/history", get(history::history))
        .route("/api/map", get(map::map))
        .route("/tiles/{name}", get(map::tiles))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        // The depot screen. An online tile URL's origin (the `[map]`
        // section) goes into `PageOptions` so the page's CSP lets its
        // images in.
        .merge(assets::routes(page))
        .with_state(state)
}

/// `503` for a snapshot request beyond `feed.max_snapshots`.
fn busy() -> Response {
    telemetry::HTTP_REFUSED.with(["busy"]).increment(1);
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        "too many snapshot requests at once; try again\n",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// `GET /api/devices`: `{"seq": head, "devices": [...]}` — connect to
/// `/events?last_event_id=<seq>` to continue from this snapshot without a
/// gap. One shared snapshot per head (see [`snapshot`]).
async fn devices(
    State(state): State<FeedState>,
    grant: Option<axum::Extension<crate::access::Grant>>,
    axum::extract::Query(query): axum::extract::Query<filter::FilterQuery>,
) -> Response {
    if query.types.is_some() || query.max_rate.is_some() {
        return sse::bad_request(
            "bad_filter",
            "`types` and `max_rate` apply to /events only".into(),
        );
    }
    let filter = match state.filter(&query, grant.as_deref()) {
        Ok(filter) => filter,
        Err(why) => return sse::bad_request("bad_filter", why),
    };
    let Some(permit) = state.snapshots.try_permit() else {
        return busy();
    };
    let snapshot = match state.snapshots.get().await {
        Ok(snapshot) => snapshot,
        Err(err) => {
            tracing::error!("device snapshot failed: {err}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "store read failed\n").into_response();
        }
    };
    let groups = state.groups.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        if filter.is_open() {
            return snapshot.json(&groups);
        }
        snapshot.json_filtered(&groups, |device, group| {
            let point = device.fix.as_ref().map(|f| (f.lon, f.lat));
            filter.passes(filter::Facts {
                kind: filter::Kind::Position,
                device: &device.device,
                group,
                point,
            })
        })
    })
    .await;
    let Ok(json) = encoded else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        permitted_body(json, permit),
    )
        .into_response()
}

/// `GET /api/geofences`: the fences in force as a GeoJSON FeatureCollection.
async fn geofences(State(state): State<FeedState>) -> Response {
    let Some(permit) = state.snapshots.try_permit() else {
        return busy();
    };
    let rules = state.geofences.borrow().clone();
    match rules {
        Some(rules) => {
            let collection =
                crate::pipeline::geofence::geojson_out::feature_collection(&rules.fences);
            let json = serde_json::to_vec(&collection).unwrap_or_default();
            (
                [(header::CONTENT_TYPE, "application/json")],
                permitted_body(json.into(), permit),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no geofences are loaded: the log says why\n",
        )
            .into_response(),
    }
}

async fn healthz(State(state): State<FeedState>) -> Response {
    let failing = state.health.store_failing.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "status": if failing { "degraded" } else { "ok" },
        "store": if failing { "failing" } else { "ok" },
        "head": *state.head.borrow(),
    });
    let code = if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

async fn metrics_text(State(state): State<FeedState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}
