//! Who may read and write, through real sockets: tokens and their scopes,
//! 401 against 403, `?access_token=` on a real SSE stream, anonymous access
//! on loopback and from a test host of our own (a network namespace),
//! CORS preflights, TLS with a CA the test makes (and a SIGHUP reload of the
//! pair), the intake's rate limit, and a huge header.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Daemon, SseClient};

const WAIT: Duration = Duration::from_secs(15);
const SCREEN: &str = "screen-token-0123456789";
const BUSES: &str = "buses-token-from-a-file-0123";
const PROMETHEUS: &str = "prometheus-token-0123456789";

/// One request: the status, the headers (lower-case names) and the body.
fn call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let agent = common::http_agent(Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{port}{path}");
    let result = match method {
        "POST" => {
            let mut req = agent.post(&url).header("Content-Type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body)
        }
        "OPTIONS" => {
            let mut req = agent.options(&url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
        _ => {
            let mut req = agent.get(&url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
    };
    let mut response = result.expect("request");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, headers, text)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The `sha256:` line of a token, as `fixgate token --hash-of` prints it.
fn hash_of(token: &str) -> String {
    fixgate::access::Digest::of(token).to_string()
}

fn write_secret(path: &Path, token: &str) {
    std::fs::write(path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A daemon whose loopback clients are anonymous only for `/metrics` (so
/// the test's scrapes work), with a read token, a write token for `bus-*`
/// read from a file, and a metrics token.
fn start_with_tokens(dir: &Path, extra: &str) -> Daemon {
    let buses = dir.join("buses.token");
    write_secret(&buses, BUSES);
    Daemon::start(
        dir,
        &format!(
            r#"[access]
anonymous_loopback = ["metrics"]
[[access.token]]
name = "screen"
hash = "{screen}"
scopes = ["read"]
[[access.token]]
name = "buses"
file = "{buses}"
scopes = ["write"]
write_devices = ["bus-*"]
[[access.token]]
name = "prometheus"
hash = "{prometheus}"
scopes = ["metrics"]
{extra}"#,
            screen = hash_of(SCREEN),
            prometheus = hash_of(PROMETHEUS),
            buses = buses.display(),
        ),
    )
}

#[test]
fn every_scope_grants_its_routes_alone_unknown_tokens_get_401_and_known_ones_403() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with_tokens(dir.path(), "");
    let port = daemon.port;
    let screen = bearer(SCREEN);
    let buses = bearer(BUSES);
    let prometheus = bearer(PROMETHEUS);

    // Public, with nothing about devices.
    let (status, _, body) = call(port, "GET", "/healthz", &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("bus-"), "{body}");

    // read: the snapshot, the fences (503 until some load, but let through).
    let (status, headers, body) = call(port, "GET", "/api/devices", &[], "");
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some("Bearer realm=\"fixgate\"")
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error"], "no_token");
    let (status, headers, body) = call(
        port,
        "GET",
        "/api/devices",
        &[("Authorization", "Bearer not-a-token-we-know")],
        "",
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        header(&headers, "www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let (status, _, body) = call(
        port,
        "GET",
        "/api/devices",
        &[("Authorization", "Basic c2NyZWVuOnRva2Vu")],
        "",
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("malformed_token") && body.contains("Bearer <token>"),
        "{body}"
    );
    let (status, headers, body) = call(
        port,
        "GET",
        "/api/devices",
        &[("Authorization", &buses)],
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        header(&headers, "www-authenticate")
            .unwrap()
            .contains("insufficient_scope")
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"buses\""),
        "the token's name, never its secret: {detail}"
    );
    let (status, _, body) = call(
        port,
        "GET",
        "/api/devices",
        &[("Authorization", &screen)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        call(
            port,
            "GET",
            "/api/geofences",
            &[("Authorization", &screen)],
            ""
        )
        .0,
        401
    );
    assert_eq!(call(port, "GET", "/api/geofences", &[], "").0, 401);
    assert_eq!(
        call(port, "GET", "/api/map", &[("Authorization", &screen)], "").0,
        200
    );

    // metrics
    assert_eq!(
        call(port, "GET", "/metrics", &[("Authorization", &screen)], "").0,
        403
    );
    assert_eq!(
        call(
            port,
            "GET",
            "/metrics",
            &[("Authorization", &prometheus)],
            ""
        )
        .0,
        200
    );

    // write, per device: bus-* only; a request with one fix out of scope is
    // refused whole.
    let now = Utc::now().timestamp_millis();
    let fix = |device: &str, lat: f64| {
        format!(r#"{{"device":"{device}","time":{now},"lat":{lat},"lon":5.1}}"#)
    };
    let feed = SseClient::connect(port, &format!("?access_token={SCREEN}"), None);
    assert_eq!(feed.status, 200);
    let (status, _, body) = call(
        port,
        "POST",
        "/api/fixes",
        &[("Authorization", &buses)],
        &fix("bus-1", 52.1),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        port,
        "POST",
        "/api/fixes",
        &[("Authorization", &buses)],
        &fix("tram-1", 52.1),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("out_of_scope"), "{body}");
    let both = format!("[{},{}]", fix("bus-2", 52.2), fix("tram-2", 52.2));
    assert_eq!(
        call(
            port,
            "POST",
            "/api/fixes",
            &[("Authorization", &buses)],
            &both
        )
        .0,
        403
    );
    assert_eq!(
        call(
            port,
            "POST",
            "/api/fixes",
            &[("Authorization", &screen)],
            &fix("bus-3", 52.3)
        )
        .0,
        403
    );
    assert_eq!(
        call(port, "POST", "/api/fixes", &[], &fix("bus-3", 52.3)).0,
        401
    );
    assert_eq!(
        call(
            port,
            "POST",
            "/api/fixes",
            &[("Authorization", "Bearer nope-nope-nope")],
            &fix("bus-3", 52.3)
        )
        .0,
        401
    );
    // The EventSource-style client saw bus-1 alone.
    let got = feed.take("position", 1, WAIT);
    assert_eq!(got[0].json()["device"], "bus-1");
    assert!(
        feed.next_event(Duration::from_millis(500))
            .is_none_or(|e| e.event.as_deref() != Some("position"))
    );
    let devices: serde_json::Value = serde_json::from_str(
        &call(
            port,
            "GET",
            "/api/devices",
            &[("Authorization", &screen)],
            "",
        )
        .2,
    )
    .unwrap();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
    // A query token works on every read route, not only /events.
    assert_eq!(
        call(
            port,
            "GET",
            &format!("/api/devices?access_token={SCREEN}"),
            &[],
            ""
        )
        .0,
        200
    );

    // Counted by scope and reason.
    for (scope, reason, at_least) in [
        ("read", "no_token", 2.0),
        ("read", "bad_token", 1.0),
        ("read", "malformed_token", 1.0),
        ("read", "out_of_scope", 1.0),
        ("metrics", "out_of_scope", 1.0),
        ("write", "out_of_scope", 3.0),
        ("write", "no_token", 1.0),
        ("write", "bad_token", 1.0),
    ] {
        let n = daemon.metric_with(
            "fixgate_access_denied_total",
            &[("scope", scope), ("reason", reason)],
        );
        assert!(n.is_some_and(|n| n >= at_least), "{scope} {reason}: {n:?}");
    }
    assert!(
        daemon
            .metric_with(
                "fixgate_access_granted_total",
                &[("token", "screen"), ("scope", "read")]
            )
            .is_some_and(|n| n >= 3.0)
    );

    // No secret in the log, not even the one that came in a URL; one line
    // per scope and reason.
    let log = daemon.log_text();
    for secret in [
        SCREEN,
        BUSES,
        PROMETHEUS,
        "not-a-token-we-know",
        "nope-nope-nope",
        "c2NyZWVuOnRva2Vu",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let refusals = log
        .lines()
        .filter(|l| {
            l.contains("HTTP request refused")
                && l.contains("scope=\"read\"")
                && l.contains("reason=\"no_token\"")
        })
        .count();
    assert_eq!(refusals, 1, "{log}");
}

#[test]
fn anonymous_access_is_open_on_loopback_and_closed_from_another_host_unless_opted_in() {
    let Some(host) = common::netns::TestHost::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = Daemon::write_config(
        dir.path(),
        "",
        &format!(
            "[access]\n[[access.token]]\nname = \"screen\"\nhash = \"{}\"\nscopes = [\"read\"]\n",
            hash_of(SCREEN)
        ),
    );
    // Listen on the link to the test host as well as on loopback.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("127.0.0.1:", "0.0.0.0:")).unwrap();
    let daemon = Daemon::spawn(dir.path(), config.clone(), port);
    let lan = |path: &str| format!("http://{}:{port}{path}", host.gateway);
    let now = Utc::now().timestamp_millis();
    let fix = format!(r#"{{"device":"phone-1","time":{now},"lat":52.1,"lon":5.1}}"#);
    let post = [
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        fix.as_str(),
    ];

    // Loopback: everything, as before.
    assert_eq!(call(port, "GET", "/api/devices", &[], "").0, 200);
    assert_eq!(call(port, "POST", "/api/fixes", &[], &fix).0, 200);
    // From the test host: nothing anonymous but /healthz; the token works.
    assert_eq!(host.curl(&lan("/healthz"), &[]).0, 200);
    let (status, body) = host.curl(&lan("/api/devices"), &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(host.curl(&lan("/events"), &[]).0, 401);
    assert_eq!(host.curl(&lan("/metrics"), &[]).0, 401);
    assert_eq!(host.curl(&lan("/api/fixes"), &post).0, 401);
    let auth = format!("Authorization: Bearer {SCREEN}");
    let (status, body) = host.curl(&lan("/api/devices"), &["-H", &auth]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("phone-1"), "{body}");
    drop(daemon);

    // The explicit opt-in: anonymous reads from anywhere, writes still not.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[access]\n", "[access]\nanonymous = [\"read\"]\n"),
    )
    .unwrap();
    let daemon = Daemon::spawn(dir.path(), config, port);
    assert_eq!(host.curl(&lan("/api/devices"), &[]).0, 200);
    assert_eq!(host.curl(&lan("/api/fixes"), &post).0, 401);
    assert_eq!(host.curl(&lan("/metrics"), &[]).0, 401);
    assert!(
        daemon
            .log_text()
            .contains("anyone on the network may use these scopes without a token")
    );
}

#[test]
fn cors_preflights_are_answered_for_listed_origins_alone() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        "[access]\ncors_origins = [\"https://screens.example\"]\n",
    );
    let preflight = |origin: &str| {
        call(
            daemon.port,
            "OPTIONS",
            "/api/devices",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            "",
        )
    };
    let (status, headers, _) = preflight("https://screens.example");
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://screens.example")
    );
    assert_eq!(
        header(&headers, "access-control-allow-methods"),
        Some("GET, POST")
    );
    let allowed = header(&headers, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in ["authorization", "content-type", "last-event-id"] {
        assert!(allowed.contains(h), "{allowed}");
    }
    let (status, headers, _) = preflight("https://elsewhere.example");
    assert_eq!(status, 403);
    assert!(
        headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-")),
        "{headers:?}"
    );
    // The request itself: the origin echoed for a listed origin only.
    let (status, headers, _) = call(
        daemon.port,
        "GET",
        "/api/devices",
        &[("Origin", "https://screens.example")],
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://screens.example")
    );
    assert_eq!(header(&headers, "vary"), Some("Origin"));
    let (_, headers, _) = call(
        daemon.port,
        "GET",
        "/api/devices",
        &[("Origin", "https://elsewhere.example")],
        "",
    );
    assert!(header(&headers, "access-control-allow-origin").is_none());
    assert_eq!(
        daemon.metric_with("fixgate_http_refused_total", &[("reason", "cors")]),
        Some(1.0)
    );
}

/// `curl` over HTTPS to the daemon, trusting `ca`: the status, or `None`
/// when the connection or the handshake failed.
fn https(port: u16, path: &str, ca: &Path) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl (apt install curl)");
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    (out.status.success() && code != 0).then_some(code)
}

#[test]
fn tls_serves_https_only_bounds_the_handshake_and_reloads_the_pair_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let ca1 = common::make_tls_files(&first);
    let ca2 = common::make_tls_files(&second);
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let install = |from: &Path| {
        std::fs::copy(from.join("server.pem"), live.join("server.pem")).unwrap();
        std::fs::copy(from.join("server.key"), live.join("server.key")).unwrap();
    };
    install(&first);
    let (config, port) = Daemon::write_config(
        dir.path(),
        &format!(
            "header_timeout = \"2s\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
            live.join("server.pem").display(),
            live.join("server.key").display()
        ),
        "",
    );
    // Launched without waiting on plain /healthz, which an HTTPS port never
    // answers: wait on it over TLS.
    let daemon = Daemon::launch(dir.path(), config, port, &[]);
    let deadline = Instant::now() + WAIT;
    while https(port, "/healthz", &ca1) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "no HTTPS:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(https(port, "/api/devices", &ca1), Some(200));
    assert_eq!(
        https(port, "/api/devices", &ca2),
        None,
        "not the second CA's yet"
    );
    // Plain HTTP on the HTTPS port gets no answer.
    assert!(common::get(port, "/healthz").is_err());
    // The feed itself over TLS: a stream that starts with its retry hint.
    let out = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "2", "--cacert"])
        .arg(&ca1)
        .arg(format!("https://localhost:{port}/events"))
        .output()
        .expect("curl");
    let stream = String::from_utf8_lossy(&out.stdout);
    assert!(stream.contains("retry:"), "{stream:?}");

    // A half-open handshake holds its connection no longer than the
    // header timeout.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1500) && held < Duration::from_secs(5),
        "{held:?}"
    );

    // A bad pair (the second key under the first certificate) is refused
    // on SIGHUP and the pair in force stays.
    std::fs::copy(second.join("server.key"), live.join("server.key")).unwrap();
    hangup(&daemon);
    wait_log(&daemon, "TLS certificate and key NOT reloaded");
    assert_eq!(https(port, "/healthz", &ca1), Some(200));

    // The second pair whole: new connections get it.
    install(&second);
    hangup(&daemon);
    wait_log(&daemon, "TLS certificate and key reloaded");
    assert_eq!(https(port, "/healthz", &ca2), Some(200));
    assert_eq!(https(port, "/healthz", &ca1), None);

    let metric = |name: &str, labels: &[(&str, &str)]| {
        // /metrics over HTTPS: the plain helper cannot reach it.
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca2)
            .arg(format!("https://localhost:{port}/metrics"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(metric("fixgate_http_closed_total", &[("reason", "tls_timeout")]) >= 1.0);
    assert!(metric("fixgate_http_closed_total", &[("reason", "tls_handshake")]) >= 1.0);
    assert_eq!(
        metric("fixgate_tls_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        metric("fixgate_tls_reloads_total", &[("result", "error")]),
        1.0
    );
}

fn hangup(daemon: &Daemon) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

/// Waits until the daemon's log has `n`-th `text` (counting lines).
fn wait_log_n(daemon: &Daemon, text: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while daemon
        .log_text()
        .lines()
        .filter(|l| l.contains(text))
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_log(daemon: &Daemon, text: &str) {
    wait_log_n(daemon, text, 1);
}

#[test]
fn a_rotated_token_file_takes_effect_on_sighup_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with_tokens(dir.path(), "");
    let port = daemon.port;
    let now = Utc::now().timestamp_millis();
    let fix = format!(r#"{{"device":"bus-9","time":{now},"lat":52.1,"lon":5.1}}"#);
    let post = |token: &str| {
        call(
            port,
            "POST",
            "/api/fixes",
            &[("Authorization", &bearer(token))],
            &fix,
        )
        .0
    };
    assert_eq!(post(BUSES), 200);
    let rotated = "buses-token-rotated-98765";
    write_secret(&dir.path().join("buses.token"), rotated);
    hangup(&daemon);
    wait_log(&daemon, "access tokens reloaded");
    assert_eq!(post(BUSES), 401);
    assert_eq!(post(rotated), 200);
    // A token file others may read is refused; the tokens in force stay.
    let path = dir.path().join("buses.token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    hangup(&daemon);
    wait_log(&daemon, "access tokens NOT reloaded");
    assert_eq!(post(rotated), 200);
    assert!(daemon.log_text().contains("readable by every user"));
    assert!(!daemon.log_text().contains(rotated));
}

#[test]
fn the_intake_is_rate_limited_per_address_with_429_and_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        "[http]\nrate_limit = \"1/s\"\nrate_burst = 3\nrate_limit_exempt = []\n",
    );
    let now = Utc::now().timestamp_millis();
    let mut statuses = Vec::new();
    let mut retry = None;
    for i in 0..5 {
        let fix = format!(
            r#"{{"device":"r-1","time":{},"lat":52.1,"lon":5.1}}"#,
            now - 10_000 + i
        );
        let (status, headers, _) = call(daemon.port, "POST", "/api/fixes", &[], &fix);
        statuses.push(status);
        if status == 429 {
            retry = header(&headers, "retry-after").map(str::to_owned);
        }
    }
    // Three at once (the burst), then refused until the bucket refills; a
    // slow machine may have refilled one in between.
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert_eq!(retry.as_deref(), Some("1"));
    // Reads are not limited.
    for _ in 0..10 {
        assert_eq!(call(daemon.port, "GET", "/api/devices", &[], "").0, 200);
    }
    assert!(
        daemon
            .metric_with("fixgate_http_refused_total", &[("reason", "rate_limit")])
            .is_some_and(|n| n >= 1.0)
    );
    // The scenario, not a wait for a condition: a client that honours
    // `Retry-After: 1` waits that long, and then it is served.
    std::thread::sleep(Duration::from_millis(1100));
    let fix = format!(r#"{{"device":"r-1","time":{now},"lat":52.1,"lon":5.1}}"#);
    assert_eq!(call(daemon.port, "POST", "/api/fixes", &[], &fix).0, 200);
}

#[test]
fn a_huge_header_is_431_and_the_daemon_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Just over the 64 KiB the head may have: hyper's read buffer alone let
    // such a head through when it arrived in one read.
    let huge = "a".repeat(65 * 1024);
    let request = format!("GET /api/devices HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n");
    // The server may answer and close before it has read it all.
    let _ = stream.write_all(request.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(common::get(daemon.port, "/healthz").is_ok());
    assert!(common::get(daemon.port, "/api/devices").is_ok());
    assert_eq!(
        daemon.wait_metric(
            "fixgate_http_closed_total",
            &[("reason", "head_too_large")],
            1.0
        ),
        Some(1.0)
    );
}

#[test]
fn fixgate_token_makes_a_token_whose_hash_line_the_daemon_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_fixgate");
    let out = Command::new(bin).arg("token").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let token = lines[0];
    assert_eq!(token.len(), 43, "{token}");
    assert_eq!(lines[1], format!("hash = \"{}\"", hash_of(token)));
    // --hash-of agrees; --out writes a 0640 file and never prints the token.
    let mut child = Command::new(bin)
        .args(["token", "--hash-of", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let hashed = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&hashed.stdout).trim(), lines[1]);
    let file = dir.path().join("new.token");
    let out = Command::new(bin)
        .arg("token")
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o007, 0, "{mode:o}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(written.trim()));
    // An existing file is left alone.
    let again = Command::new(bin)
        .arg("token")
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);

    // The printed hash line, pasted into a config, lets the token in.
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[access]\nanonymous_loopback = false\n[[access.token]]\nname = \"made\"\n{}\nscopes = [\"read\"]\n",
            lines[1]
        ),
    );
    assert_eq!(call(daemon.port, "GET", "/api/devices", &[], "").0, 401);
    assert_eq!(
        call(
            daemon.port,
            "GET",
            "/api/devices",
            &[("Authorization", &bearer(token))],
            ""
        )
        .0,
        200
    );
}

/// A reader limited to some groups sees only their devices, on every route
/// that shows devices: the snapshot, the feed (whatever filter it asks for)
/// and the history; a device in no group is not shown either.
#[test]
fn devices_outside_the_tokens_read_groups_are_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[access]\nanonymous_loopback = [\"write\", \"metrics\"]\n[[access.token]]\nname = \"buses\"\nhash = \"{}\"\nscopes = [\"read\"]\nread_groups = [\"buses\"]\n[[group]]\nname = \"buses\"\ndevices = [\"bus-*\"]\n[[group]]\nname = \"trams\"\ndevices = [\"tram-*\"]\n",
            hash_of(SCREEN)
        ),
    );
    let feed = SseClient::connect(daemon.port, &format!("?access_token={SCREEN}"), None);
    assert_eq!(feed.status, 200);
    let asked_for_trams = SseClient::connect(
        daemon.port,
        &format!("?group=trams&access_token={SCREEN}"),
        None,
    );
    let now = Utc::now().timestamp_millis();
    for (device, lat) in [("tram-1", 52.2), ("van-9", 52.3), ("bus-1", 52.1)] {
        let fix = format!(r#"{{"device":"{device}","time":{now},"lat":{lat},"lon":5.1}}"#);
        assert_eq!(call(daemon.port, "POST", "/api/fixes", &[], &fix).0, 200);
    }
    let got = feed.take("position", 1, Duration::from_secs(10));
    assert_eq!(got[0].json()["device"], "bus-1", "the first it may see");
    assert!(
        feed.next_event(Duration::from_millis(500))
            .is_none_or(|e| e.event.as_deref() != Some("position"))
    );
    assert!(
        asked_for_trams
            .next_event(Duration::from_millis(500))
            .is_none_or(|e| e.event.as_deref() != Some("position"))
    );
    let auth = bearer(SCREEN);
    let (status, _, body) = call(
        daemon.port,
        "GET",
        "/api/devices",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("bus-1"), "{body}");
    assert!(
        !body.contains("tram-1") && !body.contains("van-9"),
        "{body}"
    );
    let (status, _, body) = call(
        daemon.port,
        "GET",
        "/api/devices?group=trams",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(status, 200);
    assert!(!body.contains("tram-1"), "{body}");
    let history = |device: &str| {
        call(
            daemon.port,
            "GET",
            &format!(
                "/api/history?device={device}&from={}",
                (Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ")
            ),
            &[("Authorization", &auth)],
            "",
        )
        .0
    };
    assert_eq!(history("bus-1"), 200);
    assert_eq!(history("tram-1"), 403);
    assert_eq!(history("van-9"), 403);
}

#[test]
fn group_limited_readers_are_refused_on_device_routes_that_do_not_filter() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[access]\nanonymous_loopback = [\"metrics\"]\n[[access.token]]\nname = \"buses\"\nhash = \"{}\"\nscopes = [\"read\"]\nread_groups = [\"buses\"]\n",
            hash_of(SCREEN)
        ),
    );
    let auth = bearer(SCREEN);
    for path in [
        "/api/devices",
        "/events",
        "/api/history?device=bus-1&from=2026-01-01T00:00:00Z",
    ] {
        let route = path.split('?').next().unwrap();
        let filtered = fixgate::readers::feed::access::GROUP_FILTERED.contains(&route);
        let status = if path == "/events" {
            SseClient::connect(daemon.port, &format!("?access_token={SCREEN}"), None).status
        } else {
            call(daemon.port, "GET", path, &[("Authorization", &auth)], "").0
        };
        if filtered {
            assert_ne!(status, 403, "{path}");
        } else {
            assert_eq!(status, 403, "{path}");
        }
    }
    // Routes without device data serve it as any reader.
    assert_eq!(
        call(
            daemon.port,
            "GET",
            "/api/map",
            &[("Authorization", &auth)],
            ""
        )
        .0,
        200
    );
}

#[test]
fn a_token_in_an_osmand_form_body_is_read_by_the_intake() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with_tokens(dir.path(), "");
    let agent = common::http_agent(Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{}/osmand", daemon.port);
    let form = |id: &str, token: &str| {
        format!(
            "id={id}&lat=52.1&lon=5.1&timestamp={}&token={}",
            Utc::now().timestamp(),
            token.replace('-', "%2D")
        )
    };
    let post = |body: String| {
        agent
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(body)
            .expect("post")
            .status()
            .as_u16()
    };
    assert_eq!(post(form("bus-5", BUSES)), 200);
    assert_eq!(post(form("tram-5", BUSES)), 403);
    assert_eq!(post(form("bus-5", "not-a-token-we-know")), 401);
    // Without any token: anonymous, and anonymous may not write here.
    let anonymous = format!(
        "id=bus-5&lat=52.1&lon=5.1&timestamp={}",
        Utc::now().timestamp()
    );
    assert_eq!(post(anonymous), 401);
    assert!(!daemon.log_text().contains(BUSES));
}
