//! `--metrics ADDR`: `GET /metrics` (Prometheus text) and `GET /healthz`
//! (200 when the database answered the last check, 503 otherwise).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::report;

/// How often the database is asked `SELECT 1`.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long it has to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the database answered the last check.
pub type Health = Arc<AtomicBool>;

/// Asks the database every [`CHECK_EVERY`] until `shutdown`.
pub async fn check(pool: Pool, health: Health, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let ask = async {
            let client = pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        let up = matches!(tokio::time::timeout(CHECK_TIMEOUT, ask).await, Ok(Some(_)));
        health.store(up, Ordering::Relaxed);
        metrics::gauge!("fixgate_receive_db_up").set(if up { 1.0 } else { 0.0 });
    }
}

/// Binds `addr` and serves until `shutdown`; the bound address goes to
/// stderr as `{"listening_metrics":"ADDR"}`.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--metrics)"))?;
    let local = listener.local_addr().context("the metrics address")?;
    report(&json!({ "listening_metrics": local.to_string() }).to_string());
    let upkeep = handle.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = upkeep.clone();
                async move {
                    handle.run_upkeep();
                    handle.render()
                }
            }),
        )
        .route("/healthz", get(healthz))
        .with_state(health);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::error!("the metrics server failed: {err}");
        }
    });
    Ok(())
}

async fn healthz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
    }
}
