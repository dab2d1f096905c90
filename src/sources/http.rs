//! HTTP intake on the feed's server: `POST /api/fixes` (fixgate JSON, one fix
//! or an array) and `/osmand` (the OsmAnd protocol Traccar Client and OsmAnd
//! speak, as a query string). Every request is answered only after its
//! fixes are in the pipeline's queue, so a full pipeline slows senders down
//! instead of dropping their fixes. `200 {"accepted": n}` therefore means
//! queued: the writer's filters judge the fixes afterwards and may still
//! drop them (a duplicate, or `too_many_devices`), counted in
//! `fixgate_fixes_dropped_total{source="http"}`. Only the writer knows, fix
//! by fix, which devices are tracked; answering that here would race it.
//!
//! Who may post is decided per device here, from the [`Grant`] the access
//! layer in front put into the request ([`crate::readers::feed::access`]): a request
//! with a fix for a device its grant does not cover is refused whole, `401`
//! (`no_token`, `bad_token`, `malformed_token`) or `403` (`out_of_scope`),
//! and counted for that device.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::Utc;
use tokio::sync::mpsc;

use super::intake::{Rejects, deliver};
use super::payload::{self, Format, Limits, Parsed, PayloadError, Reported};
use crate::access::{self, Denial, Grant, Presented, Scope};
use crate::config::Http;
use crate::fix::{DeviceClass, DeviceId, Observed, Position, SourceKind};
use crate::readers::feed::access::Refused;
use crate::readers::feed::conn::Conn;
use crate::telemetry;
use crate::util::log_limit::{OUTSIDE_CHARS, outside};

/// What the intake handlers share.
#[derive(Clone)]
pub struct HttpIntake {
    /// Weak, so that the server's handlers never keep the writer alive
    /// after shutdown has dropped the daemon's sender.
    tx: mpsc::WeakSender<Observed>,
    rejects: Arc<Rejects>,
    /// For a token in an OsmAnd form body, which the access layer in front
    /// cannot see (it does not read bodies).
    policy: access::Shared,
    limits: Limits,
}

/// Who a request is, as the access layer found it (see
/// [`crate::readers::feed::access`]): a grant, or why its token was refused.
type Access = Result<Grant, Denial>;

impl HttpIntake {
    /// Handlers for `config`, sending to `tx`; tokens are judged by the
    /// access layer in front (with `policy` for tokens in form bodies).
    pub fn new(
        config: &Http,
        tx: &mpsc::Sender<Observed>,
        rejects: Arc<Rejects>,
        policy: access::Shared,
    ) -> Self {
        Self {
            tx: tx.downgrade(),
            rejects,
            policy,
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

    /// The device of one reported fix, named in it or by its token, and
    /// whether the request may post for it.
    fn device_of(&self, named: Option<&str>, who: &Access) -> Result<DeviceId, Refusal> {
        let named = match named {
            Some(name) => name.to_owned(),
            // A device's own (deprecated) token names it.
            None => match who.as_ref().ok().and_then(Grant::own_device) {
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
        let denial = match who {
            Err(denial) => Some(*denial),
            Ok(grant) if grant.may_write_device(&device) => None,
            // Anonymous and not allowed: a token would help.
            Ok(grant) if grant.is_anonymous() => Some(Denial::NoToken),
            // Reserved to its own deprecated token: any other token is the
            // wrong one, as it always was.
            Ok(grant) if grant.is_reserved(&device) => Some(Denial::BadToken),
            Ok(_) => Some(Denial::OutOfScope),
        };
        if let Some(denial) = denial {
            crate::readers::feed::access::count_denial(Scope::Write, denial);
            let status = if denial.unauthorized() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            let detail = match denial {
                Denial::MalformedToken(why) => {
                    format!("request for device {device} refused: malformed token: {why}")
                }
                Denial::OutOfScope => format!(
                    "request for device {device} refused: the token may not post for this device"
                ),
                other => format!("request for device {device} refused: {}", other.reason()),
            };
            return Err(Refusal::new(status, denial.reason(), Some(device), detail));
        }
        Ok(device)
    }

    /// Checks every fix's device first, so a request is taken whole or not at all.
    async fn accept(&self, class: DeviceClass, reported: Vec<Reported>, who: &Access) -> Response {
        let mut batch = Vec::with_capacity(reported.len());
        for r in reported {
            match self.device_of(r.device.as_deref(), who) {
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
        let mut response = (r.status, axum::Json(body)).into_response();
        if r.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"fixgate\""),
            );
        }
        response
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

/// Who the access layer in front says the request is; without that layer
/// (a router assembled without it), nobody.
fn who(grant: Option<Extension<Grant>>, refused: Option<Extension<Refused>>) -> Access {
    match (grant, refused) {
        (Some(Extension(grant)), _) => Ok(grant),
        (None, Some(Extension(Refused(denial)))) => Err(denial),
        (None, None) => Err(Denial::NoToken),
    }
}

async fn fixes(
    State(intake): State<HttpIntake>,
    grant: Option<Extension<Grant>>,
    refused: Option<Extension<Refused>>,
    body: Body,
) -> Response {
    let who = who(grant, refused);
    let bytes = match intake.read_body(body).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    match payload::parse(&bytes, Format::Json, &intake.limits, Utc::now()) {
        Ok(Parsed::Fixes(class, reported)) => intake.accept(class, reported, &who).await,
        Ok(_) => intake.refuse(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unknown_format",
            None,
            "POST /api/fixes takes fixgate JSON".into(),
        )),
        Err(err) => intake.refuse(Refusal::payload(&err)),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "axum extractors: each argument is one thing taken from the request"
)]
async fn osmand(
    State(intake): State<HttpIntake>,
    grant: Option<Extension<Grant>>,
    refused: Option<Extension<Refused>>,
    conn: Option<Extension<Conn>>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let mut who = who(grant, refused);
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
        // A token in the form body: the access layer saw none (it reads no
        // bodies), so the request came through as anonymous.
        if who.as_ref().is_ok_and(Grant::is_anonymous) {
            if let Some(found) = form_token(form) {
                let peer = conn.map(|Extension(c)| c.peer);
                who = match &found {
                    Ok(token) => intake.policy.current().grant(Presented::Token(token), peer),
                    Err(why) => Err(Denial::MalformedToken(why)),
                };
            }
        }
        if !text.is_empty() {
            text.push('&');
        }
        text.push_str(form);
    }
    match payload::parse_osmand(&text, Utc::now()) {
        Ok(Some(reported)) => {
            intake
                .accept(DeviceClass::OsmAnd, vec![reported], &who)
                .await
        }
        // The tracker says it has no fix (`valid=false`): answered as taken,
        // or it would queue and resend the report forever.
        Ok(None) => {
            telemetry::INGEST_IGNORED
                .with(["http", "osmand_invalid"])
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

/// The token of an OsmAnd form body (`token=` or `access_token=`), URL-decoded.
fn form_token(form: &str) -> Option<Result<String, &'static str>> {
    let (_, value) = form
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "access_token" || *k == "token")?;
    Some(
        payload::form_decode(value)
            .map(|v| v.into_owned())
            .map_err(|_| "bad percent-escape in the token parameter"),
    )
}
