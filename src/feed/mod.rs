//! The local HTTP feed for depot screens: SSE, a snapshot, health and metrics.
//!
//! Every handler is a reader of the store; none of them touches the pipeline.

pub mod sse;

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
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::fix::FenceId;
use crate::geofence::{Rules, Zones};
use crate::pipeline::WriterHealth;
use crate::store::{DeviceState, Reader};

/// Tunables of the feed.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Interval of SSE keepalive comments (proxies and NAT drop idle connections).
    pub keepalive: Duration,
    /// The reconnect delay suggested to browsers (`retry:`).
    pub retry: Duration,
    /// Concurrent SSE clients allowed.
    pub max_clients: usize,
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
    clients: Arc<Semaphore>,
}

impl FeedState {
    /// Shared state for the router.
    pub fn new(
        reader: Reader,
        head: watch::Receiver<u64>,
        options: FeedOptions,
        health: Arc<WriterHealth>,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Self {
        let clients = Arc::new(Semaphore::new(options.max_clients));
        Self {
            reader,
            head,
            options,
            health,
            metrics,
            shutdown,
            geofences: watch::channel(None).1,
            clients,
        }
    }

    /// Serves the fences and the devices' zones from these rules.
    pub fn with_geofences(mut self, rules: watch::Receiver<Option<Arc<Rules>>>) -> Self {
        self.geofences = rules;
        self
    }
}

/// The feed's routes.
pub fn router(state: FeedState) -> Router {
    Router::new()
        .route("/events", get(sse::events))
        .route("/api/devices", get(devices))
        .route("/api/geofences", get(geofences))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// `GET /api/devices` body: the head sequence number (connect to
/// `/events?last_event_id=<seq>` to continue from this snapshot without a
/// gap) and the last known state of every device.
#[derive(Debug, Serialize)]
struct Devices {
    seq: u64,
    devices: Vec<Device>,
}

/// A device in the snapshot: its state and the fences it is in now.
#[derive(Debug, Serialize)]
struct Device {
    #[serde(flatten)]
    state: DeviceState,
    zones: Vec<Zone>,
}

/// A fence a device is in.
#[derive(Debug, Serialize)]
struct Zone {
    id: FenceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// When the device came in.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::fix::time_ms::serialize_opt"
    )]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// A device's zones from its stored geofence state, among the fences in
/// force (a removed fence leaves a device's stored state only at its next
/// fix, which may be long in coming), named from them.
fn zones(state: &DeviceState, rules: Option<&Rules>) -> Vec<Zone> {
    let (Some(zones), Some(rules)) = (
        state.zones.as_deref().and_then(|b| Zones::decode(b).ok()),
        rules,
    ) else {
        return Vec::new();
    };
    zones
        .inside()
        .filter_map(|(id, since)| {
            let fence = rules.fences.get(id)?;
            Some(Zone {
                id: id.clone(),
                name: fence.name.clone(),
                since,
            })
        })
        .collect()
}

async fn devices(State(state): State<FeedState>) -> Response {
    // Read the head first: anything newer than it is also in the snapshot or
    // will be replayed, never missed.
    let seq = *state.head.borrow();
    let reader = state.reader.clone();
    match tokio::task::spawn_blocking(move || reader.devices()).await {
        Ok(Ok(devices)) => {
            let rules = state.geofences.borrow().clone();
            let devices = devices
                .into_iter()
                .map(|state| Device {
                    zones: zones(&state, rules.as_deref()),
                    state,
                })
                .collect();
            Json(Devices { seq, devices }).into_response()
        }
        Ok(Err(err)) => {
            tracing::error!("device snapshot failed: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, "store read failed\n").into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /api/geofences`: the fences in force as a GeoJSON FeatureCollection.
async fn geofences(State(state): State<FeedState>) -> Response {
    let rules = state.geofences.borrow().clone();
    match rules {
        Some(rules) => Json(crate::geofence::geojson_out::feature_collection(
            &rules.fences,
        ))
        .into_response(),
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
