use chrono::TimeZone;

use super::*;

fn fix() -> Fix {
    // One epoch of gpsd's bu353s4.log as gpsd 3.22 reported it (captured
    // from `gpsd -N` on a pty): the same values must render the same way.
    let mut fix = Fix::new(
        Utc.with_ymd_and_hms(2014, 12, 31, 3, 7, 43).unwrap(),
        -37.784795,
        175.314901667,
    );
    fix.alt = Some(60.2);
    fix.speed = Some(0.0);
    fix.course = Some(181.39);
    fix.hdop = Some(1.1);
    fix.sats = Some(7);
    fix.mode = Some(FixMode::ThreeD);
    fix
}

#[test]
fn tpv_has_gpsds_names_units_and_precision() {
    let line = tpv("/dev/ttyUSB0", &fix());
    // gpsd 3.22 said, for this epoch:
    // {"class":"TPV","device":...,"mode":3,"time":"...T03:07:43.000Z","ept":0.005,
    //  "lat":-37.784795000,"lon":175.314901667,"altHAE":83.9000,"altMSL":60.2000,
    //  "alt":60.2000,...,"track":181.3900,...,"speed":0.000,...}
    assert_eq!(
        line,
        "{\"class\":\"TPV\",\"device\":\"/dev/ttyUSB0\",\"mode\":3,\"time\":\"2014-12-31T03:07:43.000Z\",\"lat\":-37.784795000,\"lon\":175.314901667,\"altMSL\":60.2000,\"alt\":60.2000,\"track\":181.3900,\"speed\":0.000}"
    );
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["class"], "TPV");
    assert!(v.get("altHAE").is_none(), "no ellipsoid height is stored");
    assert!(v.get("eph").is_none(), "no accuracy was reported");
}

#[test]
fn tpv_of_a_2d_fix_has_no_altitude_and_a_trackers_accuracy_is_eph() {
    let mut f = fix();
    f.mode = Some(FixMode::TwoD);
    f.accuracy = Some(12.5);
    f.course = None;
    let v: Value = serde_json::from_str(&tpv("bus-1", &f)).unwrap();
    assert_eq!(v["mode"], 2);
    assert!(v.get("alt").is_none() && v.get("altMSL").is_none());
    assert!(v.get("track").is_none());
    assert_eq!(v["eph"], 12.5);
    // Without a stored mode: 3D when there is an altitude.
    f.mode = None;
    assert_eq!(mode(&f), 3);
    f.alt = None;
    assert_eq!(mode(&f), 2);
}

#[test]
fn sky_reports_hdop_and_satellites_used_and_nothing_without_them() {
    let line = sky("/dev/ttyUSB0", &fix()).unwrap();
    assert_eq!(
        line,
        "{\"class\":\"SKY\",\"device\":\"/dev/ttyUSB0\",\"time\":\"2014-12-31T03:07:43.000Z\",\"hdop\":1.10,\"uSat\":7}"
    );
    let mut f = fix();
    f.hdop = None;
    f.sats = None;
    assert_eq!(sky("x", &f), None);
}

#[test]
fn version_devices_watch_poll_and_error_objects() {
    assert_eq!(
        version("fixgate 0.1.0"),
        "{\"class\":\"VERSION\",\"release\":\"fixgate 0.1.0\",\"rev\":\"fixgate 0.1.0\",\"proto_major\":3,\"proto_minor\":14}"
    );
    let t = Utc.with_ymd_and_hms(2026, 12, 5, 5, 20, 41).unwrap();
    let serial = DeviceInfo {
        path: "/dev/ttyUSB0",
        driver: Some("NMEA0183"),
        activated: Some(t),
        bps: Some(38400),
    };
    let replay = DeviceInfo {
        path: "log \"1\".nmea",
        driver: None,
        activated: None,
        bps: None,
    };
    // As gpsd 3.22 lists a serial NMEA receiver (less its "cycle").
    assert_eq!(
        device(&serial),
        "{\"class\":\"DEVICE\",\"path\":\"/dev/ttyUSB0\",\"driver\":\"NMEA0183\",\"activated\":\"2026-12-05T05:20:41.000Z\",\"flags\":1,\"native\":0,\"bps\":38400,\"parity\":\"N\",\"stopbits\":1}"
    );
    let list: Value = serde_json::from_str(&devices(&[serial, replay])).unwrap();
    assert_eq!(list["class"], "DEVICES");
    assert_eq!(list["devices"][1]["path"], "log \"1\".nmea");
    assert!(list["devices"][1].get("activated").is_none());

    let mut w = Watch::default();
    w.apply(&WatchChange {
        enable: Some(true),
        json: Some(true),
        device: Some("/dev/ttyUSB0".into()),
        ..WatchChange::default()
    });
    assert_eq!(
        watch(&w),
        "{\"class\":\"WATCH\",\"enable\":true,\"json\":true,\"nmea\":false,\"raw\":0,\"scaled\":false,\"timing\":false,\"split24\":false,\"pps\":false,\"device\":\"/dev/ttyUSB0\"}"
    );
    let tpv = tpv("/dev/ttyUSB0", &fix());
    let p: Value = serde_json::from_str(&poll(t, 1, &[&tpv], &[])).unwrap();
    assert_eq!(p["class"], "POLL");
    assert_eq!(p["active"], 1);
    assert_eq!(p["tpv"][0]["lat"], -37.784795);
    assert_eq!(p["sky"], serde_json::json!([]));
    assert_eq!(
        error(&Refusal::Unrecognized("?FOO;".into())),
        "{\"class\":\"ERROR\",\"message\":\"Unrecognized request '?FOO;'\"}"
    );
}

#[test]
fn requests_several_per_line_with_and_without_arguments() {
    assert_eq!(
        parse_line("?VERSION;?DEVICES;?POLL;"),
        vec![Request::Version, Request::Devices, Request::Poll]
    );
    assert_eq!(
        parse_line(r#"?WATCH={"enable":true,"json":true};?POLL;"#),
        vec![
            Request::Watch(Some(WatchChange {
                enable: Some(true),
                json: Some(true),
                ..WatchChange::default()
            })),
            Request::Poll
        ]
    );
    // The `;` after a JSON argument may be left out; spaces are allowed.
    assert_eq!(
        parse_line(r#"?WATCH={"enable":false, "device":"/dev/gps0"}"#),
        vec![Request::Watch(Some(WatchChange {
            enable: Some(false),
            device: Some("/dev/gps0".into()),
            ..WatchChange::default()
        }))]
    );
    assert_eq!(parse_line("?WATCH;"), vec![Request::Watch(None)]);
    assert_eq!(parse_line("?DEVICE;"), vec![Request::Device]);
    // Lines that are no request are ignored, as gpsd ignores them.
    assert_eq!(parse_line("VERSION;"), vec![]);
    assert_eq!(parse_line(""), vec![]);
}

#[test]
fn bad_requests_are_refused_as_gpsd_refuses_them() {
    assert_eq!(
        parse_line("?FOO;"),
        vec![Request::Bad(Refusal::Unrecognized("?FOO;".into()))]
    );
    // gpsd wants the `;`.
    assert_eq!(
        parse_line("?POLL"),
        vec![Request::Bad(Refusal::Unrecognized("?POLL".into()))]
    );
    assert_eq!(
        parse_line("?VERSION;junk"),
        vec![
            Request::Version,
            Request::Bad(Refusal::Unrecognized("junk".into()))
        ]
    );
    assert!(matches!(
        parse_line(r#"?WATCH={"enable":tru"#).as_slice(),
        [Request::Bad(Refusal::InvalidWatch(_))]
    ));
    assert!(matches!(
        parse_line(r#"?WATCH={"enable":1};"#).as_slice(),
        [Request::Bad(Refusal::InvalidWatch(_))]
    ));
    assert!(matches!(
        parse_line(r#"?WATCH={"raw":3};"#).as_slice(),
        [Request::Bad(Refusal::InvalidWatch(_))]
    ));
    assert_eq!(
        parse_line(r#"?DEVICE={"path":"/dev/x","bps":4800};"#),
        vec![Request::Bad(Refusal::DeviceConfig)]
    );
    // An ERROR quotes a bounded part of what was sent.
    let long = format!("?{};", "X".repeat(500));
    let requests = parse_line(&long);
    let [Request::Bad(r)] = requests.as_slice() else {
        panic!("{requests:?}")
    };
    assert!(r.message().len() < 120, "{}", r.message());
}

#[test]
fn lines_are_joined_across_reads_and_bounded() {
    let mut lines = Lines::default();
    assert_eq!(lines.push(b"?VERS"), vec![]);
    assert_eq!(
        lines.push(b"ION;\r\n?POLL;\n?DEV"),
        vec![Line::Text("?VERSION;".into()), Line::Text("?POLL;".into())]
    );
    assert_eq!(lines.push(b"ICES;\n"), vec![Line::Text("?DEVICES;".into())]);
    // Too long: refused once, thrown away to its end, and the next line is read.
    let long = vec![b'x'; MAX_LINE * 3];
    assert_eq!(lines.push(&long), vec![Line::TooLong]);
    assert_eq!(lines.push(&long), vec![]);
    assert_eq!(lines.push(b"\n?POLL;\n"), vec![Line::Text("?POLL;".into())]);
    assert!(lines.partial.capacity() <= MAX_LINE * 2);
    // A line of exactly the limit is kept.
    let mut exact = vec![b'y'; MAX_LINE];
    exact.push(b'\n');
    assert!(matches!(lines.push(&exact).as_slice(), [Line::Text(t)] if t.len() == MAX_LINE));
}

#[test]
fn watch_changes_only_what_they_name() {
    let mut w = Watch::default();
    w.apply(&WatchChange {
        enable: Some(true),
        json: Some(true),
        ..WatchChange::default()
    });
    assert!(w.streams());
    w.apply(&WatchChange {
        enable: Some(false),
        ..WatchChange::default()
    });
    assert!(!w.streams());
    assert!(w.json, "json stays as it was");
    w.apply(&WatchChange {
        enable: Some(true),
        nmea: Some(true),
        raw: Some(1),
        ..WatchChange::default()
    });
    assert!(w.streams() && w.nmea && w.raw == 1);
}
