//! Request bodies of the intake, read before the handler sees them: a
//! declared length over the limit is refused before a byte of the body is
//! read, the whole body must arrive within a deadline, and all bodies being
//! received at once share one memory budget.
//!
//! A per-read timeout alone would let a client that trickles a byte every
//! few seconds hold a connection and its buffer for ever; so the deadline is
//! for the whole body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::fix::SourceKind;
use crate::sources::intake::Rejects;
use crate::telemetry;

/// Units of the memory budget.
const KIB: usize = 1024;

/// The intake's body rules; cheap to clone.
#[derive(Clone)]
pub struct BodyLimits {
    max: usize,
    timeout: Duration,
    /// KiB of bodies being received at once.
    budget: Arc<Semaphore>,
    rejects: Arc<Rejects>,
}

impl BodyLimits {
    /// Bodies of at most `max` bytes, each read within `timeout`, at most
    /// `budget` bytes of them in memory at once.
    pub fn new(max: usize, timeout: Duration, budget: usize, rejects: Arc<Rejects>) -> Self {
        Self {
            max,
            timeout,
            budget: Arc::new(Semaphore::new((budget / KIB).max(1))),
            rejects,
        }
    }

    fn refuse(&self, status: StatusCode, reason: &'static str, detail: String) -> Response {
        self.rejects.reject(SourceKind::Http, None, reason, &detail);
        let body = serde_json::json!({ "error": reason, "detail": detail });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        }
        response
    }
}

/// The middleware: reads the body whole (or refuses) and hands the handler
/// a request whose body is already in memory.
pub async fn read_whole(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.is_some_and(|n| n > limits.max as u64) {
        return limits.refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized",
            format!(
                "Content-Length {} is over the limit of {} bytes",
                declared.unwrap_or_default(),
                limits.max
            ),
        );
    }
    let expected = match declared {
        Some(n) => usize::try_from(n).unwrap_or(limits.max),
        None if chunked => limits.max,
        // No body at all (a GET, an OsmAnd report in the query).
        None => 0,
    };
    if expected == 0 {
        return next.run(request).await;
    }
    let units = u32::try_from(expected.div_ceil(KIB)).unwrap_or(u32::MAX);
    let Ok(_permit) = limits.budget.clone().try_acquire_many_owned(units) else {
        telemetry::HTTP_REFUSED.with(["body_budget"]).increment(1);
        return limits.refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many request bodies are being received at once; try again".into(),
        );
    };
    let (parts, body) = request.into_parts();
    let bytes =
        match tokio::time::timeout(limits.timeout, axum::body::to_bytes(body, limits.max)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(err)) => {
                let too_long = err
                    .into_inner()
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return if too_long {
                    limits.refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "oversized",
                        format!("request body over {} bytes", limits.max),
                    )
                } else {
                    limits.refuse(
                        StatusCode::BAD_REQUEST,
                        "incomplete",
                        "the request body could not be read to its end".into(),
                    )
                };
            }
            Err(_elapsed) => {
                let mut response = limits.refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        limits.timeout.as_secs()
                    ),
                );
                // The rest of the body may still come: the connection is done.
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                return response;
            }
        };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
