//! The HTTP server under the feed and the intake: accepts connections,
//! bounds them, and serves each on a task of its own (mini-redis style).
//!
//! axum's own `serve` sets no timeouts and no limit: a client that sends
//! half a request, or opens connections and never uses them, holds a file
//! descriptor for ever, and enough of them stop the whole daemon (`/healthz`
//! and MQTT included) once the process runs out. Here:
//!
//! * each request's headers must arrive within `header_timeout`, which is
//!   also how long a keep-alive connection may idle (hyper starts that timer
//!   whenever it waits for a request);
//! * a socket that takes no byte for `stall_timeout` while a response waits
//!   is closed ([`super::conn::Guarded`]);
//! * at most `max_connections` are served; [`RESERVED`] more are accepted for
//!   `/healthz` and `/metrics` only, so a monitor always gets through, and
//!   past those a connection is closed at once;
//! * on shutdown the listener closes and open connections finish their
//!   request in hand;
//! * with TLS ([`super::tls`]), the handshake happens on the connection's
//!   own task, inside the connection limit, and must end within the header
//!   timeout: a client that opens a connection and never finishes its
//!   handshake holds it no longer than one that never sends its headers.
//!   The stall guard sits under TLS, on the TCP socket itself, so that it
//!   sees when the socket stops taking bytes rather than when rustls's
//!   own buffer of records fills (which can go on taking writes for a while).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::conn::{Conn, Guarded};
use super::tls::ServerTls;
use crate::telemetry;
use crate::util::log_limit::{LogLimit, Verdict};

/// Connections accepted beyond `max_connections` for health checks and
/// metrics scrapes.
pub const RESERVED: usize = 8;
/// Paths served on a reserved connection.
const RESERVED_PATHS: [&str; 2] = ["/healthz", "/metrics"];
/// The header timeout of a reserved connection.
const RESERVED_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Each connection's kernel send buffer (the kernel doubles it).
const SEND_BUFFER: usize = 64 * 1024;
/// The longest request head (request line and headers) served; `431` beyond.
const MAX_HEAD: usize = 64 * 1024;
/// How long open connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// For a request's headers, and between requests.
    pub header_timeout: Duration,
    /// A socket that takes nothing for this long is closed.
    pub stall_timeout: Duration,
}

/// The number of open connections, shared with the ones that end.
#[derive(Debug, Default)]
struct Open(AtomicUsize);

/// Counts one connection for as long as it lives.
struct Counted(Arc<Open>);

impl Counted {
    fn new(open: &Arc<Open>) -> (Self, usize) {
        let now = open.0.fetch_add(1, Ordering::AcqRel) + 1;
        telemetry::HTTP_CONNECTIONS.set(now as f64);
        (Self(open.clone()), now)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let now = self.0.0.fetch_sub(1, Ordering::AcqRel) - 1;
        telemetry::HTTP_CONNECTIONS.set(now as f64);
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets open connections
/// finish for a few seconds.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<ServerTls>>,
    shutdown: CancellationToken,
) {
    let app = app.layer(axum::middleware::from_fn(reserved_only));
    let open = Arc::new(Open::default());
    let graceful = GracefulShutdown::new();
    let mut refusals = LogLimit::new(Duration::from_secs(60), 4);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors, most likely: keep serving the
                // connections we have and try again shortly.
                telemetry::HTTP_ACCEPT_ERRORS.increment(1);
                if let Verdict::Log { suppressed } = refusals.check(&"accept", Instant::now()) {
                    tracing::warn!(suppressed, "HTTP: cannot accept a connection: {err}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (counted, now) = Counted::new(&open);
        if now > limits.max_connections + RESERVED {
            telemetry::HTTP_REFUSED
                .with(["max_connections"])
                .increment(1);
            if let Verdict::Log { suppressed } = refusals.check(&"full", Instant::now()) {
                tracing::warn!(
                    suppressed,
                    max = limits.max_connections,
                    "HTTP: connection limit reached, closing new connections (feed.max_connections)"
                );
            }
            // Dropping the socket closes it.
            continue;
        }
        let reserved = now > limits.max_connections;
        let watcher = graceful.watcher();
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _counted = counted;
            serve_one(tcp, peer, reserved, app, limits, tls, watcher).await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => {
            tracing::warn!("HTTP connections still open {} s after shutdown began", DRAIN.as_secs());
        }
    }
}

/// Serves one socket until the client or a timeout ends it.
#[expect(
    clippy::too_many_arguments,
    reason = "a connection task takes what it owns (socket, peer, router, limits, TLS, watcher) by value"
)]
async fn serve_one(
    tcp: TcpStream,
    peer: SocketAddr,
    reserved: bool,
    app: Router,
    limits: Limits,
    tls: Option<Arc<ServerTls>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    // Events are small writes; Nagle would hold each back for the previous
    // one's ACK and a catching-up client would crawl.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {err}");
    }
    // A fixed send buffer instead of the kernel's autotuning (up to 4 MiB a
    // socket): a client that stops reading then holds little kernel memory
    // and stalls our writes soon, so the stall timeout finds it.
    if let Err(err) = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER) {
        tracing::debug!("cannot set SO_SNDBUF: {err}");
    }
    let (io, state) = Guarded::new(tcp, limits.stall_timeout);
    let conn = Conn {
        peer: peer.ip(),
        reserved,
        state: state.clone(),
    };
    // A reserved place is for one quick request: a flood that takes the
    // reserve holds it only briefly.
    let header_timeout = if reserved {
        limits.header_timeout.min(RESERVED_HEADER_TIMEOUT)
    } else {
        limits.header_timeout
    };
    let ended = match tls {
        None => serve_io(io, conn, app, reserved, header_timeout, watcher).await,
        Some(tls) => match tokio::time::timeout(header_timeout, tls.acceptor().accept(io)).await {
            Ok(Ok(stream)) => serve_io(stream, conn, app, reserved, header_timeout, watcher).await,
            Ok(Err(err)) => {
                telemetry::HTTP_CLOSED.with(["tls_handshake"]).increment(1);
                tracing::debug!(%peer, "TLS handshake failed: {err}");
                return;
            }
            Err(_elapsed) => {
                telemetry::HTTP_CLOSED.with(["tls_timeout"]).increment(1);
                tracing::debug!(%peer, "TLS handshake not done within the header timeout");
                return;
            }
        },
    };
    if state.stalled() {
        telemetry::HTTP_CLOSED.with(["stalled"]).increment(1);
        tracing::debug!(%peer, "HTTP connection closed: the client stopped reading");
    } else if let Err(err) = ended {
        let reason = if err.is_timeout() {
            "header_timeout"
        } else if err.is_parse_too_large() {
            // Answered 431 by hyper.
            "head_too_large"
        } else {
            "error"
        };
        telemetry::HTTP_CLOSED.with([reason]).increment(1);
        tracing::debug!(%peer, "HTTP connection ended: {err}");
    }
}

/// Serves HTTP/1.1 on `io` (plain or TLS) until it ends.
#[expect(
    clippy::too_many_arguments,
    reason = "the same connection's parts, after TLS: moved into the task, not shared"
)]
async fn serve_io<I>(
    io: I,
    conn: Conn,
    app: Router,
    reserved: bool,
    header_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(conn.clone());
        let mut app = app.clone();
        async move { app.call(request.map(Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(!reserved)
        // Longer heads are refused (431) before they cost more. The read
        // buffer's limit alone lets a head through that arrives in one read
        // slightly past it (a 70 KiB head was served); the head's own limit
        // is exact.
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    watcher.watch(connection).await
}

/// Answers everything but health checks and metrics on a reserved
/// connection with `503`.
async fn reserved_only(request: Request, next: Next) -> Response {
    let reserved = request
        .extensions()
        .get::<Conn>()
        .is_some_and(|c| c.reserved);
    if reserved && !RESERVED_PATHS.contains(&request.uri().path()) {
        telemetry::HTTP_REFUSED
            .with(["max_connections"])
            .increment(1);
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; only /healthz and /metrics are served now\n",
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(request).await
}
