//! The depot screen (`GET /`) against the real daemon, in Debian's headless
//! Chromium (driven by `tests/browser/bridge.mjs`, see `common::browser`):
//! fixes posted over HTTP reach the map, the device list and the event log;
//! the page resumes by its last event id across a daemon restart with every
//! fix counted once; a stalled stream is reopened and a refused one retried;
//! no request leaves the gateway's origin; a thousand vehicles at 1 Hz keep
//! it above 30 frames a second. Plus the HTTP side of the embedded assets
//! (gzip, ETag, 304, caching, CSP) over a raw socket.
//!
//! Screenshots are left in `target/depot-screen/`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Daemon;
use common::browser::{Browser, artifacts_dir};
use serde_json::{Value, json};

/// Metres per degree of latitude.
const M: f64 = 111_195.08;
const LAT: f64 = 52.0;
const LON: f64 = 5.0;
const WAIT: Duration = Duration::from_secs(15);

/// A circular fence "yard" of 100 m around (LAT, LON).
const YARD: &str = "[geofence]\n\n[[geofence.fence]]\nid = \"yard\"\nname = \"Yard\"\ncircle = { lat = 52.0, lon = 5.0, radius_m = 100 }\n";

/// A fix of `device` at `time`, `east` metres east of (LAT, LON).
fn fix(device: &str, time: DateTime<Utc>, east: f64, speed: f64) -> Value {
    let lon = LON + east / (M * LAT.to_radians().cos());
    json!({"device": device, "time": time.to_rfc3339(), "lat": LAT, "lon": lon, "speed": speed, "course": 90.0, "hdop": 1.0})
}

/// Posts fixes to `/api/fixes` (one request).
fn post(port: u16, fixes: &[Value]) {
    let response = common::http_agent(Duration::from_secs(10))
        .post(format!("http://127.0.0.1:{port}/api/fixes"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_string(fixes).expect("json"))
        .expect("post /api/fixes");
    assert_eq!(response.status().as_u16(), 200);
}

/// A raw HTTP/1.1 GET: status, headers (lower-case names) and body bytes,
/// whatever the encoding (no client library decoding it behind our back).
fn raw_get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[eol + 2 + size + 2..];
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Fails unless every request the browser made went to `origin`.
fn assert_same_origin(network: &[Value], origin: &str) {
    assert!(!network.is_empty(), "no requests recorded");
    for request in network {
        let url = request["url"].as_str().unwrap_or("");
        assert!(
            url.starts_with(&format!("{origin}/"))
                || url.starts_with("data:")
                || url.starts_with("blob:"),
            "a request left the gateway's origin: {url}"
        );
    }
}

#[test]
fn the_page_and_its_assets_are_served_gzipped_with_etags_304s_and_a_strict_csp() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let port = daemon.port;

    let (status, headers, body) = raw_get(port, "/", &[("Accept-Encoding", "gzip, deflate, br")]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
    assert_eq!(header(&headers, "vary"), Some("Accept-Encoding"));
    let csp = header(&headers, "content-security-policy").expect("CSP");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let etag = header(&headers, "etag").expect("ETag").to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "a strong ETag: {etag}"
    );
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip");

    // The plain page names its files under the assets' version.
    let (_, plain_headers, plain) = raw_get(port, "/", &[]);
    assert_eq!(header(&plain_headers, "content-encoding"), None);
    let page = String::from_utf8(plain).expect("utf-8 page");
    let main_js = page
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with("/js/main.js"))
        .expect("the page loads /assets/<version>/js/main.js")
        .to_owned();

    // Revalidation: 304 with no body for either representation's tag.
    let (status, headers, body) = raw_get(
        port,
        "/",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &etag)],
    );
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    let (status, _, _) = raw_get(port, "/", &[("If-None-Match", "\"something-else\"")]);
    assert_eq!(status, 200);

    // A versioned asset: JavaScript, cached for a year, gzipped.
    let (status, headers, body) = raw_get(port, &main_js, &[("Accept-Encoding", "gzip")]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert!(body.len() > 100);
    let asset_etag = header(&headers, "etag").expect("ETag").to_owned();
    let (status, _, _) = raw_get(port, &main_js, &[("If-None-Match", &asset_etag)]);
    assert_eq!(status, 304);
    // Under another version it is still served, but not cached for a year.
    let other = "/assets/000000000000/js/main.js";
    assert_ne!(other, main_js);
    let (status, headers, _) = raw_get(port, other, &[]);
    assert_eq!(status, 200, "{other}");
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
    // Stylesheets and the vendored licences have their types.
    let css = main_js.replace("js/main.js", "vendor/leaflet-1.9.4/leaflet.css");
    assert_eq!(
        header(&raw_get(port, &css, &[]).1, "content-type"),
        Some("text/css; charset=utf-8")
    );
    let licence = main_js.replace("js/main.js", "vendor/leaflet-1.9.4/LICENSE");
    let (status, _, body) = raw_get(port, &licence, &[]);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("BSD 2-Clause"));
    // Nothing else is there.
    let missing = main_js.replace("js/main.js", "js/../../Cargo.toml");
    assert_eq!(raw_get(port, &missing, &[]).0, 404);
    assert_eq!(raw_get(port, "/assets/x/no-such-file.js", &[]).0, 404);
}

#[test]
fn a_posted_fix_is_on_the_map_within_a_second_and_a_drive_through_a_fence_is_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), YARD);
    let port = daemon.port;
    let Some(mut browser) = Browser::start(port) else {
        return;
    };
    browser.open("/?theme=light", 1280, 800);
    browser.must(
        "document.body.dataset.ready === '1' && document.body.dataset.connection === 'live'",
        WAIT,
    );
    browser.must("document.body.dataset.fences === '1'", WAIT);

    // One fix: a marker within a second, then a row and an "online" entry.
    post(port, &[fix("car-1", Utc::now(), -500.0, 0.0)]);
    let took = browser.must(
        "window.fixgateScreen.drawn('car-1')",
        Duration::from_secs(5),
    );
    println!(
        "first marker drawn {} ms after the fix was accepted",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "the marker took {took:?}");
    browser.must(
        "document.querySelector('.device-row[data-device=\"car-1\"] .c-state')?.textContent === 'stopped'",
        Duration::from_secs(3),
    );
    browser.must(
        "document.querySelector('#log li[data-device=\"car-1\"][data-kind=\"online\"]') !== null",
        Duration::from_secs(3),
    );

    // A drive through the yard at 10 m/s: enter and exit, newest first.
    let t0 = Utc::now() - chrono::Duration::seconds(70);
    let drive: Vec<Value> = (0..=60)
        .map(|i| {
            fix(
                "bus-2",
                t0 + chrono::Duration::seconds(i),
                -300.0 + 10.0 * i as f64,
                10.0,
            )
        })
        .collect();
    post(port, &drive);
    browser.must(
        "document.querySelector('#log li[data-device=\"bus-2\"][data-kind=\"exit\"]') !== null",
        WAIT,
    );
    let log = browser.eval(
        "[...document.querySelectorAll('#log li[data-device=\"bus-2\"]')].map(li => li.dataset.kind + ':' + li.querySelector('.log-text').textContent)",
    );
    let log: Vec<&str> = log
        .as_array()
        .expect("log")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let exit = log
        .iter()
        .position(|e| *e == "exit:left Yard")
        .expect("exit with the fence's name");
    let enter = log
        .iter()
        .position(|e| *e == "enter:entered Yard")
        .expect("enter with the fence's name");
    assert!(exit < enter, "newest first: {log:?}");
    browser.must(
        "Number(document.body.dataset.positionsReceived) === 62",
        WAIT,
    );
    browser.must("document.querySelector('.device-row[data-device=\"bus-2\"] .c-state')?.textContent === 'moving'", WAIT);

    // Search narrows the list; clicking a row selects the vehicle.
    browser.cmd(json!({"cmd": "fill", "selector": "#devices input[type=search]", "value": "bus"}));
    browser.must(
        "document.querySelector('.device-count').textContent === '1 of 2'",
        WAIT,
    );
    browser.cmd(json!({"cmd": "click", "selector": ".device-row[data-device=\"bus-2\"]"}));
    browser.must("!document.getElementById('selection').hidden && document.querySelector('.sel-name').textContent === 'bus-2'", WAIT);
    browser.cmd(json!({"cmd": "fill", "selector": "#devices input[type=search]", "value": ""}));

    let state = browser.dataset();
    assert_eq!(state["duplicates"], "0", "{state}");
    assert_eq!(state["errors"], "0", "{state}");
    assert_eq!(state["cspViolations"], "0", "{state}");
    let console = browser.cmd(json!({"cmd": "console"}));
    let page_errors: Vec<&Value> = console
        .as_array()
        .expect("console")
        .iter()
        .filter(|m| m.as_str().is_some_and(|m| m.starts_with("pageerror")))
        .collect();
    assert!(page_errors.is_empty(), "{page_errors:?}");
    browser.screenshot(&artifacts_dir().join("desk.png"));

    // Every request went to the gateway; the first load fits in 300 KB.
    let network = browser.network();
    assert_same_origin(&network, &browser.origin.clone());
    let first_load: f64 = network
        .iter()
        .filter(|r| r["type"] != "EventSource" && r["type"] != "Fetch")
        .map(|r| r["encoded"].as_f64().unwrap_or(0.0))
        .sum();
    println!("first load: {first_load} bytes transferred (page, scripts, styles, icon)");
    assert!(
        first_load > 10_000.0 && first_load <= 300.0 * 1024.0,
        "{first_load}"
    );
    for r in &network {
        let url = r["url"].as_str().unwrap_or("");
        if url.ends_with(".js") || url.ends_with(".css") {
            assert_eq!(r["encoding"], "gzip", "{url} went uncompressed");
        }
    }

    // Loaded again, the page is revalidated and its files come from the cache.
    browser.cmd(json!({"cmd": "clear_network"}));
    browser.cmd(json!({"cmd": "reload", "url": format!("{}/?theme=light", browser.origin)}));
    browser.must("document.body.dataset.ready === '1'", WAIT);
    let again = browser.network();
    for r in &again {
        let url = r["url"].as_str().unwrap_or("");
        if url.contains("/assets/") {
            assert_eq!(r["from_cache"], true, "{url} was fetched again: {r}");
        }
    }
    // The page itself was revalidated: a 304, which Chromium reports as the
    // cached 200 with only the 304's head transferred.
    let first_page = network
        .iter()
        .find(|r| r["type"] == "Document")
        .and_then(|r| r["encoded"].as_f64())
        .expect("the page");
    let page = again
        .iter()
        .find(|r| r["type"] == "Document")
        .expect("the page");
    let encoded = page["encoded"].as_f64().unwrap_or(f64::MAX);
    assert!(
        encoded < first_page.min(1000.0),
        "the page came whole again: {page}"
    );

    // Kiosk: the map alone, dark, large type; the events as a ticker.
    browser.open("/?kiosk", 1920, 1080);
    browser.must("document.body.dataset.ready === '1'", WAIT);
    let kiosk = browser.eval(
        "({theme: document.body.dataset.theme, side: getComputedStyle(document.getElementById('side')).display, \
          controls: getComputedStyle(document.querySelector('.controls')).display, \
          font: parseFloat(getComputedStyle(document.body).fontSize), \
          mapWidth: document.getElementById('map').clientWidth})",
    );
    assert_eq!(kiosk["theme"], "dark", "{kiosk}");
    assert_eq!(kiosk["side"], "none", "{kiosk}");
    assert_eq!(kiosk["controls"], "none", "{kiosk}");
    assert!(kiosk["font"].as_f64().unwrap_or(0.0) >= 18.0, "{kiosk}");
    assert_eq!(kiosk["mapWidth"], 1920, "{kiosk}");
    post(port, &[fix("car-1", Utc::now(), -520.0, 0.0)]);
    browser.must(
        "window.fixgateScreen.drawn('bus-2') && window.fixgateScreen.drawn('car-1')",
        WAIT,
    );
    browser.screenshot(&artifacts_dir().join("kiosk.png"));
    assert_same_origin(&browser.network(), &browser.origin.clone());

    // A phone: the panels under the map, the list still usable.
    browser.open("/", 390, 844);
    browser.must("document.body.dataset.ready === '1'", WAIT);
    let phone = browser.eval(
        "({mapBottom: document.getElementById('map-wrap').getBoundingClientRect().bottom, \
          sideTop: document.getElementById('side').getBoundingClientRect().top, \
          rows: document.querySelectorAll('.device-row:not([hidden])').length})",
    );
    assert!(
        phone["sideTop"].as_f64() >= phone["mapBottom"].as_f64(),
        "side panel under the map: {phone}"
    );
    browser.must(
        "document.querySelectorAll('.device-row:not([hidden])').length === 2",
        WAIT,
    );
    browser.screenshot(&artifacts_dir().join("phone.png"));
}

#[test]
fn a_fence_name_with_markup_is_shown_as_text_everywhere() {
    // Fence names (and their properties) are free text from a file anyone
    // with access to the gateway's configuration may have written.
    let name = r#"<img src=x onerror="document.body.dataset.pwned=1"><b>Yard</b>"#;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[geofence]\n\n[[geofence.fence]]\nid = \"yard\"\nname = '{name}'\ncircle = {{ lat = 52.0, lon = 5.0, radius_m = 100 }}\n"
        ),
    );
    let Some(mut browser) = Browser::start(daemon.port) else {
        return;
    };
    browser.open("/", 1280, 800);
    browser.must(
        "document.body.dataset.fences === '1' && document.body.dataset.connection === 'live'",
        WAIT,
    );
    let t0 = Utc::now() - chrono::Duration::seconds(40);
    let drive: Vec<Value> = (0..=30)
        .map(|i| {
            fix(
                "bus-x",
                t0 + chrono::Duration::seconds(i),
                -300.0 + 10.0 * i as f64,
                10.0,
            )
        })
        .collect();
    post(daemon.port, &drive);
    browser.must(
        "document.querySelector('#log li[data-kind=\"enter\"]') !== null",
        WAIT,
    );
    browser.must(
        "(document.querySelector('.device-row[data-device=\"bus-x\"] .c-zones')?.textContent ?? '') !== ''",
        WAIT,
    );
    let shown = browser.eval(
        "({label: document.querySelector('.fence-name')?.textContent, \
          log: document.querySelector('#log li[data-kind=\"enter\"] .log-text')?.textContent, \
          zones: document.querySelector('.device-row[data-device=\"bus-x\"] .c-zones')?.textContent, \
          images: document.querySelectorAll('img').length, bold: document.querySelectorAll('b').length, \
          pwned: document.body.dataset.pwned ?? null})",
    );
    assert_eq!(shown["label"], name, "{shown}");
    assert_eq!(shown["log"], format!("entered {name}"), "{shown}");
    assert_eq!(shown["zones"], name, "{shown}");
    assert_eq!(shown["images"], 0, "{shown}");
    assert_eq!(shown["bold"], 0, "{shown}");
    assert_eq!(shown["pwned"], Value::Null, "{shown}");
    assert_eq!(browser.dataset()["cspViolations"], "0");
}

#[test]
fn across_a_daemon_restart_the_page_resumes_by_last_event_id_and_counts_every_fix_once() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = Daemon::write_config(dir.path(), "", "");
    let daemon = Daemon::spawn(dir.path(), config.clone(), port);
    let Some(mut browser) = Browser::start(port) else {
        return;
    };
    browser.open("/", 1280, 800);
    browser.must("document.body.dataset.connection === 'live'", WAIT);
    let t0 = Utc::now() - chrono::Duration::seconds(300);
    let at = |i: i64| t0 + chrono::Duration::seconds(i);
    let mut posted = 0;
    // Live, one request per fix.
    for i in 0..20 {
        post(port, &[fix("van-1", at(i), i as f64 * 5.0, 5.0)]);
        posted += 1;
    }
    browser.must(
        &format!("Number(document.body.dataset.positionsReceived) === {posted}"),
        WAIT,
    );

    // The daemon stops; the browser loses its network (Chromium's offline
    // mode fails new requests, loopback included, but leaves open ones
    // alone, hence this order), the daemon comes back, and fixes arrive
    // while the page cannot see them: it must fetch them from the store.
    assert!(daemon.terminate().success());
    browser.must("document.body.dataset.connection === 'reconnecting'", WAIT);
    browser.cmd(json!({"cmd": "offline", "on": true}));
    let daemon = Daemon::spawn(dir.path(), config, port);
    for i in 20..50 {
        post(port, &[fix("van-1", at(i), i as f64 * 5.0, 5.0)]);
        posted += 1;
    }
    post(port, &[fix("van-2", at(50), 0.0, 0.0)]);
    posted += 1;
    // Half a second in which nothing may reach the page: a bounded check
    // that nothing happens.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        browser.number("positionsReceived") as usize,
        20,
        "nothing reached the page while offline"
    );
    browser.cmd(json!({"cmd": "offline", "on": false}));
    browser.must(
        &format!("Number(document.body.dataset.positionsReceived) === {posted}"),
        Duration::from_secs(40),
    );
    browser.must("document.body.dataset.connection === 'live'", WAIT);

    // And live again after it.
    for i in 51..61 {
        post(port, &[fix("van-1", at(i), i as f64 * 5.0, 5.0)]);
        posted += 1;
    }
    browser.must(
        &format!("Number(document.body.dataset.positionsReceived) === {posted}"),
        WAIT,
    );
    // Bounded: half a second in which no duplicate may follow.
    std::thread::sleep(Duration::from_millis(500));
    let state = browser.dataset();
    println!("after the restart: {state}");
    assert_eq!(state["positionsReceived"], posted.to_string(), "{state}");
    assert_eq!(state["duplicates"], "0", "none twice: {state}");
    assert_eq!(state["resets"], "0", "resumed, not reset: {state}");
    assert_eq!(state["lastEventId"], daemon.head().to_string(), "{state}");
    assert!(browser.number("reconnects") >= 1.0, "{state}");
    assert_eq!(state["devices"], "2", "{state}");
    // The marker is where the last fix put it.
    browser.must(
        "window.fixgateScreen.fleet.devices.get('van-1').fix.lon > 5.0039",
        WAIT,
    );
}

#[test]
fn when_the_store_is_replaced_the_page_takes_the_reset_and_reloads_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = Daemon::write_config(dir.path(), "", "");
    let daemon = Daemon::spawn(dir.path(), config.clone(), port);
    let Some(mut browser) = Browser::start(port) else {
        return;
    };
    browser.open("/", 1280, 800);
    browser.must("document.body.dataset.connection === 'live'", WAIT);
    let now = Utc::now();
    post(
        port,
        &[fix("old-1", now, 0.0, 0.0), fix("old-2", now, 50.0, 0.0)],
    );
    browser.must("Number(document.body.dataset.devices) === 2", WAIT);

    // The same gateway comes back on another, empty store (a replaced SD
    // card): the page's last id means nothing there.
    assert!(daemon.terminate().success());
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &dir.path().join("store").display().to_string(),
        &other.join("store").display().to_string(),
    );
    let other_config = other.join("fixgate.toml");
    std::fs::write(&other_config, text).unwrap();
    let daemon = Daemon::spawn(&other, other_config, port);
    post(port, &[fix("new-1", Utc::now(), 100.0, 0.0)]);
    browser.must(
        "Number(document.body.dataset.resets) >= 1",
        Duration::from_secs(30),
    );
    // The snapshot replaces the devices: the old store's are gone.
    browser.must(
        "Number(document.body.dataset.devices) === 1 && window.fixgateScreen.fleet.devices.has('new-1')",
        WAIT,
    );
    browser.must("document.body.dataset.connection === 'live'", WAIT);
    browser.must(
        "document.querySelector('.device-row[data-device=\"old-1\"]') === null",
        WAIT,
    );
    // And the live feed goes on from the new store.
    let before = browser.number("positionsReceived");
    post(
        port,
        &[fix(
            "new-1",
            Utc::now() + chrono::Duration::seconds(1),
            110.0,
            10.0,
        )],
    );
    browser.must(
        &format!(
            "Number(document.body.dataset.positionsReceived) === {}",
            before + 1.0
        ),
        WAIT,
    );
    let state = browser.dataset();
    assert_eq!(state["duplicates"], "0", "{state}");
    assert_eq!(state["lastEventId"], daemon.head().to_string(), "{state}");
}

#[test]
fn a_stalled_stream_is_reopened_and_refused_snapshots_and_streams_are_retried_with_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let Some(mut browser) = Browser::start(daemon.port) else {
        return;
    };
    // The page's origin is a proxy in the bridge that can stall or refuse
    // the stream, which a healthy daemon does not do on demand.
    let proxy = browser.cmd(json!({"cmd": "proxy", "target": daemon.port}));
    let proxy_port = proxy["port"].as_u64().expect("proxy port");
    browser.origin = format!("http://127.0.0.1:{proxy_port}");
    // The snapshot refused twice (503, as a busy `/api/devices` answers),
    // then the stream three times (as a full feed would): EventSource alone
    // would give up at the first.
    browser.cmd(json!({"cmd": "proxy_refuse", "path": "/api/devices", "n": 2}));
    browser.cmd(json!({"cmd": "proxy_refuse", "path": "/events", "n": 3}));
    browser.open("/?stuck=2", 1280, 800);
    browser.must(
        "document.body.dataset.connection === 'live'",
        Duration::from_secs(30),
    );
    let stats = browser.cmd(json!({"cmd": "proxy_stats"}));
    assert_eq!(stats["refused"], 5, "{stats}");
    assert!(browser.number("reconnects") >= 3.0);
    assert_eq!(browser.number("refused"), 2.0);
    let t0 = Utc::now() - chrono::Duration::seconds(100);
    post(daemon.port, &[fix("tram-1", t0, 0.0, 0.0)]);
    browser.must(
        "Number(document.body.dataset.positionsReceived) === 1",
        WAIT,
    );

    // The stream stalls with its socket open; fixes go on being stored.
    browser.cmd(json!({"cmd": "proxy_freeze"}));
    for i in 1..=5 {
        post(
            daemon.port,
            &[fix(
                "tram-1",
                t0 + chrono::Duration::seconds(i),
                10.0 * i as f64,
                10.0,
            )],
        );
    }
    // The page sees the head move past it without events, and reopens.
    browser.must(
        "Number(document.body.dataset.positionsReceived) === 6",
        Duration::from_secs(30),
    );
    let state = browser.dataset();
    assert!(browser.number("stuckReopens") >= 1.0, "{state}");
    assert_eq!(state["duplicates"], "0", "{state}");
    assert_same_origin(&browser.network(), &browser.origin.clone());
}

#[test]
fn a_thousand_vehicles_at_1_hz_keep_the_screen_above_30_frames_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[demo]\nvehicles = 1000\nrate_hz = 1.0\nvia = \"nmea\"\ncenter = [{LAT}, {LON}]\n\n{YARD}"
        ),
    );
    let Some(mut browser) = Browser::start(daemon.port) else {
        return;
    };
    browser.open("/?kiosk", 1280, 800);
    browser.must(
        "Number(document.body.dataset.devices) === 1000",
        Duration::from_secs(30),
    );
    browser.eval("window.fixgateScreen.fitAll()");
    let before = browser.number("positionsReceived");
    browser.eval("window.fixgateScreen.meter.start()");
    let window = Duration::from_secs(10);
    // The measurement window itself.
    std::thread::sleep(window);
    let frames = browser.eval("window.fixgateScreen.meter.result()");
    let state = browser.dataset();
    let received = browser.number("positionsReceived") - before;
    browser.screenshot(&artifacts_dir().join("fleet-1000.png"));
    println!(
        "1000 vehicles at 1 Hz, {} s: {frames}\n{received} positions received; page state {state}",
        window.as_secs()
    );
    let median = frames["median_ms"].as_f64().expect("median frame time");
    let mean_fps = frames["fps_mean"].as_f64().expect("mean fps");
    assert!(1000.0 / median >= 30.0, "median frame time {median} ms");
    assert!(mean_fps >= 30.0, "{mean_fps} frames a second on average");
    // The page kept up with the feed.
    assert!(
        received >= 8000.0,
        "only {received} positions in {window:?}"
    );
    assert_eq!(state["duplicates"], "0");
}

/// A raster PMTiles archive (spec v3) whose every tile from zoom 0 to
/// `max_zoom` is the same PNG: one directory entry per zoom with a run
/// length covering the level. Made here so no tile data is committed.
fn pmtiles_archive(max_zoom: u8) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let png = solid_png(256, [205, 225, 210]);
    let mut directory = Vec::new();
    let levels = u64::from(max_zoom) + 1;
    varint(levels, &mut directory);
    let mut last = 0;
    for z in 0..levels {
        // The first tile id of zoom z: (4^z - 1) / 3.
        let id = (4u64.pow(z as u32) - 1) / 3;
        varint(id - last, &mut directory);
        last = id;
    }
    for z in 0..levels {
        varint(4u64.pow(z as u32), &mut directory); // run lengths
    }
    for _ in 0..levels {
        varint(png.len() as u64, &mut directory); // lengths
    }
    // Offsets are stored plus one (0 would mean "right after the previous
    // entry's tile"); every entry points at the one PNG at offset 0.
    for _ in 0..levels {
        varint(1, &mut directory);
    }
    let metadata = br#"{"name":"test"}"#;
    let header_len = 127u64;
    let root_offset = header_len;
    let meta_offset = root_offset + directory.len() as u64;
    let data_offset = meta_offset + metadata.len() as u64;
    let mut h = Vec::with_capacity(127);
    h.extend_from_slice(b"PMTiles");
    h.push(3);
    for v in [
        root_offset,
        directory.len() as u64,
        meta_offset,
        metadata.len() as u64,
        0, // leaf directories
        0,
        data_offset,
        png.len() as u64,
        (4u64.pow(levels as u32) - 1) / 3, // addressed tiles
        levels,                            // tile entries
        1,                                 // tile contents
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.push(1); // clustered
    h.push(1); // internal compression: none
    h.push(1); // tile compression: none
    h.push(2); // tile type: PNG
    h.push(0); // min zoom
    h.push(max_zoom);
    for v in [-1_800_000_000i32, -850_000_000, 1_800_000_000, 850_000_000] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.push(0); // centre zoom
    h.extend_from_slice(&((LON * 1e7) as i32).to_le_bytes());
    h.extend_from_slice(&((LAT * 1e7) as i32).to_le_bytes());
    assert_eq!(h.len(), 127);
    let mut archive = h;
    archive.extend_from_slice(&directory);
    archive.extend_from_slice(metadata);
    archive.extend_from_slice(&png);
    archive
}

/// A `size`×`size` PNG of one colour.
fn solid_png(size: u32, rgb: [u8; 3]) -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    // Each row: filter type 0 (none), then the pixels.
    let mut row = vec![0u8];
    row.extend(rgb.repeat(size as usize));
    let raw = row.repeat(size as usize);
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(b"IHDR", &ihdr, &mut png);
    chunk(
        b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
        &mut png,
    );
    chunk(b"IEND", &[], &mut png);
    png
}

#[test]
fn a_raster_pmtiles_archive_served_by_the_gateway_is_the_basemap() {
    let dir = tempfile::tempdir().unwrap();
    let tiles = dir.path().join("depot.pmtiles");
    std::fs::write(&tiles, pmtiles_archive(18)).expect("write archive");
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[map]\ntiles = \"{}\"\nattribution = \"Test tiles <b>not bold</b>\"\ncenter = [{LAT}, {LON}]\n",
            tiles.display()
        ),
    );
    let Some(mut browser) = Browser::start(daemon.port) else {
        return;
    };
    browser.open("/", 1280, 800);
    browser.must("document.body.dataset.basemap === 'pmtiles'", WAIT);
    browser.must(
        "document.querySelectorAll('.leaflet-tile-loaded').length > 0",
        WAIT,
    );
    let network = browser.network();
    assert_same_origin(&network, &browser.origin.clone());
    assert!(
        network
            .iter()
            .any(|r| r["url"].as_str().is_some_and(|u| u.contains("/tiles/")) && r["status"] == 206),
        "the archive is read by Range requests: {network:?}"
    );
    // The attribution is shown as text, never as markup.
    let attribution =
        browser.eval("document.querySelector('.leaflet-control-attribution').textContent");
    assert!(
        attribution
            .as_str()
            .is_some_and(|a| a.contains("<b>not bold</b>")),
        "{attribution}"
    );
    browser.screenshot(&artifacts_dir().join("pmtiles.png"));
}

#[test]
fn the_history_of_a_device_plays_back_with_a_time_slider() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), YARD);
    let t0 = Utc::now() - chrono::Duration::seconds(600);
    let drive: Vec<Value> = (0..=60)
        .map(|i| {
            fix(
                "bus-7",
                t0 + chrono::Duration::seconds(i),
                -300.0 + 10.0 * i as f64,
                10.0,
            )
        })
        .collect();
    post(daemon.port, &drive);
    let Some(mut browser) = Browser::start(daemon.port) else {
        return;
    };
    browser.open("/", 1280, 800);
    browser.must(
        "document.querySelector('.device-row[data-device=\"bus-7\"]') !== null",
        WAIT,
    );
    browser.cmd(json!({"cmd": "click", "selector": ".device-row[data-device=\"bus-7\"]"}));
    browser.cmd(json!({"cmd": "click", "selector": ".sel-history"}));
    browser.cmd(json!({"cmd": "click", "selector": "#history button[type=submit]"}));
    browser.must(
        "document.getElementById('history').dataset.state === 'loaded'",
        WAIT,
    );
    let history = browser.eval("({...document.getElementById('history').dataset})");
    assert_eq!(history["points"], "61", "{history}");
    let events: u32 = history["events"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    assert!(events >= 2, "enter and exit: {history}");
    // Play at 300×: the marker reaches the end of the track.
    browser.eval("document.querySelector('.history-speed').value = '300'; document.querySelector('.history-speed').dispatchEvent(new Event('change'))");
    browser.cmd(json!({"cmd": "click", "selector": ".history-play"}));
    browser.must(
        "document.getElementById('history').dataset.index === '60'",
        WAIT,
    );
    browser.screenshot(&artifacts_dir().join("history.png"));
    assert_same_origin(&browser.network(), &browser.origin.clone());
}

#[test]
fn the_test_archive_is_a_valid_pmtiles_v3_file() {
    // Checks the generator above without a browser: magic, version, the
    // directory's place and the PNG at the data offset.
    let archive = pmtiles_archive(3);
    assert_eq!(&archive[..7], b"PMTiles");
    assert_eq!(archive[7], 3);
    let u64_at = |o: usize| u64::from_le_bytes(archive[o..o + 8].try_into().unwrap());
    assert_eq!(u64_at(8), 127);
    let data = u64_at(56) as usize;
    assert_eq!(&archive[data..data + 8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(archive[99], 2);
}

/// A screen on a LAN where anonymous reads are off opens the page with the
/// read token in its URL; every call the page makes carries it, and without
/// it the page shows nothing.
#[test]
fn a_screen_opened_with_a_read_token_passes_it_to_every_call() {
    let token = "depot-screen-read-token-0123456789";
    let hash = fixgate::access::Digest::of(token);
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[access]\nanonymous_loopback = [\"write\", \"metrics\"]\n[[access.token]]\nname = \"screens\"\nhash = \"{hash}\"\nscopes = [\"read\"]\n"
        ),
    );
    let Some(mut browser) = Browser::start(daemon.port) else {
        return;
    };
    browser.open(&format!("/?access_token={token}"), 1280, 800);
    browser.must("document.body.dataset.connection === 'live'", WAIT);
    let t = Utc::now() - chrono::Duration::seconds(5);
    post(daemon.port, &[fix("bus-t", t, 0.0, 0.0)]);
    browser.must("document.body.dataset.positionsReceived === '1'", WAIT);
    // The scrape is allowed anonymously here, so this reads the counter.
    assert!(daemon.metric("fixgate_http_connections").is_some());
    let denied = daemon.metric("fixgate_access_denied_total").unwrap_or(0.0);
    assert_eq!(denied, 0.0, "every call carried the token");
    // Without it: refused, and the page never goes live.
    browser.open("/", 1280, 800);
    // Its calls are refused (waited for, not slept on)...
    assert!(
        daemon
            .wait_metric("fixgate_access_denied_total", &[], 1.0)
            .is_some_and(|n| n >= 1.0)
    );
    // ...and it does not go live after all: a bounded second in which
    // nothing may happen (a feed left unguarded would connect by then).
    std::thread::sleep(Duration::from_secs(1));
    assert_ne!(browser.dataset()["connection"], "live");
}
