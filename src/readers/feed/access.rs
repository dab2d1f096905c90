//! The HTTP side of [`crate::access`]: a middleware in front of every route
//! that answers CORS preflights, takes the request's token (and removes it
//! from the URI), rate-limits the intake per client address, and lets the
//! request through with a [`Grant`] extension, or refuses it: `401` with
//! `WWW-Authenticate: Bearer` for a missing, unknown or malformed token,
//! `403` for a known token without the scope. Each refusal is counted in
//! `fixgate_access_denied_total{scope, reason}` and logged at most once a
//! minute per scope and reason, with the path but never the query or a token.
//!
//! Routes, by the scope they need:
//!
//! * public: `/healthz` (status, store health and head, nothing about
//!   devices), and the depot page `/`, `/index.html`, `/favicon.ico`,
//!   `/assets/…`: the page holds no data; its API calls carry the token;
//! * `read`: `/events`, `/api/devices`, `/api/history` (device data),
//!   `/api/geofences`, `/api/map`, `/tiles/…`, and any path not named here
//!   (so a route added later is not public by mistake);
//! * `write`: `POST /api/fixes`, `/osmand`: the intake decides per device
//!   (it alone knows the devices of a request), so a refused token passes
//!   through as [`Refused`] for the intake to answer and count per device;
//! * `metrics`: `/metrics`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::conn::Conn;
use crate::access::rate::{Buckets, Net, Take};
use crate::access::{self, Denial, Grant, Presented, Scope};
use crate::telemetry::{self, Value};
use crate::util::log_limit::{LogLimit, Verdict};

/// Read routes whose handlers show each device only when
/// [`Grant::may_read_group`] allows it (the feed's filters carry the
/// token's groups). A reader limited to some groups (`read_groups`) is
/// refused (`403`) on any other device-data route, so that a route added
/// later leaks nothing until its handler filters too.
pub const GROUP_FILTERED: &[&str] = &["/events", "/api/devices", "/api/history"];

/// Addresses the rate limiter keeps buckets for at once (about 100 bytes
/// each); beyond, refilled buckets and then the longest idle are forgotten.
const RATE_TABLE: usize = 16_384;
/// The preflight answer may be cached this long by the browser.
const PREFLIGHT_MAX_AGE: &str = "600";
/// Methods and headers a page from an allowed origin may use.
const CORS_METHODS: &str = "GET, POST";
const CORS_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Anyone.
    Public,
    /// The `read` scope; `devices`: the route shows device data.
    Read {
        /// Whether the response holds devices' positions or states.
        devices: bool,
    },
    /// The `write` scope, decided per device by the intake.
    Write,
    /// The `metrics` scope.
    Metrics,
}

impl Route {
    /// The scope a route needs, if any.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Route::Public => None,
            Route::Read { .. } => Some(Scope::Read),
            Route::Write => Some(Scope::Write),
            Route::Metrics => Some(Scope::Metrics),
        }
    }
}

/// The route of `path` (see the module documentation).
pub fn classify(path: &str) -> Route {
    match path {
        "/healthz" | "/" | "/index.html" | "/favicon.ico" => Route::Public,
        _ if path.starts_with("/assets/") => Route::Public,
        "/api/fixes" | "/osmand" => Route::Write,
        "/metrics" => Route::Metrics,
        "/api/geofences" | "/api/map" => Route::Read { devices: false },
        _ if path.starts_with("/tiles/") => Route::Read { devices: false },
        // /events, /api/devices, /api/history, and anything else.
        _ => Route::Read { devices: true },
    }
}

/// A refusal of a write request, for the intake to answer per device (a
/// request extension instead of a [`Grant`]).
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub Denial);

/// The middleware's state; cheap to clone.
#[derive(Clone)]
pub struct Gate {
    policy: access::Shared,
    limiter: Option<Arc<Limiter>>,
    log: Arc<Mutex<LogLimit<(&'static str, &'static str)>>>,
}

/// The intake's rate limit.
struct Limiter {
    buckets: Mutex<Buckets>,
    exempt: Vec<Net>,
}

impl Gate {
    /// Guards with `policy`; the intake limited per address by `http`'s
    /// `rate_limit` and `rate_burst`.
    pub fn new(policy: access::Shared, http: &crate::config::Http) -> Self {
        let limiter = http.rate_limit.map(|rate| {
            Arc::new(Limiter {
                buckets: Mutex::new(Buckets::new(rate, http.rate_burst, RATE_TABLE)),
                exempt: http.rate_limit_exempt.clone(),
            })
        });
        Self {
            policy,
            limiter,
            log: Arc::new(Mutex::new(LogLimit::new(Duration::from_secs(60), 64))),
        }
    }

    fn refuse(
        &self,
        scope: Scope,
        denial: Denial,
        path: &str,
        grant_name: Option<&str>,
    ) -> Response {
        count_denial(scope, denial);
        let verdict = match self.log.lock() {
            Ok(mut log) => log.check(&(scope.as_str(), denial.reason()), Instant::now()),
            Err(_) => Verdict::Quiet,
        };
        if let Verdict::Log { suppressed } = verdict {
            tracing::warn!(
                scope = scope.as_str(),
                reason = denial.reason(),
                token = grant_name.unwrap_or("-"),
                path = %crate::util::log_limit::outside(path, crate::util::log_limit::OUTSIDE_CHARS),
                suppressed,
                "HTTP request refused (at most one line a minute per scope and reason)"
            );
        }
        denial_response(scope, denial, grant_name)
    }

    /// Whether `peer` may send another intake request now.
    fn rate(&self, peer: Option<IpAddr>) -> Result<(), Duration> {
        let (Some(limiter), Some(peer)) = (&self.limiter, peer) else {
            return Ok(());
        };
        if limiter.exempt.iter().any(|n| n.contains(peer)) {
            return Ok(());
        }
        let take = match limiter.buckets.lock() {
            Ok(mut b) => b.take(peer, Instant::now()),
            Err(_) => Take::Allowed,
        };
        match take {
            Take::Allowed => Ok(()),
            Take::Limited(wait) => Err(wait),
        }
    }
}

/// Counts one refusal.
pub fn count_denial(scope: Scope, denial: Denial) {
    telemetry::ACCESS_DENIED
        .with([scope.as_str(), denial.reason()])
        .increment(1);
}

/// What a client is told: the status, `WWW-Authenticate` (RFC 6750) and a
/// JSON body with the reason. Never the token.
pub fn denial_response(scope: Scope, denial: Denial, token: Option<&str>) -> Response {
    let (status, challenge, detail) = match denial {
        Denial::NoToken => (
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"fixgate\"".to_owned(),
            format!(
                "this needs a token with the `{}` scope: send `Authorization: Bearer <token>` (or `?access_token=<token>` where headers cannot be set, as with EventSource)",
                scope.as_str()
            ),
        ),
        Denial::BadToken => (
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"fixgate\", error=\"invalid_token\"".to_owned(),
            "the token is not one this gateway knows".to_owned(),
        ),
        Denial::MalformedToken(why) => (
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"fixgate\", error=\"invalid_token\"".to_owned(),
            format!("malformed token: {why}"),
        ),
        Denial::OutOfScope => (
            StatusCode::FORBIDDEN,
            format!(
                "Bearer realm=\"fixgate\", error=\"insufficient_scope\", scope=\"{}\"",
                scope.as_str()
            ),
            match token {
                Some(name) => format!(
                    "token {name:?} does not allow this (`{}` scope, or its groups or devices)",
                    scope.as_str()
                ),
                None => format!("this needs the `{}` scope", scope.as_str()),
            },
        ),
    };
    let body = serde_json::json!({ "error": denial.reason(), "detail": detail });
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The middleware.
pub async fn guard(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Conn>().map(|c| c.peer);
    let policy = gate.policy.current();
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let allowed_origin = origin
        .as_deref()
        .filter(|o| policy.cors_allows(o))
        .map(str::to_owned);
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(allowed_origin.as_deref());
    }
    let route = classify(request.uri().path());
    let (presented, uri) = credentials(request.headers(), request.uri(), route == Route::Write);
    if let Some(uri) = uri {
        *request.uri_mut() = uri;
    }
    let response = match route.scope() {
        None => next.run(request).await,
        Some(scope) => {
            if route == Route::Write {
                if let Err(wait) = gate.rate(peer) {
                    return rate_limited(wait);
                }
            }
            match policy.grant(presented.as_presented(), peer) {
                Ok(grant) => match admit(&grant, route, request.uri().path()) {
                    Ok(()) => {
                        telemetry::ACCESS_GRANTED
                            .with([
                                Value::from(scope.as_str()),
                                Value::configured(grant.label()),
                            ])
                            .increment(1);
                        request.extensions_mut().insert(grant);
                        next.run(request).await
                    }
                    Err(denial) if route == Route::Write => {
                        request.extensions_mut().insert(Refused(denial));
                        next.run(request).await
                    }
                    Err(denial) => {
                        let path = request.uri().path().to_owned();
                        gate.refuse(scope, denial, &path, grant.token_name())
                    }
                },
                Err(denial) if route == Route::Write => {
                    request.extensions_mut().insert(Refused(denial));
                    next.run(request).await
                }
                Err(denial) => {
                    let path = request.uri().path().to_owned();
                    gate.refuse(scope, denial, &path, None)
                }
            }
        }
    };
    with_cors(response, allowed_origin.as_deref())
}

/// Whether `grant` covers `route` as a whole. Writes are judged per device
/// later; a grant without the scope passes as anonymous would (the intake
/// says `no_token` or `out_of_scope` for each device).
fn admit(grant: &Grant, route: Route, path: &str) -> Result<(), Denial> {
    match route {
        Route::Public => Ok(()),
        Route::Write => Ok(()),
        Route::Metrics => grant.require(Scope::Metrics),
        Route::Read { devices } => {
            grant.require(Scope::Read)?;
            if devices && !grant.reads_all_groups() && !GROUP_FILTERED.contains(&path) {
                return Err(Denial::OutOfScope);
            }
            Ok(())
        }
    }
}

/// A token as found in a request.
enum Found {
    Nothing,
    Token(String),
    Malformed(&'static str),
}

impl Found {
    fn as_presented(&self) -> Presented<'_> {
        match self {
            Found::Nothing => Presented::Nothing,
            Found::Token(t) => Presented::Token(t),
            Found::Malformed(why) => Presented::Malformed(why),
        }
    }
}

/// The request's token, from `Authorization: Bearer`, else `?access_token=`,
/// else (the intake's deprecated form) `?token=`; and the URI without
/// those parameters, when it had any, so that no handler or log sees them.
fn credentials(headers: &HeaderMap, uri: &Uri, intake: bool) -> (Found, Option<Uri>) {
    let secret_key = |k: &str| k == "access_token" || (intake && k == "token");
    let mut from_query = None;
    let mut stripped = None;
    if let Some(query) = uri.query() {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if secret_key(key) {
                // access_token first, whatever the order.
                let better = from_query
                    .as_ref()
                    .is_none_or(|(k, _): &(String, String)| k != "access_token");
                if better {
                    from_query = Some((key.to_owned(), value.to_owned()));
                }
            } else {
                kept.push(pair);
            }
        }
        if from_query.is_some() {
            stripped = Some(rebuild(uri, &kept.join("&")));
        }
    }
    let found = match headers.get(header::AUTHORIZATION) {
        Some(value) => match value.to_str().ok().and_then(|v| v.trim().split_once(' ')) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Found::Token(token.trim().to_owned())
            }
            _ => Found::Malformed("the Authorization header must be `Bearer <token>`"),
        },
        None => match from_query {
            // Clients encode a base64 token's `+`, `/` and `=` in a URL.
            Some((_, value)) => match crate::sources::payload::form_decode(&value) {
                Ok(token) => Found::Token(token.into_owned()),
                Err(_) => Found::Malformed("bad percent-escape in the token parameter"),
            },
            None => Found::Nothing,
        },
    };
    (found, stripped.flatten())
}

/// `uri` with `query` (empty: none).
fn rebuild(uri: &Uri, query: &str) -> Option<Uri> {
    let path_and_query = if query.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{query}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The answer to a CORS preflight: `204` with what the page may use, for
/// an allowed origin; `403` without any CORS header otherwise (counted).
fn preflight(allowed: Option<&str>) -> Response {
    let Some(origin) = allowed else {
        telemetry::HTTP_REFUSED.with(["cors"]).increment(1);
        return (
            StatusCode::FORBIDDEN,
            "this origin is not in access.cors_origins\n",
        )
            .into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(CORS_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// Lets a page from an allowed origin read the response.
fn with_cors(mut response: Response, allowed: Option<&str>) -> Response {
    if let Some(origin) = allowed {
        if let Ok(value) = HeaderValue::from_str(origin) {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Retry-After"),
            );
        }
    }
    response
}

/// `429` with `Retry-After`, counted.
fn rate_limited(wait: Duration) -> Response {
    telemetry::HTTP_REFUSED.with(["rate_limit"]).increment(1);
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let body = serde_json::json!({
        "error": "rate_limit",
        "detail": format!("too many requests from this address (http.rate_limit); try again in {seconds} s"),
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Re-reads on every SIGHUP what the feed's port can change without a
/// restart: the `[access]` section (tokens, their files and credentials,
/// anonymous scopes, CORS origins) and the TLS certificate and key files.
/// Whatever fails to load is refused with a log line, and what is in force
/// stays. The deprecated `[http]` tokens stay as the daemon started with
/// (`running`): the rest of `[http]` needs a restart too.
pub async fn watch(
    config_path: Option<std::path::PathBuf>,
    running: crate::config::Http,
    policy: access::Shared,
    tls: Option<Arc<super::tls::ServerTls>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!("cannot handle SIGHUP: tokens and TLS keys load only at start: {err}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangup.recv() => if got.is_none() { return },
        }
        if let Some(tls) = &tls {
            let tls = tls.clone();
            match tokio::task::spawn_blocking(move || tls.reload().map(|()| tls)).await {
                Ok(Ok(tls)) => {
                    telemetry::TLS_RELOADS.with(["ok"]).increment(1);
                    tracing::info!(
                        cert = %tls.files().cert.display(),
                        "TLS certificate and key reloaded (SIGHUP)"
                    );
                }
                Ok(Err(err)) => {
                    telemetry::TLS_RELOADS.with(["error"]).increment(1);
                    tracing::error!(
                        "TLS certificate and key NOT reloaded; the pair in force stays: {err}"
                    );
                }
                Err(err) => tracing::error!("TLS reload failed: {err}"),
            }
        }
        let Some(path) = config_path.clone() else {
            continue;
        };
        let http = running.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let config = crate::config::load(&path).map_err(|e| e.to_string())?;
            access::load(&config.access, &http).map_err(|e| e.to_string())
        })
        .await;
        match loaded {
            Ok(Ok(new)) => {
                telemetry::ACCESS_RELOADS.with(["ok"]).increment(1);
                tracing::info!(
                    tokens = new.tokens(),
                    anonymous = %new.anonymous_scopes(),
                    "access tokens reloaded (SIGHUP)"
                );
                policy.replace(new);
            }
            Ok(Err(err)) => {
                telemetry::ACCESS_RELOADS.with(["error"]).increment(1);
                tracing::error!("access tokens NOT reloaded; the ones in force stay:\n{err}");
            }
            Err(err) => tracing::error!("access reload failed: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_scopes_the_readme_names_and_unknown_paths_need_read() {
        assert_eq!(classify("/healthz"), Route::Public);
        assert_eq!(classify("/"), Route::Public);
        assert_eq!(classify("/assets/app.js"), Route::Public);
        assert_eq!(classify("/events"), Route::Read { devices: true });
        assert_eq!(classify("/api/devices"), Route::Read { devices: true });
        assert_eq!(classify("/api/history"), Route::Read { devices: true });
        assert_eq!(classify("/api/geofences"), Route::Read { devices: false });
        assert_eq!(classify("/api/map"), Route::Read { devices: false });
        assert_eq!(
            classify("/tiles/depot.pmtiles"),
            Route::Read { devices: false }
        );
        assert_eq!(classify("/api/fixes"), Route::Write);
        assert_eq!(classify("/osmand"), Route::Write);
        assert_eq!(classify("/metrics"), Route::Metrics);
        assert_eq!(
            classify("/api/something-new"),
            Route::Read { devices: true }
        );
        assert_eq!(
            classify("/healthz/../metrics"),
            Route::Read { devices: true }
        );
    }

    fn found(headers: &[(&str, &str)], uri: &str, intake: bool) -> (String, Option<String>) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let uri: Uri = uri.parse().unwrap();
        let (found, stripped) = credentials(&map, &uri, intake);
        let shown = match found {
            Found::Nothing => "nothing".to_owned(),
            Found::Token(t) => format!("token {t}"),
            Found::Malformed(why) => format!("malformed: {why}"),
        };
        (shown, stripped.map(|u| u.to_string()))
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query_and_leave_the_uri() {
        assert_eq!(
            found(&[("authorization", "Bearer abc")], "/events", false),
            ("token abc".into(), None)
        );
        assert_eq!(
            found(&[("authorization", "bearer   abc  ")], "/events", false).0,
            "token abc"
        );
        assert!(
            found(&[("authorization", "Basic dXNlcg==")], "/events", false)
                .0
                .starts_with("malformed")
        );
        assert_eq!(
            found(&[], "/events?last_event_id=5&access_token=a%2Bb", false),
            ("token a+b".into(), Some("/events?last_event_id=5".into()))
        );
        assert_eq!(
            found(&[], "/events?access_token=xyz", false),
            ("token xyz".into(), Some("/events".into()))
        );
        // `token=` is the intake's alone; elsewhere it stays a parameter.
        assert_eq!(
            found(&[], "/events?token=xyz", false),
            ("nothing".into(), None)
        );
        assert_eq!(
            found(&[], "/osmand?id=a&token=t1&lat=1", true),
            ("token t1".into(), Some("/osmand?id=a&lat=1".into()))
        );
        assert_eq!(
            found(&[], "/osmand?token=t1&access_token=t2", true).0,
            "token t2"
        );
        // The header wins; the query's token is still taken out.
        assert_eq!(
            found(
                &[("authorization", "Bearer h")],
                "/events?access_token=q",
                false
            ),
            ("token h".into(), Some("/events".into()))
        );
        assert!(
            found(&[], "/events?access_token=%zz", false)
                .0
                .starts_with("malformed")
        );
    }

    #[test]
    fn a_group_limited_reader_is_kept_off_device_routes_that_do_not_filter_yet() {
        let groups = crate::config::AccessToken {
            name: "buses".into(),
            secret: crate::config::TokenSecret::Hash(access::Digest::of("buses-secret-0123")),
            scopes: access::Scopes::NONE.with(Scope::Read),
            read_groups: Some(vec!["buses".into()]),
            write_devices: None,
        };
        let config = crate::config::Access {
            tokens: vec![groups],
            ..crate::config::Access::default()
        };
        let policy = access::load(&config, &crate::config::Http::default()).unwrap();
        let grant = policy
            .grant(Presented::Token("buses-secret-0123"), None)
            .unwrap();
        for path in ["/events", "/api/devices", "/api/history"] {
            let route = classify(path);
            let expected = if GROUP_FILTERED.contains(&path) {
                Ok(())
            } else {
                Err(Denial::OutOfScope)
            };
            assert_eq!(admit(&grant, route, path), expected, "{path}");
        }
        assert_eq!(
            admit(&grant, classify("/api/geofences"), "/api/geofences"),
            Ok(())
        );
        assert_eq!(
            admit(&grant, classify("/metrics"), "/metrics"),
            Err(Denial::OutOfScope)
        );
    }

    #[test]
    fn a_refusal_says_why_and_challenges_for_a_bearer_token() {
        let r = denial_response(Scope::Read, Denial::NoToken, None);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"fixgate\""
        );
        let r = denial_response(Scope::Write, Denial::OutOfScope, Some("screen"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("insufficient_scope")
        );
        let r = rate_limited(Duration::from_millis(1500));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
