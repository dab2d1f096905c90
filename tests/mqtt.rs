//! MQTT intake with real parts: Debian's `mosquitto_pub` publishing into the
//! gateway's own MQTT server, and Debian's `mosquitto` as an external broker
//! that one or two gateways subscribe to. (The server's behaviour under
//! hostile clients and at shutdown is in `mqtt_server.rs`.)

mod common;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::{
    Daemon, Mosquitto, MosquittoSub, SseClient, mosquitto_pub, start_with_broker, summary_field,
};

const WAIT: Duration = Duration::from_secs(15);

/// A fixgate JSON fix `age_s` seconds ago, with a distinct position per `i`.
fn json_fix(i: u32, age_s: i64) -> String {
    let time = (Utc::now() - chrono::Duration::seconds(age_s))
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    format!(
        r#"{{"time":"{time}","lat":{},"lon":5.12,"speed":8.5,"hdop":0.9,"sats":9}}"#,
        52.09 + f64::from(i) * 1e-4
    )
}

fn devices(daemon: &Daemon) -> serde_json::Value {
    serde_json::from_str(&common::get(daemon.port, "/api/devices").unwrap()).unwrap()
}

fn device<'a>(all: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    all["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == id)
}

#[test]
fn mosquitto_pub_into_the_embedded_broker_reaches_the_store_and_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    let feed = SseClient::connect(daemon.port, "", None);
    assert!(mosquitto_pub(
        mqtt,
        "fleet/north/device/bus-7/fix",
        json_fix(1, 2).as_bytes(),
        None
    ));
    let got = feed.take("position", 1, WAIT);
    assert_eq!(got.len(), 1, "{}", daemon.log_text());
    let p = got[0].json();
    assert_eq!(p["device"], "bus-7");
    assert_eq!(p["lat"], 52.0901);
    assert_eq!(p["speed"], 8.5);
    let all = devices(&daemon);
    let bus = device(&all, "bus-7").expect("bus-7 in /api/devices");
    assert_eq!(bus["status"], "online");
    assert_eq!(bus["fix"]["lat"], 52.0901);
    assert_eq!(
        daemon.metric_with(
            "fixgate_fixes_accepted_total",
            &[("source", "mqtt"), ("class", "json_tracker")]
        ),
        Some(1.0)
    );
}

#[test]
fn the_embedded_brokers_connections_are_a_gauge() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    // Only real clients count: the gateway has no connection of its own to
    // its server (rumqttd's in-process link used to count as one).
    assert_eq!(daemon.metric("fixgate_mqtt_broker_connections"), Some(0.0));
    // Without logins and `mqtt.anonymous_subscribe`, nobody may subscribe:
    // `mosquitto_sub` is told so and leaves at once.
    let mut sub = MosquittoSub::start(mqtt, &["fleet/#"], None, &[]);
    let (_, stderr) = sub.wait_exit(WAIT).expect("mosquitto_sub left");
    assert!(
        stderr.contains("All subscription requests were denied."),
        "{stderr}"
    );
    assert_eq!(
        daemon.metric_with(
            "fixgate_mqtt_refused_total",
            &[("reason", "subscribe_scope")]
        ),
        Some(1.0)
    );
    let connects = daemon.metric("fixgate_mqtt_broker_connects_total");
    // Devices that stay connected: `mosquitto_pub -l` holds its connection
    // while its input is open.
    let mut devices: Vec<_> = (0..3)
        .map(|i| {
            common::mosquitto_pub_command(mqtt, &format!("fleet/x/device/held-{i}/fix"), &["-l"])
                .args(["-i", &format!("held-{i}")])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("mosquitto_pub (Debian's mosquitto-clients)")
        })
        .collect();
    assert_eq!(
        daemon.wait_metric("fixgate_mqtt_broker_connections", &[], 3.0),
        Some(3.0),
        "{}",
        daemon.log_text()
    );
    for d in &mut devices {
        d.kill().unwrap();
        d.wait().unwrap();
    }
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.metric("fixgate_mqtt_broker_connections") != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "connections after the clients left: {:?}",
            daemon.metric("fixgate_mqtt_broker_connections")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        daemon.metric("fixgate_mqtt_broker_connects_total"),
        connects.map(|n| n + 3.0)
    );
}

#[test]
fn owntracks_location_messages_as_the_apps_publish_them() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    let feed = SseClient::connect(daemon.port, "", None);
    let tst = Utc::now().timestamp() - 5;
    // The shape of an Android app's message (integers for acc/alt/vel/cog).
    let payload = format!(
        r#"{{"_type":"location","acc":13,"alt":41,"batt":87,"bs":1,"cog":270,"conn":"m","created_at":{tst},"lat":52.37403,"lon":4.88969,"t":"u","tid":"ph","tst":{tst},"vac":3,"vel":36}}"#
    );
    assert!(mosquitto_pub(
        mqtt,
        "owntracks/alice/phone",
        payload.as_bytes(),
        None
    ));
    // Not a location: counted as ignored, not as bad input.
    assert!(mosquitto_pub(
        mqtt,
        "owntracks/alice/phone",
        br#"{"_type":"lwt","tst":1700000000}"#,
        None
    ));
    let got = feed.take("position", 1, WAIT);
    assert_eq!(got.len(), 1, "{}", daemon.log_text());
    let p = got[0].json();
    assert_eq!(p["device"], "alice.phone");
    assert_eq!(p["accuracy"], 13.0);
    assert_eq!(p["alt"], 41.0);
    assert_eq!(p["speed"], 10.0, "36 km/h is 10 m/s");
    assert_eq!(p["course"], 270.0);
    assert_eq!(
        daemon.wait_metric(
            "fixgate_ingest_ignored_total",
            &[("kind", "owntracks_lwt")],
            1.0
        ),
        Some(1.0)
    );
    assert_eq!(daemon.metric("fixgate_ingest_rejected_total"), None);
    assert_eq!(
        daemon.metric_with("fixgate_fixes_accepted_total", &[("class", "owntracks")]),
        Some(1.0)
    );
}

#[test]
fn raw_nmea_messages_go_through_the_serial_epoch_logic() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "[gateway]\nclock = \"always\"\n");
    let feed = SseClient::connect(daemon.port, "", None);
    let start = Utc::now() - chrono::Duration::seconds(30);
    let text = common::simulated_nmea(6, start, 3);
    // One epoch per message, as a tracker forwarding its receiver would.
    let mut epoch = String::new();
    for line in text.lines() {
        if line.starts_with("$GPRMC") && !epoch.is_empty() {
            assert!(mosquitto_pub(
                mqtt,
                "fleet/x/device/nmea-1/fix",
                epoch.as_bytes(),
                None
            ));
            epoch.clear();
        }
        epoch.push_str(line);
        epoch.push_str("\r\n");
    }
    assert!(mosquitto_pub(
        mqtt,
        "fleet/x/device/nmea-1/fix",
        epoch.as_bytes(),
        None
    ));
    let got = feed.take("position", 5, WAIT);
    assert!(got.len() >= 5, "{got:?}\n{}", daemon.log_text());
    assert!(got.iter().all(|e| e.json()["device"] == "nmea-1"));
}

#[test]
fn every_class_of_bad_input_is_counted_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "max_payload = 4096\n", "");
    let topic = "fleet/x/device/bad-1/fix";
    let cases: &[(&str, Vec<u8>)] = &[
        ("malformed", b"{\"lat\": 52.1, \"lon\": ".to_vec()),
        ("unknown_format", b"hello".to_vec()),
        ("missing_field", br#"{"lon": 5.1}"#.to_vec()),
        ("invalid_value", br#"{"lat": "52.1", "lon": 5.1}"#.to_vec()),
        (
            "oversized",
            format!("[{}]", vec![json_fix(1, 1); 60].join(",")).into_bytes(),
        ),
    ];
    for (_, payload) in cases {
        assert!(mosquitto_pub(mqtt, topic, payload, None));
    }
    // A topic level that cannot be a device id.
    assert!(mosquitto_pub(
        mqtt,
        "fleet/x/device/bad dev/fix",
        json_fix(1, 1).as_bytes(),
        None
    ));
    // Valid JSON, impossible latitude: refused at the intake too.
    assert!(mosquitto_pub(
        mqtt,
        topic,
        br#"{"lat": 123.0, "lon": 5.1}"#,
        None
    ));
    // And a good fix after all of that, from another device.
    let feed = SseClient::connect(daemon.port, "", None);
    assert!(mosquitto_pub(
        mqtt,
        "fleet/x/device/good-1/fix",
        json_fix(2, 1).as_bytes(),
        None
    ));
    let got = feed.take("position", 1, WAIT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["device"], "good-1");
    for (reason, _) in cases {
        // Two invalid values: the string latitude and the one of 123°.
        let want = if *reason == "invalid_value" { 2.0 } else { 1.0 };
        assert_eq!(
            daemon.metric_with(
                "fixgate_ingest_rejected_total",
                &[("reason", reason), ("device", "bad-1"), ("source", "mqtt")]
            ),
            Some(want),
            "{reason}\n{}",
            daemon.log_text()
        );
    }
    assert_eq!(
        daemon.metric_with("fixgate_ingest_rejected_total", &[("reason", "device_id")]),
        Some(1.0)
    );
    assert_eq!(daemon.metric("fixgate_fixes_dropped_total"), None);
    let log = daemon.log_text();
    assert!(log.contains("input rejected"), "{log}");
}

#[test]
fn logins_are_checked_and_refusals_counted_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(
        dir.path(),
        "[mqtt.users]\n\"bus-1\" = \"right-password\"\n",
        "",
    );
    let feed = SseClient::connect(daemon.port, "", None);
    let topic = "fleet/x/device/bus-1/fix";
    assert!(!mosquitto_pub(
        mqtt,
        topic,
        json_fix(1, 1).as_bytes(),
        Some(("bus-1", "wrong"))
    ));
    assert!(!mosquitto_pub(
        mqtt,
        topic,
        json_fix(1, 1).as_bytes(),
        Some(("bus-9", "right-password"))
    ));
    assert!(!mosquitto_pub(mqtt, topic, json_fix(1, 1).as_bytes(), None));
    assert!(mosquitto_pub(
        mqtt,
        topic,
        json_fix(3, 1).as_bytes(),
        Some(("bus-1", "right-password"))
    ));
    let got = feed.take("position", 1, WAIT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["lat"], 52.0903);
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "bad_password"), ("device", "bus-1")]
        ),
        Some(1.0)
    );
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "unknown_user"), ("device", "unknown")]
        ),
        Some(1.0)
    );
    // The anonymous attempt: told it is not authorised, counted as such.
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "no_credentials"), ("device", "unknown")]
        ),
        Some(1.0)
    );
    // A device retrying a wrong password is counted every time and logged
    // once a minute.
    for _ in 0..3 {
        assert!(!mosquitto_pub(
            mqtt,
            topic,
            json_fix(1, 1).as_bytes(),
            Some(("bus-1", "wrong"))
        ));
    }
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "bad_password"), ("device", "bus-1")]
        ),
        Some(4.0)
    );
    let log = daemon.log_text();
    assert_eq!(log.matches("reason=\"bad_password\"").count(), 1, "{log}");
    assert_eq!(daemon.metric("fixgate_mqtt_broker_errors_total"), None);
}

#[test]
fn a_late_fix_is_kept_as_history_and_never_moves_the_live_position_back() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    let feed = SseClient::connect(daemon.port, "", None);
    let topic = "fleet/x/device/van-2/fix";
    assert!(mosquitto_pub(mqtt, topic, json_fix(5, 10).as_bytes(), None));
    // Buffered while offline, published later: older than the live one.
    assert!(mosquitto_pub(
        mqtt,
        topic,
        json_fix(4, 300).as_bytes(),
        None
    ));
    let got = feed.take("position", 2, WAIT);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].json().get("historic"), None);
    assert_eq!(got[1].json()["historic"], true);
    let all = devices(&daemon);
    assert_eq!(device(&all, "van-2").unwrap()["fix"]["lat"], 52.0905);
    assert_eq!(
        daemon.metric_with("fixgate_fixes_accepted_total", &[("kind", "historic")]),
        Some(1.0)
    );
}

#[test]
fn a_silent_device_goes_offline_and_comes_back_online() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "[devices]\noffline_after = \"2s\"\n");
    let feed = SseClient::connect(daemon.port, "", None);
    let topic = "fleet/x/device/tram-1/fix";
    assert!(mosquitto_pub(mqtt, topic, json_fix(1, 1).as_bytes(), None));
    let online = feed.take("status", 1, WAIT);
    assert_eq!(online[0].json()["status"], "online");
    let offline = feed.take("status", 1, WAIT);
    assert_eq!(offline.len(), 1, "{}", daemon.log_text());
    assert_eq!(offline[0].json()["status"], "offline");
    assert_eq!(
        device(&devices(&daemon), "tram-1").unwrap()["status"],
        "offline"
    );
    assert!(mosquitto_pub(mqtt, topic, json_fix(2, 0).as_bytes(), None));
    let back = feed.take("status", 1, WAIT);
    assert_eq!(back[0].json()["status"], "online");
}

/// Waits until the gateway's subscription to its external broker is acknowledged.
fn wait_subscribed(daemon: &Daemon) {
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.metric("fixgate_mqtt_subscribed") != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn external(broker: &Mosquitto, extra: &str) -> String {
    format!(
        "[mqtt]\nbroker = \"external\"\nhost = \"127.0.0.1\"\nport = {}\nkeep_alive = \"5s\"\n{extra}",
        broker.port
    )
}

#[test]
fn an_external_mosquitto_broker_with_a_persistent_session() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let config = external(&broker, "client_id = \"gw-persist\"\n");
    let daemon = Daemon::start(dir.path(), &config);
    wait_subscribed(&daemon);
    let feed = SseClient::connect(daemon.port, "", None);
    assert!(mosquitto_pub(
        broker.port,
        "fleet/x/device/ext-1/fix",
        json_fix(1, 20).as_bytes(),
        None
    ));
    assert_eq!(
        feed.take("position", 1, WAIT).len(),
        1,
        "{}",
        daemon.log_text()
    );
    let (port, config) = (daemon.port, daemon.config.clone());
    assert_eq!(daemon.terminate().code(), Some(0));

    // Published while the gateway is down: the broker keeps them for our session.
    for i in 2..=4 {
        assert!(mosquitto_pub(
            broker.port,
            "fleet/x/device/ext-1/fix",
            json_fix(i, 20 - i64::from(i)).as_bytes(),
            None
        ));
    }
    let daemon = Daemon::spawn(dir.path(), config, port);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let all = devices(&daemon);
        if device(&all, "ext-1").is_some_and(|d| d["fix"]["lat"] == 52.0904) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{all}\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_gateways_split_one_brokers_messages_with_a_shared_subscription() {
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(broker_dir.path());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start(
        dir_a.path(),
        &external(&broker, "share_group = \"depot\"\nclient_id = \"gw-a\"\n"),
    );
    let b = Daemon::start(
        dir_b.path(),
        &external(&broker, "share_group = \"depot\"\nclient_id = \"gw-b\"\n"),
    );
    wait_subscribed(&a);
    wait_subscribed(&b);
    let n = 40;
    for i in 0..n {
        let topic = format!("fleet/x/device/dev-{}/fix", i % 8);
        assert!(mosquitto_pub(
            broker.port,
            &topic,
            json_fix(i, 100 - i64::from(i)).as_bytes(),
            None
        ));
    }
    let count = |d: &Daemon| {
        d.metric_with("fixgate_fixes_accepted_total", &[("source", "mqtt")])
            .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + WAIT;
    while count(&a) + count(&b) < f64::from(n) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (got_a, got_b) = (count(&a), count(&b));
    // Each message reaches exactly one gateway, and both get some.
    assert_eq!(got_a + got_b, f64::from(n), "a {got_a} b {got_b}");
    assert!(got_a > 0.0 && got_b > 0.0, "a {got_a} b {got_b}");
    eprintln!("shared subscription split {n} messages: gateway a {got_a}, gateway b {got_b}");
}

#[test]
fn an_external_broker_over_tls_with_our_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, ca) = Mosquitto::start_tls(dir.path());
    let config = format!(
        "[mqtt]\nbroker = \"external\"\nhost = \"localhost\"\nport = {}\ntls = true\nca_file = \"{}\"\n",
        broker.port,
        ca.display()
    );
    let daemon = Daemon::start(dir.path(), &config);
    wait_subscribed(&daemon);
    let feed = SseClient::connect(daemon.port, "", None);
    let ca_arg = ca.display().to_string();
    assert!(common::mosquitto_pub_args(
        broker.port,
        "fleet/x/device/tls-1/fix",
        json_fix(1, 3).as_bytes(),
        None,
        &["--cafile", &ca_arg]
    ));
    let got = feed.take("position", 1, WAIT);
    assert_eq!(got.len(), 1, "{}", daemon.log_text());
    assert_eq!(got[0].json()["device"], "tls-1");
    assert_eq!(daemon.metric("fixgate_mqtt_connected"), Some(1.0));
}

#[test]
fn fixgate_simulate_publishes_a_fleet_with_outages_and_bad_payloads_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fixgate"))
        .args([
            "simulate",
            "--mqtt",
            &format!("127.0.0.1:{mqtt}"),
            "--devices",
            "6",
        ])
        .args([
            "--rate",
            "4",
            "--duration",
            "5s",
            "--seed",
            "7",
            "--bad-every",
            "9",
        ])
        .args(["--offline-every", "3s", "--offline-for", "1s"])
        .output()
        .expect("fixgate simulate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let (sent, bad, acked) = (
        summary_field(&summary, "sent"),
        summary_field(&summary, "bad"),
        summary_field(&summary, "acked"),
    );
    assert!(bad > 0.0 && acked == sent, "{summary}");
    // `sent` leaves out what devices still held offline at the end.
    let good = sent - bad;
    let deadline = std::time::Instant::now() + WAIT;
    let stored = |d: &Daemon| {
        d.metric_with("fixgate_fixes_accepted_total", &[("source", "mqtt")])
            .unwrap_or(0.0)
    };
    while stored(&daemon) < good && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every good message is stored; every bad one is refused with a reason
    // (a latitude of 123° at the intake, as `invalid_value`, like the rest).
    let rejected = daemon
        .metric("fixgate_ingest_rejected_total")
        .unwrap_or(0.0);
    let invalid = daemon
        .metric_with("fixgate_fixes_dropped_total", &[("reason", "invalid")])
        .unwrap_or(0.0);
    assert_eq!(stored(&daemon), good, "{summary}\n{}", daemon.log_text());
    assert_eq!(rejected + invalid, bad, "{summary}");
    assert_eq!(
        daemon.metric("fixgate_fixes_dropped_total").unwrap_or(0.0),
        invalid,
        "no other drops"
    );
    let all = devices(&daemon);
    assert_eq!(all["devices"].as_array().unwrap().len(), 6, "{all}");
}

#[test]
fn a_restart_neither_repeats_online_nor_re_accepts_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    let topic = "fleet/x/device/bus-3/fix";
    let first = json_fix(1, 5);
    assert!(mosquitto_pub(mqtt, topic, first.as_bytes(), None));
    let before = daemon.wait_head(daemon.base() + 2, WAIT);
    let (port, config) = (daemon.port, daemon.config.clone());
    assert_eq!(daemon.terminate().code(), Some(0));

    let daemon = Daemon::spawn(dir.path(), config, port);
    common::wait_port(mqtt);
    // The same message again (a QoS 1 redelivery), then a new fix.
    assert!(mosquitto_pub(mqtt, topic, first.as_bytes(), None));
    assert!(mosquitto_pub(mqtt, topic, json_fix(2, 4).as_bytes(), None));
    // The redelivery comes first: once the new fix is in, it was judged.
    let head = daemon.wait_head(before + 1, WAIT);
    assert_eq!(daemon.head(), before + 1, "only the new position is stored");
    assert_eq!(head, before + 1);
    assert_eq!(
        daemon.metric_with("fixgate_fixes_dropped_total", &[("reason", "duplicate")]),
        Some(1.0)
    );
    assert_eq!(
        daemon.metric("fixgate_device_status_total"),
        None,
        "no new status"
    );
}

#[test]
fn a_burst_from_many_devices_at_once_is_stored_whole_and_intake_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    let (clients, each) = (4, 1500);
    let base = Utc::now() - chrono::Duration::seconds(each + 10);
    let children: Vec<_> = (0..clients)
        .map(|c| {
            let mut child = std::process::Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &mqtt.to_string(), "-q", "1", "-l"])
                .args(["-t", &format!("fleet/x/device/burst-{c}/fix")])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("mosquitto_pub");
            let mut lines = String::new();
            for i in 0..each {
                let t = (base + chrono::Duration::seconds(i)).timestamp_millis();
                lines.push_str(&format!(
                    "{{\"time\":{t},\"lat\":{},\"lon\":5.1}}\n",
                    52.0 + i as f64 * 1e-5
                ));
            }
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                use std::io::Write;
                stdin.write_all(lines.as_bytes()).unwrap();
            });
            child
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let want = f64::from(clients * each as u32);
    let stored = |d: &Daemon| {
        d.metric_with("fixgate_fixes_accepted_total", &[("source", "mqtt")])
            .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stored(&daemon) < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stored(&daemon), want, "{}", daemon.log_text());
    // Back-pressure, not loss: nothing was refused or dropped on the way.
    assert_eq!(daemon.metric("fixgate_mqtt_broker_errors_total"), None);
    assert_eq!(daemon.metric("fixgate_ingest_rejected_total"), None);
    // And the intake is still alive after the burst.
    let feed = SseClient::connect(daemon.port, "", None);
    assert!(mosquitto_pub(
        mqtt,
        "fleet/x/device/after/fix",
        json_fix(1, 1).as_bytes(),
        None
    ));
    assert_eq!(feed.take("position", 1, WAIT).len(), 1);
}

#[test]
fn impossible_values_are_refused_and_counted_for_their_device() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    let topic = "fleet/x/device/wild-1/fix";
    let now = Utc::now().timestamp_millis();
    for extra in [r#""alt":1e308"#, r#""speed":1e12"#, r#""hdop":1e9"#] {
        let payload = format!(r#"{{"time":{now},"lat":52.1,"lon":5.1,{extra}}}"#);
        assert!(mosquitto_pub(mqtt, topic, payload.as_bytes(), None));
    }
    // OwnTracks names its own fields: `vel` in km/h.
    assert!(mosquitto_pub(
        mqtt,
        "owntracks/jane/wild-1",
        br#"{"_type":"location","lat":52.1,"lon":5.1,"tst":1795428010,"vel":1e12}"#,
        None
    ));
    assert_eq!(
        daemon.wait_metric(
            "fixgate_ingest_rejected_total",
            &[("reason", "invalid_value"), ("source", "mqtt")],
            4.0
        ),
        Some(4.0),
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "invalid_value"), ("device", "wild-1")]
        ),
        Some(3.0)
    );
    let log = daemon.log_text();
    assert!(log.contains("invalid `alt`: 1e308 is outside"), "{log}");
    assert_eq!(daemon.metric("fixgate_fixes_accepted_total"), None);
}

/// Publishes one message to each of `topics` with `mosquitto_pub`, from
/// `workers` threads at once; returns how many were acknowledged.
fn publish_each(mqtt: u16, topics: Vec<(String, Vec<u8>)>, workers: usize) -> usize {
    let topics = std::sync::Arc::new(std::sync::Mutex::new(topics));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let topics = topics.clone();
            std::thread::spawn(move || {
                let mut acked = 0;
                loop {
                    let next = {
                        let mut topics = topics.lock().unwrap();
                        let n = topics.len();
                        topics.pop().map(|t| (n, t))
                    };
                    let Some((n, (topic, payload))) = next else {
                        return acked;
                    };
                    // rumqttd 0.20 now and then loses a connection of
                    // such a quick succession ("The connection was lost"):
                    // a device would publish again, and so does this.
                    let ok = (0..3).any(|attempt| {
                        let id = format!("flood-{n}-{attempt}");
                        common::mosquitto_pub_args(mqtt, &topic, &payload, None, &["-i", &id])
                    });
                    acked += usize::from(ok);
                }
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

#[test]
fn a_flood_of_invented_names_leaves_metrics_and_logs_small() {
    let dir = tempfile::tempdir().unwrap();
    // A small fleet's gateway: 100 devices, so 400 device-labelled series.
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "[devices]\nmax_devices = 100\n");
    let names = 5000;
    let mut topics: Vec<(String, Vec<u8>)> = (0..names)
        .map(|i| {
            let topic = format!("fleet/x/device/inv-{i}/fix");
            // Broken JSON, and NMEA with a bad checksum, which goes through
            // a decoder of the device's own (and its counters).
            let payload: &[u8] = if i % 2 == 0 {
                br#"{"lat": 52.1, "lon":"#
            } else {
                b"$GPGGA,120000,4500.00,N,00100.00,E,1,05,1.0,10.0,M,,M,,*00\r\n"
            };
            (topic, payload.to_vec())
        })
        .collect();
    // And a topic level of 10 KB, which is no device id.
    topics.push((
        format!("fleet/x/device/{}/fix", "n".repeat(10_000)),
        json_fix(1, 1).into_bytes(),
    ));
    let sent = topics.len();
    let started = std::time::Instant::now();
    assert_eq!(publish_each(mqtt, topics, 6), sent);
    eprintln!("{sent} messages published in {:?}", started.elapsed());
    // At least: a message published again may have arrived the first time.
    let half = f64::from(names / 2);
    let nmea = daemon.wait_metric("fixgate_nmea_rejected_total", &[], half);
    assert!(nmea >= Some(half), "{nmea:?}\n{}", daemon.log_text());
    let malformed = daemon.wait_metric(
        "fixgate_ingest_rejected_total",
        &[("reason", "malformed")],
        half,
    );
    assert!(malformed >= Some(half), "{malformed:?}");
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "device_id"), ("device", "(none)")]
        ),
        Some(1.0)
    );

    let scrape = common::scrape(daemon.port);
    eprintln!("after {names} invented names over MQTT: {scrape:?}");
    assert!(scrape.device_series <= 400 + 10, "{scrape:?}");
    assert!(scrape.bytes < 128 * 1024, "{scrape:?}");
    assert!(scrape.took < Duration::from_secs(1), "{scrape:?}");
    assert!(
        daemon
            .metric_with("fixgate_nmea_rejected_total", &[("device", "(other)")])
            .is_some_and(|n| n > 0.0)
    );

    let log = daemon.log_text();
    let lines = |marker: &str| log.lines().filter(|l| l.contains(marker)).count();
    let malformed = lines("reason=\"malformed\"");
    let nmea = lines("NMEA input rejected");
    let device_id = lines("reason=\"device_id\"");
    eprintln!("log lines: {malformed} malformed, {nmea} NMEA, {device_id} device_id");
    for (what, n) in [
        ("malformed", malformed),
        ("NMEA", nmea),
        ("device_id", device_id),
    ] {
        assert!((1..=10).contains(&n), "{what}: {n} lines\n{log}");
    }
    let longest = log.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(longest <= 1000, "a line of {longest} characters");
}

/// Logins of every form: a device whose password is in a file, one whose
/// password is a systemd credential, and two with stored digests (a
/// dispatcher that may publish for any device, a screen that only reads).
/// Returns the `[mqtt]` keys and the credentials directory.
fn logins(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let file = dir.join("bus-1.pw");
    std::fs::write(&file, "bus-1-secret\n").unwrap();
    let credentials = dir.join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("mqtt-bus-2"), "bus-2-secret").unwrap();
    let keys = format!(
        r#"
[[mqtt.login]]
user = "bus-1"
password_file = "{}"
subscribe = ["devices/{{user}}/cmd"]
[[mqtt.login]]
user = "bus-2"
password_credential = "mqtt-bus-2"
[[mqtt.login]]
user = "dispatch"
# printf %s dispatch-secret | sha256sum
password_hash = "sha256:6308afcf2ea595817c89986aba87a3e3ee02979f81040dd895fe92228bb6be86"
publish = ["*"]
[[mqtt.login]]
user = "screen"
# printf %s screen-secret | sha256sum
password_hash = "sha256:41d9fa3e56cb3daebc6632600c8499398c2816b9234d3e9d93432d55e7c69c27"
publish = []
subscribe = ["fleet/depot-1/#"]
"#,
        file.display()
    );
    (keys, credentials)
}

/// A daemon with the embedded broker and [`logins`]; its MQTT port.
fn start_with_logins(dir: &std::path::Path) -> (Daemon, u16) {
    let (keys, credentials) = logins(dir);
    let mqtt = common::free_port();
    let (config, port) = Daemon::write_config(
        dir,
        "",
        &format!("[mqtt]\nbroker = \"embedded\"\nlisten = \"127.0.0.1:{mqtt}\"\n{keys}"),
    );
    let daemon = Daemon::spawn_env(
        dir,
        config,
        port,
        &[("CREDENTIALS_DIRECTORY", credentials.as_os_str())],
    );
    common::wait_port(mqtt);
    (daemon, mqtt)
}

const BUS_1: Option<(&str, &str)> = Some(("bus-1", "bus-1-secret"));
const BUS_2: Option<(&str, &str)> = Some(("bus-2", "bus-2-secret"));
const DISPATCH: Option<(&str, &str)> = Some(("dispatch", "dispatch-secret"));
const SCREEN: Option<(&str, &str)> = Some(("screen", "screen-secret"));

/// A fix at `lat` `age_s` seconds ago, naming `device` in the payload if given.
fn fix_at(lat: f64, age_s: i64, device: Option<&str>) -> String {
    let time = (Utc::now() - chrono::Duration::seconds(age_s))
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let named = device.map_or(String::new(), |d| format!(r#""device":"{d}","#));
    format!(r#"{{{named}"time":"{time}","lat":{lat},"lon":5.12,"hdop":0.9,"sats":9}}"#)
}

/// Issue 18: a device login spoofed fixes for another device, which made
/// that device's real fixes drop as `speed_jump`. Now a login publishes only
/// for the devices of its scope: a spoof is acknowledged (MQTT 3.1.1 has no
/// negative ack) but counted and dropped, and the victim's fixes go on.
#[test]
fn a_device_login_publishes_only_for_itself_and_a_spoof_disturbs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_logins(dir.path());
    let bus_2_topic = "fleet/depot-1/device/bus-2/fix";
    // bus-1 claims bus-2 is 100 km away: acknowledged, refused.
    assert!(mosquitto_pub(
        mqtt,
        bus_2_topic,
        fix_at(53.0, 4, None).as_bytes(),
        BUS_1
    ));
    assert_eq!(
        daemon.wait_metric(
            "fixgate_mqtt_refused_total",
            &[("reason", "publish_scope")],
            1.0
        ),
        Some(1.0),
        "{}",
        daemon.log_text()
    );
    // bus-2's real fix: had the spoof been stored, this would be a jump of
    // 100 km in a second.
    assert!(mosquitto_pub(
        mqtt,
        bus_2_topic,
        fix_at(52.0901, 3, None).as_bytes(),
        BUS_2
    ));
    // bus-1 for itself: stored.
    assert!(mosquitto_pub(
        mqtt,
        "fleet/depot-1/device/bus-1/fix",
        fix_at(52.2, 3, None).as_bytes(),
        BUS_1
    ));
    // Again, and once more through its own topic naming bus-2 in the
    // payload (refused as before, `device_mismatch`), and once to a topic
    // that names no device (bus-1 may publish only for itself).
    assert!(mosquitto_pub(
        mqtt,
        bus_2_topic,
        fix_at(53.0, 2, None).as_bytes(),
        BUS_1
    ));
    assert!(mosquitto_pub(
        mqtt,
        "fleet/depot-1/device/bus-1/fix",
        fix_at(53.0, 2, Some("bus-2")).as_bytes(),
        BUS_1
    ));
    assert!(mosquitto_pub(mqtt, "devices/bus-2/cmd", b"reboot", BUS_1));
    // bus-2's next real fix is accepted.
    assert!(mosquitto_pub(
        mqtt,
        bus_2_topic,
        fix_at(52.0902, 1, None).as_bytes(),
        BUS_2
    ));
    assert_eq!(
        daemon.wait_metric("fixgate_fixes_accepted_total", &[("source", "mqtt")], 3.0),
        Some(3.0),
        "{}",
        daemon.log_text()
    );
    let all = devices(&daemon);
    let bus_2 = device(&all, "bus-2").expect("bus-2 in /api/devices");
    assert_eq!(bus_2["fix"]["lat"], 52.0902, "{all}");
    assert_eq!(device(&all, "bus-1").expect("bus-1")["fix"]["lat"], 52.2);
    assert_eq!(
        daemon.metric_with("fixgate_fixes_dropped_total", &[("reason", "speed_jump")]),
        None
    );
    assert_eq!(
        daemon.metric_with("fixgate_mqtt_refused_total", &[("reason", "publish_scope")]),
        Some(3.0)
    );
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[
                ("source", "mqtt"),
                ("reason", "not_allowed"),
                ("device", "bus-2")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "not_allowed"), ("device", "(none)")]
        ),
        Some(1.0),
        "the command topic names no device"
    );
    assert_eq!(
        daemon.wait_metric(
            "fixgate_ingest_rejected_total",
            &[("reason", "device_mismatch")],
            1.0
        ),
        Some(1.0)
    );
    let log = daemon.log_text();
    assert_eq!(
        log.matches("reason=\"publish_scope\"").count(),
        1,
        "refusals are logged once a minute:\n{log}"
    );
    for secret in ["bus-1-secret", "bus-2-secret", "6308afcf"] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

/// Subscriptions within a login's scope are granted and get what others
/// publish there from then on (accepted messages only, nothing retained);
/// one beyond it, `#` above all, is refused and `mosquitto_sub` says so.
#[test]
fn subscriptions_within_a_logins_scope_receive_what_others_publish() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_logins(dir.path());
    // A retained message from before the screen connects: never replayed.
    assert!(common::mosquitto_pub_args(
        mqtt,
        "fleet/depot-1/device/bus-7/fix",
        fix_at(52.3, 9, None).as_bytes(),
        DISPATCH,
        &["-r"]
    ));
    let screen = MosquittoSub::start(mqtt, &["fleet/depot-1/#"], SCREEN, &["-C", "2"]);
    wait_subscriptions(&daemon, 1.0);
    let own = fix_at(52.0901, 3, None);
    assert!(mosquitto_pub(
        mqtt,
        "fleet/depot-1/device/bus-1/fix",
        own.as_bytes(),
        BUS_1
    ));
    // Neither a spoof refused for the scope nor one refused for its payload
    // reaches the screen.
    assert!(mosquitto_pub(
        mqtt,
        "fleet/depot-1/device/bus-2/fix",
        fix_at(53.0, 2, None).as_bytes(),
        BUS_1
    ));
    assert!(mosquitto_pub(
        mqtt,
        "fleet/depot-1/device/bus-1/fix",
        fix_at(53.0, 2, Some("bus-2")).as_bytes(),
        BUS_1
    ));
    let dispatched = fix_at(52.0902, 1, None);
    assert!(mosquitto_pub(
        mqtt,
        "fleet/depot-1/device/bus-7/fix",
        dispatched.as_bytes(),
        DISPATCH
    ));
    let first = screen.line(WAIT).expect("the screen's first message");
    let second = screen.line(WAIT).expect("the screen's second message");
    assert_eq!(first, format!("fleet/depot-1/device/bus-1/fix {own}"));
    assert_eq!(
        second,
        format!("fleet/depot-1/device/bus-7/fix {dispatched}")
    );

    // A device reads its own command topic, written by the dispatcher; a
    // command from another device is refused (bus-2 may publish only for
    // itself, and a command topic names no device).
    let mut screen = screen;
    assert!(
        screen.wait_exit(WAIT).is_some(),
        "-C 2: it leaves after two"
    );
    wait_subscriptions(&daemon, 0.0);
    let commands = MosquittoSub::start(mqtt, &["devices/bus-1/cmd"], BUS_1, &["-C", "1"]);
    wait_subscriptions(&daemon, 1.0);
    assert!(mosquitto_pub(
        mqtt,
        "devices/bus-1/cmd",
        b"from bus-2",
        BUS_2
    ));
    assert!(mosquitto_pub(
        mqtt,
        "devices/bus-1/cmd",
        b"reboot",
        DISPATCH
    ));
    assert_eq!(
        commands.line(WAIT).as_deref(),
        Some("devices/bus-1/cmd reboot")
    );

    // Beyond the scope: `#`, another device's command topic.
    for (filter, who) in [("#", BUS_1), ("devices/bus-2/cmd", BUS_1), ("#", SCREEN)] {
        let mut refused = MosquittoSub::start(mqtt, &[filter], who, &[]);
        let (_, stderr) = refused
            .wait_exit(WAIT)
            .unwrap_or_else(|| panic!("mosquitto_sub -t {filter} did not leave"));
        assert!(
            stderr.contains("All subscription requests were denied."),
            "{filter}: {stderr}"
        );
    }
    assert_eq!(
        daemon.metric_with(
            "fixgate_mqtt_refused_total",
            &[("reason", "subscribe_scope")]
        ),
        Some(3.0)
    );
    assert_eq!(
        daemon.metric("fixgate_mqtt_passed_on_total"),
        Some(3.0),
        "two positions and one command"
    );
    // Those that got what they asked for have left; nothing of them stays.
    drop((screen, commands));
    wait_subscriptions(&daemon, 0.0);
}

/// Waits until the broker holds `n` subscriptions in all.
fn wait_subscriptions(daemon: &Daemon, n: f64) {
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.metric("fixgate_mqtt_subscriptions") != Some(n) {
        assert!(
            std::time::Instant::now() < deadline,
            "subscriptions: {:?}, not {n}\n{}",
            daemon.metric("fixgate_mqtt_subscriptions"),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// At start-up on an address others can reach, the daemon says which logins
/// may publish for any device, and what anonymous clients may read.
#[test]
fn logins_that_may_publish_for_any_device_are_named_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, credentials) = logins(dir.path());
    // 0.0.0.0 to be reachable from elsewhere; the test talks to no one.
    let mqtt = common::free_port();
    let (config, port) = Daemon::write_config(
        dir.path(),
        "",
        &format!(
            "[mqtt]\nbroker = \"embedded\"\nlisten = \"0.0.0.0:{mqtt}\"\n{keys}\n[mqtt.users]\n\"old-tracker\" = \"old-password\"\n"
        ),
    );
    let daemon = Daemon::spawn_env(
        dir.path(),
        config,
        port,
        &[("CREDENTIALS_DIRECTORY", credentials.as_os_str())],
    );
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("MQTT logins that may publish for any device"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(r#"["dispatch", "old-tracker"]"#), "{line}");
    assert!(!log.contains("old-password"), "{log}");
    assert!(!log.contains("accepts anonymous clients"), "{log}");
    drop(daemon);

    let dir = tempfile::tempdir().unwrap();
    let mqtt = common::free_port();
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[mqtt]\nbroker = \"embedded\"\nlisten = \"0.0.0.0:{mqtt}\"\nanonymous_subscribe = [\"screens/#\"]\n"
        ),
    );
    let log = daemon.log_text();
    assert!(
        log.contains("the MQTT broker accepts anonymous clients"),
        "{log}"
    );
    assert!(
        log.contains("anonymous MQTT clients may subscribe") && log.contains("screens/#"),
        "{log}"
    );
}
