//! Arbitrary MQTT payloads, HTTP query strings and topics: the intake's
//! parsers must never panic, whatever a device on the LAN sends, and every
//! fix they return must be plausible (`Fix::validate`), so that it is
//! stored as it came.
#![no_main]

use chrono::{TimeZone, Utc};
use fixgate::sources::payload::{Format, Limits, Parsed, parse, parse_osmand};
use fixgate::sources::topic::TopicPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let limits = Limits {
        max_bytes: 4096,
        max_fixes: 64,
    };
    for format in [Format::Auto, Format::Json, Format::OwnTracks, Format::Nmea] {
        if let Ok(Parsed::Fixes(_, fixes)) = parse(data, format, &limits, now) {
            assert!(fixes.len() <= limits.max_fixes);
            for r in fixes {
                assert!(r.fix.validate().is_ok(), "{r:?}");
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(Some(r)) = parse_osmand(&text, now) {
        assert!(r.fix.validate().is_ok(), "{r:?}");
    }
    let pattern = TopicPattern::parse("fleet/{fleet}/device/{device}/#", Some("{fleet}.{device}"))
        .expect("valid pattern");
    let _ = pattern.device_for(&text);
    let _ = TopicPattern::parse(&text, None);
});
