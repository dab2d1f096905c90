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
            clients,
        }
    }
}

/// The feed's routes.
pub fn router(state: FeedState) -> Router {
    Router::new()
        .route("/events", get(sse::events))
        .route("/api/devices", get(devices))
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
    devices: Vec<DeviceState>,
}

async fn devices(State(state): State<FeedState>) -> Response {
    // Read the head first: anything newer than it is also in the snapshot or
    // will be replayed, never missed.
    let seq = *state.head.borrow();
    let reader = state.reader.clone();
    match tokio::task::spawn_blocking(move || reader.devices()).await {
        Ok(Ok(devices)) => Json(Devices { seq, devices }).into_response(),
        Ok(Err(err)) => {
            tracing::error!("device snapshot failed: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, "store read failed\n").into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
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
