//! HTTP intake on the feed's server: `POST /api/fixes` (fixgate JSON, one fix
//! or an array) and `/osmand` (the OsmAnd protocol Traccar Client and OsmAnd
//! speak, as a query string). Every request is answered only after its
//! fixes are in the pipeline's queue, so a full pipeline slows senders down
//! instead of dropping their fixes. `200 {"accepted": n}` therefore means
//! queued: the writer's filters judge the fixes afterwards and may still
//! drop them (a duplicate, or `too_many_devices`), counted in
//! `fixgate_fixes_dropped_total{source="http"}`. Only the writer knows, fix
//! by fix, which devices are tracked; answering that here would race it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use tokio::sync::mpsc;

use super::intake::{Rejects, deliver, same_secret};
use super::payload::{self, Format, Limits, Parsed, PayloadError, Reported};
use crate::config::Http;
use crate::fix::{DeviceClass, DeviceId, Observed, Position, SourceKind};
use crate::log_limit::{OUTSIDE_CHARS, outside};

/// What the intake handlers share.
#[derive(Clone)]
pub struct HttpIntake {
    /// Weak, so that the server's handlers never keep the writer alive
    /// after shutdown has dropped the daemon's sender.
    tx: mpsc::WeakSender<Observed>,
    rejects: Arc<Rejects>,
    shared_token: Option<Arc<str>>,
    tokens: Arc<BTreeMap<DeviceId, String>>,
    limits: Limits,
}

impl HttpIntake {
    /// Handlers for `config`, sending to `tx`.
    pub fn new(config: &Http, tx: &mpsc::Sender<Observed>, rejects: Arc<Rejects>) -> Self {
        Self {
            tx: tx.downgrade(),
            rejects,
            shared_token: config.token.as_deref().map(Arc::from),
            tokens: Arc::new(config.tokens.clone()),
            limits: Limits {
                max_bytes: config.max_body,
                ..Limits::default()
            },
        }
    }

    /// The intake routes, to merge into the feed's router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/api/fixes", post(fixes))
            .route("/osmand", get(osmand).post(osmand))
            .with_state(self)
    }

    /// Who may send for `device`: its own token if it has one, else the
    /// shared token if one is set, else anyone.
    fn authorise(&self, device: &DeviceId, token: Option<&str>) -> Result<(), &'static str> {
        let expected = match self.tokens.get(device) {
            Some(own) => Some(own.as_str()),
            None => self.shared_token.as_deref(),
        };
        match (expected, token) {
            (None, _) => Ok(()),
            (Some(_), None) => Err("no_token"),
            (Some(want), Some(got)) if same_secret(want.as_bytes(), got.as_bytes()) => Ok(()),
            (Some(_), Some(_)) => Err("bad_token"),
        }
    }

    /// The device of one reported fix, named in it or by its token.
    fn device_of(&self, named: Option<&str>, token: Option<&str>) -> Result<DeviceId, Refusal> {
        let named = match named {
            Some(name) => name.to_owned(),
            // A device's own token names it.
            None => match token.and_then(|t| self.device_with_token(t)) {
                Some(device) => device.to_string(),
                None => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "missing_field",
                        None,
                        "no `device` given, and the token names no device".into(),
                    ));
                }
            },
        };
        let device = DeviceId::new(&named).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "device_id",
                None,
                format!(
                    "device {:?} is not a valid id: {e}",
                    outside(&named, OUTSIDE_CHARS)
                ),
            )
        })?;
        self.authorise(&device, token).map_err(|reason| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                reason,
                Some(device.clone()),
                format!("request for device {device} refused: {reason}"),
            )
        })?;
        Ok(device)
    }

    fn device_with_token(&self, token: &str) -> Option<&DeviceId> {
        self.tokens
            .iter()
            .find(|(_, t)| same_secret(t.as_bytes(), token.as_bytes()))
            .map(|(d, _)| d)
    }

    /// Checks every fix's device first, so a request is taken whole or not at all.
    async fn accept(
        &self,
        class: DeviceClass,
        reported: Vec<Reported>,
        token: Option<&str>,
    ) -> Response {
        let mut batch = Vec::with_capacity(reported.len());
        for r in reported {
            match self.device_of(r.device.as_deref(), token) {
                Ok(device) => batch.push((device, r.fix)),
                Err(refusal) => return self.refuse(refusal),
            }
        }
        let n = batch.len();
        let Some(tx) = self.tx.upgrade() else {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
        };
        // Room for the whole request first, so that a client that hangs up
        // while the queue is full leaves nothing half stored behind.
        if n <= tx.max_capacity() {
            let Ok(permits) = tx.reserve_many(n).await else {
                return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
            };
            for (permit, (device, fix)) in permits.zip(batch) {
                permit.send(Observed {
                    source: SourceKind::Http,
                    class,
                    position: Position::new(device, fix),
                });
            }
        } else {
            for (device, fix) in batch {
                if deliver(&tx, SourceKind::Http, class, &device, [fix])
                    .await
                    .is_err()
                {
                    return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
                }
            }
        }
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "accepted": n })),
        )
            .into_response()
    }

    /// The request body, or the refusal to answer: `oversized` past
    /// `http.max_body`, `incomplete` when the client broke off.
    async fn read_body(&self, body: Body) -> Result<axum::body::Bytes, Response> {
        let max = self.limits.max_bytes;
        axum::body::to_bytes(body, max).await.map_err(|err| {
            let too_long = err
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let refusal = if too_long {
                Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "oversized",
                    None,
                    format!("request body over {max} bytes"),
                )
            } else {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "incomplete",
                    None,
                    "the request body could not be read to its end".into(),
                )
            };
            self.refuse(refusal)
        })
    }

    fn refuse(&self, r: Refusal) -> Response {
        let device = r.device.as_ref().map(DeviceId::as_str);
        self.rejects
            .reject(SourceKind::Http, device, r.reason, &r.detail);
        let body = serde_json::json!({ "error": r.reason, "detail": r.detail });
        (r.status, axum::Json(body)).into_response()
    }
}

/// A refused request: its status, the counted reason and the message.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    device: Option<DeviceId>,
    detail: String,
}

impl Refusal {
    fn new(
        status: StatusCode,
        reason: &'static str,
        device: Option<DeviceId>,
        detail: String,
    ) -> Self {
        Self {
            status,
            reason,
            device,
            detail,
        }
    }

    fn payload(err: &PayloadError) -> Self {
        let status = match err.reason() {
            "oversized" => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, err.reason(), None, err.to_string())
    }
}

async fn fixes(
    State(intake): State<HttpIntake>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token = token(&headers, query.as_deref());
    let bytes = match intake.read_body(body).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    match payload::parse(&bytes, Format::Json, &intake.limits, Utc::now()) {
        Ok(Parsed::Fixes(class, reported)) => {
            intake.accept(class, reported, token.as_deref()).await
        }
        Ok(_) => intake.refuse(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unknown_format",
            None,
            "POST /api/fixes takes fixgate JSON".into(),
        )),
        Err(err) => intake.refuse(Refusal::payload(&err)),
    }
}

async fn osmand(
    State(intake): State<HttpIntake>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Traccar Client sends the fields in the query; some senders post them
    // as a form body instead.
    let mut text = query.unwrap_or_default();
    let bytes = match intake.read_body(body).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    if !bytes.is_empty() {
        let Ok(form) = std::str::from_utf8(&bytes) else {
            return intake.refuse(Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                None,
                "the form body is not UTF-8".into(),
            ));
        };
        if !text.is_empty() {
            text.push('&');
        }
        text.push_str(form);
    }
    let token = token(&headers, Some(&text));
    match payload::parse_osmand(&text, Utc::now()) {
        Ok(Some(reported)) => {
            intake
                .accept(DeviceClass::OsmAnd, vec![reported], token.as_deref())
                .await
        }
        // The tracker says it has no fix (`valid=false`): answered as taken,
        // or it would queue and resend the report forever.
        Ok(None) => {
            metrics::counter!("fixgate_ingest_ignored_total", "source" => "http", "kind" => "osmand_invalid")
                .increment(1);
            (
                StatusCode::OK,
                axum::Json(serde_json::json!({ "accepted": 0 })),
            )
                .into_response()
        }
        Err(err) => intake.refuse(Refusal::payload(&err)),
    }
}

/// The token from `Authorization: Bearer …`, else from `token=` in the query.
fn token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        // The scheme name is case-insensitive (RFC 9110).
        if let Some((scheme, t)) = value.to_str().ok().and_then(|v| v.split_once(' ')) {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(t.trim().to_owned());
            }
        }
    }
    // Clients encode a base64 token's `+`, `/` and `=` in a URL.
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .and_then(|(_, v)| payload::form_decode(v).ok())
        .map(|v| v.into_owned())
}
