//! Batches POSTed over HTTP (axum), one per request: 200 once the batch's
//! lines are written and flushed (or its transaction committed), 400 for a
//! body that is no batch, 413 for one over [`MAX_BATCH_BYTES`], 503 with
//! `Retry-After` when the database could not take it.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::output::Origin;
use super::report;
use super::sink::{Sink, Verdict};
use crate::wire::MAX_BATCH_BYTES;

/// How long a stopping server lets requests in progress finish.
const REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Where to listen.
#[derive(Debug, Clone)]
pub struct HttpSource {
    /// The address; port 0 takes any free port (printed at start).
    pub listen: SocketAddr,
    /// The path batches are POSTed to.
    pub path: String,
}

/// Checks that `path` is a plain absolute path, as the router needs it
/// (no `{parameter}` or `*wildcard`, no empty segment).
pub fn check_path(path: &str) -> Result<(), String> {
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~'));
    if !path.starts_with('/') || !plain || path.contains("//") {
        return Err(format!(
            "{path:?} is not a path like /batches (letters, digits, - _ . ~ between single slashes)"
        ));
    }
    Ok(())
}

/// Serves `POST <path>` until `shutdown`, feeding each body to `sink`.
pub async fn run(
    source: &HttpSource,
    sink: &Sink,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    check_path(&source.path).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(source.listen)
        .await
        .with_context(|| format!("cannot listen on {}", source.listen))?;
    let local = listener.local_addr().context("the listening address")?;
    tracing::info!(%local, path = source.path, "listening");
    report(&json!({ "listening": { "addr": local.to_string(), "path": source.path } }).to_string());
    let app = Router::new()
        .route(&source.path, post(batch))
        .with_state(sink.clone());
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Requests still waiting for the output by then are dropped unanswered
    // (their senders send them again); a stalled output must not hold the
    // stop up for as long as the clients are patient.
    let overdue = async {
        shutdown.cancelled().await;
        tokio::time::sleep(REQUEST_GRACE).await;
    };
    tokio::select! {
        served = server.into_future() => served.context("the HTTP server failed"),
        _ = overdue => Ok(()),
    }
}

async fn batch(
    State(sink): State<Sink>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let origin = Origin::Peer(peer);
    let bytes = match axum::body::to_bytes(body, MAX_BATCH_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let too_long = err
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if !too_long {
                // The client broke off: nobody is left to answer or to count.
                return refusal(StatusCode::BAD_REQUEST, "incomplete request body");
            }
            let why = format!("batch over {MAX_BATCH_BYTES} bytes");
            let response = refusal(StatusCode::PAYLOAD_TOO_LARGE, &why);
            sink.refused(origin, why).await;
            return response;
        }
    };
    let answer = match sink.submit(bytes, origin).await {
        Ok(answer) => answer.await,
        Err(_) => return refusal(StatusCode::SERVICE_UNAVAILABLE, "the output is closed"),
    };
    match answer {
        Ok(Verdict::Written { new, duplicates }) => (
            StatusCode::OK,
            axum::Json(json!({ "new": new, "duplicates": duplicates })),
        )
            .into_response(),
        Ok(Verdict::Refused(why)) => refusal(StatusCode::BAD_REQUEST, &why),
        Ok(Verdict::Unavailable { why, retry_after }) => {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = refusal(StatusCode::SERVICE_UNAVAILABLE, &why);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
            response
        }
        Err(_) => refusal(StatusCode::SERVICE_UNAVAILABLE, "the output is closed"),
    }
}

fn refusal(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({ "error": why }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_are_routes() {
        assert!(check_path("/batches").is_ok());
        assert!(check_path("/v1/fixgate-batches").is_ok());
        for bad in ["batches", "/{id}", "/*rest", "/a//b", "/:id", ""] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
