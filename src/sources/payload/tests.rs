use super::*;
use chrono::{TimeDelta, TimeZone};

/// Receive time, with sub-millisecond digits that fixes must not keep.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + TimeDelta::nanoseconds(123_456_789)
}

fn now_ms() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + TimeDelta::milliseconds(123)
}

fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

fn epoch_s(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap()
}

fn fix(lat: f64, lon: f64, time: DateTime<Utc>) -> Fix {
    Fix::new(time, lat, lon)
}

fn parse_as(payload: &str, format: Format) -> Result<Parsed<'_>, PayloadError> {
    parse(payload.as_bytes(), format, &Limits::default(), now())
}

fn fixes_as(payload: &str, format: Format) -> Vec<Reported> {
    match parse_as(payload, format) {
        Ok(Parsed::Fixes(_, v)) => v,
        other => panic!("expected fixes from {payload}, got {other:?}"),
    }
}

fn one_as(payload: &str, format: Format) -> Reported {
    let mut v = fixes_as(payload, format);
    assert_eq!(v.len(), 1, "{payload}");
    v.remove(0)
}

fn one(payload: &str) -> Reported {
    one_as(payload, Format::Auto)
}

fn err_as(payload: &str, format: Format) -> PayloadError {
    match parse_as(payload, format) {
        Err(e) => e,
        Ok(p) => panic!("expected an error from {payload}, got {p:?}"),
    }
}

fn err(payload: &str) -> PayloadError {
    err_as(payload, Format::Auto)
}

fn missing(field: &'static str, index: Option<usize>) -> PayloadError {
    PayloadError::MissingField { field, index }
}

fn invalid_field(e: &PayloadError) -> (&'static str, Option<usize>) {
    match e {
        PayloadError::InvalidValue { field, index, .. } => (field, *index),
        other => panic!("expected invalid_value, got {other:?}"),
    }
}

// ---- formats and limits -------------------------------------------------

#[test]
fn format_names_round_trip() {
    for f in [Format::Auto, Format::Json, Format::OwnTracks, Format::Nmea] {
        assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        assert_eq!(f.to_string(), f.as_str());
    }
    assert_eq!(Format::default(), Format::Auto);
    let e = "JSON".parse::<Format>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown payload format \"JSON\": expected auto, json, owntracks or nmea"
    );
}

#[test]
fn default_limits() {
    let l = Limits::default();
    assert_eq!((l.max_bytes, l.max_fixes), (65536, 1000));
}

#[test]
fn every_error_has_its_reason() {
    let cases = [
        (PayloadError::Oversized { size: 2, max: 1 }, "oversized"),
        (PayloadError::Malformed(String::new()), "malformed"),
        (missing("lat", None), "missing_field"),
        (
            PayloadError::InvalidValue {
                field: "lat",
                index: None,
                problem: String::new(),
            },
            "invalid_value",
        ),
        (PayloadError::UnknownFormat(String::new()), "unknown_format"),
        (PayloadError::Encrypted, "encrypted"),
        (PayloadError::TooMany { count: 2, max: 1 }, "too_many"),
    ];
    for (e, reason) in cases {
        assert_eq!(e.reason(), reason);
    }
}

#[test]
fn oversized_is_refused_before_parsing() {
    let limits = Limits {
        max_bytes: 8,
        max_fixes: 10,
    };
    let e = parse(b"not even json", Format::Auto, &limits, now()).unwrap_err();
    assert_eq!(e, PayloadError::Oversized { size: 13, max: 8 });
    assert_eq!(
        e.to_string(),
        "payload of 13 bytes is over the limit of 8 bytes"
    );
    let ok = parse(
        br#"{"lat":1,"lon":2}"#,
        Format::Auto,
        &Limits {
            max_bytes: 17,
            ..limits
        },
        now(),
    );
    assert!(ok.is_ok());
}

#[test]
fn empty_payloads_are_ignored_in_every_format() {
    for f in [Format::Auto, Format::Json, Format::OwnTracks, Format::Nmea] {
        assert_eq!(parse_as("", f), Ok(Parsed::Ignored("empty")));
        assert_eq!(parse_as(" \r\n\t", f), Ok(Parsed::Ignored("empty")));
    }
}

// ---- detection -----------------------------------------------------------

#[test]
fn nmea_is_detected_and_handed_back_from_the_first_sentence() {
    let text = "\r\n $GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n";
    let start = text.find('$').unwrap();
    assert_eq!(
        parse_as(text, Format::Auto),
        Ok(Parsed::Nmea(&text.as_bytes()[start..]))
    );
    assert_eq!(
        parse_as(
            "!AIVDM,1,1,,A,13aG?P0P00PD;88MD5MTDww@2<0L,0*2B",
            Format::Nmea
        ),
        Ok(Parsed::Nmea(
            b"!AIVDM,1,1,,A,13aG?P0P00PD;88MD5MTDww@2<0L,0*2B"
        ))
    );
    // NMEA need not be UTF-8: the decoder takes bytes.
    let raw = b"$GP\xff\xfe";
    assert_eq!(
        parse(raw, Format::Auto, &Limits::default(), now()),
        Ok(Parsed::Nmea(&raw[..]))
    );
}

#[test]
fn auto_tells_fixgate_json_from_owntracks_by_type_field() {
    let r = one(r#"{"lat":1.5,"lon":2.5,"tst":1795428010}"#);
    assert_eq!(r.fix.time, now_ms(), "fixgate JSON ignores tst");
    let r = one(r#"{"_type":"location","lat":1.5,"lon":2.5,"tst":1795428010}"#);
    assert_eq!(r.fix.time, epoch_s(1795428010));
    // An explicit json format reads an OwnTracks message as fixgate JSON.
    let r = one_as(
        r#"{"_type":"location","lat":1.5,"lon":2.5,"tst":1795428010}"#,
        Format::Json,
    );
    assert_eq!(r.fix.time, now_ms());
}

#[test]
fn anything_else_is_unknown_format_under_auto() {
    let e = err("  hello world, this is not a fix");
    assert_eq!(e.reason(), "unknown_format");
    assert_eq!(
        e.to_string(),
        "unrecognised payload: payload starts with \"hello world, thi\"; \
         expected NMEA (`$` or `!`) or JSON (`{` or `[`)"
    );
    assert_eq!(err("52.1,13.4").reason(), "unknown_format");
}

#[test]
fn explicit_formats_refuse_other_shapes_as_malformed() {
    let e = err_as(r#"{"a":1}"#, Format::Nmea);
    assert_eq!(
        e.to_string(),
        r#"malformed payload: expected NMEA sentences starting with `$` or `!`, payload starts with "{\"a\":1}""#
    );
    let e = err_as("$GPGGA,1", Format::Json);
    assert_eq!(e.reason(), "malformed");
    assert!(
        e.to_string().contains("expected a JSON object or array"),
        "{e}"
    );
    let e = err_as(r#"[{"_type":"location"}]"#, Format::OwnTracks);
    assert_eq!(
        e,
        PayloadError::Malformed("an OwnTracks message is one JSON object, not an array".into())
    );
    assert_eq!(err_as("$GPGGA,1", Format::OwnTracks).reason(), "malformed");
}

// ---- fixgate JSON --------------------------------------------------------

#[test]
fn minimal_object_is_dated_with_the_receive_time_in_milliseconds() {
    let r = one(r#"{"lat":52.5163,"lon":13.3777}"#);
    assert_eq!(
        r,
        Reported {
            device: None,
            fix: fix(52.5163, 13.3777, now_ms())
        }
    );
}

#[test]
fn full_object_maps_every_field() {
    let r = one(
        r#" {"device":"van-7","lat":-33.8568,"lon":151.2153,"time":"2026-11-23T10:00:00.250Z",
            "alt":41.5,"speed":12.5,"course":271,"hdop":0.9,"sats":11,"mode":3,"accuracy":4} "#,
    );
    assert_eq!(r.device.as_deref(), Some("van-7"));
    assert_eq!(
        r.fix,
        Fix {
            time: utc("2026-11-23T10:00:00.250Z"),
            lat: -33.8568,
            lon: 151.2153,
            alt: Some(41.5),
            speed: Some(12.5),
            course: Some(271.0),
            hdop: Some(0.9),
            sats: Some(11),
            mode: Some(FixMode::ThreeD),
            accuracy: Some(4.0),
        }
    );
    assert_eq!(
        one(r#"{"lat":1,"lon":2,"mode":2}"#).fix.mode,
        Some(FixMode::TwoD)
    );
}

#[test]
fn times_in_every_form() {
    // How a time reads, before the fix's plausibility (from 1980 on) is
    // checked: the forms are the same for every range.
    let t = |json_time: &str| {
        let value: Value = serde_json::from_str(json_time).unwrap();
        super::time("time", &value).unwrap()
    };
    assert_eq!(
        one(r#"{"lat":1,"lon":2,"time":1795428010}"#).fix.time,
        epoch_s(1795428010)
    );
    assert_eq!(t("1795428010"), epoch_s(1795428010));
    assert_eq!(
        t("1795428010.25"),
        epoch_s(1795428010) + TimeDelta::milliseconds(250)
    );
    assert_eq!(
        t("1795428010250"),
        epoch_s(1795428010) + TimeDelta::milliseconds(250)
    );
    assert_eq!(
        t("1795428010250.0"),
        epoch_s(1795428010) + TimeDelta::milliseconds(250)
    );
    assert_eq!(t("-86400"), epoch_s(-86400));
    // The seconds/milliseconds boundary: 1e11 is milliseconds.
    assert_eq!(t("99999999999"), epoch_s(99_999_999_999));
    assert_eq!(
        t("100000000000"),
        DateTime::from_timestamp_millis(100_000_000_000).unwrap()
    );
    assert_eq!(
        t(r#""2026-11-23T11:30:00+01:30""#),
        utc("2026-11-23T10:00:00Z")
    );
    assert_eq!(
        t(r#""2026-11-23T10:00:00-05:00""#),
        utc("2026-11-23T15:00:00Z")
    );
    // Kept to the millisecond, like every fixgate time.
    assert_eq!(
        t(r#""2026-11-23T10:00:00.123987Z""#),
        utc("2026-11-23T10:00:00.123Z")
    );
}

#[test]
fn bad_times_are_invalid_values() {
    let e = |json_time: &str| err(&format!(r#"{{"lat":1,"lon":2,"time":{json_time}}}"#));
    assert_eq!(
        e("1e300").to_string(),
        "invalid `time`: epoch time 1e+300 is out of range"
    );
    assert_eq!(invalid_field(&e("-9223372036854775808")), ("time", None));
    assert_eq!(invalid_field(&e("18446744073709551615")), ("time", None));
    let msg = e(r#""2026-11-23 10:00""#).to_string();
    assert!(
        msg.starts_with(
            "invalid `time`: expected an RFC 3339 time such as 2026-11-23T10:00:00Z, \
             found string \"2026-11-23 10:00\" ("
        ),
        "{msg}"
    );
    assert_eq!(
        e("true").to_string(),
        "invalid `time`: expected an RFC 3339 string or a number of epoch seconds or \
         milliseconds, found boolean true"
    );
}

#[test]
fn arrays_give_one_fix_per_element() {
    let v = fixes_as(
        r#"[{"lat":1,"lon":2,"time":1795428000},
            {"lat":3,"lon":4,"time":1795428001,"device":"b"}]"#,
        Format::Json,
    );
    assert_eq!(
        v,
        vec![
            Reported {
                device: None,
                fix: fix(1.0, 2.0, epoch_s(1795428000))
            },
            Reported {
                device: Some("b".into()),
                fix: fix(3.0, 4.0, epoch_s(1795428001))
            },
        ]
    );
    assert_eq!(fixes_as("[]", Format::Auto), vec![]);
}

#[test]
fn errors_in_arrays_name_the_element() {
    let e = err(r#"[{"lat":1,"lon":2},{"lat":1}]"#);
    assert_eq!(e, missing("lon", Some(1)));
    assert_eq!(
        e.to_string(),
        "array element 1: missing required field `lon`"
    );
    let e = err(r#"[{"lat":1,"lon":2},{"lat":1,"lon":2},{"lat":1,"lon":"x"}]"#);
    assert_eq!(
        e.to_string(),
        "array element 2: invalid `lon`: expected a number, found string \"x\""
    );
}

#[test]
fn too_many_fixes_are_refused_whole_and_counted() {
    let limits = Limits {
        max_bytes: 1024,
        max_fixes: 2,
    };
    let three = br#"[{"lat":1,"lon":2},{"lat":1,"lon":2},{"lat":1,"lon":2}]"#;
    let e = parse(three, Format::Auto, &limits, now()).unwrap_err();
    assert_eq!(e, PayloadError::TooMany { count: 3, max: 2 });
    assert_eq!(e.to_string(), "array of 3 fixes is over the limit of 2");
    let two = br#"[{"lat":1,"lon":2},{"lat":1,"lon":2}]"#;
    assert!(parse(two, Format::Auto, &limits, now()).is_ok());
}

#[test]
fn unknown_fields_are_ignored_and_null_is_absent() {
    let r = one(
        r#"{"lat":1,"lon":2,"battery":88,"extras":{"a":[1,{"b":null}]},"name":"x",
            "alt":null,"time":null,"device":null,"acc":7,"vel":30}"#,
    );
    assert_eq!(
        r,
        Reported {
            device: None,
            fix: fix(1.0, 2.0, now_ms())
        }
    );
}

#[test]
fn missing_position_is_missing_field() {
    assert_eq!(err(r#"{"lon":2}"#), missing("lat", None));
    assert_eq!(err(r#"{"lat":1}"#), missing("lon", None));
    assert_eq!(err(r#"{"lat":null,"lon":2}"#), missing("lat", None));
    assert_eq!(err("{}").to_string(), "missing required field `lat`");
}

#[test]
fn wrong_types_are_invalid_values_naming_the_field() {
    let e = err(r#"{"lat":"52.1","lon":13.4}"#);
    assert_eq!(
        e.to_string(),
        "invalid `lat`: expected a number, found string \"52.1\""
    );
    let field = |json: &str| invalid_field(&err(json)).0;
    assert_eq!(field(r#"{"lat":1,"lon":[2]}"#), "lon");
    assert_eq!(field(r#"{"lat":1,"lon":2,"alt":"high"}"#), "alt");
    assert_eq!(field(r#"{"lat":1,"lon":2,"speed":true}"#), "speed");
    assert_eq!(field(r#"{"lat":1,"lon":2,"course":{}}"#), "course");
    assert_eq!(field(r#"{"lat":1,"lon":2,"hdop":"1"}"#), "hdop");
    assert_eq!(field(r#"{"lat":1,"lon":2,"accuracy":"5m"}"#), "accuracy");
    assert_eq!(field(r#"{"lat":1,"lon":2,"device":42}"#), "device");
    assert_eq!(
        err(r#"{"lat":1,"lon":2,"sats":300}"#).to_string(),
        "invalid `sats`: expected an integer from 0 to 255, found number 300"
    );
    assert_eq!(field(r#"{"lat":1,"lon":2,"sats":7.5}"#), "sats");
    assert_eq!(field(r#"{"lat":1,"lon":2,"sats":-1}"#), "sats");
    assert_eq!(
        err(r#"{"lat":1,"lon":2,"mode":1}"#).to_string(),
        "invalid `mode`: expected 2 or 3, found number 1"
    );
}

#[test]
fn long_offending_values_are_clipped_in_messages() {
    let long = "x".repeat(500);
    let msg = err(&format!(r#"{{"lat":"{long}","lon":1}}"#)).to_string();
    assert!(msg.len() < 120, "{msg}");
    assert!(msg.ends_with("xxx…"), "{msg}");
}

#[test]
fn values_out_of_range_are_invalid_values_naming_the_payloads_field() {
    let field = |json: &str| invalid_field(&err(json)).0;
    assert_eq!(field(r#"{"lat":123.0,"lon":5}"#), "lat");
    assert_eq!(field(r#"{"lat":1,"lon":-500}"#), "lon");
    assert_eq!(field(r#"{"lat":1,"lon":2,"speed":-3}"#), "speed");
    assert_eq!(field(r#"{"lat":1,"lon":2,"course":720}"#), "course");
    assert_eq!(field(r#"{"lat":1,"lon":2,"hdop":100.5}"#), "hdop");
    assert_eq!(field(r#"{"lat":1,"lon":2,"accuracy":3e7}"#), "accuracy");
    assert_eq!(field(r#"{"lat":1,"lon":2,"time":5}"#), "time");
    let e = err(r#"{"lat":1,"lon":2,"alt":1e308}"#);
    assert_eq!(
        e.to_string(),
        "invalid `alt`: 1e308 is outside -1000…100000 m"
    );
    assert_eq!(e.reason(), "invalid_value");
    let e = err(r#"[{"lat":1,"lon":2},{"lat":1,"lon":2,"speed":1e12}]"#);
    assert_eq!(
        e.to_string(),
        "array element 1: invalid `speed`: 1000000000000 is outside 0…3000 m/s"
    );
    // The ends of the ranges are taken.
    let r = one(
        r#"{"lat":-90,"lon":180,"alt":100000,"speed":3000,"course":360,"hdop":100,"accuracy":2e7}"#,
    );
    assert_eq!((r.fix.alt, r.fix.speed), (Some(100_000.0), Some(3000.0)));
    // OwnTracks and OsmAnd name their own fields.
    let owntracks = |extra: &str| {
        err(&format!(
            r#"{{"_type":"location","lat":1,"lon":2,"tst":1795428010{extra}}}"#
        ))
    };
    assert_eq!(invalid_field(&owntracks(r#","vel":20000"#)).0, "vel");
    assert_eq!(invalid_field(&owntracks(r#","acc":1e9"#)).0, "acc");
    assert_eq!(invalid_field(&owntracks(r#","cog":400"#)).0, "cog");
    assert_eq!(
        invalid_field(&osmand_err("id=a&lat=1&lon=2&altitude=1e308")).0,
        "altitude"
    );
    assert_eq!(
        invalid_field(&osmand_err("id=a&lat=1&lon=2&bearing=361")).0,
        "bearing"
    );
    assert_eq!(
        invalid_field(&osmand_err("id=a&lat=1&lon=2&timestamp=1")).0,
        "timestamp"
    );
}

#[test]
fn malformed_json_says_where() {
    let e = err(r#"{"lat":1,"lon":"#);
    assert_eq!(e.reason(), "malformed");
    assert!(
        e.to_string()
            .starts_with("malformed payload: invalid JSON: "),
        "{e}"
    );
    assert!(e.to_string().contains("line 1 column"), "{e}");
    assert_eq!(err(r#"{"lat":1,"lon":2} x"#).reason(), "malformed");
    assert_eq!(err(r#"[{"lat":1,"lon":2}] x"#).reason(), "malformed");
    // Infinity is not JSON; neither is a number beyond f64.
    assert_eq!(err(r#"{"lat":1e999,"lon":2}"#).reason(), "malformed");
    assert_eq!(err(r#"{"lat":NaN,"lon":2}"#).reason(), "malformed");
    let e = err(r#"{"lat":1,"lat":2,"lon":3}"#);
    assert!(e.to_string().contains("duplicate field `lat`"), "{e}");
    let e = err("[1]");
    assert!(e.to_string().contains("expected a JSON object"), "{e}");
    // Not read field by position, as derived deserializers would.
    let e = err("[[null,1,2]]");
    assert!(e.to_string().contains("expected a JSON object"), "{e}");
}

#[test]
fn json_that_is_not_utf8_is_malformed() {
    let e = parse(
        b"{\"lat\":1,\"lon\":2,\"x\":\"\xff\"}",
        Format::Auto,
        &Limits::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(e.reason(), "malformed");
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}

// ---- OwnTracks -----------------------------------------------------------

/// Shaped like an iOS app location publish with extended data on.
const IOS_LOCATION: &str = r#"{"_type":"location","BSSID":"a0:b1:c2:d3:e4:f5","SSID":"cafe",
    "acc":5,"alt":48,"batt":73,"bs":1,"cog":212,"conn":"m","created_at":1795428012,
    "inregions":["Work"],"lat":48.85837,"lon":2.294481,"m":1,"p":101.2,"t":"t","tid":"jd",
    "topic":"owntracks/jane/phone","tst":1795428010,"vac":3,"vel":18}"#;

/// Shaped like an Android app location publish: no `cog`, `vel` of zero.
const ANDROID_LOCATION: &str = r#"{"_type":"location","_id":"3f2a1b9c","acc":14,"alt":35,
    "batt":91,"bs":2,"conn":"w","created_at":1795428100,"lat":51.50135,"lon":-0.14189,
    "t":"u","tid":"ph","tst":1795428095,"vac":2,"vel":0}"#;

#[test]
fn owntracks_ios_location() {
    for format in [Format::Auto, Format::OwnTracks] {
        let r = one_as(IOS_LOCATION, format);
        assert_eq!(r.device, None);
        assert_eq!(
            r.fix,
            Fix {
                time: epoch_s(1795428010),
                lat: 48.85837,
                lon: 2.294481,
                alt: Some(48.0),
                speed: Some(5.0),
                course: Some(212.0),
                hdop: None,
                sats: None,
                mode: None,
                accuracy: Some(5.0),
            }
        );
    }
}

#[test]
fn owntracks_android_location() {
    let r = one(ANDROID_LOCATION);
    assert_eq!(r.fix.time, epoch_s(1795428095));
    assert_eq!((r.fix.lat, r.fix.lon), (51.50135, -0.14189));
    assert_eq!(r.fix.speed, Some(0.0));
    assert_eq!(r.fix.course, None);
    assert_eq!((r.fix.alt, r.fix.accuracy), (Some(35.0), Some(14.0)));
}

#[test]
fn owntracks_negative_speed_and_course_mean_unknown() {
    let r = one(r#"{"_type":"location","lat":1,"lon":2,"tst":1795428010,"vel":-1,"cog":-1}"#);
    assert_eq!((r.fix.speed, r.fix.course), (None, None));
    let r = one(r#"{"_type":"location","lat":1,"lon":2,"tst":1795428010.5,"vel":36}"#);
    assert_eq!(r.fix.speed, Some(10.0));
    assert_eq!(
        r.fix.time,
        epoch_s(1795428010) + TimeDelta::milliseconds(500)
    );
}

#[test]
fn owntracks_location_needs_tst_lat_lon() {
    assert_eq!(
        err(r#"{"_type":"location","lat":1,"lon":2}"#),
        missing("tst", None)
    );
    assert_eq!(
        err(r#"{"_type":"location","lon":2,"tst":1795428010}"#),
        missing("lat", None)
    );
    let e = err(r#"{"_type":"location","lat":1,"lon":2,"tst":"1795428010"}"#);
    assert_eq!(
        e.to_string(),
        "invalid `tst`: expected a number of epoch seconds, found string \"1795428010\""
    );
    // tst is always seconds in OwnTracks: no millisecond guess.
    let e = err(r#"{"_type":"location","lat":1,"lon":2,"tst":1e300}"#);
    assert_eq!(invalid_field(&e), ("tst", None));
    let e = err(r#"{"_type":"location","lat":1,"lon":2,"tst":1,"vel":"fast"}"#);
    assert_eq!(invalid_field(&e), ("vel", None));
}

#[test]
fn owntracks_other_types_are_ignored_with_a_label() {
    let cases = [
        (r#"{"_type":"lwt","tst":1795428010}"#, "owntracks_lwt"),
        (
            r#"{"_type":"transition","wtst":1795000000,"lat":1,"lon":2,"tst":1795428010,
                "acc":10,"tid":"jd","event":"enter","desc":"Home","t":"c"}"#,
            "owntracks_transition",
        ),
        (
            r#"{"_type":"card","name":"Jane","face":"iVBORw0KGgo="}"#,
            "owntracks_card",
        ),
        (
            r#"{"_type":"status","iOS":{"version":"18"}}"#,
            "owntracks_status",
        ),
        (
            r#"{"_type":"waypoint","desc":"Home","lat":1,"lon":2,"rad":50,"tst":1795000000}"#,
            "owntracks_waypoint",
        ),
        (r#"{"_type":"steps","steps":1200}"#, "owntracks_steps"),
        (r#"{"_type":"something-new"}"#, "owntracks_other"),
    ];
    for (json, label) in cases {
        assert_eq!(
            parse_as(json, Format::Auto),
            Ok(Parsed::Ignored(label)),
            "{json}"
        );
        assert_eq!(
            parse_as(json, Format::OwnTracks),
            Ok(Parsed::Ignored(label)),
            "{json}"
        );
    }
}

#[test]
fn owntracks_encrypted_is_its_own_error() {
    let e = err(r#"{"_type":"encrypted","data":"N2Y4ZjRkYjE0ZDI1"}"#);
    assert_eq!(e, PayloadError::Encrypted);
    assert_eq!(e.reason(), "encrypted");
}

#[test]
fn owntracks_format_needs_a_string_type() {
    assert_eq!(
        err_as(r#"{"lat":1,"lon":2,"tst":1}"#, Format::OwnTracks),
        missing("_type", None)
    );
    let e = err(r#"{"_type":7,"lat":1,"lon":2}"#);
    assert_eq!(
        e.to_string(),
        "invalid `_type`: expected a string, found number 7"
    );
}

// ---- OsmAnd --------------------------------------------------------------

fn osmand(query: &str) -> Reported {
    match parse_osmand(query, now()) {
        Ok(Some(r)) => r,
        other => panic!("expected a fix from {query}, got {other:?}"),
    }
}

fn osmand_err(query: &str) -> PayloadError {
    match parse_osmand(query, now()) {
        Err(e) => e,
        Ok(r) => panic!("expected an error from {query}, got {r:?}"),
    }
}

#[test]
fn osmand_traccar_client_request_converts_knots() {
    let r = osmand(
        "id=355123&timestamp=1795428010&lat=52.5163&lon=13.3777&speed=10.0&bearing=90.5\
         &altitude=41.2&accuracy=6.0&batt=87.0&charge=true",
    );
    assert_eq!(r.device.as_deref(), Some("355123"));
    assert_eq!(
        r.fix,
        Fix {
            time: epoch_s(1795428010),
            lat: 52.5163,
            lon: 13.3777,
            alt: Some(41.2),
            speed: Some(10.0 * 1852.0 / 3600.0),
            course: Some(90.5),
            hdop: None,
            sats: None,
            mode: None,
            accuracy: Some(6.0),
        }
    );
    let speed = r.fix.speed.unwrap();
    assert!((speed - 5.1444).abs() < 1e-4, "{speed}");
}

#[test]
fn osmand_aliases_and_the_query_mark() {
    let r = osmand("?deviceid=abc&location=60.5,30.25&heading=180&hdop=1.5&valid=true");
    assert_eq!(r.device.as_deref(), Some("abc"));
    assert_eq!((r.fix.lat, r.fix.lon), (60.5, 30.25));
    assert_eq!((r.fix.course, r.fix.hdop), (Some(180.0), Some(1.5)));
    assert_eq!(r.fix.time, now_ms(), "no timestamp: the receive time");
}

#[test]
fn osmand_timestamps_in_every_form() {
    let t = |ts: &str| osmand(&format!("id=1&lat=1&lon=2&timestamp={ts}")).fix.time;
    assert_eq!(t("1795428010"), epoch_s(1795428010));
    assert_eq!(
        t("1795428010123"),
        epoch_s(1795428010) + TimeDelta::milliseconds(123)
    );
    assert_eq!(
        t("1795428010.5"),
        epoch_s(1795428010) + TimeDelta::milliseconds(500)
    );
    assert_eq!(t("2026-11-23T10%3A00%3A00Z"), utc("2026-11-23T10:00:00Z"));
    assert_eq!(
        t("2026-11-23T12:00:00%2B02:00"),
        utc("2026-11-23T10:00:00Z")
    );
    assert_eq!(t("2026-11-23+10%3A00%3A00"), utc("2026-11-23T10:00:00Z"));
    let e = osmand_err("id=1&lat=1&lon=2&timestamp=yesterday");
    assert_eq!(invalid_field(&e), ("timestamp", None));
    assert!(e.to_string().contains("found \"yesterday\""), "{e}");
    assert_eq!(
        invalid_field(&osmand_err(
            "id=1&lat=1&lon=2&timestamp=2026-11-23T10:00:00"
        )),
        ("timestamp", None),
        "an ISO time without offset is ambiguous"
    );
}

#[test]
fn osmand_pairs_from_a_framework() {
    let pairs = vec![
        ("id".to_owned(), "phone 1".to_owned()),
        ("lat".to_owned(), "1.5".to_owned()),
        ("lon".to_owned(), "2.5".to_owned()),
        ("speed".to_owned(), String::new()),
    ];
    let r = parse_osmand_pairs(pairs, now()).unwrap().unwrap();
    // Validating the id is the caller's business.
    assert_eq!(r.device.as_deref(), Some("phone 1"));
    assert_eq!(r.fix, fix(1.5, 2.5, now_ms()));
    let r = parse_osmand_pairs(
        [("id", "a"), ("lat", "1"), ("lat", "3"), ("lon", "2")],
        now(),
    );
    assert_eq!(r.unwrap().unwrap().fix.lat, 3.0, "the last repeat counts");
}

#[test]
fn osmand_decodes_form_encoding() {
    let r = osmand("id=bus%2D12%3Aa+b&lat=1&lon=2&x=%E2%9C%93");
    assert_eq!(r.device.as_deref(), Some("bus-12:a b"));
    let e = osmand_err("id=a&lat=1&lon=2&x=%zz");
    assert_eq!(
        e,
        PayloadError::Malformed("bad percent-escape in \"%zz\"".into())
    );
    assert_eq!(osmand_err("id=a%2&lat=1&lon=2").reason(), "malformed");
    let e = osmand_err("id=%FF&lat=1&lon=2");
    assert_eq!(
        e,
        PayloadError::Malformed("percent-decoded \"%FF\" is not UTF-8".into())
    );
}

#[test]
fn osmand_missing_and_invalid_fields() {
    assert_eq!(osmand_err("lat=1&lon=2"), missing("id", None));
    assert_eq!(osmand_err("id=&lat=1&lon=2"), missing("id", None));
    assert_eq!(osmand_err("id=a&lon=2"), missing("lat", None));
    assert_eq!(osmand_err("id=a&lat=1"), missing("lon", None));
    let e = osmand_err("id=a&lat=abc&lon=2");
    assert_eq!(
        e.to_string(),
        "invalid `lat`: expected a number, found \"abc\""
    );
    assert_eq!(
        invalid_field(&osmand_err("id=a&lat=NaN&lon=2")),
        ("lat", None)
    );
    assert_eq!(
        invalid_field(&osmand_err("id=a&lat=1&lon=inf")),
        ("lon", None)
    );
    assert_eq!(
        invalid_field(&osmand_err("id=a&lat=1&lon=2&speed=fast")),
        ("speed", None)
    );
    assert_eq!(
        invalid_field(&osmand_err("id=a&location=1;2")),
        ("location", None)
    );
    let e = osmand_err("id=a&lat=1&lon=2&valid=maybe");
    assert_eq!(
        e.to_string(),
        "invalid `valid`: expected true, false, 1 or 0, found \"maybe\""
    );
}

#[test]
fn osmand_reports_marked_invalid_give_no_fix() {
    assert_eq!(
        parse_osmand("id=a&lat=1&lon=2&valid=false", now()),
        Ok(None)
    );
    assert_eq!(parse_osmand("id=a&valid=0", now()), Ok(None));
    assert!(matches!(
        parse_osmand("id=a&lat=1&lon=2&valid=1", now()),
        Ok(Some(_))
    ));
}
