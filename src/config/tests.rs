use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::store::budget::Thin;

fn problems(source: &str) -> Vec<String> {
    match parse(source, "t.toml") {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(err) => err.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn an_empty_file_is_every_default() {
    assert_eq!(parse("", "t.toml"), Ok(Config::default()));
}

#[test]
fn the_shipped_configs_are_valid() {
    let mut installed = parse(include_str!("../../config/fixgate.toml"), "fixgate.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    // Its tokens are the package's own (systemd credentials it generated);
    // everything else is at its default.
    let tokens = std::mem::take(&mut installed.access.tokens);
    let secrets: Vec<_> = tokens
        .iter()
        .map(|t| (t.name.as_str(), &t.secret))
        .collect();
    assert_eq!(
        secrets,
        [
            ("read", &TokenSecret::Credential("read.token".into())),
            ("write", &TokenSecret::Credential("write.token".into())),
        ]
    );
    assert!(
        installed.access.anonymous.is_empty(),
        "nothing anonymous beyond loopback"
    );
    assert_eq!(
        installed,
        Config::default(),
        "fixgate.toml documents the defaults"
    );
    let demo = parse(include_str!("../../config/demo.toml"), "demo.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(demo.demo.map(|d| d.vehicles), Some(5));
    assert_eq!(demo.gateway.clock, ClockTrust::Always);
    assert_eq!(demo.feed.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn every_key_is_read() {
    let config = parse(
        r#"
[gateway]
id = "depot-3"
clock = "never"
[store]
path = "/tmp/s"
flush_interval = "250ms"
cache_mb = 4
max_size_mb = 64
high_water = 0.7
min_free_mb = 0
thin = "time"
thin_interval = "1m"
[pipeline]
queue = 64
[feed]
listen = "[::1]:9000"
keepalive = "5s"
retry = "1s"
max_clients = 8
[log]
level = "warn,fixgate::sources=debug"
[[serial]]
device = "bus-1"
path = "/dev/ttyUSB0"
baud = 4800
silence_timeout = "3s"
reconnect_min = "100ms"
reconnect_max = "2s"
[[replay]]
device = "file-1"
path = "a.nmea"
pace = "5Hz"
loop = true
[demo]
vehicles = 2
center = [1, 2.5]
rate_hz = 2
"#,
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.gateway.id.as_str(), "depot-3");
    assert_eq!(config.gateway.clock, ClockTrust::Never);
    assert_eq!(config.store.path, PathBuf::from("/tmp/s"));
    assert_eq!(config.store.flush_interval, Duration::from_millis(250));
    assert_eq!(config.store.cache_mb, 4);
    assert_eq!(config.store.max_size_mb, 64);
    assert_eq!(config.store.high_water, 0.7);
    assert_eq!(config.store.min_free_mb, 0);
    assert_eq!(
        config.store.thin,
        Thin::Time {
            interval: Duration::from_secs(60)
        }
    );
    assert_eq!(config.pipeline.queue, 64);
    assert_eq!(config.feed.listen.to_string(), "[::1]:9000");
    assert_eq!(config.feed.keepalive, Duration::from_secs(5));
    assert_eq!(config.feed.retry, Duration::from_secs(1));
    assert_eq!(config.feed.max_clients, 8);
    assert_eq!(config.log.level, "warn,fixgate::sources=debug");
    let serial = &config.serial[0];
    assert_eq!(
        (serial.device.as_str(), serial.baud, serial.silence_timeout),
        ("bus-1", 4800, Duration::from_secs(3))
    );
    assert_eq!(
        (serial.reconnect_min, serial.reconnect_max),
        (Duration::from_millis(100), Duration::from_secs(2))
    );
    let replay = &config.replay[0];
    assert_eq!((replay.pace, replay.r#loop), (Pace::Rate(5.0), true));
    let demo = config.demo.expect("demo on");
    assert_eq!(
        (demo.vehicles, demo.center, demo.rate_hz),
        (2, [1.0, 2.5], 2.0)
    );
}

#[test]
fn problems_name_file_line_column_and_key() {
    let found = problems("[feed]\nlisten = \"nowhere\"\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("t.toml:2:10: `feed.listen` must be an IP address"),
        "{found:?}"
    );
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let found = problems(
        "[store]\nflush_interval = \"soon\"\ncache_mb = 0\n[feed]\nmax_clients = \"many\"\nlisten_on = 1\n[gateway]\nclock = \"ntp\"\n",
    );
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(found[0].starts_with("t.toml:2:18: `store.flush_interval` \"soon\" is not a duration"));
    assert!(found[1].starts_with("t.toml:3:12: `store.cache_mb` must be between 1 and 1024"));
    assert!(
        found[2].starts_with("t.toml:5:15: `feed.max_clients` must be an integer, not a string")
    );
    assert!(found[3].starts_with("t.toml:6:1: unknown key `listen_on` in [feed]"));
    assert!(found[4].starts_with("t.toml:8:9: `gateway.clock` must be \"auto\""));
}

#[test]
fn sources_need_a_device_and_a_path() {
    let found = problems("[[serial]]\nbaud = 12345\n");
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found.iter().any(|p| p.contains("`serial.device`")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|p| p.contains("`serial.path`")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("t.toml:2:8: `serial.baud` 12345 is not a standard rate"))
    );
}

#[test]
fn device_ids_and_serial_ports_are_unique() {
    let found = problems(
        "[[serial]]\ndevice = \"a\"\npath = \"/dev/x\"\n[[serial]]\ndevice = \"a\"\npath = \"/dev/x\"\n[demo]\nvehicles = 2\n[[replay]]\ndevice = \"demo-2\"\npath = \"f\"\n",
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0]
            .starts_with("t.toml:5:10: duplicate device id `a`; first used at line 2, column 10")
    );
    assert!(found[1].starts_with("t.toml:6:8: serial port /dev/x is already used at line 3"));
    assert!(found[2].contains("`demo-2` is taken by the demo fleet"));
}

#[test]
fn baud_auto_hunts_over_the_common_rates_unless_told_which() {
    let config = parse(
        "[[serial]]\ndevice = \"a\"\npath = \"/dev/x\"\nbaud = \"auto\"\n[[serial]]\ndevice = \"b\"\npath = \"/dev/y\"\nbaud = \"auto\"\nhunt_rates = [115200, 921600, 4800]\nhunt_window = \"700ms\"\n[[serial]]\ndevice = \"c\"\npath = \"/dev/z\"\nbaud = 38400\n",
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let [a, b, c] = config.serial.as_slice() else {
        panic!("three receivers: {:?}", config.serial);
    };
    assert_eq!(
        a.hunt,
        Some(Hunt {
            rates: vec![4800, 9600, 19200, 38400, 57600, 115200],
            window: Duration::from_millis(2500),
        })
    );
    let hunt = b.hunt.as_ref().expect("auto");
    assert_eq!(hunt.rates, [115200, 921600, 4800], "in the order written");
    assert_eq!(hunt.window, Duration::from_millis(700));
    assert_eq!(b.baud, 115200, "the hunt's first rate");
    assert_eq!((c.baud, &c.hunt), (38400, &None));
}

#[test]
fn a_bad_baud_or_hunt_list_is_named_where_it_is_written() {
    let found = problems(
        "[[serial]]\ndevice = \"a\"\npath = \"/dev/x\"\nbaud = \"fast\"\n[[serial]]\ndevice = \"b\"\npath = \"/dev/y\"\nbaud = \"auto\"\nhunt_rates = [9600, 12345, 9600, \"x\"]\nhunt_window = \"10ms\"\n[[serial]]\ndevice = \"c\"\npath = \"/dev/z\"\nbaud = \"auto\"\nhunt_rates = []\n[[serial]]\ndevice = \"d\"\npath = \"/dev/w\"\nbaud = 4800\nhunt_rates = [4800]\n[[serial]]\ndevice = \"e\"\npath = \"/dev/v\"\nbaud = true\nhunt_rates = 9600\n",
    );
    let expected = [
        "t.toml:4:8: `serial.baud` must be a standard rate like 9600 or \"auto\", not \"fast\"",
        "t.toml:9:21: `serial.hunt_rates` 12345 is not a standard rate",
        "t.toml:9:28: `serial.hunt_rates` lists 9600 twice",
        "t.toml:9:34: `serial.hunt_rates` must be an integer, not a string",
        "t.toml:10:15: `serial.hunt_window` must be between 100ms and 1m",
        "t.toml:15:14: `serial.hunt_rates` must list at least one rate",
        "t.toml:20:14: `serial.hunt_rates` applies only with `serial.baud` = \"auto\"",
        "t.toml:24:8: `serial.baud` must be a standard rate like 9600 or \"auto\", not a boolean",
        "t.toml:25:14: `serial.hunt_rates` must be a list of rates like [9600, 38400], not an integer",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (got, want) in found.iter().zip(expected) {
        assert!(got.starts_with(want), "{got}\nwanted {want}");
    }
}

#[test]
fn back_off_must_be_ordered_and_never_zero() {
    let found = problems(
        "[[serial]]\ndevice = \"a\"\npath = \"/dev/x\"\nreconnect_min = \"0s\"\nreconnect_max = \"1s\"\n[[serial]]\ndevice = \"b\"\npath = \"/dev/y\"\nreconnect_min = \"5s\"\nreconnect_max = \"1s\"\n",
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("t.toml:4:17: `serial.reconnect_min` must be between"));
    assert!(
        found[1].starts_with("t.toml:10:17: `serial.reconnect_max` (1s) must not be less than")
    );
}

#[test]
fn syntax_errors_are_located() {
    let found = problems("[feed]\nlisten = \n");
    assert!(found[0].starts_with("t.toml:2:"), "{found:?}");
    assert!(found[0].contains("syntax error"), "{found:?}");
}

#[test]
fn misspelt_log_levels_are_refused() {
    let found = problems("[log]\nlevel = \"inof\"\n");
    assert!(
        found[0].contains("\"inof\" in \"inof\" is not a level"),
        "{found:?}"
    );
    assert!(
        parse(
            "[log]\nlevel = \"DEBUG,fixgate::readers::feed=trace\"\n",
            "t.toml"
        )
        .is_ok()
    );
}

#[test]
fn an_unreadable_file_is_named() {
    let err = load(std::path::Path::new("/nonexistent/fixgate.toml")).expect_err("missing");
    let shown = err.to_string();
    assert!(
        shown.starts_with("/nonexistent/fixgate.toml: cannot read:"),
        "{shown}"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    // The second value sits after a two-byte character: column 16, byte 17.
    let found = problems("[demo]\ncenter = [\"é\", \"x\"]\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[1].starts_with("t.toml:2:16: "), "{found:?}");
}

#[test]
fn the_demo_over_mqtt_needs_the_embedded_broker_without_logins() {
    let demo = parse("[demo]\nvia = \"mqtt\"\n", "t.toml").unwrap();
    assert_eq!(demo.demo.map(|d| d.via), Some(DemoVia::Mqtt));
    let found = problems("[mqtt]\nbroker = \"off\"\n[demo]\nvia = \"mqtt\"\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("t.toml:4:7: "), "{found:?}");
    assert!(found[0].contains("needs the embedded broker"), "{found:?}");
    let found = problems("[mqtt.users]\na = \"long-enough\"\n[demo]\nvia = \"bus\"\n");
    assert!(
        found[0].contains("`demo.via` must be \"nmea\" or \"mqtt\""),
        "{found:?}"
    );
}

#[test]
fn intake_sections_are_read_and_misplaced_keys_named() {
    let config = parse(
        r#"
[mqtt]
broker = "external"
host = "broker.lan"
tls = true
share_group = "depot"
[[mqtt.topic]]
pattern = "t/{user}/{device}"
device = "{user}-{device}"
format = "owntracks"
[http]
token = "long-enough"
[http.tokens]
"van-1" = "own-token"
[filter]
max_speed = false
min_period = "5s"
[devices]
offline_after = "30s"
"#,
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let Broker::External(e) = &config.mqtt.broker else {
        panic!("{:?}", config.mqtt.broker)
    };
    assert_eq!(
        (e.broker.host.as_str(), e.broker.port, e.broker.tls),
        ("broker.lan", 8883, true)
    );
    assert_eq!(e.share_group.as_deref(), Some("depot"));
    assert_eq!(config.mqtt.topics.len(), 1);
    assert_eq!(config.mqtt.topics[0].pattern.filter(), "t/+/+");
    assert_eq!(config.http.tokens.len(), 1);
    assert_eq!(config.filter.max_speed_mps, None);
    assert_eq!(config.filter.min_period, Some(Duration::from_secs(5)));
    assert_eq!(config.devices.offline_after, Duration::from_secs(30));

    let found = problems(
        "[mqtt]\nbroker = \"embedded\"\nhost = \"x\"\n[[mqtt.topic]]\npattern = \"a/{dev}\"\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("t.toml:3:8: `mqtt.host` does not apply"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("t.toml:5:11: `mqtt.topic.pattern`"),
        "{found:?}"
    );
}

#[test]
fn the_embedded_brokers_limits_are_read_and_checked() {
    let config = parse(
        "[mqtt]\nmax_connections = 500\nmax_connections_per_user = 4\nmax_inflight = 8\nconnection_timeout = \"2s\"\n",
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let Broker::Embedded(e) = &config.mqtt.broker else {
        panic!("{:?}", config.mqtt.broker)
    };
    assert_eq!(
        (
            e.max_connections,
            e.max_connections_per_user,
            e.max_inflight
        ),
        (500, 4, 8)
    );
    assert_eq!(e.connection_timeout, Duration::from_secs(2));

    let found = problems("[mqtt]\nmax_connections_per_user = 0\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("t.toml:2:28: `mqtt.max_connections_per_user`"),
        "{found:?}"
    );
    let found = problems("[mqtt]\nbroker = \"external\"\nmax_connections_per_user = 3\n");
    assert!(
        found[0].contains("`mqtt.max_connections_per_user` does not apply"),
        "{found:?}"
    );
}

#[test]
fn uplink_sections_are_read_and_misplaced_keys_named() {
    let config = parse(
        r#"
[uplink]
transport = "mqtt"
host = "iot.example.com"
tls = true
ca_file = "/etc/fixgate/ca.pem"
cert_file = "/etc/fixgate/gw.crt"
key_file = "/etc/fixgate/gw.key"
topic = "fleet/{gateway}/up"
max_records = 500
max_age = "2s"
backlog_rate = 100
max_in_flight = 4
ack_timeout = "10s"
retry_min = "2s"
retry_max = "1m"
"#,
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let UplinkTransport::Mqtt(m) = &config.uplink.transport else {
        panic!("{:?}", config.uplink.transport);
    };
    assert_eq!(
        (m.broker.host.as_str(), m.broker.port, m.broker.tls),
        ("iot.example.com", 8883, true)
    );
    assert_eq!(
        m.client_cert,
        Some(crate::tls::ClientCert {
            cert: PathBuf::from("/etc/fixgate/gw.crt"),
            key: PathBuf::from("/etc/fixgate/gw.key"),
        })
    );
    assert_eq!(m.topic, "fleet/{gateway}/up");
    assert_eq!(config.uplink.max_records, 500);
    assert_eq!(config.uplink.max_age, Duration::from_secs(2));
    assert_eq!(config.uplink.backlog_rate, 100);
    assert_eq!(config.uplink.retry_max, Duration::from_secs(60));

    let config = parse(
        "[uplink]\ntransport = \"http\"\nurl = \"https://cloud.example/b\"\ntoken = \"t0ken\"\n",
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        &config.uplink.transport,
        UplinkTransport::Http(h) if h.url == "https://cloud.example/b" && h.token.as_deref() == Some("t0ken")
    ));

    let found = problems(
        r#"[uplink]
transport = "http"
host = "x"
url = "ftp://x"
cert_file = "/a"
retry_min = "10s"
retry_max = "1s"
"#,
    );
    let expected = [
        "t.toml:3:8: `uplink.host` does not apply with uplink.transport = \"http\"",
        "t.toml:4:7: `uplink.url` must start with http:// or https://, not \"ftp://x\"",
        "t.toml:7:13: `uplink.retry_max` must not be shorter than `uplink.retry_min`",
    ];
    for e in expected {
        assert!(found.iter().any(|f| f == e), "{e} not in {found:#?}");
    }
    let found = problems("[uplink]\ntransport = \"mqtt\"\ncert_file = \"/a\"\n");
    assert!(
        found
            .iter()
            .any(|f| f.contains("`uplink.cert_file` needs `uplink.key_file` too")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.contains("`uplink.cert_file` needs `uplink.tls` = true")),
        "{found:#?}"
    );
    let found = problems("[uplink]\ntransport = \"carrier pigeon\"\n");
    assert!(
        found[0].contains("must be \"mqtt\", \"http\" or \"off\""),
        "{found:#?}"
    );
}

#[test]
fn the_thinning_method_takes_only_its_own_parameter() {
    let thin = |text: &str| parse(&format!("[store]\n{text}\n"), "t.toml").map(|c| c.store.thin);
    assert_eq!(
        thin("thin = \"distance\"\nthin_tolerance = 25"),
        Ok(Thin::Distance { min_m: 25.0 })
    );
    assert_eq!(thin("thin = false"), Ok(Thin::Off));
    assert_eq!(
        thin("thin_tolerance = 3.5"),
        Ok(Thin::DouglasPeucker { tolerance_m: 3.5 })
    );
    let found = problems("[store]\nthin = \"time\"\nthin_tolerance = 5.0\n");
    assert!(
        found[0].starts_with("t.toml:3:18: `store.thin_tolerance` is only used with"),
        "{found:?}"
    );
    let found = problems(
        "[store]\nthin = \"sparse\"\nthin_interval = \"5s\"\nmax_size_mb = 1\nhigh_water = 1.5\n",
    );
    let all = found.join("\n");
    for want in [
        "t.toml:2:8: `store.thin` must be \"douglas-peucker\", \"distance\", \"time\" or false, not \"sparse\"",
        "t.toml:3:17: `store.thin_interval` is only used with thin = \"time\"",
        "t.toml:4:15: `store.max_size_mb` must be between 4 and 1048576",
        "t.toml:5:14: `store.high_water` must be between 0.5 and 0.95",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn geofence_keys_and_inline_fences_are_read() {
    use crate::pipeline::geofence::Outline;
    let config = parse(
        r#"
[geofence]
files = ["fences.geojson", "/etc/fixgate/more.geojson"]
enter_fixes = 5
exit_margin_m = 0
hdop_error_m = 4.5
default_error_m = 20
watch_interval = "0s"
[[geofence.fence]]
id = "yard"
name = "Yard"
polygon = [[[5.0, 52.0], [5.01, 52.0], [5.01, 52.01], [5.0, 52.01]], [[5.004, 52.004], [5.006, 52.004], [5.006, 52.006]]]
speed_limit_kmh = 18
[[geofence.fence]]
id = "station"
circle = { lat = 52.0, lon = 5.1, radius_m = 150 }
dwell = "10m"
properties = { colour = "red", floors = [1, 2.5], opened = 1999-05-01, staff = { on_site = true } }
[[geofence.fence]]
id = "islands"
multipolygon = [[[[5.0, 52.0], [5.01, 52.0], [5.0, 52.01]]], [[[6.0, 52.0], [6.01, 52.0], [6.0, 52.01]]]]
"#,
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let g = &config.geofence;
    assert_eq!(
        g.files,
        [
            PathBuf::from("fences.geojson"),
            PathBuf::from("/etc/fixgate/more.geojson")
        ]
    );
    assert_eq!(
        g.options,
        crate::pipeline::geofence::Options {
            enter_fixes: 5,
            exit_margin_m: 0.0,
            hdop_error_m: 4.5,
            default_error_m: 20.0,
        }
    );
    assert_eq!(g.watch_interval, Duration::ZERO);
    let [yard, station, islands] = g.fences.as_slice() else {
        panic!("{:?}", g.fences)
    };
    assert_eq!(
        (yard.id.as_str(), yard.name.as_deref(), yard.speed_limit),
        ("yard", Some("Yard"), Some(5.0))
    );
    let Outline::Area(area) = yard.shape.outline() else {
        panic!()
    };
    assert_eq!(area.0[0].interiors().len(), 1);
    assert_eq!(
        station.shape.outline(),
        &Outline::Circle {
            lat: 52.0,
            lon: 5.1,
            radius_m: 150.0
        }
    );
    assert_eq!(station.dwell, Some(Duration::from_secs(600)));
    assert_eq!(
        serde_json::Value::Object(station.properties.clone()),
        serde_json::json!({
            "colour": "red", "floors": [1, 2.5], "opened": "1999-05-01",
            "staff": { "on_site": true }
        })
    );
    assert!(matches!(islands.shape.outline(), Outline::Area(a) if a.0.len() == 2));
}

#[test]
fn geofence_problems_name_line_column_and_key() {
    let found = problems(
        r#"[geofence]
enter_fixes = 0
watch_interval = "10ms"
files = ["a", 3]
[[geofence.fence]]
id = "a"
colour = "red"
speed_limit_kmh = 0
[[geofence.fence]]
name = "no id"
circle = { lat = 52.0, radius_m = 10, size = 3 }
[[geofence.fence]]
id = "a"
circle = { lat = 52.0, lon = 5.0, radius_m = 10 }
polygon = []
[[geofence.fence]]
id = "pole"
polygon = [[[0, 86], [1, 86], [1, 87]]]
properties = { name = "x", ok = nan }
[[geofence.fence]]
id = "short"
multipolygon = [[[[0, 50], [1, 50]]], [[[0, "x"]]]]
dwell = "0s"
"#,
    );
    let expected = [
        "t.toml:2:15: `geofence.enter_fixes` must be between 1 and 100, not 0",
        "t.toml:3:18: `geofence.watch_interval` must be \"0s\" (do not watch) or at least 100ms",
        "t.toml:4:15: each of `geofence.files` must be a non-empty path string",
        "t.toml:5:1: [[geofence.fence]] needs one of `geofence.fence.circle`, `geofence.fence.polygon` or `geofence.fence.multipolygon`",
        "t.toml:7:1: unknown key `colour` in [[geofence.fence]]",
        "t.toml:8:19: `geofence.fence.speed_limit_kmh` must be a number above 0 and at most 10800, not 0",
        "t.toml:9:1: missing required key `geofence.fence.id` in [[geofence.fence]]",
        "t.toml:11:10: missing required key `geofence.fence.circle.lon` in [geofence.fence.circle]",
        "t.toml:11:39: unknown key `size` in [geofence.fence.circle]",
        "t.toml:13:6: duplicate fence id `a`; first used at line 6, column 6",
        "t.toml:15:11: `geofence.fence.circle` and `geofence.fence.polygon` are both given; a fence has one shape",
        "t.toml:18:11: `geofence.fence.polygon`: polygon 0: latitude 86 is beyond",
        "t.toml:19:16: `geofence.fence.properties.name` is reserved",
        "t.toml:19:33: `geofence.fence.properties.ok` holds a number JSON cannot represent",
        "t.toml:22:41: `geofence.fence.multipolygon`: a position must be [lon, lat], two numbers in degrees",
        "t.toml:23:9: `geofence.fence.dwell` must be between 1ns and 30days, not 0s",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (found, expected) in found.iter().zip(expected) {
        assert!(
            found.starts_with(expected),
            "{found}\n  expected {expected}"
        );
    }
}

#[test]
fn an_inline_fence_shape_is_checked_like_a_files() {
    let found = problems(
        "[[geofence.fence]]\nid = \"s\"\nmultipolygon = [[[[0, 50], [1, 50], [0, 50]]]]\n",
    );
    assert_eq!(
        found,
        [
            "t.toml:3:16: `geofence.fence.multipolygon`: polygon 0, ring 0: a ring needs at least 3 distinct positions, found 2"
        ]
    );
    let found = problems("[[geofence.fence]]\nid = \"s\"\npolygon = []\n");
    assert_eq!(
        found,
        ["t.toml:3:11: `geofence.fence.polygon`: polygon 0 has no rings"]
    );
}

#[test]
fn the_commented_geofence_example_is_valid() {
    // Uncomments the example's keys and tables (not its prose) and reads it.
    let shipped = include_str!("../../config/fixgate.toml");
    let section = &shipped[shipped.find("[geofence]").expect("a [geofence] section")..];
    let keys = [
        "[[",
        "id ",
        "name ",
        "polygon ",
        "speed_limit_kmh ",
        "circle ",
        "dwell ",
        "properties ",
        "files ",
    ];
    let example: String = section
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if keys.iter().any(|k| rest.starts_with(k)) => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let config = parse(&example, "example.toml").unwrap_or_else(|e| panic!("{e}\n{example}"));
    assert_eq!(config.geofence.files.len(), 1);
    assert_eq!(config.geofence.fences.len(), 2);
}

/// `printf %s 's3cret-pass' | sha256sum`
const S3CRET_HASH: &str = "sha256:926d3a2dd68393416b7a8348aaadfe4e0c56de6259e17078a0fa1f4dd6e519ae";

fn embedded(config: &Config) -> &Embedded {
    match &config.mqtt.broker {
        Broker::Embedded(e) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn mqtt_logins_carry_a_hashed_secret_and_a_scope() {
    use crate::sources::mqtt::scope::Publish;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dispatch.pw");
    std::fs::write(&file, "dispatch-secret\n").unwrap();
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("mqtt-screen"), "screen-secret").unwrap();
    let source = format!(
        r#"
[mqtt]
max_subscriptions = 200
max_subscriptions_per_connection = 4
[mqtt.users]
"old-tracker" = "old-password"
[[mqtt.login]]
user = "bus-1"
password_hash = "{S3CRET_HASH}"
subscribe = ["devices/{{user}}/cmd"]
[[mqtt.login]]
user = "dispatch"
password_file = "{}"
publish = ["*"]
subscribe = ["fleet/depot-1/#"]
[[mqtt.login]]
user = "screen"
password_credential = "mqtt-screen"
publish = []
subscribe = ["fleet/#"]
"#,
        file.display()
    );
    let config = read::read_in(&source, "t.toml", Some(credentials.path().to_owned()))
        .unwrap_or_else(|p| panic!("{p:?}"));
    let e = embedded(&config);
    assert_eq!(
        (e.max_subscriptions, e.max_subscriptions_per_connection),
        (200, 4)
    );
    assert_eq!(e.logins.len(), 4);
    let login = |name: &str| &e.logins[name];

    let old = login("old-tracker");
    assert_eq!(old.form, LoginForm::Users);
    assert!(old.secret.verify(b"old-password"));
    assert_eq!(
        old.scope.publish,
        Publish::Any,
        "[mqtt.users]: any device, as before"
    );
    assert!(old.scope.subscribe.is_empty());

    let bus = login("bus-1");
    assert_eq!(bus.form, LoginForm::Login);
    assert!(bus.secret.verify(b"s3cret-pass"));
    assert!(
        !bus.scope.publishes_for_any(),
        "[[mqtt.login]]: only {{user}}"
    );
    assert_eq!(bus.scope.subscribe, vec!["devices/bus-1/cmd".to_owned()]);

    assert!(login("dispatch").secret.verify(b"dispatch-secret"));
    assert!(login("dispatch").scope.publishes_for_any());
    assert!(login("screen").secret.verify(b"screen-secret"));
    assert_eq!(login("screen").scope.publish, Publish::Devices(Vec::new()));
    // Nothing secret in what a log line could print.
    let shown = format!("{config:?}");
    for secret in ["old-password", "s3cret-pass", "dispatch-secret", "926d3a2d"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn anonymous_clients_subscribe_only_where_allowed() {
    let config = parse("[mqtt]\nanonymous_subscribe = [\"screens/#\"]\n", "t.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let e = embedded(&config);
    assert_eq!(e.anonymous.subscribe, vec!["screens/#".to_owned()]);
    assert!(e.anonymous.publishes_for_any());
    assert!(Embedded::default().anonymous.subscribe.is_empty());

    let found = problems(
        "[mqtt]\nanonymous_subscribe = [\"screens/#\"]\n[mqtt.users]\na = \"long-enough\"\n",
    );
    assert!(
        found[0].contains("`mqtt.anonymous_subscribe` applies only without logins"),
        "{found:?}"
    );
    let found = problems("[mqtt]\nanonymous_subscribe = [\"devices/{user}/cmd\", \"a/#/b\"]\n");
    assert!(found[0].contains("{user} needs a login"), "{found:?}");
}

#[test]
fn mqtt_login_mistakes_are_named_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.pw");
    std::fs::write(&short, "tiny-pw\n").unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            "[[mqtt.login]]\nuser = \"a\"\npublish = [\"a\"]\n".into(),
            "t.toml:2:1: [[mqtt.login]] needs its secret: one of password_hash, password_file, password_credential",
        ),
        (
            format!(
                "[[mqtt.login]]\nuser = \"a\"\npassword_hash = \"{S3CRET_HASH}\"\npassword_file = \"/x\"\n"
            ),
            "t.toml:5:17: [[mqtt.login]] takes one secret, not both password_hash and password_file",
        ),
        (
            "[[mqtt.login]]\nuser = \"a\"\npassword_hash = \"s3cret-pass\"\n".into(),
            "t.toml:4:17: `mqtt.login.password_hash`: must be \"sha256:\" followed by 64 hex digits",
        ),
        (
            format!(
                "[[mqtt.login]]\nuser = \"a\"\npassword_file = \"{}\"\n",
                short.display()
            ),
            "shorter than 8 characters",
        ),
        (
            "[[mqtt.login]]\nuser = \"a\"\npassword_file = \"/nonexistent/fixgate.pw\"\n".into(),
            "`mqtt.login.password_file`: cannot read /nonexistent/fixgate.pw",
        ),
        (
            "[[mqtt.login]]\nuser = \"a\"\npassword_credential = \"mqtt-a\"\n".into(),
            "`mqtt.login.password_credential`: $CREDENTIALS_DIRECTORY is not set",
        ),
        (
            format!(
                "[mqtt.users]\na = \"long-enough\"\n[[mqtt.login]]\nuser = \"a\"\npassword_hash = \"{S3CRET_HASH}\"\n"
            ),
            "t.toml:5:8: login \"a\" is configured twice (also in [mqtt.users])",
        ),
        (
            format!("[[mqtt.login]]\nuser = \"bus 1\"\npassword_hash = \"{S3CRET_HASH}\"\n"),
            "publish = [\"{user}\"]",
        ),
        (
            format!("[[mqtt.login]]\nuser = \"#\"\npassword_hash = \"{S3CRET_HASH}\"\n"),
            "t.toml:3:8: [[mqtt.login]] \"#\": login name \"#\" cannot be used",
        ),
        (
            format!(
                "[[mqtt.login]]\nuser = \"a\"\npassword_hash = \"{S3CRET_HASH}\"\npublish = [\"fleet/#\"]\n"
            ),
            "t.toml:5:11: [[mqtt.login]] \"a\": device pattern \"fleet/#\": '/' is in no device id",
        ),
        (
            format!(
                "[[mqtt.login]]\nuser = \"a\"\npassword_hash = \"{S3CRET_HASH}\"\nsubscribe = [\"a/#/b\"]\n"
            ),
            "t.toml:5:13: [[mqtt.login]] \"a\": topic filter \"a/#/b\" is not valid",
        ),
        (
            format!(
                "[[mqtt.login]]\nuser = \"a\"\npassword_hash = \"{S3CRET_HASH}\"\nsubscribe = [\"d/{{device}}\"]\n"
            ),
            "the only placeholder is {user}",
        ),
    ];
    for (body, expected) in cases {
        let source = format!("[mqtt]\n{body}");
        let found = match read::read_in(&source, "t.toml", None) {
            Ok(config) => panic!("expected problems in {source}, got {config:?}"),
            Err(problems) => problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{source}\nwanted {expected:?}, got {found:?}"
        );
        let all = found.join("\n");
        assert!(!all.contains("tiny-pw"), "{all}");
    }
}

#[test]
fn access_tokens_tls_and_rate_limits_are_read() {
    let hash = crate::access::Digest::of("a-token-for-screens");
    let config = parse(
        &format!(
            r#"
[feed]
tls_cert = "/etc/fixgate/cert.pem"
tls_key = "/etc/fixgate/key.pem"
[http]
rate_limit = "600/m"
rate_burst = 20
rate_limit_exempt = ["10.0.0.0/8", "192.0.2.7"]
[access]
anonymous = ["read"]
anonymous_loopback = ["read", "metrics"]
cors_origins = ["https://screens.example", "http://10.1.2.3:8000"]
[[access.token]]
name = "screens"
hash = "{hash}"
scopes = ["read"]
read_groups = ["buses", "trams"]
[[access.token]]
name = "buses"
file = "/etc/fixgate/tokens/buses.token"
scopes = ["write", "read"]
write_devices = ["bus-*", "van-?"]
[[access.token]]
name = "prometheus"
credential = "metrics.token"
scopes = ["metrics"]
"#
        ),
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    use crate::access::{Scope, Scopes};
    let tls = config.feed.tls.expect("tls");
    assert_eq!(tls.cert, PathBuf::from("/etc/fixgate/cert.pem"));
    assert_eq!(config.http.rate_limit.map(|r| r.per_second), Some(10.0));
    assert_eq!(config.http.rate_burst, 20);
    assert_eq!(config.http.rate_limit_exempt.len(), 2);
    let a = &config.access;
    assert_eq!(a.anonymous, Scopes::NONE.with(Scope::Read));
    assert_eq!(
        a.anonymous_loopback,
        Scopes::NONE.with(Scope::Read).with(Scope::Metrics)
    );
    assert_eq!(a.cors_origins.len(), 2);
    assert_eq!(a.tokens.len(), 3);
    assert_eq!(a.tokens[0].secret, TokenSecret::Hash(hash));
    assert_eq!(
        a.tokens[0].read_groups.as_deref(),
        Some(&["buses".to_owned(), "trams".to_owned()][..])
    );
    assert_eq!(
        a.tokens[1].secret,
        TokenSecret::File(PathBuf::from("/etc/fixgate/tokens/buses.token"))
    );
    let patterns = a.tokens[1].write_devices.as_ref().expect("patterns");
    assert!(patterns[0].matches("bus-1") && patterns[1].matches("van-3"));
    assert_eq!(
        a.tokens[2].secret,
        TokenSecret::Credential("metrics.token".into())
    );
    // Booleans for the loopback opt-out, and false for no rate limit.
    let config = parse(
        "[access]\nanonymous_loopback = false\n[http]\nrate_limit = false\n",
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.access.anonymous_loopback.is_empty());
    assert_eq!(config.http.rate_limit, None);
}

#[test]
fn access_problems_name_the_key_and_never_echo_a_secret() {
    let found = problems(
        r#"[access]
anonymous = ["read", "admin"]
cors_origins = ["https://screens.example/", "*"]
[[access.token]]
name = "bad name!"
hash = "my-plain-secret-pasted-here"
scopes = ["read"]
[[access.token]]
name = "twice"
hash = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
file = "/x"
scopes = ["read"]
[[access.token]]
name = "twice"
file = "relative.token"
scopes = []
[[access.token]]
name = "limits"
credential = "a/b"
scopes = ["metrics"]
read_groups = ["buses"]
write_devices = ["bus/*"]
[[access.token]]
name = "nosecret"
scopes = ["read"]
[feed]
tls_cert = "/c.pem"
[http]
token = "long-enough-shared"
rate_limit = "fast"
rate_limit_exempt = ["10.0.0.0/40"]
"#,
    );
    let all = found.join("\n");
    assert!(!all.contains("my-plain-secret"), "{all}");
    assert_eq!(
        found,
        [
            r#"t.toml:2:22: `access.anonymous` "admin" is no scope; use "read", "write" or "metrics""#,
            r#"t.toml:3:17: `access.cors_origins` "https://screens.example/": an origin has a host and an optional port, no path, wildcard or slash"#,
            r#"t.toml:3:45: `access.cors_origins` "*": an origin is scheme://host[:port], e.g. "https://screens.example""#,
            r#"t.toml:5:8: `access.token.name` "bad name!" must be 1 to 32 of A-Z a-z 0-9 . _ - (it labels metrics and log lines)"#,
            r#"t.toml:6:8: `access.token.hash` must be "sha256:" followed by 64 hex digits (`fixgate token` prints one)"#,
            r#"t.toml:11:8: [[access.token]] takes one of `hash`, `file` and `credential`, not `hash` and `file`"#,
            r#"t.toml:14:8: duplicate token name "twice"; first used at line 9, column 8"#,
            r#"t.toml:15:8: `access.token.file` must be an absolute path (the service's working directory is /)"#,
            r#"t.toml:16:10: `access.token.scopes` must name at least one scope"#,
            r#"t.toml:19:14: `access.token.credential` "a/b" must be a credential name (a file name, as in LoadCredential=NAME:PATH)"#,
            r#"t.toml:21:15: `access.token.read_groups` limits the "read" scope, which this token does not have"#,
            r#"t.toml:22:17: `access.token.write_devices` limits the "write" scope, which this token does not have"#,
            r#"t.toml:22:18: `access.token.write_devices` "bus/*": '/' cannot be in a device id: use A-Z a-z 0-9 . _ : - and the wildcards * and ?"#,
            r#"t.toml:23:1: [[access.token]] needs its secret: `hash = "sha256:…"` (from `fixgate token`), `file = "/path"` or `credential = "name"`"#,
            r#"t.toml:27:12: `feed.tls_cert` and `feed.tls_key` go together: set both for HTTPS, or neither"#,
            r#"t.toml:30:14: `http.rate_limit` must be a rate like "50/s", "600/m" or "1000/h", or false, not "fast""#,
            r#"t.toml:31:22: `http.rate_limit_exempt` "10.0.0.0/40": /40 is not a prefix length from 0 to 32 (write an address or a range like "10.0.0.0/8")"#,
        ]
    );
    let writes =
        problems("[access]\nanonymous = [\"write\"]\n[http]\ntoken = \"long-enough-shared\"\n");
    assert_eq!(
        writes,
        [
            "t.toml:2:13: `access.anonymous` opens writes to everyone, but `http.token` asks a token of every device: remove one of them"
        ]
    );
}

#[test]
fn a_missing_device_does_not_hide_a_bad_chrony_socket() {
    let found = problems("[[serial]]\npath = \"/dev/ttyUSB0\"\nchrony_socket = \"rel.sock\"\n");
    assert!(
        found
            .iter()
            .any(|p| p.contains("chrony_socket") && p.contains("absolute")),
        "{found:?}"
    );
}
